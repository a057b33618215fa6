//! Recovery from failed hosts (`unit recover`): the servers of hosts the monitor says failed
//! are fenced at the load balancer and re-created on surviving hosts with their names,
//! addresses and MACs, under their next generation; and the reconcile of a host that comes
//! back, which removes the stale copies before the host is ready again.

use super::steps::{Dir, Owner};
use super::*;
use crate::inventory::{FenceMethod, HostFence};
use crate::model::HostState;
use crate::monitor::{Change, Reconciled};
use crate::plan::fence::{fence_for, Fence, FenceFacts};

use crate::plan::names::generation_volumes;

/// How long a BMC has to report the host's power off after `ForceOff`.
const POWER_OFF_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a recovery re-creates a server, and what it had on the failed host (its undo records
/// it there again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Move {
    pub server: String,
    pub from: String,
    pub to: String,
    pub disk: String,
    pub seed: String,
    pub generation: u32,
    /// The version it ran there, and a rollout's record of what it ran before: a server
    /// lost in the middle of a rollout keeps its way back (journals from before these were
    /// kept have none).
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub prior: Option<crate::inventory::PriorVolumes>,
    /// The isolation response its guest had there.
    #[serde(default)]
    pub isolation_s: u32,
}

/// What the reconcile of a returning host did.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostReconcile {
    pub host: String,
    /// Domains of servers that live on another host now: destroyed and undefined here.
    pub removed: Vec<String>,
    /// Their volumes deleted here.
    pub volumes: Vec<String>,
    /// What could not be removed, and why: the host is not clean yet.
    pub failed: Vec<String>,
}

impl Engine {
    /// The lost hosts a recovery takes servers from: `from` as asked, or every host of the
    /// unit the monitor says failed (and those the admin confirms are off). Each must be lost
    /// as the monitor sees it now: *failed* (libvirt lost, and the load balancer hears nothing
    /// from its servers), or *unreachable* (libvirt lost, no second witness) when the admin
    /// confirms it is off. A *partitioned* host is never one: its servers answer, they run.
    fn failed_hosts(
        &self,
        u: &Unit,
        from: &[String],
        confirmed: &[String],
    ) -> Result<Vec<String>, OpError> {
        let hosts = self.host_list()?;
        let state_of = |name: &str| {
            hosts
                .iter()
                .find(|h| h.name.as_str() == name)
                .map(|h| h.monitor.state)
        };
        for h in confirmed {
            crate::model::HostName::parse(h)
                .map_err(|e| ValidationError::new("host-is-off", e.problem))?;
            match state_of(h) {
                None => {
                    return Err(InventoryError::NotFound {
                        kind: "host",
                        name: h.clone(),
                    }
                    .into())
                }
                Some(Some(HostState::Failed | HostState::Unreachable)) => {}
                Some(state) => {
                    return Err(ValidationError::new(
                        "host-is-off",
                        format!(
                            "host {h} is {}: {}",
                            state.map_or("not monitored".to_owned(), |s| s.as_str().to_owned()),
                            match state {
                                Some(HostState::Partitioned) => "its servers answer the load balancer, so they run; it is not off",
                                None => "start the monitor (flotillactl monitor, or the desktop app) so that Flotilla knows it is lost",
                                _ => "libvirt answers it (or did a moment ago), so it is not off",
                            }
                        ),
                    )
                    .into())
                }
            }
        }
        let usable = |name: &str| {
            state_of(name).is_some_and(|state| {
                plan::recover::lost_host(state, confirmed.iter().any(|c| c == name))
            })
        };
        if from.is_empty() {
            let mut failed: Vec<String> = u
                .servers
                .iter()
                .map(|s| s.host.clone())
                .filter(|h| usable(h))
                .collect();
            failed.sort();
            failed.dedup();
            return Ok(failed);
        }
        for h in from {
            // A host name first (a clear error that does not echo a huge input).
            crate::model::HostName::parse(h)
                .map_err(|e| ValidationError::new("from", e.problem))?;
            match state_of(h) {
                None => {
                    return Err(InventoryError::NotFound {
                        kind: "host",
                        name: h.clone(),
                    }
                    .into())
                }
                Some(_) if usable(h) => {}
                Some(state) => {
                    return Err(ValidationError::new(
                        "from",
                        format!(
                            "host {h} is {}, not failed: Flotilla re-creates servers only from a host that is lost on both planes (libvirt lost, and the load balancer hears nothing from its servers){}",
                            state.map_or("not monitored".to_owned(), |s| s.as_str().to_owned()),
                            match state {
                                None => "; start the monitor (flotillactl monitor, or the desktop app)",
                                Some(HostState::Unreachable) => "; without a second witness, only when you confirm that it is off (--host-is-off)",
                                Some(HostState::Partitioned) => "; its servers answer the load balancer, so they run",
                                _ => "",
                            }
                        ),
                    )
                    .into())
                }
            }
        }
        Ok(from.to_vec())
    }

