//! `swap`: a rollout's new version on a server (a new seed and perhaps disk, or the same
//! through the guest agent without a reboot), and back.

use super::*;

impl Engine {
    /// `s` is the server as it was before the operation: its version, disk and seed.
    pub(in crate::ops::units) async fn do_swap(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx {
            ctx,
            s,
            host,
            step,
            pos,
            ..
        } = c;
        let uri = &host.uri;
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

    pub(in crate::ops::units) async fn undo_swap(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
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

    /// Whether a rollout step can update the server without a reboot: the swap keeps its
    /// disk and only changes the payload (or goes back to a payload it swapped that way), the
    /// server runs, and its QEMU guest agent answers. Else the update reboots it with a new
    /// seed (docs/guest-contract.md).
    pub(in crate::ops::units) async fn live_swap_possible(
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
    pub(in crate::ops::units) fn swapped_live(
        &self,
        ctx: &Ctx,
        s: &Server,
    ) -> Result<bool, OpError> {
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
    pub(in crate::ops::units) async fn agent_script(
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
    pub(in crate::ops::units) async fn live_stop(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<(), OpError> {
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
    pub(in crate::ops::units) async fn live_restart_app(&self, ctx: &Ctx, s: &Server, host: &Host) {
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
    pub(in crate::ops::units) async fn swap_live(
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
}

/// How long the install and start hooks may take in a server updated without a reboot.
pub(in crate::ops::units) const LIVE_INSTALL_S: u32 = 600;

/// What a rollout's swap gives a server, from the server as it was before the operation.
pub(in crate::ops::units) struct SwapPlan {
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
