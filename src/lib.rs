//! pigen: a drop-in replacement for pi-gen's `build.sh`.
//!
//! The build is a pipeline, one module per layer:
//! config (parse bash-style files, defaults, validation) → scan + plan (stage trees → ordered
//! steps, pure) → run (chroot, storage, apt; needs root) → export (disk images) → deploy.
//! Everything up to and including the plan needs neither root nor network.

pub mod boot;
pub mod check;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod error;
pub mod exec;
pub mod export;
pub mod plan;
pub mod scan;
pub mod storage;
#[cfg(test)]
pub(crate) mod test_support;
