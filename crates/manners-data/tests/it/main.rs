//! Crate-level tests of manners-data (one harness, see STYLE.md §7.13).
#![allow(clippy::unwrap_used)] // unwrap is allowed in tests (clippy.toml), helpers included

mod batching;
mod common;
mod fuzz;
mod golden;
mod properties;
mod reading;
mod streaming;
mod templates;
mod tools;
