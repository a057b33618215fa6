//! The fingerprint of a plan: a short hash over exactly what the plan was computed from, so
//! that what an admin confirmed is what runs. A plan shown in the wizard or by `unit plan`
//! carries it; running with it after the inventory changed is refused (`ops::units`).

use crate::model::{RolloutPolicy, ServerSize, ValidationError};
use serde::Serialize;

/// Hex digits of a fingerprint (64 bits: enough to notice a change, short enough to type).
pub const FINGERPRINT_LEN: usize = 16;

/// The load-balancer binding of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LbBasis {
    pub name: String,
    pub kind: crate::model::LbKind,
    pub endpoint: String,
    pub route_id: String,
    pub pool: String,
}

/// A server as the plan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerBasis {
    pub name: String,
    pub host: String,
    pub address: String,
    pub mac: String,
    /// `planned`, `running`, `stopped`; `new` for a server the operation would register.
    pub state: String,
}

/// A host the plan's servers are on: the settings a deploy uses (not its changing facts).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HostBasis {
    pub name: String,
    pub uri: String,
    pub pool: String,
    pub bridge: String,
    pub network: String,
    pub gateway: String,
    pub domain_type: String,
}

/// Everything a plan is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanBasis {
    /// `deploy`, `start`, `stop`, `restart`, `scale`, `delete`. Whether servers are powered
    /// off by force is not part of the plan (the same steps run), so it is not here.
    pub action: String,
    /// The servers the action names (start, stop, restart); empty: all. Order and repeats do
    /// not matter.
    pub action_servers: Vec<String>,
    /// The count a scale asks for.
    pub count: Option<u32>,
    pub unit: String,
    pub version: u32,
    pub image: String,
    pub image_version: u32,
    pub definition: String,
    pub definition_version: u32,
    pub size: ServerSize,
    pub name_pattern: String,
    pub addresses: String,
    pub lb: Option<LbBasis>,
    pub policy: RolloutPolicy,
    /// The unit's servers in the order they were registered (a scale in's choice depends on
    /// it).
    pub servers: Vec<ServerBasis>,
    /// Servers the operation would register (scale out): names, addresses, MACs and hosts
    /// depend on every unit's servers and every host's room, so the choice itself counts.
    pub new_servers: Vec<ServerBasis>,
    /// The hosts of `servers` and `new_servers`. Order and repeats do not matter.
    pub hosts: Vec<HostBasis>,
}

