//! The lab's BMC stand-in for a test-driver host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lab's BMC stand-in (`tests/rig/bmc.py`, a real Redfish service over HTTP on
/// 127.0.0.1, named as the stand-in for hardware the tests cannot have) powering a libvirt
/// test-driver host: ForceOff moves the host's node file away (as T1 kills a `test://` host),
/// On moves it back.
pub struct BmcStandIn {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl BmcStandIn {
    /// For the host whose node file is `node`, with user `admin` and `password`; its files go
    /// in `dir`. With `tls`: HTTPS with that certificate and key.
    pub fn start(dir: &Path, node: &Path, password: &str, tls: Option<(&Path, &Path)>) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/rig/bmc.py")
            .canonicalize()
            .unwrap();
        let stem = node.file_stem().unwrap().to_string_lossy().into_owned();
        let pw = dir.join(format!("{stem}.bmc-password"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let port_file = dir.join(format!("{stem}.bmc-port"));
        let log = dir.join(format!("{stem}.bmc-log"));
        let n = node.display();
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--system",
                "1",
                "--user",
                "admin",
            ])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--password-file")
            .arg(&pw)
            .args(["--off-cmd", &format!("mv '{n}' '{n}.off'")])
            .args(["--on-cmd", &format!("mv '{n}.off' '{n}'")])
            .args(["--state-cmd", &format!("test -e '{n}'")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let scheme = match tls {
            Some((cert, key)) => {
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
                "https"
            }
            None => "http",
        };
        let child = cmd.spawn().expect("python3 runs tests/rig/bmc.py");
        let began = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                if !p.trim().is_empty() {
                    break p.trim().to_owned();
                }
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the BMC stand-in did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BmcStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}
