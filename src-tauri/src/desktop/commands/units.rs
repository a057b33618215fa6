//! Units: register, plan, run, update, policy, history, live state and search.

use super::{blocking, steps_to, AppState};
use crate::error::ApiError;
use crate::inventory::Unit;
use crate::ops::units::{OpPlan, OpReport, StepEvent, UnitAction, UnitCreated, UnitForm};
use tauri::ipc::Channel;
use tauri::State;

#[tauri::command]
#[specta::specta]
pub async fn unit_list(state: State<'_, AppState>) -> Result<Vec<Unit>, ApiError> {
    blocking(&state, |e| Ok(e.unit_list()?)).await
}

/// Registers a unit; with `plan` (the fingerprint of the review the admin saw), only when
/// the servers would still be those.
#[tauri::command]
#[specta::specta]
pub async fn unit_create(
    state: State<'_, AppState>,
    form: UnitForm,
    plan: Option<String>,
) -> Result<UnitCreated, ApiError> {
    blocking(&state, move |e| {
        Ok(e.unit_create_planned(&form, plan.as_deref())?)
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn unit_preview(state: State<'_, AppState>, form: UnitForm) -> Result<OpPlan, ApiError> {
    blocking(&state, move |e| Ok(e.unit_preview(&form)?)).await
}

/// The size a unit of `definition` (`DEF:VERSION`) gets unless the admin changes it: the
/// wizard's first values.
#[tauri::command]
#[specta::specta]
pub async fn unit_default_size(
    state: State<'_, AppState>,
    definition: String,
) -> Result<crate::model::ServerSize, ApiError> {
    blocking(&state, move |e| Ok(e.unit_default_size(&definition)?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn unit_live(
    state: State<'_, AppState>,
    name: String,
) -> Result<Vec<crate::ops::units::ServerLive>, ApiError> {
    Ok(state.engine()?.unit_live(&name).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn unit_plan(
    state: State<'_, AppState>,
    name: String,
    action: UnitAction,
) -> Result<OpPlan, ApiError> {
    blocking(&state, move |e| Ok(e.unit_plan(&name, &action)?)).await
}

/// Runs an action to its end, sending every step transition to `on_step`. A failed operation
/// is an error whose message is the report (what failed, what was undone) and whose `report`
/// is the report itself. With `plan` (the fingerprint of the plan the admin confirmed),
/// nothing runs when the plan changed since: the error's code is `plan_changed` and its
/// `plan` the plan as it is now.
#[tauri::command]
#[specta::specta]
pub async fn unit_run(
    state: State<'_, AppState>,
    name: String,
    action: UnitAction,
    plan: Option<String>,
    on_step: Channel<StepEvent>,
) -> Result<OpReport, ApiError> {
    let ran = state
        .engine()?
        .unit_run_planned(&name, action, plan.as_deref(), steps_to(on_step))
        .await;
    // The servers changed: the views hear of it now, not at the next round.
    state.live.wake();
    ran.map_err(ApiError::with_outcome)
}

/// Records the unit's next version as pending (the Update wizard); the unit keeps serving.
#[tauri::command]
#[specta::specta]
pub async fn unit_update(
    state: State<'_, AppState>,
    name: String,
    form: crate::ops::units::UnitUpdate,
) -> Result<crate::inventory::UnitVersion, ApiError> {
    blocking(&state, move |e| Ok(e.unit_update(&name, &form)?)).await
}

/// The unit's versions, newest first, with what changed in each.
#[tauri::command]
#[specta::specta]
pub async fn unit_history(
    state: State<'_, AppState>,
    name: String,
) -> Result<Vec<crate::ops::units::UnitVersionEntry>, ApiError> {
    blocking(&state, move |e| Ok(e.unit_history(&name)?)).await
}

/// Asks the unit's running rollout to pause at its next safe point (between batches).
#[tauri::command]
#[specta::specta]
pub async fn unit_pause(state: State<'_, AppState>, name: String) -> Result<i64, ApiError> {
    blocking(&state, move |e| Ok(e.unit_pause(&name)?)).await
}

/// Sets the unit's policy (checked first): rollouts, restarts and stops of chosen servers.
#[tauri::command]
#[specta::specta]
pub async fn unit_set_policy(
    state: State<'_, AppState>,
    name: String,
    policy: crate::model::RolloutPolicy,
) -> Result<crate::model::RolloutPolicy, ApiError> {
    blocking(&state, move |e| Ok(e.unit_set_policy(&name, &policy)?)).await
}

/// The servers a search of the Units view finds, per unit (see `model::search`).
#[tauri::command]
#[specta::specta]
pub async fn unit_search(
    state: State<'_, AppState>,
    query: String,
) -> Result<Vec<crate::ops::live::UnitHits>, ApiError> {
    blocking(&state, move |e| Ok(e.unit_search(&query)?)).await
}
