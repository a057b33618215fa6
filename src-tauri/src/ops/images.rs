//! Master images: import into the library, list, show, ensure a version on a host, delete.
//!
//! `image_import`: validate → read the file's header and refuse a qcow2 that names another
//! file (external data file, backing file through a protocol or outside the library) → probe
//! it (qemu-img, explicit format, resource limits) and refuse what is not a sound disk image →
//! check free space → convert into a flattened qcow2 `.partial` file in the library
//! (streamed, with progress) → sha256 → make it read-only under its final name → record the
//! version. A failure at any step removes the partial file; nothing is recorded.
//!
//! `image_ensure`: a version is on a host when the inventory has a verified copy whose volume
//! still exists. Otherwise: remove a leftover volume of an interrupted upload → upload through a
//! libvirt storage stream → read it back and compare sha256 → record the copy.

use super::exec::{Dir, Sequence};
use super::{Engine, OpError};
use crate::inventory::{InventoryError, PinMode};
use crate::library;
use crate::model::{
    BootMode, Firmware, Host, HostName, ImageName, ImageRef, ImageVersion, NewImageVersion,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Progress of a long image operation, for progress bars.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ImageProgress {
    /// `checking`, `copying`, `checksumming`, `uploading`, `verifying`.
    pub phase: String,
    pub done: u64,
    pub total: u64,
}

pub type ProgressFn = Arc<dyn Fn(ImageProgress) + Send + Sync>;

/// How an imported version boots.
#[derive(Debug, Clone)]
pub enum BootInput {
    Disk(Firmware),
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub image: String,
    pub file: PathBuf,
    pub notes: String,
    pub boot: BootInput,
}

/// What `image_ensure` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct EnsureOutcome {
    pub image: ImageName,
    pub version: u32,
    pub host: HostName,
    pub volume: String,
    pub path: String,
    /// 0 when the host already had a verified copy.
    pub bytes_copied: u64,
}

const MAX_NOTES: usize = 4096;

fn phase(progress: &ProgressFn, name: &str, done: u64, total: u64) {
    progress(ImageProgress {
        phase: name.into(),
        done,
        total,
    });
}

/// Copies a kernel or initrd into the library next to the version (read-only).
pub(super) fn copy_boot_file(src: &Path, dest: &Path) -> Result<(), library::LibraryError> {
    let meta = std::fs::metadata(src).map_err(|source| library::LibraryError::Unreadable {
        path: src.to_owned(),
        source,
    })?;
    if !meta.is_file() || meta.len() == 0 {
        return Err(library::LibraryError::NotAnImage {
            path: src.to_owned(),
            reason: "is not a non-empty regular file".into(),
        });
    }
    let partial = dest.with_extension("partial");
    let write_err = |source| library::LibraryError::Write {
        path: partial.clone(),
        source,
    };
    // Not fs::copy: that would give the copy the source's mode (often world-readable).
    let mut out = crate::files::private_file(&partial).map_err(write_err)?;
    let copied = std::fs::File::open(src)
        .and_then(|mut input| std::io::copy(&mut input, &mut out))
        .and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(write_err(e));
    }
    library::seal_into_place(&partial, dest)
}

impl Engine {
    pub async fn image_import(
        &self,
        req: &ImportRequest,
        progress: ProgressFn,
    ) -> Result<ImageVersion, OpError> {
        let outcome = self.image_import_inner(req, progress).await;
        self.audit("image.import", &format!("image/{}", req.image), &outcome);
        outcome
    }

