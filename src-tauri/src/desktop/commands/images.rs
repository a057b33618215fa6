//! Images and builders: the library, copies on hosts, builder VMs and their consoles.

use super::{blocking, progress_to, AppState};
use crate::error::{ApiError, ErrorCode};
use crate::model::{Builder, ImageVersion};
use crate::ops::builder::{BuildRequest, CaptureRequest};
use crate::ops::images::{EnsureOutcome, ImageProgress, ImportRequest};
use crate::ops::requests::{boot_input, build_from, builder_domain_type, BuilderView};
use serde::{Deserialize, Serialize};
use tauri::ipc::Channel;
use tauri::State;

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
    // A blank field of the form is no value.
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty()).map(Into::into);
    let boot = boot_input(
        &request.firmware,
        given(request.kernel),
        given(request.initrd),
        request.cmdline,
    );
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

#[tauri::command]
#[specta::specta]
pub async fn builder_list(state: State<'_, AppState>) -> Result<Vec<BuilderView>, ApiError> {
    let engine = state.engine()?;
    let mut out = Vec::new();
    for b in engine.builder_list()? {
        out.push(engine.builder_view(b).await?);
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
    let Some(from) = build_from(
        request.from.filter(|f| !f.trim().is_empty()),
        request.iso.filter(|i| !i.trim().is_empty()).map(Into::into),
    ) else {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            "choose a library version or an installer ISO to start from",
        ));
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
        domain_type: builder_domain_type(&request.virt_type),
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
