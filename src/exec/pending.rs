//! Placeholders with the signatures the storage and chroot work will provide (removed when it lands).
#![allow(dead_code, unused_variables)]
use std::path::Path;

use crate::config::{Arch, Config, Env};
use crate::exec::cmd::Cmd;
use crate::exec::env::StageVars;
use crate::storage::StageStore;

pub fn script_env(config: &Config, process_env: &Env, stage: &StageVars) -> Env {
    unimplemented!()
}
pub fn chroot_script_cmd(env: &Env, script: &str) -> Cmd {
    unimplemented!()
}
pub fn debconf_script(content: &str) -> String {
    unimplemented!()
}
pub fn apt_install_script(packages: &[String], recommends: bool) -> String {
    unimplemented!()
}
pub struct ResolvConfGuard;
impl ResolvConfGuard {
    pub fn install(rootfs: &Path) -> anyhow::Result<ResolvConfGuard> {
        unimplemented!()
    }
    pub fn finish(self) -> anyhow::Result<()> {
        unimplemented!()
    }
}
pub fn ensure_binfmt(arch: Arch) -> anyhow::Result<()> {
    unimplemented!()
}
pub fn open_store(config: &Config) -> anyhow::Result<Box<dyn StageStore>> {
    unimplemented!()
}
pub fn layer_full_message(stage: &str, used: u64, total: u64) -> Option<String> {
    unimplemented!()
}