    /// The servers of `u` on the failed hosts and where each is re-created, by the one
    /// placement rule (`plan::place_one`, as the Impact view places them): a host the monitor
    /// says is ready, whose network holds the server's address, with memory left for it, the
    /// CPUs (when known) and its master or pool space for a copy; the one with the fewest
    /// servers of the unit first, then the most memory left, then the name.
    pub(super) fn recover_moves(
        &self,
        u: &Unit,
        from: &[String],
        confirmed: &[String],
    ) -> Result<Vec<Move>, OpError> {
        let failed = self.failed_hosts(u, from, confirmed)?;
        let lost = plan::recover::lost_servers(u, &failed);
        if lost.is_empty() {
            return Ok(Vec::new());
        }
        let master = u
            .current()
            .map_or((String::new(), 0), |v| (v.image.clone(), v.image_version));
        let host_list = self.host_list()?;
        let images = self.image_list()?;
        // The hosts a recovery may use: ready (as the monitor says now) and not lost.
        let units = self.inventory.unit_list()?;
        let mut rooms: Vec<plan::HostRoom> = Self::host_shapes(&host_list, &images, &units)
            .iter()
            .zip(&host_list)
            .filter(|(shape, h)| {
                h.monitor.state == Some(HostState::Ready) && !failed.contains(&shape.name)
            })
            .map(|(shape, _)| shape.room())
            .collect();
        let master_bytes = crate::ops::impact::master_bytes(&images, &master);
        let to = plan::recover::recover_hosts(u, &lost, &mut rooms, master_bytes)?;
        let moves = lost
            .into_iter()
            .zip(to)
            .map(|(s, to)| Move {
                server: s.name.clone(),
                from: s.host.clone(),
                to,
                disk: s.disk.clone(),
                seed: s.seed.clone(),
                generation: s.generation,
                version: s.version,
                prior: s.prior.clone(),
                isolation_s: s.isolation_s,
            })
            .collect();
        Ok(moves)
    }

