//! The desktop shell: Tauri commands and app start-up. Thin — every command parses its input
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
            commands::host_list,
            commands::host_probe,
            commands::host_key,
            commands::host_key_accept,
            commands::host_add,
            commands::host_check,
            commands::host_remove,
            commands::host_set_bmc,
            commands::host_bmc_check,
            commands::bmc_probe,
            commands::audit_list,
            commands::image_list,
            commands::image_import,
            commands::image_ensure,
            commands::image_delete,
            commands::builder_list,
            commands::image_build,
            commands::image_capture,
            commands::builder_abort,
            commands::builder_serial,
            commands::builder_open_console,
            commands::tools,
            commands::def_list,
            commands::def_show,
            commands::def_history,
            commands::def_diff,
            commands::def_check,
            commands::def_create,
            commands::def_save,
            commands::def_add_packages,
            commands::def_remove_package,
            commands::unit_list,
            commands::unit_create,
            commands::unit_preview,
            commands::unit_default_size,
            commands::unit_live,
            commands::unit_plan,
            commands::unit_run,
            commands::unit_update,
            commands::unit_history,
            commands::unit_pause,
            commands::unit_set_policy,
            commands::impact,
            commands::monitor_status,
            commands::host_set_network,
            commands::lb_list,
            commands::lb_add,
            commands::lb_check,
            commands::lb_reconcile,
            commands::lb_remove,
            commands::operation_list,
            commands::operation_interrupted,
            commands::operation_log,
            commands::operation_resume,
            commands::operation_unwind,
            commands::unit_search,
            commands::host_search,
            commands::live_snapshot,
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
        let source = include_str!("commands.rs");
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
        // Every registered command is in commands.rs, so none escaped the check.
        let registered = include_str!("mod.rs")
            .lines()
            .filter(|l| l.trim().starts_with("commands::"))
            .count();
        assert_eq!(commands, registered);
    }
}
