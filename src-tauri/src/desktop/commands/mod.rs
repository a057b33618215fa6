//! The commands the front end invokes, one file per resource. Each one: parse → call the
//! engine → map the error.
//!
//! Tauri runs a plain `fn` command on the window's main thread, so anything that waits on disk
//! (the inventory, files, processes), libvirt, a load balancer or the network is an `async fn`
//! and never freezes the window. Engine calls that block are run by [`blocking`] on the
//! blocking thread pool, not on an async worker. Only pure commands stay `fn`
//! (`sync_commands_are_only_the_pure_ones` in `desktop/mod.rs` holds the list).

pub(super) mod definitions;
pub(super) mod hosts;
pub(super) mod images;
pub(super) mod lbs;
pub(super) mod monitor;
pub(super) mod operations;
pub(super) mod units;

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::ops::images::{ImageProgress, ProgressFn};
use crate::ops::units::{StepEvent, StepFn};
use crate::ops::Engine;
use serde::Serialize;
use std::sync::Arc;
use tauri::ipc::Channel;
use tauri::State;

/// Runs blocking engine work (SQLite, files, child processes) on the blocking thread pool.
async fn blocking<T, F>(state: &State<'_, AppState>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
{
    let engine = state.engine()?;
    tauri::async_runtime::spawn_blocking(move || work(&engine))
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("a background task failed: {e}"),
            )
        })?
}

fn progress_to(channel: Channel<ImageProgress>) -> ProgressFn {
    Arc::new(move |p| {
        // The window may be gone; the operation goes on regardless.
        let _ = channel.send(p);
    })
}

fn steps_to(channel: Channel<StepEvent>) -> StepFn {
    Arc::new(move |e| {
        let _ = channel.send(e);
    })
}

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
