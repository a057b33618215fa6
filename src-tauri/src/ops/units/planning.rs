//! The plan of an operation on a unit: which servers it touches (`targets`), the ordered
//! steps per server with a recovery's moves and fences (`unit_plan`), the fingerprint of
//! what it was computed from, and the check that what runs is the plan the admin confirmed.
//! The decisions themselves are in `plan/`; this reads the inventory and asks them.

use super::*;

impl Engine {
    /// The fingerprint of a plan for `action` on a unit with these servers (and the new ones
    /// it would register): the unit, its load-balancer binding and its servers' hosts as the
    /// inventory has them now.
    pub(super) fn fingerprint_of(
        &self,
        action: &UnitAction,
        unit: &UnitFacts<'_>,
        servers: Vec<plan::ServerBasis>,
        new_servers: Vec<plan::ServerBasis>,
    ) -> Result<String, OpError> {
        let action_policy = match action {
            UnitAction::Rollout { policy, .. } => policy.clone(),
            _ => None,
        };
        let (action_servers, count) = match action {
            UnitAction::Start { servers }
            | UnitAction::Rejoin { servers }
            | UnitAction::Stop { servers, .. }
            | UnitAction::Restart { servers, .. } => (servers.clone(), None),
            UnitAction::Scale { count } => (Vec::new(), Some(*count)),
            // A canary changes which servers run; a rollout's own policy, how.
            UnitAction::Rollout { canary, .. } => (Vec::new(), *canary),
            // Not the confirmation: it changes the fences the plan shows, not what runs where.
            UnitAction::Recover { from, .. } => (from.clone(), None),
            UnitAction::Deploy | UnitAction::Delete { .. } => (Vec::new(), None),
        };
        let lb = match unit.lb {
            Some((name, pool)) => {
                let i = self.inventory.lb_get(name)?;
                Some(plan::LbBasis {
                    name: i.name,
                    kind: i.kind,
                    endpoint: i.endpoint,
                    route_id: i.route_id,
                    pool: pool.to_owned(),
                })
            }
            None => None,
        };
        let used: HashSet<&str> = servers
            .iter()
            .chain(&new_servers)
            .map(|s| s.host.as_str())
            .collect();
        let hosts = self
            .host_list()?
            .into_iter()
            .filter(|h| used.contains(h.name.as_str()))
            .map(|h| plan::HostBasis {
                name: h.name.to_string(),
                uri: h.uri.to_string(),
                pool: h.pool.as_str().to_owned(),
                bridge: h.bridge.as_str().to_owned(),
                network: h.network,
                gateway: h.gateway,
                domain_type: h.domain_type,
            })
            .collect();
        Ok(plan::fingerprint(&plan::PlanBasis {
            action: action.name().to_owned(),
            action_servers,
            count,
            unit: unit.name.to_owned(),
            version: unit.version,
            image: unit.image.0.to_owned(),
            image_version: unit.image.1,
            definition: unit.definition.0.to_owned(),
            definition_version: unit.definition.1,
            size: unit.size,
            name_pattern: unit.name_pattern.to_owned(),
            addresses: unit.addresses.to_owned(),
            lb,
            policy: action_policy.unwrap_or_else(|| unit.policy.clone()),
            servers,
            new_servers,
            hosts,
        }))
    }

    /// `Ok` when a fresh plan (made by `make` once `expect` is known to be a fingerprint)
    /// still has the fingerprint `expect` the admin was shown; otherwise the refusal that
    /// carries the new plan.
    pub(super) fn plan_unchanged(
        expect: &str,
        make: impl FnOnce() -> Result<OpPlan, OpError>,
    ) -> Result<(), OpError> {
        let shown = plan::parse_fingerprint(expect)?;
        let fresh = make()?;
        if fresh.fingerprint == shown {
            Ok(())
        } else {
            Err(OpError::PlanChanged {
                shown,
                plan: Box::new(fresh),
            })
        }
    }

