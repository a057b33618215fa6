//! Builder VMs: a new master version is made by running a machine, changing it, capturing it.
//!
//! build:   record the builder (every name chosen up front) → ensure the base version on the
//!          host → boot files → installer ISO → disk (overlay of the base, or blank) → seed →
//!          define → start. A failure undoes each step that began, newest first (the base
//!          copy is shared and stays), and forgets the builder once nothing of it is left.
//! capture: ACPI shutdown, with a timeout (forced power-off only when asked) → download the
//!          disk → flatten it onto the library's copy of the base → sha256 → read-only → record
//!          the version → remove the builder's domain and volumes. After a crash, running
//!          capture again resumes; a version recorded before the crash is not recorded twice.
//! abort:   remove the builder's domain and volumes ("already gone" is fine) and forget it.
//!
//! Every step runs on the executor (`ops/exec.rs`): journaled before it acts, undo journaled.
//! Sealing, when asked: `cloud-init clean --logs` runs in the guest through the QEMU guest
//! agent before the shutdown; `virt-sysprep` runs on the captured file before it is made
//! read-only. A seal that cannot be done fails the capture (nothing recorded, builder kept);
//! the version lists exactly the seals that were done.

use super::exec::{describe, Dir, Sequence};
use super::images::{ImageProgress, ProgressFn};
use super::{Engine, OpError};
use crate::guest::{write_seed_disk, NicConfig, SeedSpec};
use crate::hypervisor::{BootSpec, DiskFormat, DiskSpec, DomainSpec, DomainType, NicSpec};
use crate::library;
use crate::model::Host;
use crate::model::{
    BootMode, Builder, Firmware, HostName, ImageName, ImageVersion, Ipv4Cidr, MacAddr,
    NewImageVersion, ValidationError,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The refusal when a builder's name is taken on its host by something no builder record
/// accounts for.
fn taken(host: &HostName, what: &str, name: &str) -> OpError {
    ValidationError::new(
        "builder",
        format!(
            "host {host} already has a {what} named {name} that is not a builder Flotilla recorded; it was left alone. Remove it, or build under another image name"
        ),
    )
    .into()
}

#[derive(Debug, Clone)]
pub enum BuildFrom {
    /// `NAME` or `NAME:VERSION` of a library version.
    Version(String),
    /// A local installer ISO.
    Iso(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub image: String,
    pub host: String,
    pub from: BuildFrom,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Disk size in bytes; default: the base's size, or 10 GiB for an installer.
    pub disk_bytes: Option<u64>,
    /// Commands the builder runs at first boot (cloud-config runcmd): automation of the
    /// admin's work, e.g. in tests.
    pub script: Vec<String>,
    /// A static address for the builder on the host's bridge (with gateway); none: DHCP.
    pub address: Option<(String, Option<String>)>,
    /// `qemu` (software emulation) unless the host has working KVM.
    pub domain_type: DomainType,
}

#[derive(Debug, Clone)]
pub struct CaptureRequest {
    pub image: String,
    /// Run `cloud-init clean --logs` in the guest (needs the QEMU guest agent there).
    pub seal_cloud_init: bool,
    /// Run `virt-sysprep` on the captured image (needs libguestfs' virt-sysprep here).
    pub seal_sysprep: bool,
    /// Power the builder off when it ignores the ACPI request.
    pub force: bool,
    pub shutdown_timeout: Duration,
    pub notes: String,
}

const DEFAULT_INSTALL_DISK: u64 = 10 << 30;

/// A builder script as the admin writes it (a file for `image build --script`, the text box of
/// the builder wizard): one command per line; blank lines and `#` comments are left out.
pub fn script_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

fn builder_mac(domain: &str) -> MacAddr {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(domain.as_bytes());
    MacAddr::new([0x52, 0x54, 0x00, h[0], h[1], h[2]])
}

/// One step of making a builder. Its do and undo are named functions, listed in the build's
/// table ([`Engine::builder_step`]); the builder's names were all free on the host before the first
/// step, so what a step's undo removes is what that step made.
#[derive(Clone)]
enum BuildStep {
    /// The base version on the host: a shared copy, pinned by this operation and never
    /// removed by its undo (other units and builders may rely on it).
    EnsureBase(String),
    /// A file of this machine uploaded into one of the builder's volumes.
    Upload {
        volume: String,
        file: PathBuf,
        progress: bool,
    },
    /// The builder's disk: an overlay of the base copy, or blank.
    CreateDisk {
        base: Option<String>,
    },
    Define(Box<DomainSpec>),
    Start,
}

impl BuildStep {
    fn name(&self) -> String {
        match self {
            Self::EnsureBase(_) => "ensure the base on the host".into(),
            Self::Upload { volume, .. } => format!("upload {volume}"),
            Self::CreateDisk { .. } => "create the disk".into(),
            Self::Define(_) => "define the builder".into(),
            Self::Start => "start the builder".into(),
        }
    }
}

impl Engine {
    /// Whether the builder's domain exists and is this builder's (its metadata names it);
    /// a domain of that name that is not is an error, and is left alone.
    async fn builder_domain_ours(&self, host: &Host, b: &Builder) -> Result<bool, OpError> {
        let meta = self
            .hypervisor
            .domain_flotilla_metadata(&host.uri, &b.domain)
            .await?;
        match meta {
            None => Ok(false),
            Some(p)
                if p
                    .iter()
                    .any(|(k, v)| k == "builder-for" && v == b.image.as_str()) =>
            {
                Ok(true)
            }
            Some(_) => Err(ValidationError::new(
                "builder",
                format!(
                    "the domain {} on host {} is not the builder Flotilla made for {}; it was left alone",
                    b.domain, host.name, b.image
                ),
            )
            .into()),
        }
    }

    /// Deletes one of the builder's recorded volumes ("gone" is fine).
    async fn builder_volume_delete(
        &self,
        host: &Host,
        b: &Builder,
        v: &str,
    ) -> Result<(), OpError> {
        if !b.volumes.iter().any(|own| own == v) {
            return Err(taken(&host.name, "volume", v));
        }
        self.hypervisor
            .volume_delete(&host.uri, &host.pool, v)
            .await?;
        Ok(())
    }

    /// One builder step, either way, through the build's table; returns the path of what it
    /// made (volumes), if any.
    ///
    /// | step                          | do                  | undo                  |
    /// |-------------------------------|---------------------|-----------------------|
    /// | `ensure the base on the host` | `do_builder_base`   | none (a shared copy)  |
    /// | `upload VOLUME`               | `do_builder_upload` | `undo_builder_upload` |
    /// | `create the disk`             | `do_builder_disk`   | `undo_builder_disk`   |
    /// | `define the builder`          | `do_builder_define` | `undo_builder_define` |
    /// | `start the builder`           | `do_builder_start`  | `undo_builder_start`  |
    async fn builder_step(
        &self,
        op: i64,
        host: &Host,
        b: &Builder,
        step: &BuildStep,
        dir: Dir,
        progress: &ProgressFn,
    ) -> Result<String, OpError> {
        use BuildStep as S;
        use Dir::{Do, Undo};
        let none = String::new();
        match (step, dir) {
            (S::EnsureBase(r), Do) => self.do_builder_base(op, host, r, progress).await,
            (S::EnsureBase(_), Undo) => Ok(none),
            (
                S::Upload {
                    volume,
                    file,
                    progress: shown,
                },
                Do,
            ) => {
                self.do_builder_upload(host, b, volume, file, *shown, progress)
                    .await
            }
            (S::Upload { volume, .. }, Undo) => self
                .undo_builder_upload(host, b, volume)
                .await
                .map(|()| none),
            (S::CreateDisk { base }, Do) => self.do_builder_disk(host, b, base.as_deref()).await,
            (S::CreateDisk { .. }, Undo) => self.undo_builder_disk(host, b).await.map(|()| none),
            (S::Define(spec), Do) => self.do_builder_define(host, b, spec).await.map(|()| none),
            (S::Define(_), Undo) => self.undo_builder_define(host, b).await.map(|()| none),
            (S::Start, Do) => self.do_builder_start(host, b).await.map(|()| none),
            (S::Start, Undo) => self.undo_builder_start(host, b).await.map(|()| none),
        }
    }

    /// The base version on the host (uploaded when it is not): the path of its copy.
    async fn do_builder_base(
        &self,
        op: i64,
        host: &Host,
        reference: &str,
        progress: &ProgressFn,
    ) -> Result<String, OpError> {
        Ok(self
            .image_ensure_inner(reference, host.name.as_str(), op, progress.clone())
            .await?
            .volume)
    }

    /// A file of this machine uploaded into one of the builder's volumes: its path.
    async fn do_builder_upload(
        &self,
        host: &Host,
        b: &Builder,
        volume: &str,
        file: &Path,
        shown: bool,
        progress: &ProgressFn,
    ) -> Result<String, OpError> {
        // Run again (a test's repeat, a retry): what this step uploaded before goes first (the
        // names were free before the first step; "gone" is fine).
        self.builder_volume_delete(host, b, volume).await?;
        let p = progress.clone();
        let info = self
            .hypervisor
            .volume_upload(
                &host.uri,
                &host.pool,
                volume,
                file.to_path_buf(),
                DiskFormat::Raw,
                move |done, total| {
                    if shown {
                        p(ImageProgress {
                            phase: "uploading".into(),
                            done,
                            total,
                        })
                    }
                },
            )
            .await?;
        Ok(info.path)
    }

    async fn undo_builder_upload(
        &self,
        host: &Host,
        b: &Builder,
        volume: &str,
    ) -> Result<(), OpError> {
        self.builder_volume_delete(host, b, volume).await
    }

    /// The builder's disk: an overlay of the base copy (`base`, its path), or blank.
    async fn do_builder_disk(
        &self,
        host: &Host,
        b: &Builder,
        base: Option<&str>,
    ) -> Result<String, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let name = format!("{}-disk.qcow2", b.domain);
        // Run again: the disk this step made before goes first (as for uploads).
        self.builder_volume_delete(host, b, &name).await?;
        let info = match base {
            Some(bv) => {
                self.hypervisor
                    .volume_create_overlay_sized(
                        uri,
                        pool,
                        &name,
                        bv,
                        DiskFormat::Qcow2,
                        b.disk_bytes,
                    )
                    .await?
            }
            None => {
                self.hypervisor
                    .volume_create_blank(uri, pool, &name, b.disk_bytes)
                    .await?
            }
        };
        Ok(info.path)
    }

    async fn undo_builder_disk(&self, host: &Host, b: &Builder) -> Result<(), OpError> {
        self.builder_volume_delete(host, b, &format!("{}-disk.qcow2", b.domain))
            .await
    }

    async fn do_builder_define(
        &self,
        host: &Host,
        b: &Builder,
        spec: &DomainSpec,
    ) -> Result<(), OpError> {
        // Defined only under a free name (checked before the first step) or over this
        // builder's own definition (a step run again).
        self.builder_domain_ours(host, b).await?;
        self.hypervisor.domain_define(&host.uri, spec).await?;
        Ok(())
    }

    async fn undo_builder_define(&self, host: &Host, b: &Builder) -> Result<(), OpError> {
        if self.builder_domain_ours(host, b).await? {
            self.hypervisor
                .domain_undefine(&host.uri, &b.domain)
                .await?;
        }
        Ok(())
    }

    async fn do_builder_start(&self, host: &Host, b: &Builder) -> Result<(), OpError> {
        if !self.builder_domain_ours(host, b).await? {
            return Err(ValidationError::new(
                "builder",
                format!(
                    "the builder {} is not defined on host {}",
                    b.domain, host.name
                ),
            )
            .into());
        }
        self.hypervisor.domain_start(&host.uri, &b.domain).await?;
        Ok(())
    }

    async fn undo_builder_start(&self, host: &Host, b: &Builder) -> Result<(), OpError> {
        if self.builder_domain_ours(host, b).await? {
            self.hypervisor.domain_destroy(&host.uri, &b.domain).await?;
        }
        Ok(())
    }

    pub fn builder_list(&self) -> Result<Vec<Builder>, OpError> {
        Ok(self.inventory.builder_list()?)
    }

    pub fn builder_show(&self, image: &str) -> Result<Builder, OpError> {
        Ok(self
            .inventory
            .builder_get(&ImageName::parse(image.trim())?)?)
    }

    /// The last `max` bytes of the builder's serial console, read through libvirt.
    pub async fn builder_serial(&self, image: &str, max: u64) -> Result<String, OpError> {
        let b = self.builder_show(image)?;
        let host = self.host_show(b.host.as_str())?;
        let name = b
            .serial_log
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let bytes = self
            .hypervisor
            .volume_tail(&host.uri, &host.pool, &name, max)
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Where the builder's console is: `vnc 127.0.0.1:5900 on host h1` while it runs.
    pub async fn builder_console(&self, b: &Builder) -> Result<Option<String>, OpError> {
        let host = self.host_show(b.host.as_str())?;
        Ok(self.hypervisor.domain_vnc(&host.uri, &b.domain).await?)
    }

    /// The builder's VNC console forwarded to a port on this machine through SSH (for a
    /// `qemu+ssh` host; the host key checked against Flotilla's file), as virt-manager tunnels
    /// consoles. `None` for other hosts (their console is reached as `builder_console` says)
    /// or when the builder has no VNC console now. The forward ends when the tunnel is dropped.
    pub async fn builder_console_tunnel(
        &self,
        image: &str,
    ) -> Result<Option<crate::hostkeys::ConsoleTunnel>, OpError> {
        let b = self.builder_show(image)?;
        let host = self.host_show(b.host.as_str())?;
        if crate::hostkeys::ssh_args(host.uri.as_str())?.is_none() {
            return Ok(None);
        }
        let Some(vnc) = self.builder_console(&b).await? else {
            return Ok(None);
        };
        let wrapper = self.known_hosts().ensure_wrapper()?;
        let uri = host.uri.to_string();
        let opened = tokio::task::spawn_blocking(move || {
            crate::hostkeys::ConsoleTunnel::open(&uri, &wrapper, &vnc)
        })
        .await
        .map_err(|e| OpError::Timeout(format!("opening the console tunnel failed: {e}")))??;
        Ok(Some(opened))
    }

    pub async fn image_build(
        &self,
        req: &BuildRequest,
        progress: ProgressFn,
    ) -> Result<Builder, OpError> {
        let outcome = self.image_build_inner(req, progress).await;
        self.audit("image.build", &format!("image/{}", req.image), &outcome);
        outcome
    }

    async fn image_build_inner(
        &self,
        req: &BuildRequest,
        progress: ProgressFn,
    ) -> Result<Builder, OpError> {
        let image = ImageName::parse(req.image.trim())?;
        if !(1..=64).contains(&req.cpus) {
            return Err(ValidationError::new("cpus", "between 1 and 64").into());
        }
        if !(64..=1 << 20).contains(&req.memory_mib) {
            return Err(ValidationError::new("memory", "between 64 MiB and 1 TiB").into());
        }
        let host = self.host_show(&req.host)?;
        let (base, boot, iso) = match &req.from {
            BuildFrom::Version(r) => {
                let v = self.image_show(r)?;
                let boot = v.boot.clone();
                (Some(v), boot, None)
            }
            BuildFrom::Iso(path) => {
                // qemu-img may take up to its wall-clock limit: off the async runtime.
                let file = path.clone();
                let is_iso = tokio::task::spawn_blocking(move || {
                    library::probe(&file)?;
                    library::is_iso(&file)
                })
                .await
                .map_err(|e| library::LibraryError::QemuImg {
                    what: "probe",
                    path: path.clone(),
                    message: e.to_string(),
                })??;
                if !is_iso {
                    return Err(library::LibraryError::NotAnImage {
                        path: path.clone(),
                        reason: "is not an ISO 9660 installer image".into(),
                    }
                    .into());
                }
                (
                    None,
                    BootMode::Disk {
                        firmware: Firmware::Bios,
                    },
                    Some(path.clone()),
                )
            }
        };
        let disk_bytes = req.disk_bytes.unwrap_or_else(|| {
            base.as_ref()
                .map_or(DEFAULT_INSTALL_DISK, |b| b.virtual_size)
        });
        if let Some(b) = &base {
            if disk_bytes < b.virtual_size {
                return Err(ValidationError::new(
                    "disk-size",
                    format!(
                        "{disk_bytes} bytes is smaller than the base's {} bytes",
                        b.virtual_size
                    ),
                )
                .into());
            }
        }
        let nics = match &req.address {
            None => vec![],
            Some((cidr, gw)) => vec![NicConfig {
                mac: MacAddr::new([0; 6]),
                address: Ipv4Cidr::parse(cidr)?,
                gateway: gw
                    .as_deref()
                    .map(|g| {
                        g.parse().map_err(|_| {
                            ValidationError::new("gateway", format!("{g:?} is not an IPv4 address"))
                        })
                    })
                    .transpose()?,
            }],
        };
        let domain = format!("flotilla-builder-{image}");
        let mut volumes = vec![format!("{domain}-disk.qcow2"), format!("{domain}-seed.img")];
        if let BootMode::Kernel { initrd_file, .. } = &boot {
            volumes.push(format!("{domain}-vmlinuz"));
            if initrd_file.is_some() {
                volumes.push(format!("{domain}-initrd"));
            }
        }
        if iso.is_some() {
            volumes.push(format!("{domain}-installer.iso"));
        }
        // The serial console goes to a file in the host's pool: Flotilla can then read it
        // through libvirt (`builder_serial`), for remote hosts too.
        let serial_volume = format!("{domain}.serial");
        volumes.push(serial_volume.clone());
        let pool_dir = self.hypervisor.pool_path(&host.uri, &host.pool).await?;
        if pool_dir.is_empty() {
            return Err(ValidationError::new(
                "host",
                format!(
                    "the storage pool '{}' of {} has no directory; builders need a directory pool",
                    host.pool, host.name
                ),
            )
            .into());
        }
        let short: String = image.as_str().chars().take(50).collect();
        let seed = SeedSpec {
            instance_id: format!("{domain}-{}", crate::inventory::now_compact()),
            hostname: HostName::parse(short.trim_end_matches('-'))
                .and_then(|h| HostName::parse(&format!("builder-{h}")))?,
            nics: nics
                .into_iter()
                .map(|n| NicConfig {
                    mac: builder_mac(&domain),
                    ..n
                })
                .collect(),
            nameservers: vec![],
            runcmd: req.script.clone(),
        };
        if self.inventory.builder_get(&image).is_ok() {
            return Err(crate::inventory::InventoryError::Duplicate {
                kind: "builder",
                name: image.to_string(),
            }
            .into());
        }
        // Its names must be free on the host: a domain or volume of a builder's name that no
        // builder record accounts for (made by hand, left by another inventory) is refused
        // before anything is made — and so never removed by this builder's undo or abort.
        if self
            .hypervisor
            .domain_flotilla_metadata(&host.uri, &domain)
            .await?
            .is_some()
        {
            return Err(taken(&host.name, "domain", &domain));
        }
        for v in &volumes {
            if self
                .hypervisor
                .volume_find(&host.uri, &host.pool, v)
                .await?
                .is_some()
            {
                return Err(taken(&host.name, "volume", v));
            }
        }
        // Refuse a bad script before anything is made.
        let seed_dir = tempfile_dir()?;
        let seed_file = seed_dir.join("seed.img");
        write_seed_disk(&seed, &seed_file)
            .map_err(|e| ValidationError::new("script", e.to_string()))?;

        let builder = self.inventory.builder_insert(
            &Builder {
                image: image.clone(),
                host: host.name.clone(),
                base: base.as_ref().map(|b| format!("{}:v{}", b.image, b.version)),
                iso: iso.as_ref().map(|p| p.display().to_string()),
                domain: domain.clone(),
                volumes: volumes.clone(),
                cpus: req.cpus,
                memory_mib: req.memory_mib,
                disk_bytes,
                boot: boot.clone(),
                state: "building".into(),
                captured_version: None,
                serial_log: format!("{}/{serial_volume}", pool_dir.trim_end_matches('/')),
                created_at: String::new(),
            },
            base.as_ref().map(|b| (&b.image, b.version)),
        )?;
        let op = self.op_begin("image.build", &format!("image/{image}"), "")?;
        let mut seq = Sequence::new(self.journal(op));
        let made = self
            .build_steps(
                &mut seq,
                &builder,
                base.as_ref(),
                iso.as_ref(),
                seed_file,
                req.domain_type,
                &progress,
            )
            .await;
        let _ = std::fs::remove_dir_all(&seed_dir);
        let made = async {
            match made {
            Ok(()) => self
                .inventory
                .builder_set_state(&image, "running")
                .map_err(OpError::from),
            // A simulated crash (test hooks): a dead process undoes nothing.
            Err(OpError::Crashed) => Err(OpError::Crashed),
            Err(e) => {
                // Undo what the steps made, newest first; the builder is forgotten only when
                // nothing of it is left (else `image builder-abort` finishes the job).
                let host = &self.host_show(builder.host.as_str())?;
                let (b, progress) = (&builder, &progress);
                let failed = seq
                    .unwind(|st| async move {
                        self.builder_step(op, host, b, &st, Dir::Undo, progress)
                            .await
                            .map(drop)
                    })
                    .await;
                if failed.is_empty() {
                    self.inventory.builder_delete(&image)?;
                    Err(e)
                } else {
                    let list: Vec<String> =
                        failed.iter().map(|(s, m)| format!("{s}: {m}")).collect();
                    Err(OpError::UndoFailed(format!(
                        "{}; and its undo failed, so builder {image} is kept for `flotillactl image builder-abort {image}`: {}",
                        describe(&e),
                        list.join("; ")
                    )))
                }
            }
            }
        }
        .await;
        self.op_end(op, made)?;
        Ok(self.inventory.builder_get(&image)?)
    }

    /// The steps of a build, each run on the executor with its undo.
    #[allow(clippy::too_many_arguments)]
    async fn build_steps(
        &self,
        seq: &mut Sequence<'_, BuildStep>,
        b: &Builder,
        base: Option<&ImageVersion>,
        iso: Option<&PathBuf>,
        seed_file: PathBuf,
        domain_type: DomainType,
        progress: &ProgressFn,
    ) -> Result<(), OpError> {
        let host = self.host_show(b.host.as_str())?;
        let d = &b.domain;
        let op = seq.journal.op;
        // Runs one step (do) on the executor; its undo is the same step run the other way.
        macro_rules! run {
            ($step:expr) => {{
                let st = $step;
                let name = st.name();
                seq.step(&name, Some(st.clone()), || {
                    self.builder_step(op, &host, b, &st, Dir::Do, progress)
                })
                .await
            }};
        }
        let base_volume = match base {
            Some(v) => Some(run!(BuildStep::EnsureBase(format!(
                "{}:{}",
                v.image, v.version
            )))?),
            None => None,
        };
        let mut boot = BootSpec::Disk {
            uefi: matches!(
                b.boot,
                BootMode::Disk {
                    firmware: Firmware::Uefi
                }
            ),
            cdrom_first: iso.is_some(),
        };
        if let BootMode::Kernel {
            kernel_file,
            initrd_file,
            cmdline,
        } = &b.boot
        {
            let kernel = run!(BuildStep::Upload {
                volume: format!("{d}-vmlinuz"),
                file: self.library.join(kernel_file),
                progress: false,
            })?;
            let initrd = match initrd_file {
                Some(f) => Some(run!(BuildStep::Upload {
                    volume: format!("{d}-initrd"),
                    file: self.library.join(f),
                    progress: false,
                })?),
                None => None,
            };
            boot = BootSpec::Kernel {
                kernel,
                initrd,
                cmdline: cmdline.clone(),
            };
        }
        let mut disks = vec![DiskSpec {
            path: run!(BuildStep::CreateDisk { base: base_volume })?,
            format: DiskFormat::Qcow2,
            readonly: false,
            cdrom: false,
        }];
        disks.push(DiskSpec {
            path: run!(BuildStep::Upload {
                volume: format!("{d}-seed.img"),
                file: seed_file,
                progress: false,
            })?,
            format: DiskFormat::Raw,
            readonly: true,
            cdrom: false,
        });
        if let Some(iso) = iso {
            disks.push(DiskSpec {
                path: run!(BuildStep::Upload {
                    volume: format!("{d}-installer.iso"),
                    file: iso.clone(),
                    progress: true,
                })?,
                format: DiskFormat::Raw,
                readonly: true,
                cdrom: true,
            });
        }
        let domain_type = if host.facts.as_ref().is_some_and(|f| f.hypervisor == "TEST") {
            DomainType::Test
        } else {
            domain_type
        };
        let spec = DomainSpec {
            name: d.clone(),
            domain_type,
            vcpus: b.cpus,
            memory_mib: b.memory_mib,
            boot,
            disks,
            nics: vec![NicSpec {
                mac: builder_mac(d),
                bridge: host.bridge.clone(),
            }],
            serial_log: Some(b.serial_log.clone()),
            metadata: vec![("builder-for".into(), b.image.to_string())],
            vnc: true,
            guest_agent: true,
        };
        run!(BuildStep::Define(Box::new(spec)))?;
        run!(BuildStep::Start)?;
        Ok(())
    }

    /// Destroys, undefines and deletes everything a builder may have made; "gone" is fine. The
    /// domain only when its metadata names this builder (its names were free when it began).
    async fn remove_builder_objects(&self, b: &Builder) -> Result<(), OpError> {
        let host = self.host_show(b.host.as_str())?;
        if self.builder_domain_ours(&host, b).await? {
            self.hypervisor.domain_destroy(&host.uri, &b.domain).await?;
            self.hypervisor
                .domain_undefine(&host.uri, &b.domain)
                .await?;
        }
        for v in &b.volumes {
            self.builder_volume_delete(&host, b, v).await?;
        }
        Ok(())
    }

    pub async fn builder_abort(&self, image: &str) -> Result<(), OpError> {
        let outcome = async {
            let b = self.builder_show(image)?;
            self.op_run(
                "image.builder-abort",
                &format!("image/{}", b.image),
                |op| async move {
                    let mut seq: Sequence<()> = Sequence::new(self.journal(op));
                    seq.step("remove the builder", None, || {
                        self.remove_builder_objects(&b)
                    })
                    .await?;
                    Ok(self.inventory.builder_delete(&b.image)?)
                },
            )
            .await
        }
        .await;
        self.audit("image.builder-abort", &format!("image/{image}"), &outcome);
        outcome
    }

    pub async fn image_capture(
        &self,
        req: &CaptureRequest,
        progress: ProgressFn,
    ) -> Result<ImageVersion, OpError> {
        let outcome = self.image_capture_inner(req, progress).await;
        self.audit("image.capture", &format!("image/{}", req.image), &outcome);
        outcome
    }

    async fn image_capture_inner(
        &self,
        req: &CaptureRequest,
        progress: ProgressFn,
    ) -> Result<ImageVersion, OpError> {
        let b = self.builder_show(&req.image)?;
        if req.notes.len() > 4096 {
            return Err(ValidationError::new("notes", "at most 4096 bytes").into());
        }
        let op = self.op_begin("image.capture", &format!("image/{}", b.image), "")?;
        let mut seq: Sequence<()> = Sequence::new(self.journal(op));
        let mut outcome = self.capture_steps(&mut seq, &b, req, progress).await;
        if outcome.is_err() && b.captured_version.is_none() {
            // Not captured: the builder stays usable (it may have been powered off).
            if let Err(e) = self.inventory.builder_set_state(&b.image, "running") {
                outcome = Err(e.into());
            }
        }
        self.op_end(op, outcome)
    }

    /// The steps of a capture. None has an undo: a capture that fails keeps the builder
    /// (powered off, perhaps) and records nothing; run it again, or abort the builder.
    async fn capture_steps(
        &self,
        seq: &mut Sequence<'_, ()>,
        b: &Builder,
        req: &CaptureRequest,
        progress: ProgressFn,
    ) -> Result<ImageVersion, OpError> {
        let host = self.host_show(b.host.as_str())?;
        let (uri, pool) = (&host.uri, &host.pool);
        let version = match b.captured_version {
            // A capture that recorded its version and then crashed: only cleanup is left.
            Some(v) => self.inventory.image_version_get(&b.image, v)?,
            None => {
                if req.seal_sysprep && !library::tool_available("virt-sysprep") {
                    return Err(OpError::SealFailed {
                        reason: "virt-sysprep is not installed on this machine (package libguestfs-tools)".into(),
                    });
                }
                self.inventory.builder_set_state(&b.image, "capturing")?;
                let mut seal = Vec::new();
                if req.seal_cloud_init {
                    seq.step("seal: cloud-init clean in the guest", None, || async {
                        let ran = self
                            .hypervisor
                            .domain_guest_exec(uri, &b.domain, "cloud-init", &["clean", "--logs"], Duration::from_secs(120))
                            .await
                            .map_err(|e| OpError::SealFailed {
                                reason: format!(
                                    "`cloud-init clean` could not run in the guest through the QEMU guest agent ({}); install and start qemu-guest-agent in the builder, or capture without sealing",
                                    e.libvirt_reason().unwrap_or("no answer")
                                ),
                            })?;
                        match ran.exit_code {
                            Some(0) => Ok(()),
                            other => Err(OpError::SealFailed {
                                reason: format!(
                                    "`cloud-init clean --logs` in the guest ended with {}: {}",
                                    other.map_or("no exit (timeout)".into(), |c| format!("exit code {c}")),
                                    ran.stderr.trim()
                                ),
                            }),
                        }
                    })
                    .await?;
                    seal.push(
                        "cloud-init clean --logs (in the guest, before shutdown)".to_string(),
                    );
                }
                seq.step("shut the builder down", None, || async {
                    if self.hypervisor.domain_is_running(uri, &b.domain).await? != Some(true) {
                        return Ok(());
                    }
                    self.hypervisor.domain_shutdown(uri, &b.domain).await?;
                    let asked = Instant::now();
                    while asked.elapsed() < req.shutdown_timeout {
                        if self.hypervisor.domain_is_running(uri, &b.domain).await? != Some(true) {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    if req.force {
                        self.hypervisor.domain_destroy(uri, &b.domain).await?;
                        return Ok(());
                    }
                    Err(OpError::ShutdownTimeout {
                        domain: b.domain.clone(),
                        secs: req.shutdown_timeout.as_secs(),
                    })
                })
                .await?;
                // Until the version is recorded: an import of this name in any process waits
                // (it would take the same version number).
                let _lock = self.image_lock(&b.image, &progress).await?;
                let dir = self.library.join(b.image.as_str());
                crate::files::private_dir_all(&dir).map_err(|source| {
                    library::LibraryError::Write {
                        path: dir.clone(),
                        source,
                    }
                })?;
                library::remove_partials(&dir);
                let disk_volume = format!("{}-disk.qcow2", b.domain);
                let allocated = self
                    .hypervisor
                    .volume_get(uri, pool, &disk_volume)
                    .await?
                    .map_or(0, |v| v.allocation_bytes);
                library::ensure_space(&dir, allocated.saturating_mul(2))?;
                let overlay = dir.join(format!(".capture.{}.overlay.partial", std::process::id()));
                let p = progress.clone();
                seq.step("download the disk", None, || async {
                    let p = p.clone();
                    Ok(self
                        .hypervisor
                        .volume_download(
                            uri,
                            pool,
                            &disk_volume,
                            overlay.clone(),
                            move |done, total| {
                                p(ImageProgress {
                                    phase: "downloading".into(),
                                    done,
                                    total,
                                })
                            },
                        )
                        .await?)
                })
                .await?;
                let number = self.inventory.image_next_version(&b.image)?;
                let base = match &b.base {
                    Some(r) => Some(self.image_show(r)?),
                    None => None,
                };
                let sysprep = req.seal_sysprep;
                let new = seq
                    .step("flatten into a new version", None, || {
                        let library_root = self.library.clone();
                        let (b2, base2, overlay2, progress2) =
                            (b.clone(), base.clone(), overlay.clone(), progress.clone());
                        async move {
                            tokio::task::spawn_blocking(move || {
                                flatten(
                                    &library_root,
                                    &b2,
                                    base2.as_ref(),
                                    &overlay2,
                                    number,
                                    sysprep,
                                    &progress2,
                                )
                            })
                            .await
                            .map_err(|e| {
                                library::LibraryError::QemuImg {
                                    what: "capture",
                                    path: PathBuf::new(),
                                    message: e.to_string(),
                                }
                            })?
                        }
                    })
                    .await;
                let _ = std::fs::remove_file(&overlay);
                let mut new = new?;
                new.notes = req.notes.clone();
                seal.append(&mut new.seal);
                new.seal = seal;
                let v = self.inventory.image_version_insert(&new)?;
                self.inventory.builder_set_captured(&b.image, v.version)?;
                v
            }
        };
        seq.step("remove the builder", None, || {
            self.remove_builder_objects(b)
        })
        .await?;
        self.inventory.builder_delete(&b.image)?;
        Ok(version)
    }
}

/// Turns the downloaded builder disk into the next library version (blocking work).
fn flatten(
    library_root: &std::path::Path,
    b: &Builder,
    base: Option<&ImageVersion>,
    overlay: &std::path::Path,
    number: u32,
    sysprep: bool,
    progress: &ProgressFn,
) -> Result<NewImageVersion, OpError> {
    let dir = library_root.join(b.image.as_str());
    // The disk comes from a host, as untrusted as an imported file: it must not name any other
    // file before qemu-img opens it.
    library::check_builder_disk(overlay, base.is_some())?;
    if let Some(base) = base {
        library::rebase_onto(overlay, &library_root.join(&base.file))?;
    }
    let file_name = format!("v{number}.qcow2");
    let partial = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
    let result = (|| -> Result<NewImageVersion, OpError> {
        let total = b.disk_bytes;
        library::convert_to_qcow2(overlay, "qcow2", &partial, &|pct| {
            progress(ImageProgress {
                phase: "flattening".into(),
                done: (pct / 100.0 * total as f64) as u64,
                total,
            })
        })?;
        let sha256 = library::sha256_file(&partial, &|done, total| {
            progress(ImageProgress {
                phase: "checksumming".into(),
                done,
                total,
            })
        })?;
        let probe = library::probe(&partial)?;
        let boot = match &b.boot {
            BootMode::Kernel {
                kernel_file,
                initrd_file,
                cmdline,
            } => {
                let k = format!("{}/v{number}.vmlinuz", b.image);
                super::images::copy_boot_file(
                    &library_root.join(kernel_file),
                    &library_root.join(&k),
                )?;
                let i = match initrd_file {
                    Some(f) => {
                        let i = format!("{}/v{number}.initrd", b.image);
                        super::images::copy_boot_file(
                            &library_root.join(f),
                            &library_root.join(&i),
                        )?;
                        Some(i)
                    }
                    None => None,
                };
                BootMode::Kernel {
                    kernel_file: k,
                    initrd_file: i,
                    cmdline: cmdline.clone(),
                }
            }
            other => other.clone(),
        };
        let mut seal = Vec::new();
        let sha256 = if sysprep {
            progress(ImageProgress {
                phase: "virt-sysprep".into(),
                done: 0,
                total: 1,
            });
            library::sysprep(&partial).map_err(|e| OpError::SealFailed {
                reason: e.to_string(),
            })?;
            seal.push("virt-sysprep (offline, default operations)".to_string());
            library::sha256_file(&partial, &|_, _| {})?
        } else {
            sha256
        };
        let actual_size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        library::seal_into_place(&partial, &dir.join(&file_name))?;
        let same_image = base.filter(|v| v.image == b.image);
        Ok(NewImageVersion {
            image: b.image.clone(),
            version: number,
            file: format!("{}/{file_name}", b.image),
            sha256,
            virtual_size: probe.virtual_size,
            actual_size,
            parent: same_image.map(|v| v.version),
            origin: format!(
                "builder on host {} from {} (run started {})",
                b.host,
                b.base
                    .clone()
                    .or_else(|| b.iso.clone())
                    .unwrap_or_else(|| "nothing".into()),
                b.created_at
            ),
            boot,
            seal,
            notes: String::new(),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// A private temporary directory for seed disks and payload images (they carry per-server
/// configuration): mode 0700 with a random name, removed when dropped. It dereferences to its
/// path.
pub(super) struct PrivateDir(tempfile::TempDir);

impl std::ops::Deref for PrivateDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl AsRef<std::path::Path> for PrivateDir {
    fn as_ref(&self) -> &std::path::Path {
        self.0.path()
    }
}

pub(super) fn tempfile_dir() -> Result<PrivateDir, OpError> {
    crate::files::private_temp_dir("flotilla-")
        .map(PrivateDir)
        .map_err(|source| {
            library::LibraryError::Write {
                path: std::env::temp_dir(),
                source,
            }
            .into()
        })
}

#[cfg(test)]
mod temp_tests {
    use super::tempfile_dir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seed_and_payload_files_are_made_in_a_private_directory() {
        let dir = tempfile_dir().unwrap();
        let mode = std::fs::metadata(&*dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let other = tempfile_dir().unwrap();
        assert_ne!(dir.to_path_buf(), other.to_path_buf());
        let path = dir.to_path_buf();
        std::fs::write(dir.join("seed.img"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists(), "removed with its files");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn a_script_is_its_commands_one_per_line() {
        let text =
            "#!/bin/sh\n\n  apt-get update  \r\n\t# a comment\necho '# not a comment'\n   \n";
        assert_eq!(
            script_lines(text),
            ["apt-get update", "echo '# not a comment'"]
        );
        assert!(script_lines("").is_empty());
        assert!(script_lines("# only\n\n").is_empty());
    }

    fn qemu_img_create(path: &Path, args: &[&str]) {
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .args(args)
            .arg(path)
            .arg("8M")
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img create {}", path.display());
    }

    fn builder(base: Option<&str>) -> Builder {
        Builder {
            image: ImageName::parse("web").unwrap(),
            host: HostName::parse("h1").unwrap(),
            base: base.map(str::to_owned),
            iso: None,
            domain: "flotilla-builder-web".into(),
            volumes: Vec::new(),
            cpus: 1,
            memory_mib: 256,
            disk_bytes: 8 << 20,
            boot: BootMode::Disk {
                firmware: Firmware::Bios,
            },
            state: "capturing".into(),
            captured_version: None,
            serial_log: String::new(),
            created_at: "20250101T000000".into(),
        }
    }

    fn version(file: &str) -> ImageVersion {
        ImageVersion {
            image: ImageName::parse("web").unwrap(),
            version: 1,
            file: file.into(),
            sha256: String::new(),
            format: "qcow2".into(),
            virtual_size: 8 << 20,
            actual_size: 0,
            parent: None,
            origin: String::new(),
            boot: BootMode::Disk {
                firmware: Firmware::Bios,
            },
            seal: Vec::new(),
            notes: String::new(),
            created_at: String::new(),
            copies: Vec::new(),
        }
    }

    /// The capture path without a host: the downloaded disk goes through the same check as an
    /// import before it is rebased and flattened.
    #[test]
    fn capture_flattens_a_clean_disk_and_refuses_one_naming_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("library");
        std::fs::create_dir_all(lib.join("web")).unwrap();
        qemu_img_create(&lib.join("web/v1.qcow2"), &[]);
        let progress: ProgressFn = std::sync::Arc::new(|_| {});
        let base = version("web/v1.qcow2");
        let host_copy = "/var/lib/libvirt/images/flotilla-web-v1.qcow2";

        let overlay = lib.join("web/.capture.1.overlay.partial");
        qemu_img_create(&overlay, &["-u", "-F", "qcow2", "-b", host_copy]);
        let b = builder(Some("web:1"));
        let new = flatten(&lib, &b, Some(&base), &overlay, 2, false, &progress).unwrap();
        assert_eq!((new.version, new.parent), (2, Some(1)));
        assert!(lib.join("web/v2.qcow2").is_file());

        let secret = dir.path().join("host-secret");
        let opt = format!("data_file={},data_file_raw=on", secret.display());
        let crafted = lib.join("web/.capture.2.overlay.partial");
        qemu_img_create(&crafted, &["-o", &opt]);
        let (files, bytes) = (
            std::fs::read_dir(lib.join("web")).unwrap().count(),
            std::fs::read(&crafted).unwrap(),
        );
        let err = flatten(&lib, &b, Some(&base), &crafted, 3, false, &progress).unwrap_err();
        assert!(
            matches!(
                &err,
                OpError::Library(library::LibraryError::NotAnImage { .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("names an external data file"),
            "{err}"
        );
        assert!(!lib.join("web/v3.qcow2").exists(), "no version file");
        assert_eq!(std::fs::read_dir(lib.join("web")).unwrap().count(), files);
        assert_eq!(
            std::fs::read(&crafted).unwrap(),
            bytes,
            "not rebased before the check"
        );
        // A builder made from an installer ISO: no rebase, convert would copy the host file.
        std::fs::write(&secret, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
        let err = flatten(&lib, &builder(None), None, &crafted, 3, false, &progress).unwrap_err();
        assert!(
            err.to_string().contains("names an external data file"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(lib.join("web")).unwrap().count(), files);
    }
}
