//! Which names, addresses, MACs and hosts new servers get, which servers a scale in removes,
//! and how much memory each host has left — decided from plain data. `ops::units` reads the
//! inventory, calls these and records what they chose.

use super::{place, HostRoom};
use crate::model::{
    check_server_address, quote_input, AddressRange, HostName, Ipv4Cidr, MacAddr, NamePattern,
    ValidationError, MAX_SERVERS,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

/// Names Flotilla gives its own domains and volumes on hosts (`flotilla-builder-…`, master
/// copies `flotilla-<image>-v<N>.qcow2`): no server may be named so.
pub const RESERVED_PREFIX: &str = "flotilla-";

/// Attempts at a MAC of a server's own before giving up (each collision moves to another).
const MAC_ATTEMPTS: u32 = 1 << 16;

/// A host as allocation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    /// `10.77.0.0/24`; empty: not set, so no server may be placed there.
    pub network: String,
    /// Empty for none.
    pub gateway: String,
    /// What the host has in all (its last known facts); 0 when never reached.
    pub memory_mib: u64,
}

/// A server the inventory holds already (of any unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub unit: String,
    pub name: String,
    pub host: String,
    pub address: String,
    pub mac: String,
    /// The memory its unit's current version promises it.
    pub memory_mib: u64,
}

/// A server named one by one: name, address and (empty: placed automatically) host, as typed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wanted {
    pub name: String,
    pub address: String,
    pub host: String,
}

/// The servers to allocate for a unit.
#[derive(Debug, Clone, Default)]
pub struct AllocRequest<'a> {
    pub unit: &'a str,
    /// Named one by one; they come first.
    pub servers: &'a [Wanted],
    /// Bulk: this many, named by `name_pattern`, addresses from `addresses`.
    pub count: u32,
    pub name_pattern: &'a str,
    pub addresses: &'a str,
    /// Hosts to place the unplaced ones on; empty: every host with a network.
    pub hosts: &'a [String],
    /// Each server's memory, for placement.
    pub memory_mib: u64,
}

/// One server as allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    pub name: String,
    pub host: String,
    pub address: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub servers: Vec<Allocated>,
    /// The bulk pattern and range as recorded (empty without bulk servers).
    pub name_pattern: String,
    pub addresses: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("server {0} exists already")]
    NameTaken(String),
    #[error("server address {0} is taken")]
    AddressTaken(String),
    #[error("host {0} is not registered")]
    UnknownHost(String),
}

/// A MAC in the `52:54:00` range from the server's name; `attempt` moves to another on a
/// collision.
pub fn mac_candidate(unit: &str, server: &str, attempt: u32) -> MacAddr {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{unit}/{server}/{attempt}").as_bytes());
    MacAddr::new([0x52, 0x54, 0x00, h[0], h[1], h[2]])
}

/// The server's MAC: its first candidate not in `taken` (which then holds it). `None` only
/// when thousands of candidates in a row are taken.
pub fn server_mac(unit: &str, server: &str, taken: &mut HashSet<String>) -> Option<MacAddr> {
    (0..MAC_ATTEMPTS)
        .map(|attempt| mac_candidate(unit, server, attempt))
        .find(|m| taken.insert(m.to_string()))
}

/// Free memory per host: its memory minus what registered servers (of every unit) were
/// promised; and how many servers of `unit` each has already.
pub fn host_rooms(hosts: &[&HostView], registered: &[Registered], unit: &str) -> Vec<HostRoom> {
    let mut promised: HashMap<&str, u64> = HashMap::new();
    let mut of_unit: HashMap<&str, u32> = HashMap::new();
    for s in registered {
        *promised.entry(&s.host).or_default() += s.memory_mib;
        if s.unit == unit {
            *of_unit.entry(&s.host).or_default() += 1;
        }
    }
    hosts
        .iter()
        .map(|h| HostRoom {
            free_memory_mib: h
                .memory_mib
                .saturating_sub(promised.get(h.name.as_str()).copied().unwrap_or(0)),
            unit_servers: of_unit.get(h.name.as_str()).copied().unwrap_or(0),
            name: h.name.clone(),
            ..HostRoom::default()
        })
        .collect()
}

