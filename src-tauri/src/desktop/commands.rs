//! The commands the front end invokes. Each one: parse → call the engine → map the error.
//!
//! Tauri runs a plain `fn` command on the window's main thread, so anything that waits on disk
//! (the inventory, files, processes), libvirt, a load balancer or the network is an `async fn`
//! and never freezes the window. Engine calls that block are run by [`blocking`] on the
//! blocking thread pool, not on an async worker. Only pure commands stay `fn`
//! (`sync_commands_are_only_the_pure_ones` in `desktop/mod.rs` holds the list).

use super::AppState;
use crate::error::{ApiError, ErrorCode};
use crate::inventory::AuditEntry;
use crate::model::Host;
use crate::ops::bmc::{BmcInput, BmcStatus};
use crate::ops::hosts::{HostInput, HostKeyInfo, HostProbe, HostTarget};
use crate::ops::Engine;
use serde::{Deserialize, Serialize};
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

// ---- Images and builders -------------------------------------------------------------------

use crate::model::{Builder, ImageVersion};
use crate::ops::builder::{BuildFrom, BuildRequest, CaptureRequest};
use crate::ops::images::{BootInput, EnsureOutcome, ImageProgress, ImportRequest, ProgressFn};
use std::sync::Arc;
use tauri::ipc::Channel;

fn progress_to(channel: Channel<ImageProgress>) -> ProgressFn {
    Arc::new(move |p| {
        // The window may be gone; the operation goes on regardless.
        let _ = channel.send(p);
    })
}

#[tauri::command]
#[specta::specta]
pub async fn image_list(state: State<'_, AppState>) -> Result<Vec<ImageVersion>, ApiError> {
    blocking(&state, |e| Ok(e.image_list()?)).await
}