    async fn image_import_inner(
        &self,
        req: &ImportRequest,
        progress: ProgressFn,
    ) -> Result<ImageVersion, OpError> {
        let image = ImageName::parse(req.image.trim())?;
        if req.notes.len() > MAX_NOTES || req.notes.chars().any(|c| c.is_control() && c != '\n') {
            return Err(crate::model::ValidationError::new(
                "notes",
                format!("at most {MAX_NOTES} bytes of text"),
            )
            .into());
        }
        if let BootInput::Kernel { cmdline, .. } = &req.boot {
            if cmdline.len() > 2048 || cmdline.chars().any(char::is_control) {
                return Err(crate::model::ValidationError::new(
                    "cmdline",
                    "the kernel command line must be one line of at most 2048 bytes",
                )
                .into());
            }
        }
        // Held until the version is recorded (or its files removed): another import or
        // capture of this name, in any process, waits (`library::lock_image`).
        let _lock = self.image_lock(&image, &progress).await?;
        let version = self.inventory.image_next_version(&image)?;
        let dir = self.library.join(image.as_str());
        let (req, library_root) = (req.clone(), self.library.clone());
        let image_for_work = image.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<NewImageVersion, OpError> {
            let image = image_for_work;
            phase(&progress, "checking", 0, 1);
            // Both refuse before anything is written: a refused file leaves no folder behind.
            let probe = library::probe(&req.file)?;
            library::check_importable(&req.file, &probe, &library_root)?;
            crate::files::private_dir_all(&dir).map_err(|source| library::LibraryError::Write {
                path: dir.clone(),
                source,
            })?;
            library::remove_partials(&dir);
            library::ensure_space(&dir, probe.actual_size.max(1 << 20))?;
            let file_name = format!("v{version}.qcow2");
            let partial = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
            let total = probe.virtual_size;
            let result = (|| -> Result<NewImageVersion, OpError> {
                library::convert_to_qcow2(&req.file, &probe.format, &partial, &|pct| {
                    phase(
                        &progress,
                        "copying",
                        (pct / 100.0 * total as f64) as u64,
                        total,
                    )
                })?;
                let sha256 =
                    library::sha256_file(&partial, &|d, t| phase(&progress, "checksumming", d, t))?;
                let actual_size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
                let boot = match &req.boot {
                    BootInput::Disk(firmware) => BootMode::Disk {
                        firmware: *firmware,
                    },
                    BootInput::Kernel {
                        kernel,
                        initrd,
                        cmdline,
                    } => {
                        let kernel_file = format!("{image}/v{version}.vmlinuz");
                        copy_boot_file(kernel, &library_root.join(&kernel_file))?;
                        let initrd_file = match initrd {
                            Some(i) => {
                                let f = format!("{image}/v{version}.initrd");
                                copy_boot_file(i, &library_root.join(&f))?;
                                Some(f)
                            }
                            None => None,
                        };
                        BootMode::Kernel {
                            kernel_file,
                            initrd_file,
                            cmdline: cmdline.clone(),
                        }
                    }
                };
                library::seal_into_place(&partial, &dir.join(&file_name))?;
                Ok(NewImageVersion {
                    image: image.clone(),
                    version,
                    file: format!("{image}/{file_name}"),
                    sha256,
                    virtual_size: probe.virtual_size,
                    actual_size,
                    parent: None,
                    origin: format!("import of {}", req.file.display()),
                    boot,
                    seal: Vec::new(),
                    notes: req.notes.clone(),
                })
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
                for ext in ["vmlinuz", "initrd"] {
                    remove_library_file(&dir.join(format!("v{version}.{ext}")));
                }
            }
            result
        })
        .await
        .map_err(|e| {
            OpError::Library(library::LibraryError::QemuImg {
                what: "import",
                path: PathBuf::new(),
                message: format!("the import task failed: {e}"),
            })
        })??;
        match self.inventory.image_version_insert(&work) {
            Ok(v) => Ok(v),
            Err(e) => {
                // Not recorded: the file must not stay either.
                remove_library_file(&self.library.join(&work.file));
                if let BootMode::Kernel {
                    kernel_file,
                    initrd_file,
                    ..
                } = &work.boot
                {
                    remove_library_file(&self.library.join(kernel_file));
                    if let Some(f) = initrd_file {
                        remove_library_file(&self.library.join(f));
                    }
                }
                Err(e.into())
            }
        }
    }

