//! An engine as the tests drive it: a temporary data directory with its inventory, hosts on
//! libvirt's `test:///` driver (each a copy of `tests/fixtures/test-node.xml`, so each host has
//! its own URI and can be "killed" by moving its node file away), master images made with
//! qemu-img and definitions.

use flotilla::hypervisor::HvConfig;
use flotilla::inventory::{Actor, Inventory};
use flotilla::ops::hosts::HostInput;
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::StepFn;
use flotilla::ops::Engine;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The libvirt test driver's node file every test host starts from.
pub fn test_node() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/test-node.xml")
        .canonicalize()
        .expect("fixture")
}

/// A copy of the test node as `DIR/HOST.xml`.
pub fn node_copy(dir: &Path, host: &str) -> PathBuf {
    let node = dir.join(format!("{host}.xml"));
    std::fs::copy(test_node(), &node).unwrap();
    node
}

/// A step callback that ignores the steps.
pub fn quiet() -> StepFn {
    Arc::new(|_| {})
}

/// An engine with its inventory and image library in `dir`, acting as user `test`.
pub fn engine_in(dir: &Path) -> Engine {
    Engine::with(
        Inventory::open_in(dir).unwrap(),
        HvConfig::default(),
        Actor::new("test"),
        dir.join("library"),
    )
}

/// Adds host `name` whose libvirt is the test driver on `node`, with the bridge `br0`.
pub async fn add_host(e: &Engine, name: &str, node: &Path) {
    e.host_add(&HostInput {
        name: name.into(),
        uri: format!("test://{}", node.display()),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
}

/// An empty qcow2 disk of `size` (qemu-img's notation: `64M`) at `path`.
pub fn qcow2(path: &Path, size: &str) {
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .status()
        .unwrap()
        .success());
}

/// Imports `file` as the next version of master `base` (a BIOS disk).
pub async fn import_base(
    e: &Engine,
    file: PathBuf,
    notes: String,
) -> flotilla::model::ImageVersion {
    e.image_import(
        &ImportRequest {
            image: "base".into(),
            file,
            notes,
            boot: BootInput::Disk(flotilla::model::Firmware::Bios),
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap()
}
