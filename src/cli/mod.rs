//! The terminal side: `imagejob-operator job get|wait` (`job/`) and the
//! kubectl plugin (`plugin/`), with what they share: one [`Exit`] and the
//! argument parsing that maps to it (`exit.rs`), and one way to draw a job
//! and its parts on a terminal (`render.rs`).
//!
//! Exit codes: docs/contract.md.

pub mod exit;
pub mod job;
pub mod plugin;
pub mod render;

pub use exit::{Exit, parse_args};
