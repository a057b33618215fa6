//! Flotilla's engine: everything but the desktop shell. Builds and tests without Tauri
//! (`cargo test -p flotilla --no-default-features`). See ARCHITECTURE.md for the layers.

pub mod bmc;
pub mod cli;
#[cfg(feature = "desktop")]
pub mod desktop;
pub mod error;
pub mod files;
pub mod guest;
pub mod hostkeys;
pub mod hypervisor;
pub mod inventory;
pub mod lb;
pub mod library;
pub mod logging;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod plan;
pub mod secrets;
