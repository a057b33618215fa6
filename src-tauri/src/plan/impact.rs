//! What losing hosts does to the applications: one pure function for the live view (the hosts
//! that failed) and for what-if (hosts the admin picks), and the N+1 audit built on it.
//!
//! Per unit: servers desired, in service now, lost, in service after, against the unit's
//! `min_in_service` → ok, degraded, below minimum, outage; per load-balancer pool the capacity
//! left; whether the surviving hosts have room (memory, CPUs, pool space, the master present
//! or copyable, the address in their network) to replace what was lost, and where each lost
//! server would go: chosen by the one placement rule (`plan::place_one`), as `unit recover`
//! chooses.

use super::place::{place_one, HostRoom, Need};
use crate::model::Ipv4Cidr;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// A host as the impact model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostShape {
    pub name: String,
    /// Memory no registered server was promised, MiB.
    pub free_memory_mib: u64,
    /// Free bytes in its storage pool (`None` when unknown: it does not refuse a copy).
    pub pool_free_bytes: Option<u64>,
    /// Masters with a verified copy on it: (image, version).
    pub masters: BTreeSet<(String, u32)>,
    /// Its logical CPUs (0 when unknown): a server with more virtual CPUs cannot go there.
    pub cpus: u32,
    /// Its network (`None`: none that parses): a lost server is re-created only on a host
    /// whose network holds its address.
    pub network: Option<Ipv4Cidr>,
    /// It may take servers: the monitor says it is ready (or, in a what-if, does not watch
    /// it). A host the monitor says is anything else takes no replacement, as in a recovery.
    pub ready: bool,
}

impl HostShape {
    /// The host as the placement rule sees it (no server of any unit counted yet).
    pub fn room(&self) -> HostRoom {
        HostRoom {
            name: self.name.clone(),
            free_memory_mib: self.free_memory_mib,
            unit_servers: 0,
            cpus: self.cpus,
            network: self.network,
            pool_free_bytes: self.pool_free_bytes,
            masters: self.masters.clone(),
        }
    }
}

/// A unit's server as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerShape {
    pub name: String,
    pub host: String,
    /// Running and (with a load balancer) in rotation.
    pub in_service: bool,
    /// Running (in rotation or not): a recovery re-creates it when its host is lost; a
    /// server stopped on purpose stays stopped where it is.
    pub running: bool,
    /// Its address (`None`: not checked against the hosts' networks).
    pub address: Option<Ipv4Addr>,
}

/// A unit as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitShape {
    pub name: String,
    /// `lb/pool`, when it has a load balancer.
    pub pool: Option<String>,
    pub min_in_service: u32,
    pub memory_mib: u64,
    /// Virtual CPUs of each server.
    pub cpus: u32,
    /// The master its servers run and its size, for a copy to a host that lacks it.
    pub master: (String, u32),
    pub master_bytes: u64,
    pub servers: Vec<ServerShape>,
}

/// Where a lost server would be re-created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replacement {
    pub unit: String,
    pub server: String,
    pub host: String,
}

/// How a unit fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum UnitHealth {
    Ok,
    /// Fewer servers in service than desired, at least the minimum.
    Degraded,
    /// Fewer than `min_in_service`, at least one.
    BelowMinimum,
    /// None in service.
    Outage,
}

/// What the failed hosts do to one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitImpact {
    pub unit: String,
    pub pool: Option<String>,
    pub desired: u32,
    pub in_service_now: u32,
    /// Its servers on the failed hosts.
    pub lost: Vec<String>,
    pub in_service_after: u32,
    pub min_in_service: u32,
    pub health: UnitHealth,
    /// The surviving hosts can take every lost server (memory, pool space, the master there
    /// or copyable into the pool).
    pub replaceable: bool,
    /// Why not, when not.
    pub room: String,
    /// About how long re-creating the lost servers would take (seconds), from this unit's
    /// earlier recoveries or deploys in the journal; `None` without any (the engine fills it
    /// in: the model itself keeps no history).
    pub replace_estimate_s: Option<u32>,
}

