//! End-to-end tests through the `manners` facade, on tiny configs.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod facade;
