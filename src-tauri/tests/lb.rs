//! Load balancers through their real APIs: a real Caddy and a real HAProxy on loopback, reached
//! directly or through a front that drops connections or asks for a password. An admin URL's
//! password is never shown, journaled or audited; transient errors are retried, lasting ones
//! come through.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::{ctl, ok, text};
use common::lb::{Caddy, Haproxy};
use common::{fixture, free_port};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "s3cret-Pw";

/// A real Caddy whose admin API also accepts requests addressed to `front`.
async fn caddy(front: u16) -> Caddy {
    Caddy::behind(free_port(), &[front]).await
}

/// Which connections (numbered from 0) a front closes at once, without reading or answering.
type DropRule = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// What a front does with the connections it accepts.
#[derive(Clone)]
struct FrontRules {
    drop: DropRule,
    /// Connections read to their end and closed without a word (the peer died mid-command).
    swallow: DropRule,
    /// HTTP: answer 401 unless the request carries this `Authorization` value.
    require_auth: Option<String>,
}

impl Default for FrontRules {
    fn default() -> Self {
        Self::dropping(|_| false)
    }
}

impl FrontRules {
    fn dropping(rule: impl Fn(usize) -> bool + Send + Sync + 'static) -> Self {
        Self {
            drop: Arc::new(rule),
            swallow: Arc::new(|_| false),
            require_auth: None,
        }
    }

    fn swallowing(rule: impl Fn(usize) -> bool + Send + Sync + 'static) -> Self {
        Self {
            swallow: Arc::new(rule),
            ..Self::default()
        }
    }
}

/// A TCP front on loopback that forwards to `target`, by `rules`, counting connections.
struct Front {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front_on(port: u16, target: String, rules: FrontRules) -> Front {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            if (rules.drop)(n) {
                drop(client);
                continue;
            }
            if (rules.swallow)(n) {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = client.read_to_end(&mut sink).await;
                });
                continue;
            }
            let (target, rules) = (target.clone(), rules.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                if let Some(auth) = &rules.require_auth {
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match client.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let wanted = format!("authorization: {auth}\r\n").to_lowercase();
                    if !String::from_utf8_lossy(&head)
                        .to_lowercase()
                        .contains(&wanted)
                    {
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    Front {
        port,
        accepted,
        task,
    }
}

/// Hosts, a master and a definition, registered through the CLI in a fresh data directory.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for h in ["h1", "h2"] {
        let node = fixture::node_copy(data, h);
        let uri = format!("test://{}", node.display());
        ok(ctl(
            data,
            &["host", "add", h, "--uri", &uri, "--bridge", "br0"],
        ));
        ok(ctl(
            data,
            &[
                "host",
                "set",
                h,
                "--network",
                "10.77.0.0/24",
                "--gateway",
                "10.77.0.1",
            ],
        ));
    }
    let disk = data.join("m.qcow2");
    fixture::qcow2(&disk, "32M");
    ok(ctl(
        data,
        &["image", "import", "base", disk.to_str().unwrap()],
    ));
    ok(ctl(data, &["def", "create", "shop"]));
    dir
}

fn assert_no_password(what: &str, o: &Output) {
    let t = text(o);
    assert!(!t.contains(PASSWORD), "{what} shows the password: {t}");
}

