//! An interrupted unit operation (its process died): listed, resumed (run again: its steps
//! are idempotent), unwound (its journal's steps undone, newest first), or closed when it had
//! done all its work.

use super::*;

impl Engine {
    /// Operations whose process died before they ended (those that had done all their work
    /// are closed on the way: there is nothing to resume or unwind).
    pub fn interrupted_operations(&self) -> Result<Vec<Interrupted>, OpError> {
        // Those that cannot be resumed (an image ensure that died) are closed, not listed.
        self.inventory.operation_close_dead()?;
        let mut out = Vec::new();
        for (id, kind, target, _) in self.inventory.operation_interrupted()? {
            if self.finish_completed(id)? {
                continue;
            }
            let steps = self.inventory.operation_steps(id)?;
            out.push(Interrupted {
                operation: id,
                kind,
                unit: target.trim_start_matches("unit/").to_owned(),
                steps_done: steps.iter().filter(|s| s.1 == "succeeded").count() as u32,
            });
        }
        Ok(out)
    }

    /// Runs an interrupted operation again (its steps are idempotent).
    pub async fn operation_resume(&self, id: i64, progress: StepFn) -> Result<OpReport, OpError> {
        let mut args = self.interrupted_args(id)?;
        args.resumed = true;
        let outcome = self.run_op(args, progress, Some(id)).await;
        self.release_claim(id, &outcome);
        self.audit("operation.resume", &format!("operation/{id}"), &outcome);
        outcome
    }

    /// Takes an interrupted unit operation over (exactly one process wins when several try
    /// to resume or unwind it at once) and reads its arguments.
    pub(in crate::ops::units) fn interrupted_args(&self, id: i64) -> Result<OpArgs, OpError> {
        let json = self.inventory.operation_args(id)?;
        if json.is_empty() || !self.inventory.operation_claim(id)? {
            return Err(InventoryError::NotFound {
                kind: "interrupted operation",
                name: format!(
                    "#{id} (it ended, is still running, or another process is resuming or unwinding it: flotillactl op list)"
                ),
            }
            .into());
        }
        Self::parse_args(id, &json)
    }

    /// After a resume or unwind that failed before it ended the operation it took over, that
    /// operation is interrupted again (offered for resume or unwind), not held by this process.
    pub(in crate::ops::units) fn release_claim<T>(&self, id: i64, outcome: &Result<T, OpError>) {
        if outcome.is_err() {
            if let Err(e) = self.inventory.operation_release_claim(id) {
                tracing::warn!(id, error = %e, "could not give an operation back");
            }
        }
    }

    pub(in crate::ops::units) fn parse_args(id: i64, json: &str) -> Result<OpArgs, OpError> {
        serde_json::from_str(json).map_err(|e| {
            InventoryError::Corrupt {
                what: format!("arguments of operation #{id}"),
                source: Some(Box::new(e)),
            }
            .into()
        })
    }

    /// Undoes what an interrupted operation's journal says it did, newest first.
    pub async fn operation_unwind(&self, id: i64, progress: StepFn) -> Result<OpReport, OpError> {
        let span = tracing::info_span!("op", id, action = "unwind");
        let outcome = self
            .unwind_inner(id, progress)
            .instrument(span.clone())
            .await;
        self.release_claim(id, &outcome);
        if let Err(e) = &outcome {
            tracing::warn!(parent: &span, error = %e, "unwind failed");
        }
        self.audit("operation.unwind", &format!("operation/{id}"), &outcome);
        outcome
    }

