//! `flotillactl image …` with real files: qemu-img makes the test images.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::{ctl, flotillactl, stderr};
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    assert!(
        Command::new("qemu-img")
            .args(args)
            .status()
            .unwrap()
            .success(),
        "{args:?}"
    );
}

fn versions(data: &Path) -> Vec<serde_json::Value> {
    serde_json::from_slice(&ctl(data, &["image", "list", "--json"]).stdout).unwrap()
}

#[test]
fn import_list_show_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = dir.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "32M"]);
    let raw = dir.path().join("disk.raw");
    let mut bytes = vec![0u8; 2 << 20];
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    std::fs::write(&raw, &bytes).unwrap();

    let out = ctl(
        &data,
        &[
            "image",
            "import",
            "web",
            disk.to_str().unwrap(),
            "--notes",
            "first",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ctl(
        &data,
        &[
            "image",
            "import",
            "web",
            raw.to_str().unwrap(),
            "--firmware",
            "uefi",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["format"], "qcow2", "raw input is stored as qcow2");
    assert_eq!(v2["boot"]["firmware"], "uefi");

    let list = versions(&data);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["notes"], "first");
    let file = data.join("library").join(list[0]["file"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o222,
        0,
        "read-only"
    );

    let show = ctl(&data, &["image", "show", "web"]);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("web:v2"),
        "newest by default"
    );
    let out = ctl(&data, &["image", "delete", "web"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a version must be named: {}",
        stderr(&out)
    );
    let out = ctl(&data, &["image", "delete", "web:1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!file.exists(), "the library file is gone");
    assert_eq!(versions(&data).len(), 1);
}

#[test]
fn bad_images_are_refused_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = |name: &str| dir.path().join(name);
    let good = p("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "16M"]);
    std::fs::write(p("notes.txt"), "not a disk image\n".repeat(1000)).unwrap();
    std::fs::copy(&good, p("truncated.qcow2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(p("truncated.qcow2"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        good.to_str().unwrap(),
        p("overlay.qcow2").to_str().unwrap(),
    ]);
    std::fs::create_dir(p("a-directory")).unwrap();
    std::fs::write(p("empty.img"), b"").unwrap();
    let vmdk = p("disk.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().unwrap(), "16M"]);

    let s = |x: &str| p(x).to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![s("notes.txt")], 2, "no partition table or filesystem"),
        (vec![s("truncated.qcow2")], 2, "truncated"),
        (vec![s("overlay.qcow2")], 2, "outside the library"),
        (vec![s("a-directory")], 2, "not a regular file"),
        (vec![s("missing.qcow2")], 2, "cannot be read"),
        (vec![s("empty.img")], 2, "no partition table or filesystem"),
        (
            vec![vmdk.to_str().unwrap().to_owned()],
            2,
            "only qcow2 and raw",
        ),
    ];
    for (args, code, words) in cases {
        let mut full = vec!["image".to_string(), "import".into(), "web".into()];
        full.extend(args.clone());
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = ctl(&data, &full);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(words),
            "{args:?}: expected {words:?} in {}",
            stderr(&out)
        );
    }
    for (name, words) in [
        ("Web", "lowercase"),
        ("../x", "not allowed"),
        (&"w".repeat(300)[..], "300 characters"),
    ] {
        let out = ctl(&data, &["image", "import", name, good.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains(words) || stderr(&out).contains("contains"),
            "{name}: {}",
            stderr(&out)
        );
    }
    let out = ctl(
        &data,
        &[
            "image",
            "import",
            "web",
            good.to_str().unwrap(),
            "--kernel",
            "/nonexistent/vmlinuz",
            "--cmdline",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(versions(&data).is_empty(), "nothing recorded");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("library/web"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "no files left in the library: {leftovers:?}"
    );
}

#[test]
fn a_library_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = dir.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "16M"]);
    // A file without a record where v1 would go (left by hand, or by a crash after the rename).
    std::fs::create_dir_all(data.join("library/web")).unwrap();
    std::fs::write(data.join("library/web/v1.qcow2"), b"precious").unwrap();
    let out = ctl(&data, &["image", "import", "web", good.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("never overwritten"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(data.join("library/web/v1.qcow2")).unwrap(),
        b"precious"
    );
    assert!(versions(&data).is_empty());
}

/// Every file under `dir` with its size, to show that a refused import changed nothing.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            found.push((e.path().display().to_string(), meta.len()));
        }
    }
    found.sort();
    found
}

#[test]
fn images_that_name_other_files_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    qemu_img(&["create", "-q", "-f", "qcow2", &p("good.qcow2"), "16M"]);
    let out = ctl(&data, &["image", "import", "web", &p("good.qcow2")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A qcow2 whose guest data is another file: here a private key.
    let data_file = format!("data_file={},data_file_raw=on", p("id_ed25519"));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &data_file,
        &p("key.qcow2"),
        "1M",
    ]);
    std::fs::write(p("id_ed25519"), b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    let json = r#"json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}"#;
    let json = json.replace(',', ",,");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        &json,
        &p("json.qcow2"),
        "1M",
    ]);
    let nbd = "nbd://127.0.0.1:1/x";
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-F",
        "raw",
        "-b",
        nbd,
        &p("nbd.qcow2"),
        "1M",
    ]);

    let library = data.join("library");
    let before = tree(&library);
    let cases = [
        (
            "key.qcow2",
            format!(
                "names an external data file {}; Flotilla imports only self-contained images",
                p("id_ed25519")
            ),
        ),
        (
            "json.qcow2",
            "names its backing file with a qemu JSON specification".into(),
        ),
        ("nbd.qcow2", format!("through the protocol 'nbd:' ({nbd})")),
    ];
    for (file, words) in &cases {
        for image in ["web", "other"] {
            let out = ctl(&data, &["image", "import", image, &p(file), "--json"]);
            assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["error"]["code"], "invalid_input", "{file}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(&p(file)), "{message}");
            assert!(message.contains(words.as_str()), "{file}: {message}");
        }
    }
    assert_eq!(versions(&data).len(), 1, "nothing recorded");
    assert_eq!(tree(&library), before, "the library folder is unchanged");
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Two `flotillactl image import` processes of one image name, started together with
/// different files, again and again: both are recorded, as two versions one after the other,
/// and the sha256 recorded for every version is its file's (before, both took the same
/// version number: one overwrote or removed the other's file, or one failed).
#[test]
fn two_imports_of_one_name_at_once_are_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut inputs = Vec::new();
    for (i, size) in ["16M", "24M"].iter().enumerate() {
        let disk = dir.path().join(format!("in{i}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), size]);
        inputs.push(disk);
    }
    // The first version exists, so every round races on the image's next number.
    let out = ctl(
        &data,
        &["image", "import", "web", inputs[0].to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rounds = 12;
    for round in 0..rounds {
        let children: Vec<_> = inputs
            .iter()
            .map(|f| {
                flotillactl(&data)
                    .args(["image", "import", "web", f.to_str().unwrap(), "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: an import of the same name at the same time failed: {}",
                stderr(&out)
            );
        }
        let list = versions(&data);
        assert_eq!(list.len(), 1 + 2 * (round + 1), "round {round}: {list:?}");
        for v in &list {
            let file = data.join("library").join(v["file"].as_str().unwrap());
            assert!(file.exists(), "round {round}: {} is gone", file.display());
            assert_eq!(
                sha256_of(&file),
                v["sha256"].as_str().unwrap(),
                "round {round}: the sha256 recorded for web:{} is not its file's",
                v["version"]
            );
        }
    }
    // Each round added one version of each file (their virtual sizes tell them apart).
    let sizes: Vec<u64> = versions(&data)
        .iter()
        .map(|v| v["virtual_size"].as_u64().unwrap())
        .collect();
    for s in [16u64 << 20, 24 << 20] {
        assert!(
            sizes.iter().filter(|&&x| x == s).count() >= rounds,
            "{sizes:?}"
        );
    }
    // No staging file is left behind.
    let left: Vec<_> = std::fs::read_dir(data.join("library/web"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
