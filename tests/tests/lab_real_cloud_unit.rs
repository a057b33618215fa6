//! T2 (slow: ~2 min image build, a few minutes of boots): a unit deployed from a disk-booting
//! master with the real cloud-init (Debian 12, BIOS → SYSLINUX → kernel, RIG.md) works as with
//! the lab's tiny guest: two servers behind the lab's HAProxy answer with their hostnames after
//! the deploy, after `unit stop` + `unit start` and after a reboot — cloud-init runs `runcmd`
//! once per instance, so the app must be started by the per-boot script the seed wrote —, and
//! after a definition-only rollout and its rollback (the image runs the QEMU guest agent: the
//! payload is swapped and the hooks run without a reboot); delete leaves the hosts and HAProxy
//! as before. Through the guest agent it checks what the guest shows: the payload is for root
//! only at every mount (deploy, reboot, live update); a rendered config file holding an env
//! secret is on no process's command line and not in the agent's journal; a stop hook that
//! outlives its limit is killed in the guest, and the failed step says so. Part of
//! `scripts/test.sh`; with the lab up:
//! `cargo test -p flotilla-tests --test lab_real_cloud_unit -- --ignored`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::model::{Firmware, RolloutPolicy, ServerSize};
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::{UnitAction, UnitForm, UnitUpdate};
use flotilla_tests::Lab;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

const DEFINITION: &str = r#"
[server]
name = "cloudweb"
kind = "python http.server"
port = 8080

[health]
path = "/health"
interval_s = 2
timeout_s = 1
rise = 1
fall = 2

[env]
SECRET = "cloudweb-secret-7d1c90"

# install records the command lines of every process in the guest while it runs (through the
# guest agent: the agent's own command among them); stop hangs once the test asks it to.
[hooks]
install = "mkdir -p /srv/www && hostname > /srv/www/index.html && echo ok > /srv/www/health && echo 1 > /srv/www/release.txt && for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done > /run/cloudweb-ps.txt"
start = "cd /srv/www && setsid nohup python3 -m http.server 8080 > /dev/null 2>&1 &"
stop = "if [ -f /run/cloudweb-slow-stop ]; then sleep 4321; fi; pkill -f http.server || true"

[[config]]
path = "/srv/www/version.txt"
template = "{{ unit_version }}"

[[config]]
path = "/etc/cloudweb/secret.conf"
mode = "0600"
template = "token={{ env.SECRET }}"
"#;