    /// Runs `action` as [`Engine::unit_run`] does — only when a fresh plan still has the
    /// fingerprint `expect` of the plan the admin confirmed, if one is given. Otherwise
    /// nothing is done and the error carries the new plan.
    ///
    /// The check is made once the operation holds the unit's lock, so nothing can change the
    /// unit between the check and the first step.
    pub async fn unit_run_planned(
        &self,
        unit: &str,
        action: UnitAction,
        expect: Option<&str>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        if let Some(expect) = expect {
            if let Err(e) = plan::parse_fingerprint(expect) {
                let refused: Result<(), OpError> = Err(e.into());
                self.audit(
                    &format!("unit.{}", action.name()),
                    &format!("unit/{}", unit.trim()),
                    &refused,
                );
                refused?;
            }
        }
        self.unit_run_with(unit, action, expect.map(str::to_owned), progress)
            .await
    }

    /// The dry run: which servers the action touches and the steps of each, in order.
    pub fn unit_plan(&self, unit: &str, action: &UnitAction) -> Result<OpPlan, OpError> {
        Ok(self.unit_plan_moves(unit, action)?.0)
    }

    /// Under the unit's lock: `Ok` when a fresh plan still has the fingerprint `expect` the
    /// admin confirmed (else the refusal that carries the new plan, as [`Self::plan_unchanged`]);
    /// a recovery then carries that plan's moves in `args.confirmed_moves`, and runs those.
    pub(super) fn plan_confirmed(&self, expect: &str, args: &mut OpArgs) -> Result<(), OpError> {
        let mut moves = None;
        Self::plan_unchanged(expect, || {
            let (plan, m) = self.unit_plan_moves(&args.unit, &args.action)?;
            moves = m;
            Ok(plan)
        })?;
        args.confirmed_moves = moves;
        Ok(())
    }

