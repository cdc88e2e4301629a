//! Picking the Burn backend at run time: the one place that names backends.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::error::{ModelError, Result};

/// The backend a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A hardware GPU through wgpu when one exists, else `flex`.
    #[default]
    Auto,
    /// Pure-Rust CPU backend (SIMD + threads): the default on CPU.
    #[serde(alias = "cpu")]
    Flex,
    /// The ndarray CPU backend (deprecated upstream; kept for users who ask for it).
    Ndarray,
    /// wgpu: Vulkan, Metal, DX12 (any GPU vendor), or a software Vulkan driver.
    #[serde(alias = "gpu")]
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// The backends compiled into this build.
    pub fn compiled() -> Vec<BackendKind> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(BackendKind::Flex);
        }
        if cfg!(feature = "ndarray") {
            v.push(BackendKind::Ndarray);
        }
        if cfg!(feature = "wgpu") {
            v.push(BackendKind::Wgpu);
        }
        v
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "flex" | "cpu" => Ok(BackendKind::Flex),
            "ndarray" => Ok(BackendKind::Ndarray),
            "wgpu" | "gpu" => Ok(BackendKind::Wgpu),
            _ => Err(ModelError::UnknownBackend(s.to_string())),
        }
    }
}

/// A device ready to use, with what was chosen.
#[derive(Clone, Debug)]
pub struct DeviceChoice {
    /// The device, without autodiff (call `.autodiff()` for training).
    pub device: Device,
    /// The backend actually used (`Auto` resolved).
    pub backend: BackendKind,
    /// Human description, e.g. `wgpu (NVIDIA H100, Vulkan)` or `flex (cpu, 2 threads)`.
    pub description: String,
}

/// The wgpu device for test suites. `None`, said on stderr, when `MANNERS_SKIP_WGPU` is set or
/// no adapter exists; but when `MANNERS_REQUIRE_WGPU` is set (CI sets it after installing a
/// Vulkan driver) a missing adapter panics, so a broken driver install cannot pass as a skip.
pub fn wgpu_for_tests() -> Option<DeviceChoice> {
    if std::env::var_os("MANNERS_SKIP_WGPU").is_some() {
        eprintln!("note: wgpu skipped (MANNERS_SKIP_WGPU is set)");
        return None;
    }
    match select_device(BackendKind::Wgpu) {
        Ok(c) => {
            eprintln!("note: testing {}", c.description);
            Some(c)
        }
        Err(e) if std::env::var_os("MANNERS_REQUIRE_WGPU").is_some() => {
            panic!("MANNERS_REQUIRE_WGPU is set but wgpu has no adapter: {e}")
        }
        Err(e) => {
            eprintln!("note: wgpu skipped: {e}");
            None
        }
    }
}

/// Builds the device for `kind`. `Auto` takes a hardware GPU adapter through wgpu when one
/// exists and `flex` otherwise; `Wgpu` also accepts a software (CPU) Vulkan adapter and fails
/// cleanly when there is no adapter at all.
pub fn select_device(kind: BackendKind) -> Result<DeviceChoice> {
    match kind {
        BackendKind::Auto => {
            #[cfg(feature = "wgpu")]
            if let Some(gpu) = wgpu_probe::adapters().into_iter().find(|a| a.hardware) {
                return Ok(wgpu_choice(&gpu));
            }
            #[cfg(feature = "flex")]
            return select_device(BackendKind::Flex);
            #[allow(unreachable_code)]
            {
                let first = BackendKind::compiled()
                    .into_iter()
                    .next()
                    .ok_or_else(|| ModelError::BackendNotCompiled("flex".into()))?;
                select_device(first)
            }
        }
        BackendKind::Flex => {
            #[cfg(feature = "flex")]
            return Ok(DeviceChoice {
                device: Device::flex(),
                backend: kind,
                description: format!("flex (cpu, {} threads)", cpu_threads()),
            });
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("flex".into()))
        }
        BackendKind::Ndarray => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(DeviceChoice {
                device: Device::ndarray(),
                backend: kind,
                description: format!("ndarray (cpu, {} threads)", cpu_threads()),
            });
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("ndarray".into()))
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                let adapters = wgpu_probe::adapters();
                let best = adapters.iter().find(|a| a.hardware).or(adapters.first());
                return match best {
                    Some(a) => Ok(wgpu_choice(a)),
                    None => Err(ModelError::NoAdapter(
                        " (no Vulkan, Metal or DX12 adapter; on Linux without a GPU install Mesa's \
                         software Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1)"
                            .into(),
                    )),
                };
            }
            #[allow(unreachable_code)]
            Err(ModelError::BackendNotCompiled("wgpu".into()))
        }
    }
}

fn cpu_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(feature = "wgpu")]
fn wgpu_choice(a: &wgpu_probe::Adapter) -> DeviceChoice {
    use burn::tensor::DeviceKind;
    let kind = match a.kind {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(a.index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(a.index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(a.index),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    DeviceChoice {
        device: Device::wgpu(kind),
        backend: BackendKind::Wgpu,
        description: format!("wgpu ({}, {})", a.name, a.api),
    }
}

#[cfg(feature = "wgpu")]
mod wgpu_probe {
    /// An adapter wgpu can open.
    #[derive(Clone, Debug)]
    pub struct Adapter {
        pub name: String,
        pub api: String,
        pub kind: wgpu::DeviceType,
        /// Index among adapters of the same kind (how Burn's `DeviceKind` counts).
        pub index: usize,
        /// A real GPU (not a software rasteriser).
        pub hardware: bool,
    }

    /// Adapters on Vulkan, Metal and DX12, GPUs first. The GL path is not probed: on software
    /// drivers it can hang.
    pub fn adapters() -> Vec<Adapter> {
        let probe = || {
            let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            futures_lite::future::block_on(instance.enumerate_adapters(backends))
                .iter()
                .map(wgpu::Adapter::get_info)
                .collect::<Vec<_>>()
        };
        // A broken Vulkan loader must not take the program down.
        let infos = std::panic::catch_unwind(probe).unwrap_or_default();
        let mut counts = [0usize; 5];
        let mut out: Vec<Adapter> = infos
            .into_iter()
            .map(|info| {
                let slot = match info.device_type {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Cpu => 3,
                    wgpu::DeviceType::Other => 4,
                };
                let index = counts[slot];
                counts[slot] += 1;
                Adapter {
                    name: info.name.clone(),
                    api: format!("{:?}", info.backend),
                    kind: info.device_type,
                    index,
                    hardware: !matches!(
                        info.device_type,
                        wgpu::DeviceType::Cpu | wgpu::DeviceType::Other
                    ),
                }
            })
            .collect();
        out.sort_by_key(|a| match a.kind {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_names() {
        assert_eq!("flex".parse::<BackendKind>().unwrap(), BackendKind::Flex);
        assert_eq!("WGPU".parse::<BackendKind>().unwrap(), BackendKind::Wgpu);
        let err = "cuda".parse::<BackendKind>().unwrap_err();
        assert!(err.to_string().contains("unknown backend `cuda`"), "{err}");
    }
}
