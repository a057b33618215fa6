//! Load balancers, driven through their APIs. One backend pool per unit, one member per server.
//! [`haproxy::HaproxyRuntime`] speaks HAProxy's runtime API, [`caddy::CaddyAdmin`] Caddy's admin
//! API. The inventory holds the desired state of every member; `ops::lbs` reconciles.

pub mod caddy;
pub mod haproxy;

use serde::Serialize;
use std::net::SocketAddrV4;

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error(
        "{what} {value:?} is not a valid name for the load balancer: use 1-64 of A-Z a-z 0-9 . _ -"
    )]
    BadName { what: &'static str, value: String },
    #[error("cannot reach the load balancer at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the load balancer at {endpoint} did not answer within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
    #[error("the load balancer refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("backend pool {pool:?} does not exist on the load balancer")]
    NoPool { pool: String },
}

/// What the load balancer should do with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// In rotation (once its health checks pass).
    Ready,
    /// No new requests; running ones finish.
    Drain,
    /// Out of rotation.
    Maint,
}

/// A member as the load balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct MemberStats {
    pub name: String,
    pub address: String,
    /// The load balancer's own status text (`UP`, `DOWN`, `MAINT`, `DRAIN`, `UP 1/2`, …).
    pub status: String,
    /// The state an admin set: maint, drain or ready.
    pub admin: MemberState,
    /// Current sessions.
    pub sessions: u64,
    /// Queued requests.
    pub queued: u64,
    /// Up and its last health check passed.
    pub healthy: bool,
}

/// Names sent to a line-based API: nothing that could end or extend a command.
pub fn check_name(what: &'static str, value: &str) -> Result<(), LbError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(LbError::BadName {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

/// `endpoint` as it may be shown, printed, journaled or audited: the password of a
/// `user:pass@` part is replaced by `***` (`http://admin:***@10.0.0.5:2019`). Works on text that
/// is not a valid URL too (a refused input is quoted in its error message).
pub fn redact_credentials(endpoint: &str) -> String {
    let start = endpoint.find("://").map_or(0, |i| i + 3);
    let authority_len = endpoint[start..]
        .find(['/', '?', '#'])
        .unwrap_or(endpoint.len() - start);
    let authority = &endpoint[start..start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return endpoint.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return endpoint.to_owned();
    };
    format!(
        "{}{}:***{}",
        &endpoint[..start],
        &userinfo[..colon],
        &endpoint[start + at..]
    )
}

/// A load balancer: pools of members.
#[allow(async_fn_in_trait)]
pub trait LoadBalancer {
    async fn pool_exists(&self, pool: &str) -> Result<bool, LbError>;
    async fn members(&self, pool: &str) -> Result<Vec<MemberStats>, LbError>;
    /// Adds a member out of rotation (maint). Adding one that exists at the same address is not
    /// an error.
    async fn member_add(
        &self,
        pool: &str,
        name: &str,
        address: SocketAddrV4,
    ) -> Result<(), LbError>;
    async fn member_set(&self, pool: &str, name: &str, state: MemberState) -> Result<(), LbError>;
    /// Removes a member (put into maint first). Returns false when it was not there.
    async fn member_remove(&self, pool: &str, name: &str) -> Result<bool, LbError>;
}

#[cfg(test)]
mod tests {
    use super::redact_credentials;

    #[test]
    fn passwords_in_endpoints_are_never_shown() {
        for (given, shown) in [
            (
                "http://admin:s3cret@10.0.0.5:2019",
                "http://admin:***@10.0.0.5:2019",
            ),
            (
                "http://admin:s3cret@10.0.0.5:2019/",
                "http://admin:***@10.0.0.5:2019/",
            ),
            // An `@` in the password, unencoded; a password that looks like a path start.
            ("http://a:p@ss@h:1", "http://a:***@h:1"),
            ("http://a:p%2Fw@h:1", "http://a:***@h:1"),
            // Not a URL at all (refused input is quoted in its error).
            ("admin:s3cret@10.0.0.5:2019", "admin:***@10.0.0.5:2019"),
            ("http://:s3cret@h:1", "http://:***@h:1"),
            // Nothing secret: unchanged.
            ("http://127.0.0.1:2019", "http://127.0.0.1:2019"),
            ("http://admin@h:1", "http://admin@h:1"),
            (
                "unix:/run/haproxy/admin.sock",
                "unix:/run/haproxy/admin.sock",
            ),
            ("unix:/tmp/a@b:c", "unix:/tmp/a@b:c"),
            ("tcp:10.0.0.1:9999", "tcp:10.0.0.1:9999"),
            ("", ""),
        ] {
            assert_eq!(redact_credentials(given), shown, "{given}");
        }
    }
}
