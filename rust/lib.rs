//! iabulk's Rust core: the one-pass job-log scan (and its analytics), the
//! resume bitmap, the identifier set and durable appends.
//!
//! Every module but `py` is plain Rust, tested with `cargo test` without a
//! Python interpreter; `py` (behind the `python` feature, which maturin turns
//! on) only converts types and releases the GIL.

pub mod analytics;
pub mod appender;
pub mod bitmap;
pub mod idset;
pub mod json;
pub mod pending;
pub mod scan;

#[cfg(feature = "python")]
mod py;
