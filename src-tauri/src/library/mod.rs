//! The image library: immutable image files in `<data dir>/library/<image>/`. This module is
//! the adapter for local image files — probing them with `qemu-img` (the authority on disk
//! formats), converting them into flattened qcow2 with progress, hashing, placing them
//! read-only. It never touches libvirt or the inventory.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{}: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{} cannot be read", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the library has {available} bytes free at {}, but about {needed} are needed", dir.display())]
    Full {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("qemu-img {what} failed for {}: {message}", path.display())]
    QemuImg {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot write into the library at {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `qemu-img info` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    /// The resolved backing file, if the image has one.
    pub backing: Option<PathBuf>,
}

fn qemu_img(
    args: &[&std::ffi::OsStr],
    what: &'static str,
    path: &Path,
) -> Result<std::process::Output, LibraryError> {
    Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LibraryError::QemuImg {
            what,
            path: path.to_owned(),
            message: format!("cannot run qemu-img (package qemu-utils): {e}"),
        })
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// Probes a file that claims to be a disk image. Refuses what is not a regular, readable file.
pub fn probe(path: &Path) -> Result<Probe, LibraryError> {
    let meta = std::fs::metadata(path).map_err(|source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason: "is not a regular file".into(),
        });
    }
    std::fs::File::open(path).map_err(|source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let out = qemu_img(
        &[
            "info".as_ref(),
            "--output=json".as_ref(),
            "--force-share".as_ref(),
            "--".as_ref(),
            path.as_os_str(),
        ],
        "info",
        path,
    )?;
    if !out.status.success() {
        return Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason: format!("not a readable disk image ({})", first_line(&out.stderr)),
        });
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| LibraryError::QemuImg {
        what: "info",
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Probe {
        format: v["format"].as_str().unwrap_or("").to_owned(),
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        actual_size: v["actual-size"].as_u64().unwrap_or(0),
        backing: v["full-backing-filename"]
            .as_str()
            .or_else(|| v["backing-filename"].as_str())
            .map(PathBuf::from),
    })
}

