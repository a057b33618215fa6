//! Unit versions as the unit of change: `unit update` records the next version as pending
//! (nothing changes on the hosts), `unit rollout` moves the running servers to it (the
//! executor's `OpKind::Rollout`), `unit rollback` moves them back. Each version's history entry
//! says what changed against the one before.

use super::*;

/// What `unit update` changes; what is not given stays as in the unit's newest version.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitUpdate {
    /// `IMAGE` (its newest version) or `IMAGE:VERSION`.
    pub image: Option<String>,
    /// `DEF` (its newest version) or `DEF:VERSION`.
    pub definition: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_gib: Option<u32>,
}

/// One unit version and what changed against the version before it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitVersionEntry {
    pub version: UnitVersion,
    /// current, pending, or past.
    pub status: String,
    /// Servers running it now.
    pub servers: u32,
    /// One line per change: the master (with the new version's notes and lineage), the
    /// definition (its diff, line by line), the size.
    pub changes: Vec<String>,
}

impl Engine {
    /// Records the unit's next version as pending; the unit keeps serving on its current one
    /// (`unit rollout` applies it). Refused when it would change nothing.
    pub fn unit_update(&self, unit: &str, form: &UnitUpdate) -> Result<UnitVersion, OpError> {
        let outcome = self.unit_update_inner(unit.trim(), form);
        self.audit("unit.update", &format!("unit/{}", unit.trim()), &outcome);
        outcome
    }

