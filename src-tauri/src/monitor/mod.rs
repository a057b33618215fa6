//! Host liveness: is each managed host alive, and can Flotilla tell?
//!
//! Two planes watch a host. *Management*: a cheap libvirt probe on a lane of its own
//! (`Hypervisor::probe`), once per interval, which also lists the running domains (libvirt's
//! lifecycle events need the `virt-sys` bindings and `unsafe`, which the workspace forbids, so
//! crashed or stopped servers are found by comparing that list with the inventory). The
//! *witness*: the load balancer's own health checks of the host's pooled servers (one
//! `show stat` per HAProxy). A host is *failed* only when both agree; see [`machine`] for the
//! states and rules, [`witness`] for how HAProxy's words are read.
//!
//! This module is pure (decisions and types). The runner that probes, reads the load balancers,
//! writes each host's state to the inventory and calls the hooks is `ops::monitor`
//! (`Engine::monitor_run`), used by `flotillactl monitor` and the desktop app.

pub mod machine;
pub mod witness;

pub use crate::model::HostState;
pub use machine::{Change, Fleet, Freeze, Probe, Reconciled, Seen, Thresholds, Witness};

use serde::{Deserialize, Serialize};

/// What a running monitor reports, in order: to the terminal (`flotillactl monitor`, one line
/// or one JSON object each) and to the desktop app (the `host-state` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MonitorEvent {
    /// This monitor holds the inventory's monitor lease and watches.
    Started {
        at: String,
        hosts: u32,
        thresholds: Thresholds,
        /// The longest time from a host's death to `failed` these thresholds allow.
        worst_case_detection_ms: u64,
        /// The thresholds and what they imply, in words.
        explained: String,
    },
    /// Another monitor (the desktop app, another `flotillactl monitor`) watches this inventory;
    /// this one waits and takes over when it stops.
    Standby {
        at: String,
        holder: String,
    },
    /// A host's state changed.
    Transition {
        at: String,
        host: String,
        /// `None`: the host's first state in this monitor.
        from: Option<HostState>,
        to: HostState,
        why: String,
    },
    /// Flotilla itself looks cut off: no host becomes failed, no automatic action starts.
    Frozen {
        at: String,
        why: String,
    },
    Thawed {
        at: String,
        why: String,
    },
    /// Servers the inventory says run on `host` that its libvirt does not list as running
    /// (crashed, or stopped outside Flotilla); empty when all run again.
    NotRunning {
        at: String,
        host: String,
        servers: Vec<String>,
    },
    /// Something the monitor could not do this round (the inventory busy, a hook failing); it
    /// goes on.
    Problem {
        at: String,
        what: String,
    },
    /// A recovery Flotilla started by itself (the unit's `auto_recover_per_day`), or why it
    /// did not.
    AutoRecovery {
        at: String,
        unit: String,
        ok: bool,
        what: String,
    },
    /// The monitor stopped (and gave up its lease).
    Stopped {
        at: String,
    },
}

impl MonitorEvent {
    pub fn at(&self) -> &str {
        match self {
            Self::Started { at, .. }
            | Self::Standby { at, .. }
            | Self::Transition { at, .. }
            | Self::Frozen { at, .. }
            | Self::Thawed { at, .. }
            | Self::NotRunning { at, .. }
            | Self::Problem { at, .. }
            | Self::AutoRecovery { at, .. }
            | Self::Stopped { at } => at,
        }
    }
}

impl std::fmt::Display for MonitorEvent {
    /// One line for a terminal: time, host, old → new state, why.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at();
        match self {
            Self::Started {
                hosts, explained, ..
            } => write!(
                f,
                "{at}  monitoring {hosts} host{}: {explained}",
                if *hosts == 1 { "" } else { "s" }
            ),
            Self::Standby { holder, .. } => write!(
                f,
                "{at}  standing by: {holder} monitors this inventory; taking over when it stops"
            ),
            Self::Transition {
                host,
                from,
                to,
                why,
                ..
            } => {
                let from = from.map_or("-", |s| s.as_str());
                write!(f, "{at}  {host}  {from} → {to}  {why}")
            }
            Self::Frozen { why, .. } => write!(f, "{at}  FROZEN  {why}"),
            Self::Thawed { why, .. } => write!(f, "{at}  thawed  {why}"),
            Self::NotRunning { host, servers, .. } if servers.is_empty() => write!(
                f,
                "{at}  {host}  every server the inventory says runs there runs"
            ),
            Self::NotRunning { host, servers, .. } => write!(
                f,
                "{at}  {host}  not running though the inventory says they run: {}",
                servers.join(", ")
            ),
            Self::Problem { what, .. } => write!(f, "{at}  problem: {what}"),
            Self::AutoRecovery { unit, ok, what, .. } => write!(
                f,
                "{at}  auto-recovery of unit {unit}{}: {what}",
                if *ok { "" } else { " did not happen" }
            ),
            Self::Stopped { .. } => write!(f, "{at}  monitor stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_line_or_one_json_object_each() {
        let t = MonitorEvent::Transition {
            at: "2026-01-02T03:04:05.678Z".into(),
            host: "h2".into(),
            from: Some(HostState::Suspect),
            to: HostState::Failed,
            why: "libvirt lost for 5 s".into(),
        };
        assert_eq!(
            t.to_string(),
            "2026-01-02T03:04:05.678Z  h2  suspect → failed  libvirt lost for 5 s"
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["kind"], "transition");
        assert_eq!(json["from"], "suspect");
        assert_eq!(json["to"], "failed");
        let first = MonitorEvent::Transition {
            at: "2026-01-02T03:04:05.678Z".into(),
            host: "h2".into(),
            from: None,
            to: HostState::Ready,
            why: "libvirt answers".into(),
        };
        assert!(first.to_string().contains("h2  - → ready"));
        assert_eq!(
            serde_json::to_value(&first).unwrap()["from"],
            serde_json::Value::Null
        );
    }
}
