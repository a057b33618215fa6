//! Caddy's admin API over HTTP: Flotilla manages the `upstreams` of one reverse_proxy handler
//! tagged with an `@id`. Caddy has no drain or maintenance state: a member out of rotation is
//! simply not in the list (the engine gives removed members a grace period instead of a drain).

use super::{Attempt, LbError, MemberState, MemberStats};
use crate::model::{quote_input, ValidationError};
use serde_json::{json, Value};
use std::net::SocketAddrV4;
use std::time::Duration;

/// Which Caddy an admin URL reaches, for telling whether two registrations are one instance:
/// host (`localhost` as 127.0.0.1) and port, without credentials or a trailing slash.
pub fn instance_key(admin: &str) -> String {
    match url::Url::parse(admin) {
        Ok(u) => {
            let host = match u.host_str().unwrap_or("") {
                "localhost" => "127.0.0.1".to_owned(),
                h => h.to_ascii_lowercase(),
            };
            format!("{host}:{}", u.port_or_known_default().unwrap_or(0))
        }
        Err(_) => admin.trim_end_matches('/').to_owned(),
    }
}

#[derive(Clone)]
pub struct CaddyAdmin {
    /// `http://host:port`, without a trailing slash; may hold `user:pass@` (sent as basic
    /// authentication by reqwest, which takes it out of the URL it keeps).
    admin: String,
    /// `admin` as errors show it: without the password.
    shown: String,
    route_id: String,
    client: reqwest::Client,
    /// Changes are read-modify-write of the upstream list: one at a time.
    writing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for CaddyAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaddyAdmin")
            .field("admin", &self.shown)
            .field("route_id", &self.route_id)
            .finish_non_exhaustive()
    }
}

