//! A host's BMC: set or remove how it is reached, read the power state, and power the host
//! off for fencing (issue 20). The Redfish client is `bmc/`, the password store
//! `secrets.rs`; the recovery's `fence` step calls [`Engine::host_power_off`].

use super::{Engine, OpError};
use crate::bmc::{BmcError, BmcTarget, Limits, Redfish};
use crate::inventory::now_rfc3339;
use crate::model::{
    BmcSettings, BmcUrl, BmcUser, Host, Secret, SecretPlace, SystemId, ValidationError,
};
use crate::secrets::Secrets;
use serde::Serialize;
use std::time::Duration;

/// What the admin gives to set a host's BMC. `password: None` keeps the stored one (when
/// only the URL, system, user or CA change).
#[derive(Debug, Clone)]
pub struct BmcInput {
    pub url: String,
    pub system: String,
    pub user: String,
    pub password: Option<Secret>,
    /// PEM certificates to trust for this BMC instead of the system's roots; `None` or
    /// empty: the system's roots.
    pub ca_pem: Option<String>,
}

/// What a BMC says about the host (`host bmc-check`, the wizard's *Check*). Reading it
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct BmcStatus {
    pub url: String,
    pub system: String,
    /// The system's `Name` as the BMC reports it (cut, cleaned); may be empty.
    pub system_name: String,
    /// `On`, `Off`, `PoweringOn`, `PoweringOff`, `Paused`, or what else the BMC says.
    pub power_state: String,
    /// The reset types the BMC offers, when it says.
    pub reset_types: Option<Vec<String>>,
    /// Where the password was found (`None` for a check of settings not stored yet).
    pub password: Option<SecretPlace>,
}

/// Proof that a host was powered off through its BMC: what did it, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PowerFence {
    /// `BMC https://10.0.0.5 system 1: ForceOff, PowerState Off read back`.
    pub by: String,
    /// RFC 3339, UTC: when `Off` was read.
    pub at: String,
}

/// A BMC that failed: the adapter's error, with the host and what to do next.
#[derive(Debug)]
pub struct BmcFailure {
    /// `None` for settings not stored yet (the wizard's *Check*).
    pub host: Option<String>,
    pub error: BmcError,
}

impl std::fmt::Display for BmcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(h) = &self.host {
            write!(f, "host {h}: ")?;
        }
        write!(f, "{}", self.error)?;
        let name = self.host.as_deref().unwrap_or("NAME");
        let hint = match &self.error {
            BmcError::Refused { status: 401, .. } => format!(
                "; set them with: flotillactl host set {name} --bmc-user USER --bmc-password-stdin"
            ),
            BmcError::Tls { .. } => format!("; flotillactl host set {name} --bmc-ca FILE"),
            BmcError::NoSystem { .. } => {
                format!("; set the right one with: flotillactl host set {name} --bmc-system ID")
            }
            _ => String::new(),
        };
        f.write_str(&hint)
    }
}

impl std::error::Error for BmcFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl BmcInput {
    /// Checks the settings (not the password's presence) without storing or sending
    /// anything: a front door refuses bad input before it changes anything else.
    pub fn check(&self) -> Result<(), OpError> {
        self.target().map(|_| ())
    }

    /// The settings, validated; `ca_pem` is checked the way the client will use it.
    fn target(&self) -> Result<BmcTarget, OpError> {
        let ca_pem = self
            .ca_pem
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                crate::bmc::check_ca(p)
                    .map(|_| format!("{p}\n"))
                    .map_err(|e| ValidationError::new("bmc-ca", e.to_string()))
            })
            .transpose()?;
        Ok(BmcTarget {
            url: BmcUrl::parse(self.url.trim())?,
            system: SystemId::parse(self.system.trim())?,
            user: BmcUser::parse(self.user.trim())?,
            ca_pem,
        })
    }
}

/// The stored settings as the client takes them (checked again: stored by an older build,
/// or edited by hand).
fn stored_target(host: &Host) -> Result<BmcTarget, OpError> {
    let Some(b) = &host.bmc else {
        return Err(OpError::NoBmc {
            host: host.name.to_string(),
        });
    };
    let refused = |e: ValidationError| {
        ValidationError::new(
            e.field,
            format!(
                "the stored BMC setting of host {} is refused now: {}; set it again with flotillactl host set {} --{} …",
                host.name, e.problem, host.name, e.field
            ),
        )
    };
    Ok(BmcTarget {
        url: BmcUrl::parse(&b.url).map_err(refused)?,
        system: SystemId::parse(&b.system).map_err(refused)?,
        user: BmcUser::parse(&b.user).map_err(refused)?,
        ca_pem: b.ca_pem.clone(),
    })
}

