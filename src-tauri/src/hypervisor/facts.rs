//! What a host is: versions, CPUs, memory, its storage pool and bridge.

use super::{HvError, Hypervisor};
use crate::model::{BridgeCheck, BridgeName, HostFacts, LibvirtUri, PoolFacts, PoolName};
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};

/// libvirt encodes versions as major * 1_000_000 + minor * 1_000 + release.
fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

impl Hypervisor {
    /// Connects to `uri` and reads what Flotilla needs to know about the host.
    pub async fn host_facts(
        &self,
        uri: &LibvirtUri,
        pool: &PoolName,
        bridge: &BridgeName,
    ) -> Result<HostFacts, HvError> {
        let (pool, bridge) = (pool.to_string(), bridge.to_string());
        self.call(uri, "read the host's facts", move |c| {
            read_facts(c, &pool, &bridge)
        })
        .await
    }
}

fn read_facts(c: &Connect, pool: &str, bridge: &str) -> Result<HostFacts, VirtError> {
    let node = c.node_info()?;
    let mut pools_available: Vec<String> = c
        .list_all_storage_pools(0)?
        .iter()
        .filter_map(|p| p.name().ok())
        .collect();
    pools_available.sort();
    let pool = if pools_available.iter().any(|p| p == pool) {
        let p = c.lookup_storage_pool_by_name(pool)?;
        let info = p.info()?;
        Some(PoolFacts {
            name: pool.to_owned(),
            active: p.is_active()?,
            capacity_bytes: info.capacity,
            allocation_bytes: info.allocation,
            available_bytes: info.available,
        })
    } else {
        None
    };
    Ok(HostFacts {
        hostname: c.hostname()?,
        hypervisor: c.driver_type()?,
        // Some drivers cannot tell the hypervisor version; that is not a reason to fail.
        hypervisor_version: c
            .hyp_version()
            .map(version_string)
            .unwrap_or_else(|_| "unknown".into()),
        libvirt_version: version_string(c.lib_version()?),
        cpu_model: node.model,
        cpus: node.cpus,
        memory_bytes: node.memory.saturating_mul(1024),
        pool,
        pools_available,
        bridge: check_bridge(c, bridge)?,
        kvm: c
            .capabilities()
            .map(|caps| caps.contains("<domain type='kvm'"))
            .unwrap_or(false),
    })
}

/// A bridge exists when libvirt knows it as a host interface of type bridge, or as the bridge
/// of one of its networks.
fn check_bridge(c: &Connect, bridge: &str) -> Result<BridgeCheck, VirtError> {
    let mut bridges: Vec<String> = c
        .list_all_networks(0)?
        .iter()
        .filter_map(|n| n.bridge_name().ok())
        .collect();
    let interfaces = match c.list_all_interfaces(0) {
        Ok(list) => Some(list),
        // No interface driver on that host: networks are all we can see.
        Err(e) if e.code().is_known_and(|n| n == ErrorNumber::NoSupport) => None,
        Err(e) => return Err(e),
    };
    if let Some(list) = &interfaces {
        for iface in list {
            let xml = iface.xml_desc(0)?;
            if is_bridge_interface(&xml) {
                bridges.push(iface.name()?);
            }
        }
    }
    bridges.sort();
    bridges.dedup();
    Ok(if bridges.iter().any(|b| b == bridge) {
        BridgeCheck::Found
    } else if interfaces.is_none() {
        BridgeCheck::Unknown {
            reason: "the host's libvirt has no interface driver, and no libvirt network uses this bridge".into(),
        }
    } else {
        BridgeCheck::Missing { available: bridges }
    })
}

fn is_bridge_interface(xml: &str) -> bool {
    roxmltree::Document::parse(xml)
        .ok()
        .is_some_and(|doc| doc.root_element().attribute("type") == Some("bridge"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::test_node_uri;
    use crate::hypervisor::HvConfig;

    #[test]
    fn versions_are_decoded() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_011), "7.2.11");
    }

    #[test]
    fn bridge_interfaces_are_recognised() {
        assert!(is_bridge_interface("<interface type='bridge' name='br0'/>"));
        assert!(!is_bridge_interface(
            "<interface type='ethernet' name='eth0'/>"
        ));
        assert!(!is_bridge_interface("not xml"));
    }

    #[tokio::test]
    async fn facts_of_the_test_node() {
        let hv = Hypervisor::new(HvConfig::default());
        let pool = PoolName::parse("default").unwrap();
        let facts = hv
            .host_facts(&test_node_uri(), &pool, &BridgeName::parse("br0").unwrap())
            .await
            .unwrap();
        assert_eq!(facts.hypervisor, "TEST");
        assert_eq!(facts.cpus, 4);
        assert_eq!(facts.memory_bytes, 8 << 30);
        assert_eq!(facts.cpu_model, "x86_64");
        let p = facts.pool.as_ref().expect("pool default");
        assert!(p.active);
        assert_eq!(p.capacity_bytes, 100 << 30);
        assert_eq!(
            facts.bridge,
            BridgeCheck::Found,
            "br0 is a bridge interface"
        );
        assert!(facts
            .libvirt_version
            .starts_with(|c: char| c.is_ascii_digit()));

        let via_network = hv
            .host_facts(
                &test_node_uri(),
                &pool,
                &BridgeName::parse("virbr0").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            via_network.bridge,
            BridgeCheck::Found,
            "virbr0 is a network's bridge"
        );
    }

    #[tokio::test]
    async fn missing_pool_and_bridge_are_reported_with_what_exists() {
        let hv = Hypervisor::new(HvConfig::default());
        let facts = hv
            .host_facts(
                &test_node_uri(),
                &PoolName::parse("images").unwrap(),
                &BridgeName::parse("eth0").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(facts.pool, None);
        assert_eq!(facts.pools_available, ["default"]);
        assert_eq!(
            facts.bridge,
            BridgeCheck::Missing {
                available: vec!["br0".into(), "virbr0".into()]
            },
            "eth0 exists but is not a bridge"
        );
    }
}
