//! The executor every operation runs its steps on — unit operations, builders (build, capture,
//! abort) and image distribution alike:
//!
//! - a step's journal row is written **before** it acts; when that write fails the step does
//!   not run and the operation stops (a crash would otherwise leave something no resume or
//!   unwind knows about);
//! - its end (succeeded or failed, with the reason) is written after it;
//! - an undo is journaled the same way (`undo_started`, then `undone` or `undo_failed`); a
//!   failed undo is recorded and reported, never silent.
//!
//! Each operation writes its steps' *do* and *undo* as named functions; this module only runs
//! them. The lifecycle around the steps (begin, lock, end, audit) is `super::runner`'s; a
//! [`Journal`] is had from `Engine::journal`, which arms the test hooks (a fault at a named
//! step, every step and undo run twice) for every family alike.

use super::runner::StepFault;
use super::OpError;
use crate::inventory::{Inventory, StepStatus};
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

/// Which way a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Do,
    Undo,
}

/// What became of one step.
pub(crate) enum Ran<T> {
    /// It ran, and the journal says so.
    Done(T),
    /// It ran and failed (journaled, best effort): what it began must be undone.
    Failed(OpError),
    /// The journal could not record that it begins: it did not run.
    NotStarted(OpError),
    /// It ran, but the journal could not record its end: undo it and stop.
    Unrecorded(OpError),
    /// A test fault: the process "died" after the step acted, before its end was recorded.
    Crashed,
}

/// Called on every journal row written (progress events for the front doors).
pub(crate) type Note<'a> = &'a (dyn Fn(StepStatus, &str) + Send + Sync);

/// No progress events.
pub(crate) fn quiet(_: StepStatus, _: &str) {}

/// Why an undo did not happen.
pub(crate) enum UndoError {
    /// The journal could not record that it begins: it did not run (nor should older ones).
    NotStarted(String),
    /// It ran and failed (journaled as `undo_failed`).
    Failed(String),
}

/// One operation's journal.
pub(crate) struct Journal<'a> {
    pub inventory: &'a Inventory,
    pub op: i64,
    /// Test builds: run every step and undo twice, to show they are idempotent.
    pub repeat: bool,
    /// Test builds: a fault armed at a named step (`Engine::inject_step_fault`).
    pub faults: &'a Mutex<Option<StepFault>>,
}

impl Journal<'_> {
    /// The one place a step's row is written.
    #[allow(clippy::disallowed_methods)]
    fn write(
        &self,
        name: &str,
        status: StepStatus,
        detail: &str,
        note: Note,
    ) -> Result<(), OpError> {
        self.inventory
            .operation_step(self.op, name, status, detail)?;
        note(status, detail);
        Ok(())
    }

    /// The armed test fault at step `name` of `subject` (`*` matches any subject).
    pub fn fault(&self, subject: &str, name: &str) -> Option<bool> {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .filter(|f| f.matches(subject, name))
            .map(|f| f.crash)
    }

    /// Runs step `name`: journal first, then `act` (twice when repeating), then its end; a
    /// test fault (`fault`, consulted after the step acted: `Some(true)` a crash before its end
    /// is recorded, `Some(false)` a failure) applies, and what the step found out (`said`,
    /// asked once it succeeded) goes in its `succeeded` row: a fence records there who or what
    /// confirmed the host is off, a reconcile what it put back.
    pub async fn run<T, F, Fut>(
        &self,
        name: &str,
        note: Note<'_>,
        act: F,
        fault: impl FnOnce() -> Option<bool>,
        said: impl FnOnce(&T) -> String,
    ) -> Ran<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        if let Err(e) = self.write(name, StepStatus::Started, "", note) {
            return Ran::NotStarted(e);
        }
        let began = Instant::now();
        tracing::info!(step = name, "step begins");
        let mut result = act().await;
        if self.repeat && result.is_ok() {
            result = act().await;
        }
        let ms = began.elapsed().as_millis() as u64;
        if result.is_ok() {
            match fault() {
                Some(true) => return Ran::Crashed,
                Some(false) => {
                    result = Err(OpError::Timeout(format!("injected failure after {name}")))
                }
                None => {}
            }
        }
        match result {
            Ok(v) => {
                tracing::info!(step = name, ms, "step succeeded");
                match self.write(name, StepStatus::Succeeded, &said(&v), note) {
                    Ok(()) => Ran::Done(v),
                    Err(e) => Ran::Unrecorded(e),
                }
            }
            Err(e) => {
                let msg = describe(&e);
                tracing::warn!(step = name, ms, error = %msg, "step failed");
                // Best effort: the step is undone whether or not this record is written.
                let _ = self.write(name, StepStatus::Failed, &msg, note);
                Ran::Failed(e)
            }
        }
    }

    /// Records that step `name` was passed over (`succeeded`, with why in `detail`): it did
    /// not act, and has nothing to undo.
    pub fn passed(&self, name: &str, detail: &str) -> Result<(), OpError> {
        self.write(name, StepStatus::Succeeded, detail, &quiet)
    }

    /// Undoes step `name`: journal first (when that fails nothing is undone), then `act`
    /// (twice when repeating), then `undone` or `undo_failed` with the reason.
    pub async fn undo<F, Fut>(&self, name: &str, note: Note<'_>, act: F) -> Result<(), UndoError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), OpError>>,
    {
        if let Err(e) = self.write(name, StepStatus::UndoStarted, "", note) {
            return Err(UndoError::NotStarted(format!(
                "not undone: {}",
                describe(&e)
            )));
        }
        let mut result = act().await;
        if self.repeat && result.is_ok() {
            result = act().await;
        }
        match result {
            Ok(()) => {
                tracing::info!(step = name, "undone");
                let _ = self.write(name, StepStatus::Undone, "", note);
                Ok(())
            }
            Err(e) => {
                let msg = describe(&e);
                tracing::warn!(step = name, error = %msg, "undo failed");
                let _ = self.write(name, StepStatus::UndoFailed, &msg, note);
                Err(UndoError::Failed(msg))
            }
        }
    }
}

