//! `flotillactl def …`: definition directories as a user drives them.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::{ctl, err, flotillactl, ok};
use std::path::Path;
use std::process::{Command, Output};

fn versions(data: &Path, name: &str) -> usize {
    let out = ctl(data, &["def", "history", name, "--json"]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(0, |v| v.len())
}

#[test]
fn a_definition_goes_through_versions_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "shop"]));
    let show = ok(ctl(d, &["def", "show", "shop"]));
    assert!(
        show.contains("name = \"shop\""),
        "created from the example with its name: {show}"
    );
    assert!(
        show.contains("# Flotilla app-server definition"),
        "comments kept"
    );

    let pkg = dir.path().join("shop.tar.gz");
    std::fs::write(&pkg, b"package bytes").unwrap();
    let page = dir.path().join("index.html");
    std::fs::write(&page, b"<h1>hi</h1>").unwrap();
    ok(ctl(
        d,
        &[
            "def",
            "add-package",
            "shop",
            pkg.to_str().unwrap(),
            page.to_str().unwrap(),
        ],
    ));
    let shown: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["def", "show", "shop", "--json"]).stdout).unwrap();
    assert_eq!(shown["packages"][0]["size"], 13);
    assert_eq!(shown["packages"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(
        shown["text"]
            .as_str()
            .unwrap()
            .contains("# Flotilla app-server definition"),
        "comments survive package edits"
    );

    let edited = shown["text"]
        .as_str()
        .unwrap()
        .replace("port = 8080", "port = 9090");
    let file = dir.path().join("new.toml");
    std::fs::write(&file, edited).unwrap();
    ok(ctl(d, &["def", "set-file", "shop", file.to_str().unwrap()]));
    ok(ctl(d, &["def", "remove-package", "shop", "index.html"]));
    assert_eq!(versions(d, "shop"), 4);
    let diff = ok(ctl(d, &["def", "diff", "shop", "2", "4"]));
    assert!(diff.contains("~ server.port: 8080 → 9090"), "{diff}");
    assert!(diff.contains("- package index.html (11 bytes)"), "{diff}");

    // Same version → identical payload disk.
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let sa = ok(ctl(
        d,
        &["def", "payload", "shop", "4", a.to_str().unwrap()],
    ));
    let sb = ok(ctl(
        d,
        &["def", "payload", "shop", "4", b.to_str().unwrap()],
    ));
    assert_eq!(sa.split("sha256 ").nth(1), sb.split("sha256 ").nth(1));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // Export, then import the exported directory under another name.
    let tgz = dir.path().join("shop.tgz");
    ok(ctl(
        d,
        &["def", "export", "shop", "4", tgz.to_str().unwrap()],
    ));
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap()
        .success());
    ok(ctl(
        d,
        &["def", "import", "shop2", unpacked.to_str().unwrap()],
    ));
    let copy: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["def", "show", "shop2", "--json"]).stdout).unwrap();
    assert_eq!(copy["packages"][0]["file"], "shop.tar.gz");
}

