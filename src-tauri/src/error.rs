//! The one error shape both front doors show: `{code, message, detail}`.
//!
//! `code` is what a UI or a script switches on (a variant is added only when a front door
//! needs to tell it apart); `message` says what happened and what to do next; `detail` is the
//! chain of causes (libvirt's or SQLite's own words) for the log and for "show details".

use crate::ops::units::{OpPlan, OpReport};
use crate::ops::OpError;
use serde::Serialize;
use std::error::Error as StdError;

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<String>,
    /// A failed unit operation's report (what failed, what was undone), for a front door that
    /// shows it as more than the message ([`ApiError::with_outcome`]). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Box<OpReport>>,
    /// The plan as it is now, when the one the admin confirmed changed (`plan_changed`):
    /// shown to be confirmed again without asking for it. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<OpPlan>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A value the user typed is not acceptable; nothing was changed.
    InvalidInput,
    NotFound,
    AlreadyExists,
    /// The object is still used by others; nothing was changed.
    InUse,
    /// A host (libvirt) could not be reached or did not answer.
    Unreachable,
    /// The host answered but lacks what Flotilla needs (pool, bridge).
    HostNotReady,
    /// The inventory (data directory) could not be opened or written.
    Inventory,
    /// Not enough free space (the image library's disk, a host's pool).
    NoSpace,
    /// Something did not happen in time (a guest that does not shut down).
    Timeout,
    /// A requested seal could not be done (no guest agent, no virt-sysprep); nothing was
    /// captured.
    SealFailed,
    /// The unit is busy with another operation; try again when it has finished.
    Busy,
    /// A load balancer could not be reached or refused a change.
    LbFailed,
    /// An operation failed on a server; its completed steps were undone (see the report).
    OperationFailed,
    /// The object changed since the edit began (another window or process saved first);
    /// nothing was saved, the message shows what changed.
    Conflict,
    /// The inventory changed since the plan the admin confirmed (by its fingerprint) was
    /// made: nothing was done. Show the plan as it is now and ask again.
    PlanChanged,
    /// A rollout failed on a server and was rolled back: every server that changed runs its
    /// previous version again (the report says which server failed and why).
    RolledBack,
    /// The SSH host key of the host is not yet trusted: show its fingerprint and ask.
    HostKeyUnknown,
    /// The SSH host key of the host differs from the one trusted: refused.
    HostKeyChanged,
    /// A recovery waits for a fence: a lost host may still run its servers. Confirm that it is
    /// off (`--host-is-off HOST`, or type its name), or give it a BMC.
    FenceNeeded,
    /// A host's BMC refused (user, password, role), has no such system, or answered with
    /// something that is not usable Redfish.
    BmcFailed,
    Internal,
}

impl ErrorCode {
    /// Exit status of `flotillactl` for this error. 1 is left for unexpected failures and 2
    /// for command-line usage errors (as clap uses it).
    pub fn exit_status(self) -> u8 {
        match self {
            Self::Internal => 1,
            Self::InvalidInput => 2,
            Self::NotFound => 3,
            Self::AlreadyExists => 4,
            Self::InUse => 5,
            Self::Unreachable => 6,
            Self::HostNotReady => 7,
            Self::Inventory => 8,
            Self::NoSpace => 9,
            Self::Timeout => 10,
            Self::SealFailed => 11,
            Self::Busy => 12,
            Self::LbFailed => 13,
            Self::OperationFailed => 14,
            Self::Conflict => 15,
            Self::PlanChanged => 16,
            Self::RolledBack => 17,
            Self::HostKeyUnknown => 18,
            Self::HostKeyChanged => 19,
            Self::FenceNeeded => 20,
            Self::BmcFailed => 21,
        }
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            report: None,
            plan: None,
        }
    }

    /// The error of an operation with what the engine already knows about it: the report of
    /// a failed operation, the new plan of a changed one. The message is the same as without.
    pub fn with_outcome(err: OpError) -> Self {
        let mut e = ApiError::from(&err);
        match err {
            OpError::Failed(r) => e.report = Some(r),
            OpError::PlanChanged { plan, .. } => e.plan = Some(plan),
            _ => {}
        }
        e
    }

    /// Fills `detail` with the chain of causes below `err` (not `err` itself: its text is
    /// already the message or part of it).
    pub fn with_causes(mut self, err: &dyn StdError) -> Self {
        let mut causes = Vec::new();
        let mut next = err.source();
        while let Some(e) = next {
            causes.push(e.to_string());
            next = e.source();
        }
        if !causes.is_empty() {
            self.detail = Some(causes.join("\ncaused by: "));
        }
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_report() -> OpReport {
        OpReport {
            operation: 7,
            unit: "shop".into(),
            action: "deploy".into(),
            ok: false,
            paused: false,
            rolled_back: false,
            batches: vec![],
            servers: vec![],
            warnings: vec![],
            log: "flotillactl op log 7".into(),
        }
    }

    /// The CLI prints errors as `{code, message, detail}`: the structured parts a front door
    /// may attach are absent from the JSON unless attached.
    #[test]
    fn an_error_serializes_without_report_or_plan_unless_attached() {
        let e = ApiError::from(OpError::Failed(Box::new(failed_report())));
        let v = serde_json::to_value(&e).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["code", "detail", "message"]);
    }

    #[test]
    fn with_outcome_keeps_the_message_and_attaches_the_report() {
        let plain = ApiError::from(OpError::Failed(Box::new(failed_report())));
        let e = ApiError::with_outcome(OpError::Failed(Box::new(failed_report())));
        assert_eq!(e.message, plain.message);
        assert_eq!(e.code, ErrorCode::OperationFailed);
        assert_eq!(e.report.as_ref().map(|r| r.operation), Some(7));
        assert!(e.plan.is_none());
        let other = ApiError::with_outcome(OpError::Timeout("slow".into()));
        assert!(other.report.is_none() && other.plan.is_none());
    }
}
