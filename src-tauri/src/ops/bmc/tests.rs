//! Setting and removing a host's BMC, without a BMC: validation, where the password goes,
//! what the audit log and the inventory hold. Talking to BMCs: `bmc::tests` (misbehaving
//! ones), `tests/bmc.rs` (the lab's stand-in), `tests/tests/redfish_sushy.rs` (sushy-tools).

use super::*;
use crate::error::{ApiError, ErrorCode};
use crate::hypervisor::tests::test_node_uri;
use crate::hypervisor::HvConfig;
use crate::inventory::{Actor, AuditResult, Inventory};
use crate::ops::hosts::HostInput;

const PASSWORD: &str = "Bmc-pw-7f3a-never-shown";

async fn engine(dir: &std::path::Path) -> Engine {
    let e = Engine::with(
        Inventory::open_in_memory().unwrap(),
        HvConfig::default(),
        Actor::new("test"),
        dir.join("library"),
    );
    // Never the developer's own keyring.
    e.keep_secrets_in_files();
    e.host_add(&HostInput {
        name: "h1".into(),
        uri: test_node_uri().to_string(),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    e
}

fn input(url: &str, system: &str, user: &str, password: Option<&str>) -> BmcInput {
    BmcInput {
        url: url.into(),
        system: system.into(),
        user: user.into(),
        password: password.map(|p| Secret::parse(p).unwrap()),
        ca_pem: None,
    }
}

/// Nothing Flotilla keeps or shows holds the password: the inventory file, the audit log,
/// the host as both front doors get it.
fn assert_nowhere(e: &Engine, dir: &std::path::Path) {
    let audit = format!("{:?}", e.inventory.audit_list(1000).unwrap());
    assert!(!audit.contains(PASSWORD), "{audit}");
    let hosts = serde_json::to_string(&e.host_list().unwrap()).unwrap();
    assert!(!hosts.contains(PASSWORD), "{hosts}");
    assert!(!format!("{:?}", e.host_list().unwrap()).contains(PASSWORD));
    for entry in walk(dir) {
        if entry.starts_with(dir.join("secrets")) {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_bmc_is_set_with_its_password_in_a_private_file_and_removed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let h = e
        .host_set_bmc(
            "h1",
            Some(input(" https://10.0.0.5/ ", " 1 ", "admin", Some(PASSWORD))),
        )
        .await
        .unwrap();
    let bmc = h.bmc.clone().unwrap();
    assert_eq!(bmc.url, "https://10.0.0.5", "stored canonical");
    assert_eq!((bmc.system.as_str(), bmc.user.as_str()), ("1", "admin"));
    assert_eq!(bmc.password, SecretPlace::File);
    assert_eq!(bmc.ca_pem, None);
    let file = e.secrets().file_of(&h.name);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), PASSWORD);
    assert_nowhere(&e, dir.path());

    // Changing the user keeps the password.
    let h = e
        .host_set_bmc("h1", Some(input("https://10.0.0.5", "2", "ops", None)))
        .await
        .unwrap();
    assert_eq!(h.bmc.as_ref().unwrap().user, "ops");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), PASSWORD);

    // Removing the BMC removes its password.
    let h = e.host_set_bmc("h1", None).await.unwrap();
    assert_eq!(h.bmc, None);
    assert!(!file.exists());
    let log = e.inventory.audit_list(3).unwrap();
    assert_eq!(
        log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["host.remove-bmc", "host.set-bmc", "host.set-bmc"]
    );
    assert!(log.iter().all(|a| a.result == AuditResult::Ok));

    // And so does removing the host.
    e.host_set_bmc(
        "h1",
        Some(input("https://10.0.0.5", "1", "admin", Some(PASSWORD))),
    )
    .await
    .unwrap();
    assert!(file.exists());
    e.host_remove("h1").unwrap();
    assert!(!file.exists());
    assert_nowhere(&e, dir.path());
}

