//! T2: a definition's payload disk, built by Flotilla, on a real guest: the guest mounts it,
//! runs the definition's install and start hooks (generated scripts on the payload), and serves
//! a file that came from a package. The payload (the definition with its `[env]` values, the
//! hook scripts, the packages) is mounted for root only: an unprivileged user in the guest
//! cannot read it, while the hooks (root) can.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::guest::payload_runcmd;
use flotilla::hypervisor::{HvConfig, Hypervisor};
use flotilla_tests::{engine_in, GuestRun, Lab};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_guest_runs_the_hooks_from_its_payload_and_serves_a_package() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_in(dir.path());
    e.def_create("web").unwrap();
    let text = e.def_show("web", None).unwrap().text;
    let text = text
        .replace(
            &text.lines().find(|l| l.starts_with("install = ")).unwrap().to_string(),
            r#"install = "mkdir -p /srv/app && cp $FLOTILLA_PAYLOAD/packages/index.html /srv/app/ && echo \"mode $SHOP_MODE\" > /srv/app/mode.txt; grep -q ^nobody: /etc/passwd || echo nobody:x:65534:65534::/:/bin/sh >> /etc/passwd; as_nobody() { start-stop-daemon -S -c 65534:65534 -n flotilla-nobody -a /bin/cat -- $1 >/dev/null 2>&1; }; if ! as_nobody /etc/flotilla-master-version; then echo cannot-test; elif as_nobody $FLOTILLA_PAYLOAD/definition.toml; then echo readable; else echo private; fi > /srv/app/payload.txt""#,
        )
        .replace(
            &text.lines().find(|l| l.starts_with("start = ")).unwrap().to_string(),
            r#"start = "busybox httpd -p 8080 -h /srv/app""#,
        );
    e.def_set_text("web", &text, None).unwrap();
    let page = dir.path().join("index.html");
    std::fs::write(&page, "served from a package\n").unwrap();
    let v = e
        .def_add_packages("web", &[page], Arc::new(|_| {}))
        .unwrap();
    let payload = dir.path().join("payload.img");
    e.def_payload("web", v.version, &payload).unwrap();

    let hv = Hypervisor::new(HvConfig::default());
    let run = GuestRun {
        host: 1,
        tag: format!("payload-{}", std::process::id()),
        image: lab.guest(),
        cmdline: "console=ttyS0 root=LABEL=root".into(),
        memory_mib: 128,
        hostname: "payload-web".into(),
        mac: "52:54:00:77:00:fb".into(),
        address: "10.77.0.247/24".into(),
        runcmd: payload_runcmd(&format!("payload-{}-1", std::process::id()), vec![]),
        boot_limit: Duration::from_secs(180),
        payload: Some(payload),
        http_path: ":8080/index.html".into(),
    };
    let outcome = run.boot_and_fetch(&lab, &hv).await;
    let mode = lab.http_get("http://10.77.0.247:8080/mode.txt");
    // What user 65534 (added by the hook: the tiny guest has only root) found when it tried to
    // read the definition (with its env) on the payload.
    let private = lab.http_get("http://10.77.0.247:8080/payload.txt");
    let serial = run.cleanup(&lab, &hv).await;
    let (page, _) = outcome.unwrap_or_else(|err| panic!("{err}\n--- serial ---\n{serial}"));
    assert_eq!(page, "served from a package\n");
    assert_eq!(
        mode.as_deref(),
        Some("mode production\n"),
        "the hook saw the definition's env\n{serial}"
    );
    assert_eq!(
        private.as_deref(),
        Some("private\n"),
        "an unprivileged user in the guest could read the payload\n{serial}"
    );
}