    fn unit_update_inner(&self, unit: &str, form: &UnitUpdate) -> Result<UnitVersion, OpError> {
        let u = self.inventory.unit_get(unit)?;
        let current = u
            .current()
            .cloned()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit version",
                name: format!("{unit}:v{}", u.current_version),
            })?;
        let image = match &form.image {
            Some(text) => {
                let (n, v) = parse_ref("image", text)?;
                let r = ImageRef::parse(&n)?;
                let v = match v {
                    Some(v) => self.inventory.image_version_get(&r.image, v)?,
                    None => self.inventory.image_version_latest(&r.image)?,
                };
                (v.image.to_string(), v.version)
            }
            None => (current.image.clone(), current.image_version),
        };
        let definition = match &form.definition {
            Some(text) => {
                let (n, v) = parse_ref("definition", text)?;
                let v = self.def_show(&n, v)?.version;
                (v.name, v.version)
            }
            None => (current.definition.clone(), current.definition_version),
        };
        let size = ServerSize {
            cpus: form.cpus.unwrap_or(current.size.cpus),
            memory_mib: form.memory_mib.unwrap_or(current.size.memory_mib),
            disk_gib: form.disk_gib.unwrap_or(current.size.disk_gib),
        };
        size.validate()?;
        let new_def = self.def_parsed(&definition.0, definition.1)?;
        let old_def = self.def_parsed(&current.definition, current.definition_version)?;
        // The load balancer's members are addressed by the port: a rollout cannot move it.
        if new_def.server.port.get_ref() != old_def.server.port.get_ref() {
            return Err(ValidationError::new(
                "definition",
                format!(
                    "{}:v{} serves on port {}, the unit's servers on {}: a rollout keeps the load balancer's members, so the port cannot change; create a new unit for the new port",
                    definition.0,
                    definition.1,
                    new_def.server.port.get_ref(),
                    old_def.server.port.get_ref()
                ),
            )
            .into());
        }
        if image == (current.image.clone(), current.image_version)
            && definition == (current.definition.clone(), current.definition_version)
            && size == current.size
        {
            return Err(ValidationError::new(
                "update",
                format!(
                    "unit {unit} runs {}:v{}, {}:v{} at this size already: nothing to update",
                    image.0, image.1, definition.0, definition.1
                ),
            )
            .into());
        }
        let version = self.inventory.unit_version_add(
            unit,
            &crate::inventory::NewUnitVersion {
                image,
                definition,
                size,
            },
        )?;
        Ok(self
            .inventory
            .unit_get(unit)?
            .version(version)
            .cloned()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit version",
                name: format!("{unit}:v{version}"),
            })?)
    }

    /// Rolls the unit back: a rollout in progress (servers on a version that is not the
    /// current one) goes back to the current version; otherwise `to` (default: the version
    /// before the current one) is recorded again as the next version and rolled out.
    pub async fn unit_rollback(
        &self,
        unit: &str,
        to: Option<u32>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let mixed = u
            .servers
            .iter()
            .any(|s| s.version.is_some_and(|v| v != u.current_version));
        if mixed && to.is_none_or(|t| t == u.current_version) {
            return self
                .unit_run(
                    &u.name,
                    UnitAction::Rollout {
                        back: true,
                        canary: None,
                        policy: None,
                    },
                    progress,
                )
                .await;
        }
        if mixed {
            return Err(ValidationError::new(
                "to",
                format!(
                    "unit {} is in the middle of a rollout: roll it back to its current version v{} first (flotillactl unit rollback {})",
                    u.name, u.current_version, u.name
                ),
            )
            .into());
        }
        let to = to.unwrap_or(u.current_version.saturating_sub(1));
        let Some(old) = u.version(to).filter(|_| to != u.current_version) else {
            return Err(ValidationError::new(
                "to",
                format!(
                    "unit {} has no earlier version v{to} to roll back to (its versions: {})",
                    u.name,
                    u.versions
                        .iter()
                        .map(|v| format!("v{}", v.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .into());
        };
        self.unit_update(
            &u.name,
            &UnitUpdate {
                image: Some(format!("{}:{}", old.image, old.image_version)),
                definition: Some(format!("{}:{}", old.definition, old.definition_version)),
                cpus: Some(old.size.cpus),
                memory_mib: Some(old.size.memory_mib),
                disk_gib: Some(old.size.disk_gib),
            },
        )?;
        self.unit_run(
            &u.name,
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
            progress,
        )
        .await
    }

    /// Sets the unit's policy (checked first): what later rollouts, restarts and stops of
    /// chosen servers run under.
    pub fn unit_set_policy(
        &self,
        unit: &str,
        policy: &RolloutPolicy,
    ) -> Result<RolloutPolicy, OpError> {
        let outcome = policy
            .validate()
            .map_err(OpError::from)
            .and_then(|()| Ok(self.inventory.unit_set_policy(unit.trim(), policy)?))
            .map(|()| policy.clone());
        self.audit("unit.policy", &format!("unit/{}", unit.trim()), &outcome);
        outcome
    }

    /// Asks the unit's running rollout (in any process) to pause at its next safe point,
    /// between batches; it ends as paused (`unit promote` goes on). Returns its operation.
    pub fn unit_pause(&self, unit: &str) -> Result<i64, OpError> {
        let outcome = self
            .inventory
            .unit_request_pause(unit.trim())
            .map_err(OpError::from);
        self.audit("unit.pause", &format!("unit/{}", unit.trim()), &outcome);
        outcome
    }

    /// The unit's versions, newest first, each with what changed against the one before.
    pub fn unit_history(&self, unit: &str) -> Result<Vec<UnitVersionEntry>, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let pending = u.pending().map(|v| v.version);
        let mut out = Vec::new();
        for (i, v) in u.versions.iter().enumerate() {
            let mut changes = Vec::new();
            match i.checked_sub(1).map(|p| &u.versions[p]) {
                None => changes.push(format!(
                    "first version: master {}:v{}, definition {}:v{}",
                    v.image, v.image_version, v.definition, v.definition_version
                )),
                Some(p) => {
                    if (&p.image, p.image_version) != (&v.image, v.image_version) {
                        let notes = crate::model::ImageName::parse(&v.image)
                            .ok()
                            .and_then(|n| {
                                self.inventory.image_version_get(&n, v.image_version).ok()
                            })
                            .map(|iv| {
                                let base = iv
                                    .parent
                                    .map(|pv| format!(", built from {}:v{pv}", iv.image))
                                    .unwrap_or_default();
                                format!("{}{base}", quote_notes(&iv.notes))
                            })
                            .unwrap_or_default();
                        changes.push(format!(
                            "master {}:v{} → {}:v{}{notes}",
                            p.image, p.image_version, v.image, v.image_version
                        ));
                    }
                    if (&p.definition, p.definition_version)
                        != (&v.definition, v.definition_version)
                    {
                        changes.push(format!(
                            "definition {}:v{} → {}:v{}",
                            p.definition, p.definition_version, v.definition, v.definition_version
                        ));
                        if p.definition == v.definition {
                            if let Ok(diff) = self.def_diff(
                                &v.definition,
                                p.definition_version,
                                v.definition_version,
                            ) {
                                changes.extend(diff.into_iter().map(|l| format!("  {l}")));
                            }
                        }
                    }
                    if p.size != v.size {
                        changes.push(format!(
                            "size {} CPUs, {} MiB, {} GiB → {} CPUs, {} MiB, {} GiB",
                            p.size.cpus,
                            p.size.memory_mib,
                            p.size.disk_gib,
                            v.size.cpus,
                            v.size.memory_mib,
                            v.size.disk_gib
                        ));
                    }
                }
            }
            out.push(UnitVersionEntry {
                status: if v.version == u.current_version {
                    "current"
                } else if Some(v.version) == pending {
                    "pending"
                } else {
                    "past"
                }
                .into(),
                servers: u
                    .servers
                    .iter()
                    .filter(|s| s.version == Some(v.version))
                    .count() as u32,
                changes,
                version: v.clone(),
            });
        }
        out.reverse();
        Ok(out)
    }
}

fn quote_notes(notes: &str) -> String {
    let n = notes.trim();
    if n.is_empty() {
        String::new()
    } else {
        format!(" (notes: {})", n.lines().next().unwrap_or(n))
    }
}

/// What a rollout does to one server, in words (the plan's note).
pub(super) fn rollout_note(u: &Unit, s: &Server, target: u32) -> String {
    let (Some(old), Some(new)) = (u.version(s.version.unwrap_or(target)), u.version(target)) else {
        return String::new();
    };
    if old.version == new.version {
        return format!("back into rotation on v{target}");
    }
    let replace = (&old.image, old.image_version, old.size.disk_gib)
        != (&new.image, new.image_version, new.size.disk_gib);
    if replace {
        format!(
            "replace: v{} → v{target}, a new disk of {}:v{} (the old disk is kept until the rollout is done)",
            old.version, new.image, new.image_version
        )
    } else {
        format!(
            "in place: v{} → v{target}, same disk, new payload: without a reboot where the QEMU guest agent answers, else a reboot with a new seed and instance-id",
            old.version
        )
    }
}