#[test]
fn bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let good = dir.path().join("good.bin");
    std::fs::write(&good, b"ok").unwrap();
    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let link = dir.path().join("link.bin");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let missing = dir.path().join("missing.bin");

    for (bad, words) in [
        (&a_dir, "is a directory"),
        (&link, "symbolic link"),
        (&missing, "cannot be read"),
    ] {
        // The good file in the same batch must not be half-added.
        let e = err(
            &ctl(
                d,
                &[
                    "def",
                    "add-package",
                    "app",
                    good.to_str().unwrap(),
                    bad.to_str().unwrap(),
                ],
            ),
            2,
        );
        assert!(e.contains(words), "{e}");
    }
    ok(ctl(
        d,
        &["def", "add-package", "app", good.to_str().unwrap()],
    ));
    let e = err(
        &ctl(d, &["def", "add-package", "app", good.to_str().unwrap()]),
        2,
    );
    assert!(e.contains("already a package"), "{e}");
    assert_eq!(versions(d, "app"), 2);

    let base = String::from_utf8(ctl(d, &["def", "show", "app", "--json"]).stdout).unwrap();
    let text: serde_json::Value = serde_json::from_str(&base).unwrap();
    let text = text["text"].as_str().unwrap().to_owned();
    let cases = [
        (text.replace("[server]", "[server"), "definition.toml:"),
        (
            text.replace("port = 8080", "port = 0"),
            "server.port: expected a port between 1 and 65535",
        ),
        (
            text.replace("port = 8080", "port = 70000"),
            "definition.toml:",
        ),
        (
            text.replace("[health]", "[health]\nretries = 3"),
            "unknown field `retries`",
        ),
        (
            text.replace("start = \"", "start = \"\" # \""),
            "hooks.start: expected a shell command",
        ),
        (text.clone(), "nothing changed"),
    ];
    for (bad, words) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, bad).unwrap();
        let e = err(&ctl(d, &["def", "set-file", "app", f.to_str().unwrap()]), 2);
        assert!(e.contains(words), "expected {words:?} in {e}");
    }
    for name in ["App", "../x", &"n".repeat(300)] {
        let e = err(&ctl(d, &["def", "create", name]), 2);
        assert!(e.contains("definition:"), "{e}");
    }
    err(&ctl(d, &["def", "create", "app"]), 4);
    assert_eq!(versions(d, "app"), 2, "no new version from any of it");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("definitions/app"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "no staging left: {leftovers:?}");

    // An imported directory is checked as a whole.
    let imp = dir.path().join("imp");
    std::fs::create_dir_all(imp.join("packages")).unwrap();
    std::fs::write(imp.join("definition.toml"), &text).unwrap();
    std::fs::write(imp.join("packages/stray.bin"), b"x").unwrap();
    let e = err(&ctl(d, &["def", "import", "imp", imp.to_str().unwrap()]), 2);
    assert!(e.contains("not listed"), "{e}");
    assert_eq!(versions(d, "imp"), 0);
}

#[test]
fn edit_opens_the_editor_and_saves_only_a_valid_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(ctl(&data, &["def", "create", "web"]));
    let edit = |editor: &str| {
        flotillactl(&data)
            .args(["def", "edit", "web"])
            .env("EDITOR", editor)
            .env_remove("VISUAL")
            .output()
            .unwrap()
    };
    ok(edit("sed -i s/port\\ =\\ 8080/port\\ =\\ 8443/"));
    assert!(ok(ctl(&data, &["def", "show", "web"])).contains("port = 8443"));
    let e = err(&edit("sed -i s/port\\ =\\ 8443/port\\ =\\ 0/"), 2);
    assert!(
        e.contains("definition.toml:") && e.contains("server.port"),
        "{e}"
    );
    let e = err(&edit("false"), 2);
    assert!(e.contains("the editor failed"), "{e}");
    assert_eq!(
        versions(&data, "web"),
        2,
        "only the valid edit made a version"
    );
}

/// Package names must be files the payload disk (FAT) can hold, and distinct ignoring case.
#[test]
fn package_names_must_fit_the_payload_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let file = |name: &str| {
        let p = dir.path().join("src").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, name.as_bytes()).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let good = file("App.tar.gz");
    for (name, words) in [
        ("a:b.bin", "FAT"),
        ("what?.bin", "FAT"),
        ("x|y", "FAT"),
        ("pipe<d>", "FAT"),
        ("trailing.", "drops"),
    ] {
        // With a good file in the same batch: nothing of it is added.
        let e = err(
            &ctl(d, &["def", "add-package", "app", &good, &file(name)]),
            2,
        );
        assert!(e.contains(words), "{name}: {e}");
    }
    ok(ctl(d, &["def", "add-package", "app", &good]));
    let lower = dir.path().join("other/app.tar.gz");
    std::fs::create_dir_all(lower.parent().unwrap()).unwrap();
    std::fs::write(&lower, b"other").unwrap();
    let e = err(
        &ctl(d, &["def", "add-package", "app", lower.to_str().unwrap()]),
        2,
    );
    assert!(
        e.contains("same file as the package App.tar.gz") && e.contains("ignore case"),
        "{e}"
    );
    // Two new files that collide with each other.
    let (b1, b2) = (file("B.bin"), dir.path().join("other/b.BIN"));
    std::fs::write(&b2, b"2").unwrap();
    let e = err(
        &ctl(d, &["def", "add-package", "app", &b1, b2.to_str().unwrap()]),
        2,
    );
    assert!(e.contains("ignore case"), "{e}");
    assert_eq!(
        versions(d, "app"),
        2,
        "only the good package made a version"
    );
}

