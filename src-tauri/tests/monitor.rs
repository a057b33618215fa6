//! T1: the monitor against libvirt's test driver and a real HAProxy on loopback. A unit of two
//! servers, one per host, behind HAProxy; the servers' addresses are loopback addresses where
//! the test listens (HAProxy's checks see them up) or stops listening (down). A host "dies" by
//! having its node file moved away (the test build's probe opens it afresh: see
//! `hypervisor/probe.rs`) and comes back when it is moved back. Everything is read back from
//! the inventory, as another process (`host list`, the desktop app) would see it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::fixture;
use common::lb::Haproxy;
use flotilla::model::{Host, HostState};
use flotilla::monitor::machine::{Change, Reconciled, Thresholds};
use flotilla::monitor::MonitorEvent;
use flotilla::ops::monitor::MonitorHooks;
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla::ops::Engine;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Fast thresholds: 100 ms probes, lost after 0.5 s.
const FAST: Thresholds = Thresholds {
    interval_ms: 100,
    call_timeout_ms: 300,
    misses_to_suspect: 1,
    misses_to_failed: 5,
};

/// How long a wait for a state may take before the test fails (generous: 2 cores).
const PATIENCE: Duration = Duration::from_secs(30);

/// A server's address answering HTTP 200 (what HAProxy's checks connect to) until dropped.
struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn listen(address: &str) -> Listener {
    let listener = tokio::net::TcpListener::bind((address, 8080))
        .await
        .unwrap();
    Listener(tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    }))
}

/// A server's address that gives no answer at all, as a dead or cut-off host's: a listener whose
/// accept queue is full (backlog 0, one connection queued), so the kernel drops every new SYN
/// and HAProxy's checks time out (`L4TOUT`). A closed port would answer with a reset, which
/// proves the guest runs.
struct Silent {
    _listener: tokio::net::TcpListener,
    _queued: std::net::TcpStream,
}

