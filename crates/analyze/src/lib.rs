//! profanalyze's library: offline analysis of profcap captures.
//!
//! [`Material::load`] reads a capture's reference records, [`profile::build`]
//! turns its samples into symbolized stacks, and the `export` and `diff`
//! modules render them. Nothing here needs root or the recorded host.

pub mod capture;
pub mod diff;
pub mod export;
pub mod info;
pub mod inputs;
pub mod memory;
pub mod profile;
mod progress;
pub mod recipes;
pub mod requests;
pub mod sockets;
pub mod symbolize;
pub mod units;
pub mod unwind;

use std::path::PathBuf;

pub use capture::Material;
pub use profile::{build, Filter, Grouping, Profile, ProfileOptions, Shape};
pub use symbolize::SymbolizeOptions;

/// Errors of analysis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The capture could not be read.
    #[error("{path}")]
    Capture { path: PathBuf, source: profcap_format::Error },
    /// The capture could not be opened (the error names the file).
    #[error(transparent)]
    Open(profcap_format::Error),
    /// Nothing matched.
    #[error("{0}")]
    NoSamples(String),
    /// The input has no such data in a form this output can carry.
    #[error("{0}")]
    Unsupported(String),
    /// A renderer failed.
    #[error("rendering failed: {0}")]
    Render(String),
    /// Writing output failed.
    #[error("writing output")]
    Output(#[source] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
