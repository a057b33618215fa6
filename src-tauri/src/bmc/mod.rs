//! A host's BMC over Redfish (DMTF DSP0266), for power fencing: read a ComputerSystem's
//! `PowerState`, ask for `ComputerSystem.Reset` with `ForceOff`, read `Off` back. An adapter to
//! the real world like `lb/`: the engine (`ops/bmc.rs`) decides, this module only speaks.
//!
//! Every answer is hostile until parsed: bodies are bounded in size and time, JSON is read
//! field by field, text from the BMC is cut short and stripped of control characters before
//! it reaches an error message. Every request has a connect and a total timeout. The password
//! goes only into the `Authorization` header of requests to the configured BMC (same scheme,
//! host and port; redirects only there, no proxy) and into nothing else.

mod tls;

use crate::model::{BmcUrl, BmcUser, Secret, SystemId};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// How long one request may take: to connect, and in all (answer read included).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub request: Duration,
    /// Largest answer read (bytes); a larger one is refused.
    pub max_body: usize,
    /// Between two reads of the power state while waiting for `Off`.
    pub poll: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(10),
            max_body: 1 << 20,
            poll: Duration::from_millis(500),
        }
    }
}

/// Largest CA/certificate PEM accepted for a BMC (bytes).
pub const MAX_CA_PEM: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("the BMC certificates are not usable: {reason}; give a PEM file with the BMC's certificate or the CA that signed it")]
    BadCa { reason: String },
    #[error("cannot prepare a connection to a BMC: {reason}")]
    Setup { reason: String },
    #[error("cannot reach the BMC {url}: {reason}")]
    Connect {
        url: String,
        reason: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    #[error("the BMC {url} presented a TLS certificate that is not trusted ({reason}); if the BMC has a self-signed certificate, give it (or its CA) with --bmc-ca FILE")]
    Tls { url: String, reason: String },
    #[error("the BMC {url} did not answer within {secs} s ({what})")]
    Timeout {
        url: String,
        secs: u64,
        what: String,
    },
    #[error("BMC {url} refused: HTTP {status} on {what} ({})", auth_hint(*status))]
    Refused {
        url: String,
        status: u16,
        what: String,
    },
    #[error("the BMC {url} has no system '{system}' ({})", match available { Ok(list) => format!("it has: {}", list_or_none(list)), Err(e) => format!("its list of systems could not be read either: {e}") })]
    NoSystem {
        url: String,
        system: String,
        /// The Ids it lists, or why they could not be read.
        available: Result<Vec<String>, String>,
    },
    #[error("the BMC {url} answered {what} with HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        url: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("the BMC {url} sent an answer to {what} that is not usable Redfish: {problem}")]
    BadAnswer {
        url: String,
        what: String,
        problem: String,
    },
    #[error("the BMC {url} does not offer ForceOff for system {system} (it offers: {}); power the host off by hand", list_or_none(offered))]
    NoForceOff {
        url: String,
        system: String,
        offered: Vec<String>,
    },
    #[error("power state of system {system} still {state} {secs} s after ForceOff (BMC {url}){}", last_error.as_ref().map(|e| format!("; last read: {e}")).unwrap_or_default())]
    StillOn {
        url: String,
        system: String,
        state: String,
        secs: u64,
        last_error: Option<String>,
    },
}

fn auth_hint(status: u16) -> &'static str {
    if status == 403 {
        "the BMC user may not do this: give a user with the Operator or Administrator role"
    } else {
        "check the BMC user and password"
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl BmcError {
    /// The BMC did not answer in time (or the power state did not change in time).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::StillOn { .. })
    }

    /// Nothing reached the BMC (no route, refused connection, TLS not accepted).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Tls { .. })
    }

    /// The user or password was refused (HTTP 401) or the user may not act (403).
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// A ComputerSystem's `PowerState` (Redfish: On, Off, PoweringOn, PoweringOff, Paused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    /// `null`, or a value Redfish does not define (shown cut and cleaned).
    Other(String),
}

