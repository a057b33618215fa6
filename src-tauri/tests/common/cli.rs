//! `flotillactl` as a user runs it: a real process on a data directory, what it printed and
//! its exit code.

use std::path::Path;
use std::process::{Command, Output};

/// `flotillactl --data-dir DATA`, not reading a data directory from the environment.
pub fn flotillactl(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotillactl"));
    cmd.arg("--data-dir").arg(data);
    cmd.env_remove("FLOTILLA_DATA_DIR");
    cmd
}

/// Runs `flotillactl --data-dir DATA ARGS` to its end.
pub fn ctl(data: &Path, args: &[&str]) -> Output {
    flotillactl(data).args(args).output().unwrap()
}

/// Its stdout, after checking it exited 0 (not killed by a signal).
pub fn ok(o: Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        o.status.signal().is_none(),
        "killed by signal {:?}: {}",
        o.status.signal(),
        text(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    stdout(&o)
}

/// Its stderr, after checking it exited with `code`.
pub fn err(o: &Output, code: i32) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    e
}

/// Its exit code (`None`: killed by a signal) and stderr.
pub fn code(o: &Output) -> (Option<i32>, String) {
    (o.status.code(), stderr(o))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout then stderr.
pub fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A data directory of its own (removed at the end) and `flotillactl` on it.
pub struct Ctl {
    pub data: tempfile::TempDir,
}

impl Ctl {
    pub fn new() -> Self {
        Self {
            data: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = flotillactl(self.data.path());
        cmd.args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}
