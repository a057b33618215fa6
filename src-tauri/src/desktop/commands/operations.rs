//! The operation journal and the audit log: list, log lines, resume or unwind.

use super::{blocking, steps_to, AppState};
use crate::error::{ApiError, ErrorCode};
use crate::inventory::{AuditEntry, Operation};
use crate::ops::units::{Interrupted, OpReport, StepEvent};
use tauri::ipc::Channel;
use tauri::State;

#[tauri::command]
#[specta::specta]
pub async fn operation_list(
    state: State<'_, AppState>,
    limit: u32,
) -> Result<Vec<Operation>, ApiError> {
    blocking(&state, move |e| {
        e.inventory
            .operation_list(limit)
            .map_err(|e| ApiError::from(crate::ops::OpError::from(e)))
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn operation_interrupted(
    state: State<'_, AppState>,
) -> Result<Vec<Interrupted>, ApiError> {
    blocking(&state, |e| Ok(e.interrupted_operations()?)).await
}

/// The log lines of an operation (read from the log files: off the async runtime).
#[tauri::command]
#[specta::specta]
pub async fn operation_log(state: State<'_, AppState>, id: i64) -> Result<Vec<String>, ApiError> {
    let engine = state.engine()?;
    tokio::task::spawn_blocking(move || engine.operation_log(id))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading the log failed: {e}")))
}

#[tauri::command]
#[specta::specta]
pub async fn operation_resume(
    state: State<'_, AppState>,
    id: i64,
    on_step: Channel<StepEvent>,
) -> Result<OpReport, ApiError> {
    state
        .engine()?
        .operation_resume(id, steps_to(on_step))
        .await
        .map_err(ApiError::with_outcome)
}

#[tauri::command]
#[specta::specta]
pub async fn operation_unwind(
    state: State<'_, AppState>,
    id: i64,
    on_step: Channel<StepEvent>,
) -> Result<OpReport, ApiError> {
    state
        .engine()?
        .operation_unwind(id, steps_to(on_step))
        .await
        .map_err(ApiError::with_outcome)
}

#[tauri::command]
#[specta::specta]
pub async fn audit_list(
    state: State<'_, AppState>,
    limit: u32,
) -> Result<Vec<AuditEntry>, ApiError> {
    blocking(&state, move |e| {
        e.inventory
            .audit_list(limit.min(10_000))
            .map_err(|e| ApiError::from(crate::ops::OpError::from(e)))
    })
    .await
}
