//! The engine and the CLI must build without any Tauri crate (ARCHITECTURE.md): a headless
//! machine or a script should not pull in a web view. And a build for users has no test hooks.

use std::process::Command;

fn tree(features: &[&str]) -> String {
    tree_of(&["-e", "normal,build"], features)
}

fn tree_of(edges: &[&str], features: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", "flotilla", "--prefix", "none"])
        .args(edges)
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

/// Fault injection (`FLOTILLA_FAULT`), running steps twice and the test driver's stand-ins are
/// compiled only with the `test-hooks` feature, which only the tests turn on.
#[test]
fn a_build_for_users_has_no_test_hooks() {
    let features_of_flotilla = |edges: &str, features: &[&str]| -> String {
        tree_of(&["-e", edges, "-f", "{p} [{f}]"], features)
            .lines()
            .filter(|l| l.starts_with("flotilla v"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for features in [&["--no-default-features"][..], &[]] {
        let shipped = features_of_flotilla("normal,build", features);
        assert!(
            shipped.starts_with("flotilla v"),
            "the tree was read: {shipped}"
        );
        assert!(!shipped.contains("test-hooks"), "{shipped}");
    }
    // The check can fail: the tests' build has them.
    assert!(
        features_of_flotilla("normal,build,dev", &["--no-default-features"]).contains("test-hooks")
    );
}