/// The impact of a set of failed hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Impact {
    pub failed_hosts: Vec<String>,
    /// Every unit, worst first.
    pub units: Vec<UnitImpact>,
    /// Every load-balancer pool of a unit: the capacity it keeps, least kept first.
    pub pools: Vec<PoolImpact>,
}

/// What the failed hosts leave a load-balancer pool (`lb/pool`): its servers in service now
/// and after, over all units bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PoolImpact {
    pub pool: String,
    pub units: Vec<String>,
    pub in_service_now: u32,
    pub in_service_after: u32,
}

impl PoolImpact {
    /// The share of its capacity the pool keeps, in percent (100 with nothing in service now).
    pub fn kept_percent(&self) -> u32 {
        (self.in_service_after * 100)
            .checked_div(self.in_service_now)
            .unwrap_or(100)
    }
}

/// What one unit loses when `failed` hosts are gone, and whether the others can replace it.
/// Replacement room is planned unit by unit, worst first, each taking what it uses.
pub fn impact(hosts: &[HostShape], units: &[UnitShape], failed: &BTreeSet<String>) -> Impact {
    let units: Vec<&UnitShape> = units.iter().collect();
    impact_of(hosts, &units, failed).0
}

/// Where each lost server that a recovery re-creates would go, in the order `impact` plans
/// them (units worst first, each unit's servers in order): what `unit recover` of each unit,
/// run in that order, chooses.
pub fn replacements(
    hosts: &[HostShape],
    units: &[UnitShape],
    failed: &BTreeSet<String>,
) -> Vec<Replacement> {
    let units: Vec<&UnitShape> = units.iter().collect();
    impact_of(hosts, &units, failed).1
}

fn impact_of(
    hosts: &[HostShape],
    units: &[&UnitShape],
    failed: &BTreeSet<String>,
) -> (Impact, Vec<Replacement>) {
    let mut survivors: Vec<HostRoom> = hosts
        .iter()
        .filter(|h| h.ready && !failed.contains(&h.name))
        .map(HostShape::room)
        .collect();
    let mut out: Vec<(UnitImpact, &UnitShape)> =
        units.iter().map(|u| (assess(u, failed), *u)).collect();
    out.sort_by(|a, b| b.0.health.cmp(&a.0.health).then(a.0.unit.cmp(&b.0.unit)));
    let mut placed = Vec::new();
    for (ui, u) in &mut out {
        (ui.replaceable, ui.room) = place_lost(u, failed, &mut survivors, &mut placed);
    }
    let mut pools: BTreeMap<&str, PoolImpact> = BTreeMap::new();
    for (ui, _) in &out {
        let Some(pool) = ui.pool.as_deref() else {
            continue;
        };
        let p = pools.entry(pool).or_insert_with(|| PoolImpact {
            pool: pool.to_owned(),
            units: Vec::new(),
            in_service_now: 0,
            in_service_after: 0,
        });
        p.units.push(ui.unit.clone());
        p.in_service_now += ui.in_service_now;
        p.in_service_after += ui.in_service_after;
    }
    let mut pools: Vec<PoolImpact> = pools.into_values().collect();
    pools.sort_by_key(PoolImpact::kept_percent);
    let impact = Impact {
        failed_hosts: failed.iter().cloned().collect(),
        units: out.into_iter().map(|(ui, _)| ui).collect(),
        pools,
    };
    (impact, placed)
}

fn assess(u: &UnitShape, failed: &BTreeSet<String>) -> UnitImpact {
    let lost: Vec<String> = u
        .servers
        .iter()
        .filter(|s| failed.contains(&s.host))
        .map(|s| s.name.clone())
        .collect();
    let now = u.servers.iter().filter(|s| s.in_service).count() as u32;
    let after = u
        .servers
        .iter()
        .filter(|s| s.in_service && !failed.contains(&s.host))
        .count() as u32;
    let desired = u.servers.len() as u32;
    let health = if desired == 0 || after == desired {
        UnitHealth::Ok
    } else if after == 0 {
        UnitHealth::Outage
    } else if after < u.min_in_service {
        UnitHealth::BelowMinimum
    } else {
        UnitHealth::Degraded
    };
    UnitImpact {
        unit: u.name.clone(),
        pool: u.pool.clone(),
        desired,
        in_service_now: now,
        lost,
        in_service_after: after,
        min_in_service: u.min_in_service,
        health,
        replaceable: true,
        room: String::new(),
        replace_estimate_s: None,
    }
}

