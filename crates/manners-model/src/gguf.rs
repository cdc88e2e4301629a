//! GGUF, the file llama.cpp, Ollama and LM Studio run: a small writer and reader (version 3,
//! little-endian), q8_0 quantisation, and the export of a model of any family with its
//! tokenizer and chat template inside.
//!
//! Layout: magic `GGUF`, version 3, tensor count (u64), metadata count (u64); the metadata
//! (key string, value type u32, value); the tensor infos (name, rank u32, dims u64 with the
//! fastest-varying first, ggml type u32, offset u64 into the data section); padding to
//! `general.alignment` (32); the tensor data, each tensor starting at a multiple of 32.
//! Strings are a u64 byte length and UTF-8 bytes. Weights are stored as PyTorch lays them out
//! (`nn.Linear` is `[out, in]`, so dims are `[in, out]`).

use std::path::Path;

use burn::prelude::*;
use burn::tensor::f16;
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::model::{Model, ModelConfig};
use crate::tokenizer::Tokenizer;

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// Tensor data alignment (llama.cpp's default `general.alignment`).
pub const ALIGNMENT: usize = 32;
/// Values per q8_0 block (one f16 scale, 32 int8).
pub const Q8_0_BLOCK: usize = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Elements of one type (`Array(vec![])` is written as an empty array of u32).
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::Str(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u32(&self) -> Option<u32> {
        match self {
            GgufValue::U32(x) => Some(*x),
            _ => None,
        }
    }
}

/// How a tensor's values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    /// Blocks of 32 values: an f16 scale `max|x| / 127` and 32 int8 `round(x / scale)`.
    Q8_0,
}

impl GgufType {
    /// ggml's type id.
    pub fn id(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 8,
        }
    }

    fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(GgufType::F32),
            1 => Some(GgufType::F16),
            8 => Some(GgufType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `n` values.
    pub fn bytes(self, n: usize) -> usize {
        match self {
            GgufType::F32 => 4 * n,
            GgufType::F16 => 2 * n,
            GgufType::Q8_0 => n / Q8_0_BLOCK * (2 + Q8_0_BLOCK),
        }
    }
}

/// One tensor: its name, dims (fastest-varying first, as ggml's `ne`), type and bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgufType,
    pub data: Vec<u8>,
}

impl GgufTensor {
    /// `values` in PyTorch's row-major layout of `shape` (so `dims` is `shape` reversed),
    /// stored as `ty`. q8_0 needs the fastest-varying dimension to be a multiple of 32.
    pub fn from_values(
        name: String,
        shape: &[usize],
        values: &[f32],
        ty: GgufType,
    ) -> Result<Self> {
        let row = *shape.last().unwrap_or(&1);
        let data = match ty {
            GgufType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgufType::F16 => values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
            GgufType::Q8_0 => {
                if !row.is_multiple_of(Q8_0_BLOCK) {
                    return Err(ModelError::Config(format!(
                        "q8_0 needs rows that are a multiple of {Q8_0_BLOCK} values; `{name}` has \
                         rows of {row} (use --dtype f16 or f32)"
                    )));
                }
                quantize_q8_0(values)
            }
        };
        Ok(GgufTensor {
            name,
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            data,
        })
    }

    /// The values as f32 (q8_0 dequantised).
    pub fn values(&self) -> Vec<f32> {
        match self.ty {
            GgufType::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgufType::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            GgufType::Q8_0 => dequantize_q8_0(&self.data),
        }
    }

    pub fn num_values(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// llama.cpp's `quantize_row_q8_0_ref`: per block of 32, `d = max|x| / 127`, `q = round(x / d)`,
/// `d` stored as f16.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_0_BLOCK * (2 + Q8_0_BLOCK));
    for block in values.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_bits().to_le_bytes());
        for &v in block {
            out.push((v * id).round() as i8 as u8);
        }
    }
    out
}

/// The inverse of [`quantize_q8_0`] (each value `q * d` with the f16 scale).
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / (2 + Q8_0_BLOCK) * Q8_0_BLOCK);
    for block in bytes.chunks_exact(2 + Q8_0_BLOCK) {
        let d = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    out
}

