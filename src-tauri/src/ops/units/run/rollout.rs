//! What is particular to a rollout: its preparation (the target version, the volumes to go
//! back to), the safe point between batches (a pause asked for, the deadline), the load
//! balancer's counters per batch and the limit on failed requests, and its end (done, or
//! paused with a mixed unit).

use super::*;

impl Engine {
    /// Before the first step: the version the rollout goes to, and what each server ran (its
    /// volumes, its prior ones) for the way back. A resume keeps what it recorded.
    pub(super) fn rollout_prepare(
        &self,
        u: &Unit,
        args: &mut OpArgs,
        targets: &[Server],
    ) -> Result<(), OpError> {
        let UnitAction::Rollout { back, .. } = args.action else {
            return Ok(());
        };
        // A pause asked for an earlier rollout does not stop this one.
        self.inventory.unit_clear_pause(&u.name)?;
        if args.target.is_none() {
            args.target = Some(rollout_target(u, back)?);
        }
        for t in targets {
            if !args.volumes_before.iter().any(|b| b.0 == t.name) {
                args.volumes_before
                    .push((t.name.clone(), t.disk.clone(), t.seed.clone()));
                args.priors_before.push((t.name.clone(), t.prior.clone()));
            }
        }
        Ok(())
    }

    /// A safe point: between batches, every server in or out of rotation as it should be. A
    /// pause asked for (any process) ends the rollout here, and so does its deadline. True when
    /// the rollout stops before batch `n`.
    pub(super) fn rollout_stops_before_batch(&self, ctx: &Ctx, n: usize) -> bool {
        if n > 0
            && self
                .inventory
                .unit_pause_requested(&ctx.unit.name)
                .unwrap_or_else(|e| {
                    // A pause that cannot be read is taken as asked: stopping at a safe point
                    // is always safe.
                    tracing::warn!(error = %e, "could not read the pause request; pausing");
                    true
                })
        {
            tracing::info!("paused at a safe point, as asked");
            return true;
        }
        let deadline = u64::from(ctx.policy.rollout_deadline_s);
        if deadline > 0 && ctx.began.elapsed().as_secs() >= deadline {
            tracing::warn!(deadline, "the rollout's deadline passed");
            ctx.deadline_passed.store(true, Ordering::SeqCst);
            ctx.abort.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Whether the rollout was stopped by its deadline or the load balancer's counters (a
    /// failure), with why in `warnings`. False for any other operation.
    pub(super) fn rollout_stopped(ctx: &Ctx, warnings: &mut Vec<String>) -> bool {
        let late = ctx.deadline_passed.load(Ordering::SeqCst);
        if late {
            warnings.push(format!(
                "the rollout's deadline of {} s passed before every server was updated: it stopped there{}",
                ctx.policy.rollout_deadline_s,
                if ctx.policy.auto_rollback {
                    " and rolled back"
                } else {
                    ""
                }
            ));
        }
        let blind = ctx.counters_missing.load(Ordering::SeqCst);
        if blind {
            warnings.push(
                "the load balancer's counters could not be read, so the limit on failed requests could not be checked: the rollout stopped there".into(),
            );
        }
        let counted = ctx.too_many_failed.load(Ordering::SeqCst) || blind;
        if counted && !blind {
            warnings.push(format!(
                "the load balancer counted more than {} failed requests during the rollout: it stopped there{}",
                ctx.policy.max_failed_requests.unwrap_or(0),
                if ctx.policy.auto_rollback {
                    " and rolled back"
                } else {
                    ""
                }
            ));
        }
        late || counted
    }

    /// The end of a rollout that did not fail: done when every running server runs the
    /// target; else paused (a canary, or a pause asked for): the unit stays mixed, old disks
    /// stay (a rollback restarts). True when paused.
    pub(super) async fn rollout_end(
        &self,
        ctx: &Ctx,
        u: &Unit,
        args: &OpArgs,
        warnings: &mut Vec<String>,
    ) -> Result<bool, OpError> {
        let mut paused = false;
        let now = self.inventory.unit_get(&u.name)?;
        let running: Vec<&Server> = now
            .servers
            .iter()
            .filter(|s| s.state == ServerState::Running)
            .collect();
        let on = running.iter().filter(|s| s.version == args.target).count();
        if on == running.len() {
            self.rollout_done(&u.name, args)?;
            warnings.extend(self.drop_prior_volumes(ctx).await);
        } else {
            paused = true;
            warnings.push(format!(
                "paused: {on} of {} servers run v{}; go on with `flotillactl unit promote {}`, or go back with `flotillactl unit rollback {}`",
                running.len(),
                args.target.unwrap_or(0),
                u.name,
                u.name
            ));
        }
        self.inventory.unit_clear_pause(&u.name)?;
        Ok(paused)
    }

    /// Whether a failed rollout (with auto-rollback) went back everywhere: every undo worked,
    /// and no server keeps the new version (those a crashed run had finished before this one
    /// resumed it do).
    pub(super) fn rolled_back(&self, u: &Unit, args: &OpArgs, outcomes: &[ServerOutcome]) -> bool {
        outcomes.iter().all(|o| o.undo_failed.is_empty())
            && !self.inventory.unit_get(&u.name).is_ok_and(|now| {
                now.servers.iter().any(|s| {
                    s.version.is_some()
                        && s.version == args.target
                        && args.target != Some(u.current_version)
                })
            })
    }

    /// The end of a rollout: the unit's current version is the one every server runs now (a
    /// rollback forgets the version it rolled back from).
    pub(in crate::ops::units) fn rollout_done(
        &self,
        unit: &str,
        args: &OpArgs,
    ) -> Result<(), OpError> {
        let Some(target) = args.target else {
            return Ok(());
        };
        match args.action {
            UnitAction::Rollout { back: true, .. } => {
                self.inventory.unit_versions_drop_pending(unit)?
            }
            _ => self.inventory.unit_set_current(unit, target)?,
        }
        Ok(())
    }

    /// The unit's pool counters now (rollouts behind HAProxy); `None` without a load balancer
    /// that keeps them, or when it does not answer (the rollout goes on; the report says so).
    pub(in crate::ops::units) async fn pool_counters(
        &self,
        ctx: &Ctx,
    ) -> Option<crate::lb::PoolCounters> {
        let (d, pool) = ctx.lb.as_ref()?;
        match d.pool_counters(pool).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the pool's counters");
                None
            }
        }
    }