/// Runs flotillactl but gives up after `secs`: a command that waits on a FIFO or reads a
/// device forever fails the test instead of hanging it.
fn ctl_within(data: &Path, args: &[&str], secs: u64) -> Output {
    let mut child = flotillactl(data)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("flotillactl {args:?} still ran after {secs} s: it blocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// An import directory made from an exported version of `name`.
fn exported(d: &Path, name: &str, version: &str, into: &Path) {
    let tgz = into.with_extension("tgz");
    ok(ctl(
        d,
        &["def", "export", name, version, tgz.to_str().unwrap()],
    ));
    std::fs::create_dir_all(into).unwrap();
    assert!(Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap()
        .success());
    // Exported files are read-only; the tests change them.
    assert!(Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(into)
        .status()
        .unwrap()
        .success());
}

#[test]
fn import_refuses_fifos_devices_and_huge_files_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let pkg = dir.path().join("app.bin");
    std::fs::write(&pkg, b"payload").unwrap();
    ok(ctl(
        d,
        &["def", "add-package", "app", pkg.to_str().unwrap()],
    ));
    let src = dir.path().join("src");
    exported(d, "app", "2", &src);

    // definition.toml is a FIFO nobody writes to.
    let fifo_def = dir.path().join("fifo-def");
    std::fs::create_dir_all(fifo_def.join("packages")).unwrap();
    mkfifo(&fifo_def.join("definition.toml"));
    // A listed package is a FIFO.
    let fifo_pkg = dir.path().join("fifo-pkg");
    exported(d, "app", "2", &fifo_pkg);
    std::fs::remove_file(fifo_pkg.join("packages/app.bin")).unwrap();
    mkfifo(&fifo_pkg.join("packages/app.bin"));
    // packages/ itself is a FIFO.
    let fifo_dir = dir.path().join("fifo-dir");
    exported(d, "app", "1", &fifo_dir);
    let _ = std::fs::remove_dir_all(fifo_dir.join("packages"));
    mkfifo(&fifo_dir.join("packages"));
    // A definition.toml of 1 GiB (sparse: it is never read, so this costs nothing).
    let huge = dir.path().join("huge");
    std::fs::create_dir_all(&huge).unwrap();
    std::fs::File::create(huge.join("definition.toml"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    // definition.toml is a symbolic link to a device.
    let dev = dir.path().join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dev.join("definition.toml")).unwrap();

    for (import_dir, words) in [
        (&fifo_def, "named pipe (FIFO)"),
        (&fifo_pkg, "named pipe (FIFO)"),
        (&fifo_dir, "named pipe (FIFO)"),
        (
            &huge,
            "is 1073741824 bytes; a definition file is at most 1048576 bytes",
        ),
        (&dev, "symbolic link"),
    ] {
        for name in ["fresh", "app"] {
            let out = ctl_within(
                d,
                &["def", "import", name, import_dir.to_str().unwrap()],
                20,
            );
            let e = err(&out, 2);
            assert!(
                e.contains(words),
                "{}: expected {words:?} in {e}",
                import_dir.display()
            );
        }
    }
    // set-file reads what it is given the same way.
    let set_fifo = dir.path().join("set.toml");
    mkfifo(&set_fifo);
    for (file, words) in [
        (set_fifo.to_str().unwrap(), "named pipe (FIFO)"),
        ("/dev/zero", "is a device"),
        (
            huge.join("definition.toml").to_str().unwrap(),
            "at most 1048576 bytes",
        ),
    ] {
        let e = err(&ctl_within(d, &["def", "set-file", "app", file], 20), 2);
        assert!(e.contains(words), "{file}: expected {words:?} in {e}");
    }
    assert_eq!(versions(d, "app"), 2, "nothing recorded for app");
    assert_eq!(versions(d, "fresh"), 0, "nothing recorded for fresh");
    assert!(
        !data.join("definitions/fresh").exists()
            || std::fs::read_dir(data.join("definitions/fresh"))
                .unwrap()
                .next()
                .is_none()
    );
    // The untouched export still imports.
    ok(ctl(d, &["def", "import", "fresh", src.to_str().unwrap()]));
}

#[test]
fn import_verifies_the_package_checksums_written_in_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let pkg = dir.path().join("app.bin");
    std::fs::write(&pkg, b"payload").unwrap();
    ok(ctl(
        d,
        &["def", "add-package", "app", pkg.to_str().unwrap()],
    ));

    // Same size, different content: only the sha256 tells.
    let tampered = dir.path().join("tampered");
    exported(d, "app", "2", &tampered);
    std::fs::write(tampered.join("packages/app.bin"), b"PAYLOAD").unwrap();
    // Right content, wrong size written in the text.
    let wrong_size = dir.path().join("wrong-size");
    exported(d, "app", "2", &wrong_size);
    let text = std::fs::read_to_string(wrong_size.join("definition.toml")).unwrap();
    std::fs::write(
        wrong_size.join("definition.toml"),
        text.replace("size = 7", "size = 8"),
    )
    .unwrap();
    for (import_dir, words) in [
        (&tampered, "definition.toml says sha256"),
        (&wrong_size, "(7 bytes) but definition.toml says"),
    ] {
        for name in ["fresh", "app"] {
            let e = err(
                &ctl(d, &["def", "import", name, import_dir.to_str().unwrap()]),
                2,
            );
            assert!(
                e.contains("packages/app.bin")
                    && e.contains(words)
                    && e.contains("nothing was recorded"),
                "{e}"
            );
        }
    }
    assert_eq!(versions(d, "app"), 2, "nothing recorded for app");
    assert_eq!(versions(d, "fresh"), 0, "nothing recorded for fresh");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("definitions/app"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "no staging left: {leftovers:?}");
}

/// A save that started from an older version than the newest is refused with what changed
/// since; nothing is recorded, and `--base` set to the newest saves.
#[test]
fn set_file_from_an_older_version_is_refused_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let v1: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["def", "show", "app", "--json"]).stdout).unwrap();
    let v1 = v1["text"].as_str().unwrap().to_owned();
    let write = |name: &str, text: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_str().unwrap().to_owned()
    };
    // Someone else saves v2 (port 9090)…
    let theirs = write("theirs.toml", &v1.replace("port = 8080", "port = 9090"));
    ok(ctl(d, &["def", "set-file", "app", &theirs, "--base", "1"]));
    // …while I edited v1 (health path).
    let mine = write(
        "mine.toml",
        &v1.replace("path = \"/health\"", "path = \"/ready\""),
    );
    let out = ctl(d, &["def", "set-file", "app", &mine, "--base", "1"]);
    let e = err(&out, 15);
    assert!(
        e.contains("definition app changed since v1")
            && e.contains("the newest is v2")
            && e.contains("nothing was saved")
            && e.contains("~ server.port: 8080 → 9090"),
        "{e}"
    );
    assert_eq!(versions(d, "app"), 2, "nothing recorded");
    let shown = ok(ctl(d, &["def", "show", "app"]));
    assert!(
        shown.contains("port = 9090") && shown.contains("\"/health\""),
        "{shown}"
    );

    let out = ctl(
        d,
        &["def", "set-file", "app", &mine, "--base", "1", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    for (base, code, words) in [("9", 3, "app v9"), ("0", 3, "app v0"), ("x", 2, "invalid")] {
        let e = err(
            &ctl(d, &["def", "set-file", "app", &mine, "--base", base]),
            code,
        );
        assert!(e.contains(words), "--base {base}: {e}");
    }
    assert_eq!(versions(d, "app"), 2, "nothing recorded");

    // Merged onto v2 and saved with --base 2; without --base the newest is the base.
    let merged = write(
        "merged.toml",
        &v1.replace("port = 8080", "port = 9090")
            .replace("path = \"/health\"", "path = \"/ready\""),
    );
    ok(ctl(d, &["def", "set-file", "app", &merged, "--base", "2"]));
    ok(ctl(d, &["def", "set-file", "app", &theirs]));
    assert_eq!(versions(d, "app"), 4);
}

/// `def edit` saves only on top of the version the editor opened: a version saved while the
/// editor was open (here by another flotillactl, as the app would) is not undone.
#[test]
fn edit_does_not_undo_a_version_saved_while_the_editor_was_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(ctl(&data, &["def", "create", "web"]));
    let text: serde_json::Value =
        serde_json::from_slice(&ctl(&data, &["def", "show", "web", "--json"]).stdout).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        text["text"]
            .as_str()
            .unwrap()
            .replace("kind = \"httpd\"", "kind = \"nginx\""),
    )
    .unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\n'{}' --data-dir '{}' def set-file web '{}' || exit 9\nsed -i 's/port = 8080/port = 8443/' \"$1\"\n",
            env!("CARGO_BIN_EXE_flotillactl"),
            data.display(),
            other.display()
        ),
    )
    .unwrap();
    let out = flotillactl(&data)
        .args(["def", "edit", "web"])
        .env("EDITOR", format!("sh {}", editor.display()))
        .env_remove("VISUAL")
        .output()
        .unwrap();
    let e = err(&out, 15);
    assert!(
        e.contains("changed since v1") && e.contains("~ server.kind: \"httpd\" → \"nginx\""),
        "{e}"
    );
    assert_eq!(
        versions(&data, "web"),
        2,
        "only the other save made a version"
    );
    let shown = ok(ctl(&data, &["def", "show", "web"]));
    assert!(
        shown.contains("kind = \"nginx\"") && shown.contains("port = 8080"),
        "{shown}"
    );
}

