//! Runs the image tools (`qemu-img`, `virt-sysprep`) on files that may be crafted: under
//! `prlimit` (util-linux) with an address-space and a CPU-time limit, and with a wall-clock
//! timeout after which the child is killed. The qemu-img manual recommends exactly this for
//! untrusted images; `prlimit` sets the limits in the child itself, so no `unsafe` `pre_exec`
//! is needed here.

use super::LibraryError;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What a tool may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of virtual address space (RLIMIT_AS).
    pub address_space: u64,
    /// Seconds of CPU time (RLIMIT_CPU soft limit: SIGXCPU; the hard limit, 5 s later, kills).
    pub cpu_secs: u64,
    /// Wall-clock time before the child is killed.
    pub wall: Duration,
}

fn gib_of(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

impl Limits {
    /// `qemu-img info` and `rebase -u`: they read or write a header and a few tables. The
    /// manual's example values (1 GiB address space, 30 s CPU); 60 s of wall clock for a slow
    /// or busy disk.
    pub fn header() -> Self {
        Limits {
            address_space: GIB,
            cpu_secs: 30,
            wall: Duration::from_secs(60),
        }
    }

    /// `qemu-img check`: walks every L2 and refcount table, so its work grows with the
    /// allocated size (`bytes`, the file's length). Measured: well under 1 s per GiB; 4 s of
    /// CPU and 10 s of wall clock per GiB on top of the header limits leave a wide margin.
    pub fn check(bytes: u64) -> Self {
        let g = gib_of(bytes);
        Limits {
            address_space: GIB,
            cpu_secs: 30 + 4 * g,
            wall: Duration::from_secs(60 + 10 * g),
        }
    }

    /// `qemu-img convert`: copies every allocated byte of `bytes` (the input files' lengths,
    /// backing file included). qemu-img's worker threads each reserve stack and a malloc arena,
    /// so 2 GiB of address space (not of memory); it copies at well over 100 MiB/s here, so
    /// 30 s of CPU and 120 s of wall clock per GiB (about 8 MiB/s) only stop a convert that
    /// is not copying anything.
    pub fn convert(bytes: u64) -> Self {
        let g = gib_of(bytes);
        Limits {
            address_space: 2 * GIB,
            cpu_secs: 60 + 30 * g,
            wall: Duration::from_secs(120 + 120 * g),
        }
    }

    /// `virt-sysprep`: boots the libguestfs appliance (a qemu with about 1.3 GiB of guest
    /// memory and, without KVM, a 1 GiB TCG code buffer), which inherits these limits. 8 GiB
    /// of address space; CPU time and wall clock as for a slow convert, at least 30 min.
    pub fn sysprep(bytes: u64) -> Self {
        let g = gib_of(bytes);
        Limits {
            address_space: 8 * GIB,
            cpu_secs: 1800 + 60 * g,
            wall: Duration::from_secs(1800 + 120 * g),
        }
    }
}

/// What a finished tool left.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    OutDone,
    ErrDone,
}

fn pump(mut from: impl Read, tx: mpsc::Sender<Chunk>, wrap: fn(Vec<u8>) -> Chunk, done: Chunk) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if tx.send(wrap(buf[..n].to_vec())).is_err() {
            return;
        }
    }
    let _ = tx.send(done);
}

const SIGXCPU: i32 = 24;
/// `qemu-img info` of an image with thousands of snapshots is a few MiB of JSON.
const MAX_STDOUT: usize = 16 << 20;
const MAX_STDERR: usize = 64 << 10;

