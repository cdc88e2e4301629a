//! The model crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading, saving or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: file not found{hint}")]
    MissingFile { path: PathBuf, hint: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file that does not parse (`field` is `<document>`), or a field whose value is
    /// wrong (`<config>`: a value the config as a whole rejects).
    #[error("{path}: {}", json_problem(.field, .message))]
    Json {
        path: PathBuf,
        field: String,
        message: String,
    },

    #[error(
        "{path}: safetensors key `{key}` is missing (the model config.json describes needs it{hint})"
    )]
    MissingKey {
        path: PathBuf,
        key: String,
        hint: String,
    },

    #[error(
        "{path}: safetensors key `{key}` has shape {found:?}, the model config.json describes \
         expects {expected:?}"
    )]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: tensor `{key}` has dtype {dtype}, which manners cannot load")]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },

    #[error(
        "{path}: {count} tensors are not used by the config (first: `{first}`): config.json \
         describes another shape than these weights"
    )]
    UnusedKeys {
        path: PathBuf,
        count: usize,
        first: String,
    },

    #[error("{path}: {count} weight tensors hold NaN or infinite values (first: `{first}`)")]
    NonFiniteWeights {
        path: PathBuf,
        count: usize,
        first: String,
    },

    #[error("{path}: not a valid safetensors file (truncated or corrupt?): {message}")]
    CorruptWeights { path: PathBuf, message: String },

    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error(
        "{}: the tokenizer has {tokenizer} tokens but config.json's vocab_size is {embedding}; \
         ids >= {embedding} would index past the embedding (resize the embedding or use the \
         matching tokenizer)", .dir.display()
    )]
    VocabMismatch {
        dir: PathBuf,
        tokenizer: usize,
        embedding: usize,
    },

    #[error("invalid model config: {0}")]
    Config(String),

    #[error(
        "the context would be {needed} tokens but the model's n_positions is {max}; shorten the \
         prompt or lower max_new_tokens"
    )]
    ContextOverflow { needed: usize, max: usize },

    #[error("unknown backend `{0}`: expected one of auto, flex, ndarray, wgpu, cuda, rocm")]
    UnknownBackend(String),

    #[error("no such device: {0}")]
    NoDevice(String),

    #[error("--devices: {0}")]
    BadDevices(String),

    #[error("backend `{0}` is not compiled into this build (enable the Cargo feature `{0}`)")]
    BackendNotCompiled(String),

    #[error("no GPU adapter found for wgpu{0}")]
    NoAdapter(String),

    #[error("generation: {0}")]
    Generation(String),

    #[error(
        "{what} needs one buffer of {} but {device} binds at most {} per buffer (the \
         adapter's storage-buffer limit): {hint}",
        mib(*.bytes),
        mib(*.limit)
    )]
    BufferTooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        device: String,
        hint: String,
    },
}

/// Bytes in MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path,
                hint: String::new(),
            }
        } else {
            ModelError::Io { path, source }
        }
    }
}

fn json_problem(field: &str, message: &str) -> String {
    match field {
        "<document>" => format!("not valid JSON: {message}"),
        "<config>" => message.to_string(),
        f => format!("field `{f}`: {message}"),
    }
}
