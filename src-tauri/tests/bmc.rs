//! Power fencing through a BMC, T1: the engine and `flotillactl` against the lab's BMC
//! stand-in (`tests/rig/bmc.py`, a real Redfish service over HTTP on 127.0.0.1) whose power
//! is a libvirt test-driver host: ForceOff moves the host's node file away (as T1 kills a
//! `test://` host), On moves it back. The same client against sushy-tools (the OpenStack
//! Redfish emulator): `tests/tests/redfish_sushy.rs`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::text;
use common::fixture::test_node;
use flotilla::error::{ApiError, ErrorCode};
use flotilla::model::Secret;
use flotilla::ops::bmc::BmcInput;
use flotilla::ops::hosts::HostInput;
use flotilla::ops::Engine;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const PASSWORD: &str = "Lab-bmc-Pw-93e1-never-shown";

/// A lab host on libvirt's test driver and its BMC stand-in.
struct Lab {
    /// Holds the node file and the stand-in's files while the test runs.
    _dir: tempfile::TempDir,
    node: PathBuf,
    bmc: common::bmc::BmcStandIn,
    url: String,
}

impl Lab {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// With `tls`: the stand-in serves HTTPS with that certificate and key.
    fn start_with(tls: Option<(&Path, &Path)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("h1.xml");
        std::fs::copy(test_node(), &node).unwrap();
        let bmc = common::bmc::BmcStandIn::start(dir.path(), &node, PASSWORD, tls);
        Self {
            url: bmc.url.clone(),
            _dir: dir,
            node,
            bmc,
        }
    }

    fn uri(&self) -> String {
        format!("test://{}", self.node.display())
    }

    fn log(&self) -> String {
        self.bmc.log()
    }

    fn stop(&mut self) {
        self.bmc.stop();
    }
}

fn input(url: &str, system: &str, password: &str) -> BmcInput {
    BmcInput {
        url: url.into(),
        system: system.into(),
        user: "admin".into(),
        password: Some(Secret::parse(password).unwrap()),
        ca_pem: None,
    }
}

