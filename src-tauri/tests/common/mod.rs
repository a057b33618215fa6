//! Helpers the T1 test files share (one copy each; a helper only one file uses stays in that
//! file). A test file takes them with `mod common;` (or `#[path = "../common/mod.rs"] mod
//! common;` from a test directory such as `units/`).
//!
//! - [`fixture`]: an engine on libvirt's `test:///` driver in a temporary data directory, its
//!   hosts (copies of `tests/fixtures/test-node.xml`), master images and step callbacks.
//! - [`cli`]: running `flotillactl` and reading what it printed and its exit code.
//! - [`lb`]: a real Caddy and a real HAProxy on loopback.
//! - [`bmc`]: the lab's BMC stand-in powering a test-driver host.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of it

pub mod bmc;
pub mod cli;
pub mod fixture;
pub mod lb;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