/// Places the lost servers of `u` that a recovery re-creates (the running ones on `failed`
/// hosts) on the surviving hosts by the one placement rule, taking their memory and, where
/// the master is missing, its copy's pool space; each goes into `placed`.
fn place_lost(
    u: &UnitShape,
    failed: &BTreeSet<String>,
    survivors: &mut [HostRoom],
    placed: &mut Vec<Replacement>,
) -> (bool, String) {
    let lost: Vec<&ServerShape> = u
        .servers
        .iter()
        .filter(|s| s.running && failed.contains(&s.host))
        .collect();
    if lost.is_empty() {
        return (true, String::new());
    }
    let mut of_unit: BTreeMap<&str, u32> = BTreeMap::new();
    for s in &u.servers {
        *of_unit.entry(s.host.as_str()).or_default() += 1;
    }
    for h in survivors.iter_mut() {
        h.unit_servers = of_unit.get(h.name.as_str()).copied().unwrap_or(0);
    }
    for (done, s) in lost.iter().enumerate() {
        let need = Need {
            memory_mib: u.memory_mib,
            cpus: u.cpus,
            master: Some((&u.master, u.master_bytes)),
            address: s.address,
        };
        let Some(host) = place_one(survivors, &need) else {
            let why = if survivors.is_empty() {
                "no host survives".to_owned()
            } else if survivors.iter().all(|h| h.free_memory_mib < u.memory_mib) {
                format!("no surviving host has {} MiB free", u.memory_mib)
            } else if survivors.iter().all(|h| h.cpus != 0 && h.cpus < u.cpus) {
                format!("no surviving host has {} CPUs", u.cpus)
            } else if let Some(a) = s.address.filter(|a| {
                !survivors
                    .iter()
                    .any(|h| h.network.is_some_and(|n| n.contains(*a)))
            }) {
                format!(
                    "no surviving host's network holds address {a} of {}",
                    s.name
                )
            } else {
                format!(
                    "no surviving host with {} MiB free holds master {}:v{} or has {} bytes of pool space for a copy",
                    u.memory_mib, u.master.0, u.master.1, u.master_bytes
                )
            };
            return (false, format!("room for {done} of {}: {why}", lost.len()));
        };
        placed.push(Replacement {
            unit: u.name.clone(),
            server: s.name.clone(),
            host,
        });
    }
    (true, String::new())
}

/// One line of the N+1 audit: what losing one host would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostRisk {
    pub host: String,
    /// Units that would go below their minimum (or out) if it failed.
    pub below_minimum: Vec<String>,
    /// Units whose every server is on it: a single point of failure.
    pub single_host_units: Vec<String>,
    /// Units it would leave short with no room on the other hosts to replace them.
    pub not_replaceable: Vec<String>,
}

