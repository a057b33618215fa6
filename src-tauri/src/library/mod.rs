//! The image library: immutable image files in `<data dir>/library/<image>/`. This module is
//! the adapter for local image files — probing them with `qemu-img` (the authority on disk
//! formats), converting them into flattened qcow2 with progress, hashing, placing them
//! read-only. It never touches libvirt or the inventory.
//!
//! Files to import are untrusted: their header is read here first ([`header`]) and a qcow2
//! that names any file qemu would open besides the image is refused before qemu-img sees it;
//! qemu-img always gets an explicit format (never probes) and an absolute path (never a
//! protocol), and runs under resource limits ([`limited`]).

pub mod header;
pub mod limited;

use header::{Kind, Qcow2Header};
use limited::Limits;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    #[error("{tool} did not finish within {secs} s on {}; the image may be crafted to hang it", path.display())]
    TimedOut {
        tool: &'static str,
        path: PathBuf,
        secs: u64,
    },
    #[error("{tool} used more than {secs} s of CPU time on {} and was stopped; the image may be crafted to exhaust the machine", path.display())]
    CpuLimit {
        tool: &'static str,
        path: PathBuf,
        secs: u64,
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

/// The path handed to qemu-img: absolute, so that no part of it reads as a protocol
/// (`nbd:…`, `json:…`; qemu takes a ':' before the first '/' as one).
fn for_qemu(path: &Path) -> Result<PathBuf, LibraryError> {
    std::path::absolute(path).map_err(|source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// Runs `qemu-img ARGS… FILE` with `limits`; `file` is the image it reads (named in errors).
fn qemu_img(args: &[&str], file: &Path, limits: &Limits) -> Result<limited::Ran, LibraryError> {
    let file_arg = for_qemu(file)?;
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(file_arg.as_os_str());
    limited::run("qemu-img", &all, file, limits, &mut |_| {})
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

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Refuses a qcow2 whose header names a file qemu would open besides the image itself: an
/// external data file (its bytes would become the image's content), or a backing file named
/// through a protocol or a JSON specification (a network service, any driver). Plain backing
/// file paths are judged by the caller.
fn refuse_foreign_files(path: &Path, h: &Qcow2Header) -> Result<(), LibraryError> {
    let refuse = |reason: String| {
        Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    if let Some(name) = &h.data_file {
        return refuse(format!(
            "names an external data file {}; Flotilla imports only self-contained images",
            header::shown(name)
        ));
    }
    if h.external_data {
        return refuse(
            "keeps its data in an external data file; Flotilla imports only self-contained images"
                .into(),
        );
    }
    if let Some(name) = &h.backing {
        if name.starts_with(b"json:") {
            return refuse(format!(
                "names its backing file with a qemu JSON specification ({}); Flotilla imports only self-contained images",
                header::shown(name)
            ));
        }
        if let Some(p) = header::protocol(name) {
            return refuse(format!(
                "names its backing file through the protocol '{}:' ({}); Flotilla imports only self-contained images",
                header::shown(p),
                header::shown(name)
            ));
        }
    }
    Ok(())
}

/// A backing file name as qemu resolves it: relative to the image's folder.
fn resolve_backing(image: &Path, name: &[u8]) -> Result<PathBuf, LibraryError> {
    use std::os::unix::ffi::OsStrExt;
    let name = Path::new(OsStr::from_bytes(name));
    Ok(match for_qemu(image)?.parent() {
        Some(dir) if name.is_relative() => dir.join(name),
        _ => name.to_owned(),
    })
}

/// Reads a file's header and refuses what must not reach qemu-img; returns the format to
/// give qemu-img explicitly and the resolved backing file.
fn inspect(path: &Path) -> Result<(&'static str, Option<PathBuf>), LibraryError> {
    match header::read(path)? {
        Kind::Qcow2(h) => {
            refuse_foreign_files(path, &h)?;
            let backing = h
                .backing
                .as_deref()
                .map(|b| resolve_backing(path, b))
                .transpose()?;
            Ok(("qcow2", backing))
        }
        Kind::Raw => Ok(("raw", None)),
        Kind::Other(format) => Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason: format!(
                "has format '{format}'; only qcow2 and raw images are accepted (convert with qemu-img convert -O qcow2)"
            ),
        }),
    }
}

/// Probes a file that claims to be a disk image. Refuses what is not a regular, readable file,
/// formats other than qcow2 and raw, and a qcow2 that names an external data file or a
/// backing file through a protocol — all before qemu-img opens it. `qemu-img info` does not
/// open backing files.
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
    let (format, backing) = inspect(path)?;
    let out = qemu_img(
        &["info", "-f", format, "--output=json", "--force-share", "--"],
        path,
        &Limits::header(),
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
        format: format.to_owned(),
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        actual_size: v["actual-size"].as_u64().unwrap_or(0),
        backing,
    })
}

/// Checks that a file is a disk image Flotilla can take in: qcow2 without damage, or raw with a
/// partition table or filesystem; a backing file only inside `library` (judged before
/// `qemu-img check`, which opens it).
pub fn check_importable(path: &Path, probe: &Probe, library: &Path) -> Result<(), LibraryError> {
    let refuse = |reason: String| {
        Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
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
        // qemu-img check and convert open the backing file's own references too. Library
        // versions are flat: anything else there (a capture's download, a file put there by
        // hand) is not a version to build on.
        let flat = match header::read(backing)? {
            Kind::Qcow2(h) => {
                refuse_foreign_files(backing, &h)?;
                h.backing.is_none()
            }
            Kind::Raw => true,
            Kind::Other(_) => false,
        };
        if !flat {
            return refuse(format!(
                "depends on the backing file {}, which is not a flattened library version; flatten the image first (qemu-img convert -O qcow2)",
                backing.display()
            ));
        }
    }
    match probe.format.as_str() {
        "qcow2" => {
            let out = qemu_img(
                &["check", "-f", "qcow2", "--output=json", "--force-share", "--"],
                path,
                &Limits::check(file_len(path)),
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
    Ok(())
}

/// Checks the disk downloaded from a builder before it is rebased and flattened: a qcow2 that
/// names no external data file and no backing file through a protocol. Its backing file (the
/// master copy on the host) is replaced by the library's version when the builder was made
/// from one (`has_base`); without one, any backing file is refused.
pub fn check_builder_disk(path: &Path, has_base: bool) -> Result<(), LibraryError> {
    let h = match header::read(path)? {
        Kind::Qcow2(h) => h,
        _ => {
            return Err(LibraryError::NotAnImage {
                path: path.to_owned(),
                reason: "the builder's disk is not a qcow2 image".into(),
            })
        }
    };
    refuse_foreign_files(path, &h)?;
    match &h.backing {
        Some(name) if !has_base => Err(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason: format!(
                "the builder's disk names the backing file {}, but the builder was not made from a version",
                header::shown(name)
            ),
        }),
        _ => Ok(()),
    }
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

/// Bytes qemu-img reads to copy `src`: the file and its backing file (library files are
/// flat, so one level), for the limits of a convert.
fn input_bytes(src: &Path) -> u64 {
    let backing = match header::read(src) {
        Ok(Kind::Qcow2(Qcow2Header {
            backing: Some(name),
            ..
        })) => resolve_backing(src, &name).map_or(0, |b| file_len(&b)),
        _ => 0,
    };
    file_len(src).saturating_add(backing)
}

/// Converts `src` (of the explicit `format`) into a flattened qcow2 (compat 1.1) at `dest`,
/// calling `progress(percent)`. Streams through qemu-img: nothing is loaded into memory.
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
    let (src_arg, dest_arg) = (for_qemu(src)?, for_qemu(dest)?);
    let options = [
        "convert",
        "-p",
        "-f",
        format,
        "-O",
        "qcow2",
        "-o",
        "compat=1.1",
        "--",
    ];
    let args: Vec<&OsStr> = options
        .iter()
        .map(OsStr::new)
        .chain([src_arg.as_os_str(), dest_arg.as_os_str()])
        .collect();
    // Progress comes as "    (12.34/100%)\r" on stdout.
    let mut line = String::new();
    let ran = limited::run(
        "qemu-img",
        &args,
        src,
        &Limits::convert(input_bytes(src)),
        &mut |bytes| {
            for c in String::from_utf8_lossy(bytes).chars() {
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
        },
    );
    let out = match ran {
        Ok(out) => out,
        Err(e) => {
            let _ = std::fs::remove_file(dest);
            return Err(e);
        }
    };
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
/// library file is never overwritten). The move is a hard link (which fails when the name
/// exists, in one step: no window between a check and a rename that would replace another
/// process's file) and the removal of the partial name.
pub fn seal_into_place(partial: &Path, dest: &Path) -> Result<(), LibraryError> {
    let write_err = |source| LibraryError::Write {
        path: dest.to_owned(),
        source,
    };
    let exists = || {
        write_err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a library file with this name exists; library files are never overwritten",
        ))
    };
    if dest.exists() {
        return Err(exists());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        partial,
        std::fs::Permissions::from_mode(crate::files::READ_ONLY_MODE),
    )
    .map_err(write_err)?;
    match std::fs::hard_link(partial, dest) {
        Ok(()) => std::fs::remove_file(partial).map_err(write_err),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e) => Err(write_err(e)),
    }
}

/// The lock of one image name in the library, held until dropped.
#[derive(Debug)]
pub struct ImageLock {
    _file: std::fs::File,
}

/// Takes the lock of `image` across processes (`flock` on `<data dir>/locks/image.NAME`,
/// outside the library so that a refused import leaves the library as it was), waiting for
/// the process that holds it; `waiting` is called once if it has to wait. Imports and
/// captures of one image name choose their version number, write its files and record it
/// under this lock, one after the other: two at once would take the same number, and one
/// would replace or delete the other's file after it was recorded. A lock dies with its
/// process.
pub fn lock_image(
    data_dir: &Path,
    image: &str,
    waiting: &dyn Fn(),
) -> Result<ImageLock, LibraryError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = data_dir.join("locks");
    let path = dir.join(format!("image.{image}"));
    let err = |source| LibraryError::Write {
        path: path.clone(),
        source,
    };
    crate::files::private_dir_all(&dir).map_err(err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            waiting();
            // fs4 (flock), not std's File::lock: that needs Rust 1.89, the MSRV is 1.85.
            fs4::FileExt::lock(&file).map_err(err)?;
        }
        Err(fs4::TryLockError::Error(e)) => return Err(err(e)),
    }
    Ok(ImageLock { _file: file })
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
/// data), so it can be flattened locally. Check the overlay first ([`check_builder_disk`]).
pub fn rebase_onto(overlay: &Path, backing: &Path) -> Result<(), LibraryError> {
    let backing = for_qemu(backing)?;
    let backing = backing.to_str().ok_or_else(|| LibraryError::QemuImg {
        what: "rebase",
        path: overlay.to_owned(),
        message: format!("the library path {} is not UTF-8", backing.display()),
    })?;
    let out = qemu_img(
        &[
            "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, "--",
        ],
        overlay,
        &Limits::header(),
    )?;
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
    let file = for_qemu(image)?;
    let out = limited::run(
        "virt-sysprep",
        &[
            "--format".as_ref(),
            "qcow2".as_ref(),
            "-a".as_ref(),
            file.as_os_str(),
        ],
        image,
        &Limits::sysprep(file_len(image)),
        &mut |_| {},
    )?;
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
    use std::process::Command;

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

    fn refused(path: &Path) -> String {
        match probe(path) {
            Err(e @ LibraryError::NotAnImage { .. }) => e.to_string(),
            other => panic!("{} should be refused, got {other:?}", path.display()),
        }
    }

    /// An image with an external data file is refused before qemu-img opens that file —
    /// `qemu-img info` would, and convert would copy the file's bytes into the master.
    #[test]
    fn images_naming_other_files_are_refused_before_qemu_img() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("id_ed25519");
        let with_data = dir.path().join("with-data-file.qcow2");
        let opt = format!("data_file={},data_file_raw=on", secret.display());
        qemu_img_create(&with_data, &["-f", "qcow2", "-o", &opt], "1M");
        // qemu-img create made the data file; the "image" now reads as this secret.
        std::fs::write(&secret, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
        let err = refused(&with_data);
        assert!(
            err.contains(&format!(
                "names an external data file {}; Flotilla imports only self-contained images",
                secret.display()
            )),
            "{err}"
        );

        // The feature bit alone (the name left out, to be given on the command line).
        let mut bytes = std::fs::read(&with_data).unwrap();
        let at = bytes.windows(4).position(|w| w == b"DATA").unwrap();
        bytes[at..at + 4].copy_from_slice(&[0; 4]);
        let bit_only = dir.path().join("bit-only.qcow2");
        std::fs::write(&bit_only, &bytes).unwrap();
        let err = refused(&bit_only);
        assert!(
            err.contains("keeps its data in an external data file"),
            "{err}"
        );

        let json = dir.path().join("json.qcow2");
        let spec = r#"json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}"#;
        let b = spec.replace(',', ",,");
        qemu_img_create(&json, &["-f", "qcow2", "-u", "-F", "raw", "-b", &b], "1M");
        let err = refused(&json);
        assert!(err.contains("qemu JSON specification"), "{err}");
        assert!(err.contains("/etc/passwd"), "{err}");

        // An NBD server that must never hear from qemu-img.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let url = format!("nbd://{}/x", server.local_addr().unwrap());
        let nbd = dir.path().join("nbd.qcow2");
        qemu_img_create(&nbd, &["-f", "qcow2", "-u", "-F", "raw", "-b", &url], "1M");
        let err = refused(&nbd);
        assert!(
            err.contains(&format!("through the protocol 'nbd:' ({url})")),
            "{err}"
        );
        assert!(
            server
                .accept()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "qemu-img connected to the backing file's server"
        );
        assert!(for_qemu(Path::new("nbd:x")).unwrap().starts_with("/"));
    }

    #[test]
    fn a_backing_file_inside_the_library_is_still_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("library");
        std::fs::create_dir_all(lib.join("web")).unwrap();
        let base = lib.join("web/v1.qcow2");
        qemu_img_create(&base, &["-f", "qcow2"], "8M");
        // Named relative to the overlay's folder, as qemu resolves it.
        let overlay = lib.join("web/overlay.qcow2");
        qemu_img_create(
            &overlay,
            &["-f", "qcow2", "-F", "qcow2", "-b", "v1.qcow2"],
            "8M",
        );
        let p = probe(&overlay).unwrap();
        assert_eq!(p.backing.as_deref(), Some(base.as_path()));
        check_importable(&overlay, &p, &lib).unwrap();
        let flat = dir.path().join("flat.qcow2");
        convert_to_qcow2(&overlay, &p.format, &flat, &|_| {}).unwrap();
        assert_eq!(probe(&flat).unwrap().backing, None, "flattened");

        // Inside the library but not a flat version: its own backing file would be read too.
        let outside = dir.path().join("outside.qcow2");
        qemu_img_create(&outside, &["-f", "qcow2"], "8M");
        let chained = lib.join("web/.capture.1.overlay.partial");
        let b = outside.to_str().unwrap();
        qemu_img_create(&chained, &["-f", "qcow2", "-F", "qcow2", "-b", b], "8M");
        let over_chain = dir.path().join("over-chain.qcow2");
        let b = chained.to_str().unwrap();
        qemu_img_create(&over_chain, &["-f", "qcow2", "-F", "qcow2", "-b", b], "8M");
        let err = check_importable(&over_chain, &probe(&over_chain).unwrap(), &lib)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a flattened library version"), "{err}");
    }

    #[test]
    fn a_builder_disk_names_no_other_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let host_base = "/var/lib/libvirt/images/flotilla-web-v1.qcow2";
        qemu_img_create(
            &p("overlay"),
            &["-f", "qcow2", "-u", "-F", "qcow2", "-b", host_base],
            "8M",
        );
        check_builder_disk(&p("overlay"), true).unwrap();
        let err = check_builder_disk(&p("overlay"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not made from a version"), "{err}");
        qemu_img_create(&p("blank"), &["-f", "qcow2"], "8M");
        check_builder_disk(&p("blank"), false).unwrap();

        let opt = format!("data_file={},data_file_raw=on", p("host-file").display());
        qemu_img_create(&p("data"), &["-f", "qcow2", "-o", &opt], "1M");
        let err = check_builder_disk(&p("data"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names an external data file"), "{err}");
        qemu_img_create(
            &p("nbd"),
            &[
                "-f",
                "qcow2",
                "-u",
                "-F",
                "raw",
                "-b",
                "nbd://127.0.0.1:1/x",
            ],
            "1M",
        );
        let err = check_builder_disk(&p("nbd"), true).unwrap_err().to_string();
        assert!(err.contains("protocol 'nbd:'"), "{err}");
        std::fs::write(p("raw"), vec![0u8; 4096]).unwrap();
        let err = check_builder_disk(&p("raw"), true).unwrap_err().to_string();
        assert!(err.contains("not a qcow2 image"), "{err}");
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