    /// [`Engine::unit_plan`], and a recovery's moves (decided once: its targets, fingerprint
    /// and fences are of these).
    pub(super) fn unit_plan_moves(
        &self,
        unit: &str,
        action: &UnitAction,
    ) -> Result<(OpPlan, Option<Vec<Move>>), OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let moves = match action {
            UnitAction::Recover { from, host_is_off } => {
                Some(self.recover_moves(&u, from, host_is_off)?)
            }
            _ => None,
        };
        let (kind, mut targets, new) = match &moves {
            Some(moves) => (OpKind::Recover, Self::moved(&u, moves), Vec::new()),
            None => self.targets(&u, action)?,
        };
        let fingerprint = self.fingerprint_of(
            action,
            &UnitFacts::of(&u),
            u.servers
                .iter()
                .map(|s| {
                    let state = format!("{}@{}", s.state.as_str(), s.version.unwrap_or(0));
                    server_basis(&s.name, &s.host, &s.address, &s.mac, &state)
                })
                .collect(),
            new.iter()
                .map(|s| server_basis(&s.name, &s.host, &s.address, &s.mac, "new"))
                // Where a recovery re-creates each server: the run must go where the plan said.
                .chain(
                    targets
                        .iter()
                        .filter(|_| kind == OpKind::Recover)
                        .map(|s| server_basis(&s.name, &s.host, &s.address, &s.mac, "moved")),
                )
                .collect(),
        )?;
        let lb = u.lb.is_some();
        let target = match action {
            UnitAction::Rollout { back, .. } => Some(rollout_target(&u, *back)?),
            _ => None,
        };
        let mut warnings = Vec::new();
        if let Some(why) = budget_refusal(&u, kind, &targets, action) {
            warnings.push(format!("this will not start: {why}"));
        }
        // A recovery: the fence of each server, and whether the recovery may start.
        let fences = match (action, &moves) {
            (UnitAction::Recover { host_is_off, .. }, Some(moves)) => {
                let fences = self.recover_fences(&u, moves, host_is_off)?;
                if let Some(why) = plan::fence::manual_refusal(&u.name, &fences) {
                    warnings.push(format!("this will not start: {why}"));
                }
                fences
            }
            _ => Vec::new(),
        };
        let mut servers: Vec<ServerPlan> = targets
            .drain(..)
            .map(|s| ServerPlan {
                fence: fences
                    .iter()
                    .find(|(name, _, _)| *name == s.name)
                    .map(|(_, host, f)| ServerFence {
                        host: host.clone(),
                        words: f.words(host),
                        fence: f.clone(),
                    }),
                steps: plan::server_steps(kind, lb),
                note: match (target, action) {
                    (Some(t), _) => update::rollout_note(&u, &s, t),
                    (None, UnitAction::Recover { .. }) => u
                        .servers
                        .iter()
                        .find(|o| o.name == s.name)
                        .map(|o| format!("re-created here: its host {} failed", o.host))
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                server: s.name,
                host: s.host,
                address: s.address,
            })
            .collect();
        for s in new {
            servers.push(ServerPlan {
                steps: plan::server_steps(OpKind::Deploy, lb),
                server: s.name,
                host: s.host,
                address: s.address,
                note: "new".into(),
                fence: None,
            });
        }
        if matches!(action, UnitAction::Deploy | UnitAction::Rollout { .. }) && servers.is_empty() {
            warnings.push("every server is deployed already: nothing to do".into());
        }
        if let (Some(_), OpKind::Rollout | OpKind::Restart) = (&u.lb, kind) {
            match self.inventory.unit_lb_checks(&u.name)?.as_str() {
                "tcp" | "tls" => warnings.push(
                    "the load balancer checks these servers over TCP only: a server counts as ready once its port is open, before the application answers; set `option httpchk GET <health path>` on the backend (docs/haproxy.md)".into(),
                ),
                _ => {}
            }
        }
        if let Some(lb) = &u.lb {
            if self.lb_show(lb)?.kind == crate::model::LbKind::Caddy {
                warnings.push("Caddy has no drain state: servers leave rotation at once and get the drain timeout as a grace period".into());
            }
        }
        let batch_size = plan::batch_size(
            kind,
            action.policy_for(&u).max_unavailable,
            servers.len(),
            action.whole_unit(),
        ) as u32;
        let in_service = u
            .servers
            .iter()
            .filter(|s| {
                s.state == ServerState::Running && (u.lb.is_none() || s.lb_state == "ready")
            })
            .count() as u32;
        let in_service_during = match kind {
            OpKind::Restart | OpKind::Rollout | OpKind::Stop | OpKind::Remove => {
                Some(in_service.saturating_sub(batch_size.min(servers.len() as u32)))
            }
            OpKind::Deploy | OpKind::Start | OpKind::Recover | OpKind::Rejoin => None,
        };
        let batches = (servers.len() as u32).div_ceil(batch_size.max(1));
        let (estimate_s, estimate_from) = match self.per_server_time(&u.name, action.name())? {
            Some((secs, ops)) if batches > 0 => (
                Some((secs * f64::from(batches)).round() as u32),
                format!(
                    "{batches} batches × {secs:.0} s per server, the average of this unit's last {ops} {} operations",
                    action.name()
                ),
            ),
            _ => (
                None,
                format!(
                    "no earlier {} of this unit to estimate from",
                    action.name()
                ),
            ),
        };
        let plan = OpPlan {
            unit: u.name.clone(),
            action: action.name().into(),
            batch_size,
            servers,
            warnings,
            confirm: match action {
                UnitAction::Delete { .. } => delete_confirmation(&u),
                _ => None,
            },
            fingerprint,
            in_service_during,
            estimate_s,
            estimate_from,
        };
        Ok((plan, moves))
    }

