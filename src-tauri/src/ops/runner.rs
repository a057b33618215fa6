//! The runner: the one lifecycle every journaled operation goes through — unit operations
//! (deploy … rollout, recover with its fence steps, resume and unwind), builders (build,
//! capture, abort), image distribution (ensure) and delete, and the load balancer's
//! reconcile.
//!
//! ```text
//! begin (a row in `operations`)
//!   → lock        (what the family needs: a unit's lock, pins on host objects)
//!   → steps       (each on the executor, `exec::Journal`: journaled before it acts)
//!   → end         (`Engine::op_end`: the end written, the unit lock released)
//!   → audit       (`Engine::audit`, by the public method, with the outcome)
//! ```
//!
//! ## The operations and their steps
//!
//! Each kind lists its steps in one place; a step's journal name is its row in
//! `operation_steps` (existing journals and tests read them: they do not change).
//!
//! | operation             | steps (journal names)                               | where the table is            | undo                                   |
//! |-----------------------|-----------------------------------------------------|-------------------------------|----------------------------------------|
//! | unit operations       | `SERVER: claim-names` … `SERVER: forget`            | `units::steps::TABLE`         | per step (`None`: no undo)             |
//! | `image.build`         | `ensure the base on the host` … `start the builder` | `builder::Engine::builder_step` | per step; the base copy is shared      |
//! | `image.capture`       | `seal: …`, `shut the builder down`, `download the disk`, `flatten into a new version`, `remove the builder` | `builder::capture_steps` | none: a failed capture keeps the builder |
//! | `image.builder-abort` | `remove the builder`                                | `builder::builder_abort`      | none                                   |
//! | `image.ensure`        | `upload IMAGE:vN on HOST`, `verify IMAGE:vN on HOST` | `images::image_ensure_pinned` | upload: the unverified copy goes; verify: none |
//! | `image.delete`        | `delete IMAGE:vN on HOST`, per copy                 | `images::image_copies_delete` | none: run it again to finish           |
//! | `lb.reconcile`        | `reconcile unit UNIT`, per unit                     | `lbs::reconcile_locked`       | none: it puts members as recorded      |
//!
//! A recovery's `fence` (through the host's BMC, `bmc::host_power_off`) is a unit step.
//!
//! ## One policy for the journal
//!
//! - A step's start that cannot be written stops the operation before the step acts
//!   (`exec::Journal`); a step's end or undo that cannot be written is reported as well.
//! - **The end of an operation must be written.** When it cannot be, the failure is logged
//!   (`tracing::error!`, which reaches the operation's log), and:
//!   - an operation that *succeeded* is reported as failed with that journal error: the
//!     journal still shows it running, so the next process offers it as interrupted (a unit
//!     operation that had done everything is then closed by `finish_completed`), and the
//!     front door must not say "done" while the record says otherwise;
//!   - an operation that *failed* keeps its own error (what the user must act on), and the
//!     journal error is in the log.
//!
//!   Releasing the unit lock follows the same rule.
//! - A refusal before any step ran (busy, plan changed) ends the operation as `aborted`, with
//!   the same rule.
//! - A simulated crash (test hooks) writes no end: the operation is left as a dead process
//!   leaves it (`operation_orphan`).
//!
//! Every end, abort and close goes through [`Engine::op_end`], [`Engine::op_abort`] or
//! [`Engine::op_close`]; nothing else in `ops/` writes an operation's end.
//!
//! ## Test hooks (feature `test-hooks`)
//!
//! [`StepFault`] names a step of any family by its journal name (a unit step as
//! `Step::as_str` with its server, a builder's `create the disk`, an image's
//! `upload base:v1 on h1`, a load balancer's `reconcile unit shop`); with
//! [`Engine::repeat_steps`] every step and undo of every family runs twice.

use super::exec::Journal;
use super::units::Fault;
use super::{Engine, OpError};
use std::sync::atomic::Ordering;

/// A test hook: make a step of any operation fail (after doing its work) or make the process
/// "die" there. Set with [`Engine::inject_step_fault`] (or [`Engine::inject_fault`] for a
/// unit step), or `FLOTILLA_FAULT=fail|crash:SUBJECT|*:STEP`, where `STEP` is the step's name
/// in the journal and `unlock` means after every step, before the operation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFault {
    pub crash: bool,
    /// What the step acts on: a unit step's server; `*` for any (steps of builders, images
    /// and load balancers are matched with `*`).
    pub subject: String,
    /// The step's journal name (without a unit step's `SERVER: `); `None`: after the last
    /// step, before the operation ends.
    pub step: Option<String>,
}

impl StepFault {
    /// `fail|crash:SUBJECT|*:STEP` (a unit step by its name, or any journal step name).
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(f) = Fault::parse(value) {
            return Some(f.into());
        }
        let mut parts = value.splitn(3, ':');
        let crash = match parts.next()? {
            "fail" => false,
            "crash" => true,
            _ => return None,
        };
        let subject = parts.next()?.to_owned();
        let step = parts.next().filter(|s| !s.is_empty())?.to_owned();
        Some(Self {
            crash,
            subject,
            step: Some(step),
        })
    }

    pub(super) fn matches(&self, subject: &str, step: &str) -> bool {
        self.step.as_deref() == Some(step) && (self.subject == "*" || self.subject == subject)
    }
}

