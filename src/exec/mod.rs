//! Running things on the host: the one command wrapper every external program goes through.

pub mod build;
pub mod buildlog;
pub mod chroot;
pub mod cmd;
pub mod env;
pub mod namespace;
pub mod signals;
pub mod state;

pub use cmd::{Cmd, CmdError};
