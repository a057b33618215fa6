//! `define`, `start`, `shutdown`: a server's domain.

use super::*;

impl Engine {
    pub(in crate::ops::units) async fn do_define(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
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

    pub(in crate::ops::units) async fn undo_define(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
        // Never someone else's domain of the same name (the step refused to touch it).
        if self.domain_owner(ctx, s, host).await? == Owner::Unit {
            self.hypervisor.domain_destroy(uri, &s.name).await?;
            self.hypervisor.domain_undefine(uri, &s.name).await?;
        }
        self.delete_own(s, host, &serial_volume(&s.name)).await
    }

    pub(in crate::ops::units) async fn do_start(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
        self.refuse_foreign(ctx, s, host).await?;
        Ok(self.hypervisor.domain_start(uri, &s.name).await?)
    }

    pub(in crate::ops::units) async fn undo_start(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
        self.refuse_foreign(ctx, s, host).await?;
        // A server updated without a reboot was running before this step: it stays up
        // for the swap's undo, which goes back the same way.
        if !self.swapped_live(ctx, s)? {
            self.hypervisor.domain_destroy(uri, &s.name).await?;
        }
        Ok(())
    }

    /// A rollout that can swap the payload through the guest agent stops the app, not
    /// the server (`live_swap_possible`).
    pub(in crate::ops::units) async fn do_shutdown(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx {
            ctx,
            s,
            host,
            step,
            pos,
            ..
        } = c;
        self.refuse_foreign(ctx, s, host).await?;
        if self.live_swap_possible(ctx, s, host).await? {
            note(ctx, s, step, pos, LIVE_NOTE);
            return self.live_stop(ctx, s, host).await;
        }
        self.shutdown(ctx, s, host).await
    }

    pub(in crate::ops::units) async fn undo_shutdown(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
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

    #[allow(clippy::too_many_arguments)]
    pub(in crate::ops::units) async fn domain_spec(
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

    pub(in crate::ops::units) async fn shutdown(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<(), OpError> {
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