impl PowerState {
    fn from_json(value: Option<&Value>) -> Result<Self, String> {
        match value {
            None => Err("the system has no PowerState".into()),
            Some(Value::Null) => Ok(Self::Other("unknown".into())),
            Some(Value::String(s)) => Ok(match s.as_str() {
                "On" => Self::On,
                "Off" => Self::Off,
                "PoweringOn" => Self::PoweringOn,
                "PoweringOff" => Self::PoweringOff,
                "Paused" => Self::Paused,
                other => Self::Other(clean(other, 32)),
            }),
            Some(other) => Err(format!("PowerState is {}, not a string", kind_of(other))),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::On => "On",
            Self::Off => "Off",
            Self::PoweringOn => "PoweringOn",
            Self::PoweringOff => "PoweringOff",
            Self::Paused => "Paused",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the BMC says about the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    pub id: String,
    /// The system's `Name` (cut and cleaned); empty when it has none.
    pub name: String,
    pub power_state: PowerState,
    /// Where the Reset action is posted (the advertised target, checked to be on this BMC).
    pub reset_target: url::Url,
    /// The reset types the BMC advertises (`ResetType@Redfish.AllowableValues`); `None`
    /// when it does not say.
    pub reset_types: Option<Vec<String>>,
}

/// Where and as whom: everything but the password.
#[derive(Debug, Clone)]
pub struct BmcTarget {
    pub url: BmcUrl,
    pub system: SystemId,
    pub user: BmcUser,
    /// Certificates to trust instead of the system's roots.
    pub ca_pem: Option<String>,
}

/// How a power-off went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerOff {
    /// The state read before anything was sent.
    pub before: PowerState,
    /// Whether ForceOff was sent (not when the system was off already).
    pub sent: bool,
}

/// The certificates in `pem`, checked the way the client will use them. Refuses a file
/// without a certificate, one larger than [`MAX_CA_PEM`], and certificates rustls cannot
/// parse.
pub fn check_ca(pem: &str) -> Result<usize, BmcError> {
    Ok(trust_of(pem)?.1)
}

/// The TLS configuration that trusts only the certificates in `pem` (see `tls.rs`), and
/// how many there are.
fn trust_of(pem: &str) -> Result<(rustls::ClientConfig, usize), BmcError> {
    if pem.len() > MAX_CA_PEM {
        return Err(BmcError::BadCa {
            reason: format!(
                "{} bytes is more than the {} KiB allowed",
                pem.len(),
                MAX_CA_PEM / 1024
            ),
        });
    }
    let n = tls::certificates(pem)
        .map_err(|reason| BmcError::BadCa { reason })?
        .len();
    let config = tls::PinnedOrCa::new(pem)
        .and_then(tls::PinnedOrCa::client_config)
        .map_err(|reason| BmcError::BadCa { reason })?;
    Ok((config, n))
}

/// A Redfish client for one system of one BMC.
pub struct Redfish {
    target: BmcTarget,
    password: Secret,
    limits: Limits,
    client: reqwest::Client,
}

impl fmt::Debug for Redfish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redfish")
            .field("url", &self.target.url.as_str())
            .field("system", &self.target.system.as_str())
            .field("user", &self.target.user.as_str())
            .finish_non_exhaustive()
    }
}

enum Answer {
    Json(Value),
    NotFound,
}