// Multi-threaded: the fronts answer while a CLI process is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caddy_admin_password_is_never_shown_journaled_or_audited() {
    use base64::Engine as _;
    let dir = setup();
    let d = dir.path();
    let front_port = free_port();
    let c = caddy(front_port).await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"))
    );
    let front = front_on(
        front_port,
        format!("127.0.0.1:{}", c.admin_port),
        FrontRules {
            require_auth: Some(auth),
            ..FrontRules::default()
        },
    )
    .await;
    let url = format!("http://admin:{PASSWORD}@127.0.0.1:{}", front.port);
    let shown = format!("http://admin:***@127.0.0.1:{}", front.port);

    // Without the password the front refuses: the credentials below are really used.
    let o = ctl(
        d,
        &[
            "lb",
            "add",
            "nopass",
            "--caddy-admin",
            &format!("http://127.0.0.1:{}", front.port),
            "--caddy-route-id",
            "flotilla",
        ],
    );
    assert_eq!(o.status.code(), Some(13), "{}", text(&o));
    assert!(text(&o).contains("401 Unauthorized"), "{}", text(&o));
    let o = ctl(
        d,
        &[
            "lb",
            "add",
            "edge",
            "--caddy-admin",
            &url,
            "--caddy-route-id",
            "flotilla",
            "--json",
        ],
    );
    assert_no_password("lb add --json", &o);
    let added: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
    assert_eq!(added["endpoint"], shown.as_str());
    for args in [
        &["lb", "list"][..],
        &["lb", "list", "--json"],
        &["lb", "show", "edge"],
        &["lb", "show", "edge", "--json"],
        &["lb", "check", "edge", "--json"],
    ] {
        let o = ctl(d, args);
        assert_no_password(&args.join(" "), &o);
        assert!(ok(o).contains(&shown), "{args:?}");
    }

    // A unit behind it works: the password reaches Caddy's front.
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base",
            "--definition",
            "shop",
            "--count",
            "2",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
            "--lb",
            "edge",
            "--drain-timeout",
            "0",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
    assert_eq!(c.upstreams().await, ["10.77.0.11:8080", "10.77.0.12:8080"]);

    // Caddy goes away: every error names the endpoint without the password.
    drop(c);
    for args in [
        &["unit", "stop", "shop", "--json"][..],
        &["unit", "stop", "shop"],
        &["unit", "status", "shop", "--json"],
        &["lb", "check", "edge", "--json"],
        &["lb", "reconcile", "edge", "--json"],
        &[
            "lb",
            "add",
            "other",
            "--caddy-admin",
            &format!("http://admin:{PASSWORD}@127.0.0.1:{}", free_port()),
            "--caddy-route-id",
            "x",
            "--json",
        ],
        &[
            "lb",
            "add",
            "bad",
            "--caddy-admin",
            &format!("https://admin:{PASSWORD}@127.0.0.1:1"),
            "--caddy-route-id",
            "x",
        ],
    ] {
        let o = ctl(d, args);
        assert_no_password(&args.join(" "), &o);
        if args[1] != "status" {
            assert_ne!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
            assert!(text(&o).contains("admin:***@"), "{args:?}: {}", text(&o));
        }
    }
    // The journal and the audit log hold the failures, without the password.
    let o = ctl(d, &["op", "list", "--json"]);
    assert_no_password("op list", &o);
    assert!(ok(o).contains("admin:***@"));
    let o = ctl(d, &["audit", "--limit", "1000", "--json"]);
    assert_no_password("audit", &o);
    assert!(ok(o).contains("admin:***@"));
}

/// Everything a CLI process and the data directory's files show: outputs, and the log files.
fn logs_of(data: &Path) -> String {
    let mut all = String::new();
    if let Ok(rd) = std::fs::read_dir(data.join("logs")) {
        for e in rd.flatten() {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(e.path()).unwrap_or_default(),
            ));
        }
    }
    all
}

/// Every hostile password below starts with this; it must appear nowhere, whole or in part
/// (a raw, percent-encoded or cut-off password still shows it).
const MARK: &str = "Zq";

fn assert_no_mark(what: &str, t: &str) {
    assert!(!t.contains(MARK), "{what} shows (part of) a password: {t}");
}