#[tokio::test]
async fn bad_bmc_settings_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let huge = "x".repeat(100_000);
    let cases: Vec<(BmcInput, &str)> = vec![
        (
            input("http://10.0.0.5", "1", "admin", Some(PASSWORD)),
            "in clear",
        ),
        (
            input(
                &format!("https://admin:{PASSWORD}@10.0.0.5"),
                "1",
                "admin",
                Some(PASSWORD),
            ),
            "user or password",
        ),
        (
            input("https://10.0.0.5/?a=b", "1", "admin", Some(PASSWORD)),
            "query",
        ),
        (
            input("gopher://10.0.0.5", "1", "admin", Some(PASSWORD)),
            "gopher",
        ),
        (input(&huge, "1", "admin", Some(PASSWORD)), "at most 300"),
        (
            input("https://10.0.0.5", "../1", "admin", Some(PASSWORD)),
            "bmc-system",
        ),
        (
            input("https://10.0.0.5", &huge, "admin", Some(PASSWORD)),
            "at most 128",
        ),
        (
            input("https://10.0.0.5", "1", "ad min", Some(PASSWORD)),
            "bmc-user",
        ),
        (
            input("https://10.0.0.5", "1", "admin\u{0}", Some(PASSWORD)),
            "bmc-user",
        ),
        (
            input("https://10.0.0.5", "1", &huge, Some(PASSWORD)),
            "at most 64",
        ),
        (
            input("https://10.0.0.5", "1", "admin", None),
            "no BMC password yet",
        ),
        (
            BmcInput {
                ca_pem: Some("not a certificate".into()),
                ..input("https://10.0.0.5", "1", "admin", Some(PASSWORD))
            },
            "bmc-ca",
        ),
    ];
    for (i, says) in cases {
        let before = e.host_list().unwrap();
        let err = ApiError::from(e.host_set_bmc("h1", Some(i)).await.unwrap_err());
        assert_eq!(err.code, ErrorCode::InvalidInput, "{}", err.message);
        assert!(err.message.contains(says), "{says}: {}", err.message);
        assert!(err.message.len() < 500, "{}", err.message);
        assert_eq!(e.host_list().unwrap(), before, "nothing changed");
        assert!(
            !e.secrets().file_of(&before[0].name).exists(),
            "no password stored"
        );
    }
    let err = ApiError::from(
        e.host_set_bmc(
            "nope",
            Some(input("https://10.0.0.5", "1", "a", Some(PASSWORD))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::NotFound);
    let log = e.inventory.audit_list(100).unwrap();
    assert!(log
        .iter()
        .filter(|a| a.action == "host.set-bmc")
        .all(|a| a.result == AuditResult::Error && !a.detail.is_empty()));
    assert_nowhere(&e, dir.path());
}

#[tokio::test]
async fn checking_a_host_without_a_bmc_or_password_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message
            .contains("host h1 has no BMC; set one with: flotillactl host set h1 --bmc URL"),
        "{}",
        err.message
    );
    let err = ApiError::from(
        e.host_power_off("h1", Duration::from_secs(1), &|_| {})
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::NotFound);
    e.host_set_bmc(
        "h1",
        Some(input("http://127.0.0.1:9", "1", "admin", Some(PASSWORD))),
    )
    .await
    .unwrap();
    // The password file lost (removed by hand): said, with where it was looked for.
    std::fs::remove_file(e.secrets().file_of(&HostName::parse("h1").unwrap())).unwrap();
    let err = ApiError::from(e.host_bmc_check("h1").await.unwrap_err());
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(
        err.message
            .contains("no BMC password is stored for host h1")
            && err
                .message
                .contains("flotillactl host set h1 --bmc-password-stdin"),
        "{}",
        err.message
    );
    let log = e.inventory.audit_list(1).unwrap();
    assert_eq!(log[0].action, "host.set-bmc", "a check is not audited");
}

use crate::model::HostName;
