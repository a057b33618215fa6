//! T2: power fencing on the lab. Lab host 2's BMC stand-in (`tests/rig/bmc.py`, started by
//! `tests/rig/lab bmc-up`) really cuts the host: Flotilla's `host_power_off` sends ForceOff,
//! the stand-in runs `lab kill-host 2` (libvirtd, virtlogd, sshd, QEMU gone), and Off is read
//! back; libvirt no longer answers. The stand-in's On (`lab revive-host 2`) brings the host
//! back, and the test waits until libvirt answers again. Wrong password and unknown system
//! are refused with words an admin can act on. Restores what it changed: host 2 runs again,
//! and a BMC stand-in this test started is stopped.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::bmc::{BmcTarget, Limits, PowerState, Redfish};
use flotilla::error::{ApiError, ErrorCode};
use flotilla::model::{BmcUrl, BmcUser, HostStatus, LibvirtUri, Secret, SystemId};
use flotilla::ops::bmc::BmcInput;
use flotilla::ops::hosts::HostInput;
use flotilla_tests::Lab;
use std::process::Command;
use std::time::{Duration, Instant};

const HOST: u32 = 2;

fn alive(lab: &Lab) -> bool {
    Command::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rig/lab"))
        .args(["host-alive", &HOST.to_string()])
        .env("FLOTILLA_LAB_DIR", lab.dir())
        .status()
        .unwrap()
        .success()
}

/// Whatever happens in the test, lab host 2 runs again afterwards (and the BMC stand-in this
/// test started is stopped).
struct Restore {
    lab: Lab,
    stop_bmc: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !alive(&self.lab) {
            self.lab.run(&["revive-host", &HOST.to_string()]);
        }
        if self.stop_bmc {
            self.lab.run(&["bmc-down", &HOST.to_string()]);
        }
    }
}

#[tokio::test]
#[ignore = "needs the lab: sudo tests/rig/lab up"]
async fn fencing_through_the_lab_bmc_cuts_the_host_and_on_brings_it_back() {
    let mut lab = Lab::from_env();
    let key = format!("FLOTILLA_LAB_H{HOST}_BMC_URL");
    // Started here when lab.env names no BMC for the host or nothing answers there.
    let answers = std::fs::read_to_string(lab.dir().join("lab.env"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=http://")))
        .is_some_and(|addr| std::net::TcpStream::connect(addr.trim()).is_ok());
    let started = !answers;
    if started {
        lab.run(&["bmc-up", &HOST.to_string()]);
        lab = Lab::from_env();
    }
    let _restore = Restore {
        lab: lab.clone(),
        stop_bmc: started,
    };
    assert!(alive(&lab), "lab host {HOST} runs before the test");
    let url = lab.get(&key).to_owned();
    let system = lab
        .get(&format!("FLOTILLA_LAB_H{HOST}_BMC_SYSTEM"))
        .to_owned();
    let user = lab
        .get(&format!("FLOTILLA_LAB_H{HOST}_BMC_USER"))
        .to_owned();
    let password =
        std::fs::read_to_string(lab.get(&format!("FLOTILLA_LAB_H{HOST}_BMC_PASSWORD_FILE")))
            .unwrap()
            .trim()
            .to_owned();

    let data = tempfile::tempdir().unwrap();
    let e = flotilla_tests::engine_in(data.path());
    e.keep_secrets_in_files();
    let host = format!("lab-h{HOST}");
    e.host_add(&HostInput {
        name: host.clone(),
        uri: lab.host_uri(HOST),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    let bmc = |system: &str, password: &str| BmcInput {
        url: url.clone(),
        system: system.into(),
        user: user.clone(),
        password: Some(Secret::parse(password).unwrap()),
        ca_pem: None,
    };

    // Refusals an admin can act on; nothing happens to the host.
    e.host_set_bmc(&host, Some(bmc(&system, "not-the-password")))
        .await
        .unwrap();
    let err = ApiError::from(
        e.host_power_off(&host, Duration::from_secs(30), &|_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::BmcFailed);
    assert!(
        err.message.contains("refused: HTTP 401") && err.message.contains("--bmc-user"),
        "{}",
        err.message
    );
    e.host_set_bmc(&host, Some(bmc("7", &password)))
        .await
        .unwrap();
    let err = ApiError::from(e.host_bmc_check(&host).await.unwrap_err());
    assert!(
        err.message.contains("has no system '7' (it has: 1)"),
        "{}",
        err.message
    );
    assert!(alive(&lab), "a refused request changed nothing");

    // The fence.
    e.host_set_bmc(&host, Some(bmc(&system, &password)))
        .await
        .unwrap();
    assert_eq!(e.host_bmc_check(&host).await.unwrap().power_state, "On");
    let began = Instant::now();
    let fence = e
        .host_power_off(&host, Duration::from_secs(30), &|m| eprintln!("fence: {m}"))
        .await
        .unwrap();
    eprintln!(
        "fenced in {:?}: {} at {}",
        began.elapsed(),
        fence.by,
        fence.at
    );
    assert_eq!(
        fence.by,
        format!("BMC {url} system {system}: ForceOff, PowerState Off read back")
    );
    assert!(!alive(&lab), "the host's libvirtd is gone");
    e.hypervisor
        .forget(&LibvirtUri::parse(&lab.host_uri(HOST)).unwrap());
    assert_eq!(
        e.host_check(&host).await.unwrap().status,
        HostStatus::Unreachable
    );
    assert_eq!(e.host_bmc_check(&host).await.unwrap().power_state, "Off");

    // On, through the same BMC: the host comes back.
    let client = Redfish::new(
        BmcTarget {
            url: BmcUrl::parse(&url).unwrap(),
            system: SystemId::parse(&system).unwrap(),
            user: BmcUser::parse(&user).unwrap(),
            ca_pem: None,
        },
        Secret::parse(&password).unwrap(),
        Limits::default(),
    )
    .unwrap();
    let info = client.system().await.unwrap();
    client.reset(&info.reset_target, "On").await.unwrap();
    let began = Instant::now();
    while client.power_state().await.unwrap() != PowerState::On {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "host {HOST} did not come back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    e.hypervisor
        .forget(&LibvirtUri::parse(&lab.host_uri(HOST)).unwrap());
    assert_eq!(e.host_check(&host).await.unwrap().status, HostStatus::Ok);
    e.host_remove(&host).unwrap();
}
