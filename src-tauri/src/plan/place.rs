//! The one placement rule: which host takes a new server. `unit create` and a scale out
//! (through [`super::allocate`]), `unit recover` (where each lost server is re-created) and the
//! Impact view (whether the survivors can take what was lost, and where) all choose with
//! [`place_one`], so what the Impact view says is where a recovery goes.
//!
//! A host fits a server when it has the memory left, the CPUs (when known), the server's
//! master or pool space for a copy (when the caller checks it) and the server's address in its
//! network (when the caller checks it). Among those that fit: the one with the fewest servers
//! of the unit first (spread), then the most free memory, then the name. Placing a server takes
//! its memory, counts it for the unit, and takes the master copy's pool space where the master
//! is missing.

use crate::model::Ipv4Cidr;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// A host as placement sees it. Callers leave out (empty or `None`) what they do not check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostRoom {
    pub name: String,
    /// Memory not yet promised to servers, MiB.
    pub free_memory_mib: u64,
    /// Servers of the unit being placed that are on it already.
    pub unit_servers: u32,
    /// Its logical CPUs; 0 when unknown (facts not read yet): then it does not refuse.
    pub cpus: u32,
    /// Its network: a server whose address is checked goes only where the network holds it.
    /// `None`: none that parses (no checked address fits).
    pub network: Option<Ipv4Cidr>,
    /// Free bytes in its storage pool; `None` when unknown: then it does not refuse a copy.
    pub pool_free_bytes: Option<u64>,
    /// Masters with a verified copy on it: (image, version).
    pub masters: BTreeSet<(String, u32)>,
}

/// What one new server needs of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Need<'a> {
    pub memory_mib: u64,
    /// Its virtual CPUs; 0: not checked.
    pub cpus: u32,
    /// The master it runs and the bytes of a copy; `None`: not checked here (`unit create`:
    /// a deploy checks the pool before anything is made).
    pub master: Option<(&'a (String, u32), u64)>,
    /// Its address; `None`: not checked here (`unit create` checks each server's address
    /// against its host's network once placed).
    pub address: Option<Ipv4Addr>,
}

impl Need<'_> {
    /// Only memory: what `unit create` and a scale out check.
    pub fn memory(memory_mib: u64) -> Self {
        Need {
            memory_mib,
            ..Need::default()
        }
    }
}

impl HostRoom {
    /// Whether a server needing `need` fits on it now.
    pub fn fits(&self, need: &Need<'_>) -> bool {
        self.free_memory_mib >= need.memory_mib
            && (self.cpus == 0 || self.cpus >= need.cpus)
            && need.master.is_none_or(|(m, bytes)| {
                self.masters.contains(m) || self.pool_free_bytes.is_none_or(|p| p >= bytes)
            })
            && need
                .address
                .is_none_or(|a| self.network.is_some_and(|n| n.contains(a)))
    }

    /// Takes what a server needing `need` uses of it.
    fn take(&mut self, need: &Need<'_>) {
        self.free_memory_mib -= need.memory_mib;
        self.unit_servers += 1;
        if let Some((m, bytes)) = need.master {
            if !self.masters.contains(m) {
                self.pool_free_bytes = self.pool_free_bytes.map(|p| p.saturating_sub(bytes));
                self.masters.insert(m.clone());
            }
        }
    }
}

/// The one rule: the host of `rooms` that takes a server needing `need` — among those it fits,
/// the fewest servers of the unit, then the most free memory, then the name — with its room
/// taken. `None` when it fits nowhere.
pub fn place_one(rooms: &mut [HostRoom], need: &Need<'_>) -> Option<String> {
    let best = rooms.iter_mut().filter(|h| h.fits(need)).min_by(|a, b| {
        a.unit_servers
            .cmp(&b.unit_servers)
            .then(b.free_memory_mib.cmp(&a.free_memory_mib))
            .then(a.name.cmp(&b.name))
    })?;
    best.take(need);
    Some(best.name.clone())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("no host to place servers on: add a host first, or name one with --host")]
    NoHosts,
    #[error("not enough memory for {wanted} more servers of {memory_mib} MiB: the hosts have room for {fits}")]
    NoRoom {
        wanted: u32,
        fits: u32,
        memory_mib: u64,
    },
}

