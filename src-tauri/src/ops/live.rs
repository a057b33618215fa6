//! Live state of the fleet's servers and the views' search.
//!
//! Live state is asked of each host **once for all its servers** (one libvirt domain listing
//! per host, every host at once) and of each load-balancer pool once — never per unit or per
//! server. The desktop app runs [`Engine::fleet_live`] in the background and pushes what
//! changed to its views as events (`desktop/`); `unit_live` asks the same way for one unit.

use super::exec::describe;
use super::lbs::LbDriver;
use super::units::ServerLive;
use super::{Engine, OpError};
use crate::inventory::Unit;
use crate::model::search::{Fields, Query};
use crate::model::Host;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One look at the whole fleet.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct FleetLive {
    /// Every server of every unit (or of the units asked about).
    pub servers: Vec<ServerLive>,
    /// Hosts whose listing failed, with libvirt's reason (their servers say `unknown: …`).
    pub unreachable: BTreeMap<String, String>,
    /// Hosts asked (each exactly once).
    pub hosts_asked: u32,
    /// Load-balancer pools asked (each exactly once).
    pub pools_asked: u32,
}

/// The servers of one unit that a search found (all of them when the unit's name matched
/// every word).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitHits {
    pub unit: String,
    pub servers: Vec<String>,
}

impl Engine {
    /// What every host and load balancer says about every server of the inventory now.
    pub async fn fleet_live(&self) -> Result<FleetLive, OpError> {
        let units = self.inventory.unit_list()?;
        self.live_of(&units).await
    }

    /// Live state of the servers of `units`: one domain listing per host they use and one
    /// member listing per load-balancer pool, all asked at once.
    pub(crate) async fn live_of(&self, units: &[Unit]) -> Result<FleetLive, OpError> {
        let hosts: HashMap<String, Host> = self
            .host_list()?
            .into_iter()
            .map(|h| (h.name.to_string(), h))
            .collect();
        let used: HashSet<&String> = units
            .iter()
            .flat_map(|u| u.servers.iter().map(|s| &s.host))
            .collect();
        let hosts = &hosts;
        let listings = futures_util::future::join_all(used.into_iter().map(|h| async move {
            let states = match hosts.get(h) {
                Some(host) => self
                    .hypervisor
                    .domain_states(&host.uri)
                    .await
                    .map_err(|e| describe(&e.into())),
                None => Err("unknown host".to_owned()),
            };
            (h.clone(), states)
        }))
        .await;
        let hosts_asked = u32::try_from(listings.len()).unwrap_or(u32::MAX);
        let listings: HashMap<String, Result<HashMap<String, bool>, String>> =
            listings.into_iter().collect();

        let pools: HashSet<(&String, &String)> = units
            .iter()
            .filter_map(|u| u.lb.as_ref().map(|lb| (lb, &u.lb_pool)))
            .collect();
        let members =
            futures_util::future::join_all(pools.into_iter().map(|(lb, pool)| async move {
                let found = match self.inventory.lb_get(lb) {
                    Ok(inst) => match LbDriver::of(&inst) {
                        Ok(d) => d.members(pool).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                ((lb.clone(), pool.clone()), found)
            }))
            .await;
        let pools_asked = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let members: HashMap<_, _> = members.into_iter().collect();

        let mut servers = Vec::new();
        for u in units {
            let pool =
                u.lb.as_ref()
                    .and_then(|lb| members.get(&(lb.clone(), u.lb_pool.clone())));
            for s in &u.servers {
                let power = match listings.get(&s.host) {
                    Some(Ok(states)) => match states.get(&s.name) {
                        Some(true) => "running".to_owned(),
                        Some(false) => "shut off".to_owned(),
                        None => "not defined".to_owned(),
                    },
                    Some(Err(e)) => format!("unknown: {e}"),
                    None => "unknown host".to_owned(),
                };
                let (lb_status, healthy) = match pool {
                    None => ("no load balancer".to_owned(), None),
                    Some(Ok(list)) => match list.iter().find(|m| {
                        m.name == s.name || m.address.starts_with(&format!("{}:", s.address))
                    }) {
                        Some(m) => (m.status.clone(), Some(m.healthy)),
                        None => ("not a member".to_owned(), None),
                    },
                    Some(Err(e)) => (format!("unreachable: {e}"), None),
                };
                servers.push(ServerLive {
                    server: s.name.clone(),
                    power,
                    lb_status,
                    healthy,
                });
            }
        }
        let unreachable = listings
            .into_iter()
            .filter_map(|(h, r)| r.err().map(|e| (h, e)))
            .collect();
        Ok(FleetLive {
            servers,
            unreachable,
            hosts_asked,
            pools_asked,
        })
    }

    /// The units' servers that `query` finds (by name, unit, host, address, MAC, or state —
    /// the inventory's, or `failed` / `suspect` of the host's monitor), units in name order.
    /// A bad query (too long, control characters, unknown field) is refused.
    pub fn unit_search(&self, query: &str) -> Result<Vec<UnitHits>, OpError> {
        let q = Query::parse(query)?;
        let host_states: HashMap<String, &'static str> = self
            .host_list()?
            .into_iter()
            .filter_map(|h| h.monitor.state.map(|s| (h.name.to_string(), s.as_str())))
            .collect();
        let units = self.inventory.unit_list()?;
        Ok(units
            .into_iter()
            .filter_map(|u| {
                let servers: Vec<String> = u
                    .servers
                    .iter()
                    .filter(|s| {
                        let mut states = vec![s.state.as_str()];
                        if let Some(h) = host_states.get(&s.host) {
                            states.push(h);
                        }
                        q.matches(&Fields {
                            name: &s.name,
                            unit: &u.name,
                            host: &s.host,
                            address: &s.address,
                            mac: &s.mac,
                            states: &states,
                        })
                    })
                    .map(|s| s.name.clone())
                    .collect();
                // A unit with no servers yet is found by its name alone.
                let empty_found = u.servers.is_empty()
                    && q.matches(&Fields {
                        name: &u.name,
                        unit: &u.name,
                        ..Fields::default()
                    });
                (!servers.is_empty() || empty_found).then_some(UnitHits {
                    unit: u.name,
                    servers,
                })
            })
            .collect())
    }

    /// The hosts `query` finds: by name, URI (`host:` or `address:`), status (`ok`,
    /// `unreachable`, …) or monitor state (`ready`, `failed`, …), in name order.
    pub fn host_search(&self, query: &str) -> Result<Vec<String>, OpError> {
        let q = Query::parse(query)?;
        Ok(self
            .host_list()?
            .into_iter()
            .filter(|h| {
                let mut states = vec![h.status.as_str()];
                if let Some(s) = h.monitor.state {
                    states.push(s.as_str());
                }
                q.matches(&Fields {
                    name: h.name.as_str(),
                    host: h.name.as_str(),
                    address: h.uri.as_str(),
                    states: &states,
                    ..Fields::default()
                })
            })
            .map(|h| h.name.to_string())
            .collect())
    }
}

/// What the views are sent: the servers whose live state changed since the last delta (all of
/// them in the first), the servers gone from the inventory, and the hosts that cannot be
/// listed now. `seq` grows by one per delta, so a view that read a snapshot skips older ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct LiveDelta {
    pub seq: u32,
    pub full: bool,
    pub changed: Vec<ServerLiveRow>,
    pub gone: Vec<String>,
    pub unreachable: BTreeMap<String, String>,
}

/// [`ServerLive`] as sent in events (deserializable, for the front end's type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerLiveRow {
    pub server: String,
    pub power: String,
    pub lb_status: String,
    pub healthy: Option<bool>,
}

