//! Real load balancers on loopback: a Caddy with one reverse_proxy handler tagged
//! `@id flotilla`, and a HAProxy with its runtime API on TCP.

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real Caddy on loopback with one reverse_proxy handler tagged `@id flotilla`.
pub struct Caddy {
    child: Child,
    pub admin_port: u16,
    /// Its admin API: `http://127.0.0.1:PORT`.
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    /// With its admin API on a free port.
    pub async fn start() -> Self {
        Self::behind(free_port(), &[]).await
    }

    /// With its admin API on `admin_port`, taking requests addressed to any of `fronts` too
    /// (the Host header a front sends on).
    pub async fn behind(admin_port: u16, fronts: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let mut admin = serde_json::json!({ "listen": format!("127.0.0.1:{admin_port}") });
        if !fronts.is_empty() {
            let mut origins = vec![format!("127.0.0.1:{admin_port}")];
            origins.extend(fronts.iter().map(|f| format!("127.0.0.1:{f}")));
            admin["origins"] = serde_json::json!(origins);
        }
        let config = serde_json::json!({
            "admin": admin,
            "logging": { "logs": { "default": { "level": "ERROR" } } },
            "storage": { "module": "file_system", "root": dir.path().join("data") },
            "apps": { "http": { "servers": { "lb": {
                "listen": [format!("127.0.0.1:{http_port}")],
                "routes": [{ "handle": [{ "handler": "reverse_proxy", "@id": "flotilla", "upstreams": [] }] }]
            } } } }
        });
        let file = dir.path().join("caddy.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let child = Command::new("caddy")
            .args(["run", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caddy (scripts/setup.sh installs it)");
        let c = Self {
            child,
            admin_port,
            admin: format!("http://127.0.0.1:{admin_port}"),
            _dir: dir,
        };
        for _ in 0..100 {
            if reqwest::get(format!("{}/config/", c.admin)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    /// The handler's upstreams, sorted; a read Caddy resets while it applies a change is
    /// retried.
    pub async fn upstreams(&self) -> Vec<String> {
        let url = format!("{}/id/flotilla/upstreams", self.admin);
        let mut v = serde_json::Value::Null;
        for attempt in 0..20 {
            match reqwest::get(&url).await {
                Ok(r) => {
                    v = r.json().await.unwrap();
                    break;
                }
                Err(_) if attempt < 19 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        }
        dials(&v)
    }
}

/// The upstreams of the handler `@id flotilla` of the Caddy whose admin API is `admin`, sorted
/// (one read).
pub async fn upstreams(admin: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{admin}/id/flotilla/upstreams"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    dials(&v)
}

fn dials(upstreams: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = upstreams
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A real HAProxy with its runtime API on loopback TCP and an empty backend.
pub struct Haproxy {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// With the empty backend `backend`; with `front`, also a frontend on that loopback port
    /// sending to it.
    pub async fn start(backend: &str, front: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        // A request no server can take waits in the queue briefly, then gets HAProxy's 503.
        let frontend = front.map_or_else(String::new, |f| {
            format!(
                "frontend fe_t\n  bind 127.0.0.1:{f}\n  timeout queue 200ms\n  default_backend {backend}\n"
            )
        });
        std::fs::write(
            &cfg,
            format!(
                "global\n  stats socket ipv4@127.0.0.1:{port} level admin\n\
                 defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
                 {frontend}backend {backend}\n  balance roundrobin\n"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/setup.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// Its runtime API: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