/// The rules on `[[config]]` modes and paths and on package names hold for a hand-written
/// text too: each refusal names file:line:column, and no version is recorded.
#[test]
fn modes_paths_and_package_names_in_the_text_are_refused_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let v: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["def", "show", "app", "--json"]).stdout).unwrap();
    let text = v["text"].as_str().unwrap().to_owned();
    let mode_line = text
        .lines()
        .position(|l| l.starts_with("mode = \"0644\""))
        .unwrap()
        + 1;
    let package = |file: &str| {
        format!(
            "\n[[packages]]\nfile = {file:?}\nsha256 = \"{}\"\nsize = 1\n",
            "a".repeat(64)
        )
    };
    let huge_mode = "7".repeat(100_000);
    let cases = [
        (
            text.replace("mode = \"0644\"", "mode = \"64\""),
            format!("definition.toml:{mode_line}:8: config.mode: \"64\" is not a file mode"),
        ),
        (
            text.replace("mode = \"0644\"", "mode = \"+644\""),
            "3 or 4 octal digits".to_owned(),
        ),
        (
            text.replace("mode = \"0644\"", "mode = \"0644; chmod 4777 /bin/sh\""),
            "3 or 4 octal digits".to_owned(),
        ),
        (
            text.replace("mode = \"0644\"", &format!("mode = \"{huge_mode}\"")),
            "(100000 characters)".to_owned(),
        ),
        (
            text.replace("/etc/shop/server.conf", "/etc/shop/my server.conf"),
            "config.path \"/etc/shop/my server.conf\"".to_owned(),
        ),
        (
            format!("{text}{}", package("a:b.tar.gz")),
            "which the payload disk (FAT) cannot hold".to_owned(),
        ),
        (
            format!("{text}{}{}", package("App.tar.gz"), package("app.tar.gz")),
            "the same file as \"App.tar.gz\"".to_owned(),
        ),
    ];
    for (bad, words) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, bad).unwrap();
        let e = err(&ctl(d, &["def", "set-file", "app", f.to_str().unwrap()]), 2);
        assert!(e.contains(&words), "expected {words:?} in {e}");
        assert!(e.len() < 2000, "a readable message: {} bytes", e.len());
    }
    assert_eq!(versions(d, "app"), 1, "nothing recorded");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A directory to import: version 1 of `name` with `packages` (each file's content is its
/// own name), listed in this order with their sha256 and size.
fn import_dir(d: &Path, name: &str, into: &Path, packages: &[&str]) {
    exported(d, name, "1", into);
    let pk = into.join("packages");
    std::fs::create_dir_all(&pk).unwrap();
    let toml = into.join("definition.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    for p in packages {
        std::fs::write(pk.join(p), p.as_bytes()).unwrap();
        text.push_str(&format!(
            "\n[[packages]]\nfile = \"{p}\"\nsha256 = \"{}\"\nsize = {}\n",
            sha256_hex(p.as_bytes()),
            p.len()
        ));
    }
    std::fs::write(&toml, text).unwrap();
}

/// Package names the payload disk (FAT, written by fatfs) would not hold as themselves —
/// outside UCS-2, one file to FAT's case folding (Unicode, not only ASCII), or one file to an
/// 8.3 short name FAT gave another — are refused at `def import`, `add-package`, `set-file`
/// and the editor's save, naming the file and the reason; nothing is recorded. Odd names FAT
/// does hold come back from the written payload disk byte for byte, read by mtools (another
/// FAT implementation), and are listed once each.
#[test]
fn package_names_the_payload_disk_would_lose_are_refused_by_import_add_package_set_file_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = &data;
    ok(ctl(d, &["def", "create", "app"]));
    let refused: &[(&[&str], &str, &str)] = &[
        (
            &["app-😀.tar.gz"],
            "app-😀.tar.gz",
            "Basic Multilingual Plane",
        ),
        (&["ß.txt", "SS.txt"], "SS.txt", "ignore case"),
        (&["σ.conf", "ς.conf"], "ς.conf", "ignore case"),
        (&["ǅ.txt", "ǆ.txt"], "ǆ.txt", "ignore case"),
        (
            &["longfilename.txt", "LONGFI~1.TXT"],
            "LONGFI~1.TXT",
            "8.3 short name",
        ),
        (
            &["application-server.tar.gz", "APPLIC~1.GZ"],
            "APPLIC~1.GZ",
            "8.3 short name",
        ),
    ];
    for (i, (names, file, words)) in refused.iter().enumerate() {
        let into = dir.path().join(format!("import{i}"));
        import_dir(d, "app", &into, names);
        let e = err(
            &ctl(d, &["def", "import", "app", into.to_str().unwrap()]),
            2,
        );
        assert!(e.contains(file) && e.contains(words), "{names:?}: {e}");
    }
    assert_eq!(versions(d, "app"), 1, "no import was recorded");

    // add-package: one at a time, and against what the definition has.
    let src = |sub: &str, name: &str| {
        let p = dir.path().join("src").join(sub).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, name.as_bytes()).unwrap();
        p.to_str().unwrap().to_owned()
    };
    ok(ctl(d, &["def", "add-package", "app", &src("1", "ß.txt")]));
    ok(ctl(
        d,
        &["def", "add-package", "app", &src("1", "longfilename.txt")],
    ));
    for (name, words) in [
        ("SS.txt", "same file as the package ß.txt"),
        ("a😀.bin", "Basic Multilingual Plane"),
        (
            "LONGFI~1.TXT",
            "8.3 short name FAT gave packages/longfilename.txt",
        ),
    ] {
        let e = err(&ctl(d, &["def", "add-package", "app", &src("2", name)]), 2);
        assert!(e.contains(name) && e.contains(words), "{name}: {e}");
    }
    assert_eq!(versions(d, "app"), 3, "only the two good packages");

    // set-file and the editor: the same packages in another order, where FAT would take the
    // second for the first's short name.
    ok(ctl(d, &["def", "create", "ord"]));
    ok(ctl(
        d,
        &[
            "def",
            "add-package",
            "ord",
            &src("3", "LONGFI~1.TXT"),
            &src("3", "longfilename.txt"),
        ],
    ));
    let v: serde_json::Value =
        serde_json::from_slice(&ctl(d, &["def", "show", "ord", "--json"]).stdout).unwrap();
    let text = v["text"].as_str().unwrap();
    let at = text.find("\n[[packages]]").unwrap();
    let (head, pkgs) = text.split_at(at);
    let mut entries: Vec<&str> = pkgs
        .split("\n[[packages]]")
        .filter(|p| !p.trim().is_empty())
        .collect();
    entries.reverse();
    let swapped = format!(
        "{head}{}\n",
        entries
            .iter()
            .map(|e| format!("\n[[packages]]{}", e.trim_end()))
            .collect::<String>()
    );
    assert!(
        swapped.find("longfilename") < swapped.find("LONGFI~1"),
        "{swapped}"
    );
    let f = dir.path().join("swapped.toml");
    std::fs::write(&f, &swapped).unwrap();
    let e = err(&ctl(d, &["def", "set-file", "ord", f.to_str().unwrap()]), 2);
    assert!(
        e.contains("LONGFI~1.TXT") && e.contains("8.3 short name"),
        "{e}"
    );
    let edit = flotillactl(d)
        .args(["def", "edit", "ord"])
        .env("EDITOR", format!("cp {}", f.display()))
        .env_remove("VISUAL")
        .output()
        .unwrap();
    let e = err(&edit, 2);
    assert!(
        e.contains("LONGFI~1.TXT") && e.contains("8.3 short name"),
        "{e}"
    );
    assert_eq!(versions(d, "ord"), 2, "neither save was recorded");

    // Odd names FAT does hold: they come back as themselves.
    let long = format!("{}.bin", "x".repeat(200));
    let mut odd = vec![
        "é ü.txt",
        "e\u{301} ü.txt",
        "Ǆ.txt",
        "a b [c] {d} #e% & '+,;=@^_`~!.tar.gz",
        "長い名前のパッケージ.tar.gz",
        "LONGFI~1.TXT",
        "longfilename.txt",
        "README",
        "readme.md",
        "x.y.z",
        &long,
    ];
    let many: Vec<String> = (1..=12)
        .map(|i| format!("application-{i}.tar.gz"))
        .collect();
    odd.extend(many.iter().map(String::as_str));
    ok(ctl(d, &["def", "create", "odd"]));
    let into = dir.path().join("odd");
    import_dir(d, "odd", &into, &odd);
    ok(ctl(d, &["def", "import", "odd", into.to_str().unwrap()]));
    let img = dir.path().join("odd.img");
    ok(ctl(
        d,
        &["def", "payload", "odd", "2", img.to_str().unwrap()],
    ));
    // mcopy reads the folder out whole (it would take `[c]` in a name for a pattern).
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let copied = Command::new("mcopy")
        .env("LANG", "C.UTF-8")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(&img)
        .arg("::packages")
        .arg(&out)
        .output()
        .expect("mcopy (mtools)");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let mut got: Vec<(String, String)> = std::fs::read_dir(out.join("packages"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = odd
        .iter()
        .map(|n| ((*n).to_owned(), (*n).to_owned()))
        .collect();
    want.sort();
    assert_eq!(got, want, "each name once, with its own content");
}
