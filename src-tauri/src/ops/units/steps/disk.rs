//! `create-disk`, `write-seed`: a server's own volumes, and the seed it boots with.

use super::*;

impl Engine {
    pub(in crate::ops::units) async fn do_create_disk(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
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

    pub(in crate::ops::units) async fn undo_create_disk(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { s, host, .. } = c;
        self.delete_own(s, host, &s.disk_volume()).await
    }

    /// On a disk this operation did not make (an earlier failed deploy's, whose undo
    /// could not run, or a crashed run's) the guest may have booted and kept the
    /// version's instance id: cloud-init would then run none of the install, config
    /// files and start again (a half-done first boot stays half-done). A fresh instance
    /// id runs them again (hooks are idempotent, docs/guest-contract.md).
    pub(in crate::ops::units) async fn do_write_seed(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
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

    pub(in crate::ops::units) async fn undo_write_seed(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { s, host, .. } = c;
        self.delete_own(s, host, &s.seed_volume()).await
    }

    /// The server's disk `name`: a new overlay of `image`'s copy on the host, sized
    /// `disk_gib` (0: the master's). Its own disk from an earlier attempt is used only when it
    /// is an overlay of that copy, never booted otherwise. True when it was created now (false:
    /// that earlier disk is used).
    pub(in crate::ops::units) async fn create_disk(
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
    pub(in crate::ops::units) async fn write_seed(
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

    pub(in crate::ops::units) fn seed_spec(
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
    pub(in crate::ops::units) fn config_commands(
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

    /// After a rollout: deletes the volumes of the unit's servers that no server uses any
    /// more (a disk of the master it left, seeds of earlier versions). Only volumes recorded
    /// as that server's; a failure is a warning (the next rollout tries again).
    pub(in crate::ops::units) async fn drop_prior_volumes(&self, ctx: &Ctx) -> Vec<String> {
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
}

/// The isolation response a server's seed installs, from the unit's policy: its address (or
/// the gateway of the host's network, port 80), or `None` when the policy has none.
pub(in crate::ops::units) fn isolation_of(
    ctx: &Ctx,
    host: &Host,
) -> Result<Option<crate::guest::Isolation>, OpError> {
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

/// The command that writes one rendered `[[config]]` file with exactly its mode (the
/// definition's, or 0644). The file is created under umask 077 and then given its mode, so it
/// is never readable by others in between. A mode the definition parser would refuse is
/// refused here too (a second guard for a definition that was never parsed), never skipped.
pub(in crate::ops::units) fn config_file_command(
    path: &str,
    text: &str,
    mode: Option<&str>,
) -> Result<String, OpError> {
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