/// An operation whose steps run one after another, each with the undo it needs: on failure
/// the steps that ran (or began) are undone, newest first.
pub(crate) struct Sequence<'a, U> {
    pub journal: Journal<'a>,
    ran: Vec<(String, U)>,
}

impl<'a, U> Sequence<'a, U> {
    pub fn new(journal: Journal<'a>) -> Self {
        Self {
            journal,
            ran: Vec::new(),
        }
    }

    /// Runs a step; `undo` (when it has one) is remembered as soon as the step began, since a
    /// failed step may have made part of what it makes.
    pub async fn step<T, F, Fut>(
        &mut self,
        name: &str,
        undo: Option<U>,
        act: F,
    ) -> Result<T, OpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        self.step_noted(name, undo, act, |_| String::new()).await
    }

    /// `step`, with what it found out (`said`, asked once it succeeded) in its `succeeded`
    /// row.
    pub async fn step_noted<T, F, Fut>(
        &mut self,
        name: &str,
        undo: Option<U>,
        act: F,
        said: impl FnOnce(&T) -> String,
    ) -> Result<T, OpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, OpError>>,
    {
        let journal = &self.journal;
        let ran = journal
            .run(name, &quiet, act, || journal.fault("", name), said)
            .await;
        let began = !matches!(ran, Ran::NotStarted(_));
        if let (true, Some(u)) = (began, undo) {
            self.ran.push((name.to_owned(), u));
        }
        match ran {
            Ran::Done(v) => Ok(v),
            Ran::Failed(e) | Ran::NotStarted(e) | Ran::Unrecorded(e) => Err(e),
            Ran::Crashed => Err(OpError::Crashed),
        }
    }

    /// Undoes what ran, newest first, each through `undo`; returns the undos that failed
    /// (step, reason). An older step is undone even when a newer one's undo failed; when the
    /// journal cannot record an undo, none of the older ones run either.
    pub async fn unwind<F, Fut>(&mut self, undo: F) -> Vec<(String, String)>
    where
        F: Fn(U) -> Fut,
        U: Clone,
        Fut: Future<Output = Result<(), OpError>>,
    {
        let mut failed = Vec::new();
        while let Some((name, u)) = self.ran.pop() {
            match self.journal.undo(&name, &quiet, || undo(u.clone())).await {
                Ok(()) => {}
                Err(UndoError::Failed(msg)) => failed.push((name, msg)),
                Err(UndoError::NotStarted(msg)) => {
                    failed.push((name, msg.clone()));
                    while let Some((older, _)) = self.ran.pop() {
                        failed.push((older, msg.clone()));
                    }
                }
            }
        }
        failed
    }
}

/// An error as the front doors word it.
pub(crate) fn describe(e: &OpError) -> String {
    crate::error::ApiError::from(e).message
}