async fn engine(lab: &Lab, data: &Path) -> Engine {
    let e = Engine::open(data, "test").unwrap();
    e.keep_secrets_in_files();
    e.host_add(&HostInput {
        name: "h1".into(),
        uri: lab.uri(),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    e
}

#[tokio::test]
async fn power_off_through_the_stand_in_cuts_the_host_and_reads_off_back() {
    let lab = Lab::start();
    let data = tempfile::tempdir().unwrap();
    let e = engine(&lab, data.path()).await;
    e.host_set_bmc("h1", Some(input(&lab.url, "1", PASSWORD)))
        .await
        .unwrap();

    let st = e.host_bmc_check("h1").await.unwrap();
    assert_eq!(st.power_state, "On");
    assert_eq!(st.system, "1");
    assert_eq!(st.url, lab.url);
    assert!(st
        .reset_types
        .as_ref()
        .unwrap()
        .contains(&"ForceOff".to_owned()));
    assert!(lab.node.exists(), "a check changes nothing");

    let said = std::sync::Mutex::new(Vec::<String>::new());
    let fence = e
        .host_power_off("h1", Duration::from_secs(30), &|m| {
            said.lock().unwrap().push(m.to_owned())
        })
        .await
        .unwrap();
    assert_eq!(
        fence.by,
        format!(
            "BMC {} system 1: ForceOff, PowerState Off read back",
            lab.url
        )
    );
    assert!(
        time::OffsetDateTime::parse(&fence.at, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert!(!lab.node.exists(), "the host's power is really cut");
    let said = said.into_inner().unwrap();
    assert!(
        said.iter().any(|m| m.ends_with("sending ForceOff")),
        "{said:?}"
    );
    assert!(said.last().unwrap().ends_with("PowerState Off"), "{said:?}");

    // libvirt agrees: the host does not answer any more.
    e.hypervisor
        .forget(&flotilla::model::LibvirtUri::parse(&lab.uri()).unwrap());
    let h = e.host_check("h1").await.unwrap();
    assert_eq!(h.status, flotilla::model::HostStatus::Unreachable);

    // Again: nothing is sent to a host that is off.
    let again = e
        .host_power_off("h1", Duration::from_secs(5), &|_| {})
        .await
        .unwrap();
    assert!(
        again.by.contains("it was off already; nothing sent"),
        "{}",
        again.by
    );
    assert_eq!(
        lab.log().matches("reset ForceOff accepted").count(),
        1,
        "{}",
        lab.log()
    );
    let audit = e.inventory.audit_list(10).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "host.power-off"
                && a.result == flotilla::inventory::AuditResult::Ok)
            .count(),
        2
    );
}

#[tokio::test]
async fn wrong_password_unknown_system_and_a_dead_bmc_are_told_apart() {
    let mut lab = Lab::start();
    let data = tempfile::tempdir().unwrap();
    let e = engine(&lab, data.path()).await;

    e.host_set_bmc("h1", Some(input(&lab.url, "1", "wrong-password")))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(
        err.message.starts_with(&format!(
            "host h1: BMC {} refused: HTTP 401 on GET /redfish/v1/Systems/1 (check the BMC user and password); set them with: flotillactl host set h1 --bmc-user USER --bmc-password-stdin",
            lab.url
        )),
        "{}",
        err.message
    );
    let err = ApiError::from(
        e.host_power_off("h1", Duration::from_secs(5), &|_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(lab.node.exists(), "refused: nothing happened");

    e.host_set_bmc("h1", Some(input(&lab.url, "9", PASSWORD)))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(
        err.message.contains(&format!(
            "the BMC {} has no system '9' (it has: 1); set the right one with: flotillactl host set h1 --bmc-system ID",
            lab.url
        )),
        "{}",
        err.message
    );

    // The same check before anything is stored (the Add host wizard's Check button).
    let st = e.bmc_probe(&input(&lab.url, "1", PASSWORD)).await.unwrap();
    assert_eq!(st.power_state, "On");
    assert_eq!(st.password, None);
    let err = ApiError::from(
        e.bmc_probe(&input(&lab.url, "1", "nope"))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("refused: HTTP 401") && err.message.contains("host set NAME"),
        "{}",
        err.message
    );

    lab.stop();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::Unreachable);
    assert!(
        err.message
            .contains(&format!("cannot reach the BMC {}", lab.url)),
        "{}",
        err.message
    );
    let err = ApiError::from(
        e.host_power_off("h1", Duration::from_secs(5), &|_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::Unreachable);
    for a in e.inventory.audit_list(100).unwrap() {
        assert!(!a.detail.contains(PASSWORD), "{a:?}");
    }
}

/// A self-signed BMC certificate (the common case): refused with the system's roots,
/// accepted when the admin gives it.
#[tokio::test]
async fn a_self_signed_bmc_is_trusted_only_with_its_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("bmc.pem"), certs.path().join("bmc.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=lab-bmc"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package) makes a certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let lab = Lab::start_with(Some((&cert, &key)));
    let data = tempfile::tempdir().unwrap();
    let e = engine(&lab, data.path()).await;

    e.host_set_bmc("h1", Some(input(&lab.url, "1", PASSWORD)))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::Unreachable);
    assert!(
        err.message.contains("presented a TLS certificate that is not trusted (it is a CA certificate used as the BMC's own")
            && err.message.ends_with("flotillactl host set h1 --bmc-ca FILE"),
        "{}",
        err.message
    );

    let pem = std::fs::read_to_string(&cert).unwrap();
    let with_ca = BmcInput {
        ca_pem: Some(pem),
        password: None,
        ..input(&lab.url, "1", PASSWORD)
    };
    let h = e.host_set_bmc("h1", Some(with_ca)).await.unwrap();
    assert!(h.bmc.unwrap().ca_pem.is_some());
    assert_eq!(e.host_bmc_check("h1").await.unwrap().power_state, "On");

    // A certificate for another name is still refused with only that certificate trusted.
    let other = certs.path().join("other.pem");
    let other_key = certs.path().join("other.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=other"])
        .args(["-addext", "subjectAltName=IP:127.0.0.2"])
        .arg("-keyout")
        .arg(&other_key)
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success());
    let wrong = BmcInput {
        ca_pem: Some(std::fs::read_to_string(&other).unwrap()),
        password: None,
        ..input(&lab.url, "1", PASSWORD)
    };
    e.host_set_bmc("h1", Some(wrong)).await.unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::Unreachable, "{}", err.message);
}

// ---- flotillactl --------------------------------------------------------------------------

struct Ctl {
    data: tempfile::TempDir,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = common::cli::flotillactl(self.data.path());
        cmd.args(args);
        // Never a developer's own keyring.
        cmd.env("FLOTILLA_SECRETS", "file");
        cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_cli_sets_checks_shows_and_removes_a_bmc_and_never_shows_the_password() {
    let lab = Lab::start();
    let ctl = Ctl {
        data: tempfile::tempdir().unwrap(),
    };
    let mut outputs = Vec::new();
    let out = ctl.run(&["host", "add", "h1", "--uri", &lab.uri(), "--bridge", "br0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The password from stdin.
    let set = [
        "-v",
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
    let out = ctl.run_with_stdin(&set, format!("{PASSWORD}\n").as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("BMC:          {} system 1, user admin", lab.url)),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(
            "BMC password: kept in the private file secrets/bmc-h1 of the data directory"
        ),
        "{}",
        text(&out)
    );
    outputs.push(out);
    let secret_file = ctl.data.path().join("secrets/bmc-h1");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), PASSWORD);

    let out = ctl.run(&["-v", "host", "bmc-check", "h1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).starts_with(&format!(
            "Host h1: BMC {} system 1 (Flotilla lab host): power On",
            lab.url
        )),
        "{}",
        text(&out)
    );
    outputs.push(out);
    let out = ctl.run(&["host", "bmc-check", "h1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bmc"]["power_state"], "On");
    assert_eq!(v["bmc"]["password"], "file");
    outputs.push(out);

