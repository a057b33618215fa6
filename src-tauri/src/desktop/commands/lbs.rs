//! Load balancers: register, check, reconcile, remove.

use super::{blocking, AppState};
use crate::error::ApiError;
use crate::inventory::LbInstance;
use crate::ops::lbs::{LbCheck, LbTarget, ReconcileReport};
use tauri::State;

#[tauri::command]
#[specta::specta]
pub async fn lb_list(state: State<'_, AppState>) -> Result<Vec<LbInstance>, ApiError> {
    blocking(&state, |e| Ok(e.lb_list()?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn lb_add(
    state: State<'_, AppState>,
    name: String,
    target: LbTarget,
) -> Result<LbInstance, ApiError> {
    Ok(state.engine()?.lb_add(&name, &target).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn lb_check(state: State<'_, AppState>, name: String) -> Result<LbCheck, ApiError> {
    Ok(state.engine()?.lb_check(&name).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn lb_reconcile(
    state: State<'_, AppState>,
    name: String,
) -> Result<ReconcileReport, ApiError> {
    Ok(state.engine()?.lb_reconcile(&name).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn lb_remove(state: State<'_, AppState>, name: String) -> Result<(), ApiError> {
    blocking(&state, move |e| Ok(e.lb_remove(&name)?)).await
}
