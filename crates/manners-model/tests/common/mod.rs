//! Shared test helpers: fixture paths and the devices every backend test runs on.
#![allow(dead_code)]

use std::path::PathBuf;

use manners_model::burn::prelude::*;
use manners_model::{BackendKind, select_device};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tiny_dir() -> PathBuf {
    fixtures().join("tiny-gpt2")
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("tiny-gpt2-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// flex and ndarray always; wgpu when an adapter exists (a GPU, or Mesa's software Vulkan
/// driver), unless `MANNERS_SKIP_WGPU` is set. A skipped backend is reported on stderr; with
/// `MANNERS_REQUIRE_WGPU` set (CI) a missing adapter fails.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut v = Vec::new();
    for (name, kind) in [
        ("flex", BackendKind::Flex),
        ("ndarray", BackendKind::Ndarray),
    ] {
        v.push((name, select_device(kind).unwrap().device));
    }
    if let Some(c) = manners_model::wgpu_for_tests() {
        v.push(("wgpu", c.device));
    }
    v
}

pub fn flex() -> Device {
    select_device(BackendKind::Flex).unwrap().device
}

pub fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let b = rows.len();
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

pub fn to_vec(t: Tensor<3>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
