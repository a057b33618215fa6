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
