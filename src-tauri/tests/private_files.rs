//! Nothing Flotilla keeps is readable by other users: the data directory, the inventory, the
//! image library and definitions, and the temporary files with per-server configuration.
//! Checked through the real CLI under `umask 000`, so a file that is not created private on
//! purpose shows up as world-readable.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::ok;
use common::fixture;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `flotillactl --data-dir DATA ARGS` with umask 000 and its temporary files under `tmp`.
fn ctl(data: &Path, tmp: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_flotillactl"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("VISUAL")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every path under `dir` (itself included) with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(dir.to_owned(), mode(dir))];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(modes(&p));
        } else {
            out.push((p.clone(), mode(&p)));
        }
    }
    out
}

#[test]
fn the_data_directory_and_temporary_files_are_private_to_their_user() {
    let root = tempfile::tempdir().unwrap();
    let (data, tmp) = (root.path().join("data"), root.path().join("tmp"));
    std::fs::create_dir(&tmp).unwrap();
    let run = |args: &[&str]| ok(ctl(&data, &tmp, &[], args));

    for h in ["h1", "h2"] {
        let node = fixture::node_copy(root.path(), h);
        run(&[
            "host",
            "add",
            h,
            "--uri",
            &format!("test://{}", node.display()),
            "--bridge",
            "br0",
        ]);
        run(&[
            "host",
            "set",
            h,
            "--network",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.1",
        ]);
    }
    // A master with its own kernel and initrd (copied into the library too).
    let disk = root.path().join("m.qcow2");
    fixture::qcow2(&disk, "32M");
    let (kernel, initrd) = (root.path().join("vmlinuz"), root.path().join("initrd"));
    for f in [&kernel, &initrd] {
        std::fs::write(f, b"not really a kernel").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    run(&[
        "image",
        "import",
        "base",
        disk.to_str().unwrap(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
    ]);
    run(&["def", "create", "shop"]);
    let package = root.path().join("app.tar.gz");
    std::fs::write(&package, b"package bytes").unwrap();
    std::fs::set_permissions(&package, std::fs::Permissions::from_mode(0o644)).unwrap();
    run(&["def", "add-package", "shop", package.to_str().unwrap()]);

    // The editor sees its buffer in a private directory; the buffer is gone afterwards.
    let editor = root.path().join("editor.sh");
    let log = root.path().join("editor.log");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nstat -c '%a %n' \"$(dirname \"$1\")\" \"$1\" > {}\nsed -i 's/port = 8080/port = 8081/' \"$1\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o700)).unwrap();
    ok(ctl(
        &data,
        &tmp,
        &[("EDITOR", editor.to_str().unwrap())],
        &["def", "edit", "shop"],
    ));
    assert!(run(&["def", "show", "shop"]).contains("port = 8081"));
    let seen = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    let (dir_mode, dir) = lines[0].split_once(' ').unwrap();
    let (file_mode, _) = lines[1].split_once(' ').unwrap();
    assert_eq!((dir_mode, file_mode), ("700", "600"), "{seen}");
    assert!(Path::new(dir).starts_with(&tmp), "{seen}");
    assert!(!Path::new(dir).exists(), "the buffer is removed");

    // A unit deployed: seed disks and the payload image were made in private temporary
    // directories, which are gone.
    run(&[
        "unit",
        "create",
        "shop",
        "--image",
        "base",
        "--definition",
        "shop",
        "--count",
        "2",
        "--name-pattern",
        "shop-{n}",
        "--addresses",
        "10.77.0.11-10.77.0.20",
    ]);
    run(&["unit", "deploy", "shop"]);
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "no temporary file left"
    );

    // What the data directory holds: directories 0700, the inventory 0600, library and
    // definition files read-only 0400. Nothing for group or others.
    let all = modes(&data);
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let mut files = 0;
    for (p, m) in &all {
        let want = if p.is_dir() || name(p) == "ssh-flotilla" {
            // (ssh-flotilla: the ssh wrapper libvirt runs for qemu+ssh hosts, hostkeys.rs)
            0o700
        } else if name(p).starts_with("inventory.sqlite3")
            || name(p).ends_with(".log")
            || name(p) == "known_hosts"
            || p.ends_with("ssh/lock")
            || p.parent().is_some_and(|d| d.ends_with("locks"))
        {
            0o600
        } else {
            files += 1;
            0o400
        };
        assert_eq!(*m, want, "{} is {m:o}", p.display());
    }
    // (v1.qcow2, kernel, initrd; two definition versions and the edited one: toml + package)
    assert!(files >= 6, "{all:?}");
    assert!(all.iter().any(|(p, _)| name(p) == "v1.vmlinuz"));
    assert!(all.iter().any(|(p, _)| name(p) == "app.tar.gz"));
}

#[test]
fn a_data_directory_an_older_flotilla_left_readable_is_made_private() {
    let root = tempfile::tempdir().unwrap();
    let (data, tmp) = (root.path().join("data"), root.path().join("tmp"));
    std::fs::create_dir(&tmp).unwrap();
    ok(ctl(&data, &tmp, &[], &["host", "list"]));
    let db = data.join("inventory.sqlite3");
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
    // As an older build left them.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(ctl(&data, &tmp, &[], &["host", "list"]));
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
}