impl From<Fault> for StepFault {
    fn from(f: Fault) -> Self {
        Self {
            crash: f.crash,
            subject: f.server,
            step: f.step.map(|s| s.as_str().to_owned()),
        }
    }
}

impl Engine {
    /// Arms a test fault at a unit step (see [`Fault`]). Test builds only.
    #[cfg(feature = "test-hooks")]
    pub fn inject_fault(&self, fault: Option<Fault>) {
        self.inject_step_fault(fault.map(StepFault::from));
    }

    /// Arms a test fault at a step of any operation (see [`StepFault`]). Test builds only.
    #[cfg(feature = "test-hooks")]
    pub fn inject_step_fault(&self, fault: Option<StepFault>) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// A test hook: run every step and every undo of every operation twice, to show they are
    /// idempotent. Test builds only.
    #[cfg(feature = "test-hooks")]
    pub fn repeat_steps(&self, on: bool) {
        self.repeat.store(on, Ordering::SeqCst);
    }

    /// The armed fault at step `step` on `subject`: `Some(true)` a crash, `Some(false)` a
    /// failure.
    pub(super) fn fault_at_step(&self, subject: &str, step: &str) -> Option<bool> {
        self.journal(0).fault(subject, step)
    }

    /// Whether a crash is armed after the last step, before the operation ends.
    fn dies_before_end(&self) -> bool {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref().is_some_and(|f| f.crash && f.step.is_none())
    }

    /// The journal of operation `op`: the executor its steps run on (with the test hooks).
    pub(super) fn journal(&self, op: i64) -> Journal<'_> {
        Journal {
            inventory: &self.inventory,
            op,
            repeat: self.repeat.load(Ordering::SeqCst),
            faults: &self.faults,
        }
    }

    /// Begins an operation: its row in the journal, with the arguments a resume reads.
    #[allow(clippy::disallowed_methods)] // the runner's own journal write
    pub(super) fn op_begin(&self, kind: &str, target: &str, args: &str) -> Result<i64, OpError> {
        Ok(self.inventory.operation_begin_with(kind, target, args)?)
    }

    /// Begins operation `kind` on `target`, runs `body` with its id, and ends it with the
    /// outcome (see the module's journal policy).
    pub(super) async fn op_run<T, F, Fut>(
        &self,
        kind: &str,
        target: &str,
        body: F,
    ) -> Result<T, OpError>
    where
        F: FnOnce(i64) -> Fut,
        Fut: std::future::Future<Output = Result<T, OpError>>,
    {
        let op = self.op_begin(kind, target, "")?;
        let outcome = body(op).await;
        self.op_end(op, outcome)
    }

    /// Ends operation `op` with `outcome`: `succeeded` or `failed` with the error, and no unit
    /// lock of it outlives it. A simulated crash writes nothing (see the module doc).
    #[allow(clippy::disallowed_methods)] // the runner's own journal write
    pub(super) fn op_end<T>(&self, op: i64, outcome: Result<T, OpError>) -> Result<T, OpError> {
        let outcome = match outcome {
            Ok(_) if self.dies_before_end() => Err(OpError::Crashed),
            o => o,
        };
        if let Err(OpError::Crashed) = outcome {
            // A simulated crash: leave the journal and the lock as a dead process would.
            self.inventory.operation_orphan(op)?;
            return outcome;
        }
        let (state, error) = match &outcome {
            Ok(_) => ("succeeded", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        let written = self.op_close(op, state, &error);
        let unlocked = self.op_unlock(op);
        let v = outcome?;
        written?;
        unlocked?;
        Ok(v)
    }

    /// Ends operation `op` as `aborted` because of `why` (nothing ran); returns `why`.
    pub(super) fn op_abort(&self, op: i64, why: OpError) -> OpError {
        let _ = self.op_close(op, "aborted", &why.to_string());
        let _ = self.op_unlock(op);
        why
    }

    /// Writes the end of operation `id` (this process's, or an interrupted one it took over);
    /// a failure is logged here, returned to the caller.
    #[allow(clippy::disallowed_methods)] // the runner's own journal write
    pub(super) fn op_close(&self, id: i64, state: &str, detail: &str) -> Result<(), OpError> {
        self.inventory
            .operation_finish(id, state, detail)
            .map_err(|e| {
                tracing::error!(op = id, error = %e, "could not journal the end of an operation");
                e.into()
            })
    }

    /// Releases the unit locks operation `op` holds; a failure is logged and returned.
    pub(super) fn op_unlock(&self, op: i64) -> Result<(), OpError> {
        self.inventory.unit_unlock(op).map_err(|e| {
            tracing::error!(op, error = %e, "could not release an operation's unit lock");
            e.into()
        })
    }
}