/// Runs `tool args…` on `file` (named in errors) under `limits`. `on_stdout` sees the output as
/// it comes (progress), on the calling thread. An exit by a signal — CPU limit, a failed
/// allocation at the memory limit, a crash — and a timeout are errors; any exit code is the
/// caller's to judge.
pub fn run(
    tool: &'static str,
    args: &[&OsStr],
    file: &Path,
    limits: &Limits,
    on_stdout: &mut dyn FnMut(&[u8]),
) -> Result<Ran, LibraryError> {
    let cannot_run = |message: String| LibraryError::QemuImg {
        what: tool,
        path: file.to_owned(),
        message,
    };
    let mut child = Command::new("prlimit")
        .arg(format!("--as={}", limits.address_space))
        .arg(format!("--cpu={}:{}", limits.cpu_secs, limits.cpu_secs + 5))
        .arg("--core=0")
        .arg("--")
        .arg(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| cannot_run(format!("cannot run prlimit (package util-linux): {e}")))?;
    let (tx, rx) = mpsc::channel();
    let pumps = [
        child.stdout.take().map(|o| {
            let tx = tx.clone();
            std::thread::spawn(move || pump(o, tx, Chunk::Out, Chunk::OutDone))
        }),
        child.stderr.take().map(|e| {
            let tx = tx.clone();
            std::thread::spawn(move || pump(e, tx, Chunk::Err, Chunk::ErrDone))
        }),
    ];
    drop(tx);
    let started = Instant::now();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut open_pipes = pumps.iter().flatten().count();
    let mut status = None;
    let mut exited_at = None;
    let mut killed = false;
    loop {
        // Pipes first: a child blocked on a full pipe would never exit.
        match rx.recv_timeout(Duration::from_millis(50)) {
            // Kept up to a bound: a tool that floods its output must not fill our memory.
            Ok(Chunk::Out(bytes)) => {
                on_stdout(&bytes);
                if stdout.len() < MAX_STDOUT {
                    stdout.extend_from_slice(&bytes);
                }
            }
            Ok(Chunk::Err(bytes)) => {
                if stderr.len() < MAX_STDERR {
                    stderr.extend_from_slice(&bytes);
                }
            }
            Ok(Chunk::OutDone | Chunk::ErrDone) => open_pipes -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open_pipes = 0,
        }
        if status.is_none() {
            status = child
                .try_wait()
                .map_err(|e| cannot_run(format!("cannot wait for {tool}: {e}")))?;
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        match (status, exited_at) {
            // Done when both pipes are closed; a grandchild that keeps them open (libguestfs'
            // recovery process) gets a few seconds, then is no longer waited for.
            (Some(_), Some(at)) if open_pipes == 0 || at.elapsed() > Duration::from_secs(5) => {
                break
            }
            (None, _) if started.elapsed() > limits.wall => {
                // Not reaped yet, so the pid is still the child's: no other process is hit.
                let _ = child.kill();
                let _ = child.wait();
                killed = true;
                break;
            }
            _ => {}
        }
    }
    // The pump threads end when the pipes close; those still blocked belong to a lingering
    // grandchild and are left to finish on their own.
    drop(pumps);
    if killed {
        return Err(LibraryError::TimedOut {
            tool,
            path: file.to_owned(),
            secs: limits.wall.as_secs(),
        });
    }
    let Some(status) = status else {
        return Err(cannot_run(format!("{tool} vanished")));
    };
    if let Some(signal) = status.signal() {
        return Err(match signal {
            SIGXCPU => LibraryError::CpuLimit {
                tool,
                path: file.to_owned(),
                secs: limits.cpu_secs,
            },
            other => LibraryError::QemuImg {
                what: tool,
                path: file.to_owned(),
                message: format!(
                    "{tool} was stopped by signal {other}; it may have run out of its {} MiB of address space or been killed{}",
                    limits.address_space / MIB,
                    match super::first_line(&stderr) {
                        l if l.is_empty() => String::new(),
                        l => format!(" ({l})"),
                    }
                ),
            },
        });
    }
    // prlimit itself reports a tool it could not start (126, 127) in its own words.
    if matches!(status.code(), Some(126 | 127)) && stderr.starts_with(b"prlimit:") {
        return Err(cannot_run(format!(
            "cannot run {tool}{}: {}",
            match tool {
                "qemu-img" => " (package qemu-utils)",
                "virt-sysprep" => " (package libguestfs-tools)",
                _ => "",
            },
            super::first_line(&stderr)
        )));
    }
    Ok(Ran {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(address_space: u64, cpu_secs: u64, wall_secs: u64) -> Limits {
        Limits {
            address_space,
            cpu_secs,
            wall: Duration::from_secs(wall_secs),
        }
    }

    fn sh(script: &str, l: &Limits) -> Result<Ran, LibraryError> {
        run(
            "sh",
            &["-c".as_ref(), script.as_ref()],
            Path::new("/some/image.qcow2"),
            l,
            &mut |_| {},
        )
    }

    #[test]
    fn a_command_past_its_wall_clock_is_killed() {
        let started = Instant::now();
        let err = run(
            "sleep",
            &["30".as_ref()],
            Path::new("/some/image.qcow2"),
            &limits(GIB, 30, 1),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "killed, not waited for: {:?}",
            started.elapsed()
        );
        assert!(
            matches!(err, LibraryError::TimedOut { secs: 1, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "sleep did not finish within 1 s on /some/image.qcow2; the image may be crafted to hang it"
        );
    }

    #[test]
    fn a_command_past_its_memory_limit_fails() {
        // dd allocates its 256 MiB block at once: refused under 64 MiB, fine under 1 GiB.
        let dd = "exec dd if=/dev/zero of=/dev/null bs=256M count=1";
        let ran = sh(dd, &limits(64 * MIB, 30, 60)).unwrap();
        assert!(!ran.status.success());
        let stderr = String::from_utf8_lossy(&ran.stderr);
        assert!(stderr.contains("memory exhausted"), "{stderr}");
        assert!(sh(dd, &limits(GIB, 30, 60)).unwrap().status.success());
    }

    #[test]
    fn a_command_past_its_cpu_limit_is_stopped() {
        let err = sh("while :; do :; done", &limits(GIB, 1, 60)).unwrap_err();
        assert!(
            matches!(err, LibraryError::CpuLimit { secs: 1, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("more than 1 s of CPU time"),
            "{err}"
        );
    }

    #[test]
    fn output_exit_codes_and_missing_tools() {
        let mut seen = Vec::new();
        let ran = run(
            "sh",
            &["-c".as_ref(), "echo out; echo err >&2; exit 3".as_ref()],
            Path::new("/x"),
            &Limits::header(),
            &mut |b| seen.extend_from_slice(b),
        )
        .unwrap();
        assert_eq!(ran.status.code(), Some(3));
        assert_eq!((&ran.stdout[..], &seen[..]), (&b"out\n"[..], &b"out\n"[..]));
        assert_eq!(ran.stderr, b"err\n");
        let err = run(
            "no-such-tool-here",
            &[],
            Path::new("/x"),
            &Limits::header(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot run no-such-tool-here"),
            "{err}"
        );
    }

    #[test]
    fn limits_grow_with_the_size() {
        assert_eq!(Limits::convert(0).wall, Duration::from_secs(120));
        assert_eq!(Limits::convert(3 * GIB).cpu_secs, 60 + 90);
        assert_eq!(Limits::check(GIB + 1).cpu_secs, 30 + 8);
    }
}