/// A GGUF file in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufFile {
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensor>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::Str(s) => put_str(out, s),
        GgufValue::Array(items) => {
            let ty = items.first().map_or(4, GgufValue::type_id);
            out.extend(ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    let n = out.len().next_multiple_of(align) - out.len();
    out.extend(std::iter::repeat_n(0u8, n));
}

impl GgufFile {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(VERSION.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.id().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(ALIGNMENT);
        }
        pad_to(&mut out, ALIGNMENT);
        for t in &self.tensors {
            out.extend(&t.data);
            pad_to(&mut out, ALIGNMENT);
        }
        out
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes())
    }

    /// Reads a GGUF file (version 3, the types [`GgufType`] names); errors name the file and
    /// what is wrong at which byte.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&bytes).map_err(|message| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("not a GGUF file (no `GGUF` magic)".into());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!(
                "GGUF version {version}; this reader knows version 3"
            ));
        }
        let n_tensors = r.u64()? as usize;
        let n_kv = r.u64()? as usize;
        let mut metadata = Vec::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            metadata.push((key, r.value(ty)?));
        }
        let mut infos = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let rank = r.u32()? as usize;
            let dims = (0..rank)
                .map(|_| r.u64())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let ty_id = r.u32()?;
            let ty = GgufType::from_id(ty_id)
                .ok_or_else(|| format!("tensor `{name}`: ggml type {ty_id} is not read here"))?;
            let offset = r.u64()? as usize;
            infos.push((name, dims, ty, offset));
        }
        let start = r.at.next_multiple_of(ALIGNMENT);
        let mut tensors = Vec::new();
        for (name, dims, ty, offset) in infos {
            if !offset.is_multiple_of(ALIGNMENT) {
                return Err(format!("tensor `{name}`: offset {offset} is not aligned"));
            }
            let n = dims.iter().product::<u64>() as usize;
            let len = ty.bytes(n);
            let from = start + offset;
            let data = bytes
                .get(from..from + len)
                .ok_or_else(|| format!("tensor `{name}`: data past the end of the file"))?
                .to_vec();
            tensors.push(GgufTensor {
                name,
                dims,
                ty,
                data,
            });
        }
        Ok(GgufFile { metadata, tensors })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()? as usize;
        if n > self.b.len() {
            return Err(format!("string of {n} bytes at byte {}", self.at));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))
    }
    fn value(&mut self, ty: u32) -> std::result::Result<GgufValue, String> {
        let mut b =
            |n: usize| -> std::result::Result<Vec<u8>, String> { Ok(self.take(n)?.to_vec()) };
        Ok(match ty {
            0 => GgufValue::U8(b(1)?[0]),
            1 => GgufValue::I8(b(1)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(b(2)?.try_into().expect("2"))),
            3 => GgufValue::I16(i16::from_le_bytes(b(2)?.try_into().expect("2"))),
            4 => GgufValue::U32(u32::from_le_bytes(b(4)?.try_into().expect("4"))),
            5 => GgufValue::I32(i32::from_le_bytes(b(4)?.try_into().expect("4"))),
            6 => GgufValue::F32(f32::from_le_bytes(b(4)?.try_into().expect("4"))),
            7 => GgufValue::Bool(b(1)?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                let ity = self.u32()?;
                let n = self.u64()? as usize;
                if n > self.b.len() {
                    return Err(format!("array of {n} items at byte {}", self.at));
                }
                GgufValue::Array(
                    (0..n)
                        .map(|_| self.value(ity))
                        .collect::<std::result::Result<_, _>>()?,
                )
            }
            10 => GgufValue::U64(u64::from_le_bytes(b(8)?.try_into().expect("8"))),
            11 => GgufValue::I64(i64::from_le_bytes(b(8)?.try_into().expect("8"))),
            12 => GgufValue::F64(f64::from_le_bytes(b(8)?.try_into().expect("8"))),
            other => return Err(format!("unknown metadata type {other} at byte {}", self.at)),
        })
    }
}

/// How the weights of an exported GGUF are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufDtype {
    F32,
    /// Matrices f16, vectors f32 (as llama.cpp's converter does).
    F16,
    /// Matrices q8_0 (the embeddings and LM head f16), vectors f32.
    Q8_0,
}

