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
    #[error("cannot reach the load balancer at {endpoint}{}", tried(*attempts))]
    Connect {
        endpoint: String,
        /// How many times it was tried (transient errors are retried).
        attempts: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the load balancer at {endpoint} did not answer within {secs} s{}", tried(*attempts))]
    Timeout {
        endpoint: String,
        secs: u64,
        attempts: u32,
    },
    #[error("the load balancer refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("backend pool {pool:?} does not exist on the load balancer")]
    NoPool { pool: String },
}

fn tried(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (tried {attempts} times)")
    } else {
        String::new()
    }
}

/// How a failed attempt to talk to a load balancer may be retried.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Nothing reached the load balancer (no listener, connection refused, no socket file
    /// while it restarts): repeating any command is safe.
    NotSent(LbError),
    /// The connection broke or timed out after the command was sent: it may have been
    /// applied, so only a command that is harmless twice is repeated.
    Unknown(LbError),
    /// An answer: asking again gets the same one.
    Final(LbError),
}

/// Waits between attempts: 5 attempts within 1.5 s. Long enough for a load balancer that
/// restarts its listener (HAProxy reload, Caddy applying a config), short enough that a dead
/// one is reported at once. A timeout is retried once only: a second one means it hangs.
pub(crate) const RETRY_WAITS: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(400),
    std::time::Duration::from_millis(800),
];

/// Runs `attempt` until it succeeds, fails for good, or the retries are spent. `repeatable`:
/// the command is harmless when applied twice (reads, setting a state, replacing a list).
pub(crate) async fn retrying<T, F, Fut>(repeatable: bool, mut attempt: F) -> Result<T, LbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let mut waits = RETRY_WAITS.iter();
    let (mut attempts, mut timeouts) = (0u32, 0u32);
    loop {
        attempts += 1;
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(Attempt::Final(e)) => return Err(e),
            Err(Attempt::Unknown(e)) if !repeatable => return Err(e.tried(attempts)),
            Err(Attempt::NotSent(e) | Attempt::Unknown(e)) => e,
        };
        if matches!(err, LbError::Timeout { .. }) {
            timeouts += 1;
        }
        match waits.next() {
            Some(wait) if timeouts < 2 => tokio::time::sleep(*wait).await,
            _ => return Err(err.tried(attempts)),
        }
    }
}

impl LbError {
    fn tried(self, n: u32) -> Self {
        match self {
            Self::Connect {
                endpoint, source, ..
            } => Self::Connect {
                endpoint,
                attempts: n,
                source,
            },
            Self::Timeout { endpoint, secs, .. } => Self::Timeout {
                endpoint,
                secs,
                attempts: n,
            },
            other => other,
        }
    }
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
    /// Its last health check's result as the load balancer words it (`L7OK`, `L4CON`, …);
    /// empty when it has none (Caddy, no checks).
    pub check: String,
}

/// A pool's traffic counters as the load balancer keeps them (HAProxy's backend row of
/// `show stat`), read before and after each batch of a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PoolCounters {
    /// Requests the pool answered (`req_tot`, else sessions `stot`).
    pub requests: u64,
    /// Answers with a 5xx status (`hrsp_5xx`), including HAProxy's own 503s.
    pub http_5xx: u64,
    /// Responses that broke off (`eresp`).
    pub response_errors: u64,
    /// Failed connections to members (`econ`): the client sees them only when retries ran out.
    pub connection_errors: u64,
    /// Retries and redispatches to another member (`wretr` + `wredis`).
    pub retried: u64,
}

impl PoolCounters {
    /// Both counts together.
    pub fn plus(&self, other: &PoolCounters) -> PoolCounters {
        PoolCounters {
            requests: self.requests + other.requests,
            http_5xx: self.http_5xx + other.http_5xx,
            response_errors: self.response_errors + other.response_errors,
            connection_errors: self.connection_errors + other.connection_errors,
            retried: self.retried + other.retried,
        }
    }

    /// What happened between `before` and `self` (counters only grow; a reset reads as 0).
    pub fn since(&self, before: &PoolCounters) -> PoolCounters {
        PoolCounters {
            requests: self.requests.saturating_sub(before.requests),
            http_5xx: self.http_5xx.saturating_sub(before.http_5xx),
            response_errors: self.response_errors.saturating_sub(before.response_errors),
            connection_errors: self
                .connection_errors
                .saturating_sub(before.connection_errors),
            retried: self.retried.saturating_sub(before.retried),
        }
    }

    /// Requests a client saw fail: 5xx answers and broken responses.
    pub fn failed(&self) -> u64 {
        self.http_5xx + self.response_errors
    }
}

/// The layer a member's last health check ran at, from HAProxy's `check_status`: `L7…` is
/// HTTP (readiness proven by the application), `L4…` TCP (only that the port is open), `L6…`
/// TLS.
pub fn check_layer(check_status: &str) -> Option<&'static str> {
    match check_status.get(..2) {
        Some("L7") => Some("http"),
        Some("L6") => Some("tls"),
        Some("L4") => Some("tcp"),
        _ => None,
    }
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

/// `endpoint` — one endpoint value, as typed or stored — as it may be shown, printed,
/// journaled or audited: the password of a `user:pass@` part is replaced by `***`
/// (`http://admin:***@10.0.0.5:2019`). The value is read as a whole, not as free text: the
/// user name ends at the first `:` after `scheme://` (or after `tcp:`, or at the start of a
/// bare `user:pass@host`), and the password runs to the **last** `@` of the value, so a
/// password with spaces, quotes, `@`, `:`, `/`, `#` or `%` — raw or percent-encoded — is
/// masked whole, also in input that is not a valid URL (a refused input is quoted in its
/// error). A HAProxy socket path (`unix:…`) holds no credentials and is shown as it is.
pub fn redact_credentials(endpoint: &str) -> String {
    if endpoint.starts_with("unix:") && !endpoint.contains("://") {
        return endpoint.to_owned();
    }
    let start = match endpoint.find("://") {
        Some(i) => i + 3,
        None if endpoint.starts_with("tcp:") => 4,
        None => 0,
    };
    let rest = &endpoint[start..];
    let masked = rest.rfind('@').and_then(|at| {
        let colon = rest[..at].find(':')?;
        Some(format!(
            "{}{}:***{}",
            &endpoint[..start],
            &rest[..colon],
            &rest[at..]
        ))
    });
    masked.unwrap_or_else(|| endpoint.to_owned())
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
