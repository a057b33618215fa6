//! The desktop shell: Tauri commands (`commands/`, one file per resource) and app start-up. Thin — every command parses its input
//! and calls the engine (`ops/`); errors cross the boundary as [`ApiError`].

mod commands;

use crate::error::ApiError;
use crate::ops::{resolve_data_dir, Engine};
use std::sync::Arc;

/// The engine, or why it could not be opened (shown by the UI instead of crashing).
pub(crate) struct AppState {
    engine: Result<Arc<Engine>, ApiError>,
    data_dir: String,
    live: Arc<LiveHub>,
}

/// The latest live state of the fleet, and a bell that starts the next look early.
#[derive(Default)]
pub(crate) struct LiveHub {
    feed: std::sync::Mutex<crate::ops::live::LiveFeed>,
    bell: tokio::sync::Notify,
}

impl LiveHub {
    pub(crate) fn snapshot(&self) -> Option<crate::ops::live::LiveDelta> {
        self.feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()
    }

    /// Asks the live loop to look again now (after an operation changed servers).
    pub(crate) fn wake(&self) {
        self.bell.notify_one();
    }
}

impl AppState {
    fn open() -> Self {
        let dir = resolve_data_dir(None);
        let data_dir = dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let engine = dir.and_then(|d| {
            if let Err(e) = crate::logging::init(&d, false) {
                eprintln!("flotilla: no log file ({e}); going on without one");
            }
            Engine::open(&d, "gui")
                .map(Arc::new)
                .map_err(ApiError::from)
        });
        Self {
            engine,
            data_dir,
            live: Arc::default(),
        }
    }

    pub(crate) fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        self.engine.clone()
    }
}

/// The command list and type exporter shared by the app and the bindings check.
pub fn bindings_builder() -> tauri_specta::Builder<tauri::Wry> {
    tauri_specta::Builder::<tauri::Wry>::new()
        .commands(tauri_specta::collect_commands![
            commands::app_info,
            commands::hosts::host_list,
            commands::hosts::host_probe,
            commands::hosts::host_key,
            commands::hosts::host_key_accept,
            commands::hosts::host_add,
            commands::hosts::host_check,
            commands::hosts::host_remove,
            commands::hosts::host_set_bmc,
            commands::hosts::host_bmc_check,
            commands::hosts::bmc_probe,
            commands::operations::audit_list,
            commands::images::image_list,
            commands::images::image_import,
            commands::images::image_ensure,
            commands::images::image_delete,
            commands::images::builder_list,
            commands::images::image_build,
            commands::images::image_capture,
            commands::images::builder_abort,
            commands::images::builder_serial,
            commands::images::builder_open_console,
            commands::images::tools,
            commands::definitions::def_list,
            commands::definitions::def_show,
            commands::definitions::def_history,
            commands::definitions::def_diff,
            commands::definitions::def_check,
            commands::definitions::def_create,
            commands::definitions::def_save,
            commands::definitions::def_add_packages,
            commands::definitions::def_remove_package,
            commands::units::unit_list,
            commands::units::unit_create,
            commands::units::unit_preview,
            commands::units::unit_default_size,
            commands::units::unit_live,
            commands::units::unit_plan,
            commands::units::unit_run,
            commands::units::unit_update,
            commands::units::unit_history,
            commands::units::unit_pause,
            commands::units::unit_set_policy,
            commands::monitor::impact,
            commands::monitor::monitor_status,
            commands::hosts::host_set_network,
            commands::lbs::lb_list,
            commands::lbs::lb_add,
            commands::lbs::lb_check,
            commands::lbs::lb_reconcile,
            commands::lbs::lb_remove,
            commands::operations::operation_list,
            commands::operations::operation_interrupted,
            commands::operations::operation_log,
            commands::operations::operation_resume,
            commands::operations::operation_unwind,
            commands::units::unit_search,
            commands::hosts::host_search,
            commands::monitor::live_snapshot,
        ])
        .events(tauri_specta::collect_events![
            HostStateEvent,
            LiveStateEvent
        ])
        // Byte counts fit easily in a JS number (2^53 bytes = 8 PiB).
        .dangerously_cast_bigints_to_number()
        // Our types serialize the same way in both directions: one TS type each.
        .disable_serde_phases()
}

/// What the app's monitor reports (a host's state changed, the fleet froze, …), sent to the
/// front end as the event `host-state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, specta::Type, tauri_specta::Event)]
#[tauri_specta(event_name = "host-state")]
pub struct HostStateEvent(pub crate::monitor::MonitorEvent);

/// What changed in the fleet's live state (power, load balancer) since the last event, sent
/// as the event `live-state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, specta::Type, tauri_specta::Event)]
#[tauri_specta(event_name = "live-state")]
pub struct LiveStateEvent(pub crate::ops::live::LiveDelta);