/// Which of a unit's servers (`names`, in the order they were registered) a scale in by
/// `remove` takes away, in the order it removes them: the newest first — the highest number
/// by `name_pattern`, then the last registered. Names the pattern does not match (servers
/// named one by one) count as number 0: they go last, the last registered of them first.
pub fn scale_in(names: &[&str], name_pattern: &str, remove: usize) -> Vec<usize> {
    let pattern = NamePattern::parse(name_pattern).ok();
    let mut order: Vec<(u32, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                pattern.as_ref().and_then(|p| p.number_of(n)).unwrap_or(0),
                i,
            )
        })
        .collect();
    order.sort_unstable();
    order.iter().rev().take(remove).map(|(_, i)| *i).collect()
}

/// Names, addresses, MACs and hosts for the servers of `req`, each checked against what is
/// registered (unique names, addresses, MACs) and its host's network. Explicit servers come
/// first, then the bulk ones (the lowest free numbers and addresses); the unplaced ones are
/// spread by [`place`].
pub fn allocate(
    req: &AllocRequest<'_>,
    hosts: &[HostView],
    registered: &[Registered],
) -> Result<Allocation, AllocError> {
    let hosts: BTreeMap<&str, &HostView> = hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    let mut taken_names: HashSet<String> = registered.iter().map(|s| s.name.clone()).collect();
    let mut taken_addrs: HashSet<String> = registered.iter().map(|s| s.address.clone()).collect();
    let mut taken_macs: HashSet<String> = registered.iter().map(|s| s.mac.clone()).collect();
    let mut out: Vec<Allocated> = Vec::new();
    let total = u64::from(req.count) + req.servers.len() as u64;
    if total > u64::from(MAX_SERVERS) {
        return Err(ValidationError::new(
            "count",
            format!("{total} servers is more than the {MAX_SERVERS} a unit may have"),
        )
        .into());
    }
    // Explicit servers first.
    let mut unplaced: Vec<usize> = Vec::new();
    for s in req.servers {
        let sname = HostName::parse(s.name.trim())
            .map_err(|e| ValidationError::new("server name", e.problem))?;
        let addr: Ipv4Addr = s.address.trim().parse().map_err(|_| {
            ValidationError::new(
                "address",
                format!(
                    "{} (server {sname}) is not an IPv4 address",
                    quote_input(&s.address)
                ),
            )
        })?;
        if !taken_names.insert(sname.to_string()) {
            return Err(AllocError::NameTaken(sname.to_string()));
        }
        if !taken_addrs.insert(addr.to_string()) {
            return Err(AllocError::AddressTaken(addr.to_string()));
        }
        let host = s.host.trim();
        if host.is_empty() {
            unplaced.push(out.len());
        } else if !hosts.contains_key(host) {
            return Err(AllocError::UnknownHost(host.to_owned()));
        }
        out.push(Allocated {
            name: sname.to_string(),
            host: host.to_owned(),
            address: addr.to_string(),
            mac: String::new(),
        });
    }
    // Then the bulk ones.
    let (mut pattern, mut range) = (String::new(), String::new());
    if req.count > 0 || !req.name_pattern.trim().is_empty() {
        let p = NamePattern::parse(req.name_pattern.trim())?;
        let r = AddressRange::parse(req.addresses)?;
        pattern = req.name_pattern.trim().to_owned();
        range = r.to_string();
        let mut n = 1u32;
        let mut free = r.iter();
        for _ in 0..req.count {
            while taken_names.contains(&p.name(n)) {
                n += 1;
            }
            let addr = free
                .find(|a| !taken_addrs.contains(&a.to_string()))
                .ok_or_else(|| {
                    ValidationError::new(
                        "addresses",
                        format!(
                            "the range {r} has no free address left for {} servers",
                            req.count
                        ),
                    )
                })?;
            taken_names.insert(p.name(n));
            taken_addrs.insert(addr.to_string());
            unplaced.push(out.len());
            out.push(Allocated {
                name: p.name(n),
                host: String::new(),
                address: addr.to_string(),
                mac: String::new(),
            });
        }
    }
    // Placement for the ones without a host.
    if !unplaced.is_empty() {
        let candidates: Vec<&HostView> = if req.hosts.is_empty() {
            hosts
                .values()
                .filter(|h| !h.network.is_empty())
                .copied()
                .collect()
        } else {
            req.hosts
                .iter()
                .map(|h| {
                    hosts
                        .get(h.trim())
                        .copied()
                        .ok_or_else(|| AllocError::UnknownHost(h.trim().to_owned()))
                })
                .collect::<Result<_, _>>()?
        };
        if candidates.is_empty() && !hosts.is_empty() {
            return Err(ValidationError::new(
                "placement",
                "no host has a network set, so no server can be placed; set one with: flotillactl host set HOST --network CIDR --gateway IP (or Hosts → Network)",
            )
            .into());
        }
        let rooms = host_rooms(&candidates, registered, req.unit);
        let placed = place(&rooms, unplaced.len() as u32, req.memory_mib)
            .map_err(|e| ValidationError::new("placement", e.to_string()))?;
        for (i, host) in unplaced.iter().zip(placed) {
            out[*i].host = host;
        }
    }
    for s in &mut out {
        if s.name.starts_with(RESERVED_PREFIX) {
            return Err(ValidationError::new(
                "server name",
                format!(
                    "{} starts with {RESERVED_PREFIX:?}, which Flotilla keeps for its own domains and volumes (builders, master copies); choose another name",
                    quote_input(&s.name)
                ),
            )
            .into());
        }
        let host = hosts
            .get(s.host.as_str())
            .ok_or_else(|| AllocError::UnknownHost(s.host.clone()))?;
        if host.network.is_empty() {
            return Err(ValidationError::new(
                "host",
                format!(
                    "host {} has no network set, so server addresses cannot be checked; set it with: flotillactl host set {} --network CIDR --gateway IP",
                    host.name, host.name
                ),
            )
            .into());
        }
        let net = Ipv4Cidr::parse(&host.network)?;
        let gw = host.gateway.parse().ok();
        let addr: Ipv4Addr = s.address.parse().map_err(|_| {
            ValidationError::new("address", format!("{} is not an address", s.address))
        })?;
        check_server_address(addr, net, gw).map_err(|e| {
            ValidationError::new(
                "address",
                format!("{} (server {} on host {})", e.problem, s.name, host.name),
            )
        })?;
        s.mac = server_mac(req.unit, &s.name, &mut taken_macs)
            .ok_or_else(|| {
                ValidationError::new(
                    "mac",
                    format!(
                        "no free MAC address found for server {}: too many are taken",
                        s.name
                    ),
                )
            })?
            .to_string();
    }
    Ok(Allocation {
        servers: out,
        name_pattern: pattern,
        addresses: range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, memory_mib: u64) -> HostView {
        HostView {
            name: name.into(),
            network: "10.77.0.0/24".into(),
            gateway: "10.77.0.1".into(),
            memory_mib,
        }
    }

    fn reg(unit: &str, name: &str, host: &str, address: &str, mac: &str) -> Registered {
        Registered {
            unit: unit.into(),
            name: name.into(),
            host: host.into(),
            address: address.into(),
            mac: mac.into(),
            memory_mib: 256,
        }
    }

    fn bulk(count: u32, addresses: &str) -> AllocRequest<'_> {
        AllocRequest {
            unit: "shop",
            count,
            name_pattern: "shop-{n}",
            addresses,
            memory_mib: 256,
            ..Default::default()
        }
    }

    fn names(a: &Allocation) -> Vec<(&str, &str, &str)> {
        a.servers
            .iter()
            .map(|s| (s.name.as_str(), s.address.as_str(), s.host.as_str()))
            .collect()
    }

    #[test]
    fn bulk_servers_take_the_lowest_free_names_and_addresses() {
        let hosts = [host("h1", 4096), host("h2", 4096)];
        let registered = [
            reg("shop", "shop-1", "h1", "10.77.0.11", "52:54:00:00:00:01"),
            reg("other", "other-1", "h2", "10.77.0.12", "52:54:00:00:00:02"),
        ];
        let a = allocate(&bulk(3, "10.77.0.11-10.77.0.20"), &hosts, &registered).unwrap();
        // shop-1 and .11/.12 are taken; the unit has a server on h1 already, so h2 first.
        assert_eq!(
            names(&a),
            [
                ("shop-2", "10.77.0.13", "h2"),
                ("shop-3", "10.77.0.14", "h1"),
                ("shop-4", "10.77.0.15", "h2")
            ]
        );
        assert_eq!(a.name_pattern, "shop-{n}");
        assert_eq!(a.addresses, "10.77.0.11-10.77.0.20");
        // A gap in the numbers is filled first.
        let registered = [reg("shop", "shop-2", "h1", "10.77.0.30", "m")];
        let a = allocate(&bulk(2, "10.77.0.11-10.77.0.20"), &hosts, &registered).unwrap();
        let got: Vec<&str> = a.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, ["shop-1", "shop-3"]);
        // The same inventory gives the same answer (steps are retried on it).
        assert_eq!(
            allocate(&bulk(2, "10.77.0.11-10.77.0.20"), &hosts, &registered).unwrap(),
            a
        );
    }

    #[test]
    fn an_exhausted_range_is_refused() {
        let hosts = [host("h1", 4096)];
        let registered = [reg("x", "x-1", "h1", "10.77.0.11", "m")];
        let err = allocate(&bulk(2, "10.77.0.11-10.77.0.12"), &hosts, &registered).unwrap_err();
        assert!(
            matches!(&err, AllocError::Invalid(v) if v.field == "addresses" && v.problem.contains("no free address left for 2")),
            "{err}"
        );
        // Exactly enough fits.
        assert_eq!(
            allocate(&bulk(1, "10.77.0.11-10.77.0.12"), &hosts, &registered)
                .unwrap()
                .servers[0]
                .address,
            "10.77.0.12"
        );
        let err = allocate(&bulk(MAX_SERVERS + 1, "10.0.0.0-10.255.0.0"), &hosts, &[]).unwrap_err();
        assert!(
            matches!(&err, AllocError::Invalid(v) if v.field == "count"),
            "{err}"
        );
    }

    #[test]
    fn explicit_servers_are_checked_and_collisions_refused() {
        let hosts = [host("h1", 4096), host("h2", 4096)];
        let registered = [reg("shop", "shop-1", "h1", "10.77.0.11", "m")];
        let one = |name: &str, address: &str, host: &str| {
            let wanted = [Wanted {
                name: name.into(),
                address: address.into(),
                host: host.into(),
            }];
            allocate(
                &AllocRequest {
                    unit: "other",
                    servers: &wanted,
                    memory_mib: 256,
                    ..Default::default()
                },
                &hosts,
                &registered,
            )
        };
        let ok = one(" web-1 ", " 10.77.0.50 ", "h2").unwrap();
        assert_eq!(names(&ok), [("web-1", "10.77.0.50", "h2")]);
        assert_eq!(ok.name_pattern, "");
        assert_eq!(
            one("shop-1", "10.77.0.50", ""),
            Err(AllocError::NameTaken("shop-1".into()))
        );
        assert_eq!(
            one("web-1", "10.77.0.11", ""),
            Err(AllocError::AddressTaken("10.77.0.11".into()))
        );
        assert_eq!(
            one("web-1", "10.77.0.50", "h9"),
            Err(AllocError::UnknownHost("h9".into()))
        );
        for (name, address, field) in [
            ("Web_1", "10.77.0.50", "server name"),
            ("web-1", "not-an-ip", "address"),
            ("web-1", "10.78.0.50", "address"),
            ("web-1", "10.77.0.1", "address"),
            ("web-1", "10.77.0.255", "address"),
            ("flotilla-builder-base", "10.77.0.50", "server name"),
        ] {
            match one(name, address, "") {
                Err(AllocError::Invalid(v)) => assert_eq!(v.field, field, "{name} {address}: {v}"),
                other => panic!("{name} {address}: {other:?}"),
            }
        }
        // Two of the same in one request.
        let twice = [
            Wanted {
                name: "web-1".into(),
                address: "10.77.0.50".into(),
                host: String::new(),
            },
            Wanted {
                name: "web-1".into(),
                address: "10.77.0.51".into(),
                host: String::new(),
            },
        ];
        let req = AllocRequest {
            unit: "other",
            servers: &twice,
            memory_mib: 256,
            ..Default::default()
        };
        assert_eq!(
            allocate(&req, &hosts, &registered),
            Err(AllocError::NameTaken("web-1".into()))
        );
        // Explicit names are taken before bulk ones are numbered.
        let first = [Wanted {
            name: "shop-2".into(),
            address: "10.77.0.12".into(),
            host: "h1".into(),
        }];
        let req = AllocRequest {
            servers: &first,
            ..bulk(1, "10.77.0.11-10.77.0.20")
        };
        let a = allocate(&req, &hosts, &registered).unwrap();
        assert_eq!(
            names(&a),
            [
                ("shop-2", "10.77.0.12", "h1"),
                ("shop-3", "10.77.0.13", "h2")
            ]
        );
    }

    #[test]
    fn macs_are_unique_across_the_inventory() {
        let mut taken = HashSet::new();
        let first = server_mac("shop", "shop-1", &mut taken).unwrap();
        assert_eq!(first, mac_candidate("shop", "shop-1", 0));
        assert_eq!(first.bytes()[..3], [0x52, 0x54, 0x00]);
        assert!(taken.contains(&first.to_string()));
        // Taken: the next candidate, and the same one every time.
        let again = server_mac("shop", "shop-1", &mut taken.clone()).unwrap();
        assert_eq!(again, mac_candidate("shop", "shop-1", 1));
        assert_ne!(again, first);
        // A registered server holding a new server's first choice moves it on.
        let hosts = [host("h1", 4096)];
        let holder = mac_candidate("shop", "shop-1", 0).to_string();
        let registered = [reg("x", "x-1", "h1", "10.77.0.99", &holder)];
        let a = allocate(&bulk(1, "10.77.0.11"), &hosts, &registered).unwrap();
        assert_eq!(
            a.servers[0].mac,
            mac_candidate("shop", "shop-1", 1).to_string()
        );
        // Many servers: all different.
        let a = allocate(
            &bulk(200, "10.77.0.2-10.77.0.254"),
            &[host("h1", 1 << 20)],
            &[],
        )
        .unwrap();
        let macs: HashSet<&str> = a.servers.iter().map(|s| s.mac.as_str()).collect();
        assert_eq!(macs.len(), 200);
    }

    #[test]
    fn placement_uses_hosts_with_a_network_and_their_headroom() {
        let mut bare = host("h0", 1 << 20);
        bare.network.clear();
        // No host has a network: say how to set one.
        let err = allocate(&bulk(1, "10.77.0.11"), &[bare.clone()], &[]).unwrap_err();
        assert!(
            matches!(&err, AllocError::Invalid(v) if v.problem.contains("flotillactl host set")),
            "{err}"
        );
        // Named explicitly, a host without a network is refused at the address check.
        let chosen = ["h0".to_owned()];
        let req = AllocRequest {
            hosts: &chosen,
            ..bulk(1, "10.77.0.11")
        };
        let err = allocate(&req, &[bare.clone(), host("h1", 4096)], &[]).unwrap_err();
        assert!(
            matches!(&err, AllocError::Invalid(v) if v.field == "host"),
            "{err}"
        );
        let chosen = ["h9".to_owned()];
        let req = AllocRequest {
            hosts: &chosen,
            ..bulk(1, "10.77.0.11")
        };
        assert_eq!(
            allocate(&req, &[host("h1", 4096)], &[]),
            Err(AllocError::UnknownHost("h9".into()))
        );
        // Memory promised to other units' servers counts: h1 has room for one more only.
        let registered = [
            reg("x", "x-1", "h1", "10.77.0.90", "a"),
            reg("x", "x-2", "h1", "10.77.0.91", "b"),
            reg("x", "x-3", "h1", "10.77.0.92", "c"),
        ];
        let a = allocate(
            &bulk(1, "10.77.0.11-10.77.0.20"),
            &[host("h1", 1024)],
            &registered,
        )
        .unwrap();
        assert_eq!(a.servers[0].host, "h1");
        let err = allocate(
            &bulk(2, "10.77.0.11-10.77.0.20"),
            &[host("h1", 1024)],
            &registered,
        )
        .unwrap_err();
        assert!(
            matches!(&err, AllocError::Invalid(v) if v.field == "placement" && v.problem.contains("room for 1")),
            "{err}"
        );
        assert!(matches!(
            allocate(&bulk(1, "10.77.0.11"), &[], &[]),
            Err(AllocError::Invalid(v)) if v.field == "placement"
        ));
    }

    #[test]
    fn headroom_is_memory_minus_what_was_promised() {
        let (h1, h2, h3) = (host("h1", 1000), host("h2", 1000), host("h3", 0));
        let mut registered = vec![
            reg("shop", "shop-1", "h1", "a", "a"),
            reg("other", "other-1", "h1", "b", "b"),
            reg("other", "other-2", "h2", "c", "c"),
        ];
        registered[1].memory_mib = 600;
        let rooms = host_rooms(&[&h1, &h2, &h3], &registered, "shop");
        let got: Vec<(&str, u64, u32)> = rooms
            .iter()
            .map(|r| (r.name.as_str(), r.free_memory_mib, r.unit_servers))
            .collect();
        // h1: 1000 - 256 - 600; never below zero (h3 was never reached).
        assert_eq!(got, [("h1", 144, 1), ("h2", 744, 0), ("h3", 0, 0)]);
        registered[1].memory_mib = 5000;
        assert_eq!(
            host_rooms(&[&h1], &registered, "shop")[0].free_memory_mib,
            0
        );
        assert_eq!(host_rooms(&[&h1], &[], "shop")[0].free_memory_mib, 1000);
    }

    #[test]
    fn scale_in_removes_the_newest_first() {
        let servers = ["shop-1", "shop-10", "shop-2", "shop-3"];
        assert_eq!(
            scale_in(&servers, "shop-{n}", 2),
            [1, 3],
            "shop-10, then shop-3"
        );
        assert_eq!(scale_in(&servers, "shop-{n}", 0), Vec::<usize>::new());
        assert_eq!(scale_in(&servers, "shop-{n}", 9), [1, 3, 2, 0]);
        // Names the pattern does not match go last, the last registered of them first.
        let servers = ["web-a", "shop-1", "web-b", "shop-2"];
        assert_eq!(scale_in(&servers, "shop-{n}", 3), [3, 1, 2]);
        assert_eq!(scale_in(&servers, "shop-{n}", 4), [3, 1, 2, 0]);
        // Zero padding; "shop-x" and "shop-" are not numbers.
        let servers = ["shop-009", "shop-x", "shop-010", "shop-"];
        assert_eq!(scale_in(&servers, "shop-{n:03}", 2), [2, 0]);
        // Without a pattern: the last registered first.
        assert_eq!(scale_in(&["b", "a", "c"], "", 2), [2, 1]);
        assert_eq!(scale_in(&["b", "a", "c"], "not a pattern", 1), [2]);
    }
}