/// The fingerprint of a plan computed from `basis`: the first [`FINGERPRINT_LEN`] hex digits
/// of the sha256 of a canonical encoding. Equal bases give equal fingerprints; any change to
/// a field gives another one.
pub fn fingerprint(basis: &PlanBasis) -> String {
    use sha2::{Digest, Sha256};
    let mut b = basis.clone();
    b.action_servers.sort();
    b.action_servers.dedup();
    b.hosts.sort();
    b.hosts.dedup();
    // Serializing plain structs, vectors and strings cannot fail; the label keeps this
    // encoding apart from any other.
    let json = serde_json::to_string(&b).unwrap_or_default();
    let digest = Sha256::digest(format!("flotilla-plan-v1\n{json}").as_bytes());
    digest
        .iter()
        .take(FINGERPRINT_LEN / 2)
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A fingerprint as an admin or a script passes it back: trimmed, any case.
pub fn parse_fingerprint(value: &str) -> Result<String, ValidationError> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == FINGERPRINT_LEN && v.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(ValidationError::new(
            "plan",
            format!(
                "{} is not a plan fingerprint: {FINGERPRINT_LEN} hex digits, as `flotillactl unit plan` prints them",
                crate::model::quote_input(value)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, host: &str, address: &str, state: &str) -> ServerBasis {
        ServerBasis {
            name: name.into(),
            host: host.into(),
            address: address.into(),
            mac: format!("52:54:00:00:00:{}", &address[address.len() - 2..]),
            state: state.into(),
        }
    }

    fn host(name: &str) -> HostBasis {
        HostBasis {
            name: name.into(),
            uri: format!("qemu+ssh://admin@{name}/system"),
            pool: "default".into(),
            bridge: "br0".into(),
            network: "10.77.0.0/24".into(),
            gateway: "10.77.0.1".into(),
            domain_type: String::new(),
        }
    }

    fn basis() -> PlanBasis {
        PlanBasis {
            action: "stop".into(),
            action_servers: vec!["shop-2".into(), "shop-1".into()],
            count: None,
            unit: "shop".into(),
            version: 1,
            image: "base".into(),
            image_version: 2,
            definition: "shop".into(),
            definition_version: 3,
            size: ServerSize {
                cpus: 1,
                memory_mib: 256,
                disk_gib: 0,
            },
            name_pattern: "shop-{n}".into(),
            addresses: "10.77.0.11-10.77.0.40".into(),
            lb: Some(LbBasis {
                name: "edge".into(),
                kind: crate::model::LbKind::Haproxy,
                endpoint: "unix:/run/haproxy.sock".into(),
                route_id: String::new(),
                pool: "be_shop".into(),
            }),
            policy: RolloutPolicy::default(),
            servers: vec![
                server("shop-1", "h1", "10.77.0.11", "running"),
                server("shop-2", "h2", "10.77.0.12", "running"),
            ],
            new_servers: vec![server("shop-3", "h1", "10.77.0.13", "new")],
            hosts: vec![host("h1"), host("h2")],
        }
    }

    #[test]
    fn a_fingerprint_is_short_hex_and_stable() {
        let fp = fingerprint(&basis());
        assert_eq!(fp.len(), FINGERPRINT_LEN);
        assert!(
            fp.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{fp}"
        );
        assert_eq!(
            fingerprint(&basis()),
            fp,
            "the same basis, the same fingerprint"
        );
        assert_eq!(
            parse_fingerprint(&format!("  {}\n", fp.to_uppercase())),
            Ok(fp.clone())
        );
        for bad in [
            "",
            "abc",
            &format!("{fp}0"),
            "zzzzzzzzzzzzzzzz",
            "0123456789abcde ",
        ] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert_eq!(e.field, "plan", "{bad:?}");
        }
    }

    #[test]
    fn what_does_not_change_the_plan_does_not_change_the_fingerprint() {
        let fp = fingerprint(&basis());
        let mut b = basis();
        b.action_servers = vec!["shop-1".into(), "shop-2".into(), "shop-1".into()];
        b.hosts = vec![host("h2"), host("h1"), host("h2")];
        assert_eq!(fingerprint(&b), fp, "named servers and hosts are sets");
    }

    #[test]
    fn every_input_changes_the_fingerprint() {
        type Change = (&'static str, fn(&mut PlanBasis));
        let changes: &[Change] = &[
            ("action", |b| b.action = "restart".into()),
            ("action servers", |b| {
                b.action_servers.pop().map(drop).unwrap_or(())
            }),
            ("action servers: all", |b| b.action_servers.clear()),
            ("count", |b| b.count = Some(3)),
            ("unit", |b| b.unit = "shop2".into()),
            ("version", |b| b.version = 2),
            ("image", |b| b.image = "other".into()),
            ("image version", |b| b.image_version = 3),
            ("definition", |b| b.definition = "other".into()),
            ("definition version", |b| b.definition_version = 4),
            ("cpus", |b| b.size.cpus = 2),
            ("memory", |b| b.size.memory_mib = 512),
            ("disk", |b| b.size.disk_gib = 10),
            ("name pattern", |b| b.name_pattern = "web-{n}".into()),
            ("addresses", |b| {
                b.addresses = "10.77.0.11-10.77.0.41".into()
            }),
            ("no lb", |b| b.lb = None),
            ("lb name", |b| {
                b.lb.as_mut()
                    .into_iter()
                    .for_each(|l| l.name = "lb2".into())
            }),
            ("lb kind", |b| {
                b.lb.as_mut()
                    .into_iter()
                    .for_each(|l| l.kind = crate::model::LbKind::Caddy)
            }),
            ("lb endpoint", |b| {
                b.lb.as_mut()
                    .into_iter()
                    .for_each(|l| l.endpoint = "tcp:x:1".into())
            }),
            ("lb route", |b| {
                b.lb.as_mut()
                    .into_iter()
                    .for_each(|l| l.route_id = "r".into())
            }),
            ("lb pool", |b| {
                b.lb.as_mut()
                    .into_iter()
                    .for_each(|l| l.pool = "be_x".into())
            }),
            ("max unavailable", |b| b.policy.max_unavailable = 2),
            ("drain timeout", |b| b.policy.drain_timeout_s = 31),
            ("health timeout", |b| b.policy.health_timeout_s = 301),
            ("shutdown timeout", |b| b.policy.shutdown_timeout_s = 61),
            ("a server more", |b| {
                b.servers.push(server("x-1", "h1", "10.77.0.99", "planned"))
            }),
            ("a server less", |b| {
                b.servers.pop();
            }),
            ("server order", |b| b.servers.reverse()),
            ("server name", |b| b.servers[0].name = "shop-9".into()),
            ("server host", |b| b.servers[0].host = "h2".into()),
            ("server address", |b| {
                b.servers[0].address = "10.77.0.50".into()
            }),
            ("server mac", |b| {
                b.servers[0].mac = "52:54:00:aa:bb:cc".into()
            }),
            ("server state", |b| b.servers[0].state = "stopped".into()),
            ("new server address", |b| {
                b.new_servers[0].address = "10.77.0.14".into()
            }),
            ("new server host", |b| b.new_servers[0].host = "h2".into()),
            ("no new server", |b| b.new_servers.clear()),
            ("a host more", |b| b.hosts.push(host("h3"))),
            ("host uri", |b| b.hosts[0].uri = "qemu:///system".into()),
            ("host pool", |b| b.hosts[0].pool = "fast".into()),
            ("host bridge", |b| b.hosts[0].bridge = "br1".into()),
            ("host network", |b| {
                b.hosts[0].network = "10.77.0.0/16".into()
            }),
            ("host gateway", |b| {
                b.hosts[0].gateway = "10.77.0.254".into()
            }),
            ("host domain type", |b| {
                b.hosts[0].domain_type = "qemu".into()
            }),
            // A value moved from one field to its neighbour is still a change.
            ("field boundary", |b| {
                b.image = "basesho".into();
                b.definition = "p".into();
            }),
        ];
        let mut seen = std::collections::HashMap::new();
        seen.insert(fingerprint(&basis()), "unchanged");
        for (what, change) in changes {
            let mut b = basis();
            change(&mut b);
            assert_ne!(b, basis(), "{what}: the change changes nothing");
            let fp = fingerprint(&b);
            if let Some(other) = seen.insert(fp.clone(), what) {
                panic!("{what} gives the fingerprint of {other}: {fp}");
            }
        }
    }
}