/// How often the live loop looks at every host when nothing rings its bell.
const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// When the live loop first looks, after the app started.
const LIVE_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// Looks at the whole fleet (one domain listing per host, all hosts at once) every
/// [`LIVE_EVERY`] or when an operation ends, and sends the views what changed. The views never
/// poll a host themselves.
fn start_live(app: tauri::AppHandle, engine: Arc<Engine>, hub: Arc<LiveHub>) {
    use tauri_specta::Event as _;
    tauri::async_runtime::spawn(async move {
        // The first view is drawn from the inventory; the first look at the hosts waits for
        // it (a second) rather than compete with it for the CPU.
        tokio::select! {
            () = tokio::time::sleep(LIVE_FIRST) => {}
            () = hub.bell.notified() => {}
        }
        loop {
            match engine.fleet_live().await {
                Ok(now) => {
                    let delta = hub
                        .feed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .update(now);
                    if let Some(d) = delta {
                        if let Err(e) = LiveStateEvent(d).emit(&app) {
                            tracing::warn!(error = %e, "cannot send live state to the window");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the fleet's live state"),
            }
            tokio::select! {
                () = tokio::time::sleep(LIVE_EVERY) => {}
                () = hub.bell.notified() => {}
            }
        }
    });
}

/// Runs the monitor in the background for as long as the app runs, with the default
/// thresholds; every event goes to the front end. While another process monitors this
/// inventory (`flotillactl monitor` as a service) it stands by.
fn start_monitor(app: tauri::AppHandle, engine: Arc<Engine>) {
    use tauri_specta::Event as _;
    tauri::async_runtime::spawn(async move {
        let handle = app.clone();
        let report = move |ev: crate::monitor::MonitorEvent| {
            if let crate::monitor::MonitorEvent::Problem { what, .. } = &ev {
                tracing::warn!(what = %what, "monitor");
            }
            if let Err(e) = HostStateEvent(ev).emit(&handle) {
                tracing::warn!(error = %e, "cannot send a monitor event to the window");
            }
        };
        let ran = engine
            .monitor_with_recovery(
                crate::monitor::Thresholds::default(),
                "gui",
                &report,
                std::future::pending::<()>(),
            )
            .await;
        if let Err(e) = ran {
            tracing::error!(error = %e, "the monitor stopped");
        }
    });
}

/// Writes the TypeScript bindings for the commands to `path`.
pub fn export_bindings(path: &std::path::Path) -> Result<(), String> {
    bindings_builder()
        .export(
            specta_typescript::Typescript::default().header("// Generated by `cargo test -p flotilla bindings` from src-tauri/src/desktop. Do not edit.\n/* eslint-disable */\n"),
            path,
        )
        .map_err(|e| e.to_string())
}

/// Starts the desktop app.
pub fn run() {
    let builder = bindings_builder();
    let state = AppState::open();
    // Without an inventory there is nothing to monitor (the window says why).
    let engine = state.engine().ok();
    let hub = state.live.clone();
    let result = tauri::Builder::default()
        .manage(state)
        .invoke_handler(builder.invoke_handler())
        .setup(move |app| {
            builder.mount_events(app);
            if let Some(engine) = engine {
                start_monitor(app.handle().clone(), engine.clone());
                start_live(app.handle().clone(), engine, hub);
            }
            Ok(())
        })
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("flotilla: the desktop app could not start: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The committed bindings must match the Rust command signatures. Run with
    /// FLOTILLA_UPDATE_BINDINGS=1 to rewrite them after changing a command.
    #[test]
    fn bindings_are_current() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings.ts");
        if std::env::var_os("FLOTILLA_UPDATE_BINDINGS").is_some() {
            super::export_bindings(&committed).unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("bindings.ts");
        super::export_bindings(&fresh).unwrap();
        let fresh = std::fs::read_to_string(fresh).unwrap();
        let old = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            fresh == old,
            "ui/src/lib/bindings.ts is out of date; run FLOTILLA_UPDATE_BINDINGS=1 cargo test -p flotilla bindings_are_current"
        );
    }

    /// Tauri runs a plain `fn` command on the window's main thread: while it waits (the
    /// inventory, a file, libvirt, a load balancer) the window freezes. Only commands that do
    /// no I/O at all may be plain `fn`s; every other one is `async` (or `command(async)`).
    /// Adding a sync command fails here until it is added to the list, on purpose.
    #[test]
    fn sync_commands_are_only_the_pure_ones() {
        // app_info: copies fields of the state. def_check: parses the text it is given.
        const PURE: [&str; 2] = ["app_info", "def_check"];
        let source = [
            include_str!("commands/mod.rs"),
            include_str!("commands/hosts.rs"),
            include_str!("commands/images.rs"),
            include_str!("commands/definitions.rs"),
            include_str!("commands/units.rs"),
            include_str!("commands/lbs.rs"),
            include_str!("commands/operations.rs"),
            include_str!("commands/monitor.rs"),
        ]
        .concat();
        let mut lines = source.lines().map(str::trim);
        let (mut commands, mut sync) = (0, Vec::new());
        while let Some(line) = lines.next() {
            if !line.starts_with("#[tauri::command") {
                continue;
            }
            commands += 1;
            let runs_on_pool = line.contains("async");
            let signature = lines
                .by_ref()
                .find(|l| l.starts_with("pub "))
                .expect("a function after #[tauri::command]");
            if let Some(rest) = signature.strip_prefix("pub fn ") {
                if !runs_on_pool {
                    sync.push(rest.split('(').next().unwrap_or(rest));
                }
            } else {
                assert!(signature.starts_with("pub async fn "), "{signature}");
            }
        }
        assert_eq!(sync, PURE, "commands that run on the main thread");
        // Every registered command is in commands/, so none escaped the check.
        let registered = include_str!("mod.rs")
            .lines()
            .filter(|l| l.trim().starts_with("commands::"))
            .count();
        assert_eq!(commands, registered);
    }
}
