//! The impact of failed hosts on the units (live and what-if) and the N+1 audit: the
//! inventory read into the pure model of `plan::impact`.

use super::{Engine, OpError};
use crate::inventory::InventoryError;
use crate::model::ServerState;
use crate::plan::impact::{
    impact, n_plus_one, replacements, HostRisk, HostShape, Impact, Replacement, ServerShape,
    UnitShape,
};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// What losing `failed` hosts does, and what losing any one host would do.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ImpactReport {
    pub impact: Impact,
    /// For each host, what its failure alone would do.
    pub audit: Vec<HostRisk>,
    /// Every host, and every deployed server with its host and unit: the graph's nodes.
    pub hosts: Vec<String>,
    pub servers: Vec<ServerNode>,
    /// Each lost server's fence: what would prove its old copy off before a recovery
    /// re-creates it (`plan::fence`; no confirmation is counted here).
    pub fences: Vec<LostFence>,
}

/// The fence of a server lost with its host.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct LostFence {
    pub server: String,
    pub unit: String,
    pub host: String,
    pub fence: crate::plan::fence::Fence,
    pub words: String,
}

/// A deployed server as the impact graph shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerNode {
    pub name: String,
    pub host: String,
    pub unit: String,
    pub in_service: bool,
}

impl Engine {
    /// The impact of the hosts named in `failed` failing, together with those the monitor says
    /// failed now (none: the units as they are), from the inventory: who runs where, each
    /// unit's minimum, the hosts' free memory, pool space and master copies as last checked.
    pub fn impact(&self, failed: &[String]) -> Result<ImpactReport, OpError> {
        let m = self.impact_model(failed)?;
        let (host_list, units, hosts, shapes, set) =
            (m.host_list, m.units, m.hosts, m.shapes, m.failed);
        let servers = shapes
            .iter()
            .flat_map(|u| {
                u.servers.iter().map(|s| ServerNode {
                    name: s.name.clone(),
                    host: s.host.clone(),
                    unit: u.name.clone(),
                    in_service: s.in_service,
                })
            })
            .collect();
        let mut now = impact(&hosts, &shapes, &set);
        for u in now.units.iter_mut().filter(|u| !u.lost.is_empty()) {
            // A recovery re-creates its servers side by side: about one server's time, as this
            // unit's recoveries (else its deploys) took.
            u.replace_estimate_s = ["recover", "deploy"].iter().find_map(|kind| {
                self.per_server_time(&u.unit, kind)
                    .ok()
                    .flatten()
                    .map(|(secs, _)| secs.round() as u32)
            });
        }
        let fences = self.lost_fences(&units, &host_list, &set)?;
        Ok(ImpactReport {
            impact: now,
            audit: n_plus_one(&hosts, &shapes),
            hosts: hosts.iter().map(|h| h.name.clone()).collect(),
            servers,
            fences,
        })
    }

    /// Where the Impact view of `failed` (as [`Engine::impact`] takes it) re-creates each lost
    /// server: units worst first, as `plan::impact` plans them — where `unit recover` of each
    /// unit, run in that order, puts them (the one placement rule).
    pub fn impact_replacements(&self, failed: &[String]) -> Result<Vec<Replacement>, OpError> {
        let m = self.impact_model(failed)?;
        Ok(replacements(&m.hosts, &m.shapes, &m.failed))
    }