    /// Sends what the load balancer counted since the rollout began (the batches before, and
    /// this one since `from`) as a progress event of the operation.
    pub(in crate::ops::units) async fn show_counters(
        &self,
        ctx: &Ctx,
        from: Option<crate::lb::PoolCounters>,
    ) {
        let (Some(from), Some(now)) = (from, self.pool_counters(ctx).await) else {
            return;
        };
        let mut sum = now.since(&from);
        for c in ctx
            .batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|b| b.counters)
        {
            sum = sum.plus(&c);
        }
        (ctx.progress)(StepEvent {
            operation: ctx.op,
            server: String::new(),
            step: Step::WaitHealthy,
            status: StepStatus::Started,
            detail: format!(
                "the load balancer counted {} requests, {} failed, {} retried",
                sum.requests,
                sum.failed(),
                sum.retried
            ),
            done: 0,
            total: 0,
            lb: Some(sum),
        });
    }

    /// Records what the load balancer counted during a batch, and stops the rollout when the
    /// failed requests so far pass the policy's limit.
    pub(in crate::ops::units) async fn count_batch(
        &self,
        ctx: &Ctx,
        servers: Vec<String>,
        from: Option<crate::lb::PoolCounters>,
    ) {
        let counters = match (from, self.pool_counters(ctx).await) {
            (Some(a), Some(b)) => Some(b.since(&a)),
            _ => None,
        };
        if let Some(c) = &counters {
            tracing::info!(
                requests = c.requests,
                failed = c.failed(),
                retried = c.retried,
                "batch counted"
            );
        }
        let mut batches = ctx.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches.push(BatchReport { servers, counters });
        let failed: u64 = batches
            .iter()
            .filter_map(|b| b.counters.map(|c| c.failed()))
            .sum();
        if ctx
            .policy
            .max_failed_requests
            .is_some_and(|max| failed > max)
        {
            ctx.too_many_failed.store(true, Ordering::SeqCst);
            ctx.abort.store(true, Ordering::SeqCst);
        }
        // A limit that cannot be checked is not silently skipped: the rollout stops.
        if ctx.policy.max_failed_requests.is_some()
            && batches.last().is_some_and(|b| b.counters.is_none())
        {
            ctx.counters_missing.store(true, Ordering::SeqCst);
            ctx.abort.store(true, Ordering::SeqCst);
        }
    }
}

/// Seconds between the load balancer's counts shown during a rollout batch.
pub(super) const LB_TICK_S: u64 = 2;