impl Redfish {
    pub fn new(target: BmcTarget, password: Secret, limits: Limits) -> Result<Self, BmcError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(limits.connect)
            .timeout(limits.request)
            // The password is only for this BMC: a redirect is followed only on it (same
            // scheme, host and port: sushy-tools sends a system's name to its UUID), and no
            // proxy from the environment sees the request.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if same && attempt.previous().len() <= 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .no_proxy()
            .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
            // One request at a time, rarely: no pool to keep a BMC's few sessions busy.
            .pool_max_idle_per_host(0);
        if let Some(pem) = &target.ca_pem {
            builder = builder.tls_backend_preconfigured(trust_of(pem)?.0);
        }
        let client = builder.build().map_err(|e| BmcError::Setup {
            reason: error_text(&e),
        })?;
        Ok(Self {
            target,
            password,
            limits,
            client,
        })
    }

    pub fn url(&self) -> &BmcUrl {
        &self.target.url
    }

    fn shown(&self) -> String {
        self.target.url.to_string()
    }

    fn system_path(&self) -> String {
        format!("/redfish/v1/Systems/{}", self.target.system)
    }

    fn at(&self, path: &str) -> Result<url::Url, BmcError> {
        self.target
            .url
            .join(path)
            .ok_or_else(|| BmcError::BadAnswer {
                url: self.shown(),
                what: clean(path, 80),
                problem: "the path leaves the BMC".into(),
            })
    }

    /// Reads the system: its power state, name and reset action. A system the BMC does not
    /// have is an error that lists the ones it has.
    pub async fn system(&self) -> Result<SystemInfo, BmcError> {
        let path = self.system_path();
        let what = format!("GET {path}");
        let body = match self.get(&path).await? {
            Answer::Json(v) => v,
            Answer::NotFound => {
                return Err(BmcError::NoSystem {
                    url: self.shown(),
                    system: self.target.system.to_string(),
                    available: self.systems().await.map_err(|e| e.to_string()),
                })
            }
        };
        let bad = |problem: String| BmcError::BadAnswer {
            url: self.shown(),
            what: what.clone(),
            problem,
        };
        let power_state = PowerState::from_json(body.get("PowerState")).map_err(bad)?;
        let name = body
            .get("Name")
            .and_then(Value::as_str)
            .map(|n| clean(n, 80))
            .unwrap_or_default();
        let action = body
            .get("Actions")
            .and_then(|a| a.get("#ComputerSystem.Reset"));
        let reset_target = match action.and_then(|a| a.get("target")) {
            None | Some(Value::Null) => self.at(&format!("{path}/Actions/ComputerSystem.Reset"))?,
            Some(Value::String(t)) => self.reset_target(t).map_err(bad)?,
            Some(other) => return Err(bad(format!("the reset target is {}", kind_of(other)))),
        };
        let reset_types = action
            .and_then(|a| a.get("ResetType@Redfish.AllowableValues"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .take(32)
                    .map(|t| clean(t, 40))
                    .collect()
            });
        Ok(SystemInfo {
            id: self.target.system.to_string(),
            name,
            power_state,
            reset_target,
            reset_types,
        })
    }

    /// The advertised target of the Reset action, if it is on this BMC.
    fn reset_target(&self, target: &str) -> Result<url::Url, String> {
        if target.is_empty()
            || target.len() > 512
            || target.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "the reset action's target {} is not a path",
                quote(target)
            ));
        }
        let joined = self.target.url.url().join(target).map_err(|e| {
            format!(
                "the reset action's target {} is not a URL: {e}",
                quote(target)
            )
        })?;
        if !self.target.url.same_origin(&joined) {
            return Err(format!(
                "the reset action's target {} is not on this BMC; Flotilla sends the BMC password only to {}",
                quote(target),
                self.shown()
            ));
        }
        Ok(joined)
    }

    /// The Ids of the systems the BMC lists (at most 64).
    pub async fn systems(&self) -> Result<Vec<String>, BmcError> {
        let path = "/redfish/v1/Systems";
        let body = match self.get(path).await? {
            Answer::Json(v) => v,
            Answer::NotFound => return Ok(vec![]),
        };
        let members = body
            .get("Members")
            .and_then(Value::as_array)
            .ok_or_else(|| BmcError::BadAnswer {
                url: self.shown(),
                what: format!("GET {path}"),
                problem: "it has no Members list".into(),
            })?;
        Ok(members
            .iter()
            .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
            .filter_map(|id| id.trim_end_matches('/').rsplit('/').next())
            .filter(|id| !id.is_empty())
            .take(64)
            .map(|id| clean(id, 128))
            .collect())
    }

    pub async fn power_state(&self) -> Result<PowerState, BmcError> {
        Ok(self.system().await?.power_state)
    }

    /// Posts `ComputerSystem.Reset` with `reset_type` to the advertised target.
    pub async fn reset(&self, target: &url::Url, reset_type: &str) -> Result<(), BmcError> {
        let what = format!("{reset_type} (POST {})", target.path());
        let request = self
            .client
            .post(target.clone())
            .json(&serde_json::json!({ "ResetType": reset_type }));
        let response = self.send(request, &what).await?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(bmc = %self.shown(), system = %self.target.system, reset_type, status = status.as_u16(), "BMC reset sent");
            return Ok(());
        }
        Err(self.status_error(response, &what).await)
    }

    /// Powers the system off: reads the power state; unless it is `Off`, sends ForceOff
    /// and reads the state until it is `Off`, for at most `limit`. `progress` is told each
    /// step in words.
    pub async fn power_off(
        &self,
        limit: Duration,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<PowerOff, BmcError> {
        let shown = format!("BMC {} system {}", self.shown(), self.target.system);
        let info = self.system().await?;
        progress(&format!("{shown}: PowerState {}", info.power_state));
        if info.power_state == PowerState::Off {
            return Ok(PowerOff {
                before: PowerState::Off,
                sent: false,
            });
        }
        if let Some(offered) = &info.reset_types {
            if !offered.iter().any(|t| t == "ForceOff") {
                return Err(BmcError::NoForceOff {
                    url: self.shown(),
                    system: info.id,
                    offered: offered.clone(),
                });
            }
        }
        progress(&format!("{shown}: sending ForceOff"));
        if let Err(e) = self.reset(&info.reset_target, "ForceOff").await {
            // A system that went off meanwhile may refuse a second power-off (409, 400):
            // what counts is the state.
            if matches!(e, BmcError::Status { .. })
                && self.power_state().await.ok() == Some(PowerState::Off)
            {
                progress(&format!("{shown}: PowerState Off"));
                return Ok(PowerOff {
                    before: info.power_state,
                    sent: true,
                });
            }
            return Err(e);
        }
        let began = tokio::time::Instant::now();
        let deadline = began + limit;
        let mut last_state = info.power_state.clone();
        let mut last_error = None;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(BmcError::StillOn {
                    url: self.shown(),
                    system: info.id,
                    state: last_state.to_string(),
                    secs: limit.as_secs(),
                    last_error,
                });
            }
            tokio::time::sleep(self.limits.poll.min(deadline - now)).await;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, self.power_state()).await {
                Ok(Ok(PowerState::Off)) => {
                    progress(&format!("{shown}: PowerState Off"));
                    return Ok(PowerOff {
                        before: info.power_state,
                        sent: true,
                    });
                }
                Ok(Ok(state)) => {
                    if state != last_state {
                        progress(&format!(
                            "{shown}: PowerState {state} ({} s after ForceOff)",
                            began.elapsed().as_secs()
                        ));
                    }
                    last_state = state;
                    last_error = None;
                }
                // A BMC busy powering off may not answer for a moment: read again.
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(_) => {}
            }
        }
    }

    async fn get(&self, path: &str) -> Result<Answer, BmcError> {
        let what = format!("GET {path}");
        let request = self.client.get(self.at(path)?);
        let response = self.send(request, &what).await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if !status.is_success() {
            return Err(self.status_error(response, &what).await);
        }
        let body = self.read_body(response, &what).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| BmcError::BadAnswer {
            url: self.shown(),
            what: what.clone(),
            problem: format!("it is not JSON ({e})"),
        })?;
        if !value.is_object() {
            return Err(BmcError::BadAnswer {
                url: self.shown(),
                what,
                problem: format!("it is {}, not an object", kind_of(&value)),
            });
        }
        Ok(Answer::Json(value))
    }

    /// Sends a request with the BMC's credentials; 401 and 403 are [`BmcError::Refused`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, BmcError> {
        let began = std::time::Instant::now();
        let sent = request
            .basic_auth(self.target.user.as_str(), Some(self.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .header("OData-Version", "4.0")
            .send()
            .await;
        let ms = began.elapsed().as_millis() as u64;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let err = self.transport_error(e, what);
                tracing::warn!(bmc = %self.shown(), request = %what, ms, error = %err, "BMC request failed");
                return Err(err);
            }
        };
        let status = response.status().as_u16();
        tracing::debug!(bmc = %self.shown(), request = %what, status, ms, "BMC request");
        if status == 401 || status == 403 {
            return Err(BmcError::Refused {
                url: self.shown(),
                status,
                what: what.to_owned(),
            });
        }
        Ok(response)
    }

    /// The body, at most `max_body` bytes (within the request's time limit).
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, BmcError> {
        let max = self.limits.max_body;
        let too_large = || BmcError::BadAnswer {
            url: self.shown(),
            what: what.to_owned(),
            problem: format!("it is larger than {} KiB", max / 1024),
        };
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e, what))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// An unsuccessful answer, with the Redfish error message when the BMC gives one.
    async fn status_error(&self, response: reqwest::Response, what: &str) -> BmcError {
        let status = response.status().as_u16();
        let message = match self.read_body(response, what).await {
            Ok(body) => redfish_message(&body),
            Err(_) => String::new(),
        };
        BmcError::Status {
            url: self.shown(),
            what: what.to_owned(),
            status,
            message,
        }
    }

    fn transport_error(&self, e: reqwest::Error, what: &str) -> BmcError {
        if e.is_timeout() {
            return BmcError::Timeout {
                url: self.shown(),
                secs: self.limits.request.as_secs(),
                what: what.to_owned(),
            };
        }
        if let Some(reason) = tls_refusal(&e) {
            return BmcError::Tls {
                url: self.shown(),
                reason,
            };
        }
        let e = e.without_url();
        if e.is_connect() {
            return BmcError::Connect {
                url: self.shown(),
                reason: innermost(&e),
                source: Some(e),
            };
        }
        BmcError::BadAnswer {
            url: self.shown(),
            what: what.to_owned(),
            problem: format!("the answer broke off ({})", innermost(&e)),
        }
    }
}

