//! The trainer's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] manners_model::ModelError),

    #[error(transparent)]
    Data(#[from] manners_data::DataError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("config: {0}")]
    Config(String),

    #[error("{path}: invalid config: {message}")]
    ConfigFile { path: PathBuf, message: String },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error(
        "training diverged: {count} steps in a row had a non-finite loss or gradient (last at step \
         {step}); {kept}. Lower the learning rate or check the data."
    )]
    Diverged { step: u64, count: u32, kept: String },

    #[error(
        "training diverged at step {step}: {what}. The run is stopped; {kept}. Lower the learning \
         rate, or raise diverge_ratio (0 turns the watchdog off)."
    )]
    LossDiverged {
        step: u64,
        what: String,
        kept: String,
    },

    #[error("{0}")]
    NoData(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
