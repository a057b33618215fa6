//! The engine and the CLI must build without any Tauri crate (ARCHITECTURE.md): a headless
//! machine or a script should not pull in a web view.

use std::process::Command;

fn tree(features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "flotilla",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args(features)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_engine_without_default_features_has_no_tauri_crate() {
    let headless = tree(&["--no-default-features"]);
    let crate_name = |line: &str| line.split_whitespace().next().unwrap_or("").to_owned();
    let tauri: Vec<String> = headless
        .lines()
        .map(crate_name)
        .filter(|name| {
            ["tauri", "wry", "webkit2gtk", "specta"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .collect();
    assert!(
        tauri.is_empty(),
        "Tauri crates in the headless build: {tauri:?}"
    );
    assert!(
        headless.contains("virt v0.5"),
        "the tree was read: {headless}"
    );

    // The check can fail: with the desktop feature, Tauri is there.
    let desktop = tree(&[]);
    assert!(
        desktop.lines().any(|l| crate_name(l) == "tauri"),
        "the desktop build has tauri"
    );
}
