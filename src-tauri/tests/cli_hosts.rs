//! `flotillactl host …` as a user runs it: real processes, a real inventory file, libvirt's
//! test driver with a node file per test.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::{stderr, stdout, Ctl};
use common::fixture::test_node;
use std::process::Command;

/// What these tests add to `Ctl`.
impl Ctl {
    /// A private copy of the test node, so each host has its own URI.
    fn node(&self, name: &str) -> String {
        let path = self.data.path().join(format!("{name}.xml"));
        std::fs::copy(test_node(), &path).expect("copy fixture");
        format!("test://{}", path.display())
    }

    fn hosts(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["host", "list", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("host list --json is JSON")
    }
}

#[test]
fn add_list_show_check_remove() {
    let ctl = Ctl::new();
    let uri = ctl.node("h1");
    let out = ctl.run(&["host", "add", "h1", "--uri", &uri, "--bridge", "br0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Added host h1"), "{}", stdout(&out));

    let list = ctl.run(&["host", "list"]);
    let text = stdout(&list);
    assert!(text.starts_with("NAME"), "a table with a header: {text}");
    assert!(text.contains("h1") && text.contains("ok") && text.contains("GiB/100.0 GiB"));

    let show = ctl.run(&["host", "show", "h1", "--json"]);
    let host: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(host["uri"], uri.as_str());
    assert_eq!(host["facts"]["cpus"], 4);
    assert_eq!(host["facts"]["memory_bytes"], 8u64 << 30);
    assert_eq!(host["facts"]["bridge"]["state"], "found");
    assert_eq!(host["pool"], "default");

    let check = ctl.run(&["host", "check", "h1"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("Status:       ok"),
        "{}",
        stdout(&check)
    );

    let rm = ctl.run(&["host", "remove", "h1"]);
    assert_eq!(rm.status.code(), Some(0), "{}", stderr(&rm));
    assert!(ctl.hosts().is_empty());

    let audit = ctl.run(&["audit", "--json"]);
    let log: Vec<serde_json::Value> = serde_json::from_slice(&audit.stdout).unwrap();
    let actions: Vec<_> = log.iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["host.remove", "host.check", "host.add"]);
    assert!(log.iter().all(|a| a["via"] == "cli" && a["result"] == "ok"));
    let me = whoami::username().unwrap();
    assert!(
        log.iter().all(|a| a["actor"] == me.as_str()),
        "who: {log:?}"
    );
    assert!(
        !log[0]["at"].as_str().unwrap().contains('.'),
        "whole seconds: {}",
        log[0]["at"]
    );
}

/// Each refused command: its exit status, words the message must contain, and no host stored.
#[test]
fn bad_input_is_refused_with_a_clear_error_and_stores_nothing() {
    let ctl = Ctl::new();
    let uri = ctl.node("good");
    let long = "a".repeat(300);
    let huge_uri = format!("qemu:///{}", "x".repeat(100_000));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["host", "add", "H1", "--uri", &uri], 2, "lowercase"),
        (
            vec!["host", "add", "", "--uri", &uri],
            2,
            "must not be empty",
        ),
        (
            vec!["host", "add", &long, "--uri", &uri],
            2,
            "300 characters",
        ),
        (vec!["host", "add", "../etc", "--uri", &uri], 2, "\".\""),
        (vec!["host", "add", "h1", "--uri", "not a uri"], 2, "spaces"),
        (
            vec!["host", "add", "h1", "--uri", "ftp://h/system"],
            2,
            "unknown hypervisor driver",
        ),
        (vec!["host", "add", "h1", "--uri", &huge_uri], 2, "too long"),
        (
            vec!["host", "add", "h1", "--uri", "qemu+ssh://u:pw@h/system"],
            2,
            "password",
        ),
        (
            vec!["host", "add", "h1", "--uri", &uri, "--pool", "../../x"],
            2,
            "pool:",
        ),
        (
            vec!["host", "add", "h1", "--uri", &uri, "--bridge", "br0;reboot"],
            2,
            "bridge:",
        ),
        (
            vec!["host", "add", "h1", "--uri", "test:///no/such/node.xml"],
            6,
            "test:///no/such/node.xml",
        ),
        (
            vec!["host", "add", "h1", "--uri", &uri, "--bridge", "br9"],
            7,
            "bridge 'br9' does not exist",
        ),
        (
            vec!["host", "add", "h1", "--uri", &uri, "--pool", "fast"],
            7,
            "storage pool 'fast' does not exist",
        ),
        (vec!["host", "add", "h1"], 2, "--uri"),
        (
            vec!["host", "show", "nope"],
            3,
            "host 'nope' does not exist",
        ),
        (vec!["host", "remove", "nope"], 3, "does not exist"),
        (vec!["host", "check", "nope"], 3, "does not exist"),
        (vec!["host", "frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, code, words) in cases {
        let out = ctl.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: expected {words:?} in {err}");
        assert!(
            err.len() < 2000,
            "{args:?}: the message must stay readable: {} bytes",
            err.len()
        );
    }
    assert!(ctl.hosts().is_empty(), "nothing was stored");
}

#[test]
fn json_errors_carry_code_message_and_detail() {
    let ctl = Ctl::new();
    let out = ctl.run(&[
        "host",
        "add",
        "h1",
        "--uri",
        "test:///no/such/node.xml",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(6));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "unreachable");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot connect to test:///no/such/node.xml"));
    assert!(v["error"]["detail"]
        .as_str()
        .unwrap()
        .contains("failed to parse"));
}

#[test]
fn duplicates_are_refused() {
    let ctl = Ctl::new();
    let uri = ctl.node("h1");
    assert_eq!(
        ctl.run(&["host", "add", "h1", "--uri", &uri, "--bridge", "br0"])
            .status
            .code(),
        Some(0)
    );
    let other = ctl.node("other");
    let dup_name = ctl.run(&["host", "add", "h1", "--uri", &other, "--bridge", "br0"]);
    assert_eq!(dup_name.status.code(), Some(4), "{}", stderr(&dup_name));
    assert!(stderr(&dup_name).contains("host 'h1' already exists"));
    let dup_uri = ctl.run(&["host", "add", "h2", "--uri", &uri, "--bridge", "br0"]);
    assert_eq!(dup_uri.status.code(), Some(4));
    assert!(
        stderr(&dup_uri).contains("already registered"),
        "{}",
        stderr(&dup_uri)
    );
    assert_eq!(ctl.hosts().len(), 1);
}

#[test]
fn check_reports_a_host_that_went_away() {
    let ctl = Ctl::new();
    let uri = ctl.node("h1");
    assert_eq!(
        ctl.run(&["host", "add", "h1", "--uri", &uri, "--bridge", "br0"])
            .status
            .code(),
        Some(0)
    );
    std::fs::remove_file(ctl.data.path().join("h1.xml")).unwrap();
    let out = ctl.run(&["host", "check", "h1", "--json"]);
    assert_eq!(out.status.code(), Some(6), "exit status says unreachable");
    let host: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(host["status"], "unreachable");
    assert!(host["status_detail"]
        .as_str()
        .unwrap()
        .contains("cannot connect"));
    assert_eq!(host["facts"]["cpus"], 4, "the last known facts stay");
}

#[test]
fn two_processes_share_one_inventory() {
    let ctl = Ctl::new();
    // A fresh inventory: the first processes race to create and migrate it.
    let uris: Vec<String> = (0..8).map(|i| ctl.node(&format!("n{i}"))).collect();
    let mut children = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        let name = format!("h{i}");
        children.push(
            ctl.command(&["host", "add", &name, "--uri", uri, "--bridge", "br0"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Readers at the same time.
        children.push(
            ctl.command(&["host", "list", "--json"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let mut names: Vec<String> = ctl
        .hosts()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, (0..8).map(|i| format!("h{i}")).collect::<Vec<_>>());
}

#[test]
fn data_dir_from_the_environment_and_clear_errors_when_unusable() {
    let ctl = Ctl::new();
    let via_env = ctl.data.path().join("from-env");
    let out = Command::new(env!("CARGO_BIN_EXE_flotillactl"))
        .args(["host", "list"])
        .env("FLOTILLA_DATA_DIR", &via_env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        via_env.join("inventory.sqlite3").exists(),
        "FLOTILLA_DATA_DIR is used"
    );

    let a_file = ctl.data.path().join("plain-file");
    std::fs::write(&a_file, b"not a directory").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotillactl"))
        .arg("--data-dir")
        .arg(&a_file)
        .args(["host", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot create the data directory"),
        "{}",
        stderr(&out)
    );

    let not_sqlite = ctl.data.path().join("garbage");
    std::fs::create_dir(&not_sqlite).unwrap();
    std::fs::write(not_sqlite.join("inventory.sqlite3"), vec![0x42u8; 8192]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotillactl"))
        .arg("--data-dir")
        .arg(&not_sqlite)
        .args(["host", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot open the inventory"),
        "{}",
        stderr(&out)
    );
}

/// A URI that would make libvirt run a program is refused before libvirt sees it: the program
/// never runs (a marker file it would write stays absent) and no host is stored.
#[test]
fn uris_that_would_run_a_program_are_refused_and_nothing_runs() {
    use std::os::unix::fs::PermissionsExt;
    let ctl = Ctl::new();
    let marker = ctl.data.path().join("ran");
    let program = ctl.data.path().join("evil.sh");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = program.display().to_string();
    let ext = format!("qemu+ext:///system?command={p}");
    let ssh_command = format!("qemu+ssh://localhost/system?command={p}");
    let ssh_cased = format!("qemu+ssh://localhost/system?CoMmAnD={p}");
    let ssh_encoded = format!("qemu+ssh://localhost/system?%63ommand={p}");
    let after_semicolon = format!("qemu+ssh://localhost/system?no_tty=1;command={p}");
    let netcat = format!("qemu+ssh://localhost/system?NetCat={p}");
    let cases: Vec<(&str, &str)> = vec![
        (&ext, "ext transport"),
        (&ssh_command, "parameter \"command\" is refused"),
        (&ssh_cased, "(written \"CoMmAnD\")"),
        (&ssh_encoded, "(written \"%63ommand\")"),
        (&after_semicolon, "parameter \"command\""),
        (
            &netcat,
            "parameter \"netcat\" (written \"NetCat\") is refused",
        ),
        (
            "qemu+ssh://localhost/system?proxy=native",
            "parameter \"proxy\"",
        ),
        (
            "qemu+ssh://localhost/system?frobnicate=1",
            "not one Flotilla passes to libvirt",
        ),
    ];
    for (uri, words) in cases {
        let out = ctl.run(&["host", "add", "h1", "--uri", uri]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{uri}: {err}");
        assert!(err.contains(words), "{uri}: expected {words:?} in {err}");
        assert!(
            !marker.exists(),
            "{uri}: the program ran; the URI reached libvirt"
        );
    }
    assert!(ctl.hosts().is_empty(), "nothing was stored");
}

/// SSH host keys without a network: a fingerprint for a host that is not reached over SSH, or
/// a malformed one, is refused with a reason and stores nothing (the lab tests, `lab_ssh`,
/// cover real sshd hosts).
#[test]
fn host_key_flags_are_checked_before_anything_connects() {
    let ctl = Ctl::new();
    let uri = ctl.node("h1");
    let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let out = ctl.run(&[
        "host",
        "add",
        "h1",
        "--uri",
        &uri,
        "--bridge",
        "br0",
        "--accept-host-key",
        fp,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not use SSH"),
        "{}",
        stderr(&out)
    );
    let huge = format!("SHA256:{}", "A".repeat(100_000));
    for bad in ["yes", "SHA256:", "SHA256:$(reboot)", huge.as_str()] {
        let out = ctl.run(&[
            "host",
            "add",
            "h1",
            "--uri",
            "qemu+ssh://admin@h1.invalid/system",
            "--accept-host-key",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("fingerprint"), "{}", stderr(&out));
        assert!(
            stderr(&out).len() < 2000,
            "a huge input is not echoed whole"
        );
    }
    // Host names ssh could read as an option never get that far.
    let out = ctl.run(&[
        "host",
        "add",
        "h1",
        "--uri",
        "qemu+ssh://-oProxyCommand=x/system",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ctl.hosts().is_empty());
    assert!(!ctl.data.path().join("ssh/known_hosts").exists());
    // trust-key needs an SSH host.
    let out = ctl.run(&["host", "add", "h1", "--uri", &uri, "--bridge", "br0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ctl.run(&["host", "trust-key", "h1", "--fingerprint", fp]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not use SSH"),
        "{}",
        stderr(&out)
    );
}