#[derive(Debug, Deserialize, specta::Type)]
pub struct ImageImportRequest {
    pub image: String,
    pub path: String,
    pub notes: String,
    /// `bios` or `uefi` for images that boot from their disk.
    pub firmware: String,
    /// Direct kernel boot instead: kernel, initrd and command line.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

#[tauri::command]
#[specta::specta]
pub async fn image_import(
    state: State<'_, AppState>,
    request: ImageImportRequest,
    on_progress: Channel<ImageProgress>,
) -> Result<ImageVersion, ApiError> {
    let boot = match request.kernel.filter(|k| !k.trim().is_empty()) {
        Some(kernel) => BootInput::Kernel {
            kernel: kernel.into(),
            initrd: request
                .initrd
                .filter(|i| !i.trim().is_empty())
                .map(Into::into),
            cmdline: request.cmdline.unwrap_or_default(),
        },
        None => BootInput::Disk(match request.firmware.as_str() {
            "uefi" => crate::model::Firmware::Uefi,
            _ => crate::model::Firmware::Bios,
        }),
    };
    let req = ImportRequest {
        image: request.image,
        file: request.path.into(),
        notes: request.notes,
        boot,
    };
    Ok(state
        .engine()?
        .image_import(&req, progress_to(on_progress))
        .await?)
}

#[tauri::command]
#[specta::specta]
pub async fn image_ensure(
    state: State<'_, AppState>,
    image: String,
    host: String,
    on_progress: Channel<ImageProgress>,
) -> Result<EnsureOutcome, ApiError> {
    Ok(state
        .engine()?
        .image_ensure(&image, &host, progress_to(on_progress))
        .await?)
}

#[tauri::command]
#[specta::specta]
pub async fn image_delete(state: State<'_, AppState>, image: String) -> Result<(), ApiError> {
    Ok(state.engine()?.image_delete(&image).await?)
}

#[derive(Debug, Serialize, specta::Type)]
pub struct BuilderView {
    pub builder: Builder,
    /// `127.0.0.1:5900` on the builder's host, while it runs.
    pub console: Option<String>,
    pub host_uri: String,
}

#[tauri::command]
#[specta::specta]
pub async fn builder_list(state: State<'_, AppState>) -> Result<Vec<BuilderView>, ApiError> {
    let engine = state.engine()?;
    let mut out = Vec::new();
    for b in engine.builder_list()? {
        // An unreachable host must not hide the builder: its console is then unknown.
        let console = engine.builder_console(&b).await.ok().flatten();
        let host_uri = engine.host_show(b.host.as_str())?.uri.to_string();
        out.push(BuilderView {
            builder: b,
            console,
            host_uri,
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize, specta::Type)]
pub struct ImageBuildRequest {
    pub image: String,
    pub host: String,
    /// `NAME` or `NAME:VERSION` of a library version; or `iso` instead.
    pub from: Option<String>,
    pub iso: Option<String>,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Bytes; none: the base's size (10 GiB for an installer).
    pub disk_gib: Option<u32>,
    /// Shell commands the builder runs at first boot, one per line.
    pub script: String,
    /// `kvm` or `qemu`.
    pub virt_type: String,
}

#[tauri::command]
#[specta::specta]
pub async fn image_build(
    state: State<'_, AppState>,
    request: ImageBuildRequest,
    on_progress: Channel<ImageProgress>,
) -> Result<Builder, ApiError> {
    let from = match (
        request.from.filter(|f| !f.trim().is_empty()),
        request.iso.filter(|i| !i.trim().is_empty()),
    ) {
        (Some(f), _) => BuildFrom::Version(f),
        (None, Some(iso)) => BuildFrom::Iso(iso.into()),
        (None, None) => {
            return Err(ApiError::new(
                crate::error::ErrorCode::InvalidInput,
                "choose a library version or an installer ISO to start from",
            ))
        }
    };
    let req = BuildRequest {
        image: request.image,
        host: request.host,
        from,
        cpus: request.cpus,
        memory_mib: u64::from(request.memory_mib),
        disk_bytes: request.disk_gib.map(|g| u64::from(g) << 30),
        script: crate::ops::builder::script_lines(&request.script),
        address: None,
        domain_type: if request.virt_type == "kvm" {
            crate::hypervisor::DomainType::Kvm
        } else {
            crate::hypervisor::DomainType::Qemu
        },
    };
    Ok(state
        .engine()?
        .image_build(&req, progress_to(on_progress))
        .await?)
}

#[tauri::command]
#[specta::specta]
#[allow(clippy::too_many_arguments)]
pub async fn image_capture(
    state: State<'_, AppState>,
    image: String,
    seal_cloud_init: bool,
    seal_sysprep: bool,
    force: bool,
    timeout_secs: u32,
    notes: String,
    on_progress: Channel<ImageProgress>,
) -> Result<ImageVersion, ApiError> {
    let req = CaptureRequest {
        image,
        seal_cloud_init,
        seal_sysprep,
        force,
        shutdown_timeout: std::time::Duration::from_secs(u64::from(timeout_secs.clamp(1, 86_400))),
        notes,
    };
    Ok(state
        .engine()?
        .image_capture(&req, progress_to(on_progress))
        .await?)
}

#[tauri::command]
#[specta::specta]
pub async fn builder_abort(state: State<'_, AppState>, image: String) -> Result<(), ApiError> {
    Ok(state.engine()?.builder_abort(&image).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn builder_serial(state: State<'_, AppState>, image: String) -> Result<String, ApiError> {
    Ok(state.engine()?.builder_serial(&image, 16 * 1024).await?)
}

/// Optional tools found on this machine (the UI shows their buttons only when present).
#[derive(Debug, Serialize, specta::Type)]
pub struct Tools {
    pub virt_viewer: bool,
    pub virt_sysprep: bool,
}

#[tauri::command]
#[specta::specta]
pub async fn tools() -> Tools {
    let found = |tool: &'static str| async move {
        tauri::async_runtime::spawn_blocking(move || crate::library::tool_available(tool))
            .await
            .unwrap_or(false)
    };
    Tools {
        virt_viewer: found("virt-viewer").await,
        virt_sysprep: found("virt-sysprep").await,
    }
}

/// Opens the builder's graphical console. On a `qemu+ssh` host: forwarded through SSH (the
/// host key checked against Flotilla's file, as virt-manager tunnels consoles) and opened with
/// remote-viewer, the tunnel closed when the viewer exits. Elsewhere with virt-viewer, which
/// reaches the host through the libvirt URI itself.
#[tauri::command]
#[specta::specta]
pub async fn builder_open_console(
    state: State<'_, AppState>,
    image: String,
) -> Result<(), ApiError> {
    let engine = state.engine()?;
    let cannot = |what: &str, e: std::io::Error| {
        ApiError::new(ErrorCode::Internal, format!("cannot start {what}: {e}"))
    };
    if let Some(tunnel) = engine.builder_console_tunnel(&image).await? {
        let mut viewer = std::process::Command::new("remote-viewer")
            .arg(format!("vnc://{}", tunnel.local))
            .spawn()
            .map_err(|e| cannot("remote-viewer (package virt-viewer)", e))?;
        std::thread::spawn(move || {
            let _ = viewer.wait();
            drop(tunnel);
        });
        return Ok(());
    }
    let b = engine.builder_show(&image)?;
    let uri = engine.host_show(b.host.as_str())?.uri;
    let mut viewer = std::process::Command::new("virt-viewer")
        .args(["--connect", uri.as_str(), &b.domain])
        .spawn()
        .map_err(|e| cannot("virt-viewer", e))?;
    // Reaped when it exits (no zombie left while the app runs).
    std::thread::spawn(move || viewer.wait());
    Ok(())
}

// ---- Definition directories ----------------------------------------------------------------

use crate::inventory::DefinitionVersion;
use crate::model::definition::DefinitionError;
use crate::ops::definitions::{DefinitionForm, DefinitionView};

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

// Units, load balancers and the operation journal.

use crate::inventory::{LbInstance, Operation, Unit};
use crate::ops::lbs::{LbCheck, LbTarget, ReconcileReport};
use crate::ops::units::{
    Interrupted, OpPlan, OpReport, StepEvent, StepFn, UnitAction, UnitCreated, UnitForm,
};

fn steps_to(channel: Channel<StepEvent>) -> StepFn {
    Arc::new(move |e| {
        let _ = channel.send(e);
    })
}

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
pub async fn unit_plan(
    state: State<'_, AppState>,
    name: String,
    action: UnitAction,
) -> Result<OpPlan, ApiError> {
    blocking(&state, move |e| Ok(e.unit_plan(&name, &action)?)).await
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

/// Asks the unit's running rollout to pause at its next safe point (between batches).
#[tauri::command]
#[specta::specta]
pub async fn unit_pause(state: State<'_, AppState>, name: String) -> Result<i64, ApiError> {
    blocking(&state, move |e| Ok(e.unit_pause(&name)?)).await
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

/// Runs an action to its end, sending every step transition to `on_step`. A failed operation
/// is an error whose message is the report (what failed, what was undone). With `plan` (the
/// fingerprint of the plan the admin confirmed), nothing runs when the plan changed since:
/// the error's code is `plan_changed`.
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
    Ok(ran?)
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
    blocking(&state, move |e| {
        Ok(e.host_set_network(&name, &network, &gateway, &domain_type)?)
    })
    .await
}

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

/// The log lines of an operation (read from the log files: off the async runtime).
#[tauri::command]
#[specta::specta]
pub async fn operation_log(state: State<'_, AppState>, id: i64) -> Result<Vec<String>, ApiError> {
    let engine = state.engine()?;
    tokio::task::spawn_blocking(move || engine.operation_log(id))
        .await
        .map_err(|e| {
            ApiError::new(
                crate::error::ErrorCode::Internal,
                format!("reading the log failed: {e}"),
            )
        })
}

#[tauri::command]
#[specta::specta]
pub async fn operation_interrupted(
    state: State<'_, AppState>,
) -> Result<Vec<Interrupted>, ApiError> {
    blocking(&state, |e| Ok(e.interrupted_operations()?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn operation_resume(
    state: State<'_, AppState>,
    id: i64,
    on_step: Channel<StepEvent>,
) -> Result<OpReport, ApiError> {
    Ok(state
        .engine()?
        .operation_resume(id, steps_to(on_step))
        .await?)
}

#[tauri::command]
#[specta::specta]
pub async fn operation_unwind(
    state: State<'_, AppState>,
    id: i64,
    on_step: Channel<StepEvent>,
) -> Result<OpReport, ApiError> {
    Ok(state
        .engine()?
        .operation_unwind(id, steps_to(on_step))
        .await?)
}

#[tauri::command]
#[specta::specta]
pub async fn unit_preview(state: State<'_, AppState>, form: UnitForm) -> Result<OpPlan, ApiError> {
    blocking(&state, move |e| Ok(e.unit_preview(&form)?)).await
}

#[tauri::command]
#[specta::specta]
pub async fn unit_live(
    state: State<'_, AppState>,
    name: String,
) -> Result<Vec<crate::ops::units::ServerLive>, ApiError> {
    Ok(state.engine()?.unit_live(&name).await?)
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

/// The hosts a search of the Hosts view finds.
#[tauri::command]
#[specta::specta]
pub async fn host_search(
    state: State<'_, AppState>,
    query: String,
) -> Result<Vec<String>, ApiError> {
    blocking(&state, move |e| Ok(e.host_search(&query)?)).await
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
