//! The BMC client against a Redfish service Flotilla did not write: sushy-tools, the
//! OpenStack Redfish emulator (installed by `scripts/setup.sh`), on 127.0.0.1 with its libvirt
//! driver over libvirt's test driver (`test:///default` in the emulator's process: one domain,
//! "test", running). So the client is not tuned to the lab's own stand-in (`tests/rig/bmc.py`,
//! the same scenarios in `src-tauri/tests/bmc.rs`). No root needed.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::error::{ApiError, ErrorCode};
use flotilla::model::Secret;
use flotilla::ops::bmc::BmcInput;
use flotilla::ops::hosts::HostInput;
use flotilla::ops::Engine;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = "2.2.0";
const PASSWORD: &str = "Sushy-pw-5d2c";
/// The running domain of `test:///default`.
const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("FLOTILLA_SUSHY_VENV") {
        return v.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join(format!("flotilla/sushy-tools-{VERSION}"))
}

struct Sushy {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sushy() -> Sushy {
    let venv = venv();
    let emulator = venv.join("bin/sushy-emulator");
    assert!(
        emulator.exists(),
        "{} is missing: run scripts/setup.sh (it installs sushy-tools {VERSION})",
        emulator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // sushy-tools reads an htpasswd file of bcrypt hashes only.
    let hashed = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())",
            PASSWORD,
        ])
        .output()
        .unwrap();
    assert!(hashed.status.success());
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("admin:{}", String::from_utf8_lossy(&hashed.stdout)),
    )
    .unwrap();
    let config = dir.path().join("emulator.conf");
    std::fs::write(
        &config,
        format!(
            "SUSHY_EMULATOR_AUTH_FILE = {:?}\nSUSHY_EMULATOR_LIBVIRT_URI = 'test:///default'\n",
            htpasswd.display().to_string()
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(&emulator)
        .arg("--config")
        .arg(&config)
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("sushy.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let began = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "sushy-emulator did not start: {}",
            std::fs::read_to_string(dir.path().join("sushy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Sushy { child, url, dir }
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

async fn engine(data: &Path) -> Engine {
    let node = data.join("h1.xml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-node.xml"),
        &node,
    )
    .unwrap();
    let e = Engine::open(data, "test").unwrap();
    e.keep_secrets_in_files();
    e.host_add(&HostInput {
        name: "h1".into(),
        uri: format!("test://{}", node.display()),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    e
}

#[tokio::test]
async fn the_client_fences_through_sushy_tools() {
    let sushy = start_sushy();
    let data = tempfile::tempdir().unwrap();
    let e = engine(data.path()).await;

    // Power state read.
    e.host_set_bmc("h1", Some(input(&sushy.url, UUID, PASSWORD)))
        .await
        .unwrap();
    let st = e.host_bmc_check("h1").await.unwrap();
    assert_eq!(st.power_state, "On", "{st:?}");
    assert_eq!(st.system, UUID);
    assert!(st
        .reset_types
        .as_ref()
        .unwrap()
        .contains(&"ForceOff".to_owned()));

    // ForceOff, Off read back.
    let fence = e
        .host_power_off("h1", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        fence.by,
        format!(
            "BMC {} system {UUID}: ForceOff, PowerState Off read back",
            sushy.url
        )
    );
    assert_eq!(e.host_bmc_check("h1").await.unwrap().power_state, "Off");

    // The domain's name: sushy-tools redirects it to the UUID, on the same BMC.
    e.host_set_bmc("h1", Some(input(&sushy.url, "test", PASSWORD)))
        .await
        .unwrap();
    assert_eq!(e.host_bmc_check("h1").await.unwrap().power_state, "Off");

    // Wrong password: BMC refused.
    e.host_set_bmc("h1", Some(input(&sushy.url, UUID, "wrong")))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(
        err.message
            .contains(&format!("BMC {} refused: HTTP 401", sushy.url))
            && err.message.contains("check the BMC user and password"),
        "{}",
        err.message
    );

    // Unknown system: said, with the ones it has.
    e.host_set_bmc("h1", Some(input(&sushy.url, "nope", PASSWORD)))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(
        err.message.contains(&format!(
            "the BMC {} has no system 'nope' (it has: {UUID})",
            sushy.url
        )),
        "{}",
        err.message
    );
    let log = std::fs::read_to_string(sushy.dir.path().join("sushy.log")).unwrap();
    assert!(log.contains("ComputerSystem.Reset"), "{log}");
}