/// Passwords with the characters a URL treats specially — typed raw where a URL parser takes
/// them, percent-encoded where it would not — are sent to a real Caddy (through a front that
/// checks them) and never appear: not in `lb list/show/check` (text, --json), the errors
/// (reqwest's, the URL's own parse errors, the validation errors that quote the input), the
/// journal, the audit log or the log file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_caddy_passwords_work_and_never_appear_in_output_journal_audit_or_logs() {
    use base64::Engine as _;
    let dir = setup();
    let d = dir.path();
    // (as typed in the URL, the password Caddy's front must receive)
    let usable: &[(&str, &str)] = &[
        ("Zq pa ss", "Zq pa ss"),
        ("Zq\"dq'sq", "Zq\"dq'sq"),
        ("Zq@p@ss", "Zq@p@ss"),
        ("Zq:a:b", "Zq:a:b"),
        ("Zq%zz50%", "Zq%zz50%"),
        ("Zq%2F%23%3F%40%20x", "Zq/#?@ x"),
        ("Zq<a>`b{c}|d", "Zq<a>`b{c}|d"),
        ("Zq\u{fc}\u{20ac}", "Zq\u{fc}\u{20ac}"),
        ("Zq pw\"@ '%41", "Zq pw\"@ 'A"),
    ];
    // The fronts listen before Caddy picks its own ports.
    let admin_port = free_port();
    let mut fronts = Vec::new();
    for (_, real) in usable {
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{real}"))
        );
        let rules = FrontRules {
            require_auth: Some(auth),
            ..FrontRules::default()
        };
        fronts.push(front_on(free_port(), format!("127.0.0.1:{admin_port}"), rules).await);
    }
    let ports: Vec<u16> = fronts.iter().map(|f| f.port).collect();
    let c = Caddy::behind(admin_port, &ports).await;
    for (i, ((typed, _), front)) in usable.iter().zip(&fronts).enumerate() {
        let url = format!("http://admin:{typed}@127.0.0.1:{}", front.port);
        let shown = format!("http://admin:***@127.0.0.1:{}", front.port);
        let name = format!("edge{i}");
        // Registered: the front let the requests through, so the password arrived intact.
        let o = ctl(
            d,
            &[
                "lb",
                "add",
                &name,
                "--caddy-admin",
                &url,
                "--caddy-route-id",
                "flotilla",
                "--json",
            ],
        );
        assert_no_mark(&format!("lb add {typed:?}"), &text(&o));
        let added: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
        assert_eq!(added["endpoint"], shown.as_str(), "{typed:?}");
        for args in [
            &["lb", "list"][..],
            &["lb", "list", "--json"],
            &["lb", "show", &name],
            &["lb", "show", &name, "--json"],
            &["lb", "check", &name],
            &["lb", "check", &name, "--json"],
            &["lb", "reconcile", &name, "--json"],
        ] {
            let o = ctl(d, args);
            assert_no_mark(&format!("{typed:?}: {}", args.join(" ")), &text(&o));
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        }
        // Refused inputs quote the URL in their error: without the password.
        for bad in [
            format!("https://admin:{typed}@127.0.0.1:1"),
            format!("http://admin:{typed}@127.0.0.1:1/path"),
            format!("http://admin:{typed}@127.0.0.1:1/#frag"),
            format!("http://admin:{typed}@"),
            format!("http://admin:{typed}@127.0.0.1:99999"),
            format!("http://admin:{typed}\t@127.0.0.1:1"),
        ] {
            for json in [false, true] {
                let mut args = vec![
                    "lb",
                    "add",
                    "refused",
                    "--caddy-admin",
                    &bad,
                    "--caddy-route-id",
                    "x",
                ];
                if json {
                    args.push("--json");
                }
                let o = ctl(d, &args);
                assert_no_mark(&format!("lb add {bad:?}"), &text(&o));
                assert_ne!(o.status.code(), Some(0), "{bad:?}: {}", text(&o));
            }
        }
    }
    // Passwords a URL cannot carry raw (they end the authority) and control characters: the
    // URL is refused, and its error does not show them.
    for typed in ["Zq/x", "Zq#x", "Zq?x", "Zq\\x", "Zq\nx", "Zq\u{7f}x"] {
        let url = format!("http://admin:{typed}@127.0.0.1:{}", free_port());
        let o = ctl(
            d,
            &[
                "lb",
                "add",
                "refused",
                "--caddy-admin",
                &url,
                "--caddy-route-id",
                "x",
            ],
        );
        assert_no_mark(&format!("lb add {typed:?}"), &text(&o));
        assert_ne!(o.status.code(), Some(0), "{typed:?}: {}", text(&o));
    }
    // A unit behind one of them; then Caddy goes away and every error names the endpoint
    // without the password.
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base",
            "--definition",
            "shop",
            "--count",
            "1",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
            "--lb",
            "edge8",
            "--drain-timeout",
            "0",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
    drop(c);
    for args in [
        &["unit", "stop", "shop"][..],
        &["unit", "status", "shop", "--json"],
        &["lb", "check", "edge0"],
        &["lb", "check", "edge1", "--json"],
        &["lb", "check", "edge2", "--json"],
        &["lb", "reconcile", "edge8", "--json"],
        &["lb", "reconcile", "edge8"],
    ] {
        let o = ctl(d, args);
        assert_no_mark(&args.join(" "), &text(&o));
        if args[1] != "status" {
            assert_ne!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
            assert!(text(&o).contains("admin:***@"), "{args:?}: {}", text(&o));
        }
    }
    for args in [
        &["op", "list", "--json"][..],
        &["audit", "--limit", "1000", "--json"],
        &["audit", "--limit", "1000"],
    ] {
        let o = ctl(d, args);
        assert_no_mark(&args.join(" "), &text(&o));
        assert!(ok(o).contains("admin:***@"), "{args:?}");
    }
    let logs = logs_of(d);
    assert!(logs.contains("admin:***@"), "the log names the endpoints");
    assert_no_mark("the log file", &logs);
    drop(fronts);
}

