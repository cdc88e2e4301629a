//! Command-line arguments: what the user typed. Conversion to library configs happens in the
//! command modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Supervised fine-tuning of GPT-style language models, on any Burn backend.
#[derive(Debug, Parser)]
#[command(name = "manners", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from a prompt with a model folder.
    Generate(GenerateArgs),
    /// Show a model folder's config, parameter count, tokenizer and special tokens.
    Info(InfoArgs),
}

/// Which Burn backend runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// A hardware GPU through wgpu when one exists, else flex.
    #[default]
    Auto,
    /// Pure-Rust CPU backend (SIMD + threads).
    Flex,
    /// The ndarray CPU backend (deprecated upstream).
    Ndarray,
    /// wgpu: Vulkan, Metal or DX12 (any GPU vendor), or a software Vulkan driver.
    Wgpu,
}

impl From<BackendArg> for manners::BackendKind {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => manners::BackendKind::Auto,
            BackendArg::Flex => manners::BackendKind::Flex,
            BackendArg::Ndarray => manners::BackendKind::Ndarray,
            BackendArg::Wgpu => manners::BackendKind::Wgpu,
        }
    }
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Backend: auto (a hardware GPU via wgpu if present, else flex), flex, ndarray, wgpu.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto, env = "MANNERS_BACKEND")]
    pub backend: BackendArg,
}

/// Sampling options shared by generate, chat and eval.
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Most new tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn sampling(&self) -> manners::Sampling {
        if self.temperature <= 0.0 {
            manners::Sampling::Greedy
        } else {
            manners::Sampling::Sample {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model folder (Hugging Face GPT-2 layout, or one written by manners).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Do not stop at the end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