    /// The inventory read into the impact model: the failed hosts (`failed` and those the
    /// monitor says failed), every host and unit as the model sees it.
    fn impact_model(&self, failed: &[String]) -> Result<ImpactModel, OpError> {
        let host_list = self.host_list()?;
        let mut set = BTreeSet::new();
        for f in failed {
            // A host name first (a clear error that does not echo a huge input), then a
            // host this inventory has.
            let f = crate::model::HostName::parse(f.trim())
                .map_err(|e| crate::model::ValidationError::new("failed host", e.problem))?;
            let f = f.as_str();
            if !host_list.iter().any(|h| h.name.as_str() == f) {
                return Err(InventoryError::NotFound {
                    kind: "host",
                    name: f.to_owned(),
                }
                .into());
            }
            set.insert(f.to_owned());
        }
        // Live: the hosts the monitor says failed are failed in every report.
        set.extend(
            host_list
                .iter()
                .filter(|h| h.monitor.state == Some(crate::model::HostState::Failed))
                .map(|h| h.name.to_string()),
        );
        let units = self.inventory.unit_list()?;
        let images = self.image_list()?;
        let hosts = Self::host_shapes(&host_list, &images, &units);
        let shapes: Vec<UnitShape> = units
            .iter()
            .map(|u| {
                let v = u.current();
                let master = v.map_or((String::new(), 0), |v| (v.image.clone(), v.image_version));
                UnitShape {
                    name: u.name.clone(),
                    pool: u.lb.as_ref().map(|lb| format!("{lb}/{}", u.lb_pool)),
                    min_in_service: u.policy.min_in_service_of(u.servers.len() as u32),
                    memory_mib: v.map_or(0, |v| u64::from(v.size.memory_mib)),
                    cpus: v.map_or(0, |v| v.size.cpus),
                    master_bytes: master_bytes(&images, &master),
                    master,
                    servers: u
                        .servers
                        .iter()
                        .filter(|s| s.state != ServerState::Planned)
                        .map(|s| ServerShape {
                            name: s.name.clone(),
                            host: s.host.clone(),
                            in_service: s.state == ServerState::Running
                                && (u.lb.is_none() || s.lb_state == "ready"),
                            running: s.state == ServerState::Running,
                            address: s.address.parse().ok(),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(ImpactModel {
            host_list,
            units,
            hosts,
            shapes,
            failed: set,
        })
    }

    /// Every host as placement sees it now, for the Impact view and `unit recover` alike:
    /// memory not promised to any registered server, CPUs, pool space, the masters it holds,
    /// its network; ready when the monitor says so (or does not watch it).
    pub(crate) fn host_shapes(
        host_list: &[crate::model::Host],
        images: &[crate::model::ImageVersion],
        units: &[crate::inventory::Unit],
    ) -> Vec<HostShape> {
        // Memory promised to every registered server (of every unit), per host.
        let mut promised: HashMap<&str, u64> = HashMap::new();
        for u in units {
            let mem = u.current().map_or(0, |v| u64::from(v.size.memory_mib));
            for s in &u.servers {
                *promised.entry(s.host.as_str()).or_default() += mem;
            }
        }
        host_list
            .iter()
            .map(|h| {
                let facts = h.facts.as_ref();
                HostShape {
                    name: h.name.to_string(),
                    free_memory_mib: facts
                        .map_or(0, |f| f.memory_bytes >> 20)
                        .saturating_sub(promised.get(h.name.as_str()).copied().unwrap_or(0)),
                    pool_free_bytes: facts
                        .and_then(|f| f.pool.as_ref())
                        .map(|p| p.available_bytes),
                    masters: images
                        .iter()
                        .filter(|v| v.copies.iter().any(|c| c.host == h.name))
                        .map(|v| (v.image.to_string(), v.version))
                        .collect(),
                    cpus: facts.map_or(0, |f| f.cpus),
                    network: crate::model::Ipv4Cidr::parse(&h.network).ok(),
                    ready: h
                        .monitor
                        .state
                        .is_none_or(|s| s == crate::model::HostState::Ready),
                }
            })
            .collect()
    }

    /// The fence each deployed server on the `failed` hosts would get (a host still alive in a
    /// what-if counts as seen just now: an isolation response would have its whole time left).
    fn lost_fences(
        &self,
        units: &[crate::inventory::Unit],
        hosts: &[crate::model::Host],
        failed: &BTreeSet<String>,
    ) -> Result<Vec<LostFence>, OpError> {
        let recorded = self.inventory.host_fence_list()?;
        let now = time::OffsetDateTime::now_utc();
        let mut out = Vec::new();
        for u in units {
            for s in u
                .servers
                .iter()
                .filter(|s| s.state != ServerState::Planned && failed.contains(&s.host))
            {
                let Some(h) = hosts.iter().find(|h| h.name.as_str() == s.host) else {
                    continue;
                };
                let rec = recorded.iter().find(|f| f.host == s.host);
                let bmc = self.bmc_words(h);
                let last_seen_ago = time::OffsetDateTime::parse(
                    &h.monitor.last_seen,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(|t| std::time::Duration::try_from(now - t).unwrap_or_default())
                .or((h.monitor.state != Some(crate::model::HostState::Failed))
                    .then_some(std::time::Duration::ZERO));
                let fence = crate::plan::fence::fence_for(&crate::plan::fence::FenceFacts {
                    host: &s.host,
                    recorded: rec.map(|r| (r.method.as_str(), r.by.as_str())),
                    confirmed_by: None,
                    bmc: bmc.as_deref(),
                    isolation_s: s.isolation_s,
                    policy_isolation_s: u.policy.isolation_timeout_s,
                    last_seen_ago,
                });
                out.push(LostFence {
                    server: s.name.clone(),
                    unit: u.name.clone(),
                    host: s.host.clone(),
                    words: fence.words(&s.host),
                    fence,
                });
            }
        }
        Ok(out)
    }
}

/// The inventory as the impact model reads it.
struct ImpactModel {
    host_list: Vec<crate::model::Host>,
    units: Vec<crate::inventory::Unit>,
    hosts: Vec<HostShape>,
    shapes: Vec<UnitShape>,
    failed: BTreeSet<String>,
}

/// The size of master `(image, version)` (0 when unknown).
pub(crate) fn master_bytes(images: &[crate::model::ImageVersion], master: &(String, u32)) -> u64 {
    images
        .iter()
        .find(|i| i.image.as_str() == master.0 && i.version == master.1)
        .map_or(0, |i| i.actual_size)
}