/// A real HAProxy with an empty backend `be_t`.
async fn haproxy() -> Haproxy {
    Haproxy::start("be_t", None).await
}

/// A real HAProxy; with `front`, also a frontend on that loopback port sending to `be_t`.
async fn haproxy_with_front(front: Option<u16>) -> Haproxy {
    Haproxy::start("be_t", front).await
}

fn runtime(addr: String) -> flotilla::lb::haproxy::HaproxyRuntime {
    flotilla::lb::haproxy::HaproxyRuntime::new(flotilla::lb::haproxy::Endpoint::Tcp(addr))
}

async fn admin_state(h: &Haproxy, name: &str) -> Option<flotilla::lb::MemberState> {
    use flotilla::lb::LoadBalancer;
    runtime(h.addr())
        .members("be_t")
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.admin)
}

#[tokio::test]
async fn haproxy_commands_survive_refused_and_dropped_connections() {
    use flotilla::lb::{LoadBalancer, MemberState};
    let h = haproxy().await;
    let addr: std::net::SocketAddrV4 = "127.0.0.2:9".parse().unwrap();

    // Nothing listens yet (HAProxy re-creating its socket): refused, then it answers. Even
    // `add server`, which is never sent twice, is retried: it was never sent.
    let port = free_port();
    let late = tokio::spawn({
        let target = h.addr();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            front_on(port, target, FrontRules::default()).await
        }
    });
    let lb = runtime(format!("127.0.0.1:{port}"));
    lb.member_add("be_t", "w1", addr).await.unwrap();
    assert_eq!(admin_state(&h, "w1").await, Some(MemberState::Maint));
    drop(late.await.unwrap());

    // The first connections are cut (reset) or closed without an answer. Either is no
    // answer (HAProxy ends each with a newline): the command is sent again (set and show are
    // harmless twice) and really applied.
    for (state, dropped, rules) in [
        (MemberState::Ready, 1, FrontRules::dropping(|n| n < 1)),
        (MemberState::Maint, 2, FrontRules::dropping(|n| n < 2)),
        (MemberState::Ready, 1, FrontRules::swallowing(|n| n < 1)),
        (MemberState::Maint, 1, FrontRules::swallowing(|n| n < 1)),
    ] {
        let front = front_on(free_port(), h.addr(), rules).await;
        let lb = runtime(format!("127.0.0.1:{}", front.port));
        lb.member_set("be_t", "w1", state).await.unwrap();
        assert_eq!(admin_state(&h, "w1").await, Some(state));
        assert!(front.accepted.load(Ordering::SeqCst) > dropped);
        let members = lb.members("be_t").await.unwrap();
        assert_eq!(members.len(), 1);
    }
}