    /// The fence of each server a recovery re-creates (`moves`): what proves its old copy is
    /// off before the new one starts (`plan::fence`). `confirmed`: the hosts the admin confirms
    /// are off with this recovery.
    pub(super) fn recover_fences(
        &self,
        u: &Unit,
        moves: &[Move],
        confirmed: &[String],
    ) -> Result<Vec<(String, String, Fence)>, OpError> {
        let mut out = Vec::new();
        let now = time::OffsetDateTime::now_utc();
        for m in moves {
            let host = self.host_show(&m.from)?;
            let recorded = self.inventory.host_fence_get(&m.from)?;
            let bmc = self.bmc_words(&host);
            let last_seen_ago = time::OffsetDateTime::parse(
                &host.monitor.last_seen,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
            .map(|t| std::time::Duration::try_from(now - t).unwrap_or_default());
            let facts = FenceFacts {
                host: &m.from,
                recorded: recorded
                    .as_ref()
                    .map(|r| (r.method.as_str(), r.by.as_str())),
                confirmed_by: confirmed
                    .contains(&m.from)
                    .then_some(self.actor.user.as_str()),
                bmc: bmc.as_deref(),
                isolation_s: m.isolation_s,
                policy_isolation_s: u.policy.isolation_timeout_s,
                last_seen_ago,
            };
            out.push((m.server.clone(), m.from.clone(), fence_for(&facts)));
        }
        Ok(out)
    }

    /// The `fence` step: the server's old copy is known to be off before anything else of the
    /// recovery happens, and the proof is recorded (`host_fences`, the audit log) and
    /// journaled. One server at a time per lost host: the first powers the host off or
    /// records the admin's confirmation, the others find the record. An isolation response
    /// is waited out here (the operation says how long is left). Undo: nothing — a host that
    /// was powered off stays off, and the proof stays true for this loss of the host.
    pub(super) async fn fence(&self, ctx: &Ctx, s: &Server, dir: Dir) -> Result<(), OpError> {
        if dir == Dir::Undo {
            return Ok(());
        }
        let m = ctx.moves.get(&s.name).ok_or_else(|| {
            ValidationError::new("server", format!("{} is not part of this recovery", s.name))
        })?;
        let _one_at_a_time = match ctx.host_locks.get(&m.from) {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let confirmed = match &ctx.action {
            UnitAction::Recover { host_is_off, .. } => host_is_off.clone(),
            _ => Vec::new(),
        };
        loop {
            if ctx.abort.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(OpError::Timeout(format!(
                    "the recovery stopped while {} waited for its fence",
                    s.name
                )));
            }
            let host = self.still_lost(m)?;
            let (_, _, fence) = self
                .recover_fences(&ctx.unit, std::slice::from_ref(m), &confirmed)?
                .remove(0);
            let record = |method: FenceMethod, by: String, detail: String| {
                let f = HostFence {
                    host: m.from.clone(),
                    method,
                    by,
                    detail,
                    at: String::new(),
                    operation: Some(ctx.op),
                };
                let outcome = self.inventory.host_fence_record(&f).map_err(OpError::from);
                self.audit("host.fence", &format!("host/{}", m.from), &outcome);
                outcome.map(|()| f.detail)
            };
            let said = match &fence {
                Fence::Recorded { .. } => fence.words(&m.from),
                Fence::Confirmed { by } => record(
                    FenceMethod::Confirmed,
                    by.clone(),
                    format!(
                        "{by} confirmed with operation #{} that {} is off",
                        ctx.op, m.from
                    ),
                )?,
                Fence::Power { .. } => {
                    let progress = |what: &str| self.fence_progress(ctx, s, what.to_owned());
                    let proof = self
                        .host_power_off(&m.from, POWER_OFF_LIMIT, &progress)
                        .await?;
                    record(FenceMethod::Power, proof.by.clone(), proof.by)?
                }
                // Each server's own guest acts: nothing is recorded for the host.
                Fence::Isolation {
                    isolation_s,
                    wait_s: 0,
                } => format!(
                    "{}: its guest powered itself off {isolation_s} s after it lost its load balancer (host last seen at {}, {} s of margin)",
                    s.name,
                    host.monitor.last_seen,
                    crate::plan::fence::ISOLATION_MARGIN.as_secs()
                ),
                Fence::Isolation { wait_s, .. } => {
                    self.fence_progress(
                        ctx,
                        s,
                        format!(
                            "waiting {wait_s} s more for the isolation response of {}'s guest on {} (last seen at {})",
                            s.name, m.from, host.monitor.last_seen
                        ),
                    );
                    tokio::time::sleep(std::time::Duration::from_secs((*wait_s).min(2))).await;
                    continue;
                }
                Fence::None { .. } => {
                    return Err(OpError::FenceNeeded(format!(
                        "{}: {}",
                        s.name,
                        fence.words(&m.from)
                    )))
                }
            };
            ctx.note(&s.name, Step::Fence, said);
            return Ok(());
        }
    }

    /// The host `m` takes its server from, while it is still lost (failed, or unreachable):
    /// one that answers again may run the server's copy, so it is not re-created elsewhere.
    fn still_lost(&self, m: &Move) -> Result<Host, OpError> {
        let host = self.host_show(&m.from)?;
        if matches!(
            host.monitor.state,
            Some(HostState::Failed | HostState::Unreachable)
        ) {
            return Ok(host);
        }
        Err(ValidationError::new(
            "from",
            format!(
                "host {} is {} now: its copy of {} may run, so it is not re-created elsewhere",
                m.from,
                host.monitor.state.map_or("not monitored", |st| st.as_str()),
                m.server
            ),
        )
        .into())
    }

    fn fence_progress(&self, ctx: &Ctx, s: &Server, detail: String) {
        (ctx.progress)(StepEvent {
            operation: ctx.op,
            server: s.name.clone(),
            step: Step::Fence,
            status: crate::inventory::StepStatus::Started,
            detail,
            done: 0,
            total: 0,
            lb: None,
        });
    }

    /// Servers of `u` held out of rotation because their host was lost, that run on their
    /// host again now that it is ready (its libvirt lists them running): what a rejoin puts
    /// back. `names`: only these (each must be such a server); empty: all.
    pub(super) fn rejoining(&self, u: &Unit, names: &[String]) -> Result<Vec<Server>, OpError> {
        let hosts = self.host_list()?;
        let back = |s: &Server| {
            hosts.iter().any(|h| {
                h.name.as_str() == s.host
                    && h.monitor.state == Some(HostState::Ready)
                    && !h.monitor.not_running.contains(&s.name)
            })
        };
        let held = |s: &Server| {
            s.state == ServerState::Running && !s.fenced_at.is_empty() && s.lb_state != "ready"
        };
        for n in names {
            let Some(s) = u.servers.iter().find(|s| s.name == *n) else {
                return Err(InventoryError::NotFound {
                    kind: "server of this unit",
                    name: n.chars().take(64).collect(),
                }
                .into());
            };
            if !held(s) {
                return Err(ValidationError::new(
                    "server",
                    format!("{n} is not held out of rotation because of its host"),
                )
                .into());
            }
            if !back(s) {
                return Err(ValidationError::new(
                    "server",
                    format!(
                        "{n}'s host {} is not ready or does not run it: it cannot rejoin yet",
                        s.host
                    ),
                )
                .into());
            }
        }
        Ok(u.servers
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .filter(|s| held(s) && back(s))
            .cloned()
            .collect())
    }

    /// Fills in, for each server of `u` held out of rotation because its host was lost, what
    /// happened and what brings it back.
    pub(super) fn say_fenced(u: &mut Unit, hosts: &[Host]) {
        let unit = u.name.clone();
        for s in u.servers.iter_mut().filter(|s| !s.fenced_at.is_empty()) {
            let at = s
                .fenced_at
                .get(11..16)
                .map_or(s.fenced_at.clone(), |hm| format!("{hm} UTC"));
            let host = hosts.iter().find(|h| h.name.as_str() == s.host);
            let state = host.and_then(|h| h.monitor.state);
            let running = host.is_some_and(|h| !h.monitor.not_running.contains(&s.name));
            let next = match state {
                Some(HostState::Ready) if s.state == ServerState::Running && running => format!(
                    "it runs there again and goes back into rotation after its check (flotillactl unit rejoin {unit} --server {})",
                    s.name
                ),
                Some(HostState::Ready) => format!(
                    "it does not run there: restart it (flotillactl unit restart {unit} --server {})",
                    s.name
                ),
                _ => format!(
                    "back in rotation by itself once {} answers again and its check passes; or re-create it elsewhere (flotillactl unit recover {unit})",
                    s.host
                ),
            };
            s.fenced = format!("fenced: {} was cut off at {at}; {next}", s.host);
        }
    }

    /// Servers of `u` recorded as running on hosts the monitor says are ready but whose
    /// libvirt does not run them (a host back without a recovery: shut off there, fenced), as
    /// the way back in words; empty when there are none.
    pub(super) fn shut_off_in_place(&self, u: &Unit) -> Result<String, OpError> {
        let hosts = self.host_list()?;
        let down: Vec<&str> = u
            .servers
            .iter()
            .filter(|s| s.state == ServerState::Running)
            .filter(|s| {
                hosts.iter().any(|h| {
                    h.name.as_str() == s.host
                        && h.monitor.state == Some(HostState::Ready)
                        && h.monitor.not_running.contains(&s.name)
                })
            })
            .map(|s| s.name.as_str())
            .collect();
        if down.is_empty() {
            return Ok(String::new());
        }
        Ok(format!(
            "; {} on a host that is back is not running there: restart it in place with flotillactl unit restart {}{}",
            down.join(", "),
            u.name,
            down.iter().map(|s| format!(" --server {s}")).collect::<String>()
        ))
    }

    /// The recovering servers as the steps see them: on the new host, with new volumes there,
    /// their next generation, the unit's current version.
    pub(super) fn moved(u: &Unit, moves: &[Move]) -> Vec<Server> {
        moves
            .iter()
            .filter_map(|m| {
                let mut s = u.servers.iter().find(|s| s.name == m.server)?.clone();
                let (disk, seed) = generation_volumes(&s.name, m.generation + 1);
                s.host = m.to.clone();
                s.disk = disk;
                s.seed = seed;
                s.prior = None;
                s.generation = m.generation + 1;
                s.version = Some(u.current_version);
                Some(s)
            })
            .collect()
    }

    /// Relocate: fenced at the load balancer, then recorded on the new host under its next
    /// generation; undone, recorded on the failed host again (still fenced: it is down).
    pub(super) async fn relocate(&self, ctx: &Ctx, s: &Server, dir: Dir) -> Result<(), OpError> {
        let m = ctx.moves.get(&s.name).ok_or_else(|| {
            ValidationError::new("server", format!("{} is not part of this recovery", s.name))
        })?;
        match dir {
            Dir::Do => {
                // Still lost now (it may have come back while earlier servers were being
                // re-created): else its copy may run, and this one would be a second.
                self.still_lost(m)?;
                if ctx.lb.is_some() {
                    self.lb_set(ctx, s, MemberState::Maint).await?;
                }
                // Volumes named for this generation: whatever an older one left on that host
                // (a reconcile that could not finish) is never booted again.
                let (disk, seed) = generation_volumes(&s.name, m.generation + 1);
                self.inventory.server_relocate(
                    &s.name,
                    &crate::inventory::Placement {
                        host: m.to.clone(),
                        generation: m.generation + 1,
                        version: s.version,
                        disk,
                        seed,
                        prior: None,
                    },
                )?;
                // Its guest there has the isolation response its new seed gives it.
                self.inventory.server_set_isolation(&s.name, 0)?;
            }
            Dir::Undo => {
                // Back on the failed host only once nothing of it is left on the new one
                // (the later steps' undo removed it); else it stays recorded there, where its
                // copy is.
                let to = ctx.host(&m.to)?;
                if self.domain_owner(ctx, s, to).await? != Owner::Absent {
                    return Err(ValidationError::new(
                        "server",
                        format!(
                            "{} still has a domain on host {}: it stays recorded there",
                            s.name, m.to
                        ),
                    )
                    .into());
                }
                self.inventory.server_relocate(
                    &s.name,
                    &crate::inventory::Placement {
                        host: m.from.clone(),
                        generation: m.generation,
                        disk: m.disk.clone(),
                        seed: m.seed.clone(),
                        version: m.version,
                        prior: m.prior.clone(),
                    },
                )?;
                self.inventory
                    .server_set_isolation(&s.name, m.isolation_s)?;
            }
        }
        Ok(())
    }

    /// Fencing: every server of a failed host out of rotation at its load balancer
    /// (maintenance: instant), recorded as its wanted state — undone by a recovery's health
    /// gate, or by `unit restart` when the host comes back without one. Returns what could not
    /// be fenced.
    pub async fn fence_host(&self, host: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let units = match self.inventory.unit_list() {
            Ok(u) => u,
            Err(e) => return vec![e.to_string()],
        };
        for u in units.iter().filter(|u| u.lb.is_some()) {
            let Some(lb) = &u.lb else { continue };
            let driver = match self
                .inventory
                .lb_get(lb)
                .map_err(OpError::from)
                .and_then(|inst| self.unit_lb_driver(u, &inst).map(|(d, _)| d))
            {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("unit {}: {}", u.name, describe(&e)));
                    continue;
                }
            };
            for s in u.servers.iter().filter(|s| {
                s.host == host && s.state != ServerState::Planned && s.lb_state != "none"
            }) {
                let port = match u
                    .current()
                    .map(|v| self.def_parsed(&v.definition, v.definition_version))
                {
                    Some(Ok(def)) => *def.server.port.get_ref(),
                    Some(Err(e)) => {
                        problems.push(format!("unit {}: {}", u.name, describe(&e)));
                        continue;
                    }
                    None => continue,
                };
                let Ok(addr) = member_address(&s.address, port) else {
                    continue;
                };
                // Recorded as wanted first, so that no reconcile of the load balancer puts it
                // back in rotation (also when the call below fails); a recovery (or a
                // restart) does, once it is healthy.
                if let Err(e) = self
                    .inventory
                    .server_set_lb_state(&s.name, "maint")
                    .and_then(|()| {
                        self.inventory
                            .server_set_fenced(&s.name, &crate::inventory::now_rfc3339())
                    })
                {
                    problems.push(format!("{}: {e}", s.name));
                    continue;
                }
                match driver
                    .member_set(&u.lb_pool, &s.name, addr, MemberState::Maint)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(server = %s.name, host, "fenced: in maintenance at the load balancer")
                    }
                    Err(e) => problems.push(format!("{}: {e}", s.name)),
                }
            }
        }
        problems
    }

    /// Before a host that was lost is ready again: the domains on it of servers that now live
    /// on another host (same unit and server in its metadata, an older generation) are
    /// destroyed and undefined, and the volumes recorded there as theirs deleted, so that no
    /// address answers from two machines. Anything else on the host is left alone.
    pub async fn host_reconcile(&self, host: &str) -> Result<HostReconcile, OpError> {
        let h = self.host_show(host)?;
        let mut out = HostReconcile {
            host: h.name.to_string(),
            ..Default::default()
        };
        let servers = self.inventory.server_list()?;
        for name in self.hypervisor.domain_names(&h.uri).await? {
            let Some(props) = self
                .hypervisor
                .domain_flotilla_metadata(&h.uri, &name)
                .await?
            else {
                continue;
            };
            let prop = |k: &str| {
                props
                    .iter()
                    .find(|(pk, _)| pk == k)
                    .map(|(_, v)| v.as_str())
            };
            let generation: u32 = prop("generation").and_then(|g| g.parse().ok()).unwrap_or(0);
            let stale = servers.iter().any(|s| {
                Some(s.name.as_str()) == prop("server")
                    && s.name == name
                    && Some(s.unit.as_str()) == prop("unit")
                    && s.host != h.name.as_str()
                    && s.generation > generation
            });
            if !stale {
                continue;
            }
            // Not while an operation of its unit runs or is interrupted (a recovery's undo
            // may still record the server back here): the host is not clean yet.
            if let Some(op) = prop("unit")
                .map(|u| self.inventory.unit_locked_by(u))
                .transpose()?
                .flatten()
            {
                out.failed.push(format!(
                    "{name}: its unit is held by operation #{op}; removed once that operation ended"
                ));
                continue;
            }
            let removed = async {
                self.hypervisor.domain_destroy(&h.uri, &name).await?;
                self.hypervisor.domain_undefine(&h.uri, &name).await?;
                Ok::<_, OpError>(())
            }
            .await;
            match removed {
                Ok(()) => out.removed.push(name.clone()),
                Err(e) => {
                    out.failed.push(format!("{name}: {}", describe(&e)));
                    continue;
                }
            }
            for v in self.inventory.server_volumes_on(h.name.as_str(), &name)? {
                let deleted = self
                    .hypervisor
                    .volume_delete(&h.uri, &h.pool, &v)
                    .await
                    .map_err(OpError::from)
                    .and_then(|_| Ok(self.inventory.server_volume_forget(h.name.as_str(), &v)?));
                match deleted {
                    Ok(()) => out.volumes.push(v),
                    Err(e) => out.failed.push(format!("{v}: {}", describe(&e))),
                }
            }
        }
        // Volumes recorded here for servers that live on another host now, with no domain of
        // theirs left here: what an earlier reconcile could not delete, or what one that was
        // skipped (their unit was busy) left. Never while their unit is held by an operation
        // (a recovery's undo records a server back here with them).
        let domains = self.hypervisor.domain_names(&h.uri).await?;
        for s in servers.iter().filter(|s| s.host != h.name.as_str()) {
            let left = self.inventory.server_volumes_on(h.name.as_str(), &s.name)?;
            if left.is_empty() || domains.contains(&s.name) {
                continue;
            }
            if let Some(op) = self.inventory.unit_locked_by(&s.unit)? {
                out.failed.push(format!(
                    "volumes of {} ({}): its unit is held by operation #{op}; removed once that operation ended",
                    s.name,
                    left.join(", ")
                ));
                continue;
            }
            for v in left {
                let deleted = self
                    .hypervisor
                    .volume_delete(&h.uri, &h.pool, &v)
                    .await
                    .map_err(OpError::from)
                    .and_then(|_| Ok(self.inventory.server_volume_forget(h.name.as_str(), &v)?));
                match deleted {
                    Ok(()) => out.volumes.push(v),
                    Err(e) => out.failed.push(format!("{v}: {}", describe(&e))),
                }
            }
        }
        let outcome: Result<&HostReconcile, OpError> = Ok(&out);
        self.audit("host.reconcile", &format!("host/{}", h.name), &outcome);
        Ok(out)
    }
}

