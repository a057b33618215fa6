//! Definition directories: versions, the editor, packages.

use super::{blocking, progress_to, AppState};
use crate::error::ApiError;
use crate::inventory::DefinitionVersion;
use crate::model::definition::DefinitionError;
use crate::ops::definitions::{DefinitionForm, DefinitionView};
use crate::ops::images::ImageProgress;
use tauri::ipc::Channel;
use tauri::State;

#[tauri::command]
#[specta::specta]
pub async fn def_list(state: State<'_, AppState>) -> Result<Vec<DefinitionVersion>, ApiError> {
    blocking(&state, |e| Ok(e.def_list()?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn def_show(
    state: State<'_, AppState>,
    name: String,
    version: Option<u32>,
) -> Result<DefinitionView, ApiError> {
    blocking(&state, move |e| Ok(e.def_show(&name, version)?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn def_history(
    state: State<'_, AppState>,
    name: String,
) -> Result<Vec<DefinitionVersion>, ApiError> {
    blocking(&state, move |e| Ok(e.def_history(&name)?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn def_diff(
    state: State<'_, AppState>,
    name: String,
    from: u32,
    to: u32,
) -> Result<Vec<String>, ApiError> {
    blocking(&state, move |e| Ok(e.def_diff(&name, from, to)?)).await
}

/// Checks a definition text as the editor's user types: the problems, none when valid.
#[tauri::command]
#[specta::specta]
pub fn def_check(text: String) -> Vec<DefinitionError> {
    crate::model::definition::parse_definition(crate::model::definition::FILE_NAME, &text)
        .err()
        .unwrap_or_default()
}

#[tauri::command]
#[specta::specta]
pub async fn def_create(
    state: State<'_, AppState>,
    form: DefinitionForm,
) -> Result<DefinitionVersion, ApiError> {
    blocking(&state, move |e| Ok(e.def_create_from_form(&form)?)).await
}

/// The editor's save. `base` is the version the editor loaded: when a newer one was saved
/// meanwhile (CLI, another window), the save is refused with code `conflict` and the changes.
#[tauri::command]
#[specta::specta]
pub async fn def_save(
    state: State<'_, AppState>,
    name: String,
    text: String,
    base: u32,
) -> Result<DefinitionVersion, ApiError> {
    blocking(&state, move |e| {
        Ok(e.def_set_text(&name, &text, Some(base))?)
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn def_add_packages(
    state: State<'_, AppState>,
    name: String,
    paths: Vec<String>,
    on_progress: Channel<ImageProgress>,
) -> Result<DefinitionVersion, ApiError> {
    let files: Vec<std::path::PathBuf> = paths.into_iter().map(Into::into).collect();
    let progress = progress_to(on_progress);
    // Copying GBs blocks: keep it off the async runtime.
    blocking(&state, move |e| {
        Ok(e.def_add_packages(&name, &files, progress)?)
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn def_remove_package(
    state: State<'_, AppState>,
    name: String,
    file: String,
) -> Result<DefinitionVersion, ApiError> {
    blocking(&state, move |e| Ok(e.def_remove_package(&name, &file)?)).await
}