impl std::str::FromStr for GgufDtype {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(GgufDtype::F32),
            "f16" => Ok(GgufDtype::F16),
            "q8_0" => Ok(GgufDtype::Q8_0),
            other => Err(ModelError::Config(format!(
                "GGUF dtype `{other}`: expected f32, f16 or q8_0"
            ))),
        }
    }
}

impl GgufDtype {
    fn for_rank(self, rank: usize) -> GgufType {
        match (self, rank) {
            (_, 1) | (GgufDtype::F32, _) => GgufType::F32,
            (GgufDtype::F16, _) => GgufType::F16,
            (GgufDtype::Q8_0, _) => GgufType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type`.
    fn file_type(self) -> u32 {
        match self {
            GgufDtype::F32 => 0,
            GgufDtype::F16 => 1,
            GgufDtype::Q8_0 => 7,
        }
    }
}

/// A tensor to export: llama.cpp's name and the values in PyTorch's layout.
pub(crate) struct GgufSource {
    pub name: String,
    pub tensor: GgufData,
}

pub(crate) enum GgufData {
    Vector(Tensor<1>),
    Matrix(Tensor<2>),
}

impl GgufSource {
    pub fn vector(name: impl Into<String>, t: Tensor<1>) -> Self {
        GgufSource {
            name: name.into(),
            tensor: GgufData::Vector(t),
        }
    }
    pub fn matrix(name: impl Into<String>, t: Tensor<2>) -> Self {
        GgufSource {
            name: name.into(),
            tensor: GgufData::Matrix(t),
        }
    }
}

/// What goes with the weights: the chat template the model was trained with (plain Jinja, as
/// llama.cpp renders it) and its end-of-turn token, which generation must stop at.
#[derive(Clone, Debug, Default)]
pub struct GgufChat {
    pub template: Option<String>,
    pub end_of_turn: Option<String>,
}

/// The GGUF of a model: weights under llama.cpp's names for the family's architecture, the
/// hyperparameters llama.cpp reads, and the tokenizer (byte-level BPE: tokens, types, merges,
/// special ids) with the chat template.
pub fn to_gguf(
    model: &Model,
    config: &ModelConfig,
    tok: &Tokenizer,
    chat: &GgufChat,
    dtype: GgufDtype,
) -> Result<GgufFile> {
    let (arch, mut metadata, sources) = match (model, config) {
        (Model::Gpt2(m), ModelConfig::Gpt2(c)) => {
            ("gpt2", crate::gpt2::gguf_metadata(c), m.gguf_tensors())
        }
        (Model::Llama(m), ModelConfig::Llama(c)) => (
            crate::llama::gguf_arch(c)?,
            crate::llama::gguf_metadata(c),
            m.gguf_tensors(c),
        ),
        _ => {
            return Err(ModelError::Config(
                "the config's family does not match the model's".into(),
            ));
        }
    };
    let mut md: Vec<(String, GgufValue)> = vec![
        ("general.architecture".into(), GgufValue::Str(arch.into())),
        (
            "general.name".into(),
            GgufValue::Str(format!("manners {}", config.model_type())),
        ),
        (
            "general.file_type".into(),
            GgufValue::U32(dtype.file_type()),
        ),
        ("general.alignment".into(), GgufValue::U32(ALIGNMENT as u32)),
    ];
    if dtype == GgufDtype::Q8_0 {
        md.push(("general.quantization_version".into(), GgufValue::U32(2)));
    }
    for (k, v) in metadata.drain(..) {
        md.push((format!("{arch}.{k}"), v));
    }
    md.push((
        format!("{arch}.vocab_size"),
        GgufValue::U32(model.vocab_size() as u32),
    ));
    md.extend(tokenizer_metadata(tok, model.vocab_size(), chat)?);
    let mut tensors = Vec::with_capacity(sources.len());
    for s in sources {
        let (shape, values) = match s.tensor {
            GgufData::Vector(t) => (t.dims().to_vec(), t.into_data()),
            GgufData::Matrix(t) => (t.dims().to_vec(), t.into_data()),
        };
        let values = values
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Config(format!("{}: {e:?}", s.name)))?;
        // `rope_freqs` stays f32. Under q8_0 the token embedding (also the tied LM head) and an
        // untied head are kept in f16, as llama.cpp's `--token-embedding-type` and
        // `--output-tensor-type` allow: the logits are where 8-bit rounding costs most.
        let ty = if s.name.starts_with("rope_freqs") {
            GgufType::F32
        } else if dtype == GgufDtype::Q8_0 && is_vocab_tensor(&s.name) {
            GgufType::F16
        } else {
            dtype.for_rank(shape.len())
        };
        tensors.push(GgufTensor::from_values(s.name, &shape, &values, ty)?);
    }
    Ok(GgufFile {
        metadata: md,
        tensors,
    })
}

/// The tensors indexed by token id (or position): embeddings and the LM head.
fn is_vocab_tensor(name: &str) -> bool {
    matches!(
        name,
        "token_embd.weight" | "position_embd.weight" | "output.weight"
    )
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template`.
fn tokenizer_metadata(
    tok: &Tokenizer,
    n_vocab: usize,
    chat: &GgufChat,
) -> Result<Vec<(String, GgufValue)>> {
    let json: Value =
        serde_json::from_str(
            &tok.hf()
                .to_string(false)
                .map_err(|e| ModelError::Tokenizer {
                    path: "tokenizer.json".into(),
                    message: e.to_string(),
                })?,
        )
        .map_err(|e| ModelError::Tokenizer {
            path: "tokenizer.json".into(),
            message: e.to_string(),
        })?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(ModelError::Config(format!(
            "GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen); this \
             one is {} (a SentencePiece-style vocabulary, as Llama 2 and TinyLlama use, is not \
             supported yet)",
            model["type"].as_str().unwrap_or("unknown")
        )));
    }
    let pre = pre_tokenizer_name(&json["pre_tokenizer"]);
    let specials: std::collections::HashMap<u32, bool> = tok
        .hf()
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| (id, t.special))
        .collect();
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut types = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab as u32 {
        match (tok.id_to_token(id), specials.get(&id)) {
            (Some(t), Some(true)) => {
                tokens.push(GgufValue::Str(t));
                types.push(GgufValue::I32(3)); // control
            }
            (Some(t), Some(false)) => {
                tokens.push(GgufValue::Str(t));
                types.push(GgufValue::I32(4)); // user defined
            }
            (Some(t), None) => {
                tokens.push(GgufValue::Str(t));
                types.push(GgufValue::I32(1)); // normal
            }
            (None, _) => {
                // Embedding rows past the tokenizer (padded vocabularies).
                tokens.push(GgufValue::Str(format!("[PAD{id}]")));
                types.push(GgufValue::I32(5)); // unused
            }
        }
    }
    let merges: Vec<GgufValue> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(
                pair.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .map(GgufValue::Str)
        .collect();
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), GgufValue::Str(pre.into())),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(tokens),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::Array(merges),
        ),
    ];
    let id = |t: Option<&str>| t.and_then(|t| tok.token_id(t));
    let eos = id(tok.eos_token());
    let bos = id(tok.bos_token()).or(eos);
    if let Some(b) = bos {
        md.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(b)));
    }
    if let Some(e) = eos {
        md.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(e)));
    }
    if let Some(u) = id(tok.unk_token()) {
        md.push(("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(u)));
    }
    if let Some(p) = id(tok.pad_token()) {
        md.push(("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(p)));
    }
    // Templates write BOS themselves; llama.cpp must not add another, nor an EOS.
    md.push((
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(false),
    ));
    md.push((
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(false),
    ));
    if let Some(eot) = id(chat.end_of_turn.as_deref()) {
        md.push(("tokenizer.ggml.eot_token_id".into(), GgufValue::U32(eot)));
    }
    if let Some(t) = &chat.template {
        md.push(("tokenizer.chat_template".into(), GgufValue::Str(t.clone())));
    }
    Ok(md)
}

/// llama.cpp's name for a byte-level BPE pre-tokenizer (`tokenizer.ggml.pre`): GPT-2's regex
/// (a `ByteLevel` pre-tokenizer with its own regex) is `gpt-2`; Llama 3's and Qwen2's split
/// patterns are `llama-bpe` and `qwen2`; SmolLM's individual digits before GPT-2's regex is
/// `smollm`. Anything else falls back to `gpt-2`.
fn pre_tokenizer_name(pre: &Value) -> &'static str {
    let text = pre.to_string();
    if text.contains(r#""individual_digits":true"#) {
        "smollm"
    } else if text
        .contains(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}")
    {
        "llama-bpe"
    } else if text.contains(r"[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|") {
        "qwen2"
    } else {
        "gpt-2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_follow_llama_cpp() {
        // One block: max |x| = 2.54 -> d = 0.02; 1.0 -> round(50) = 50; -2.54 -> -127.
        let mut v = vec![0.0f32; 32];
        v[0] = 1.0;
        v[1] = -2.54;
        v[2] = 0.011; // 0.55 -> 1
        let q = quantize_q8_0(&v);
        assert_eq!(q.len(), 34);
        let d = f16::from_bits(u16::from_le_bytes([q[0], q[1]])).to_f32();
        assert!((d - 0.02).abs() < 1e-5, "{d}");
        assert_eq!(
            (q[2] as i8, q[3] as i8, q[4] as i8, q[5] as i8),
            (50, -127, 1, 0)
        );
        let back = dequantize_q8_0(&q);
        assert!((back[1] + 2.54).abs() < 2e-3);
        // All zeros: scale 0, values 0.
        assert!(
            dequantize_q8_0(&quantize_q8_0(&[0.0; 32]))
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    #[test]
    fn the_layout_follows_the_spec() {
        let f = GgufFile {
            metadata: vec![
                ("general.architecture".into(), GgufValue::Str("gpt2".into())),
                ("a.u32".into(), GgufValue::U32(7)),
                ("a.f32".into(), GgufValue::F32(0.5)),
                ("a.bool".into(), GgufValue::Bool(true)),
                (
                    "a.list".into(),
                    GgufValue::Array(vec![
                        GgufValue::Str("x".into()),
                        GgufValue::Str("yz".into()),
                    ]),
                ),
            ],
            tensors: vec![
                GgufTensor::from_values("t1".into(), &[3], &[1.0, 2.0, 3.0], GgufType::F32)
                    .unwrap(),
                GgufTensor::from_values("t2".into(), &[2, 32], &[0.5; 64], GgufType::Q8_0).unwrap(),
            ],
        };
        let b = f.to_bytes();
        assert_eq!(&b[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_le_bytes(b[8..16].try_into().unwrap()),
            2,
            "tensor count"
        );
        assert_eq!(
            u64::from_le_bytes(b[16..24].try_into().unwrap()),
            5,
            "kv count"
        );
        // The first key: length 20, "general.architecture", type 8 (string), "gpt2".
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 20);
        assert_eq!(&b[32..52], b"general.architecture");
        assert_eq!(u32::from_le_bytes(b[52..56].try_into().unwrap()), 8);
        let back = GgufFile::parse(&b).unwrap();
        assert_eq!(back, f);
        // t2 dims are [32, 2] (fastest first), its offset aligned after t1's 12 bytes.
        assert_eq!(back.tensors[1].dims, vec![32, 2]);
        let name = b"\x02\0\0\0\0\0\0\0t2";
        let t2_offset = b.windows(10).position(|w| w == name).unwrap() + 10 + 4 + 16 + 4;
        assert_eq!(
            u64::from_le_bytes(b[t2_offset..t2_offset + 8].try_into().unwrap()),
            32
        );
        assert!(b.len().is_multiple_of(ALIGNMENT));
        // A width that is not a multiple of 32 cannot be q8_0.
        let e = GgufTensor::from_values("w".into(), &[2, 20], &[0.0; 40], GgufType::Q8_0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`w`") && e.contains("20"), "{e}");
        assert!(GgufFile::parse(b"GGUF\x02\x00\x00\x00").is_err());
        assert!(
            GgufFile::parse(&b[..100]).is_err(),
            "truncated files are errors"
        );
    }
}
