//! The recipes' error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Train(#[from] manners::train::TrainError),

    #[error(transparent)]
    Data(#[from] manners::data::DataError),

    #[error(transparent)]
    Model(#[from] manners::ModelError),

    #[error(transparent)]
    Report(#[from] manners::report::ReportError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    /// A training run (through the caller's runner) failed.
    #[error(transparent)]
    Run(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = RecipeError> = std::result::Result<T, E>;

impl RecipeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecipeError::Io {
            path: path.into(),
            source,
        }
    }
}