impl From<ServerLive> for ServerLiveRow {
    fn from(s: ServerLive) -> Self {
        Self {
            server: s.server,
            power: s.power,
            lb_status: s.lb_status,
            healthy: s.healthy,
        }
    }
}

/// Turns successive [`FleetLive`] looks into deltas; keeps the latest full state for a view
/// that opens later ([`LiveFeed::snapshot`]).
#[derive(Debug, Default)]
pub struct LiveFeed {
    seq: u32,
    last: BTreeMap<String, ServerLiveRow>,
    unreachable: BTreeMap<String, String>,
    started: bool,
}

impl LiveFeed {
    /// The delta from the previous look to `now`; `None` when nothing changed.
    pub fn update(&mut self, now: FleetLive) -> Option<LiveDelta> {
        let full = !self.started;
        self.started = true;
        let mut changed = Vec::new();
        let mut seen = HashSet::new();
        for s in now.servers {
            seen.insert(s.server.clone());
            let row = ServerLiveRow::from(s);
            if self.last.get(&row.server) != Some(&row) {
                self.last.insert(row.server.clone(), row.clone());
                changed.push(row);
            }
        }
        let gone: Vec<String> = self
            .last
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for g in &gone {
            self.last.remove(g);
        }
        let hosts_changed = self.unreachable != now.unreachable;
        self.unreachable = now.unreachable;
        if !full && changed.is_empty() && gone.is_empty() && !hosts_changed {
            return None;
        }
        self.seq += 1;
        Some(LiveDelta {
            seq: self.seq,
            full,
            changed,
            gone,
            unreachable: self.unreachable.clone(),
        })
    }

    /// Everything known now, as one full delta with the current `seq` (`None` before the first
    /// look).
    pub fn snapshot(&self) -> Option<LiveDelta> {
        self.started.then(|| LiveDelta {
            seq: self.seq,
            full: true,
            changed: self.last.values().cloned().collect(),
            gone: Vec::new(),
            unreachable: self.unreachable.clone(),
        })
    }
}