impl Engine {
    /// Where BMC passwords are kept for this data directory.
    pub fn secrets(&self) -> Secrets {
        Secrets::new(
            self.data_dir(),
            self.secret_files.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Keeps new secrets (BMC passwords) in private files in the data directory even when
    /// the session has a Secret Service, as `FLOTILLA_SECRETS=file` does.
    pub fn keep_secrets_in_files(&self) {
        self.secret_files
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs blocking secret-store work off the async runtime (D-Bus, files).
    async fn with_secrets<T: Send + 'static>(
        &self,
        work: impl FnOnce(Secrets) -> T + Send + 'static,
    ) -> Result<T, OpError> {
        let secrets = self.secrets();
        tokio::task::spawn_blocking(move || work(secrets))
            .await
            .map_err(|e| OpError::Timeout(format!("the password store did not answer: {e}")))
    }

    /// Sets how `host`'s BMC is reached (and stores its password), or with `None` removes
    /// the BMC and its password. Everything is checked before anything changes; nothing is
    /// sent to the BMC (`host_bmc_check` does that).
    pub async fn host_set_bmc(&self, host: &str, input: Option<BmcInput>) -> Result<Host, OpError> {
        let outcome = self.host_set_bmc_inner(host, input.as_ref()).await;
        let action = if input.is_some() {
            "host.set-bmc"
        } else {
            "host.remove-bmc"
        };
        self.audit(action, &format!("host/{host}"), &outcome);
        outcome
    }

    async fn host_set_bmc_inner(
        &self,
        host: &str,
        input: Option<&BmcInput>,
    ) -> Result<Host, OpError> {
        let current = self.host_show(host)?;
        let name = current.name.clone();
        let Some(input) = input else {
            let n = name.clone();
            let warning = self.with_secrets(move |s| s.remove(&n, true)).await??;
            if let Some(w) = warning {
                tracing::warn!(host = %name, "{w}");
            }
            return Ok(self.inventory.host_set_bmc(&name, None)?);
        };
        let target = input.target()?;
        let place = match &input.password {
            Some(secret) => {
                let (n, secret) = (name.clone(), secret.clone());
                self.with_secrets(move |s| s.store(&n, &secret)).await??
            }
            None => {
                if current.bmc.is_none() {
                    return Err(ValidationError::new(
                        "bmc-password",
                        format!(
                            "host {name} has no BMC password yet: give it with --bmc-password-stdin or --bmc-password-file"
                        ),
                    )
                    .into());
                }
                let n = name.clone();
                self.with_secrets(move |s| s.load(&n)).await??.1
            }
        };
        let settings = BmcSettings {
            url: target.url.to_string(),
            system: target.system.to_string(),
            user: target.user.as_str().to_owned(),
            ca_pem: target.ca_pem,
            password: place,
        };
        Ok(self.inventory.host_set_bmc(&name, Some(&settings))?)
    }

    /// The client for `host`'s BMC, with its stored password.
    async fn redfish_of(&self, host: &Host) -> Result<(Redfish, SecretPlace), OpError> {
        let target = stored_target(host)?;
        let n = host.name.clone();
        let (secret, place) = self.with_secrets(move |s| s.load(&n)).await??;
        let client = Redfish::new(target, secret, Limits::default())
            .map_err(|error| failed(Some(host.name.to_string()), error))?;
        Ok((client, place))
    }

    /// Reads `host`'s power state from its BMC. Changes nothing (on the BMC or here).
    pub async fn host_bmc_check(&self, host: &str) -> Result<BmcStatus, OpError> {
        let host = self.host_show(host)?;
        let (client, place) = self.redfish_of(&host).await?;
        let mut status = status_of(&client, Some(host.name.as_str())).await?;
        status.password = Some(place);
        Ok(status)
    }

    /// Reads the power state through BMC settings that are not stored (the Add host
    /// wizard's *Check*). Stores nothing; the password is required.
    pub async fn bmc_probe(&self, input: &BmcInput) -> Result<BmcStatus, OpError> {
        let target = input.target()?;
        let Some(secret) = input.password.clone() else {
            return Err(ValidationError::new("bmc-password", "must not be empty").into());
        };
        let client =
            Redfish::new(target, secret, Limits::default()).map_err(|error| failed(None, error))?;
        status_of(&client, None).await
    }

    /// Powers `host` off through its BMC: reads the power state, sends `ForceOff` unless it
    /// is `Off`, and reads it until it is `Off`, for at most `limit` after the reset (each
    /// request also has its own connect and total timeout, so a hung BMC never hangs the
    /// caller). `progress` is told each step. Audited as `host.power-off`.
    pub async fn host_power_off(
        &self,
        host: &str,
        limit: Duration,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<PowerFence, OpError> {
        let outcome = self.host_power_off_inner(host, limit, progress).await;
        match &outcome {
            Ok(fence) => tracing::warn!(host, by = %fence.by, "host powered off through its BMC"),
            Err(e) => {
                tracing::error!(host, error = %e, "powering the host off through its BMC failed")
            }
        }
        self.audit("host.power-off", &format!("host/{host}"), &outcome);
        outcome
    }

    async fn host_power_off_inner(
        &self,
        host: &str,
        limit: Duration,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<PowerFence, OpError> {
        let host = self.host_show(host)?;
        let (client, _) = self.redfish_of(&host).await?;
        let done = client
            .power_off(limit, progress)
            .await
            .map_err(|error| failed(Some(host.name.to_string()), error))?;
        let at = now_rfc3339();
        let who = format!(
            "BMC {} system {}",
            client.url(),
            stored_target(&host)?.system
        );
        let by = if done.sent {
            format!("{who}: ForceOff, PowerState Off read back")
        } else {
            format!("{who}: PowerState Off read back (it was off already; nothing sent)")
        };
        Ok(PowerFence { by, at })
    }
}

fn failed(host: Option<String>, error: BmcError) -> OpError {
    OpError::Bmc(Box::new(BmcFailure { host, error }))
}

async fn status_of(client: &Redfish, host: Option<&str>) -> Result<BmcStatus, OpError> {
    let info = client
        .system()
        .await
        .map_err(|error| failed(host.map(str::to_owned), error))?;
    Ok(BmcStatus {
        url: client.url().to_string(),
        system: info.id,
        system_name: info.name,
        power_state: info.power_state.to_string(),
        reset_types: info.reset_types,
        password: None,
    })
}

#[cfg(test)]
mod tests;