    for args in [
        &["host", "show", "h1"][..],
        &["host", "show", "h1", "--json"],
        &["host", "list"],
        &["host", "list", "--json"],
        &["audit"],
        &["audit", "--json"],
    ] {
        let out = ctl.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        outputs.push(out);
    }
    let list = String::from_utf8_lossy(&outputs[outputs.len() - 4].stdout).to_string();
    assert!(list.contains(&format!("{} system 1", lab.url)), "{list}");
    let json: serde_json::Value = serde_json::from_slice(&outputs[4].stdout).unwrap();
    assert_eq!(json["bmc"]["url"], lab.url.as_str());
    assert_eq!(json["bmc"]["password"], "file");

    // A wrong password from a file: refused, exit 20, in --json as the error shape.
    let wrong = ctl.data.path().join("wrong");
    std::fs::write(&wrong, "not-it\n").unwrap();
    let out = ctl.run(&[
        "host",
        "set",
        "h1",
        "--bmc-password-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = ctl.run(&["host", "bmc-check", "h1", "--json"]);
    assert_eq!(out.status.code(), Some(21), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "bmc_failed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused: HTTP 401"),
        "{v}"
    );
    outputs.push(out);
    let out = ctl.run_with_stdin(
        &["host", "set", "h1", "--bmc-password-stdin"],
        PASSWORD.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Bad input: exit 2, nothing changed, the password (given in the URL) not echoed.
    let before = ctl.run(&["host", "show", "h1", "--json"]).stdout;
    let leaky = format!("https://admin:{PASSWORD}@10.0.0.5");
    let huge = "x".repeat(50_000);
    for (args, stdin) in [
        (vec!["host", "set", "h1", "--bmc", "http://10.0.0.5"], None),
        (vec!["host", "set", "h1", "--bmc", leaky.as_str()], None),
        (
            vec!["host", "set", "h1", "--bmc", "https://10.0.0.5 x"],
            None,
        ),
        (vec!["host", "set", "h1", "--bmc-system", "1/../2"], None),
        (vec!["host", "set", "h1", "--bmc-user", "ad min"], None),
        (vec!["host", "set", "h1", "--bmc-user", huge.as_str()], None),
        (
            vec!["host", "set", "h1", "--bmc-password-stdin"],
            Some(vec![b'p'; 5000]),
        ),
        (
            vec!["host", "set", "h1", "--bmc-password-stdin"],
            Some(b"a\x1bb".to_vec()),
        ),
        (
            vec!["host", "set", "h1", "--bmc-password-stdin"],
            Some(Vec::new()),
        ),
        (
            vec![
                "host",
                "set",
                "h1",
                "--bmc-password-file",
                "/nonexistent/pw",
            ],
            None,
        ),
        (vec!["host", "set", "h1", "--bmc-ca", "/etc/hostname"], None),
    ] {
        let out = match &stdin {
            Some(s) => ctl.run_with_stdin(&args, s),
            None => ctl.run(&args),
        };
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).starts_with("error: "),
            "{args:?}: {}",
            text(&out)
        );
        assert!(text(&out).len() < 600, "{args:?}: {}", text(&out));
        outputs.push(out);
    }
    // A password on the command line is not even an option.
    let out = ctl.run(&["host", "set", "h1", "--bmc-password", PASSWORD]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        ctl.run(&["host", "show", "h1", "--json"]).stdout,
        before,
        "nothing changed"
    );
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), PASSWORD);

    // A new host with its BMC at once; a bad BMC refuses the add.
    let lab2 = Lab::start();
    let add = [
        "host",
        "add",
        "h2",
        "--uri",
        &lab2.uri(),
        "--bridge",
        "br0",
        "--bmc",
        "http://10.0.0.9",
        "--bmc-system",
        "1",
        "--bmc-user",
        "admin",
        "--bmc-password-stdin",
    ];
    let out = ctl.run_with_stdin(&add, PASSWORD.as_bytes());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        ctl.run(&["host", "show", "h2"]).status.code() == Some(3),
        "not added"
    );
    let mut add = add.to_vec();
    add[8] = &lab2.url;
    let out = ctl.run_with_stdin(&add, PASSWORD.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("BMC:          {} system 1", lab2.url)),
        "{}",
        text(&out)
    );
    outputs.push(out);

    // Removing the BMC, and the host, removes the password.
    let out = ctl.run(&["host", "set", "h1", "--no-bmc"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("BMC:          none"), "{}", text(&out));
    assert!(!secret_file.exists());
    let out = ctl.run(&["host", "bmc-check", "h1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("host h1 has no BMC"), "{}", text(&out));
    let h2_secret = ctl.data.path().join("secrets/bmc-h2");
    assert!(h2_secret.exists());
    let out = ctl.run(&["host", "remove", "h2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!h2_secret.exists());

    // Nowhere: what was printed, the audit log, the inventory, the log files.
    for out in &outputs {
        assert!(!text(out).contains(PASSWORD), "{}", text(out));
    }
    let files = files_under(ctl.data.path());
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("/logs/")),
        "a log file was written: {files:?}"
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{}",
            f.display()
        );
    }
}
