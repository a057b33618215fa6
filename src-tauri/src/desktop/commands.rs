//! The commands the front end invokes. Each one: parse → call the engine → map the error.

use super::AppState;
use crate::error::ApiError;
use crate::inventory::AuditEntry;
use crate::model::Host;
use crate::ops::hosts::{HostInput, HostProbe, HostTarget};
use serde::{Deserialize, Serialize};
use tauri::State;

#[derive(Debug, Serialize, specta::Type)]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    /// Set when the inventory could not be opened; every other command fails with it too.
    pub startup_error: Option<ApiError>,
}

#[tauri::command]
#[specta::specta]
pub fn app_info(state: State<'_, AppState>) -> AppInfo {
    AppInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        data_dir: state.data_dir.clone(),
        startup_error: state.engine().err(),
    }
}

#[tauri::command]
#[specta::specta]
pub fn host_list(state: State<'_, AppState>) -> Result<Vec<Host>, ApiError> {
    Ok(state.engine()?.host_list()?)
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
pub fn host_remove(state: State<'_, AppState>, name: String) -> Result<(), ApiError> {
    Ok(state.engine()?.host_remove(&name)?)
}

#[tauri::command]
#[specta::specta]
pub fn audit_list(state: State<'_, AppState>, limit: u32) -> Result<Vec<AuditEntry>, ApiError> {
    let engine = state.engine()?;
    engine
        .inventory
        .audit_list(limit.min(10_000))
        .map_err(|e| ApiError::from(crate::ops::OpError::from(e)))
}