    /// How long one server took on average in this unit's last few succeeded operations of
    /// `kind` (first step begun → last step done, from the journal's whole-second times), and
    /// how many operations that is from.
    pub(crate) fn per_server_time(
        &self,
        unit: &str,
        kind: &str,
    ) -> Result<Option<(f64, usize)>, OpError> {
        let target = format!("unit/{unit}");
        let parse = |at: &str| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp())
        };
        let mut times = Vec::new();
        let mut ops = 0;
        for op in self
            .inventory
            .operation_list(200)?
            .into_iter()
            .filter(|o| o.target == target && o.kind == kind && o.state == "succeeded")
            .take(5)
        {
            let mut per: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
            for st in &op.steps {
                let (Some((server, _)), Some(t)) = (st.step.split_once(": "), parse(&st.at)) else {
                    continue;
                };
                let e = per.entry(server).or_insert((t, t));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t);
            }
            if !per.is_empty() {
                ops += 1;
                times.extend(per.values().map(|(a, b)| (b - a) as f64));
            }
        }
        Ok((!times.is_empty()).then(|| (times.iter().sum::<f64>() / times.len() as f64, ops)))
    }

    /// The kind of per-server work, the existing servers it applies to, and servers a scale
    /// out would register.
    pub(super) fn targets(
        &self,
        u: &Unit,
        action: &UnitAction,
    ) -> Result<(OpKind, Vec<Server>, Vec<NewServer>), OpError> {
        let chosen = |names: &[String], state: ServerState| -> Result<Vec<Server>, OpError> {
            plan::unit::chosen(u, names, state).map_err(|name| {
                InventoryError::NotFound {
                    kind: "server of this unit",
                    name,
                }
                .into()
            })
        };
        Ok(match action {
            UnitAction::Deploy => (OpKind::Deploy, chosen(&[], ServerState::Planned)?, vec![]),
            UnitAction::Start { servers } => (
                OpKind::Start,
                chosen(servers, ServerState::Stopped)?,
                vec![],
            ),
            UnitAction::Stop { servers, .. } => {
                (OpKind::Stop, chosen(servers, ServerState::Running)?, vec![])
            }
            UnitAction::Restart { servers, .. } => (
                OpKind::Restart,
                chosen(servers, ServerState::Running)?,
                vec![],
            ),
            UnitAction::Delete { .. } => (OpKind::Remove, u.servers.clone(), vec![]),
            UnitAction::Rejoin { servers } => (OpKind::Rejoin, self.rejoining(u, servers)?, vec![]),
            UnitAction::Recover { from, host_is_off } => (
                OpKind::Recover,
                Self::moved(u, &self.recover_moves(u, from, host_is_off)?),
                vec![],
            ),
            UnitAction::Rollout { back, policy, .. } => {
                if let Some(p) = policy {
                    p.validate()?;
                }
                if action.policy_for(u).max_failed_requests.is_some() {
                    let counts = match &u.lb {
                        Some(lb) => {
                            self.inventory.lb_get(lb)?.kind == crate::model::LbKind::Haproxy
                        }
                        None => false,
                    };
                    if !counts {
                        return Err(ValidationError::new(
                            "max-failed-requests",
                            format!(
                                "unit {}'s load balancer keeps no request counters (only HAProxy does), so a limit on failed requests could not be checked",
                                u.name
                            ),
                        )
                        .into());
                    }
                }
                let target = rollout_target(u, *back)?;
                let canary = match action {
                    UnitAction::Rollout { canary, .. } => *canary,
                    _ => None,
                };
                (
                    OpKind::Rollout,
                    plan::unit::rollout_servers(u, target, canary)?,
                    vec![],
                )
            }
            UnitAction::Scale { count } => {
                if *count > MAX_SERVERS {
                    return Err(ValidationError::new(
                        "count",
                        format!("{count} is more than the {MAX_SERVERS} servers a unit may have"),
                    )
                    .into());
                }
                let have = u.servers.len() as u32;
                if *count >= have {
                    let new = if *count > have {
                        let form = UnitForm {
                            count: count - have,
                            name_pattern: u.name_pattern.clone(),
                            addresses: u.addresses.clone(),
                            ..Default::default()
                        };
                        if u.name_pattern.is_empty() {
                            return Err(ValidationError::new(
                                "count",
                                format!("unit {} has no name pattern and address range to name new servers by; register servers with names instead", u.name),
                            )
                            .into());
                        }
                        let size = u.current().map_or(plan::FALLBACK_SIZE, |v| v.size);
                        self.servers_for(&u.name, &form, size)?.0
                    } else {
                        Vec::new()
                    };
                    // Planned servers (a scale out that was interrupted) deploy too.
                    (OpKind::Deploy, chosen(&[], ServerState::Planned)?, new)
                } else {
                    let names: Vec<&str> = u.servers.iter().map(|s| s.name.as_str()).collect();
                    let remove: Vec<Server> =
                        plan::scale_in(&names, &u.name_pattern, (have - count) as usize)
                            .into_iter()
                            .map(|i| u.servers[i].clone())
                            .collect();
                    (OpKind::Remove, remove, vec![])
                }
            }
        })
    }
}
