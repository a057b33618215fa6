//! What each step does and how it is undone, and the objects on hosts they make.

use super::*;

/// Reports an upload's progress (at each whole percent) as a detail of the running step.
fn upload_progress(
    ctx: &Ctx,
    s: &Server,
    step: Step,
    pos: (u32, u32),
) -> crate::ops::images::ProgressFn {
    let (progress, op, server) = (ctx.progress.clone(), ctx.op, s.name.clone());
    let last = std::sync::Mutex::new(u64::MAX);
    Arc::new(move |p| {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == pct {
            return;
        }
        *last = pct;
        progress(StepEvent {
            operation: op,
            server: server.clone(),
            step,
            status: StepStatus::Started,
            detail: format!("{} {pct}% of {} MiB", p.phase, p.total >> 20),
            done: pos.0,
            total: pos.1,
            lb: None,
        });
    })
}

pub(super) use crate::ops::exec::Dir;

/// The isolation response a server's seed installs, from the unit's policy: its address (or
/// the gateway of the host's network, port 80), or `None` when the policy has none.
fn isolation_of(ctx: &Ctx, host: &Host) -> Result<Option<crate::guest::Isolation>, OpError> {
    let p = &ctx.unit.policy;
    if p.isolation_timeout_s == 0 {
        return Ok(None);
    }
    let (address, port) = if p.isolation_address.is_empty() {
        let gw: Ipv4Addr = host.gateway.parse().map_err(|_| {
            ValidationError::new(
                "isolation-address",
                format!(
                    "unit {} has an isolation response, but no address for it and host {} no gateway: set one (flotillactl unit policy {} --isolation-address ADDRESS[:PORT], the load balancer as the guests reach it)",
                    ctx.unit.name, host.name, ctx.unit.name
                ),
            )
        })?;
        (gw, 80)
    } else {
        crate::model::parse_isolation_address(&p.isolation_address)?
    };
    Ok(Some(crate::guest::Isolation {
        address,
        port,
        timeout_s: p.isolation_timeout_s,
    }))
}

/// Who a domain with a server's name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    Absent,
    /// Defined by Flotilla for this server of this unit.
    Unit,
    /// Anything else: never changed or removed.
    Foreign,
}

impl Engine {
    /// Refuses to start or stop a domain of the server's name that is not this unit's (someone
    /// replaced it by hand).
    async fn refuse_foreign(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<(), OpError> {
        if self.domain_owner(ctx, s, host).await? == Owner::Foreign {
            return Err(ValidationError::new(
                "server",
                format!(
                    "the domain {} on host {} is not the one Flotilla defined for unit {}; it was left alone",
                    s.name, host.name, ctx.unit.name
                ),
            )
            .into());
        }
        Ok(())
    }

    /// A volume of one of the server's names on its host: `None` when there is none, the
    /// volume when the inventory records it as this server's; refused (and left alone) when
    /// it is anyone else's. `fresh`: also see files libvirt has not noticed yet (a pool
    /// refresh on a miss) — what `claim-names` does once per server; the volume steps after
    /// it look up what libvirt knows, without a refresh each.
    pub(super) async fn own_or_absent(
        &self,
        s: &Server,
        host: &Host,
        volume: &str,
        fresh: bool,
    ) -> Result<Option<crate::hypervisor::VolumeInfo>, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let found = if fresh {
            self.hypervisor.volume_find(uri, pool, volume).await?
        } else {
            self.hypervisor.volume_get(uri, pool, volume).await?
        };
        let Some(found) = found else {
            return Ok(None);
        };
        match self
            .inventory
            .server_volume_owner(host.name.as_str(), volume)?
        {
            Some(owner) if owner == s.name => Ok(Some(found)),
            owner => Err(ValidationError::new(
                "server",
                format!(
                    "host {} already has a volume {volume} that Flotilla did not create for server {}{}; it was left alone. Remove or rename it, or give this server another name",
                    host.name,
                    s.name,
                    owner.map_or_else(String::new, |o| format!(" (it belongs to server {o})"))
                ),
            )
            .into()),
        }
    }

    /// Deletes a volume of the server's names only when the inventory records it as this
    /// server's, then forgets the record; anything else of that name is left alone.
    pub(super) async fn delete_own(
        &self,
        s: &Server,
        host: &Host,
        volume: &str,
    ) -> Result<(), OpError> {
        let owner = self
            .inventory
            .server_volume_owner(host.name.as_str(), volume)?;
        if owner.as_deref() == Some(s.name.as_str()) {
            self.hypervisor
                .volume_delete(&host.uri, &host.pool, volume)
                .await?;
            self.inventory
                .server_volume_forget(host.name.as_str(), volume)?;
        }
        Ok(())
    }

    /// After creating a recorded volume: when the creation failed and a volume of that name
    /// exists anyway, someone else made it in the meantime — the record goes, the volume stays.
    async fn keep_record_if_made<T>(
        &self,
        host: &Host,
        volume: &str,
        created: Result<T, crate::hypervisor::HvError>,
    ) -> Result<(), OpError> {
        let Err(e) = created else {
            return Ok(());
        };
        if self
            .hypervisor
            .volume_find(&host.uri, &host.pool, volume)
            .await?
            .is_some()
        {
            self.inventory
                .server_volume_forget(host.name.as_str(), volume)?;
        }
        Err(e.into())
    }

