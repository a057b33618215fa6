//! The driver of unit operations: on the runner's lifecycle (`ops::runner`: begin, lock, end),
//! servers in parallel and in batches, each through its steps (`super::steps::TABLE`), and the
//! undo of every server's steps when one failed. What is particular to an operation kind
//! lives beside it: a rollout's pause, deadline, counters and end in `rollout`, the resume and
//! unwind of an interrupted operation in `resume`.

use super::*;
use crate::ops::exec::{Journal, Ran, UndoError};
use tracing::Instrument;

mod recovery;
mod resume;
mod rollout;

impl Engine {
    pub(super) fn fault_at(&self, server: &str, step: Step) -> Option<bool> {
        self.fault_at_step(server, step.as_str())
    }

    /// Where the log lines of operation `op` are, in words.
    pub(super) fn log_hint(&self, op: i64) -> String {
        format!(
            "flotillactl op log {op}, or the Operations view (files in {})",
            crate::logging::log_dir(self.data_dir()).display()
        )
    }

    /// Runs an action on a unit to its end; `Err(OpError::Failed)` carries the report of a
    /// failed one (what failed, what was undone).
    pub async fn unit_run(
        &self,
        unit: &str,
        action: UnitAction,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        self.unit_run_with(unit, action, None, progress).await
    }

    /// `unit_run`, refused (nothing done) when `expect` is given and the plan's fingerprint
    /// is not that any more once the unit is locked.
    pub(super) async fn unit_run_with(
        &self,
        unit: &str,
        action: UnitAction,
        expect: Option<String>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let args = OpArgs {
            unit: unit.trim().to_owned(),
            action,
            registered: Vec::new(),
            before: Vec::new(),
            kind: None,
            target: None,
            volumes_before: Vec::new(),
            priors_before: Vec::new(),
            moves: Vec::new(),
            expect,
            confirmed_moves: None,
            resumed: false,
        };
        let outcome = self.run_op(args, progress, None).await;
        self.audit(
            &format!(
                "unit.{}",
                outcome.as_ref().map_or("op", |r| r.action.as_str())
            ),
            &format!("unit/{}", unit.trim()),
            &outcome,
        );
        outcome
    }

