//! Placeholders with the signatures the storage and chroot work will provide (removed when it lands).
#![allow(dead_code, unused_variables)]
use crate::config::Config;
use crate::storage::StageStore;

pub fn open_store(config: &Config) -> anyhow::Result<Box<dyn StageStore>> {
    unimplemented!()
}
pub fn layer_full_message(stage: &str, used: u64, total: u64) -> Option<String> {
    unimplemented!()
}
