//! The BMC password in a real Secret Service: GNOME Keyring on a private D-Bus session bus
//! (both started here, in a temporary home; never the developer's own keyring), driven through
//! `flotillactl` as a user would. What the desktop app stores there, the CLI reads — also when
//! it is told to keep new secrets in files; without a session bus it says where it looked.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::bmc::BmcStandIn;
use common::cli::text;
use common::fixture::test_node;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Keyring-pw-0c77";

/// dbus-daemon and gnome-keyring-daemon, stopped (by their pids) when dropped.
struct Keyring {
    dir: tempfile::TempDir,
    bus: String,
    children: Vec<Child>,
}

impl Drop for Keyring {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn keyring() -> Keyring {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus");
    let bus = format!("unix:path={}", socket.display());
    // A session bus without service activation: the distribution's session.conf would start
    // a second gnome-keyring-daemon (locked, no --unlock) for the first client that asks
    // before ours has claimed the name.
    let config = dir.path().join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
        ),
    )
    .unwrap();
    let dbus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .arg("--nofork")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon (Debian's dbus; scripts/setup.sh installs it)");
    let began = Instant::now();
    while !socket.exists() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "dbus-daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let home = dir.path().join("home");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let mut gk = Command::new("gnome-keyring-daemon")
        .args(["--foreground", "--components=secrets", "--unlock"])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_RUNTIME_DIR", &run)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("gnome-keyring.log")).unwrap(),
        ))
        .spawn()
        .expect("gnome-keyring-daemon (scripts/setup.sh installs gnome-keyring)");
    {
        use std::io::Write;
        let mut stdin = gk.stdin.take().unwrap();
        stdin.write_all(b"keyring-unlock").unwrap();
    }
    let k = Keyring {
        dir,
        bus,
        children: vec![dbus, gk],
    };
    // Ready when an item stored can be read back (the login keyring is made and unlocked
    // after the daemon is on the bus).
    let began = Instant::now();
    loop {
        let mut store = Command::new("secret-tool")
            .args([
                "store",
                "--label=probe",
                "service",
                "flotilla-probe",
                "username",
                "x",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &k.bus)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("secret-tool (libsecret-tools)");
        {
            use std::io::Write;
            let _ = store.stdin.take().unwrap().write_all(b"ready");
        }
        let _ = store.wait();
        let out = k.secret_tool(&["lookup", "service", "flotilla-probe", "username", "x"]);
        if out.status.success() && out.stdout == b"ready" {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "the keyring did not come up: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(k.dir.path().join("gnome-keyring.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    k
}

impl Keyring {
    fn secret_tool(&self, args: &[&str]) -> Output {
        Command::new("secret-tool")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .output()
            .expect("secret-tool (libsecret-tools)")
    }

    fn lookup(&self, user: &str) -> Option<String> {
        let out = self.secret_tool(&["lookup", "service", "flotilla-bmc", "username", user]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The BMC stand-in over a test-driver host `h1` in `dir`, and its node file.
fn stand_in(dir: &Path) -> (BmcStandIn, PathBuf) {
    let node = dir.join("h1.xml");
    std::fs::copy(test_node(), &node).unwrap();
    (BmcStandIn::start(dir, &node, PASSWORD, None), node)
}

fn ctl(data: &Path, bus: Option<&str>, files: bool, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut cmd = common::cli::flotillactl(data);
    cmd.args(args);
    cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
    // No session bus at the default place either.
    cmd.env("XDG_RUNTIME_DIR", data.join("no-runtime-dir"));
    if let Some(bus) = bus {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", bus);
    }
    if files {
        cmd.env("FLOTILLA_SECRETS", "file");
    } else {
        cmd.env_remove("FLOTILLA_SECRETS");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_password_lives_in_the_keyring_and_the_cli_finds_it_in_either_secrets_mode() {
    let k = keyring();
    let (lab, node) = stand_in(k.dir.path());
    let data = k.dir.path().join("data");
    let bus = Some(k.bus.as_str());
    let account = format!("h1@{}", data.display());
    let uri = format!("test://{}", node.display());
    let out = ctl(
        &data,
        bus,
        false,
        &["host", "add", "h1", "--uri", &uri, "--bridge", "br0"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // With a Secret Service there: the password goes into it, not into a file.
    let set = [
        "host",
        "set",
        "h1",
        "--bmc",
        &lab.url,
        "--bmc-system",
        "1",
        "--bmc-user",
        "admin",
        "--bmc-password-stdin",
    ];
    let out = ctl(&data, bus, false, &set, PASSWORD.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("BMC password: kept in the desktop's Secret Service (keyring)"),
        "{}",
        text(&out)
    );
    assert_eq!(k.lookup(&account).as_deref(), Some(PASSWORD));
    assert!(!data.join("secrets/bmc-h1").exists());

    // Read back from the keyring; also by a process told to keep new secrets in files.
    for files in [false, true] {
        let out = ctl(
            &data,
            bus,
            files,
            &["host", "bmc-check", "h1", "--json"],
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["bmc"]["power_state"], "On");
        assert_eq!(v["bmc"]["password"], "secret_service");
    }

    // No session bus (the CLI over SSH): it says where it looked.
    let out = ctl(&data, None, false, &["host", "bmc-check", "h1"], b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("no BMC password is stored for host h1")
            && said.contains("secrets/bmc-h1")
            && said.contains("the Secret Service could not be asked"),
        "{said}"
    );

    // A new password from a process that keeps secrets in files: the file has it, the
    // keyring's old copy is gone.
    let out = ctl(
        &data,
        bus,
        true,
        &["host", "set", "h1", "--bmc-password-stdin"],
        b"new-pw\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(data.join("secrets/bmc-h1")).unwrap(),
        "new-pw"
    );
    assert_eq!(k.lookup(&account), None);

    // Back into the keyring, then the BMC removed: from the keyring too.
    let out = ctl(
        &data,
        bus,
        false,
        &["host", "set", "h1", "--bmc-password-stdin"],
        PASSWORD.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(k.lookup(&account).as_deref(), Some(PASSWORD));
    assert!(
        !data.join("secrets/bmc-h1").exists(),
        "the file copy is gone"
    );
    let out = ctl(&data, bus, false, &["host", "set", "h1", "--no-bmc"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(k.lookup(&account), None);

    // And with the host.
    let out = ctl(&data, bus, false, &set, PASSWORD.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(k.lookup(&account).is_some());
    let out = ctl(&data, bus, false, &["host", "remove", "h1"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(k.lookup(&account), None);
}
