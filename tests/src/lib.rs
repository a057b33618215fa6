//! Helpers for the cross-cutting tests in `tests/tests/`: reading the lab's settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The running lab (tests/rig/lab up), as described by its `lab.env`.
#[derive(Debug, Clone)]
pub struct Lab {
    vars: HashMap<String, String>,
}

impl Lab {
    /// Reads `$FLOTILLA_LAB_DIR/lab.env` (default /var/tmp/flotilla-lab). Panics with the
    /// command to run when the lab is not up.
    pub fn from_env() -> Self {
        let dir =
            std::env::var("FLOTILLA_LAB_DIR").unwrap_or_else(|_| "/var/tmp/flotilla-lab".into());
        let path = PathBuf::from(&dir).join("lab.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the lab is not up ({}: {e}); run `tests/rig/lab up` as root",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { vars }
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("lab.env has no {key}"))
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.get("FLOTILLA_LAB_DIR"))
    }

    /// The directory with vmlinuz, initrd.img and master.qcow2 of the tiny guest.
    pub fn guest(&self) -> PathBuf {
        PathBuf::from(self.get("FLOTILLA_LAB_GUEST"))
    }

    pub fn host_uri(&self, i: u32) -> String {
        self.get(&format!("FLOTILLA_LAB_H{i}_URI")).to_owned()
    }

    /// Fetches `url` from inside the lab's network namespace (where the guests' addresses are
    /// reachable); `None` when nothing answered.
    pub fn http_get(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", self.get("FLOTILLA_LAB_NETNS")])
            // curl, not busybox wget: the static busybox's wget crashes in glibc's resolver.
            .args(["curl", "-sS", "--max-time", "2", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The serial console log of a domain on lab host `i` (as libvirt there writes it).
    pub fn serial_log(&self, i: u32, file_name: &str) -> String {
        let path = self.dir().join(format!("h{i}/log/qemu/{file_name}"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| format!("(no serial log at {}: {e})", path.display()))
    }
}

impl Lab {
    /// Runs `tests/rig/lab ARGS…` (kill-host, revive-host, …) and panics if it fails.
    pub fn run(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/lab");
        let out = Command::new(&script)
            .args(args)
            .env("FLOTILLA_LAB_DIR", self.dir())
            .output()
            .expect("run tests/rig/lab");
        assert!(
            out.status.success(),
            "lab {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
