//! The monitor, the impact of failed hosts, and the fleet's live state.

use super::{blocking, AppState};
use crate::error::ApiError;
use tauri::State;

/// Whether a monitor watches the hosts (this app's own, or `flotillactl monitor`), its
/// thresholds and the detection time they imply, and whether it is frozen.
#[tauri::command]
#[specta::specta]
pub async fn monitor_status(
    state: State<'_, AppState>,
) -> Result<crate::ops::monitor::MonitorStatus, ApiError> {
    blocking(&state, |e| Ok(e.monitor_status()?)).await
}

/// What the hosts in `failed` failing does to the units (none: as they are), and the N+1
/// audit.
#[tauri::command]
#[specta::specta]
pub async fn impact(
    state: State<'_, AppState>,
    failed: Vec<String>,
) -> Result<crate::ops::impact::ImpactReport, ApiError> {
    blocking(&state, move |e| Ok(e.impact(&failed)?)).await
}

/// Everything the background live-state loop knows now (`None` before its first look); later
/// changes arrive as `live-state` events with a higher `seq`.
#[tauri::command]
#[specta::specta]
pub async fn live_snapshot(
    state: State<'_, AppState>,
) -> Result<Option<crate::ops::live::LiveDelta>, ApiError> {
    state.engine()?;
    Ok(state.live.snapshot())
}
