//! A managed machine (the brief's 管理対象マシン) and what Flotilla learned about it.

use super::{BridgeName, HostName, LibvirtUri, PoolName};
use serde::{Deserialize, Serialize};

/// A registered host as the inventory holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Host {
    pub name: HostName,
    pub uri: LibvirtUri,
    pub pool: PoolName,
    pub bridge: BridgeName,
    pub status: HostStatus,
    /// Why the host is not `ok` (libvirt's reason, missing pool or bridge); empty when ok.
    pub status_detail: String,
    /// What the last successful connection found. Kept when the host later becomes
    /// unreachable, so the admin still sees what it was.
    pub facts: Option<HostFacts>,
    /// RFC 3339, UTC.
    pub added_at: String,
    /// RFC 3339, UTC: the last add or check.
    pub checked_at: String,
    /// The network of the bridge that servers' addresses must lie in (`10.77.0.0/24`); empty
    /// until set (`flotillactl host set`).
    pub network: String,
    /// The gateway servers use; empty for none.
    pub gateway: String,
    /// `kvm` or `qemu` to override what the host's capabilities offer; empty: automatic.
    pub domain_type: String,
    /// What the monitor (`flotillactl monitor`, the desktop app) last recorded about the host,
    /// and whether that record is current.
    #[serde(default)]
    pub monitor: HostMonitor,
    /// The host's BMC, for power fencing over Redfish (`flotillactl host set --bmc`); never
    /// its password.
    #[serde(default)]
    pub bmc: Option<super::BmcSettings>,
    /// What proves its servers are off during its current loss (a recovery recorded it).
    #[serde(default)]
    pub fence: Option<HostFence>,
    /// Its servers held out of rotation because it was lost (fenced at their load balancer).
    #[serde(default)]
    pub fenced: Vec<String>,
}

/// How a lost host's servers are known to be off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum FenceMethod {
    /// Its BMC powered it off (Redfish `ForceOff`) and the power state was read back as Off.
    Power,
    /// Its guests' isolation response (they power themselves off when they cannot reach their
    /// load balancer) had its time since the host was last seen.
    Isolation,
    /// The admin confirmed that the host is off.
    Confirmed,
}

impl FenceMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Power => "power",
            Self::Isolation => "isolation",
            Self::Confirmed => "confirmed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Power, Self::Isolation, Self::Confirmed]
            .into_iter()
            .find(|m| m.as_str() == value)
    }
}

/// A recorded fence of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostFence {
    pub host: String,
    pub method: FenceMethod,
    /// Who or what confirmed it: the BMC, the admin's name, the isolation response.
    pub by: String,
    /// In words.
    pub detail: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// The operation that recorded it.
    pub operation: Option<i64>,
}

/// A host's liveness as the monitor sees it (`monitor::Fleet`). Management is the libvirt
/// connection; the witness is the load balancer's health check of the host's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// libvirt answers.
    Ready,
    /// libvirt missed a probe, not yet long enough to call it lost.
    Suspect,
    /// libvirt lost for the threshold *and* the load balancer sees every pooled server of the
    /// host down: two planes agree. The state fencing and recovery act on.
    Failed,
    /// libvirt lost, but the load balancer still sees servers of the host up: the host runs,
    /// Flotilla cannot reach it. A warning, never a reason to recover.
    Partitioned,
    /// libvirt lost and no second witness (no pooled servers, the load balancer could not be
    /// asked, or the monitor is frozen): not failed.
    Unreachable,
    /// libvirt answers again after the host was lost; not ready until a reconcile says the
    /// host holds nothing stale.
    Returning,
}