    /// The library's lock of `image` (see [`library::lock_image`]), taken off the runtime;
    /// while another process holds it, `progress` says so.
    pub(super) async fn image_lock(
        &self,
        image: &ImageName,
        progress: &ProgressFn,
    ) -> Result<library::ImageLock, OpError> {
        let (data, name, p) = (
            self.data_dir().to_owned(),
            image.to_string(),
            progress.clone(),
        );
        tokio::task::spawn_blocking(move || {
            library::lock_image(&data, &name, &|| {
                phase(
                    &p,
                    "waiting for another import or capture of this image",
                    0,
                    1,
                )
            })
        })
        .await
        .map_err(|e| {
            OpError::Library(library::LibraryError::QemuImg {
                what: "import",
                path: PathBuf::new(),
                message: format!("the lock task failed: {e}"),
            })
        })?
        .map_err(OpError::from)
    }

    pub fn image_list(&self) -> Result<Vec<ImageVersion>, OpError> {
        Ok(self.inventory.image_version_list()?)
    }

    /// `NAME` (newest version) or `NAME:VERSION`.
    pub fn image_show(&self, reference: &str) -> Result<ImageVersion, OpError> {
        let r = ImageRef::parse(reference.trim())?;
        Ok(match r.version {
            Some(v) => self.inventory.image_version_get(&r.image, v)?,
            None => self.inventory.image_version_latest(&r.image)?,
        })
    }

    /// Makes sure the version is on the host, uploading it only when it is not.
    pub async fn image_ensure(
        &self,
        reference: &str,
        host: &str,
        progress: ProgressFn,
    ) -> Result<EnsureOutcome, OpError> {
        let target = format!("image/{reference} on host/{host}");
        let outcome = self
            .op_run("image.ensure", &target, |op| {
                self.image_ensure_inner(reference, host, op, progress)
            })
            .await;
        self.audit(
            "image.ensure",
            &format!("image/{reference} on host/{host}"),
            &outcome,
        );
        outcome
    }

    /// Puts the version on the host for operation `op`, which keeps a pin on the copy until it
    /// ends (no other operation deletes it meanwhile); the upload itself is done by one
    /// operation at a time, whichever process it runs in.
    pub(super) async fn image_ensure_inner(
        &self,
        reference: &str,
        host: &str,
        op: i64,
        progress: ProgressFn,
    ) -> Result<EnsureOutcome, OpError> {
        let v = self.image_show(reference)?;
        let host = self.host_show(host)?;
        let volume = v.volume_name();
        self.pin_wait(host.name.as_str(), &volume, op, PinMode::Use)
            .await?;
        self.pin_wait(host.name.as_str(), &volume, op, PinMode::Write)
            .await?;
        // Read again under the pin: another operation may have just recorded the copy.
        let v = self.image_show(reference)?;
        let outcome = self.image_ensure_pinned(&v, &host, op, progress).await;
        self.inventory
            .host_unpin(host.name.as_str(), &volume, op, PinMode::Write)?;
        outcome
    }