    /// Whether the domain named like the server is this unit's (its Flotilla metadata).
    pub(super) async fn domain_owner(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<Owner, OpError> {
        let props = self
            .hypervisor
            .domain_flotilla_metadata(&host.uri, &s.name)
            .await?;
        Ok(match props {
            None => Owner::Absent,
            Some(p) => {
                let has = |k: &str, v: &str| p.iter().any(|(pk, pv)| pk == k && pv == v);
                if has("unit", &ctx.unit.name) && has("server", &s.name) {
                    Owner::Unit
                } else {
                    Owner::Foreign
                }
            }
        })
    }

    /// Does one step. `pos` (steps done, of total) goes with the progress of long uploads.
    pub(super) async fn do_step(
        &self,
        ctx: &Ctx,
        s: &Server,
        step: Step,
        pos: (u32, u32),
    ) -> Result<(), OpError> {
        self.server_step(ctx, s, step, Dir::Do, pos).await
    }

    /// Undoes one step (idempotent: "already gone" is done).
    pub(super) async fn undo_step(&self, ctx: &Ctx, s: &Server, step: Step) -> Result<(), OpError> {
        self.server_step(ctx, s, step, Dir::Undo, (0, 0)).await
    }

    /// Each step's do and undo, side by side, behind the same ownership guards: a domain is
    /// touched only when its metadata names this unit and server (`refuse_foreign`,
    /// `domain_owner`), a volume only when the inventory records it as this server's
    /// (`own_or_absent`, `delete_own`). Steps after which there is no way back have no undo.
    async fn server_step(
        &self,
        ctx: &Ctx,
        s: &Server,
        step: Step,
        dir: Dir,
        pos: (u32, u32),
    ) -> Result<(), OpError> {
        use Dir::{Do, Undo};
        let host = ctx.host(&s.host)?;
        let uri = &host.uri;
        let addr = member_address(&s.address, ctx.port)?;
        let lb = ctx.lb.as_ref();
        match (step, dir) {
            // Nothing is made: nothing to undo.
            (Step::ClaimNames, Do) => {
                if self.domain_owner(ctx, s, host).await? == Owner::Foreign {
                    return Err(foreign_domain(ctx, s, host));
                }
                // The names it will use (a recovery's are named for its generation).
                for volume in [s.disk_volume(), s.seed_volume(), serial_volume(&s.name)] {
                    self.own_or_absent(s, host, &volume, true).await?;
                }
                Ok(())
            }
            (Step::ClaimNames, Undo) => Ok(()),

            // Shared by every unit and operation that uses them: pinned while in use, released
            // at the end of the operation when nobody needs them (`release_host_objects`).
            (Step::EnsureMaster, Do) => {
                let _g = match ctx.host_locks.get(&s.host) {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                self.ensure_space(host, &ctx.image).await?;
                let r = format!("{}:{}", ctx.image.image, ctx.image.version);
                // Part of the unit operation (journaled there), not an audit entry of its own.
                self.image_ensure_inner(&r, &s.host, ctx.op, upload_progress(ctx, s, step, pos))
                    .await?;
                Ok(())
            }
            (Step::EnsurePayload, Do) => {
                let _g = match ctx.host_locks.get(&s.host) {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                self.ensure_payload(ctx, host).await
            }
            (Step::EnsureMaster | Step::EnsurePayload, Undo) => Ok(()),

            (Step::CreateDisk, Do) => {
                let made = self
                    .create_disk(s, host, &s.disk_volume(), &ctx.image, ctx.uv.size.disk_gib)
                    .await?;
                if made {
                    ctx.made_disks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(s.name.clone());
                }
                Ok(())
            }
            (Step::CreateDisk, Undo) => self.delete_own(s, host, &s.disk_volume()).await,

            // On a disk this operation did not make (an earlier failed deploy's, whose undo
            // could not run, or a crashed run's) the guest may have booted and kept the
            // version's instance id: cloud-init would then run none of the install, config
            // files and start again (a half-done first boot stays half-done). A fresh instance
            // id runs them again (hooks are idempotent, docs/guest-contract.md).
            (Step::WriteSeed, Do) => {
                let made = ctx
                    .made_disks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&s.name);
                let suffix = if made {
                    String::new()
                } else {
                    format!(".o{}", ctx.op)
                };
                self.write_seed(ctx, s, host, &s.seed_volume(), ctx.uv.version, &suffix)
                    .await
            }
            (Step::WriteSeed, Undo) => self.delete_own(s, host, &s.seed_volume()).await,

            (Step::Define, Do) => {
                if self.domain_owner(ctx, s, host).await? == Owner::Foreign {
                    return Err(foreign_domain(ctx, s, host));
                }
                // QEMU writes the serial log into the pool: it is the server's from now on.
                let serial = serial_volume(&s.name);
                if self.own_or_absent(s, host, &serial, false).await?.is_none() {
                    self.inventory
                        .server_volume_record(&s.name, host.name.as_str(), &serial)?;
                }
                let spec = self
                    .domain_spec(
                        ctx,
                        s,
                        host,
                        &ctx.uv,
                        &ctx.image,
                        &s.disk_volume(),
                        &s.seed_volume(),
                    )
                    .await?;
                self.hypervisor.domain_define(uri, &spec).await?;
                Ok(())
            }
            (Step::Define, Undo) => {
                // Never someone else's domain of the same name (the step refused to touch it).
                if self.domain_owner(ctx, s, host).await? == Owner::Unit {
                    self.hypervisor.domain_destroy(uri, &s.name).await?;
                    self.hypervisor.domain_undefine(uri, &s.name).await?;
                }
                self.delete_own(s, host, &serial_volume(&s.name)).await
            }

            // `s` is the server as it was before the operation: its version, disk and seed.
            (Step::Swap, Do) => {
                self.refuse_foreign(ctx, s, host).await?;
                if self.hypervisor.domain_is_running(uri, &s.name).await? == Some(true) {
                    note(ctx, s, step, pos, LIVE_NOTE);
                    return self.swap_live(ctx, s, host, ctx.uv.version).await;
                }
                let w = swap_plan(ctx, s)?;
                if w.made_disk {
                    self.create_disk(s, host, &w.disk, &ctx.image, ctx.uv.size.disk_gib)
                        .await?;
                }
                if w.made_seed {
                    self.write_seed(ctx, s, host, &w.seed, ctx.uv.version, &w.instance_suffix)
                        .await?;
                }
                // What it boots without making it (its disk in place, the disk and seed it
                // kept for a rollback) must be there and recorded as this server's.
                let kept = [(!w.made_disk, &w.disk), (!w.made_seed, &w.seed)];
                for (_, v) in kept.iter().filter(|(k, _)| *k) {
                    if self.own_or_absent(s, host, v, false).await?.is_none() {
                        return Err(ValidationError::new(
                            "server",
                            format!(
                                "{v}, which {} would boot for v{}, is gone from host {}",
                                s.name, ctx.uv.version, host.name
                            ),
                        )
                        .into());
                    }
                }
                let spec = self
                    .domain_spec(ctx, s, host, &ctx.uv, &ctx.image, &w.disk, &w.seed)
                    .await?;
                self.hypervisor.domain_define(uri, &spec).await?;
                self.inventory
                    .server_set_volumes(&s.name, &w.disk, &w.seed)?;
                self.inventory.server_set_prior(
                    &s.name,
                    Some(&PriorVolumes {
                        version: s.version.unwrap_or(ctx.uv.version),
                        disk: s.disk_volume(),
                        seed: s.seed_volume(),
                    }),
                )?;
                Ok(())
            }
            (Step::Swap, Undo) => {
                self.refuse_foreign(ctx, s, host).await?;
                let before = s.version.unwrap_or(ctx.uv.version);
                if self.hypervisor.domain_is_running(uri, &s.name).await? == Some(true) {
                    // Swapped without a reboot (or stopped half-way through it, on its disk):
                    // back the same way. The undo of a rebooting swap finds it stopped (by the
                    // start's undo); if not, it is stopped now and boots its old volumes.
                    if self.swapped_live(ctx, s)?
                        || (swap_plan(ctx, s)?.disk == s.disk_volume()
                            && self.hypervisor.domain_agent_ready(uri, &s.name).await?)
                    {
                        return self.swap_live(ctx, s, host, before).await;
                    }
                    self.hypervisor.domain_destroy(uri, &s.name).await?;
                }
                let (old_uv, old_image) = ctx.release(before)?;
                // On the disk the newer version may have run on (its install, config files
                // and per-boot script are there), the old seed's instance id would run none of
                // the old version's again: a fresh one does.
                let same_disk = swap_plan(ctx, s)?.disk == s.disk_volume();
                let seed = if same_disk {
                    let name = format!("{}-seed-u{before}-o{}.img", s.name, ctx.op);
                    self.write_seed(ctx, s, host, &name, before, &format!(".o{}", ctx.op))
                        .await?;
                    name
                } else {
                    // Its old seed again: whether that gave it an isolation response is not
                    // recorded, so none is counted on.
                    self.inventory.server_set_isolation(&s.name, 0)?;
                    s.seed_volume()
                };
                let spec = self
                    .domain_spec(ctx, s, host, old_uv, old_image, &s.disk_volume(), &seed)
                    .await?;
                self.hypervisor.domain_define(uri, &spec).await?;
                self.inventory.server_set_volumes(
                    &s.name,
                    &s.disk,
                    if same_disk { &seed } else { &s.seed },
                )?;
                // The old seed it no longer boots goes (unless kept for a rollback).
                let old = s.seed_volume();
                if same_disk && old != seed && s.prior.as_ref().is_none_or(|p| p.seed != old) {
                    self.delete_own(s, host, &old).await?;
                }
                self.inventory.server_set_prior(&s.name, s.prior.as_ref())?;
                // Only what the do made: a new seed, a new disk — never the volumes it booted
                // again (a rollback to the version before).
                let w = swap_plan(ctx, s)?;
                if w.made_seed && w.seed != s.seed_volume() {
                    self.delete_own(s, host, &w.seed).await?;
                }
                if w.made_disk && w.disk != s.disk_volume() {
                    self.delete_own(s, host, &w.disk).await?;
                }
                Ok(())
            }

            (Step::Relocate, d) => self.relocate(ctx, s, d).await,
            (Step::Fence, d) => self.fence(ctx, s, d).await,

            (Step::LbAdd, Do) | (Step::LbRemove, Undo) => {
                let (d, p) = lb_of(lb)?;
                d.member_add(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "maint")?;
                Ok(())
            }
            (Step::LbAdd, Undo) | (Step::LbRemove, Do) => {
                let (d, p) = lb_of(lb)?;
                d.member_remove(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "none")?;
                Ok(())
            }

            (Step::Start, Do) => {
                self.refuse_foreign(ctx, s, host).await?;
                Ok(self.hypervisor.domain_start(uri, &s.name).await?)
            }
            (Step::Start, Undo) => {
                self.refuse_foreign(ctx, s, host).await?;
                // A server updated without a reboot was running before this step: it stays up
                // for the swap's undo, which goes back the same way.
                if !self.swapped_live(ctx, s)? {
                    self.hypervisor.domain_destroy(uri, &s.name).await?;
                }
                Ok(())
            }

            (Step::WaitHealthy, Do) => {
                // A rollout checks the version it puts on the server; other operations the
                // version the server runs.
                let runs = if ctx.kind == Some(OpKind::Rollout) {
                    ctx.uv.version
                } else {
                    s.version.unwrap_or(ctx.uv.version)
                };
                self.wait_healthy(ctx, s, host, runs).await
            }
            // In rotation: no longer held out because its host was lost.
            (Step::LbReady, Do) => {
                self.lb_set(ctx, s, MemberState::Ready).await?;
                self.inventory.server_set_fenced(&s.name, "")?;
                Ok(())
            }
            // Out of rotation again (the member was drained for its health check).
            (Step::WaitHealthy, Undo) => {
                if ctx.lb.is_some() {
                    self.lb_set(ctx, s, MemberState::Maint).await?;
                }
                Ok(())
            }
            // In rotation: drained first, so that the requests it serves end (a rollback
            // fails no request either).
            (Step::LbReady, Undo) => {
                self.lb_set(ctx, s, MemberState::Drain).await?;
                self.wait_drained(ctx, s).await?;
                self.lb_set(ctx, s, MemberState::Maint).await?;
                // Held out because of its host again, if it was when the operation began.
                let was = ctx.unit.servers.iter().find(|o| o.name == s.name);
                self.inventory
                    .server_set_fenced(&s.name, was.map_or("", |o| o.fenced_at.as_str()))?;
                Ok(())
            }

            (Step::LbDrain, Do) => self.lb_set(ctx, s, MemberState::Drain).await,
            (Step::LbMaint, Do) => self.lb_set(ctx, s, MemberState::Maint).await,
            (Step::LbDrain | Step::LbMaint, Undo) => self.lb_set(ctx, s, MemberState::Ready).await,
            (Step::WaitDrained, Do) => self.wait_drained_showing(ctx, s, Some(pos)).await,
            (Step::WaitDrained, Undo) => Ok(()),

            // A rollout that can swap the payload through the guest agent stops the app, not
            // the server (`live_swap_possible`).
            (Step::Shutdown, Do) => {
                self.refuse_foreign(ctx, s, host).await?;
                if self.live_swap_possible(ctx, s, host).await? {
                    note(ctx, s, step, pos, LIVE_NOTE);
                    return self.live_stop(ctx, s, host).await;
                }
                self.shutdown(ctx, s, host).await
            }
            (Step::Shutdown, Undo) => {
                // Back in rotation (by the undo of the LB steps) only once it is healthy again.
                self.refuse_foreign(ctx, s, host).await?;
                // A rollout that kept it running stopped its app through the agent: started
                // again the same way. Any other running server was never stopped (a shutdown
                // that timed out): left as it is.
                if ctx.kind == Some(OpKind::Rollout)
                    && self.hypervisor.domain_is_running(uri, &s.name).await? == Some(true)
                    && self.hypervisor.domain_agent_ready(uri, &s.name).await?
                {
                    self.live_restart_app(ctx, s, host).await;
                }
                self.hypervisor.domain_start(uri, &s.name).await?;
                // Back on the version it ran before the operation.
                self.wait_healthy(ctx, s, host, s.version.unwrap_or(ctx.uv.version))
                    .await
            }

            // Past the point of no return: a failure after these is finished by running the
            // operation again, never undone.
            (Step::Undefine, Do) => {
                if self.domain_owner(ctx, s, host).await? == Owner::Unit {
                    self.hypervisor.domain_destroy(uri, &s.name).await?;
                    self.hypervisor.domain_undefine(uri, &s.name).await?;
                }
                Ok(())
            }
            (Step::DeleteVolumes, Do) => {
                let mut volumes = self.inventory.server_volumes_of(&s.name)?;
                for v in server_volumes(&s.name) {
                    if !volumes.contains(&v) {
                        volumes.push(v);
                    }
                }
                for v in volumes {
                    self.delete_own(s, host, &v).await?;
                }
                Ok(())
            }
            (Step::Forget, Do) => Ok(self.inventory.server_delete(&s.name)?),
            (Step::Undefine | Step::DeleteVolumes | Step::Forget, Undo) => Ok(()),
        }
    }

    /// The server's disk `name`: a new overlay of `image`'s copy on the host, sized
    /// `disk_gib` (0: the master's). Its own disk from an earlier attempt is used only when it
    /// is an overlay of that copy, never booted otherwise. True when it was created now (false:
    /// that earlier disk is used).
    pub(super) async fn create_disk(
        &self,
        s: &Server,
        host: &Host,
        name: &str,
        image: &ImageVersion,
        disk_gib: u32,
    ) -> Result<bool, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let master = self
            .hypervisor
            .volume_get(uri, pool, &image.volume_name())
            .await?
            .map(|v| v.path);
        if let Some(disk) = self.own_or_absent(s, host, name, false).await? {
            if disk.backing.is_none() || disk.backing != master {
                return Err(ValidationError::new(
                    "server",
                    format!(
                        "the disk {name} of server {} on host {} is not an overlay of master {}:v{} (its backing file is {}); it was left alone",
                        s.name,
                        host.name,
                        image.image,
                        image.version,
                        disk.backing.as_deref().unwrap_or("none")
                    ),
                )
                .into());
            }
            return Ok(false);
        }
        self.inventory
            .server_volume_record(&s.name, host.name.as_str(), name)?;
        let created = self
            .hypervisor
            .volume_create_overlay_sized(
                uri,
                pool,
                name,
                &image.volume_name(),
                DiskFormat::Qcow2,
                u64::from(disk_gib) << 30,
            )
            .await;
        self.keep_record_if_made(host, name, created)
            .await
            .map(|()| true)
    }

    /// The server's seed `name` for the operation's unit version (written again when it is
    /// the server's own already); `suffix` goes after its instance id. The server's recorded
    /// isolation response is what this seed gives it (none while it is being written: a
    /// recovery never counts on a response its guest may not have).
    pub(super) async fn write_seed(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        name: &str,
        version: u32,
        suffix: &str,
    ) -> Result<(), OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        if self.own_or_absent(s, host, name, false).await?.is_none() {
            self.inventory
                .server_volume_record(&s.name, host.name.as_str(), name)?;
        }
        let dir = tempfile_dir()?;
        let file = dir.join(format!("{}-seed.img", s.name));
        let spec = self.seed_spec(ctx, s, host, version, suffix)?;
        let isolation = isolation_of(ctx, host)?.map_or(0, |i| i.timeout_s);
        self.inventory.server_set_isolation(&s.name, 0)?;
        // Disk writes stay off the async runtime's threads.
        let target = file.clone();
        let written = tokio::task::spawn_blocking(move || write_seed_disk(&spec, &target))
            .await
            .map_err(|e| OpError::Timeout(format!("writing the seed failed: {e}")))
            .and_then(|r| {
                r.map_err(|e| OpError::Invalid(ValidationError::new("seed", e.to_string())))
            });
        let result = async {
            written?;
            self.hypervisor.volume_delete(uri, pool, name).await?;
            self.hypervisor
                .volume_upload(uri, pool, name, file.clone(), DiskFormat::Raw, |_, _| {})
                .await?;
            self.inventory.server_set_isolation(&s.name, isolation)?;
            Ok(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// After a rollout: deletes the volumes of the unit's servers that no server uses any
    /// more (a disk of the master it left, seeds of earlier versions). Only volumes recorded
    /// as that server's; a failure is a warning (the next rollout tries again).
    pub(super) async fn drop_prior_volumes(&self, ctx: &Ctx) -> Vec<String> {
        let mut warnings = Vec::new();
        let Ok(u) = self.inventory.unit_get(&ctx.unit.name) else {
            return warnings;
        };
        for s in &u.servers {
            let Ok(host) = ctx.host(&s.host) else {
                continue;
            };
            // The rollout is done: nothing to go back to any more.
            if s.prior.is_some() {
                if let Err(e) = self.inventory.server_set_prior(&s.name, None) {
                    warnings.push(e.to_string());
                    continue;
                }
            }
            let used = [s.disk_volume(), s.seed_volume(), serial_volume(&s.name)];
            let owned = match self.inventory.server_volumes_of(&s.name) {
                Ok(v) => v,
                Err(e) => {
                    warnings.push(e.to_string());
                    continue;
                }
            };
            for v in owned.iter().filter(|v| !used.contains(v)) {
                if let Err(e) = self.delete_own(s, host, v).await {
                    warnings.push(format!(
                        "{v} of server {} on host {} was kept: {}",
                        s.name,
                        host.name,
                        describe(&e)
                    ));
                }
            }
        }
        warnings
    }

    pub(super) async fn lb_set(
        &self,
        ctx: &Ctx,
        s: &Server,
        state: MemberState,
    ) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let addr = member_address(&s.address, ctx.port)?;
        // A member the LB lost (reload) is added back first.
        if !d
            .members(p)
            .await?
            .iter()
            .any(|m| m.name == s.name || m.address == addr.to_string())
        {
            d.member_add(p, &s.name, addr).await?;
        }
        d.member_set(p, &s.name, addr, state).await?;
        let text = match state {
            MemberState::Ready => "ready",
            MemberState::Drain => "drain",
            MemberState::Maint => "maint",
        };
        self.inventory.server_set_lb_state(&s.name, text)?;
        Ok(())
    }

    /// Refuses to upload a master to a host whose pool cannot hold it.
    pub(super) async fn ensure_space(
        &self,
        host: &Host,
        image: &ImageVersion,
    ) -> Result<(), OpError> {
        if image.copies.iter().any(|c| c.host == host.name) {
            return Ok(());
        }
        let fresh = self.host_check_inner(host.name.as_str()).await?;
        let have = fresh
            .facts
            .as_ref()
            .and_then(|f| f.pool.as_ref())
            .map_or(0, |p| p.available_bytes);
        if have < image.actual_size {
            return Err(OpError::NoSpace {
                host: host.name.to_string(),
                what: format!("master {}:v{}", image.image, image.version),
                need: image.actual_size,
                have,
            });
        }
        Ok(())
    }

    /// The unit version's payload disk (and a direct-boot master's kernel files) on the host.
    pub(super) async fn ensure_payload(&self, ctx: &Ctx, host: &Host) -> Result<(), OpError> {
        let mut volumes = vec![ctx.payload_volume()];
        if let BootMode::Kernel { initrd_file, .. } = &ctx.image.boot {
            volumes.push(format!("{}-u{}-vmlinuz", ctx.unit.name, ctx.uv.version));
            if initrd_file.is_some() {
                volumes.push(format!("{}-u{}-initrd", ctx.unit.name, ctx.uv.version));
            }
        }
        // Used by this operation until it ends; written by one operation at a time.
        let h = host.name.as_str();
        for v in &volumes {
            self.pin_wait(h, v, ctx.op, PinMode::Use).await?;
            self.pin_wait(h, v, ctx.op, PinMode::Write).await?;
        }
        let result = self.ensure_payload_pinned(ctx, host).await;
        for v in &volumes {
            self.inventory.host_unpin(h, v, ctx.op, PinMode::Write)?;
        }
        result
    }

    async fn ensure_payload_pinned(&self, ctx: &Ctx, host: &Host) -> Result<(), OpError> {
        let dir = tempfile_dir()?;
        let result = async {
            let payload = ctx.payload_volume();
            let file = dir.join("payload.img");
            let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
            if !self.host_object_ok(host, &payload).await? {
                self.def_payload(&ctx.uv.definition, ctx.uv.definition_version, &file)?;
                files.push((payload, file));
            }
            if let BootMode::Kernel {
                kernel_file,
                initrd_file,
                ..
            } = &ctx.image.boot
            {
                let mut boot = vec![("vmlinuz", kernel_file)];
                if let Some(i) = initrd_file {
                    boot.push(("initrd", i));
                }
                for (suffix, f) in boot {
                    let name = format!("{}-u{}-{suffix}", ctx.unit.name, ctx.uv.version);
                    if !self.host_object_ok(host, &name).await? {
                        files.push((name, self.library_dir().join(f)));
                    }
                }
            }
            for (name, file) in files {
                self.host_object_upload(host, &name, file).await?;
            }
            Ok(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// True when `volume` is on the host and was verified there. A volume without a record
    /// is what an interrupted upload left (Flotilla was killed): it is removed.
    pub(super) async fn host_object_ok(&self, host: &Host, volume: &str) -> Result<bool, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let present = self
            .hypervisor
            .volume_get(uri, pool, volume)
            .await?
            .is_some();
        let recorded = self.inventory.host_object_get(host.name.as_str(), volume)?;
        match (present, recorded) {
            (true, Some(_)) => Ok(true),
            (true, None) => {
                // Only this inventory's own interrupted upload is replaced.
                if !self
                    .inventory
                    .host_upload_pending(host.name.as_str(), volume)?
                {
                    return Err(crate::ops::images::not_ours(host.name.as_str(), volume));
                }
                self.hypervisor.volume_delete(uri, pool, volume).await?;
                Ok(false)
            }
            (false, Some(_)) => {
                self.inventory
                    .host_object_forget(host.name.as_str(), volume)?;
                Ok(false)
            }
            (false, None) => Ok(false),
        }
    }

    /// Uploads a file as `volume`, reads it back, and records it when the checksums match.
    pub(super) async fn host_object_upload(
        &self,
        host: &Host,
        volume: &str,
        file: std::path::PathBuf,
    ) -> Result<(), OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let to_hash = file.clone();
        let want =
            tokio::task::spawn_blocking(move || crate::library::sha256_file(&to_hash, &|_, _| {}))
                .await
                .map_err(|e| OpError::Timeout(format!("hashing {volume} failed: {e}")))??;
        let h = host.name.as_str();
        self.inventory.host_upload_begin(h, volume)?;
        let uploaded = self
            .hypervisor
            .volume_upload(uri, pool, volume, file, DiskFormat::Raw, |_, _| {})
            .await;
        let found = match uploaded {
            Ok(_) => self.hypervisor.volume_sha256(uri, pool, volume).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(sum) if sum == want => {
                self.inventory.host_object_record(h, volume, &sum)?;
                self.inventory.host_upload_end(h, volume)?;
                Ok(())
            }
            outcome => {
                // A half or damaged upload must not look like a finished one next time.
                if self
                    .hypervisor
                    .volume_delete(uri, pool, volume)
                    .await
                    .is_ok()
                {
                    let _ = self.inventory.host_upload_end(h, volume);
                }
                Err(match outcome {
                    Err(e) => e.into(),
                    Ok(found) => OpError::CopyMismatch {
                        what: volume.to_owned(),
                        host: host.name.to_string(),
                        found,
                        expected: want,
                    },
                })
            }
        }
    }

    /// Removes the unit's payload and kernel volumes from hosts where no deployed server of
    /// the unit remains, and master copies no deployed server and no builder needs — unless
    /// another running operation (in any process) pinned them: then they stay.
    pub(super) async fn release_host_objects(&self, ctx: &Ctx) {
        for (hname, host) in &ctx.hosts {
            if !ctx.host_slots.contains_key(hname) {
                continue;
            }
            for v in &ctx.unit.versions {
                for suffix in ["payload.img", "vmlinuz", "initrd"] {
                    let name = format!("{}-u{}-{suffix}", ctx.unit.name, v.version);
                    let recorded = |e: &Engine| {
                        e.inventory
                            .host_object_get(hname, &name)
                            .is_ok_and(|r| r.is_some())
                    };
                    self.release_one(
                        ctx.op,
                        host,
                        &name,
                        |e| {
                            recorded(e)
                                && !e.unit_version_deployed_on(&ctx.unit.name, v.version, hname)
                        },
                        |inv| inv.host_object_forget(hname, &name),
                    )
                    .await;
                }
            }
            // The masters of the unit's versions (a rollout's new one and the ones it left).
            let mut masters = vec![(&ctx.image.image, ctx.image.version, ctx.image.volume_name())];
            for (_, img, _) in ctx.prior.values() {
                if !masters
                    .iter()
                    .any(|m| *m.0 == img.image && m.1 == img.version)
                {
                    masters.push((&img.image, img.version, img.volume_name()));
                }
            }
            for (image, version, volume) in masters {
                self.release_one(
                    ctx.op,
                    host,
                    &volume,
                    |e| {
                        let recorded = e
                            .inventory
                            .image_version_get(image, version)
                            .is_ok_and(|v| v.copies.iter().any(|c| c.host == host.name));
                        let builder_here = e
                            .inventory
                            .builder_list()
                            .map_or(true, |b| b.iter().any(|b| b.host == host.name));
                        recorded
                            && !builder_here
                            && !e.image_deployed_on(image.as_str(), version, hname)
                    },
                    |inv| inv.image_copy_forget(image, version, &host.name),
                )
                .await;
            }
        }
    }

    /// Whether a deployed server of `unit` on `host` runs its version `version` (or, during a
    /// rollout, boots from it: its record still names it).
    fn unit_version_deployed_on(&self, unit: &str, version: u32, host: &str) -> bool {
        // When the inventory cannot be read, the object is taken to be needed.
        self.inventory.unit_get(unit).map_or_else(
            |e| !matches!(e, InventoryError::NotFound { .. }),
            |u| {
                u.servers.iter().any(|s| {
                    s.host == host
                        && s.state != ServerState::Planned
                        && s.version.is_none_or(|v| v == version)
                })
            },
        )
    }

    /// Whether a deployed server on `host` runs a unit version on this master.
    fn image_deployed_on(&self, image: &str, version: u32, host: &str) -> bool {
        let Ok(units) = self.inventory.unit_list() else {
            return true;
        };
        units.iter().any(|u| {
            u.servers.iter().any(|s| {
                s.host == host
                    && s.state != ServerState::Planned
                    && u.versions.iter().any(|v| {
                        v.image == image
                            && v.image_version == version
                            && s.version.is_none_or(|sv| sv == v.version)
                    })
            })
        })
    }

    /// Deletes one shared object and its record — only one this inventory recorded, and only
    /// when no other live operation pins it and, decided again once the delete pin is held,
    /// nothing needs it (`unneeded`).
    async fn release_one(
        &self,
        op: i64,
        host: &Host,
        volume: &str,
        unneeded: impl Fn(&Engine) -> bool,
        forget: impl FnOnce(&crate::inventory::Inventory) -> Result<(), InventoryError>,
    ) {
        let h = host.name.as_str();
        // Most objects are still needed (or were never here): no pin for those.
        if !unneeded(self) {
            return;
        }
        if !matches!(
            self.inventory.host_pin(h, volume, op, PinMode::Delete),
            Ok(None)
        ) {
            return;
        }
        if unneeded(self)
            && self
                .hypervisor
                .volume_delete(&host.uri, &host.pool, volume)
                .await
                .is_ok()
        {
            let _ = forget(&self.inventory);
        }
        let _ = self.inventory.host_unpin(h, volume, op, PinMode::Delete);
    }

    pub(super) fn seed_spec(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        version: u32,
        suffix: &str,
    ) -> Result<SeedSpec, OpError> {
        let net = Ipv4Cidr::parse(&host.network).map_err(|_| {
            ValidationError::new(
                "host",
                format!(
                    "host {} has no network set (flotillactl host set)",
                    host.name
                ),
            )
        })?;
        let addr: Ipv4Addr = s.address.parse().map_err(|_| {
            ValidationError::new("address", format!("{} is not an address", s.address))
        })?;
        let instance_id = format!("{}.{}.u{version}{suffix}", s.name, ctx.unit.name);
        let mut runcmd = payload_runcmd(&instance_id, self.config_commands(ctx, s, version)?);
        if let Some(i) = isolation_of(ctx, host)? {
            runcmd.extend(crate::guest::isolation_runcmd(&instance_id, &i));
        }
        Ok(SeedSpec {
            instance_id,
            hostname: HostName::parse(&s.name)?,
            nics: vec![NicConfig {
                mac: MacAddr::parse(&s.mac)?,
                address: Ipv4Cidr::new(addr, net.prefix())?,
                gateway: host.gateway.parse().ok(),
            }],
            nameservers: Vec::new(),
            runcmd,
        })
    }

    /// The definition's `[[config]]` files rendered for this server, as commands that write
    /// them (base64, so any content passes through the seed's quoting rules).
    pub(super) fn config_commands(
        &self,
        ctx: &Ctx,
        s: &Server,
        version: u32,
    ) -> Result<Vec<String>, OpError> {
        let def = ctx.definition(version);
        let index = ctx
            .unit
            .servers
            .iter()
            .position(|x| x.name == s.name)
            .map_or(0, |i| i + 1);
        let mut vars = BTreeMap::from([
            ("hostname".to_owned(), s.name.clone()),
            ("address".to_owned(), s.address.clone()),
            ("port".to_owned(), ctx.port.to_string()),
            ("unit".to_owned(), ctx.unit.name.clone()),
            ("unit_version".to_owned(), version.to_string()),
            ("server_index".to_owned(), index.to_string()),
        ]);
        for (k, v) in &def.env {
            vars.insert(format!("env.{}", k.get_ref()), v.get_ref().clone());
        }
        let mut out = Vec::new();
        // The parser refused a definition that could render more; a second guard that never
        // holds more than the limit (a version recorded before the limit existed).
        let mut left = crate::model::definition::MAX_CONFIG_BYTES;
        for c in &def.config {
            let path = c.path.get_ref();
            // The parser refused such a path already; a second guard before it meets a shell.
            if let Some(problem) = crate::model::definition::config_path_problem(path) {
                return Err(ValidationError::new("config", problem).into());
            }
            let text = render_template(c.template.get_ref(), &vars, left).map_err(|e| {
                ValidationError::new(
                    "config",
                    format!(
                        "{path}: {e}; the config files of a server render to at most {} bytes \
                         together (they travel in its cloud-init seed)",
                        crate::model::definition::MAX_CONFIG_BYTES
                    ),
                )
            })?;
            left -= text.len();
            let mode = c.mode.as_ref().map(|m| m.get_ref().as_str());
            out.push(config_file_command(path, &text, mode)?);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn domain_spec(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        uv: &UnitVersion,
        image: &ImageVersion,
        disk_volume: &str,
        seed_volume: &str,
    ) -> Result<DomainSpec, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let path_of = |name: String| async move {
            self.hypervisor
                .volume_get(uri, pool, &name)
                .await?
                .map(|v| v.path)
                .ok_or_else(|| {
                    OpError::from(InventoryError::NotFound {
                        kind: "volume",
                        name: format!("{name} on host {}", host.name),
                    })
                })
        };
        let boot = match &image.boot {
            BootMode::Disk { firmware } => BootSpec::Disk {
                uefi: *firmware == Firmware::Uefi,
                cdrom_first: false,
            },
            BootMode::Kernel {
                initrd_file,
                cmdline,
                ..
            } => BootSpec::Kernel {
                kernel: path_of(format!("{}-u{}-vmlinuz", ctx.unit.name, uv.version)).await?,
                initrd: match initrd_file {
                    Some(_) => {
                        Some(path_of(format!("{}-u{}-initrd", ctx.unit.name, uv.version)).await?)
                    }
                    None => None,
                },
                cmdline: cmdline.clone(),
            },
        };
        let disk = |path: String, format, readonly| DiskSpec {
            path,
            format,
            readonly,
            cdrom: false,
        };
        let pool_dir = self.hypervisor.pool_path(uri, pool).await?;
        let facts = host.facts.as_ref();
        let domain_type = if facts.is_some_and(|f| f.hypervisor == "TEST") {
            DomainType::Test
        } else {
            match host.domain_type.as_str() {
                "kvm" => DomainType::Kvm,
                "qemu" => DomainType::Qemu,
                _ if facts.is_some_and(|f| f.kvm) => DomainType::Kvm,
                _ => DomainType::Qemu,
            }
        };
        Ok(DomainSpec {
            name: s.name.clone(),
            domain_type,
            vcpus: uv.size.cpus,
            memory_mib: u64::from(uv.size.memory_mib),
            boot,
            disks: vec![
                disk(
                    path_of(disk_volume.to_owned()).await?,
                    DiskFormat::Qcow2,
                    false,
                ),
                disk(
                    path_of(seed_volume.to_owned()).await?,
                    DiskFormat::Raw,
                    true,
                ),
                disk(
                    path_of(payload_volume(&ctx.unit.name, uv.version)).await?,
                    DiskFormat::Raw,
                    true,
                ),
            ],
            nics: vec![NicSpec {
                mac: MacAddr::parse(&s.mac)?,
                bridge: host.bridge.clone(),
            }],
            serial_log: Some(format!(
                "{}/{}",
                pool_dir.trim_end_matches('/'),
                serial_volume(&s.name)
            )),
            metadata: vec![
                ("unit".into(), ctx.unit.name.clone()),
                ("unit-version".into(), uv.version.to_string()),
                ("server".into(), s.name.clone()),
                ("generation".into(), s.generation.to_string()),
            ],
            vnc: false,
            guest_agent: true,
        })
    }

    /// Waits for the definition's health check: as the load balancer sees it (HAProxy runs
    /// the check while the member drains), or by asking the server. A test-driver host runs
    /// no guest: in test builds its running domain stands in for a healthy server.
    /// Waits until the server passes the health check of unit version `runs` (as the load
    /// balancer sees it when it checks, else asked directly), for the gate's time when set.
    pub(super) async fn wait_healthy(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        runs: u32,
    ) -> Result<(), OpError> {
        if cfg!(feature = "test-hooks")
            && host.facts.as_ref().is_some_and(|f| f.hypervisor == "TEST")
        {
            return match self
                .hypervisor
                .domain_is_running(&host.uri, &s.name)
                .await?
            {
                Some(true) => Ok(()),
                _ => Err(OpError::Timeout(format!("{} is not running", s.name))),
            };
        }
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.health_timeout_s));
        let def = ctx.definition(runs);
        let path = def.health.path.get_ref().clone();
        let expect = *def.health.expect_status.get_ref();
        let interval = Duration::from_millis(500);
        let addr = member_address(&s.address, ctx.port)?;
        let mut last = String::from("no answer yet");
        // The gate: healthy without a dip for `gate_s` (a dip starts the count again).
        let gate = Duration::from_secs(u64::from(ctx.gate_s));
        let mut since: Option<Instant> = None;
        let mut passed = |healthy: bool| -> bool {
            if !healthy {
                since = None;
                return false;
            }
            since.get_or_insert_with(Instant::now).elapsed() >= gate
        };
        if let Some((d, p)) = ctx.lb.as_ref().filter(|(d, _)| d.reports_health()) {
            d.member_set(p, &s.name, addr, MemberState::Drain).await?;
            d.member_mark_down(p, &s.name).await?;
            self.inventory.server_set_lb_state(&s.name, "drain")?;
            while Instant::now() < deadline {
                if let Some(m) = d.members(p).await?.into_iter().find(|m| m.name == s.name) {
                    if m.healthy {
                        if let Some(layer) = crate::lb::check_layer(&m.check) {
                            // Best effort: what the rollout plan warns about.
                            let _ = self.inventory.unit_set_lb_checks(&ctx.unit.name, layer);
                        }
                    }
                    if passed(m.healthy) {
                        return Ok(());
                    }
                    if !m.healthy {
                        last = format!("the load balancer reports {}", m.status);
                    } else if !gate.is_zero() {
                        last = format!(
                            "healthy, but not yet for the {} s it must stay so",
                            gate.as_secs()
                        );
                    }
                }
                tokio::time::sleep(interval).await;
            }
        } else {
            // Straight to the server: a proxy from the environment (HTTP_PROXY) is never
            // asked about a server's own address.
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(
                    u64::from(*def.health.timeout_s.get_ref()).max(1),
                ))
                .build()
                .map_err(|e| OpError::Timeout(e.to_string()))?;
            let url = format!("http://{addr}{path}");
            while Instant::now() < deadline {
                let healthy = match client.get(&url).send().await {
                    Ok(r) if r.status().as_u16() == expect => true,
                    Ok(r) => {
                        last = format!("GET {url} answered {}", r.status());
                        false
                    }
                    Err(e) => {
                        last = format!("GET {url} failed: {e}");
                        false
                    }
                };
                if passed(healthy) {
                    return Ok(());
                }
                tokio::time::sleep(interval).await;
            }
        }
        let serial = self
            .hypervisor
            .volume_tail(&host.uri, &host.pool, &serial_volume(&s.name), 600)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(OpError::Timeout(format!(
            "{} did not pass its health check (GET {path} on port {}, status {expect}) within {} s; {last}{}",
            s.name,
            ctx.port,
            ctx.policy.health_timeout_s,
            if serial.trim().is_empty() {
                String::new()
            } else {
                format!("; the end of its serial console:\n{}", serial.trim_end())
            }
        )))
    }

    /// Waits until the member has no sessions and no queue, or the drain timeout passed (not
    /// an error: the timeout is the policy). Caddy removed it already: the timeout is its grace.
    pub(super) async fn wait_drained(&self, ctx: &Ctx, s: &Server) -> Result<(), OpError> {
        self.wait_drained_showing(ctx, s, None).await
    }

    /// Waits until the load balancer reports no session and no queued request for the
    /// server (read back, never a fixed sleep), or the drain timeout; with `pos`, each
    /// reading is shown as the step's detail (the live panel's session count).
    async fn wait_drained_showing(
        &self,
        ctx: &Ctx,
        s: &Server,
        pos: Option<(u32, u32)>,
    ) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.drain_timeout_s));
        if !d.has_drain() {
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(());
        }
        let mut shown = None;
        while Instant::now() < deadline {
            let m = d.members(p).await?.into_iter().find(|m| m.name == s.name);
            let Some(m) = m.filter(|m| m.sessions > 0 || m.queued > 0) else {
                return Ok(());
            };
            if let Some((done, total)) = pos.filter(|_| shown != Some((m.sessions, m.queued))) {
                shown = Some((m.sessions, m.queued));
                (ctx.progress)(StepEvent {
                    operation: ctx.op,
                    server: s.name.clone(),
                    step: Step::WaitDrained,
                    status: StepStatus::Started,
                    detail: format!("{} sessions, {} queued", m.sessions, m.queued),
                    done,
                    total,
                    lb: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Whether a rollout step can update the server without a reboot: the swap keeps its
    /// disk and only changes the payload (or goes back to a payload it swapped that way), the
    /// server runs, and its QEMU guest agent answers. Else the update reboots it with a new
    /// seed (docs/guest-contract.md).
    async fn live_swap_possible(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<bool, OpError> {
        if ctx.kind != Some(OpKind::Rollout) {
            return Ok(false);
        }
        let w = swap_plan(ctx, s)?;
        if w.disk != s.disk_volume() || !(w.made_seed || w.seed == s.seed_volume()) {
            return Ok(false);
        }
        // A new size (CPUs, memory) needs a new QEMU: a reboot.
        let (old_uv, _) = ctx.release(s.version.unwrap_or(ctx.uv.version))?;
        if (old_uv.size.cpus, old_uv.size.memory_mib) != (ctx.uv.size.cpus, ctx.uv.size.memory_mib)
        {
            return Ok(false);
        }
        let uri = &host.uri;
        Ok(
            self.hypervisor.domain_is_running(uri, &s.name).await? == Some(true)
                && self.hypervisor.domain_agent_ready(uri, &s.name).await?,
        )
    }

    /// Whether the server's last swap (this rollout's) kept it running: it records the disk
    /// and seed it still boots as what it ran before.
    fn swapped_live(&self, ctx: &Ctx, s: &Server) -> Result<bool, OpError> {
        let unit = self.inventory.unit_get(&ctx.unit.name)?;
        let Some(now) = unit.servers.iter().find(|x| x.name == s.name) else {
            return Ok(false);
        };
        Ok(now.prior.as_ref().is_some_and(|p| {
            Some(p.version) == s.version
                && p.disk == now.disk_volume()
                && p.seed == now.seed_volume()
        }))
    }

    /// Runs a script in the server through the guest agent; its failure is the step's. The
    /// script goes as the command's standard input, never on its command line (the agent logs
    /// command lines, and the guest's users see them). One that runs past `limit_s` is killed
    /// in the guest with its process group before this returns, so the step's undo never runs
    /// beside it.
    async fn agent_script(
        &self,
        s: &Server,
        host: &Host,
        what: &str,
        script: &str,
        limit_s: u32,
    ) -> Result<(), OpError> {
        use crate::hypervisor::Overrun;
        let r = self
            .hypervisor
            .domain_guest_script(
                &host.uri,
                &s.name,
                script,
                Duration::from_secs(u64::from(limit_s)),
            )
            .await?;
        if r.exit_code == Some(0) && r.overran.is_none() {
            return Ok(());
        }
        let tail: String = {
            let t = r.stderr.trim();
            let start = t.char_indices().rev().nth(400).map_or(0, |(i, _)| i);
            t[start..].to_owned()
        };
        let how = match (&r.overran, r.exit_code, r.signal) {
            (Some(Overrun::Killed), ..) => format!(
                "did not finish within {limit_s} s and was killed in the guest, with its process group"
            ),
            (Some(Overrun::NotConfirmed(why)), ..) => format!(
                "did not finish within {limit_s} s; Flotilla killed it in the guest but could not confirm that it is gone ({why}): check the server before running the operation again"
            ),
            (None, Some(c), _) => format!("exited with status {c}"),
            (None, None, Some(sig)) => format!("was ended by signal {sig}"),
            (None, None, None) => "ended without an exit status".to_owned(),
        };
        Err(OpError::Timeout(format!(
            "{what} in {} (through the QEMU guest agent) {how}{}",
            s.name,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )))
    }

    /// Stops the app in a running server (its stop hook) and unmounts the payload.
    async fn live_stop(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<(), OpError> {
        self.agent_script(
            s,
            host,
            "the stop hook",
            &crate::guest::live_stop_script(false),
            ctx.policy.shutdown_timeout_s,
        )
        .await
    }

    /// Starts the app again in a server kept running whose app was stopped: the start hook
    /// of the payload attached now. A mounted payload means its app runs (the stop unmounts
    /// it; the swap mounts it and starts). When the agent cannot, a
    /// reboot does it (the per-boot script mounts the payload and runs the start hook).
    async fn live_restart_app(&self, ctx: &Ctx, s: &Server, host: &Host) {
        let script = crate::guest::live_start_script();
        // Never a power-off: whether the app serves again, the health check that follows
        // says (and a failed one is reported).
        if let Err(e) = self
            .agent_script(
                s,
                host,
                "the start hook",
                &script,
                ctx.policy.health_timeout_s,
            )
            .await
        {
            tracing::warn!(server = %s.name, error = %describe(&e), "could not start the app again through the guest agent");
        }
    }

    /// Puts unit version `version`'s payload on a running server without a reboot, through
    /// the guest agent: stop hook, unmount, the payload disk unplugged and the version's
    /// plugged in, its install hook, config files and start hook; then the persistent
    /// definition and the inventory say so. Its disk and seed (its instance id) stay: the
    /// per-boot script in the guest starts the payload attached at later boots. The same
    /// function goes back (the undo): every part is idempotent.
    async fn swap_live(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        version: u32,
    ) -> Result<(), OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let before = s.version.unwrap_or(ctx.uv.version);
        let (disk, seed) = (s.disk_volume(), s.seed_volume());
        if version != before && swap_plan(ctx, s)?.disk != disk {
            return Err(ValidationError::new(
                "server",
                format!(
                    "{} runs, but v{version} needs a new disk: it must be shut down first",
                    s.name
                ),
            )
            .into());
        }
        // Whichever of the unit's payloads is attached now goes.
        let dir = self.hypervisor.pool_path(uri, pool).await?;
        let path = |v: u32| {
            format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                payload_volume(&ctx.unit.name, v)
            )
        };
        let to = path(version);
        if version == before {
            // Going back (an undo): the new payload's stop hook may fail when its app never
            // started; the old version is put back anyway.
            self.agent_script(
                s,
                host,
                "the stop hook",
                &crate::guest::live_stop_script(true),
                ctx.policy.shutdown_timeout_s,
            )
            .await?;
        } else {
            self.live_stop(ctx, s, host).await?;
        }
        let mut attached = None;
        for v in std::iter::once(before)
            .chain(ctx.prior.keys().copied())
            .chain([ctx.uv.version])
        {
            if v == version {
                continue;
            }
            match self
                .hypervisor
                .domain_swap_disk_live(uri, &s.name, &path(v), &to, Duration::from_secs(30))
                .await?
            {
                DiskSwap::Done => {
                    attached = Some(v);
                    break;
                }
                DiskSwap::NotReleased => {
                    return Err(OpError::Timeout(format!(
                        "{} did not release its payload disk within 30 s (is something in the guest using {}?)",
                        s.name,
                        crate::guest::PAYLOAD_MOUNT
                    )))
                }
                DiskSwap::Missing => {}
            }
        }
        if attached.is_none() {
            return Err(ValidationError::new(
                "server",
                format!(
                    "{} has none of unit {}'s payload disks attached",
                    s.name, ctx.unit.name
                ),
            )
            .into());
        }
        let (uv, image) = ctx.release(version)?;
        let spec = self
            .domain_spec(ctx, s, host, uv, image, &disk, &seed)
            .await?;
        self.hypervisor.domain_define(uri, &spec).await?;
        let script = crate::guest::live_install_script(self.config_commands(ctx, s, version)?);
        self.agent_script(
            s,
            host,
            "the install and start hooks",
            &script,
            LIVE_INSTALL_S,
        )
        .await?;
        self.inventory
            .server_set_volumes(&s.name, &s.disk, &s.seed)?;
        // Going forward it records what to go back to; going back, what it had before.
        let prior = if version == before {
            s.prior.clone()
        } else {
            Some(PriorVolumes {
                version: before,
                disk,
                seed,
            })
        };
        self.inventory.server_set_prior(&s.name, prior.as_ref())?;
        Ok(())
    }

    pub(super) async fn shutdown(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<(), OpError> {
        let uri = &host.uri;
        if self.hypervisor.domain_is_running(uri, &s.name).await? != Some(true) {
            return Ok(());
        }
        self.hypervisor.domain_shutdown(uri, &s.name).await?;
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(ctx.policy.shutdown_timeout_s));
        while Instant::now() < deadline {
            if self.hypervisor.domain_is_running(uri, &s.name).await? != Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if ctx.force {
            self.hypervisor.domain_destroy(uri, &s.name).await?;
            return Ok(());
        }
        Err(OpError::Timeout(format!(
            "{} did not shut down within {} s after the ACPI request; stop it with --force to power it off (unsaved data in the guest may be lost)",
            s.name, ctx.policy.shutdown_timeout_s
        )))
    }
}

/// How long the install and start hooks may take in a server updated without a reboot.
const LIVE_INSTALL_S: u32 = 600;

/// What the steps of a server updated without a reboot say.
const LIVE_NOTE: &str = "without a reboot: through the QEMU guest agent";

/// A detail of a running step (progress only; the journal keeps the step's own rows).
fn note(ctx: &Ctx, s: &Server, step: Step, pos: (u32, u32), detail: &str) {
    (ctx.progress)(StepEvent {
        operation: ctx.op,
        server: s.name.clone(),
        step,
        status: StepStatus::Started,
        detail: detail.to_owned(),
        done: pos.0,
        total: pos.1,
        lb: None,
    });
}

/// The refusal when a domain of the server's name is not the one Flotilla defined for it.
fn foreign_domain(ctx: &Ctx, s: &Server, host: &Host) -> OpError {
    ValidationError::new(
        "server",
        format!(
            "host {} already has a domain named {} that Flotilla did not define for unit {}; it was left alone. Remove or rename it, or give this server another name",
            host.name, s.name, ctx.unit.name
        ),
    )
    .into()
}

/// The volumes a server owns on its host, by name: disk overlay, seed, serial log.
/// What a rollout's swap gives a server, from the server as it was before the operation.
struct SwapPlan {
    disk: String,
    seed: String,
    /// The do creates them (else it boots volumes that exist).
    made_disk: bool,
    made_seed: bool,
    /// After the new seed's instance id: set when the version's own id is the one the guest
    /// runs as already.
    instance_suffix: String,
}

/// Going back to the version the server ran before the last swap (a rollback): its kept disk
/// and seed, booted again. Otherwise a new seed (a new instance-id, so cloud-init installs the
/// new payload) and, when the master or the disk size changed, a new disk.
fn swap_plan(ctx: &Ctx, s: &Server) -> Result<SwapPlan, OpError> {
    if let Some(p) = s.prior.as_ref().filter(|p| p.version == ctx.uv.version) {
        if p.seed == s.seed_volume() || p.disk == s.disk_volume() {
            // Back onto the disk the later version ran on (a definition-only change, or one
            // made without a reboot): its config files and per-boot script are the later
            // version's, and the old instance id would run none of this version's again. A
            // fresh instance id runs its install and config files again.
            return Ok(SwapPlan {
                disk: p.disk.clone(),
                seed: format!("{}-seed-u{}-o{}.img", s.name, ctx.uv.version, ctx.op),
                made_disk: false,
                made_seed: true,
                instance_suffix: format!(".o{}", ctx.op),
            });
        }
        return Ok(SwapPlan {
            disk: p.disk.clone(),
            seed: p.seed.clone(),
            made_disk: false,
            made_seed: false,
            instance_suffix: String::new(),
        });
    }
    let (old_uv, old_image) = ctx.release(s.version.unwrap_or(ctx.uv.version))?;
    let replace = old_image.image != ctx.image.image
        || old_image.version != ctx.image.version
        || old_uv.size.disk_gib != ctx.uv.size.disk_gib;
    Ok(SwapPlan {
        disk: if replace {
            format!("{}-disk-u{}.qcow2", s.name, ctx.uv.version)
        } else {
            s.disk_volume()
        },
        seed: format!("{}-seed-u{}.img", s.name, ctx.uv.version),
        made_disk: replace,
        made_seed: true,
        instance_suffix: String::new(),
    })
}

fn server_volumes(server: &str) -> [String; 3] {
    [
        disk_volume(server),
        seed_volume(server),
        serial_volume(server),
    ]
}

fn lb_of(lb: Option<&(LbDriver, String)>) -> Result<(&LbDriver, &str), OpError> {
    lb.map(|(d, p)| (d, p.as_str())).ok_or_else(|| {
        OpError::Invalid(ValidationError::new(
            "load balancer",
            "this unit has no load balancer",
        ))
    })
}

/// The command that writes one rendered `[[config]]` file with exactly its mode (the
/// definition's, or 0644). The file is created under umask 077 and then given its mode, so it
/// is never readable by others in between. A mode the definition parser would refuse is
/// refused here too (a second guard for a definition that was never parsed), never skipped.
fn config_file_command(path: &str, text: &str, mode: Option<&str>) -> Result<String, OpError> {
    use crate::model::definition::{config_mode_problem, DEFAULT_CONFIG_MODE};
    use base64::Engine as _;
    let mode = mode.unwrap_or(DEFAULT_CONFIG_MODE);
    if let Some(problem) = config_mode_problem(mode) {
        return Err(ValidationError::new("config", format!("{path}: {problem}")).into());
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let dir = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    Ok(format!(
        "mkdir -p {dir} && (umask 077 && echo {b64} | base64 -d > {path}) && chmod {mode} {path}"
    ))
}

#[cfg(test)]
mod tests {
    use super::config_file_command;

    #[test]
    fn config_files_get_exactly_their_mode() {
        let cmd = config_file_command("/etc/app/a.conf", "x=1\n", Some("0640")).unwrap();
        assert_eq!(
            cmd,
            "mkdir -p /etc/app && (umask 077 && echo eD0xCg== | base64 -d > /etc/app/a.conf) \
             && chmod 0640 /etc/app/a.conf"
        );
        let cmd = config_file_command("/a.conf", "", None).unwrap();
        assert!(
            cmd.ends_with("&& chmod 0644 /a.conf"),
            "the default is applied: {cmd}"
        );
        assert!(cmd.starts_with("mkdir -p / &&"), "{cmd}");
        for bad in ["u+x", "0o644", "99", "00644", "644; reboot"] {
            let err = config_file_command("/a.conf", "", Some(bad))
                .expect_err(bad)
                .to_string();
            assert!(
                err.contains("/a.conf") && err.contains("3 or 4 octal digits"),
                "{bad}: {err}"
            );
        }
    }
}