/// Checks that a file is a disk image Flotilla can take in: qcow2 without damage, or raw with a
/// partition table or filesystem; a backing file only inside `library`.
pub fn check_importable(path: &Path, probe: &Probe, library: &Path) -> Result<(), LibraryError> {
    let refuse = |reason: String| {
        Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    match probe.format.as_str() {
        "qcow2" => {
            let out = qemu_img(
                &["check".as_ref(), "--output=json".as_ref(), "--force-share".as_ref(), "--".as_ref(), path.as_os_str()],
                "check",
                path,
            )?;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let corruptions = v["corruptions"].as_u64().unwrap_or(0);
            let errors = v["check-errors"].as_u64().unwrap_or(0);
            // Exit 3 = leaked clusters only: wasted space, data intact.
            if !(out.status.success() || out.status.code() == Some(3)) || corruptions > 0 || errors > 0 {
                return refuse(format!(
                    "the qcow2 image is damaged or truncated ({corruptions} corruptions, {errors} check errors{})",
                    match first_line(&out.stderr) {
                        l if l.is_empty() => String::new(),
                        l => format!(": {l}"),
                    }
                ));
            }
        }
        "raw" => {
            if let Some(kind) = raw_signature(path)? {
                if kind == "iso9660" {
                    return refuse("is an ISO 9660 image (an installer?); start a builder VM with it instead of importing it".into());
                }
            } else {
                return refuse("is not a disk image: no partition table or filesystem found".into());
            }
        }
        other => {
            return refuse(format!(
                "has format '{other}'; only qcow2 and raw images are accepted (convert with qemu-img convert -O qcow2)"
            ))
        }
    }
    if let Some(backing) = &probe.backing {
        let inside = backing
            .canonicalize()
            .ok()
            .zip(library.canonicalize().ok())
            .is_some_and(|(b, l)| b.starts_with(l));
        if !inside {
            return refuse(format!(
                "depends on the backing file {}, which is outside the library; flatten it first (qemu-img convert -O qcow2)",
                backing.display()
            ));
        }
    }
    Ok(())
}

/// Recognizes what a raw disk starts with: a partition table or a filesystem.
fn raw_signature(path: &Path) -> Result<Option<&'static str>, LibraryError> {
    let mut head = vec![0u8; 70 * 1024];
    let mut f = std::fs::File::open(path).map_err(|source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(source) => {
                return Err(LibraryError::Unreadable {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    let at = |off: usize, sig: &[u8]| {
        head.get(off..off + sig.len()) == Some(sig) && off + sig.len() <= n
    };
    Ok(if at(512, b"EFI PART") {
        Some("gpt")
    } else if at(32769, b"CD001") {
        Some("iso9660")
    } else if at(1080, &[0x53, 0xEF]) {
        Some("ext")
    } else if at(0, b"XFSB") {
        Some("xfs")
    } else if at(65600, b"_BHRfS_M") {
        Some("btrfs")
    } else if at(510, &[0x55, 0xAA]) {
        Some("mbr")
    } else {
        None
    })
}

/// Fails unless `dir` has room for about `needed` bytes (plus a margin).
pub fn ensure_space(dir: &Path, needed: u64) -> Result<(), LibraryError> {
    const MARGIN: u64 = 64 << 20;
    let available = fs4::available_space(dir).map_err(|source| LibraryError::Write {
        path: dir.to_owned(),
        source,
    })?;
    if available < needed.saturating_add(MARGIN) {
        return Err(LibraryError::Full {
            dir: dir.to_owned(),
            needed: needed.saturating_add(MARGIN),
            available,
        });
    }
    Ok(())
}

/// Converts `src` into a flattened qcow2 (compat 1.1) at `dest`, calling `progress(percent)`.
/// Streams through qemu-img: nothing is loaded into memory.
pub fn convert_to_qcow2(
    src: &Path,
    format: &str,
    dest: &Path,
    progress: &dyn Fn(f64),
) -> Result<(), LibraryError> {
    // qemu-img would create it 0644; it writes into the private file made here instead.
    crate::files::private_file(dest).map_err(|source| LibraryError::Write {
        path: dest.to_owned(),
        source,
    })?;
    let mut child = Command::new("qemu-img")
        .args([
            "convert",
            "-p",
            "-f",
            format,
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
            "--",
        ])
        .arg(src)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LibraryError::QemuImg {
            what: "convert",
            path: src.to_owned(),
            message: format!("cannot run qemu-img (package qemu-utils): {e}"),
        })?;
    // Progress comes as "    (12.34/100%)\r" on stdout.
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 256];
        let mut line = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for c in String::from_utf8_lossy(&buf[..n]).chars() {
                if c == '\r' || c == '\n' {
                    if let Some(p) = line
                        .trim()
                        .strip_prefix('(')
                        .and_then(|s| s.split('/').next())
                        .and_then(|s| s.parse::<f64>().ok())
                    {
                        progress(p);
                    }
                    line.clear();
                } else {
                    line.push(c);
                }
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LibraryError::QemuImg {
            what: "convert",
            path: src.to_owned(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let message = first_line(&out.stderr);
        let _ = std::fs::remove_file(dest);
        if message.contains("No space left") {
            let dir = dest.parent().unwrap_or(dest).to_owned();
            let available = fs4::available_space(&dir).unwrap_or(0);
            return Err(LibraryError::Full {
                dir,
                needed: 0,
                available,
            });
        }
        return Err(LibraryError::QemuImg {
            what: "convert",
            path: src.to_owned(),
            message,
        });
    }
    Ok(())
}

/// sha256 of a file, streamed, calling `progress(done, total)`.
pub fn sha256_file(path: &Path, progress: &dyn Fn(u64, u64)) -> Result<String, LibraryError> {
    let unreadable = |source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(unreadable)?;
    let total = f.metadata().map_err(unreadable)?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total);
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a finished file read-only (0400, its owner's) and moves it to its final name (which must not exist: a
/// library file is never overwritten).
pub fn seal_into_place(partial: &Path, dest: &Path) -> Result<(), LibraryError> {
    let write_err = |source| LibraryError::Write {
        path: dest.to_owned(),
        source,
    };
    if dest.exists() {
        return Err(write_err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a library file with this name exists; library files are never overwritten",
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        partial,
        std::fs::Permissions::from_mode(crate::files::READ_ONLY_MODE),
    )
    .map_err(write_err)?;
    std::fs::rename(partial, dest).map_err(write_err)
}

/// Removes `.partial` files and directories an interrupted operation left in `dir`.
pub fn remove_partials(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".partial") {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// Points a downloaded qcow2 overlay at its backing file in the library (without touching
/// data), so it can be flattened locally.
pub fn rebase_onto(overlay: &Path, backing: &Path) -> Result<(), LibraryError> {
    let out = Command::new("qemu-img")
        .args(["rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(backing)
        .arg(overlay)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LibraryError::QemuImg {
            what: "rebase",
            path: overlay.to_owned(),
            message: format!("cannot run qemu-img (package qemu-utils): {e}"),
        })?;
    if !out.status.success() {
        return Err(LibraryError::QemuImg {
            what: "rebase",
            path: overlay.to_owned(),
            message: first_line(&out.stderr),
        });
    }
    Ok(())
}

/// True when `tool` is an executable on PATH.
pub fn tool_available(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

/// Seals a captured image offline with virt-sysprep (libguestfs): removes machine identity,
/// logs, SSH host keys and the like.
pub fn sysprep(image: &Path) -> Result<(), LibraryError> {
    let out = Command::new("virt-sysprep")
        .args(["--format", "qcow2", "-a"])
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LibraryError::QemuImg {
            what: "virt-sysprep",
            path: image.to_owned(),
            message: format!("cannot run virt-sysprep: {e}"),
        })?;
    if !out.status.success() {
        return Err(LibraryError::QemuImg {
            what: "virt-sysprep",
            path: image.to_owned(),
            message: first_line(&out.stderr),
        });
    }
    Ok(())
}

/// True when the file is an ISO 9660 image (an installer).
pub fn is_iso(path: &Path) -> Result<bool, LibraryError> {
    Ok(raw_signature(path)? == Some("iso9660"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img_create(path: &Path, args: &[&str], size: &str) {
        let ok = Command::new("qemu-img")
            .args(["create", "-q"])
            .args(args)
            .arg(path)
            .arg(size)
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img create {}", path.display());
    }

    #[test]
    fn what_is_and_is_not_an_importable_image() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("library");
        std::fs::create_dir(&lib).unwrap();
        let good = dir.path().join("good.qcow2");
        qemu_img_create(&good, &["-f", "qcow2", "-o", "compat=1.1"], "16M");
        let p = probe(&good).unwrap();
        assert_eq!((p.format.as_str(), p.virtual_size), ("qcow2", 16 << 20));
        check_importable(&good, &p, &lib).unwrap();

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, not a disk\n".repeat(100)).unwrap();
        let err = check_importable(&text, &probe(&text).unwrap(), &lib)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no partition table or filesystem"), "{err}");

        let truncated = dir.path().join("truncated.qcow2");
        std::fs::copy(&good, &truncated).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated)
            .unwrap();
        f.set_len(1000).unwrap();
        let err = match probe(&truncated) {
            Err(e) => e.to_string(),
            Ok(p) => check_importable(&truncated, &p, &lib)
                .unwrap_err()
                .to_string(),
        };
        assert!(
            err.contains("damaged or truncated") || err.contains("not a readable"),
            "{err}"
        );

        let overlay = dir.path().join("overlay.qcow2");
        let backing = good.to_string_lossy().into_owned();
        qemu_img_create(
            &overlay,
            &["-f", "qcow2", "-F", "qcow2", "-b", &backing],
            "16M",
        );
        let err = check_importable(&overlay, &probe(&overlay).unwrap(), &lib)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the library"), "{err}");

        let err = probe(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = probe(&dir.path().join("missing.img"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }

    #[test]
    fn raw_disks_are_recognized_by_what_they_start_with() {
        let dir = tempfile::tempdir().unwrap();
        let mbr = dir.path().join("mbr.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[510] = 0x55;
        bytes[511] = 0xAA;
        std::fs::write(&mbr, &bytes).unwrap();
        assert_eq!(raw_signature(&mbr).unwrap(), Some("mbr"));
        let iso = dir.path().join("x.iso");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[32769..32774].copy_from_slice(b"CD001");
        std::fs::write(&iso, &bytes).unwrap();
        let p = probe(&iso).unwrap();
        let err = check_importable(&iso, &p, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ISO 9660"), "{err}");
        let zeros = dir.path().join("zeros.img");
        std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(raw_signature(&zeros).unwrap(), None);
    }

    #[test]
    fn convert_flattens_hashes_and_places_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let mut bytes = vec![7u8; 4 << 20];
        bytes[510] = 0x55;
        bytes[511] = 0xAA;
        std::fs::write(&src, &bytes).unwrap();
        let partial = dir.path().join(".v1.qcow2.partial");
        let seen = std::sync::Mutex::new(Vec::new());
        convert_to_qcow2(&src, "raw", &partial, &|p| seen.lock().unwrap().push(p)).unwrap();
        assert!(
            seen.lock().unwrap().last().is_some_and(|p| *p >= 99.0),
            "progress up to 100%"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&partial).unwrap().permissions().mode() & 0o777,
            0o600,
            "qemu-img wrote into the private file made for it"
        );
        let p = probe(&partial).unwrap();
        assert_eq!(
            (p.format.as_str(), p.virtual_size, p.backing),
            ("qcow2", 4 << 20, None)
        );
        let sum = sha256_file(&partial, &|_, _| {}).unwrap();
        assert_eq!(sum.len(), 64);
        let dest = dir.path().join("v1.qcow2");
        seal_into_place(&partial, &dest).unwrap();
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o400
        );
        std::fs::write(&partial, b"x").unwrap();
        assert!(
            seal_into_place(&partial, &dest).is_err(),
            "never overwritten"
        );
    }
}
