//! Running things on the host: the one command wrapper every external program goes through.

pub mod chroot;
pub mod cmd;
pub mod env;

pub use cmd::{Cmd, CmdError};