/// For each host: what its failure alone would do (N+1).
pub fn n_plus_one(hosts: &[HostShape], units: &[UnitShape]) -> Vec<HostRisk> {
    // Only the units with servers on a host are affected by its loss (the others neither lose
    // nor place anything): each host's what-if looks at those alone.
    let mut touching: BTreeMap<&str, Vec<&UnitShape>> = BTreeMap::new();
    let mut single: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for u in units {
        let on: BTreeSet<&str> = u.servers.iter().map(|s| s.host.as_str()).collect();
        if on.len() == 1 {
            if let Some(h) = on.first() {
                single.entry(h).or_default().push(u.name.clone());
            }
        }
        for h in on {
            touching.entry(h).or_default().push(u);
        }
    }
    hosts
        .iter()
        .map(|h| {
            let failed = BTreeSet::from([h.name.clone()]);
            let affected = touching.get(h.name.as_str()).map_or(&[][..], Vec::as_slice);
            let (i, _) = impact_of(hosts, affected, &failed);
            let mut single_host_units = single.get(h.name.as_str()).cloned().unwrap_or_default();
            single_host_units.sort();
            HostRisk {
                host: h.name.clone(),
                below_minimum: i
                    .units
                    .iter()
                    .filter(|u| u.health >= UnitHealth::BelowMinimum)
                    .map(|u| u.unit.clone())
                    .collect(),
                single_host_units,
                not_replaceable: i
                    .units
                    .iter()
                    .filter(|u| !u.replaceable)
                    .map(|u| u.unit.clone())
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, mem: u64, pool: u64, masters: &[(&str, u32)]) -> HostShape {
        HostShape {
            name: name.into(),
            free_memory_mib: mem,
            pool_free_bytes: Some(pool),
            masters: masters.iter().map(|(i, v)| ((*i).into(), *v)).collect(),
            cpus: 8,
            network: None,
            ready: true,
        }
    }

    fn unit(name: &str, min: u32, on: &[&str]) -> UnitShape {
        UnitShape {
            name: name.into(),
            pool: Some(format!("lb/be_{name}")),
            min_in_service: min,
            memory_mib: 512,
            cpus: 2,
            master: ("web".into(), 1),
            master_bytes: 1 << 30,
            servers: on
                .iter()
                .enumerate()
                .map(|(i, h)| ServerShape {
                    name: format!("{name}-{}", i + 1),
                    host: (*h).into(),
                    in_service: true,
                    running: true,
                    address: None,
                })
                .collect(),
        }
    }

    fn failed(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| (*h).to_owned()).collect()
    }

    #[test]
    fn a_failed_host_takes_its_servers_and_units_are_judged_against_their_minimum() {
        let hosts = [
            host("h1", 4096, 10 << 30, &[("web", 1)]),
            host("h2", 4096, 10 << 30, &[("web", 1)]),
            host("h3", 4096, 10 << 30, &[]),
        ];
        let units = [
            // 4 servers, at least 3: losing 2 is below the minimum.
            unit("shop", 3, &["h1", "h1", "h2", "h3"]),
            // All on h1: an outage.
            unit("batch", 1, &["h1", "h1"]),
            // Loses one of three, keeps its minimum of 2.
            unit("api", 2, &["h1", "h2", "h3"]),
            // Untouched.
            unit("docs", 1, &["h2"]),
        ];
        let i = impact(&hosts, &units, &failed(&["h1"]));
        let by: BTreeMap<&str, &UnitImpact> =
            i.units.iter().map(|u| (u.unit.as_str(), u)).collect();
        assert_eq!(by["shop"].health, UnitHealth::BelowMinimum);
        assert_eq!((by["shop"].in_service_after, by["shop"].lost.len()), (2, 2));
        assert_eq!(by["batch"].health, UnitHealth::Outage);
        assert_eq!(by["api"].health, UnitHealth::Degraded);
        assert_eq!(by["docs"].health, UnitHealth::Ok);
        assert!(by["docs"].lost.is_empty());
        // Worst first.
        assert_eq!(i.units[0].unit, "batch");
        assert_eq!(i.units.last().unwrap().unit, "docs");
        // No host failed: all as now.
        let none = impact(&hosts, &units, &BTreeSet::new());
        assert!(none
            .units
            .iter()
            .all(|u| u.health == UnitHealth::Ok && u.replaceable));
    }

    #[test]
    fn replacement_room_counts_memory_and_the_masters_copy_across_units() {
        // h2 has room for two servers of 512 MiB and the master; h3 has memory but no
        // master and no pool space for a copy.
        let hosts = [
            host("h1", 0, 0, &[("web", 1)]),
            host("h2", 1024, 0, &[("web", 1)]),
            host("h3", 8192, 100, &[]),
        ];
        let units = [
            unit("shop", 1, &["h1", "h1", "h2"]),
            unit("api", 2, &["h1", "h2"]),
        ];
        let i = impact(&hosts, &units, &failed(&["h1"]));
        let by: BTreeMap<&str, &UnitImpact> =
            i.units.iter().map(|u| (u.unit.as_str(), u)).collect();
        // api (below its minimum) is planned before shop (degraded) and takes half of h2.
        assert_eq!(by["api"].health, UnitHealth::BelowMinimum);
        assert!(by["api"].replaceable, "{:?}", by["api"]);
        assert!(!by["shop"].replaceable);
        assert!(
            by["shop"].room.starts_with("room for 1 of 2"),
            "{}",
            by["shop"].room
        );
        assert!(
            by["shop"].room.contains("pool space for a copy"),
            "{}",
            by["shop"].room
        );
        // With pool space on h3 for the copy, both fit.
        let hosts = [
            host("h1", 0, 0, &[("web", 1)]),
            host("h2", 1024, 0, &[("web", 1)]),
            host("h3", 8192, 4 << 30, &[]),
        ];
        let i = impact(&hosts, &units, &failed(&["h1"]));
        assert!(i.units.iter().all(|u| u.replaceable), "{i:?}");
        // Nothing survives.
        let i = impact(&hosts, &units, &failed(&["h1", "h2", "h3"]));
        assert!(i.units.iter().all(|u| u.health == UnitHealth::Outage));
        assert!(i.units.iter().all(|u| u.room.contains("no host survives")));
    }

    #[test]
    fn a_host_with_fewer_cpus_than_a_server_cannot_take_it() {
        let mut small = host("h2", 8192, 4 << 30, &[("web", 1)]);
        small.cpus = 1;
        let hosts = [host("h1", 0, 0, &[("web", 1)]), small];
        let units = [unit("shop", 1, &["h1", "h2"])];
        let i = impact(&hosts, &units, &failed(&["h1"]));
        assert!(!i.units[0].replaceable);
        assert!(
            i.units[0].room.contains("no surviving host has 2 CPUs"),
            "{i:?}"
        );
        // Unknown CPUs (facts not read yet) do not refuse.
        let mut unknown = hosts.clone();
        unknown[1].cpus = 0;
        assert!(impact(&unknown, &units, &failed(&["h1"])).units[0].replaceable);
    }

    #[test]
    fn each_pool_says_the_capacity_it_keeps_over_its_units() {
        let hosts = [host("h1", 4096, 0, &[]), host("h2", 4096, 0, &[])];
        let mut cart = unit("cart", 1, &["h1", "h2"]);
        // Two units behind one pool, one behind its own, one without a load balancer.
        cart.pool = Some("lb/be_shop".into());
        let mut batch = unit("batch", 1, &["h1"]);
        batch.pool = None;
        let units = [
            unit("shop", 1, &["h1", "h1", "h2"]),
            cart,
            unit("api", 1, &["h2"]),
            batch,
        ];
        let i = impact(&hosts, &units, &failed(&["h1"]));
        let pools: Vec<(&str, u32, u32, u32)> = i
            .pools
            .iter()
            .map(|p| {
                (
                    p.pool.as_str(),
                    p.in_service_now,
                    p.in_service_after,
                    p.kept_percent(),
                )
            })
            .collect();
        // Least kept first: be_shop keeps 2 of 5 (40 %), be_api all of its 1.
        assert_eq!(pools, [("lb/be_shop", 5, 2, 40), ("lb/be_api", 1, 1, 100)]);
        let mut members = i.pools[0].units.clone();
        members.sort();
        assert_eq!(members, ["cart", "shop"]);
    }

    #[test]
    fn the_n_plus_one_audit_names_the_hosts_a_unit_cannot_lose() {
        let hosts = [
            host("h1", 4096, 10 << 30, &[("web", 1)]),
            host("h2", 4096, 10 << 30, &[("web", 1)]),
        ];
        let units = [
            unit("shop", 2, &["h1", "h2", "h2"]),
            unit("solo", 1, &["h1"]),
        ];
        let audit = n_plus_one(&hosts, &units);
        let h1 = audit.iter().find(|r| r.host == "h1").unwrap();
        assert_eq!(h1.below_minimum, ["solo"], "shop keeps 2 of 3 without h1");
        assert_eq!(h1.single_host_units, ["solo"]);
        let h2 = audit.iter().find(|r| r.host == "h2").unwrap();
        assert_eq!(h2.below_minimum, ["shop"]);
        assert!(h2.single_host_units.is_empty());
        assert!(h2.not_replaceable.is_empty(), "h1 has room for shop's two");
    }

    #[test]
    fn servers_out_of_service_already_do_not_count_as_lost_service() {
        let hosts = [host("h1", 4096, 0, &[]), host("h2", 4096, 0, &[])];
        let mut u = unit("shop", 1, &["h1", "h2"]);
        u.servers[1].in_service = false;
        let i = impact(&hosts, &[u], &failed(&["h1"]));
        assert_eq!(i.units[0].in_service_now, 1);
        assert_eq!(i.units[0].in_service_after, 0);
        assert_eq!(i.units[0].health, UnitHealth::Outage);
    }

    #[test]
    fn replacements_follow_the_one_placement_rule_across_units() {
        // h1 fails. h2: little memory left, one server of small; h3: much memory, one of big.
        let hosts = [
            host("h1", 8192, 10 << 30, &[("web", 1)]),
            host("h2", 3840, 10 << 30, &[("web", 1)]),
            host("h3", 7168, 10 << 30, &[("web", 1)]),
        ];
        let mut big = unit("big", 1, &["h1", "h3"]);
        big.memory_mib = 1024;
        let mut small = unit("small", 2, &["h1", "h1", "h2"]);
        small.memory_mib = 256;
        let units = [big, small];
        let placed: Vec<(String, String)> = replacements(&hosts, &units, &failed(&["h1"]))
            .into_iter()
            .map(|r| (r.server, r.host))
            .collect();
        // small (below its minimum) first: the host with none of it, then the most memory
        // left; then big-1 to h2, the host without a server of big, though h3 has more memory.
        let want = [("small-1", "h3"), ("small-2", "h3"), ("big-1", "h2")]
            .map(|(s, h)| (s.to_owned(), h.to_owned()));
        assert_eq!(placed, want);
        // The same as the rule itself gives, unit by unit, on the survivors.
        let mut rooms: Vec<HostRoom> = hosts[1..].iter().map(HostShape::room).collect();
        let mut by_rule = Vec::new();
        for (u, lost) in [(&units[1], 2), (&units[0], 1)] {
            for r in &mut rooms {
                r.unit_servers = u.servers.iter().filter(|s| s.host == r.name).count() as u32;
            }
            for s in u.servers.iter().filter(|s| s.host == "h1").take(lost) {
                let need = Need {
                    memory_mib: u.memory_mib,
                    cpus: u.cpus,
                    master: Some((&u.master, u.master_bytes)),
                    address: None,
                };
                by_rule.push((s.name.clone(), place_one(&mut rooms, &need).unwrap()));
            }
        }
        assert_eq!(by_rule, want);
    }

    #[test]
    fn only_running_servers_are_replaced_and_only_on_ready_hosts_holding_their_address() {
        let net = |s: &str| Some(Ipv4Cidr::parse(s).unwrap());
        let mut h2 = host("h2", 8192, 10 << 30, &[("web", 1)]);
        h2.network = net("10.1.0.0/24");
        let mut h3 = host("h3", 8192, 10 << 30, &[("web", 1)]);
        h3.network = net("10.0.0.0/24");
        let hosts = [host("h1", 0, 0, &[("web", 1)]), h2, h3];
        let mut u = unit("shop", 1, &["h1", "h1", "h2"]);
        u.servers[0].address = Some("10.0.0.5".parse().unwrap());
        // A server stopped on purpose stays where it is: no room is planned for it.
        u.servers[1].running = false;
        u.servers[1].in_service = false;
        let r = replacements(&hosts, &[u.clone()], &failed(&["h1"]));
        assert_eq!(
            r.iter()
                .map(|r| (r.server.as_str(), r.host.as_str()))
                .collect::<Vec<_>>(),
            [("shop-1", "h3")],
            "the network that holds its address, though h2 has fewer of the unit"
        );
        // A host the monitor does not say is ready takes nothing.
        let mut suspect = hosts.clone();
        suspect[2].ready = false;
        let i = impact(&suspect, &[u], &failed(&["h1"]));
        assert!(!i.units[0].replaceable);
        assert!(
            i.units[0]
                .room
                .contains("no surviving host's network holds address 10.0.0.5"),
            "{}",
            i.units[0].room
        );
    }
}