    pub(super) async fn run_op(
        &self,
        mut args: OpArgs,
        progress: StepFn,
        resumes: Option<i64>,
    ) -> Result<OpReport, OpError> {
        let u = self.inventory.unit_get(&args.unit)?;
        // A recovery that began goes on with its moves, whatever the hosts' states are now.
        let (kind, _, new) = match &args.action {
            UnitAction::Recover { .. } if !args.moves.is_empty() => {
                (OpKind::Recover, Vec::new(), Vec::new())
            }
            a => self.targets(&u, a)?,
        };
        let target = format!("unit/{}", u.name);
        let json = serde_json::to_string(&args).unwrap_or_default();
        let op = self.op_begin(args.action.name(), &target, &json)?;
        if let Some(old) = resumes {
            // The resumed operation hands its lock over, with no gap another could use.
            self.inventory.unit_lock_handover(old, op)?;
            self.op_close(old, "aborted", &format!("interrupted; resumed as #{op}"))?;
        }
        let mut holder = self.inventory.unit_lock(&u.name, op)?;
        if let Some(h) = holder {
            if self.finish_completed(h)? {
                holder = self.inventory.unit_lock(&u.name, op)?;
            }
        }
        if let Some(holder) = holder {
            let kind = self
                .inventory
                .operation_list(200)?
                .into_iter()
                .find(|o| o.id == holder)
                .map_or_else(|| "unknown".into(), |o| o.kind);
            let err = OpError::Busy {
                unit: u.name.clone(),
                operation: holder,
                kind,
            };
            return Err(self.op_abort(op, err));
        }
        if let Some(expect) = args.expect.take() {
            // Under the lock: what was confirmed is what runs, or nothing does.
            if let Err(e) = self.plan_confirmed(&expect, &mut args) {
                return Err(self.op_abort(op, e));
            }
        }
        let span = tracing::info_span!("op", id = op, unit = %u.name, action = args.action.name());
        tracing::info!(parent: &span, resumes = ?resumes, "operation begins");
        let result = self
            .run_locked(op, &mut args, kind, new, progress)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) => tracing::info!(parent: &span, "operation succeeded"),
            Err(e) => tracing::warn!(parent: &span, error = %e, "operation failed"),
        }
        self.op_end(op, result)
    }

    pub(super) async fn run_locked(
        &self,
        op: i64,
        args: &mut OpArgs,
        kind: OpKind,
        new: Vec<NewServer>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let mut warnings = Vec::new();
        let before = self.inventory.unit_get(&args.unit)?;
        if let Some(lb) = &before.lb {
            // Put back what the load balancer lost before changing anything.
            let lb = self.inventory.lb_get(lb)?;
            let r = self.reconcile_unit(&before, &lb).await?;
            if !r.added.is_empty() || !r.corrected.is_empty() {
                let names: Vec<String> = r.added.into_iter().chain(r.corrected).collect();
                warnings.push(format!(
                    "the load balancer had lost members; put back: {}",
                    names.join(", ")
                ));
            }
        }
        if !new.is_empty() {
            self.inventory.server_insert(&args.unit, &new)?;
            args.registered = new.iter().map(|s| s.name.clone()).collect();
        }
        let u = self.inventory.unit_get(&args.unit)?;
        // Recompute the targets: registered servers are planned now.
        let (_, targets, _) = match &args.action {
            UnitAction::Scale { .. } if kind == OpKind::Deploy => {
                self.targets(&u, &UnitAction::Deploy)?
            }
            UnitAction::Recover { .. } => (kind, self.recovery_targets(&u, args)?, Vec::new()),
            a => self.targets(&u, a)?,
        };
        // A resumed operation finishes what it began: the servers it already took out are
        // not charged again.
        if let Some(why) =
            budget_refusal(&u, kind, &targets, &args.action).filter(|_| !args.resumed)
        {
            for name in &args.registered {
                self.inventory.server_delete(name)?;
            }
            return Err(ValidationError::new("min-in-service", why).into());
        }
        // What an unwind restores: the servers as they were before the operation began. A
        // resume keeps what the interrupted run recorded (its servers may be half-way now)
        // and adds only servers it had not reached.
        for t in &targets {
            if !args.before.iter().any(|b| b.0 == t.name) {
                args.before.push((t.name.clone(), t.state, t.version));
            }
        }
        self.rollout_prepare(&u, args, &targets)?;
        args.kind = Some(kind);
        let json = serde_json::to_string(&args).unwrap_or_default();
        let ctx = match self.inventory.operation_set_args(op, &json) {
            Ok(()) => self.context(op, &u, args, progress).await,
            Err(e) => Err(e.into()),
        };
        let ctx = match ctx {
            Ok(c) => c,
            Err(e) => {
                // Nothing ran: forget the servers this operation registered.
                for name in &args.registered {
                    self.inventory.server_delete(name)?;
                }
                return Err(e);
            }
        };
        // Steps see each server as it was before the operation (what a swap plans from and
        // records as what to go back to), also when a resumed run finds it half-way.
        let targets: Vec<Server> = targets.iter().map(|t| args.as_before(t)).collect();
        let mut outcomes = self.run_servers(&ctx, &targets, kind).await;
        if outcomes
            .iter()
            .any(|o| o.failed.as_ref().is_some_and(|f| f.1 == CRASH))
        {
            return Err(OpError::Crashed);
        }
        let stopped = Self::rollout_stopped(&ctx, &mut warnings);
        let failed = stopped || outcomes.iter().any(|o| o.failed.is_some());
        // Without auto-rollback a rollout undoes only the server that failed: the others
        // keep the version that passed its gate, and the unit stays mixed.
        let only_failing = kind == OpKind::Rollout && !ctx.policy.auto_rollback;
        if failed {
            self.unwind_servers(&ctx, args, &targets, &mut outcomes, kind, only_failing)
                .await?;
        }
        let paused = if kind == OpKind::Rollout && !failed {
            self.rollout_end(&ctx, &u, args, &mut warnings).await?
        } else {
            false
        };
        if kind == OpKind::Remove || (kind == OpKind::Rollout && !paused) || failed {
            self.release_host_objects(&ctx).await;
        }
        if let UnitAction::Delete { .. } = args.action {
            if !failed {
                self.inventory.unit_delete(&u.name)?;
            }
        }
        let report = OpReport {
            operation: op,
            unit: u.name.clone(),
            action: args.action.name().into(),
            ok: !failed,
            paused,
            rolled_back: failed
                && kind == OpKind::Rollout
                && !only_failing
                && self.rolled_back(&u, args, &outcomes),
            batches: std::mem::take(&mut *ctx.batches.lock().unwrap_or_else(|e| e.into_inner())),
            servers: outcomes,
            warnings,
            log: self.log_hint(op),
        };
        if failed {
            Err(OpError::Failed(Box::new(report)))
        } else {
            Ok(report)
        }
    }

    /// After a failure: every server's completed steps (and the one that failed) undone,
    /// newest server first, each server then as it was before; the servers the operation
    /// registered forgotten. Steps past the point of no return are not undone, and without
    /// auto-rollback (`only_failing`) a rollout keeps the servers that passed their gate.
    async fn unwind_servers(
        &self,
        ctx: &Ctx,
        args: &OpArgs,
        targets: &[Server],
        outcomes: &mut [ServerOutcome],
        kind: OpKind,
        only_failing: bool,
    ) -> Result<(), OpError> {
        let all_steps = plan::server_steps(kind, ctx.lb.is_some()).len();
        for (o, s) in outcomes.iter_mut().zip(targets).rev() {
            if o.done.iter().any(|d| d.irreversible()) {
                continue;
            }
            // Without auto-rollback a server that passed its gate keeps the new version; one
            // stopped half-way (a batch peer of the failing one) is undone.
            if only_failing && o.failed.is_none() && o.done.len() == all_steps {
                continue;
            }
            let mut steps = o.done.clone();
            if let Some((f, _)) = &o.failed {
                if !steps.contains(f) {
                    steps.push(*f);
                }
            }
            if steps.is_empty() {
                continue;
            }
            // As it was before the operation (a resumed run finds it half-way).
            let s = &args.as_before(s);
            self.undo_server(ctx, s, &steps, o).await;
            self.inventory
                .server_set_state(&s.name, s.state, s.version)?;
        }
        for name in &args.registered {
            self.inventory.server_delete(name)?;
        }
        Ok(())
    }

    /// Everything the steps need, read once.
    pub(super) async fn context(
        &self,
        op: i64,
        u: &Unit,
        args: &OpArgs,
        progress: StepFn,
    ) -> Result<Ctx, OpError> {
        let version = args.target.unwrap_or(u.current_version);
        let uv = u
            .version(version)
            .cloned()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit version",
                name: format!("{}:v{version}", u.name),
            })?;
        let master = |v: &UnitVersion| -> Result<ImageVersion, OpError> {
            Ok(self
                .inventory
                .image_version_get(&crate::model::ImageName::parse(&v.image)?, v.image_version)?)
        };
        let image = master(&uv)?;
        let mut prior = HashMap::new();
        for v in u.versions.iter().filter(|v| v.version != version) {
            let def = self.def_parsed(&v.definition, v.definition_version)?;
            prior.insert(v.version, (v.clone(), master(v)?, def));
        }
        let def = self.def_parsed(&uv.definition, uv.definition_version)?;
        let hosts: HashMap<String, Host> = self
            .host_list()?
            .into_iter()
            .map(|h| (h.name.to_string(), h))
            .collect();
        let lb = match &u.lb {
            Some(name) => {
                let inst = self.inventory.lb_get(name)?;
                let (driver, _) = self.unit_lb_driver(u, &inst)?;
                if !driver.pool_exists(&u.lb_pool).await? {
                    return Err(crate::lb::LbError::NoPool {
                        pool: u.lb_pool.clone(),
                    }
                    .into());
                }
                Some((driver, u.lb_pool.clone()))
            }
            None => None,
        };
        // Hosts the operation may touch: its servers', a recovery's new ones, and those that
        // still hold the unit's payload though no server of it is there any more (a failed
        // host its servers were recovered from): released at the end when nobody needs them.
        let prefix = format!("{}-u", u.name);
        let holding: HashSet<String> = hosts
            .keys()
            .filter(|h| {
                self.inventory.host_object_list(h).is_ok_and(|objs| {
                    // `UNIT-uN-…`, not another unit whose name begins the same.
                    objs.iter().any(|o| {
                        o.strip_prefix(&prefix)
                            .and_then(|rest| rest.split_once('-'))
                            .is_some_and(|(n, _)| {
                                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                            })
                    })
                })
            })
            .cloned()
            .collect();
        let used: HashSet<&String> = u
            .servers
            .iter()
            .map(|s| &s.host)
            .chain(args.moves.iter().map(|m| &m.to))
            .chain(holding.iter())
            .collect();
        let force = args.action.force();
        Ok(Ctx {
            op,
            port: *def.server.port.get_ref(),
            uv,
            image,
            prior,
            kind: args.kind,
            gate_s: match args.kind {
                // Below the health timeout, or no server could pass (a unit made before the
                // gate existed may have a shorter timeout than the gate's default).
                Some(OpKind::Rollout) => {
                    let p = args.action.policy_for(u);
                    p.min_healthy_s.min(p.health_timeout_s.saturating_sub(1))
                }
                _ => 0,
            },
            whole_unit: args.action.whole_unit(),
            began: Instant::now(),
            deadline_passed: AtomicBool::new(false),
            too_many_failed: AtomicBool::new(false),
            counters_missing: AtomicBool::new(false),
            batches: std::sync::Mutex::new(Vec::new()),
            def,
            lb,
            force,
            policy: args.action.policy_for(u),
            progress,
            abort: AtomicBool::new(false),
            host_locks: used
                .iter()
                .map(|h| ((*h).clone(), tokio::sync::Mutex::new(())))
                .collect(),
            host_slots: used
                .iter()
                .map(|h| ((*h).clone(), tokio::sync::Semaphore::new(PER_HOST)))
                .collect(),
            hosts,
            unit: u.clone(),
            moves: args
                .moves
                .iter()
                .map(|m| (m.server.clone(), m.clone()))
                .collect(),
            made_disks: std::sync::Mutex::new(HashSet::new()),
            action: args.action.clone(),
            said: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Runs `kind`'s steps on every server, in batches; stops starting steps after a failure.
    pub(super) async fn run_servers(
        &self,
        ctx: &Ctx,
        servers: &[Server],
        kind: OpKind,
    ) -> Vec<ServerOutcome> {
        let all = plan::server_steps(kind, ctx.lb.is_some());
        // Removal goes in two phases: what can be undone (drain, shutdown, LB removal) on
        // every server first, and only when that worked everywhere what cannot.
        let split = all
            .iter()
            .position(|s| s.irreversible())
            .unwrap_or(all.len());
        let phases: Vec<&[Step]> = if split > 0 && split < all.len() {
            vec![&all[..split], &all[split..]]
        } else {
            vec![&all[..]]
        };
        let batch = plan::batch_size(
            kind,
            ctx.policy.max_unavailable,
            servers.len(),
            ctx.whole_unit,
        );
        let mut outcomes: Vec<ServerOutcome> = servers
            .iter()
            .map(|s| ServerOutcome {
                server: s.name.clone(),
                host: s.host.clone(),
                ..Default::default()
            })
            .collect();
        let total = all.len() as u32;
        for (p, phase) in phases.iter().enumerate() {
            let last = p + 1 == phases.len();
            for (n, chunk) in (0..servers.len())
                .collect::<Vec<_>>()
                .chunks(batch)
                .enumerate()
            {
                if ctx.abort.load(Ordering::SeqCst) {
                    break;
                }
                if kind == OpKind::Rollout && self.rollout_stops_before_batch(ctx, n) {
                    break;
                }
                let counted_from = if kind == OpKind::Rollout {
                    self.pool_counters(ctx).await
                } else {
                    None
                };
                let mut running: FuturesUnordered<_> = chunk
                    .iter()
                    .map(|&i| {
                        let o = std::mem::take(&mut outcomes[i]);
                        let s = &servers[i];
                        let span = tracing::info_span!("server", name = %s.name, host = %s.host);
                        async move {
                            (
                                i,
                                self.run_server(ctx, s, phase, total, kind, last, o)
                                    .instrument(span)
                                    .await,
                            )
                        }
                    })
                    .collect();
                // Behind a load balancer that counts, what it counted so far, every few
                // seconds of a rollout batch.
                let mut tick = tokio::time::interval(Duration::from_secs(rollout::LB_TICK_S));
                tick.tick().await;
                loop {
                    tokio::select! {
                        next = running.next() => match next {
                            Some((i, o)) => outcomes[i] = o,
                            None => break,
                        },
                        _ = tick.tick(), if counted_from.is_some() => {
                            self.show_counters(ctx, counted_from).await;
                        }
                    }
                }
                if kind == OpKind::Rollout {
                    self.count_batch(
                        ctx,
                        chunk.iter().map(|&i| servers[i].name.clone()).collect(),
                        counted_from,
                    )
                    .await;
                }
            }
        }
        outcomes
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_server(
        &self,
        ctx: &Ctx,
        s: &Server,
        steps: &[Step],
        total: u32,
        kind: OpKind,
        last_phase: bool,
        mut o: ServerOutcome,
    ) -> ServerOutcome {
        let _slot = match ctx.host_slots.get(&s.host) {
            Some(sem) => sem.acquire().await.ok(),
            None => None,
        };
        for &step in steps {
            if ctx.abort.load(Ordering::SeqCst) {
                return o;
            }
            let name = format!("{}: {}", s.name, step.as_str());
            let pos = (o.done.len() as u32, total);
            let span = tracing::info_span!("step", name = step.as_str());
            let ran = self
                .unit_journal(ctx)
                .run(
                    &name,
                    &self.step_note(ctx, s, step, total, o.done.len() as u32),
                    || async move {
                        if !self.step_delay.is_zero() {
                            tokio::time::sleep(self.step_delay).await;
                        }
                        self.do_step(ctx, s, step, pos).await
                    },
                    || self.fault_at(&s.name, step),
                    |_| ctx.said(&s.name, step),
                )
                .instrument(span)
                .await;
            let failed = match ran {
                Ran::Done(()) => {
                    o.done.push(step);
                    continue;
                }
                Ran::Failed(e) => describe(&e),
                Ran::NotStarted(e) => format!("could not write the journal: {}", describe(&e)),
                // It happened (and is undone with the rest), but the journal cannot follow
                // any more: stop here.
                Ran::Unrecorded(e) => {
                    o.done.push(step);
                    format!("could not write the journal: {}", describe(&e))
                }
                Ran::Crashed => CRASH.into(),
            };
            ctx.abort.store(true, Ordering::SeqCst);
            o.failed = Some((step, failed));
            return o;
        }
        if !last_phase {
            return o;
        }
        let (state, version) = match kind {
            OpKind::Deploy | OpKind::Recover => (ServerState::Running, Some(ctx.uv.version)),
            OpKind::Start | OpKind::Restart | OpKind::Rejoin => (ServerState::Running, s.version),
            OpKind::Stop => (ServerState::Stopped, s.version),
            OpKind::Rollout => (ServerState::Running, Some(ctx.uv.version)),
            OpKind::Remove => return o,
        };
        if let Err(e) = self.inventory.server_set_state(&s.name, state, version) {
            o.failed = Some((*steps.last().unwrap_or(&Step::Start), e.to_string()));
            ctx.abort.store(true, Ordering::SeqCst);
        }
        o
    }

    /// The journal of the operation `ctx` runs.
    fn unit_journal<'a>(&'a self, ctx: &Ctx) -> Journal<'a> {
        self.journal(ctx.op)
    }

    /// Progress events for one server's step, as its journal rows are written.
    fn step_note<'a>(
        &self,
        ctx: &'a Ctx,
        s: &Server,
        step: Step,
        total: u32,
        done: u32,
    ) -> impl Fn(StepStatus, &str) + Send + Sync + 'a {
        let server = s.name.clone();
        move |status, detail| {
            let done = match status {
                StepStatus::Succeeded => done + 1,
                _ => done,
            };
            (ctx.progress)(StepEvent {
                operation: ctx.op,
                server: server.clone(),
                step,
                status,
                detail: detail.to_owned(),
                done,
                total,
                lb: None,
            })
        }
    }

    /// Undoes `steps` of one server, newest first. A failed undo is journaled and reported
    /// and the older steps are still undone; when the journal cannot be written the server's
    /// undo stops there (undoing without a record is what a crash could not recover from).
    pub(super) async fn undo_server(
        &self,
        ctx: &Ctx,
        s: &Server,
        steps: &[Step],
        o: &mut ServerOutcome,
    ) {
        let total = steps.len() as u32;
        let journal = self.unit_journal(ctx);
        for (i, &step) in steps.iter().enumerate().rev() {
            let name = format!("{}: {}", s.name, step.as_str());
            let note = self.step_note(ctx, s, step, total, i as u32);
            let span =
                tracing::info_span!("undo", server = %s.name, host = %s.host, step = step.as_str());
            let undone = journal
                .undo(&name, &note, || self.undo_step(ctx, s, step))
                .instrument(span)
                .await;
            match undone {
                Ok(()) => o.undone.push(step),
                Err(UndoError::NotStarted(msg)) => {
                    for st in steps[..=i].iter().rev() {
                        o.undo_failed.push((*st, msg.clone()));
                    }
                    return;
                }
                Err(UndoError::Failed(msg)) => o.undo_failed.push((step, msg)),
            }
        }
    }
}

/// The journal marker of a simulated crash.
pub(in crate::ops::units) const CRASH: &str = "simulated crash";
