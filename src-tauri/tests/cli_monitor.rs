//! `flotillactl monitor` and the STATE of `host list` as a user runs them: real processes, a
//! real inventory file, libvirt's test driver with a node file per host. A host "dies" by having
//! its node file moved away (the test build's probe opens it afresh; see `hypervisor/probe.rs`).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::Ctl;
use common::fixture::test_node;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(30);
const FAST: [&str; 4] = ["--interval-ms", "100", "--call-timeout-ms", "300"];

/// What these tests add to `Ctl`.
impl Ctl {
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn node(&self, host: &str) -> PathBuf {
        self.data.path().join(format!("{host}.xml"))
    }

    fn add_host(&self, host: &str) {
        std::fs::copy(test_node(), self.node(host)).unwrap();
        let uri = format!("test://{}", self.node(host).display());
        self.ok(&["host", "add", host, "--uri", &uri, "--bridge", "br0"]);
    }

    /// `host list --json`: each host's monitor state (`None`: not monitored).
    fn states(&self) -> Vec<(String, Option<String>)> {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&self.ok(&["host", "list", "--json"])).unwrap();
        list.iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["monitor"]["state"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    fn wait_states(&self, want: &[(&str, Option<&str>)]) {
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(h, s)| ((*h).to_owned(), s.map(str::to_owned)))
            .collect();
        let began = Instant::now();
        loop {
            let now = self.states();
            if now == want {
                return;
            }
            assert!(began.elapsed() < PATIENCE, "{now:?}, expected {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `flotillactl monitor --json` in the background, its stdout lines on a channel.
    fn monitor(&self) -> Monitor {
        self.monitor_via(self.command(&[&["monitor", "--json"][..], &FAST[..]].concat()))
    }

    /// `flotillactl monitor` in a PID namespace of its own (as in a container), through
    /// `unshare` (root only).
    fn monitor_in_pid_namespace(&self) -> Monitor {
        let inner = self.command(&[&["monitor", "--json"][..], &FAST[..]].concat());
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_remove("FLOTILLA_DATA_DIR");
        self.monitor_via(cmd)
    }

    fn monitor_via(&self, mut cmd: Command) -> Monitor {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor {
            child,
            lines,
            seen: Vec::new(),
        }
    }
}

struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Monitor {
    /// Reads events until one matches; each line must be one JSON object.
    fn expect(
        &mut self,
        what: &str,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let began = Instant::now();
        loop {
            let left = PATIENCE.saturating_sub(began.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}; seen {:#?}", self.seen));
            let ev: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line: {line:?}: {e}"));
            self.seen.push(ev.clone());
            if wanted(&ev) {
                return ev;
            }
        }
    }

    fn transition(&mut self, host: &str, from: Option<&str>, to: &str) -> serde_json::Value {
        let from = from.map_or(serde_json::Value::Null, |f| f.into());
        self.expect(&format!("{host} {from} → {to}"), |e| {
            e["kind"] == "transition" && e["host"] == host && e["from"] == from && e["to"] == to
        })
    }

    /// Ctrl-C: the monitor stops cleanly (exit 0, `stopped` last).
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.expect("stopped", |e| e["kind"] == "stopped");
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

#[test]
fn monitor_prints_each_transition_and_host_list_shows_the_state() {
    let ctl = Ctl::new();
    ctl.add_host("h1");
    ctl.add_host("h2");
    ctl.wait_states(&[("h1", None), ("h2", None)]);
    let text = ctl.ok(&["host", "list"]);
    assert!(text.starts_with("NAME  STATUS  STATE"), "{text}");
    assert!(text.contains("not monitored"), "{text}");
    assert!(text.contains("Monitor: not running"), "{text}");

    let mut m = ctl.monitor();
    let started = m.expect("started", |e| e["kind"] == "started");
    assert_eq!(started["hosts"], 2);
    assert_eq!(started["thresholds"]["interval_ms"], 100);
    // 100 ms probes, lost after 5 × 100 ms: failed at most 600 ms after a death.
    assert_eq!(started["worst_case_detection_ms"], 600);
    assert!(started["explained"]
        .as_str()
        .unwrap()
        .contains("a dead host is failed at most 0.6 s after it died"));
    m.transition("h1", None, "ready");
    m.transition("h2", None, "ready");
    ctl.wait_states(&[("h1", Some("ready")), ("h2", Some("ready"))]);
    let text = ctl.ok(&["host", "list"]);
    assert!(
        text.contains("Monitor: flotillactl monitor (pid "),
        "{text}"
    );
    assert!(
        text.contains("a dead host is failed within 0.6 s"),
        "{text}"
    );

    // h2 dies. No load balancer watches its servers: unreachable, not failed.
    std::fs::rename(ctl.node("h2"), ctl.node("h2").with_extension("dead")).unwrap();
    let suspect = m.transition("h2", Some("ready"), "suspect");
    assert!(
        suspect["why"]
            .as_str()
            .unwrap()
            .contains("libvirt did not answer"),
        "{suspect}"
    );
    let lost = m.transition("h2", Some("suspect"), "unreachable");
    assert!(
        lost["why"].as_str().unwrap().contains("no second witness"),
        "{lost}"
    );
    ctl.wait_states(&[("h1", Some("ready")), ("h2", Some("unreachable"))]);
    let show = ctl.ok(&["host", "show", "h2"]);
    assert!(show.contains("State:        unreachable since "), "{show}");
    assert!(show.contains("Why:          libvirt lost for"), "{show}");

    // A second monitor stands by while this one runs.
    let mut second = ctl.monitor();
    let standby = second.expect("standby", |e| e["kind"] == "standby");
    assert!(
        standby["holder"]
            .as_str()
            .unwrap()
            .starts_with(&format!("flotillactl monitor (pid {}", m.child.id())),
        "{standby}"
    );
    second.interrupt();

    // h2 is back: returning (nothing reconciles yet, so it is clean at once), then ready.
    std::fs::rename(ctl.node("h2").with_extension("dead"), ctl.node("h2")).unwrap();
    m.transition("h2", Some("unreachable"), "returning");
    m.transition("h2", Some("returning"), "ready");
    assert!(!m.seen.iter().any(|e| e["to"] == "failed"), "{:#?}", m.seen);
    m.interrupt();
    // Stopped: the states are not trusted any more; the last one is still readable.
    ctl.wait_states(&[("h1", None), ("h2", None)]);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&ctl.ok(&["host", "list", "--json"])).unwrap();
    assert_eq!(list[1]["monitor"]["last_state"], "ready");
}

#[test]
fn a_killed_monitors_states_are_not_trusted_and_bad_thresholds_are_refused() {
    let ctl = Ctl::new();
    ctl.add_host("h1");
    let mut m = ctl.monitor();
    m.transition("h1", None, "ready");
    ctl.wait_states(&[("h1", Some("ready"))]);
    // Killed without a chance to give the lease up: its process is gone, so at once not
    // monitored.
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    ctl.wait_states(&[("h1", None)]);
    assert!(ctl.ok(&["host", "list"]).contains("Monitor: not running"));
    // The next monitor takes over, continuing from the record.
    let mut next = ctl.monitor();
    next.expect("started", |e| e["kind"] == "started");
    ctl.wait_states(&[("h1", Some("ready"))]);
    next.interrupt();

    for (args, words) in [
        (
            vec!["monitor", "--interval-ms", "10"],
            "interval: 10 ms is outside 100-60000 ms",
        ),
        (
            vec![
                "monitor",
                "--misses-to-suspect",
                "3",
                "--misses-to-failed",
                "2",
            ],
            "misses to failed: 2 must be between the misses to suspect (3) and 1000",
        ),
    ] {
        let out = ctl.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{err}");
    }
}

/// Two monitors on one inventory, one of them in a PID namespace of its own (a container): its
/// pid means nothing outside, nor the other's inside, so each judges the other by its lease
/// renewals. One acts, the other stands by — never both, never taking turns — and the one
/// standing by takes over once the holder is gone.
#[test]
fn two_monitors_in_different_pid_namespaces_never_both_act() {
    if !nix_root() {
        eprintln!("skipped: needs root (unshare --pid)");
        return;
    }
    let ctl = Ctl::new();
    ctl.add_host("h1");
    let mut inner = ctl.monitor_in_pid_namespace();
    inner.expect("started", |e| e["kind"] == "started");
    inner.transition("h1", None, "ready");
    let mut outer = ctl.monitor();
    outer.expect("standby", |e| e["kind"] == "standby");
    // A few seconds (dozens of lease renewals at 100 ms): neither takes the other's turn.
    std::thread::sleep(Duration::from_secs(3));
    while let Ok(line) = outer.lines.try_recv() {
        outer.seen.push(serde_json::from_str(&line).unwrap());
    }
    while let Ok(line) = inner.lines.try_recv() {
        inner.seen.push(serde_json::from_str(&line).unwrap());
    }
    assert!(
        !outer.seen.iter().any(|e| e["kind"] == "started"),
        "the monitor outside took the lease of the one inside: {:#?}",
        outer.seen
    );
    assert!(
        !inner
            .seen
            .iter()
            .any(|e| e["kind"] == "standby" || e["kind"] == "problem"),
        "{:#?}",
        inner.seen
    );
    // The one inside dies (the container is killed): the one outside takes over.
    let _ = inner.child.kill();
    let _ = inner.child.wait();
    outer.expect("started", |e| e["kind"] == "started");
    outer.interrupt();
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