/// The rustls error in `err`, looking inside I/O errors (tokio-rustls wraps it in one, and
/// the connector wraps that in another; `io::Error::source` skips what it wraps).
fn rustls_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_in(inner)
}

/// The certificate problem, when TLS refused the BMC's certificate.
fn tls_refusal(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = rustls_in(err) {
            return match tls {
                rustls::Error::InvalidCertificate(reason) => Some(match reason {
                    rustls::CertificateError::UnknownIssuer => {
                        "it is not signed by a CA this machine trusts".into()
                    }
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. } => {
                        "it is not issued for this address".into()
                    }
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. } => "it has expired".into(),
                    rustls::CertificateError::Other(other) => {
                        let what = format!("{other:?}");
                        if what.contains("CaUsedAsEndEntity") {
                            "it is a CA certificate used as the BMC's own, as self-signed BMC certificates often are".into()
                        } else {
                            clean(&what, 120)
                        }
                    }
                    other => clean(&format!("{other:?}"), 120),
                }),
                _ => None,
            };
        }
        next = err.source();
    }
    None
}

/// The deepest cause's words (`Connection refused (os error 111)`), cut short.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        last = err.to_string();
        next = err.source();
    }
    clean(&last, 200)
}

fn error_text(e: &reqwest::Error) -> String {
    innermost(e)
}

/// The message of a Redfish error body (`error.message`, or the first extended info's
/// `Message`), cut and cleaned; empty when there is none.
fn redfish_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let error = value.get("error");
    let extended = error
        .and_then(|e| e.get("@Message.ExtendedInfo"))
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .and_then(|info| info.get("Message"))
        .and_then(Value::as_str);
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);
    extended
        .or(message)
        .map(|m| clean(m, 200))
        .unwrap_or_default()
}

/// Text from the BMC, fit for a message: control characters dropped, at most `max`
/// characters.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}

fn quote(text: &str) -> String {
    format!("\"{}\"", clean(text, 80))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