/// The secret config file as rendered: looked for as it is and in base64 (as the commands that
/// write config files carry it).
const SECRET_CONF: &str = "token=cloudweb-secret-7d1c90";

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh (builds a real cloud-init image)"]
async fn real_cloud_init_unit_deploys_from_a_disk_booting_master() {
    let lab = Lab::from_env();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/build-cloud-guest.sh");
    let built = Command::new(&script).output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());

    let dir = tempfile::tempdir().unwrap();
    let e = lab.unit_engine(dir.path()).await;
    e.image_import(
        &ImportRequest {
            image: "debian-cloud".into(),
            file: image.join("disk.qcow2"),
            notes: "Debian 12 + cloud-init, BIOS boot".into(),
            boot: BootInput::Disk(Firmware::Bios),
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    e.def_create("cloudweb").unwrap();
    e.def_set_text("cloudweb", DEFINITION, None).unwrap();
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    e.unit_create(&UnitForm {
        name: "cloudweb".into(),
        image: "debian-cloud:1".into(),
        definition: "cloudweb:2".into(),
        size: Some(ServerSize {
            cpus: 1,
            memory_mib: 512,
            disk_gib: 0,
        }),
        count: 2,
        name_pattern: "cloudweb-{n}".into(),
        addresses: "10.77.0.41-10.77.0.42".into(),
        lb: Some("lab".into()),
        lb_pool: Some(pool.clone()),
        policy: Some(RolloutPolicy {
            health_timeout_s: 300,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let url = format!("http://{}/", lab.get("FLOTILLA_LAB_GATEWAY"));
    let both = || {
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            if let Some(p) = lab.http_get(&url) {
                seen.insert(p.trim().to_owned());
            }
            if seen.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        seen
    };
    let want: BTreeSet<String> = ["cloudweb-1", "cloudweb-2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let started = std::time::Instant::now();
    let mut took = Vec::new();
    // What the guest shows of the definition's secrets and of timed-out hooks: collected, so
    // that one run reports every finding.
    let mut findings: Vec<String> = Vec::new();
    let outcome: Result<(), String> = async {
        let step = |what: &str, r: Result<_, flotilla::ops::OpError>| {
            r.map(|_| ()).map_err(|e| format!("{what}: {e}"))
        };
        step(
            "deploy",
            e.unit_run("cloudweb", UnitAction::Deploy, Arc::new(|_| {}))
                .await,
        )?;
        took.push(("deploy", started.elapsed()));
        let seen = both();
        if seen != want {
            return Err(format!("after deploy, HAProxy answered as {seen:?}"));
        }
        // The payload (definition with its env, hook scripts) is for root only: the seed's
        // runcmd mounted it.
        let p = payload_privacy(&e, "cloudweb-1").await?;
        if p != "private" {
            findings.push(format!("after deploy, the payload is {p} for an unprivileged user"));
        }
        // Stop + start: the app must come back without a new instance (no runcmd).
        let t = std::time::Instant::now();
        let stop = UnitAction::Stop {
            servers: vec![],
            force: false,
        };
        step("stop", e.unit_run("cloudweb", stop, Arc::new(|_| {})).await)?;
        // HAProxy itself answers (503): no server may.
        if let Some(p) = lab.http_get(&url).filter(|p| p.contains("cloudweb-")) {
            return Err(format!("after stop, a server still answered {p:?}"));
        }
        let start = UnitAction::Start { servers: vec![] };
        step(
            "start",
            e.unit_run("cloudweb", start, Arc::new(|_| {})).await,
        )?;
        took.push(("stop + start", t.elapsed()));
        let seen = both();
        if seen != want {
            return Err(format!("after stop + start, HAProxy answered as {seen:?}"));
        }
        // A reboot from libvirt (ACPI, the guest restarts in the same QEMU): the server
        // goes away and comes back serving by itself.
        let t = std::time::Instant::now();
        let server = "http://10.77.0.41:8080/health";
        let virsh = Command::new("virsh")
            .args(["-c", &lab.host_uri(host_of(&e, "cloudweb-1")), "reboot"])
            .args(["cloudweb-1", "--mode", "acpi"])
            .output()
            .map_err(|e| format!("virsh: {e}"))?;
        if !virsh.status.success() {
            return Err(format!(
                "virsh reboot: {}",
                String::from_utf8_lossy(&virsh.stderr)
            ));
        }
        let gone = wait_for(120, || lab.http_get(server).is_none());
        if !gone {
            return Err("cloudweb-1 kept answering: it did not reboot".into());
        }
        let back = wait_for(300, || {
            lab.http_get(server).is_some_and(|b| b.trim() == "ok")
        });
        if !back {
            return Err("cloudweb-1 did not serve again within 300 s of its reboot".into());
        }
        took.push(("reboot", t.elapsed()));
        // Mounted at this boot by the per-boot script.
        let p = payload_privacy(&e, "cloudweb-1").await?;
        if p != "private" {
            findings.push(format!("after a reboot, the payload is {p} for an unprivileged user"));
        }
        let seen = both();
        if seen != want {
            return Err(format!("after the reboot, HAProxy answered as {seen:?}"));
        }
        // A definition-only rollout: the guest runs the QEMU guest agent, so the payload is
        // swapped in the running servers (unplugged, plugged) and the hooks and config files
        // run through the agent — no reboot: each keeps its QEMU process (its domain id).
        let ids = || -> Result<Vec<String>, String> {
            ["cloudweb-1", "cloudweb-2"]
                .iter()
                .map(|n| {
                    let o = Command::new("virsh")
                        .args(["-c", &lab.host_uri(host_of(&e, n)), "domid", n])
                        .output()
                        .map_err(|e| format!("virsh: {e}"))?;
                    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
                })
                .collect()
        };
        let served = |path: &str| -> Vec<Option<String>> {
            ["10.77.0.41", "10.77.0.42"]
                .iter()
                .map(|a| {
                    lab.http_get(&format!("http://{a}:8080/{path}"))
                        .map(|b| b.trim().to_owned())
                })
                .collect()
        };
        let before = ids()?;
        let t = std::time::Instant::now();
        let next = DEFINITION.replace("echo 1 > /srv/www/release.txt", "echo 2 > /srv/www/release.txt");
        e.def_set_text("cloudweb", &next, None)
            .map_err(|e| format!("definition v2: {e}"))?;
        e.unit_update(
            "cloudweb",
            &UnitUpdate {
                definition: Some("cloudweb".into()),
                ..Default::default()
            },
        )
        .map_err(|e| format!("update: {e}"))?;
        let policy = Some(RolloutPolicy {
            health_timeout_s: 300,
            min_healthy_s: 3,
            ..Default::default()
        });
        let rollout = UnitAction::Rollout {
            back: false,
            canary: None,
            policy,
        };
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = live.clone();
        let progress: flotilla::ops::units::StepFn = Arc::new(move |ev| {
            if ev.detail.contains("without a reboot") {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        step(
            "rollout",
            e.unit_run("cloudweb", rollout, progress.clone()).await,
        )?;
        took.push(("rollout in place (guest agent)", t.elapsed()));
        let two = Some("2".to_owned());
        if served("release.txt") != [two.clone(), two.clone()] || served("version.txt") != [two.clone(), two] {
            return Err(format!(
                "after the rollout the servers serve release {:?} and unit version {:?}, not 2",
                served("release.txt"),
                served("version.txt")
            ));
        }
        if ids()? != before || live.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(format!(
                "the rollout rebooted the servers (domain ids {before:?} → {:?}) or did not go through the guest agent",
                ids()?
            ));
        }
        let seen = both();
        if seen != want {
            return Err(format!("after the rollout, HAProxy answered as {seen:?}"));
        }
        // Mounted through the agent by the live install.
        let p = payload_privacy(&e, "cloudweb-1").await?;
        if p != "private" {
            findings.push(format!("after a rollout through the guest agent, the payload is {p} for an unprivileged user"));
        }
        // The rendered config files (here with the env's secret) went through the agent: not
        // on any command line the guest shows (the process list while the install hook ran)
        // or the agent logs (its journal).
        let secret_b64 = base64_of(SECRET_CONF);
        let leaks = |what: &str, text: &str| -> Option<String> {
            [SECRET_CONF, secret_b64.as_str()]
                .iter()
                .find(|needle| text.contains(*needle))
                .map(|needle| format!("{what} shows the secret config file as {needle:?}"))
        };
        let ps = in_guest(&e, "cloudweb-1", "cat /run/cloudweb-ps.txt").await?;
        if !ps.contains("flotilla/hooks/install") {
            return Err(format!("the install hook's process list is not one: {ps}"));
        }
        findings.extend(leaks("the guest's process list during the live install", &ps));
        let journal = in_guest(&e, "cloudweb-1", "journalctl --no-pager -o cat -t qemu-ga").await?;
        if !journal.contains("guest-exec called") {
            return Err(format!("the agent's journal has no guest-exec lines: {journal}"));
        }
        findings.extend(leaks("the guest agent's journal", &journal));
        // Back the same way: the old payload and config files, still without a reboot.
        let t = std::time::Instant::now();
        // (After a finished rollout, a rollback is the next version, v3, with v1's parts.)
        step(
            "rollback",
            e.unit_rollback("cloudweb", None, progress).await,
        )?;
        took.push(("rollback in place (guest agent)", t.elapsed()));
        let (one, three) = (Some("1".to_owned()), Some("3".to_owned()));
        if ids()? != before
            || served("release.txt") != [one.clone(), one]
            || served("version.txt") != [three.clone(), three]
        {
            return Err(format!(
                "after the rollback: domain ids {before:?} → {:?}, release {:?}, unit version {:?}",
                ids()?,
                served("release.txt"),
                served("version.txt")
            ));
        }
        let seen = both();
        if seen != want {
            return Err(format!("after the rollback, HAProxy answered as {seen:?}"));
        }
        // A stop hook that outlives its limit (the policy's shutdown timeout) is killed in
        // the guest before the step fails and is undone, and the error says so.
        for n in ["cloudweb-1", "cloudweb-2"] {
            in_guest(&e, n, "touch /run/cloudweb-slow-stop").await?;
        }
        let t = std::time::Instant::now();
        let slow = DEFINITION.replace("echo 1 > /srv/www/release.txt", "echo 4 > /srv/www/release.txt");
        e.def_set_text("cloudweb", &slow, None)
            .map_err(|e| format!("the definition with a slow stop: {e}"))?;
        e.unit_update(
            "cloudweb",
            &UnitUpdate {
                definition: Some("cloudweb".into()),
                ..Default::default()
            },
        )
        .map_err(|e| format!("update: {e}"))?;
        let rollout = UnitAction::Rollout {
            back: false,
            canary: None,
            policy: Some(RolloutPolicy {
                health_timeout_s: 300,
                min_healthy_s: 3,
                drain_timeout_s: 5,
                shutdown_timeout_s: 5,
                ..Default::default()
            }),
        };
        match e.unit_run("cloudweb", rollout, Arc::new(|_| {})).await {
            Ok(_) => return Err("a rollout whose stop hook hangs succeeded".into()),
            Err(err) if !err.to_string().contains("killed") => {
                findings.push(format!("the timed-out stop hook's error does not say it was killed: {err}"));
            }
            Err(_) => {}
        }
        took.push(("rollout with a stop hook past its limit", t.elapsed()));
        for n in ["cloudweb-1", "cloudweb-2"] {
            let procs = in_guest(&e, n, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done").await?;
            if let Some(line) = procs.lines().find(|l| l.contains("sleep 4321")) {
                findings.push(format!("{n} still runs the stop hook that timed out: {line:?}"));
            }
        }
        Ok(())
    }
    .await;
    let serial = {
        let h = e
            .host_show(&format!("lab-h{}", host_of(&e, "cloudweb-1")))
            .unwrap();
        let tail = e
            .hypervisor
            .volume_tail(&h.uri, &h.pool, "cloudweb-1.serial", 4000)
            .await;
        tail.map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    e.unit_run(
        "cloudweb",
        UnitAction::Delete { force: true },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    outcome.unwrap_or_else(|err| {
        panic!("{err}\nfindings so far: {findings:#?}\n--- cloudweb-1 serial (end) ---\n{serial}")
    });
    assert!(findings.is_empty(), "{findings:#?}");
    for (what, t) in took {
        println!("real cloud-init unit: {what} {:.0} s", t.as_secs_f64());
    }
}

/// Runs `script` as root in `server` through its QEMU guest agent; its output when it exits 0.
async fn in_guest(e: &flotilla::ops::Engine, server: &str, script: &str) -> Result<String, String> {
    let h = e
        .host_show(&format!("lab-h{}", host_of(e, server)))
        .map_err(|e| e.to_string())?;
    let r = e
        .hypervisor
        .domain_guest_exec(
            &h.uri,
            server,
            "/bin/sh",
            &["-c", script],
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(|e| format!("{script:?} in {server}: {e}"))?;
    if r.exit_code != Some(0) {
        return Err(format!("{script:?} in {server}: {r:?}"));
    }
    Ok(r.stdout)
}

/// What an unprivileged user (65534) can do with the payload mounted in `server`: `private`,
/// `readable` (the definition or a hook script), `not mounted`, or not testable (it cannot
/// read a public file either).
async fn payload_privacy(e: &flotilla::ops::Engine, server: &str) -> Result<String, String> {
    let script = "grep -qs ' /run/flotilla/app ' /proc/mounts || { echo not mounted; exit 0; }
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\" >/dev/null 2>&1; }
as_nobody cat /etc/hostname || { echo not testable: setpriv failed; exit 0; }
for f in definition.toml flotilla/hooks/install; do
  as_nobody cat /run/flotilla/app/$f && { echo readable; exit 0; }
done
echo private";
    Ok(in_guest(e, server, script).await?.trim().to_owned())
}

/// `text` in base64, as `base64` writes it.
fn base64_of(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The lab host number (1 or 2) a server was placed on.
fn host_of(e: &flotilla::ops::Engine, server: &str) -> u32 {
    let s = e.inventory.server_list().unwrap();
    let host = &s.iter().find(|s| s.name == server).unwrap().host;
    host.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap()
}

/// Polls `f` every second for up to `secs` seconds.
fn wait_for(secs: u64, f: impl Fn() -> bool) -> bool {
    for _ in 0..secs {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    false
}
