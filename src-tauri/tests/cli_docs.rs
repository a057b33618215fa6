//! `flotillactl completions SHELL` and `flotillactl man --out DIR`: generated from the CLI
//! definition, as a packager runs them (real processes, no inventory).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output};

/// Runs flotillactl with a data directory that must stay untouched.
fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotillactl"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .expect("run flotillactl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn bash_completions_name_the_real_subcommands_and_open_no_inventory() {
    let data = tempfile::tempdir().unwrap();
    let out = run(data.path(), &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("flotillactl"), "{script}");
    for sub in [
        "unit", "host", "image", "def", "lb", "op", "impact", "monitor",
    ] {
        assert!(
            script.split_whitespace().any(|w| w == sub),
            "{sub} is missing from the bash completions"
        );
    }
    // A subcommand's own flags are there too.
    assert!(script.contains("--canary"), "unit rollout --canary");
    assert!(is_empty(data.path()), "completions made an inventory");
}

#[test]
fn zsh_and_fish_completions_are_printed() {
    let data = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("zsh", "#compdef flotillactl"),
        ("fish", "complete -c flotillactl"),
    ] {
        let out = run(data.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("rollout"), "{shell}: no `unit rollout`");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let data = tempfile::tempdir().unwrap();
    let out = run(data.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("tcsh"), "{err}");
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
    assert!(is_empty(data.path()));
}

#[test]
fn man_writes_the_main_page_and_one_per_subcommand() {
    let data = tempfile::tempdir().unwrap();
    let pages = tempfile::tempdir().unwrap();
    let out_dir = pages.path().join("man1");
    let out = run(data.path(), &["man", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let main = std::fs::read_to_string(out_dir.join("flotillactl.1")).expect("flotillactl.1");
    assert!(main.contains(".SH NAME"), "{main}");
    assert!(main.contains("flotillactl"), "{main}");
    for page in [
        "flotillactl-unit.1",
        "flotillactl-unit-rollout.1",
        "flotillactl-host-add.1",
        "flotillactl-completions.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".SH NAME"), "{page}: {text}");
    }
    let rollout = std::fs::read_to_string(out_dir.join("flotillactl-unit-rollout.1")).unwrap();
    assert!(rollout.contains("canary"), "{rollout}");
    assert!(is_empty(data.path()), "man made an inventory");
}

#[test]
fn man_into_a_path_that_is_a_file_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = run(
        data.path(),
        &["man", "--out", file.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write man pages"),
        "{}",
        text(&out.stderr)
    );
}
