//! Hosts: register, check, remove, their network settings and their BMC.

use super::{blocking, AppState};
use crate::error::ApiError;
use crate::model::Host;
use crate::ops::bmc::{BmcInput, BmcStatus};
use crate::ops::hosts::{HostInput, HostKeyInfo, HostProbe, HostTarget};
use crate::ops::requests::HostNetworkChange;
use serde::Deserialize;
use tauri::State;

#[tauri::command]
#[specta::specta]
pub async fn host_list(state: State<'_, AppState>) -> Result<Vec<Host>, ApiError> {
    blocking(&state, |e| Ok(e.host_list()?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn host_probe(
    state: State<'_, AppState>,
    uri: String,
    pool: Option<String>,
    bridge: Option<String>,
) -> Result<HostProbe, ApiError> {
    let target = HostTarget::parse(&uri, pool.as_deref(), bridge.as_deref())?;
    Ok(state.engine()?.host_probe(&target).await?)
}

/// The SSH host key of the host in `uri` (for the Add host wizard's fingerprint step); null
/// when the URI does not use SSH. Stores nothing.
#[tauri::command]
#[specta::specta]
pub async fn host_key(
    state: State<'_, AppState>,
    uri: String,
) -> Result<Option<HostKeyInfo>, ApiError> {
    Ok(state.engine()?.host_key(&uri).await?)
}

/// Trusts the SSH host key of the host in `uri` if it is exactly `fingerprint` (the admin
/// confirmed it in the wizard).
#[tauri::command]
#[specta::specta]
pub async fn host_key_accept(
    state: State<'_, AppState>,
    uri: String,
    fingerprint: String,
) -> Result<(), ApiError> {
    Ok(state.engine()?.host_key_accept(&uri, &fingerprint).await?)
}

#[derive(Debug, Deserialize, specta::Type)]
pub struct HostAddRequest {
    pub name: String,
    pub uri: String,
    pub pool: Option<String>,
    pub bridge: Option<String>,
}

#[tauri::command]
#[specta::specta]
pub async fn host_add(
    state: State<'_, AppState>,
    request: HostAddRequest,
) -> Result<Host, ApiError> {
    let input = HostInput {
        name: request.name,
        uri: request.uri,
        pool: request.pool,
        bridge: request.bridge,
        accept_host_key: None,
    };
    Ok(state.engine()?.host_add(&input).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn host_check(state: State<'_, AppState>, name: String) -> Result<Host, ApiError> {
    Ok(state.engine()?.host_check(&name).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn host_remove(state: State<'_, AppState>, name: String) -> Result<(), ApiError> {
    blocking(&state, move |e| Ok(e.host_remove(&name)?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn host_set_network(
    state: State<'_, AppState>,
    name: String,
    network: String,
    gateway: String,
    domain_type: String,
) -> Result<Host, ApiError> {
    // The window sends every value (an empty domain type: what the host offers).
    let change = HostNetworkChange {
        network: Some(network),
        gateway: Some(gateway),
        domain_type: Some(domain_type),
    };
    blocking(&state, move |e| {
        Ok(e.host_change_network(&name, None, &change)?)
    })
    .await
}

/// The hosts a search of the Hosts view finds.
#[tauri::command]
#[specta::specta]
pub async fn host_search(
    state: State<'_, AppState>,
    query: String,
) -> Result<Vec<String>, ApiError> {
    blocking(&state, move |e| Ok(e.host_search(&query)?)).await
}

// ---- A host's BMC (power fencing) -------------------------------------------------------

/// BMC settings from the window. `password`: empty or null keeps the stored one.
#[derive(Deserialize, specta::Type)]
pub struct BmcRequest {
    pub url: String,
    pub system: String,
    pub user: String,
    pub password: Option<String>,
    /// PEM certificate(s) to trust for this BMC instead of the system's; empty: the system's.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for BmcRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcRequest")
            .field("url", &self.url)
            .field("system", &self.system)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl BmcRequest {
    fn input(self) -> Result<BmcInput, ApiError> {
        let password = match self.password.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                crate::model::Secret::parse(p)
                    .map_err(|e| ApiError::from(crate::ops::OpError::from(e)))?,
            ),
        };
        Ok(BmcInput {
            url: self.url,
            system: self.system,
            user: self.user,
            password,
            ca_pem: self.ca_pem,
        })
    }
}

/// Sets a host's BMC (and stores its password), or with null removes it and its password.
#[tauri::command]
#[specta::specta]
pub async fn host_set_bmc(
    state: State<'_, AppState>,
    name: String,
    bmc: Option<BmcRequest>,
) -> Result<Host, ApiError> {
    let input = bmc.map(BmcRequest::input).transpose()?;
    Ok(state.engine()?.host_set_bmc(&name, input).await?)
}

/// Reads a host's power state from its BMC. Changes nothing.
#[tauri::command]
#[specta::specta]
pub async fn host_bmc_check(
    state: State<'_, AppState>,
    name: String,
) -> Result<BmcStatus, ApiError> {
    Ok(state.engine()?.host_bmc_check(&name).await?)
}

/// Reads the power state through BMC settings not stored yet (the Add host wizard's Check).
#[tauri::command]
#[specta::specta]
pub async fn bmc_probe(state: State<'_, AppState>, bmc: BmcRequest) -> Result<BmcStatus, ApiError> {
    let input = bmc.input()?;
    Ok(state.engine()?.bmc_probe(&input).await?)
}