impl HostState {
    pub const ALL: [HostState; 6] = [
        Self::Ready,
        Self::Suspect,
        Self::Failed,
        Self::Partitioned,
        Self::Unreachable,
        Self::Returning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Suspect => "suspect",
            Self::Failed => "failed",
            Self::Partitioned => "partitioned",
            Self::Unreachable => "unreachable",
            Self::Returning => "returning",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Management was lost for the whole threshold: the host must be reconciled before it is
    /// ready again.
    pub fn is_lost(self) -> bool {
        matches!(self, Self::Failed | Self::Partitioned | Self::Unreachable)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the monitor last recorded about a host, as any process reads it from the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostMonitor {
    /// The host's state when a monitor is running and its record is current. `None`: not
    /// monitored — no monitor runs, or the record was not renewed within a few probe intervals
    /// (then it is not trusted; `last_state` says what it was).
    pub state: Option<HostState>,
    /// The state in the last record, current or not.
    pub last_state: Option<HostState>,
    /// RFC 3339, UTC: since when the host is in `last_state`; empty without a record.
    pub since: String,
    /// Why, in words (what libvirt said, what the load balancer sees).
    pub detail: String,
    /// RFC 3339, UTC: the monitor's last probe result for this host.
    pub probed_at: String,
    /// RFC 3339, UTC: when a monitor last saw the host alive — libvirt answered, or the load
    /// balancer heard one of its servers answer; empty: never.
    #[serde(default)]
    pub last_seen: String,
    /// Servers the inventory says run on this host that its libvirt does not list as running
    /// (crashed or stopped outside Flotilla), from the last probe that could list them.
    pub not_running: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// Reachable; pool and bridge present.
    Ok,
    /// Reachable, but the pool or the bridge is missing or inactive.
    Degraded,
    /// The last connection attempt failed.
    Unreachable,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Ok, Self::Degraded, Self::Unreachable]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

/// What a connection to a host found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostFacts {
    /// The host's own hostname, as libvirt reports it.
    pub hostname: String,
    /// Hypervisor driver name as libvirt reports it (`QEMU`, `TEST`, …).
    pub hypervisor: String,
    pub hypervisor_version: String,
    pub libvirt_version: String,
    pub cpu_model: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// The configured pool; `None` when the host has no pool of that name.
    pub pool: Option<PoolFacts>,
    /// Every storage pool on the host, to help pick the right one.
    pub pools_available: Vec<String>,
    pub bridge: BridgeCheck,
    /// libvirt offers hardware virtualization (KVM) for guests on this host.
    #[serde(default)]
    pub kvm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PoolFacts {
    pub name: String,
    pub active: bool,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BridgeCheck {
    /// The bridge exists (as a host interface or as a libvirt network's bridge).
    Found,
    /// It does not; these bridges do.
    Missing { available: Vec<String> },
    /// libvirt could not tell (e.g. no interface driver on the host).
    Unknown { reason: String },
}

impl HostFacts {
    /// What keeps this host from running servers on `pool` and `bridge`, in words an admin
    /// can act on. Empty when nothing does.
    pub fn problems(&self, pool: &PoolName, bridge: &BridgeName) -> Vec<String> {
        let mut out = Vec::new();
        match &self.pool {
            None => out.push(format!(
                "storage pool '{pool}' does not exist on the host (pools there: {})",
                list_or_none(&self.pools_available)
            )),
            Some(p) if !p.active => out.push(format!(
                "storage pool '{pool}' exists but is not active; start it with `virsh pool-start {pool}`"
            )),
            Some(_) => {}
        }
        if let BridgeCheck::Missing { available } = &self.bridge {
            out.push(format!(
                "bridge '{bridge}' does not exist on the host (bridges there: {})",
                list_or_none(available)
            ));
        }
        out
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_states_round_trip() {
        for s in HostState::ALL {
            assert_eq!(HostState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(HostState::parse("frozen"), None);
        let lost: Vec<HostState> = HostState::ALL.into_iter().filter(|s| s.is_lost()).collect();
        assert_eq!(
            lost,
            [
                HostState::Failed,
                HostState::Partitioned,
                HostState::Unreachable
            ]
        );
    }

    fn facts(pool: Option<PoolFacts>, bridge: BridgeCheck) -> HostFacts {
        HostFacts {
            hostname: "h".into(),
            hypervisor: "QEMU".into(),
            hypervisor_version: "7.2.0".into(),
            libvirt_version: "9.0.0".into(),
            cpu_model: "x86_64".into(),
            cpus: 2,
            memory_bytes: 1 << 30,
            pool,
            pools_available: vec!["images".into()],
            bridge,
            kvm: false,
        }
    }
    fn pool(active: bool) -> PoolFacts {
        PoolFacts {
            name: "default".into(),
            active,
            capacity_bytes: 10,
            allocation_bytes: 4,
            available_bytes: 6,
        }
    }

    #[test]
    fn problems_name_what_is_missing_and_what_exists() {
        let p = PoolName::parse("default").unwrap();
        let b = BridgeName::parse("br0").unwrap();
        assert!(facts(Some(pool(true)), BridgeCheck::Found)
            .problems(&p, &b)
            .is_empty());
        let missing = facts(
            None,
            BridgeCheck::Missing {
                available: vec!["virbr0".into()],
            },
        )
        .problems(&p, &b);
        assert_eq!(missing.len(), 2);
        assert!(missing[0].contains("'default'") && missing[0].contains("images"));
        assert!(missing[1].contains("'br0'") && missing[1].contains("virbr0"));
        let inactive = facts(
            Some(pool(false)),
            BridgeCheck::Unknown { reason: "x".into() },
        )
        .problems(&p, &b);
        assert_eq!(
            inactive.len(),
            1,
            "an unknown bridge state is not a problem: {inactive:?}"
        );
        assert!(inactive[0].contains("pool-start"));
    }

    #[test]
    fn status_strings_round_trip() {
        for s in [
            HostStatus::Ok,
            HostStatus::Degraded,
            HostStatus::Unreachable,
        ] {
            assert_eq!(HostStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(HostStatus::parse("bogus"), None);
    }
}
