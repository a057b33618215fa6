//! `ensure-master`, `ensure-payload`: the objects units share on a host (a master's copy,
//! a unit version's payload), pinned while in use and released at the end of the operation
//! when nobody needs them (`release_host_objects`). No undo: they are shared.

use super::*;

impl Engine {
    /// Shared by every unit and operation that uses them: pinned while in use, released
    /// at the end of the operation when nobody needs them (`release_host_objects`).
    pub(in crate::ops::units) async fn do_ensure_master(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx {
            ctx,
            s,
            host,
            step,
            pos,
            ..
        } = c;
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

    pub(in crate::ops::units) async fn do_ensure_payload(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let _g = match ctx.host_locks.get(&s.host) {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        self.ensure_payload(ctx, host).await
    }

    /// Refuses to upload a master to a host whose pool cannot hold it.
    pub(in crate::ops::units) async fn ensure_space(
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
    pub(in crate::ops::units) async fn ensure_payload(
        &self,
        ctx: &Ctx,
        host: &Host,
    ) -> Result<(), OpError> {
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

    pub(in crate::ops::units) async fn ensure_payload_pinned(
        &self,
        ctx: &Ctx,
        host: &Host,
    ) -> Result<(), OpError> {
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
    pub(in crate::ops::units) async fn host_object_ok(
        &self,
        host: &Host,
        volume: &str,
    ) -> Result<bool, OpError> {
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
    pub(in crate::ops::units) async fn host_object_upload(
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
    pub(in crate::ops::units) async fn release_host_objects(&self, ctx: &Ctx) {
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
    pub(in crate::ops::units) fn unit_version_deployed_on(
        &self,
        unit: &str,
        version: u32,
        host: &str,
    ) -> bool {
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
    pub(in crate::ops::units) fn image_deployed_on(
        &self,
        image: &str,
        version: u32,
        host: &str,
    ) -> bool {
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
    pub(in crate::ops::units) async fn release_one(
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
}