impl Engine {
    /// The host's BMC in words, when it has one (power fencing).
    pub(crate) fn bmc_words(&self, host: &Host) -> Option<String> {
        host.bmc
            .as_ref()
            .map(|b| format!("{}, system {}", b.url, b.system))
    }
}

/// The monitor's hooks for the front doors: a failed host is fenced at once, and the units
/// that allow it are queued for an automatic recovery (`auto`, see
/// [`Engine::monitor_with_recovery`]); a returning host is ready only once its stale domains
/// are gone.
#[derive(Debug, Default, Clone)]
pub struct RecoveryHooks {
    auto: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl crate::ops::monitor::MonitorHooks for RecoveryHooks {
    fn on_transition<'a>(
        &'a self,
        engine: &'a Engine,
        change: &'a Change,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if change.to == HostState::Ready && change.from == Some(HostState::Returning) {
                // The loss ended: its fence (a power-off, a confirmation) proves nothing about
                // the next one.
                engine
                    .inventory
                    .host_fence_clear(&change.host)
                    .map_err(|e| e.to_string())?;
                // Servers that kept running there through a partition go back into rotation
                // after the load balancer's own check, without a reboot.
                let mut problems = Vec::new();
                for u in engine.inventory.unit_list().map_err(|e| e.to_string())? {
                    let back = match engine.rejoining(&u, &[]) {
                        Ok(b) => b,
                        Err(e) => {
                            problems.push(format!("unit {}: {}", u.name, describe(&e)));
                            continue;
                        }
                    };
                    if !back.iter().any(|s| s.host == change.host) {
                        continue;
                    }
                    let servers = back
                        .into_iter()
                        .filter(|s| s.host == change.host)
                        .map(|s| s.name)
                        .collect();
                    if let Err(e) = engine
                        .unit_run(&u.name, UnitAction::Rejoin { servers }, Arc::new(|_| {}))
                        .await
                    {
                        problems.push(format!(
                            "unit {}: its servers on {} did not rejoin: {} (flotillactl unit rejoin {})",
                            u.name,
                            change.host,
                            describe(&e),
                            u.name
                        ));
                    }
                }
                return if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("; "))
                };
            }
            if change.to == HostState::Returning {
                // Connections opened before the host was lost may be dead without libvirt
                // knowing yet (the first call on them fails): every call opens a fresh one.
                if let Ok(h) = engine.host_show(&change.host) {
                    engine.hypervisor.forget(&h.uri);
                }
                return Ok(());
            }
            if change.to != HostState::Failed {
                return Ok(());
            }
            let problems = engine.fence_host(&change.host).await;
            if let Some(auto) = &self.auto {
                for u in engine.inventory.unit_list().map_err(|e| e.to_string())? {
                    let hit = u
                        .servers
                        .iter()
                        .any(|s| s.host == change.host && s.state != ServerState::Planned);
                    if hit && u.policy.auto_recover_per_day > 0 {
                        // The receiver lives as long as the monitor: a send cannot fail
                        // while it runs.
                        let _ = auto.send(u.name.clone());
                    }
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(format!("could not fence: {}", problems.join("; ")))
            }
        })
    }

    fn reconcile<'a>(
        &'a self,
        engine: &'a Engine,
        host: &'a Host,
    ) -> futures_util::future::BoxFuture<'a, Reconciled> {
        Box::pin(async move {
            match engine.host_reconcile(host.name.as_str()).await {
                Ok(r) if r.failed.is_empty() && r.removed.is_empty() && r.volumes.is_empty() => {
                    Reconciled::clean()
                }
                Ok(r) if r.failed.is_empty() && r.removed.is_empty() => Reconciled::Clean {
                    done: format!(
                        "removed {} volumes left by servers that live on other hosts now",
                        r.volumes.len()
                    ),
                },
                Ok(r) if r.failed.is_empty() => Reconciled::Clean {
                    done: format!(
                        "removed the stale copies of {} (they live on other hosts now) and {} of their volumes",
                        r.removed.join(", "),
                        r.volumes.len()
                    ),
                },
                Ok(r) => Reconciled::NotYet {
                    why: format!("stale copies left: {}", r.failed.join("; ")),
                },
                Err(e) => Reconciled::NotYet {
                    why: format!("could not reconcile: {}", describe(&e)),
                },
            }
        })
    }
}