    pub(in crate::ops::units) async fn unwind_inner(
        &self,
        id: i64,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let args = self.interrupted_args(id)?;
        let u = self.inventory.unit_get(&args.unit)?;
        let ctx = self.context(id, &u, &args, progress).await?;
        // The journal: per server, the steps started (in order), minus those already undone.
        let mut per_server: BTreeMap<String, Vec<Step>> = BTreeMap::new();
        for (name, status) in self.inventory.operation_steps(id)? {
            let Some((server, step)) = name.split_once(": ") else {
                continue;
            };
            let Some(step) = Step::parse(step) else {
                continue;
            };
            let list = per_server.entry(server.to_owned()).or_default();
            match status.as_str() {
                "started" if !list.contains(&step) => list.push(step),
                "undone" => list.retain(|s| *s != step),
                _ => {}
            }
        }
        let mut outcomes = Vec::new();
        for (server, steps) in per_server {
            let Some(s) = u.servers.iter().find(|s| s.name == server) else {
                continue;
            };
            let s = &args.as_before(s);
            let mut o = ServerOutcome {
                server: s.name.clone(),
                host: s.host.clone(),
                done: steps.clone(),
                ..Default::default()
            };
            if !steps.iter().any(|s| s.irreversible()) {
                self.undo_server(&ctx, s, &steps, &mut o).await;
                if let Some((_, state, version)) = args.before.iter().find(|b| b.0 == s.name) {
                    self.inventory.server_set_state(&s.name, *state, *version)?;
                }
            }
            outcomes.push(o);
        }
        for name in &args.registered {
            if u.servers
                .iter()
                .any(|s| s.name == *name && s.state == ServerState::Planned)
            {
                self.inventory.server_delete(name)?;
            }
        }
        self.release_host_objects(&ctx).await;
        self.op_close(id, "aborted", "interrupted; unwound")?;
        self.op_unlock(id)?;
        Ok(OpReport {
            operation: id,
            unit: u.name,
            action: format!("unwind of {}", args.action.name()),
            ok: outcomes.iter().all(|o| o.undo_failed.is_empty()),
            paused: false,
            rolled_back: false,
            batches: Vec::new(),
            servers: outcomes,
            warnings: Vec::new(),
            log: self.log_hint(id),
        })
    }

    /// An operation whose process died after its last step but before it unlocked the unit
    /// did all its work: it is closed as succeeded (and a delete's unit record removed), so
    /// the unit is free again without a resume or unwind. `false` when `id` is not such an
    /// operation (still running, or interrupted in the middle: resume or unwind it).
    pub(in crate::ops::units) fn finish_completed(&self, id: i64) -> Result<bool, OpError> {
        let json = self.inventory.operation_args(id)?;
        if json.is_empty()
            || !self
                .inventory
                .operation_interrupted()?
                .iter()
                .any(|o| o.0 == id)
        {
            return Ok(false);
        }
        let args = Self::parse_args(id, &json)?;
        let Some(kind) = args.kind else {
            return Ok(false);
        };
        let Ok(u) = self.inventory.unit_get(&args.unit) else {
            // A delete that removed its unit had done everything.
            if matches!(args.action, UnitAction::Delete { .. })
                && self.inventory.operation_claim(id)?
            {
                self.op_close(id, "succeeded", CLOSED)?;
                return Ok(true);
            }
            return Ok(false);
        };
        let Some(last) = plan::server_steps(kind, u.lb.is_some()).last().copied() else {
            return Ok(false);
        };
        let journal = self.inventory.operation_steps(id)?;
        // Anything failed or undone: not a finished operation (resume or unwind it).
        if journal
            .iter()
            .any(|(_, status)| status != "started" && status != "succeeded")
        {
            return Ok(false);
        }
        let finished = |server: &str| {
            let name = format!("{server}: {}", last.as_str());
            journal
                .iter()
                .any(|(step, status)| *step == name && status == "succeeded")
        };
        if !args.before.iter().all(|(s, _, _)| finished(s)) {
            return Ok(false);
        }
        if !self.inventory.operation_claim(id)? {
            return Ok(false);
        }
        // The end state a server gets after its last step (the process may have died just
        // before writing it).
        let end = match kind {
            OpKind::Deploy | OpKind::Recover => {
                Some((ServerState::Running, Some(u.current_version)))
            }
            OpKind::Start | OpKind::Restart | OpKind::Rejoin => Some((ServerState::Running, None)),
            OpKind::Stop => Some((ServerState::Stopped, None)),
            OpKind::Rollout => Some((ServerState::Running, args.target)),
            OpKind::Remove => None,
        };
        if let Some((state, version)) = end {
            for s in u
                .servers
                .iter()
                .filter(|s| args.before.iter().any(|b| b.0 == s.name))
            {
                self.inventory
                    .server_set_state(&s.name, state, version.or(s.version))?;
            }
        }
        if let UnitAction::Delete { .. } = args.action {
            self.inventory.unit_delete(&u.name)?;
        }
        if kind == OpKind::Rollout {
            // Done only when every running server runs the target (a canary that died
            // before it unlocked leaves a paused, mixed unit).
            let now = self.inventory.unit_get(&u.name)?;
            if now
                .servers
                .iter()
                .filter(|s| s.state == ServerState::Running)
                .all(|s| s.version == args.target)
            {
                self.rollout_done(&u.name, &args)?;
            }
        }
        self.op_close(id, "succeeded", CLOSED)?;
        self.op_unlock(id)?;
        Ok(true)
    }
}

/// How an operation that did all its work but died before it ended is closed.
const CLOSED: &str =
    "its process ended after the last step, before it released the unit; closed by the next operation";