    /// Holds a pin on a shared object on a host for operation `op`, waiting while another live
    /// operation's pin is in the way (an upload of the same copy, a removal).
    pub(crate) async fn pin_wait(
        &self,
        host: &str,
        volume: &str,
        op: i64,
        mode: PinMode,
    ) -> Result<(), OpError> {
        // Uploads of big masters take long; removals and the other pins are short.
        let wait = match mode {
            PinMode::Write => Duration::from_secs(6 * 3600),
            _ => Duration::from_secs(600),
        };
        let deadline = Instant::now() + wait;
        loop {
            let Some(holder) = self.inventory.host_pin(host, volume, op, mode)? else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(OpError::Timeout(format!(
                    "{volume} on host {host} stayed in use by operation #{holder} for {} s; try again when it has finished (flotillactl op list)",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn image_ensure_pinned(
        &self,
        v: &ImageVersion,
        host: &Host,
        op: i64,
        progress: ProgressFn,
    ) -> Result<EnsureOutcome, OpError> {
        let volume = v.volume_name();
        let done = |path: String, bytes_copied| EnsureOutcome {
            image: v.image.clone(),
            version: v.version,
            host: host.name.clone(),
            volume: volume.clone(),
            path,
            bytes_copied,
        };
        let existing = self
            .hypervisor
            .volume_get(&host.uri, &host.pool, &volume)
            .await?;
        if let Some(copy) = v.copies.iter().find(|c| c.host == host.name) {
            if existing.is_some() {
                return Ok(done(copy.path.clone(), 0));
            }
            // Recorded but gone from the host (someone deleted it): upload again.
            self.inventory
                .image_copy_forget(&v.image, v.version, &host.name)?;
        }
        let h = host.name.as_str();
        if existing.is_some() {
            if !self.inventory.host_upload_pending(h, &volume)? {
                return Err(not_ours(h, &volume));
            }
            // This inventory's upload that never got verified (interrupted): not a copy.
            self.copy_step(v, host, Dir::Undo, &progress).await?;
        }
        let what = format!("{}:v{} on {h}", v.image, v.version);
        let mut seq: Sequence<()> = Sequence::new(self.journal(op));
        let copied = async {
            let path = seq
                .step(&format!("upload {what}"), Some(()), || {
                    self.copy_step(v, host, Dir::Do, &progress)
                })
                .await?;
            seq.step(&format!("verify {what}"), None, || async {
                let found = self
                    .hypervisor
                    .volume_sha256(&host.uri, &host.pool, &volume)
                    .await?;
                if found != v.sha256 {
                    return Err(OpError::CopyMismatch {
                        what: format!("{}:v{}", v.image, v.version),
                        host: host.name.to_string(),
                        found,
                        expected: v.sha256.clone(),
                    });
                }
                Ok(())
            })
            .await?;
            Ok::<_, OpError>(path)
        }
        .await;
        let path = match copied {
            Ok(p) => p,
            // A simulated crash (test hooks): a dead process undoes nothing.
            Err(OpError::Crashed) => return Err(OpError::Crashed),
            Err(e) => {
                // The failed undo is journaled; the upload record stays, so the next ensure
                // removes what is left.
                let progress = &progress;
                seq.unwind(|()| async move {
                    self.copy_step(v, host, Dir::Undo, progress).await.map(drop)
                })
                .await;
                return Err(e);
            }
        };
        let total = self.library_size(v)?;
        phase(&progress, "verifying", total, total);
        self.inventory
            .image_copy_record(&v.image, v.version, &host.name, &volume, &path)?;
        self.inventory.host_upload_end(h, &volume)?;
        Ok(done(path, total))
    }

    /// The size of a version's library file.
    fn library_size(&self, v: &ImageVersion) -> Result<u64, OpError> {
        let file = self.library.join(&v.file);
        Ok(std::fs::metadata(&file)
            .map_err(|source| library::LibraryError::Unreadable { path: file, source })?
            .len())
    }

    /// Uploading a version's copy to a host, either way. The upload is recorded before it
    /// begins; its undo deletes the volume only while that record says the upload is this
    /// inventory's and unverified (never a verified copy, never someone else's volume).
    async fn copy_step(
        &self,
        v: &ImageVersion,
        host: &Host,
        dir: Dir,
        progress: &ProgressFn,
    ) -> Result<String, OpError> {
        let (h, volume) = (host.name.as_str(), v.volume_name());
        match dir {
            Dir::Do => {
                // Run again (a test's repeat, a retry): this inventory's unverified upload
                // from before goes first, as `image_ensure_pinned` does before the step.
                if self.inventory.host_upload_pending(h, &volume)? {
                    self.hypervisor
                        .volume_delete(&host.uri, &host.pool, &volume)
                        .await?;
                }
                self.inventory.host_upload_begin(h, &volume)?;
                let total = self.library_size(v)?;
                let p = progress.clone();
                let info = self
                    .hypervisor
                    .volume_upload(
                        &host.uri,
                        &host.pool,
                        &volume,
                        self.library.join(&v.file),
                        crate::hypervisor::DiskFormat::Qcow2,
                        move |d, t| phase(&p, "uploading", d, t),
                    )
                    .await?;
                phase(progress, "verifying", 0, total);
                Ok(info.path)
            }
            Dir::Undo => {
                if self.inventory.host_upload_pending(h, &volume)? {
                    self.hypervisor
                        .volume_delete(&host.uri, &host.pool, &volume)
                        .await?;
                    self.inventory.host_upload_end(h, &volume)?;
                }
                Ok(String::new())
            }
        }
    }

    /// Deletes a version: refused while a later version or a unit uses it; removes its copies
    /// from hosts, its record and its library files.
    pub async fn image_delete(&self, reference: &str) -> Result<(), OpError> {
        let outcome = self.image_delete_inner(reference).await;
        self.audit("image.delete", &format!("image/{reference}"), &outcome);
        outcome
    }

    async fn image_delete_inner(&self, reference: &str) -> Result<(), OpError> {
        let r = ImageRef::parse(reference.trim())?;
        let Some(version) = r.version else {
            return Err(crate::model::ValidationError::new(
                "version",
                format!("say which version to delete: {}:VERSION", r.image),
            )
            .into());
        };
        let v = self.inventory.image_version_get(&r.image, version)?;
        let users = self.inventory.image_version_users(&r.image, version)?;
        if !users.is_empty() {
            return Err(InventoryError::InUse {
                kind: "image version",
                name: format!("{}:v{version}", r.image),
                users,
            }
            .into());
        }
        // Copies another operation relies on right now (a deploy or ensure in any process)
        // are not deleted: the whole delete is refused.
        self.op_run(
            "image.delete",
            &format!("image/{}:v{version}", r.image),
            |op| self.image_copies_delete(&v, op),
        )
        .await?;
        self.inventory.image_version_delete(&r.image, version)?;
        remove_library_file(&self.library.join(&v.file));
        if let BootMode::Kernel {
            kernel_file,
            initrd_file,
            ..
        } = &v.boot
        {
            remove_library_file(&self.library.join(kernel_file));
            if let Some(f) = initrd_file {
                remove_library_file(&self.library.join(f));
            }
        }
        Ok(())
    }
}

impl Engine {
    /// One step per copy, `delete IMAGE:vN on HOST`, with no undo (a deleted copy is not put
    /// back: the delete is finished by running it again).
    async fn image_copies_delete(&self, v: &ImageVersion, op: i64) -> Result<(), OpError> {
        let mut seq: Sequence<()> = Sequence::new(self.journal(op));
        for copy in &v.copies {
            let what = format!("{}:v{} on {}", v.image, v.version, copy.host);
            seq.step(&format!("delete {what}"), None, || {
                self.delete_copy(v, copy, op)
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes one recorded copy of a version from its host ("gone" is fine), refused while
    /// another operation relies on it.
    async fn delete_copy(
        &self,
        v: &ImageVersion,
        copy: &crate::model::ImageVersionCopy,
        op: i64,
    ) -> Result<(), OpError> {
        let h = copy.host.as_str();
        if let Some(holder) = self
            .inventory
            .host_pin(h, &copy.volume, op, PinMode::Delete)?
        {
            return Err(crate::model::ValidationError::new(
                "image",
                format!(
                    "{}:v{} on host {h} is in use by operation #{holder}; try again when it has finished (flotillactl op list)",
                    v.image, v.version
                ),
            )
            .into());
        }
        let host = self.host_show(h)?;
        self.hypervisor
            .volume_delete(&host.uri, &host.pool, &copy.volume)
            .await?;
        self.inventory
            .image_copy_forget(&v.image, v.version, &copy.host)?;
        Ok(())
    }
}

/// The refusal when a host has a volume of a shared object's name that this inventory did
/// not put there (another Flotilla inventory's copy, a file made by hand).
pub(super) fn not_ours(host: &str, volume: &str) -> OpError {
    crate::model::ValidationError::new(
        "host",
        format!(
            "host {host} already has a volume {volume} that this inventory did not put there (another Flotilla inventory's copy, or a file made by hand); it was left alone. Remove or rename it, or use another storage pool"
        ),
    )
    .into()
}

fn remove_library_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}