impl Engine {
    /// The monitor with fencing, reconcile and automatic recovery: what both front doors run.
    /// A unit whose policy allows automatic recoveries is recovered when the monitor finds
    /// one of its hosts failed — one recovery at a time, beside the monitor's rounds (which
    /// go on meanwhile), at most `auto_recover_per_day` in 24 hours, never while the monitor
    /// is frozen. A recovery still running when the monitor stops is left to the journal
    /// (offered for resume or unwind).
    pub async fn monitor_with_recovery(
        &self,
        thresholds: crate::monitor::Thresholds,
        via: &str,
        report: &(dyn Fn(crate::monitor::MonitorEvent) + Send + Sync),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), OpError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let hooks = RecoveryHooks { auto: Some(tx) };
        let monitor = self.monitor_run(thresholds, via, &hooks, report, stop);
        // Each unit's recovery beside the others (one waiting out an isolation time never
        // holds another back), after the group window: when more hosts are lost meanwhile,
        // the monitor freezes and nothing is fenced or recovered automatically.
        let window = thresholds.group_window();
        let worker = async {
            let mut running = futures_util::stream::FuturesUnordered::new();
            let mut queued = std::collections::HashSet::new();
            loop {
                tokio::select! {
                    unit = rx.recv() => match unit {
                        Some(unit) => {
                            if queued.insert(unit.clone()) {
                                running.push(async move {
                                    tokio::time::sleep(window).await;
                                    let outcome = self.unit_auto_recover(&unit).await;
                                    (unit, outcome)
                                });
                            }
                        }
                        None => break,
                    },
                    Some((unit, outcome)) = futures_util::StreamExt::next(&mut running), if !running.is_empty() => {
                        queued.remove(&unit);
                        let (ok, what) = match outcome {
                            Ok(what) => (true, what),
                            Err(what) => (false, what),
                        };
                        report(crate::monitor::MonitorEvent::AutoRecovery {
                            at: crate::inventory::now_rfc3339(),
                            unit,
                            ok,
                            what,
                        });
                    }
                }
            }
        };
        tokio::select! {
            ran = monitor => ran,
            () = worker => Ok(()),
        }
    }

    /// One automatic recovery of `unit`, if its policy, the limit and the monitor allow it
    /// now: what it did, or why not.
    pub async fn unit_auto_recover(&self, unit: &str) -> Result<String, String> {
        let u = self.inventory.unit_get(unit).map_err(|e| e.to_string())?;
        let limit = u.policy.auto_recover_per_day;
        if limit == 0 {
            return Err("its policy allows no automatic recovery".into());
        }
        if let Some(why) = self.monitor_status().map_err(|e| describe(&e))?.frozen {
            return Err(format!("the monitor is frozen ({why})"));
        }
        let since = time::OffsetDateTime::now_utc() - time::Duration::hours(24);
        let target = format!("unit/{}", u.name);
        let recent = self
            .inventory
            .operation_list(500)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|o| o.target == target && o.kind == "recover" && !o.steps.is_empty())
            .filter(|o| {
                time::OffsetDateTime::parse(
                    &o.started_at,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok_and(|t| t >= since)
            })
            .count();
        if recent >= limit as usize {
            return Err(format!(
                "{recent} recoveries in the last 24 hours, its limit is {limit}: recover it by hand (flotillactl unit recover {})",
                u.name
            ));
        }
        let moves = self.recover_moves(&u, &[], &[]).map_err(|e| describe(&e))?;
        if moves.is_empty() {
            // Another host's failure queued it too, and the first recovery took them all.
            return Ok("nothing left to recover".into());
        }
        // Never without a fence it can act on alone: what it would do, and why it waits.
        let fences = self
            .recover_fences(&u, &moves, &[])
            .map_err(|e| describe(&e))?;
        if let Some(why) = crate::plan::fence::automatic_refusal(&fences) {
            let would: Vec<String> = moves
                .iter()
                .map(|m| format!("{} from {} to {}", m.server, m.from, m.to))
                .collect();
            // Without confirmations, the fences it cannot act on are exactly the missing ones.
            return Err(format!(
                "would re-create {}; {}",
                would.join(", "),
                crate::plan::fence::manual_refusal(&u.name, &fences).unwrap_or(why)
            ));
        }
        match self
            .unit_run(
                &u.name,
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: Vec::new(),
                },
                Arc::new(|_| {}),
            )
            .await
        {
            Ok(r) => Ok(r.to_string()),
            Err(e) => Err(describe(&e)),
        }
    }
}
