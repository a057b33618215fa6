//! The decisions of a recovery (`unit recover`) from plain data: which hosts it may take
//! servers from, which servers it re-creates, and where each goes — by the one placement rule
//! (`plan::place_one`), as the Impact view places them.

use super::place::{place_one, HostRoom, Need};
use super::unit::FALLBACK_SIZE;
use crate::inventory::{Server, Unit};
use crate::model::{HostState, ServerState, ValidationError};
use std::net::Ipv4Addr;

/// Whether a recovery may take servers from a host the monitor says is `state`: *failed*
/// (libvirt lost, and the load balancer hears nothing from its servers), or *unreachable*
/// (libvirt lost, no second witness) when the admin confirms it is off (`confirmed`). A
/// *partitioned* host is never one: its servers answer, they run.
pub fn lost_host(state: Option<HostState>, confirmed: bool) -> bool {
    match state {
        Some(HostState::Failed) => true,
        Some(HostState::Unreachable) => confirmed,
        _ => false,
    }
}

/// The servers of `u` a recovery from the `failed` hosts re-creates: the running ones there
/// (a server stopped on purpose stays stopped, and where it is).
pub fn lost_servers<'a>(u: &'a Unit, failed: &[String]) -> Vec<&'a Server> {
    u.servers
        .iter()
        .filter(|s| failed.contains(&s.host) && s.state == ServerState::Running)
        .collect()
}

/// Where each of the `lost` servers of `u` is re-created among `rooms` (the hosts a recovery
/// may use: ready and not lost), by the one placement rule: memory, CPUs, the master or pool
/// space for a copy of `master_bytes`, the server's address in the host's network; the fewest
/// servers of the unit first, then the most memory left, then the name.
pub fn recover_hosts(
    u: &Unit,
    lost: &[&Server],
    rooms: &mut [HostRoom],
    master_bytes: u64,
) -> Result<Vec<String>, ValidationError> {
    let current = u.current();
    let memory = u64::from(current.map_or(FALLBACK_SIZE.memory_mib, |v| v.size.memory_mib));
    let master = current.map_or((String::new(), 0), |v| (v.image.clone(), v.image_version));
    for r in rooms.iter_mut() {
        r.unit_servers = u.servers.iter().filter(|s| s.host == r.name).count() as u32;
    }
    lost.iter()
        .map(|s| {
            let addr: Ipv4Addr = s.address.parse().map_err(|_| {
                ValidationError::new("address", format!("{} is not an address", s.address))
            })?;
            let need = Need {
                memory_mib: memory,
                cpus: current.map_or(0, |v| v.size.cpus),
                master: Some((&master, master_bytes)),
                address: Some(addr),
            };
            place_one(rooms, &need).ok_or_else(|| {
                ValidationError::new(
                    "from",
                    format!(
                        "no surviving host can take {} ({memory} MiB, address {}): none that the monitor says is ready has the memory left and that address in its network",
                        s.name, s.address
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ipv4Cidr;
    use crate::plan::unit::tests::{server, unit};

    fn on(name: &str, host: &str, address: &str, state: ServerState) -> Server {
        Server {
            host: host.into(),
            address: address.into(),
            ..server(name, state)
        }
    }

    fn room(name: &str, free: u64) -> HostRoom {
        HostRoom {
            name: name.into(),
            free_memory_mib: free,
            network: Some(Ipv4Cidr::parse("10.77.0.0/24").unwrap()),
            ..HostRoom::default()
        }
    }

    #[test]
    fn only_a_failed_host_or_an_unreachable_one_confirmed_off_is_lost() {
        assert!(lost_host(Some(HostState::Failed), false));
        assert!(!lost_host(Some(HostState::Unreachable), false));
        assert!(lost_host(Some(HostState::Unreachable), true));
        for s in [HostState::Partitioned, HostState::Ready, HostState::Suspect] {
            assert!(!lost_host(Some(s), true), "{s:?}");
        }
        assert!(!lost_host(None, true), "not monitored");
    }

    #[test]
    fn a_recovery_recreates_the_running_servers_of_lost_hosts_by_the_one_rule() {
        let u = unit(vec![
            on("shop-1", "h1", "10.77.0.11", ServerState::Running),
            on("shop-2", "h1", "10.77.0.12", ServerState::Stopped),
            on("shop-3", "h1", "10.77.0.13", ServerState::Running),
            on("shop-4", "h2", "10.77.0.14", ServerState::Running),
        ]);
        let lost = lost_servers(&u, &["h1".into()]);
        let names: Vec<&str> = lost.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["shop-1", "shop-3"], "the stopped one stays");
        // h2 holds one of the unit and the most memory; h3 none: spread first.
        let mut rooms = [room("h2", 8192), room("h3", 1024)];
        assert_eq!(
            recover_hosts(&u, &lost, &mut rooms, 0).unwrap(),
            ["h3", "h2"],
            "h3 (none of the unit), then h2 (one each, more memory)"
        );
        // Nowhere with the memory (a unit without a version: the fallback size, 256 MiB).
        assert_eq!(u64::from(FALLBACK_SIZE.memory_mib), 256);
        let e = recover_hosts(&u, &lost, &mut [room("h2", 255)], 0).unwrap_err();
        assert!(
            e.problem
                .starts_with("no surviving host can take shop-1 (256 MiB"),
            "{e:?}"
        );
        // Nowhere whose network holds the address.
        let mut other = room("h2", 8192);
        other.network = Some(Ipv4Cidr::parse("10.1.0.0/24").unwrap());
        assert!(recover_hosts(&u, &lost, &mut [other], 0).is_err());
    }
}