/// Chooses a host for each of `count` new servers of `memory_mib` by [`place_one`]: spread
/// evenly across hosts, never beyond a host's free memory (`unit create`, a scale out).
pub fn place(hosts: &[HostRoom], count: u32, memory_mib: u64) -> Result<Vec<String>, PlaceError> {
    if hosts.is_empty() {
        return Err(PlaceError::NoHosts);
    }
    let mut rooms: Vec<HostRoom> = hosts.to_vec();
    let need = Need::memory(memory_mib);
    (0..count)
        .map(|placed| {
            place_one(&mut rooms, &need).ok_or(PlaceError::NoRoom {
                wanted: count,
                fits: placed,
                memory_mib,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, mem: u64, servers: u32) -> HostRoom {
        HostRoom {
            name: name.into(),
            free_memory_mib: mem,
            unit_servers: servers,
            ..HostRoom::default()
        }
    }

    #[test]
    fn placement_spreads_evenly_and_respects_memory() {
        let hosts = [room("h1", 4096, 0), room("h2", 4096, 0)];
        assert_eq!(
            place(&hosts, 4, 256).unwrap(),
            ["h1", "h2", "h1", "h2"].map(String::from)
        );
        // A host with servers of the unit gets the next ones last.
        let hosts = [room("h1", 4096, 2), room("h2", 4096, 0)];
        assert_eq!(
            place(&hosts, 2, 256).unwrap(),
            ["h2", "h2"].map(String::from)
        );
        // A full host is skipped; when nothing fits, the error says how many would.
        let hosts = [room("h1", 300, 0), room("h2", 4096, 0)];
        assert_eq!(
            place(&hosts, 3, 256).unwrap(),
            ["h2", "h1", "h2"].map(String::from)
        );
        assert_eq!(
            place(&[room("h1", 600, 0)], 3, 256),
            Err(PlaceError::NoRoom {
                wanted: 3,
                fits: 2,
                memory_mib: 256
            })
        );
        assert_eq!(place(&[], 1, 256), Err(PlaceError::NoHosts));
    }

    #[test]
    fn the_tie_break_is_spread_then_free_memory_then_name() {
        // Fewest of the unit wins over more memory.
        let mut rooms = [room("a", 8192, 1), room("b", 1024, 0)];
        assert_eq!(
            place_one(&mut rooms, &Need::memory(512)).as_deref(),
            Some("b")
        );
        // Equal spread: the most free memory.
        let mut rooms = [room("a", 1024, 0), room("b", 2048, 0)];
        assert_eq!(
            place_one(&mut rooms, &Need::memory(512)).as_deref(),
            Some("b")
        );
        // Equal both: the name, whatever the order given.
        let mut rooms = [room("b", 1024, 0), room("a", 1024, 0)];
        assert_eq!(
            place_one(&mut rooms, &Need::memory(512)).as_deref(),
            Some("a")
        );
        // Placing takes the memory and counts the server for the unit.
        assert_eq!((rooms[1].free_memory_mib, rooms[1].unit_servers), (512, 1));
        assert_eq!(
            place_one(&mut rooms, &Need::memory(512)).as_deref(),
            Some("b")
        );
        assert_eq!(place_one(&mut rooms, &Need::memory(2048)), None);
    }

    #[test]
    fn cpus_address_and_master_are_checked_when_given() {
        let master = ("web".to_owned(), 1);
        let net = |s: &str| Some(Ipv4Cidr::parse(s).unwrap());
        let mut small = room("a", 4096, 0);
        small.cpus = 1;
        small.network = net("10.0.0.0/24");
        small.masters.insert(master.clone());
        let mut big = room("b", 2048, 0);
        big.cpus = 8;
        big.network = net("10.1.0.0/24");
        big.pool_free_bytes = Some(100);
        let rooms = [small, big];
        // Memory alone: the most free memory.
        assert_eq!(
            place_one(&mut rooms.clone(), &Need::memory(512)).as_deref(),
            Some("a")
        );
        // Too few CPUs on a; unknown CPUs (0) do not refuse.
        let two = Need {
            cpus: 2,
            ..Need::memory(512)
        };
        assert_eq!(place_one(&mut rooms.clone(), &two).as_deref(), Some("b"));
        let mut unknown = rooms.clone();
        unknown[0].cpus = 0;
        assert_eq!(place_one(&mut unknown, &two).as_deref(), Some("a"));
        // The address must be in the host's network; a host without one takes none.
        let in_b = Need {
            address: Some("10.1.0.7".parse().unwrap()),
            ..Need::memory(512)
        };
        assert_eq!(place_one(&mut rooms.clone(), &in_b).as_deref(), Some("b"));
        let mut no_net = rooms.clone();
        no_net[1].network = None;
        assert_eq!(place_one(&mut no_net, &in_b), None);
        // The master: there already, or pool space for a copy (unknown space does not refuse).
        let copy = |bytes| Need {
            master: Some((&master, bytes)),
            address: Some("10.1.0.7".parse().unwrap()),
            ..Need::memory(512)
        };
        assert_eq!(place_one(&mut rooms.clone(), &copy(1000)), None);
        let mut r = rooms.clone();
        assert_eq!(place_one(&mut r, &copy(60)).as_deref(), Some("b"));
        // The copy took its space and is there for the next server.
        assert_eq!(r[1].pool_free_bytes, Some(40));
        assert!(r[1].masters.contains(&master));
        assert_eq!(place_one(&mut r, &copy(60)).as_deref(), Some("b"));
        let mut unknown = rooms.clone();
        unknown[1].pool_free_bytes = None;
        assert_eq!(place_one(&mut unknown, &copy(1000)).as_deref(), Some("b"));
    }
}