#[tokio::test]
async fn a_haproxy_that_keeps_failing_is_reported_after_a_few_quick_attempts() {
    use flotilla::lb::{LbError, LoadBalancer};
    let h = haproxy().await;
    let guard = std::time::Duration::from_secs(5); // one command's own timeout
                                                   // Every connection cut.
    let front = front_on(free_port(), h.addr(), FrontRules::dropping(|_| true)).await;
    let lb = runtime(format!("127.0.0.1:{}", front.port));
    let err = tokio::time::timeout(guard, lb.members("be_t"))
        .await
        .expect("retries are short")
        .unwrap_err();
    assert!(
        matches!(err, LbError::Connect { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tried 5 times"), "{err}");
    assert_eq!(front.accepted.load(Ordering::SeqCst), 5);
    // A command that must not run twice is not sent again once it may have arrived.
    let before = front.accepted.load(Ordering::SeqCst);
    let err = lb
        .command("add server be_t/w9 127.0.0.9:9")
        .await
        .unwrap_err();
    assert!(matches!(err, LbError::Connect { .. }), "{err:?}");
    assert_eq!(front.accepted.load(Ordering::SeqCst), before + 1);
    // Nothing listening at all.
    let lb = runtime(format!("127.0.0.1:{}", free_port()));
    let err = tokio::time::timeout(guard, lb.members("be_t"))
        .await
        .expect("retries are short")
        .unwrap_err();
    assert!(
        matches!(err, LbError::Connect { attempts: 5, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn caddy_requests_survive_dropped_and_refused_connections() {
    use flotilla::lb::caddy::CaddyAdmin;
    use flotilla::lb::MemberState;
    let front_port = free_port();
    let c = caddy(front_port).await;
    let addr: std::net::SocketAddrV4 = "127.0.0.2:9".parse().unwrap();
    // Every second connection cut: the read (GET) and then the change (PATCH) of each
    // member_set are each cut once.
    let front = front_on(
        front_port,
        format!("127.0.0.1:{}", c.admin_port),
        FrontRules::dropping(|n| n % 2 == 1),
    )
    .await;
    let lb = CaddyAdmin::new(&format!("http://127.0.0.1:{front_port}"), "flotilla").unwrap();
    lb.member_set_at("flotilla", addr, MemberState::Ready)
        .await
        .unwrap();
    assert_eq!(c.upstreams().await, ["127.0.0.2:9"]);
    lb.member_set_at("flotilla", addr, MemberState::Maint)
        .await
        .unwrap();
    assert!(c.upstreams().await.is_empty());
    assert!(front.accepted.load(Ordering::SeqCst) >= 6);
    drop(front);

    // Refused until Caddy's admin endpoint is there again.
    let late = tokio::spawn({
        let target = format!("127.0.0.1:{}", c.admin_port);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            front_on(front_port, target, FrontRules::default()).await
        }
    });
    lb.member_set_at("flotilla", addr, MemberState::Ready)
        .await
        .unwrap();
    assert_eq!(c.upstreams().await, ["127.0.0.2:9"]);
    drop(late.await.unwrap());
}

#[tokio::test]
async fn a_caddy_that_keeps_failing_is_reported_after_a_few_quick_attempts() {
    use flotilla::lb::caddy::CaddyAdmin;
    use flotilla::lb::{LbError, MemberState};
    let front_port = free_port();
    let c = caddy(front_port).await;
    let front = front_on(
        front_port,
        format!("127.0.0.1:{}", c.admin_port),
        FrontRules::dropping(|_| true),
    )
    .await;
    let lb = CaddyAdmin::new(&format!("http://127.0.0.1:{front_port}"), "flotilla").unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        lb.member_set_at(
            "flotilla",
            "127.0.0.2:9".parse().unwrap(),
            MemberState::Ready,
        ),
    )
    .await
    .expect("retries are short")
    .unwrap_err();
    assert!(
        matches!(err, LbError::Connect { attempts: 5, .. }),
        "{err:?}"
    );
    assert_eq!(front.accepted.load(Ordering::SeqCst), 5);
    assert!(c.upstreams().await.is_empty());
}

/// A deploy through a Caddy front that cuts every second connection: each cut request is
/// sent again and the deploy succeeds (before, the first cut change undid the whole deploy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_rides_out_a_flaky_load_balancer() {
    let dir = setup();
    let d = dir.path();
    let front_port = free_port();
    let c = caddy(front_port).await;
    let front = front_on(
        front_port,
        format!("127.0.0.1:{}", c.admin_port),
        FrontRules::dropping(|n| n % 2 == 1),
    )
    .await;
    ok(ctl(
        d,
        &[
            "lb",
            "add",
            "edge",
            "--caddy-admin",
            &format!("http://127.0.0.1:{front_port}"),
            "--caddy-route-id",
            "flotilla",
        ],
    ));
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base",
            "--definition",
            "shop",
            "--server",
            "shop-1=10.77.0.11",
            "--lb",
            "edge",
            "--drain-timeout",
            "0",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
    assert_eq!(c.upstreams().await, ["10.77.0.11:8080"]);
    ok(ctl(d, &["unit", "stop", "shop"]));
    assert!(c.upstreams().await.is_empty());
    assert!(front.accepted.load(Ordering::SeqCst) >= 8);
}

/// A rollout behind a real HAProxy reads the pool's counters around each batch and reports
/// them; past `max_failed_requests` it stops and rolls back. The failed requests are real
/// HTTP 500s that HAProxy passes on from the servers' (loopback) addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_counts_the_pools_requests_and_rolls_back_past_its_limit() {
    use flotilla::error::{ApiError, ErrorCode};
    use flotilla::model::RolloutPolicy;
    use flotilla::ops::units::{UnitAction, UnitForm, UnitUpdate};
    let front = free_port();
    let h = haproxy_with_front(Some(front)).await;
    let dir = tempfile::tempdir().unwrap();
    let e = fixture::engine_in(dir.path());
    fixture::add_host(&e, "h1", &fixture::node_copy(dir.path(), "h1")).await;
    // Loopback addresses: HAProxy's checks and the requests it forwards stay on this machine.
    e.host_set_network("h1", "127.77.0.0/24", "127.77.0.1", "")
        .unwrap();
    let disk = dir.path().join("m.qcow2");
    fixture::qcow2(&disk, "32M");
    fixture::import_base(&e, disk, String::new()).await;
    e.def_create("shop").unwrap();
    e.lb_add(
        "hx",
        &flotilla::ops::lbs::LbTarget::HaproxyAddr { addr: h.addr() },
    )
    .await
    .unwrap();
    e.unit_create(&UnitForm {
        name: "app".into(),
        image: "base:1".into(),
        definition: "shop:1".into(),
        count: 2,
        name_pattern: "app-{n}".into(),
        addresses: "127.77.0.11-127.77.0.20".into(),
        lb: Some("hx".into()),
        lb_pool: Some("be_t".into()),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("app", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap();
    let now = e.def_show("shop", None).unwrap();
    e.def_set_text(
        "shop",
        &now.text.replacen("[env]", "[env]\nRELEASE = \"2\"", 1),
        Some(1),
    )
    .unwrap();
    e.unit_update(
        "app",
        &UnitUpdate {
            definition: Some("shop".into()),
            ..Default::default()
        },
    )
    .unwrap();
    // The servers' addresses answer every request with 500 (an application that fails): what
    // HAProxy counts as failed requests.
    for ip in ["127.77.0.11", "127.77.0.12"] {
        let listener = tokio::net::TcpListener::bind((ip, 8080)).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn
                        .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
    }
    // Steady requests to the frontend while the rollout runs, four at a time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .build()
                    .unwrap();
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let _ = client
                        .get(format!("http://127.0.0.1:{front}/"))
                        .send()
                        .await;
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let policy = RolloutPolicy {
        drain_timeout_s: 0,
        min_in_service: Some(1),
        min_healthy_s: 0,
        max_failed_requests: Some(0),
        ..Default::default()
    };
    let rollout = |policy| UnitAction::Rollout {
        back: false,
        canary: None,
        policy: Some(policy),
    };
    // Slow enough per server for requests to arrive during each batch.
    let slow: flotilla::ops::units::StepFn = Arc::new(|ev| {
        if ev.step == flotilla::plan::Step::Swap
            && ev.status == flotilla::inventory::StepStatus::Started
        {
            std::thread::sleep(std::time::Duration::from_millis(700));
        }
    });
    let err = e
        .unit_run("app", rollout(policy.clone()), slow.clone())
        .await
        .unwrap_err();
    assert_eq!(ApiError::from(&err).code, ErrorCode::RolledBack, "{err}");
    let flotilla::ops::OpError::Failed(report) = &err else {
        unreachable!()
    };
    assert!(
        err.to_string().contains("more than 0 failed requests"),
        "{err}"
    );
    assert_eq!(report.batches.len(), 1, "it stopped after the first batch");
    let counted = report.batches[0].counters.expect("HAProxy keeps counters");
    assert!(counted.requests > 0 && counted.failed() > 0, "{counted:?}");
    let versions: Vec<Option<u32>> = e
        .unit_show("app")
        .unwrap()
        .servers
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, [Some(1), Some(1)], "rolled back");

    // Without a limit it goes on, and counts each batch.
    let r = e
        .unit_run(
            "app",
            rollout(RolloutPolicy {
                max_failed_requests: None,
                ..policy
            }),
            slow,
        )
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    for l in load {
        assert!(l.await.unwrap() > 0);
    }
    assert_eq!(r.batches.len(), 2, "{r}");
    assert!(r
        .batches
        .iter()
        .all(|b| b.counters.is_some_and(|c| c.requests > 0)));
    assert!(r.to_string().contains("batch 2 (app-2): "), "{r}");
}
