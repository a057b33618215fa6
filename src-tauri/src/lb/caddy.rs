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

/// Percent-encodes every byte but `A-Z a-z 0-9 - . _ ~` (RFC 3986's unreserved characters).
fn encode_userinfo(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An admin URL as Flotilla stores and uses it: `http://[user[:password]@]HOST:PORT`, parsed
/// the way reqwest reads it, with the user name and password percent-encoded in full (every
/// byte but `A-Z a-z 0-9 - . _ ~`) and no trailing slash. reqwest decodes them again for
/// basic authentication, so the password Caddy receives is unchanged; written this way it
/// holds no space, quote, `@`, `:`, `/` or `#`, so wherever the URL is shown its password is
/// found and masked. A URL with control characters (the parser would drop tabs and newlines
/// silently), a path, a query or a fragment, or credentials that are not UTF-8 once decoded
/// (reqwest would send none) is refused; no error shows the password.
pub fn canonical_admin(admin: &str) -> Result<String, ValidationError> {
    let shown = || quote_input(&super::redact_credentials(admin));
    let bad = |why: String| ValidationError::new("caddy-admin", why);
    if admin.chars().any(char::is_control) {
        return Err(bad(format!(
            "{} contains control characters (tab, newline, …); type the URL again, \
             percent-encoding such characters in the password",
            shown()
        )));
    }
    let mut url = url::Url::parse(admin).map_err(|e| {
        bad(format!(
            "{} is not a URL like http://127.0.0.1:2019 ({e}); a password with / # ? or \\ \
             must be percent-encoded (%2F %23 %3F %5C)",
            shown()
        ))
    })?;
    if url.scheme() != "http"
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad(format!(
            "{} must be http://HOST:PORT (Caddy's admin endpoint, no path)",
            shown()
        )));
    }
    let user = percent_decode(url.username());
    let password = url.password().map(percent_decode);
    let utf8 = std::str::from_utf8(&user).is_ok()
        && password
            .as_deref()
            .is_none_or(|p| std::str::from_utf8(p).is_ok());
    if !utf8 {
        return Err(bad(format!(
            "the user name or password of {} is not UTF-8 text once percent-decoded",
            shown()
        )));
    }
    let (user, password) = (
        encode_userinfo(&user),
        password.map(|p| encode_userinfo(&p)),
    );
    let unset = || bad(format!("{} cannot carry a user name or password", shown()));
    url.set_username(&user).map_err(|()| unset())?;
    url.set_password(password.as_deref())
        .map_err(|()| unset())?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `%XX` sequences decoded, anything else kept as it is (what reqwest does with a URL's
/// user name and password before sending them).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

impl CaddyAdmin {
    /// `admin` is canonicalized ([`canonical_admin`]); one stored by an older build as typed
    /// is read the same way.
    pub fn new(admin: &str, route_id: &str) -> Result<Self, ValidationError> {
        let admin = canonical_admin(admin)?;
        let shown = super::redact_credentials(&admin);
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
            admin,
            shown,
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

    #[test]
    fn admin_urls_are_stored_with_their_credentials_percent_encoded_in_full() {
        for (typed, stored) in [
            ("http://127.0.0.1:2019/", "http://127.0.0.1:2019"),
            (
                "http://admin:pw@127.0.0.1:2019",
                "http://admin:pw@127.0.0.1:2019",
            ),
            ("http://admin:p w@h:1", "http://admin:p%20w@h:1"),
            (
                "http://admin:p\"'<>`@h:1",
                "http://admin:p%22%27%3C%3E%60@h:1",
            ),
            ("http://admin:p@ss@h:1", "http://admin:p%40ss@h:1"),
            ("http://admin:a:b@h:1", "http://admin:a%3Ab@h:1"),
            ("http://admin:50%zz%@h:1", "http://admin:50%25zz%25@h:1"),
            ("http://admin:%2F%23x@h:1", "http://admin:%2F%23x@h:1"),
            ("http://ad min:\u{fc}@h:1", "http://ad%20min:%C3%BC@h:1"),
        ] {
            let c = canonical_admin(typed).unwrap();
            assert_eq!(c, stored, "{typed}");
            // The same password reaches reqwest: the stored form decodes to the typed one.
            let (t, s) = (
                url::Url::parse(typed).unwrap(),
                url::Url::parse(&c).unwrap(),
            );
            assert_eq!(
                percent_decode(t.password().unwrap_or("")),
                percent_decode(s.password().unwrap_or("")),
                "{typed}"
            );
            assert_eq!(canonical_admin(&c).unwrap(), c, "stable: {c}");
        }
        for (bad, why) in [
            ("http://admin:s3 c\tret@h:1", "control characters"),
            ("http://admin:s3/cret@h:1", "percent-encoded"),
            ("http://admin:s3#cret@h:1", "percent-encoded"),
            ("http://admin:s3cret@h:1/#x", "no path"),
            ("http://admin:%FFs3cret@h:1", "not UTF-8"),
        ] {
            let e = canonical_admin(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("s3") && !e.contains("cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_endpoint_is_redacted_whole_whatever_its_password_holds() {
        use crate::lb::redact_credentials as r;
        for (value, shown) in [
            ("http://admin:pw@h:1", "http://admin:***@h:1"),
            ("http://admin:p w\"x'@h:1", "http://admin:***@h:1"),
            ("http://admin:p@s:s/#?@h:1", "http://admin:***@h:1"),
            ("https://admin:a b@", "https://admin:***@"),
            ("admin:a b@h:1", "admin:***@h:1"),
            ("tcp:admin:a b@h:1", "tcp:admin:***@h:1"),
            ("http://admin@h:1", "http://admin@h:1"),
            ("http://h:1", "http://h:1"),
            ("unix:/run/a@b:c", "unix:/run/a@b:c"),
            ("tcp:10.0.0.1:9999", "tcp:10.0.0.1:9999"),
            ("", ""),
        ] {
            assert_eq!(r(value), shown, "{value}");
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