impl CaddyAdmin {
    pub fn new(admin: &str, route_id: &str) -> Result<Self, ValidationError> {
        let shown = super::redact_credentials(admin);
        let url = url::Url::parse(admin).map_err(|_| {
            ValidationError::new(
                "caddy-admin",
                format!(
                    "{} is not a URL like http://127.0.0.1:2019",
                    quote_input(&shown)
                ),
            )
        })?;
        if url.scheme() != "http"
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
        {
            return Err(ValidationError::new(
                "caddy-admin",
                format!(
                    "{} must be http://HOST:PORT (Caddy's admin endpoint, no path)",
                    quote_input(&shown)
                ),
            ));
        }
        super::check_name("route id", route_id)
            .map_err(|e| ValidationError::new("caddy-route-id", e.to_string()))?;
        // Caddy reloads its config on every change and closes idle connections then: no
        // connection reuse.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ValidationError::new("caddy-admin", e.to_string()))?;
        Ok(Self {
            admin: admin.trim_end_matches('/').to_owned(),
            shown: shown.trim_end_matches('/').to_owned(),
            route_id: route_id.to_owned(),
            client,
            writing: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// reqwest's errors name the URL: ours is shown without the password instead.
    fn err(&self, e: reqwest::Error) -> LbError {
        if e.is_timeout() {
            LbError::Timeout {
                endpoint: self.shown.clone(),
                secs: 5,
                attempts: 1,
            }
        } else {
            LbError::Connect {
                endpoint: self.shown.clone(),
                attempts: 1,
                source: std::io::Error::other(e.without_url()),
            }
        }
    }

    /// Sends a request; tries again when no connection could be made (Caddy restarts its
    /// listeners while it applies a change) and, for a `repeatable` request (GET, PATCH of a
    /// whole list), when the connection broke or timed out after it was sent.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        repeatable: bool,
    ) -> Result<reqwest::Response, LbError> {
        let what = req
            .try_clone()
            .and_then(|r| r.build().ok())
            .map(|r| format!("{} {}", r.method(), r.url().path()))
            .unwrap_or_default();
        let began = std::time::Instant::now();
        let outcome = self.send_retrying(req, repeatable).await;
        let ms = began.elapsed().as_millis() as u64;
        match &outcome {
            Ok(r) => {
                tracing::debug!(lb = %self.shown, request = %what, status = r.status().as_u16(), ms, "caddy request")
            }
            Err(e) => {
                tracing::warn!(lb = %self.shown, request = %what, ms, error = %e, "caddy request failed")
            }
        }
        outcome
    }

    async fn send_retrying(
        &self,
        req: reqwest::RequestBuilder,
        repeatable: bool,
    ) -> Result<reqwest::Response, LbError> {
        super::retrying(repeatable, || async {
            let this = req.try_clone().ok_or_else(|| {
                Attempt::Final(LbError::Connect {
                    endpoint: self.shown.clone(),
                    attempts: 1,
                    source: std::io::Error::other("a request that cannot be repeated"),
                })
            })?;
            this.send().await.map_err(|e| {
                if e.is_connect() {
                    Attempt::NotSent(self.err(e))
                } else {
                    Attempt::Unknown(self.err(e))
                }
            })
        })
        .await
    }

    fn pool_of<'a>(&'a self, pool: &'a str) -> &'a str {
        if pool.is_empty() {
            &self.route_id
        } else {
            pool
        }
    }

    /// The handler's upstream dial addresses; NoPool when the `@id` does not exist.
    async fn upstreams(&self, pool: &str) -> Result<Vec<String>, LbError> {
        let pool = self.pool_of(pool);
        super::check_name("pool", pool)?;
        let resp = self
            .send(self.client.get(format!("{}/id/{pool}", self.admin)), true)
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(LbError::NoPool {
                pool: pool.to_owned(),
            });
        }
        if !resp.status().is_success() {
            // 401/403 from a front that wants other credentials, 5xx: not "no such pool".
            let status = resp.status();
            let answer = resp.text().await.unwrap_or_default();
            return Err(LbError::Refused {
                command: format!("GET /id/{pool}"),
                answer: format!("{status} {}", answer.trim())
                    .chars()
                    .take(300)
                    .collect(),
            });
        }
        let handler: Value = resp.json().await.map_err(|e| self.err(e))?;
        Ok(handler
            .get("upstreams")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|u| u.get("dial").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_upstreams(&self, pool: &str, dials: &[String]) -> Result<(), LbError> {
        let pool = self.pool_of(pool);
        let body: Vec<Value> = dials.iter().map(|d| json!({ "dial": d })).collect();
        // PATCH replaces an existing value; a handler without upstreams needs PUT.
        for method in [reqwest::Method::PATCH, reqwest::Method::PUT] {
            // PATCH sets the whole list: harmless twice. PUT creates it: a second one after
            // a lost answer would fail.
            let repeatable = method == reqwest::Method::PATCH;
            let resp = self
                .send(
                    self.client
                        .request(
                            method.clone(),
                            format!("{}/id/{pool}/upstreams", self.admin),
                        )
                        .json(&body),
                    repeatable,
                )
                .await?;
            if resp.status().is_success() {
                return Ok(());
            }
            if method == reqwest::Method::PUT {
                let answer = resp.text().await.unwrap_or_default();
                return Err(LbError::Refused {
                    command: format!("{method} /id/{pool}/upstreams"),
                    answer: answer.chars().take(300).collect(),
                });
            }
        }
        Ok(())
    }

    pub async fn pool_exists(&self, pool: &str) -> Result<bool, LbError> {
        match self.upstreams(pool).await {
            Ok(_) => Ok(true),
            Err(LbError::NoPool { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Members in rotation, with Caddy's request counters.
    pub async fn members(&self, pool: &str) -> Result<Vec<MemberStats>, LbError> {
        let dials = self.upstreams(pool).await?;
        let counters: Vec<Value> = match self
            .send(
                self.client
                    .get(format!("{}/reverse_proxy/upstreams", self.admin)),
                true,
            )
            .await
        {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(dials
            .into_iter()
            .map(|dial| {
                let c = counters
                    .iter()
                    .find(|c| c.get("address").and_then(Value::as_str) == Some(&dial));
                let num = |k: &str| {
                    c.and_then(|c| c.get(k))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                MemberStats {
                    name: dial.clone(),
                    address: dial,
                    status: if num("fails") > 0 {
                        "FAILING".into()
                    } else {
                        "UP".into()
                    },
                    admin: MemberState::Ready,
                    sessions: num("num_requests"),
                    queued: 0,
                    healthy: num("fails") == 0,
                    check: String::new(),
                }
            })
            .collect())
    }

    /// A member out of rotation is not in Caddy's list: nothing to add yet.
    pub async fn member_add(
        &self,
        pool: &str,
        _name: &str,
        _address: SocketAddrV4,
    ) -> Result<(), LbError> {
        self.upstreams(pool).await.map(|_| ())
    }

    pub async fn member_set_at(
        &self,
        pool: &str,
        address: SocketAddrV4,
        state: MemberState,
    ) -> Result<(), LbError> {
        let dial = address.to_string();
        let _one = self.writing.lock().await;
        let mut dials = self.upstreams(pool).await?;
        let present = dials.contains(&dial);
        match state {
            MemberState::Ready if !present => dials.push(dial),
            MemberState::Drain | MemberState::Maint if present => dials.retain(|d| *d != dial),
            _ => return Ok(()),
        }
        self.put_upstreams(pool, &dials).await
    }

    pub async fn member_remove_at(
        &self,
        pool: &str,
        address: SocketAddrV4,
    ) -> Result<bool, LbError> {
        let dial = address.to_string();
        let _one = self.writing.lock().await;
        let mut dials = self.upstreams(pool).await?;
        if !dials.contains(&dial) {
            return Ok(false);
        }
        dials.retain(|d| *d != dial);
        self.put_upstreams(pool, &dials).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caddy_is_one_instance_whatever_its_url_says() {
        let k = instance_key("http://127.0.0.1:2019");
        for same in [
            "http://127.0.0.1:2019/",
            "http://admin:pw@127.0.0.1:2019",
            "http://localhost:2019",
            "http://LOCALHOST:2019/",
        ] {
            assert_eq!(instance_key(same), k, "{same}");
        }
        for other in ["http://127.0.0.1:2020", "http://10.0.0.1:2019"] {
            assert_ne!(instance_key(other), k, "{other}");
        }
        assert_eq!(instance_key("http://h"), "h:80");
    }

    #[test]
    fn admin_urls_and_route_ids_are_checked() {
        assert!(CaddyAdmin::new("http://127.0.0.1:2019", "flotilla").is_ok());
        for (admin, id) in [
            ("127.0.0.1:2019", "x"),
            ("https://127.0.0.1:2019", "x"),
            ("http://127.0.0.1:2019/config/", "x"),
            ("http://127.0.0.1:2019", "a/b"),
            ("http://127.0.0.1:2019", ""),
            ("http://127.0.0.1:2019", "x\nGET /"),
        ] {
            assert!(CaddyAdmin::new(admin, id).is_err(), "{admin} {id}");
        }
    }

    /// Every text an error carries: its message and its causes'.
    fn all_text(e: &dyn std::error::Error) -> String {
        let mut out = format!("{e} {e:?}");
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(&format!(" | {c} {c:?}"));
            cause = c.source();
        }
        out
    }

    #[test]
    fn a_refused_admin_url_is_quoted_without_its_password() {
        for bad in [
            "admin:s3cret@127.0.0.1:2019",
            "https://admin:s3cret@127.0.0.1:2019",
            "http://admin:s3cret@127.0.0.1:2019/config/",
        ] {
            let e = CaddyAdmin::new(bad, "flotilla").unwrap_err();
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(e.to_string().contains("admin:***@"), "{e}");
        }
    }

    #[tokio::test]
    async fn errors_name_the_admin_endpoint_without_its_password() {
        let c = CaddyAdmin::new("http://admin:s3cret@127.0.0.1:9", "flotilla").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = c.members("").await.unwrap_err();
        let text = all_text(&e);
        assert!(matches!(e, LbError::Connect { .. }), "{e:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            e.to_string().contains("http://admin:***@127.0.0.1:9"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_admin_endpoint_is_a_clear_error() {
        // Port 9 on loopback: nothing listens (discard service is not run here).
        let c = CaddyAdmin::new("http://127.0.0.1:9", "flotilla").unwrap();
        let e = c.members("").await.unwrap_err();
        assert!(matches!(e, LbError::Connect { .. }), "{e:?}");
    }
}