async fn silent(address: &str) -> Silent {
    let addr: std::net::SocketAddr = format!("{address}:8080").parse().unwrap();
    let began = Instant::now();
    let listener = loop {
        // A listener just dropped (an aborted task) may still hold the port for a moment.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        match socket.bind(addr).and_then(|()| socket.listen(0)) {
            Ok(l) => break l,
            Err(e) => {
                assert!(began.elapsed() < PATIENCE, "cannot listen on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let queued = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    // The proof that it is silent: the next connection is not answered.
    let next = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        next.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        "{addr} answered: {next:?}"
    );
    Silent {
        _listener: listener,
        _queued: queued,
    }
}

struct World {
    dir: tempfile::TempDir,
    e: Engine,
    lb: Haproxy,
    /// Server name → (host, address).
    servers: Vec<(String, String, String)>,
}

impl World {
    /// Two test-driver hosts, a unit `app` of two servers (one per host) deployed behind a
    /// real HAProxy, on loopback addresses in `127.78.{net}.0/24` (each test its own).
    async fn new(net: u8) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let e = fixture::engine_in(dir.path());
        for h in ["h1", "h2"] {
            fixture::add_host(&e, h, &fixture::node_copy(dir.path(), h)).await;
            e.host_set_network(
                h,
                &format!("127.78.{net}.0/24"),
                &format!("127.78.{net}.1"),
                "",
            )
            .unwrap();
        }
        let disk = dir.path().join("m.qcow2");
        fixture::qcow2(&disk, "32M");
        fixture::import_base(&e, disk, String::new()).await;
        e.def_create("shop").unwrap();
        // HAProxy checks each second and takes one failed check as down.
        let text = e.def_show("shop", None).unwrap().text;
        let fast: Vec<String> = text
            .lines()
            .map(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                match key {
                    "interval_s" | "timeout_s" | "rise" | "fall" => format!("{key} = 1"),
                    _ => l.to_owned(),
                }
            })
            .collect();
        e.def_set_text("shop", &fast.join("\n"), None).unwrap();
        let lb = Haproxy::start("be_app", None).await;
        e.lb_add(
            "hx",
            &flotilla::ops::lbs::LbTarget::HaproxyAddr {
                addr: format!("127.0.0.1:{}", lb.port),
            },
        )
        .await
        .unwrap();
        e.unit_create(&UnitForm {
            name: "app".into(),
            image: "base:1".into(),
            definition: "shop:2".into(),
            count: 2,
            name_pattern: "app-{n}".into(),
            addresses: format!("127.78.{net}.11-127.78.{net}.20"),
            lb: Some("hx".into()),
            lb_pool: Some("be_app".into()),
            policy: Some(flotilla::model::RolloutPolicy {
                drain_timeout_s: 0,
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        e.unit_run("app", UnitAction::Deploy, Arc::new(|_| {}))
            .await
            .unwrap();
        let servers: Vec<(String, String, String)> = e
            .unit_show("app")
            .unwrap()
            .servers
            .into_iter()
            .map(|s| (s.name, s.host, s.address))
            .collect();
        let hosts: std::collections::BTreeSet<&str> =
            servers.iter().map(|s| s.1.as_str()).collect();
        assert_eq!(hosts.len(), 2, "one server per host: {servers:?}");
        Self {
            dir,
            e,
            lb,
            servers,
        }
    }

    /// The server on `host`: (name, address).
    fn server_on(&self, host: &str) -> (String, String) {
        let s = self.servers.iter().find(|s| s.1 == host).unwrap();
        (s.0.clone(), s.2.clone())
    }

    fn node(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.xml"))
    }

    /// The host's libvirt stops answering (its node file goes away).
    fn kill(&self, host: &str) {
        std::fs::rename(self.node(host), self.node(host).with_extension("dead")).unwrap();
    }

    fn revive(&self, host: &str) {
        std::fs::rename(self.node(host).with_extension("dead"), self.node(host)).unwrap();
    }

    /// The host as another process reads it from the inventory.
    fn host(&self, name: &str) -> Host {
        self.e
            .host_list()
            .unwrap()
            .into_iter()
            .find(|h| h.name.as_str() == name)
            .unwrap()
    }

    /// Waits until the inventory holds `state` (current) for `host`.
    async fn wait_state(&self, host: &str, state: HostState) -> Host {
        let began = Instant::now();
        loop {
            let h = self.host(host);
            if h.monitor.state == Some(state) {
                return h;
            }
            assert!(
                began.elapsed() < PATIENCE,
                "{host} did not become {state}: {:?}",
                h.monitor
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until HAProxy reports the member `server` with a status starting with `word`.
    async fn wait_lb(&self, server: &str, word: &str) {
        let lb = flotilla::lb::haproxy::HaproxyRuntime::new(flotilla::lb::haproxy::Endpoint::Tcp(
            format!("127.0.0.1:{}", self.lb.port),
        ));
        let began = Instant::now();
        loop {
            let health = lb.member_health().await.unwrap();
            let m = health.iter().find(|m| m.name == server);
            if m.is_some_and(|m| m.status.starts_with(word)) {
                return;
            }
            assert!(
                began.elapsed() < PATIENCE,
                "HAProxy does not see {server} {word}: {m:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Hooks that record what they were called with; the reconcile answers "not yet" until the
/// test says the host is clean.
#[derive(Default)]
struct Recorder {
    transitions: Mutex<Vec<(String, HostState)>>,
    reconciles: Mutex<Vec<String>>,
    clean: std::sync::atomic::AtomicBool,
}

impl MonitorHooks for Recorder {
    fn on_transition<'a>(
        &'a self,
        _engine: &'a Engine,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.transitions
            .lock()
            .unwrap()
            .push((change.host.clone(), change.to));
        Box::pin(async { Ok(()) })
    }

    fn reconcile<'a>(&'a self, _engine: &'a Engine, host: &'a Host) -> BoxFuture<'a, Reconciled> {
        self.reconciles.lock().unwrap().push(host.name.to_string());
        let clean = self.clean.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if clean {
                Reconciled::clean()
            } else {
                Reconciled::NotYet {
                    why: "a stale domain is being removed".into(),
                }
            }
        })
    }
}

/// Every transition of `host` in `events`, as (from, to).
fn path(events: &[MonitorEvent], host: &str) -> Vec<(Option<HostState>, HostState)> {
    events
        .iter()
        .filter_map(|e| match e {
            MonitorEvent::Transition {
                host: h, from, to, ..
            } if h == host => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

/// Runs the monitor while `script` runs; returns what it reported.
async fn monitoring<F: std::future::Future<Output = ()>>(
    e: &Engine,
    hooks: &dyn MonitorHooks,
    script: F,
) -> Vec<MonitorEvent> {
    let events = Mutex::new(Vec::new());
    let report = |ev: MonitorEvent| events.lock().unwrap().push(ev);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = e.monitor_run(FAST, "test", hooks, &report, async {
        let _ = stopped.await;
    });
    let script = async {
        script.await;
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(monitor, script);
    ran.unwrap();
    events.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_is_failed_once_haproxy_also_sees_its_server_down_and_comes_back_through_reconcile(
) {
    let w = World::new(1).await;
    let (s1, a1) = w.server_on("h1");
    let (s2, a2) = w.server_on("h2");
    let l1 = listen(&a1).await;
    let l2 = listen(&a2).await;
    w.wait_lb(&s1, "UP").await;
    w.wait_lb(&s2, "UP").await;
    let hooks = Recorder::default();
    let events = monitoring(&w.e, &hooks, async {
        w.wait_state("h1", HostState::Ready).await;
        w.wait_state("h2", HostState::Ready).await;

        // One plane is not enough: HAProxy sees h2's server down, libvirt answers.
        drop(l2);
        w.wait_lb(&s2, "DOWN").await;
        tokio::time::sleep(FAST_LOST * 2).await;
        assert_eq!(w.host("h2").monitor.state, Some(HostState::Ready));

        // libvirt lost while the server refuses connections: its guest's kernel answers with
        // a reset, so the host runs — partitioned, never failed.
        w.kill("h2");
        let p = w.wait_state("h2", HostState::Partitioned).await;
        assert!(
            p.monitor.detail.contains("Connection refused")
                && p.monitor.detail.contains("1 of its 1 servers answer"),
            "{}",
            p.monitor.detail
        );
        tokio::time::sleep(FAST_LOST * 2).await;
        assert_eq!(w.host("h2").monitor.state, Some(HostState::Partitioned));

        // Both planes silent: failed.
        let began = Instant::now();
        let _quiet = silent(&a2).await;
        let h2 = w.wait_state("h2", HostState::Failed).await;
        eprintln!("failed {} ms after silence", began.elapsed().as_millis());
        assert!(
            h2.monitor
                .detail
                .contains("the load balancer hears nothing from all 1 of its checked servers"),
            "{}",
            h2.monitor.detail
        );
        assert!(h2.monitor.detail.contains(&s2), "{}", h2.monitor.detail);
        assert_eq!(w.host("h1").monitor.state, Some(HostState::Ready));

        // Back: returning while the reconcile is not done, ready once it is.
        w.revive("h2");
        w.wait_state("h2", HostState::Returning).await;
        let began = Instant::now();
        while !w
            .host("h2")
            .monitor
            .detail
            .contains("a stale domain is being removed")
        {
            assert!(began.elapsed() < PATIENCE, "{:?}", w.host("h2").monitor);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(FAST_LOST).await;
        assert_eq!(w.host("h2").monitor.state, Some(HostState::Returning));
        hooks.clean.store(true, std::sync::atomic::Ordering::SeqCst);
        w.wait_state("h2", HostState::Ready).await;
    })
    .await;
    drop(l1);

    assert_eq!(
        path(&events, "h2"),
        [
            (None, HostState::Ready),
            (Some(HostState::Ready), HostState::Suspect),
            (Some(HostState::Suspect), HostState::Partitioned),
            (Some(HostState::Partitioned), HostState::Failed),
            (Some(HostState::Failed), HostState::Returning),
            (Some(HostState::Returning), HostState::Ready),
        ],
        "{events:#?}"
    );
    assert_eq!(path(&events, "h1"), [(None, HostState::Ready)]);
    assert!(!events
        .iter()
        .any(|e| matches!(e, MonitorEvent::Frozen { .. })));
    // The hooks saw the failure once (where fencing will act) and were asked to reconcile.
    let fenced: Vec<(String, HostState)> = hooks
        .transitions
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.1 == HostState::Failed)
        .cloned()
        .collect();
    assert_eq!(fenced, [("h2".to_owned(), HostState::Failed)]);
    let asked = hooks.reconciles.lock().unwrap().clone();
    assert!(
        asked.len() >= 2 && asked.iter().all(|h| h == "h2"),
        "{asked:?}"
    );
    // The monitor stopped and gave its lease up: nothing is trusted any more.
    assert!(matches!(events.last(), Some(MonitorEvent::Stopped { .. })));
    assert_eq!(w.host("h2").monitor.state, None);
    assert_eq!(w.host("h2").monitor.last_state, Some(HostState::Ready));
    assert!(w.e.monitor_status().unwrap().holder.is_none());
}

/// The lost window of `FAST`.
const FAST_LOST: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_server_haproxy_still_sees_up_is_partitioned_never_failed() {
    let w = World::new(2).await;
    let (s2, a2) = w.server_on("h2");
    let (s1, _) = w.server_on("h1");
    let _l2 = listen(&a2).await;
    w.wait_lb(&s2, "UP").await;
    let hooks = flotilla::ops::monitor::DefaultHooks;
    let events = monitoring(&w.e, &hooks, async {
        w.wait_state("h2", HostState::Ready).await;
        w.kill("h2");
        let p = w.wait_state("h2", HostState::Partitioned).await;
        assert!(
            p.monitor.detail.contains("not a failure"),
            "{}",
            p.monitor.detail
        );
        // It stays partitioned, however long libvirt is lost.
        tokio::time::sleep(FAST_LOST * 6).await;
        assert_eq!(w.host("h2").monitor.state, Some(HostState::Partitioned));
        w.revive("h2");
        w.wait_state("h2", HostState::Ready).await;

        // A server that stops outside Flotilla is reported (the probe lists running domains).
        let h1 = w.host("h1");
        w.e.hypervisor.domain_destroy(&h1.uri, &s1).await.unwrap();
        let began = Instant::now();
        while w.host("h1").monitor.not_running != [s1.clone()] {
            assert!(began.elapsed() < PATIENCE, "{:?}", w.host("h1").monitor);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let h2 = path(&events, "h2");
    assert!(!h2.iter().any(|(_, to)| *to == HostState::Failed), "{h2:?}");
    assert_eq!(
        h2,
        [
            (None, HostState::Ready),
            (Some(HostState::Ready), HostState::Suspect),
            (Some(HostState::Suspect), HostState::Partitioned),
            (Some(HostState::Partitioned), HostState::Returning),
            (Some(HostState::Returning), HostState::Ready),
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        MonitorEvent::NotRunning { host, servers, .. } if host == "h1" && *servers == [s1.clone()]
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_hosts_lost_at_once_or_haproxy_unreachable_freezes_and_nothing_fails() {
    let mut w = World::new(3).await;
    // Nothing answers: HAProxy hears nothing from both servers from the start.
    let (s1, a1) = w.server_on("h1");
    let (s2, a2) = w.server_on("h2");
    let _q1 = silent(&a1).await;
    let _q2 = silent(&a2).await;
    w.wait_lb(&s1, "DOWN").await;
    w.wait_lb(&s2, "DOWN").await;
    let hooks = flotilla::ops::monitor::DefaultHooks;
    let events = monitoring(&w.e, &hooks, async {
        w.wait_state("h1", HostState::Ready).await;
        w.wait_state("h2", HostState::Ready).await;
        // Both hosts at once: Flotilla looks cut off, not two dead hosts.
        w.kill("h1");
        w.kill("h2");
        w.wait_state("h1", HostState::Unreachable).await;
        let h2 = w.wait_state("h2", HostState::Unreachable).await;
        assert!(
            h2.monitor
                .detail
                .contains("would be failed, but the monitor is frozen"),
            "{}",
            h2.monitor.detail
        );
        let status = w.e.monitor_status().unwrap();
        assert!(
            status
                .frozen
                .as_deref()
                .unwrap_or("")
                .contains("2 of 2 hosts stopped answering"),
            "{status:?}"
        );
        w.revive("h1");
        w.revive("h2");
        w.wait_state("h1", HostState::Ready).await;
        w.wait_state("h2", HostState::Ready).await;
        assert_eq!(w.e.monitor_status().unwrap().frozen, None);
    })
    .await;
    assert!(
        !events.iter().any(|e| matches!(
            e,
            MonitorEvent::Transition {
                to: HostState::Failed,
                ..
            }
        )),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, MonitorEvent::Frozen { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, MonitorEvent::Thawed { .. })));

    // HAProxy gone: the second witness cannot be asked; h2 dies meanwhile and is not failed.
    w.lb.child.kill().unwrap();
    w.lb.child.wait().unwrap();
    let events = monitoring(&w.e, &hooks, async {
        // A monitor that starts continues from the records: both ready, nothing changes.
        w.wait_state("h2", HostState::Ready).await;
        w.kill("h2");
        let h2 = w.wait_state("h2", HostState::Unreachable).await;
        assert!(
            h2.monitor.detail.contains("could not be asked"),
            "{}",
            h2.monitor.detail
        );
        tokio::time::sleep(FAST_LOST * 4).await;
        assert_eq!(w.host("h2").monitor.state, Some(HostState::Unreachable));
        assert!(w
            .e
            .monitor_status()
            .unwrap()
            .frozen
            .unwrap()
            .contains("the load balancer cannot be asked (hx: "));
    })
    .await;
    assert!(
        !events.iter().any(|e| matches!(
            e,
            MonitorEvent::Transition {
                to: HostState::Failed,
                ..
            }
        )),
        "{events:#?}"
    );
    // The ready host stayed ready through it.
    assert!(path(&events, "h1").is_empty(), "{events:#?}");
}

/// Hooks that take as long as a hung load balancer or BMC: the first failure's hook and every
/// reconcile wait a minute.
#[derive(Default)]
struct Slow {
    started: Mutex<Vec<String>>,
}

impl MonitorHooks for Slow {
    fn on_transition<'a>(
        &'a self,
        _engine: &'a Engine,
        change: &'a Change,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if change.to == HostState::Failed {
                self.started.lock().unwrap().push(change.host.clone());
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        })
    }

    fn reconcile<'a>(&'a self, _engine: &'a Engine, _host: &'a Host) -> BoxFuture<'a, Reconciled> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Reconciled::clean()
        })
    }
}

/// Fencing, reconciles and load-balancer calls run beside the monitor's rounds: a hook that
/// hangs after h1 failed delays neither h2's detection nor the lease (the record stays
/// current, so readers keep trusting it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_hangs_delays_no_other_detection_nor_the_lease() {
    let w = World::new(4).await;
    let (_, a1) = w.server_on("h1");
    let (_, a2) = w.server_on("h2");
    let _q1 = silent(&a1).await;
    let _q2 = silent(&a2).await;
    let hooks = Slow::default();
    monitoring(&w.e, &hooks, async {
        w.wait_state("h1", HostState::Ready).await;
        w.wait_state("h2", HostState::Ready).await;
        w.kill("h1");
        w.wait_state("h1", HostState::Failed).await;
        let began = Instant::now();
        while hooks.started.lock().unwrap().is_empty() {
            assert!(began.elapsed() < PATIENCE);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Past the group window (a second loss within it is taken for Flotilla cut off).
        tokio::time::sleep(FAST.group_window() + FAST_LOST).await;
        w.kill("h2");
        let killed = Instant::now();
        w.wait_state("h2", HostState::Failed).await;
        let took = killed.elapsed();
        eprintln!(
            "h2 failed {} ms after it died, h1's hook still hanging",
            took.as_millis()
        );
        // Not after the hook's minute (with hooks inside the round it would be).
        assert!(took < Duration::from_secs(30), "{took:?}");
        // The lease stayed current all along.
        let holder = w.e.monitor_status().unwrap().holder.unwrap();
        assert!(holder.current, "{holder:?}");
        // A returning host whose reconcile hangs stays returning; the rounds go on.
        w.revive("h1");
        w.wait_state("h1", HostState::Returning).await;
        tokio::time::sleep(FAST_LOST * 4).await;
        assert_eq!(w.host("h1").monitor.state, Some(HostState::Returning));
        assert!(w.e.monitor_status().unwrap().holder.unwrap().current);
    })
    .await;
}
