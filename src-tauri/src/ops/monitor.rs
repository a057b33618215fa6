//! The monitor's runner: probes every host's libvirt, reads each witnessing load balancer once
//! per round, feeds the pure state machine (`monitor::machine`), writes every host's state to
//! the inventory, then reports what changed and calls the hooks. `flotillactl monitor` runs it
//! in the foreground, the desktop app as a background task; one process at a time holds the
//! inventory's monitor lease, another one stands by.
//!
//! A round, once per probe interval:
//! 1. the hosts and servers are read from the inventory (hosts added or removed while the
//!    monitor runs are picked up);
//! 2. each HAProxy holding pooled servers is asked once (`show stat`, bounded by the call
//!    timeout);
//! 3. the fleet is evaluated with the probe results that arrived since the last round, and the
//!    hosts seen alive are noted (`last_seen`);
//! 4. the reconcile outcomes that came back apply; a reconcile is started (beside the rounds)
//!    for each returning host that has none running (not while frozen);
//! 5. every host's state is written with the lease renewal (one transaction), and only then
//!    are the changes reported and [`MonitorHooks::on_transition`] started beside the rounds;
//! 6. a probe is started for every host that has none running. Probes and side work run
//!    between rounds, so a host, load balancer or BMC that does not answer never delays the
//!    others, nor the lease.

use super::lbs::LbDriver;
use super::{Engine, OpError};
use crate::inventory::{MonitorHolder, MonitorLease, MonitorRecord, MonitoredServer};
use crate::lb::haproxy::MemberHealth;
use crate::model::{Host, LibvirtUri};
use crate::monitor::machine::{Change, Fleet, Freeze, Probe, Reconciled, Thresholds};
use crate::monitor::witness::{witnesses, PooledServer};
use crate::monitor::MonitorEvent;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

/// What the monitor calls out to. The defaults do nothing on a transition and take a returning
/// host as clean at once. Fencing (servers of a failed host to maintenance at the load
/// balancer) hooks onto `on_transition` with `to == HostState::Failed`, which never happens
/// while the fleet is frozen; the reconcile of a returning host (removing domains of servers
/// that now live elsewhere) is `reconcile`. Both run beside the monitor's rounds (one
/// reconcile per host at a time; its answer applies at the next round), so they may take as
/// long as a load balancer or a host makes them; they stop when the monitor stops or loses
/// its lease.
pub trait MonitorHooks: Send + Sync {
    /// After the change is written to the inventory (and reported).
    fn on_transition<'a>(
        &'a self,
        _engine: &'a Engine,
        _change: &'a Change,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether a returning host is clean. Asked once per round until it answers `Clean`,
    /// never while frozen. The default answers `Clean` at once: nothing reconciles hosts yet
    /// (that arrives with recovery), so a returning host is ready after one round.
    fn reconcile<'a>(&'a self, _engine: &'a Engine, _host: &'a Host) -> BoxFuture<'a, Reconciled> {
        Box::pin(async { Reconciled::clean() })
    }
}

/// The hooks both front doors use today: nothing on transitions, every returning host clean.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultHooks;

impl MonitorHooks for DefaultHooks {}

/// Whether a monitor runs for this inventory, and with what settings (`flotillactl host
/// list`, the Hosts view).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct MonitorStatus {
    /// The process that holds the monitor lease, if any (`current`: it renews it).
    pub holder: Option<MonitorHolder>,
    pub thresholds: Option<Thresholds>,
    /// The longest time from a host's death to `failed` with those thresholds.
    pub worst_case_detection_ms: Option<u64>,
    /// The thresholds in words.
    pub explained: String,
    /// Why the running monitor is frozen; `None` when it is not (or none runs).
    pub frozen: Option<String>,
}

/// RFC 3339, UTC, with milliseconds: transitions a second apart stay apart.
pub(crate) fn now_ms_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// What a round needs to remember between rounds.
#[derive(Debug)]
struct Watch {
    fleet: Fleet,
    /// Since when (wall clock) each host is in its state.
    since: HashMap<String, String>,
    probed_at: HashMap<String, String>,
    /// Running domains from each host's last answer that could list them.
    running: HashMap<String, Vec<String>>,
    /// Servers reported as not running, per host.
    not_running: HashMap<String, Vec<String>>,
    /// Hosts whose probe has not come back.
    probing: HashSet<String>,
    /// Hosts whose libvirt answered since the last round.
    answered: HashSet<String>,
    /// When (wall clock, RFC 3339) each host was last seen alive: libvirt answered, or the
    /// load balancer heard one of its servers.
    last_seen: HashMap<String, String>,
    /// Hosts whose reconcile runs beside the rounds, and the outcomes that came back.
    reconciling: HashSet<String>,
    reconciled: Vec<(String, Reconciled)>,
    /// The URI of each host, as of the last round.
    uris: BTreeMap<String, LibvirtUri>,
    /// Events and changes of rounds whose write failed: reported (and hooked) after the next
    /// write that succeeds.
    unreported: Vec<MonitorEvent>,
    unhooked: Vec<Change>,
}

impl Watch {
    fn new(thresholds: Thresholds) -> Self {
        Self {
            fleet: Fleet::new(thresholds),
            since: HashMap::new(),
            probed_at: HashMap::new(),
            running: HashMap::new(),
            not_running: HashMap::new(),
            probing: HashSet::new(),
            answered: HashSet::new(),
            last_seen: HashMap::new(),
            reconciling: HashSet::new(),
            reconciled: Vec::new(),
            uris: BTreeMap::new(),
            unreported: Vec::new(),
            unhooked: Vec::new(),
        }
    }

    /// A probe came back (`now`: time since the monitor started).
    fn record(
        &mut self,
        host: &str,
        outcome: Result<crate::hypervisor::ProbeAnswer, crate::hypervisor::ProbeError>,
        now: Duration,
    ) {
        self.probing.remove(host);
        self.probed_at.insert(host.to_owned(), now_ms_rfc3339());
        match outcome {
            Ok(answer) => {
                self.answered.insert(host.to_owned());
                if let Some(running) = answer.running {
                    self.running.insert(host.to_owned(), running);
                }
                self.fleet.probe(
                    host,
                    Probe::Answered {
                        latency: answer.latency,
                    },
                    now,
                );
            }
            Err(e) => {
                let mut reason = e.reason();
                if crate::hostkeys::refused_by_ssh(&reason) {
                    reason = format!(
                        "{}; libvirt said: {reason}",
                        crate::hostkeys::REFUSED_KEY_HINT
                    );
                }
                let unanswered = matches!(
                    e,
                    crate::hypervisor::ProbeError::Hv(crate::hypervisor::HvError::Timeout { .. })
                        | crate::hypervisor::ProbeError::StillWaiting { .. }
                );
                self.fleet
                    .probe(host, Probe::Failed { reason, unanswered }, now);
            }
        }
    }
}

type ProbeDone = (
    String,
    Result<crate::hypervisor::ProbeAnswer, crate::hypervisor::ProbeError>,
);

/// What a round leaves to run beside the rounds: the hooks of the changes it wrote, and the
/// reconciles of returning hosts. None of it delays a probe, a round or the lease.
#[derive(Default)]
struct SideWork {
    hook: Vec<Change>,
    reconcile: Vec<Host>,
}

/// A piece of side work that ended.
enum SideDone {
    Hooked {
        change: Change,
        outcome: Result<(), String>,
    },
    Reconciled {
        host: String,
        outcome: Reconciled,
    },
}

impl Engine {
    /// Whether a monitor runs, its settings and freeze.
    pub fn monitor_status(&self) -> Result<MonitorStatus, OpError> {
        let holder = self.inventory.monitor_holder()?;
        let thresholds = holder
            .as_ref()
            .and_then(|h| serde_json::from_str::<Thresholds>(&h.thresholds).ok());
        let frozen = holder
            .as_ref()
            .filter(|h| h.current && !h.frozen.is_empty())
            .map(|h| h.frozen.clone());
        Ok(MonitorStatus {
            worst_case_detection_ms: thresholds
                .map(|t| u64::try_from(t.worst_case_detection().as_millis()).unwrap_or(u64::MAX)),
            explained: thresholds.map(|t| t.describe()).unwrap_or_default(),
            thresholds,
            frozen,
            holder,
        })
    }

    /// Runs the monitor until `stop` completes: watches every host (or stands by while another
    /// process monitors this inventory), reports every event through `report`, and gives the
    /// lease up when it stops. `via` names the front door (`cli`, `gui`).
    pub async fn monitor_run(
        &self,
        thresholds: Thresholds,
        via: &str,
        hooks: &dyn MonitorHooks,
        report: &(dyn Fn(MonitorEvent) + Send + Sync),
        stop: impl Future<Output = ()>,
    ) -> Result<(), OpError> {
        thresholds.validate()?;
        let me = MonitorLease::mine(via);
        let thresholds_json = serde_json::to_string(&thresholds).unwrap_or_default();
        let stale_ms = u64::try_from(thresholds.stale_after().as_millis()).unwrap_or(u64::MAX);
        let clock = Instant::now();
        let mut watch: Option<Watch> = None;
        let mut standing_by: Option<String> = None;
        let mut probes: FuturesUnordered<BoxFuture<'_, ProbeDone>> = FuturesUnordered::new();
        // Hooks (fencing at the load balancer, a reconcile) run here, beside the rounds: a
        // slow load balancer or host never delays another host's detection nor the lease.
        let mut side: FuturesUnordered<BoxFuture<'_, SideDone>> = FuturesUnordered::new();
        let mut ticker = tokio::time::interval(thresholds.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                Some((host, outcome)) = probes.next(), if !probes.is_empty() => {
                    if let Some(w) = watch.as_mut() {
                        w.record(&host, outcome, clock.elapsed());
                    }
                }
                Some(done) = side.next(), if !side.is_empty() => match done {
                    SideDone::Hooked { change, outcome: Err(e) } => report(problem(format!(
                        "the hook for {} going {} failed: {e}",
                        change.host, change.to
                    ))),
                    SideDone::Hooked { .. } => {}
                    SideDone::Reconciled { host, outcome } => {
                        if let Some(w) = watch.as_mut() {
                            w.reconciling.remove(&host);
                            w.reconciled.push((host, outcome));
                        }
                    }
                },
                _ = ticker.tick() => {
                    let Some(w) = watch.as_mut() else {
                        match self.inventory.monitor_lease_take(&me, stale_ms, &thresholds_json) {
                            Ok(None) => {
                                standing_by = None;
                                let w = self.monitor_start(thresholds, clock.elapsed(), report);
                                watch = Some(w);
                            }
                            Ok(Some(holder)) => {
                                let who = holder.to_string();
                                if standing_by.as_deref() != Some(who.as_str()) {
                                    report(MonitorEvent::Standby { at: now_ms_rfc3339(), holder: who.clone() });
                                    standing_by = Some(who);
                                }
                            }
                            Err(e) => report(problem(format!("cannot take the monitor lease: {e}"))),
                        }
                        continue;
                    };
                    let Some(work) = self.monitor_round(w, &me, stale_ms, report, clock).await else {
                        // Another monitor took the lease (this one had stopped renewing it): it
                        // acts from now on, so this one's side work stops here too.
                        watch = None;
                        side = FuturesUnordered::new();
                        continue;
                    };
                    for change in work.hook {
                        side.push(Box::pin(async move {
                            let outcome = hooks.on_transition(self, &change).await;
                            SideDone::Hooked { change, outcome }
                        }));
                    }
                    for host in work.reconcile {
                        side.push(Box::pin(async move {
                            let outcome = hooks.reconcile(self, &host).await;
                            SideDone::Reconciled { host: host.name.to_string(), outcome }
                        }));
                    }
                    let timeout = thresholds.call_timeout();
                    for (host, uri) in &w.uris {
                        if w.probing.insert(host.clone()) {
                            let (host, uri) = (host.clone(), uri.clone());
                            probes.push(Box::pin(async move {
                                let outcome = self.hypervisor.probe(&uri, timeout).await;
                                (host, outcome)
                            }));
                        }
                    }
                }
            }
        }
        if watch.is_some() {
            if let Err(e) = self.inventory.monitor_release(&me) {
                report(problem(format!("cannot give the monitor lease up: {e}")));
            }
        }
        report(MonitorEvent::Stopped {
            at: now_ms_rfc3339(),
        });
        Ok(())
    }

    /// This monitor took the lease: a watch seeded from what the inventory holds.
    fn monitor_start(
        &self,
        thresholds: Thresholds,
        now: Duration,
        report: &(dyn Fn(MonitorEvent) + Send + Sync),
    ) -> Watch {
        let mut w = Watch::new(thresholds);
        let hosts = match self.inventory.host_list() {
            Ok(hosts) => hosts,
            Err(e) => {
                report(problem(format!("cannot list the hosts: {e}")));
                Vec::new()
            }
        };
        for h in &hosts {
            self.monitor_track(&mut w, h, now);
        }
        report(MonitorEvent::Started {
            at: now_ms_rfc3339(),
            hosts: u32::try_from(hosts.len()).unwrap_or(u32::MAX),
            thresholds,
            worst_case_detection_ms: u64::try_from(thresholds.worst_case_detection().as_millis())
                .unwrap_or(u64::MAX),
            explained: thresholds.describe(),
        });
        w
    }

    fn monitor_track(&self, w: &mut Watch, h: &Host, now: Duration) {
        let name = h.name.to_string();
        if w.uris.contains_key(&name) {
            return;
        }
        // A previous monitor's last word about the host (trusted or not): a host it left
        // lost or returning is reconciled before it is ready.
        let recorded = h.monitor.last_state;
        if !h.monitor.last_seen.is_empty() {
            w.last_seen
                .insert(name.clone(), h.monitor.last_seen.clone());
        }
        if recorded.is_some() {
            w.since.insert(name.clone(), h.monitor.since.clone());
            w.not_running
                .insert(name.clone(), h.monitor.not_running.clone());
        }
        w.fleet.track(&name, recorded, now);
        w.uris.insert(name, h.uri.clone());
    }

    /// One round (see the module): what it leaves to run beside the rounds, or `None` when
    /// the lease was lost.
    async fn monitor_round(
        &self,
        w: &mut Watch,
        me: &MonitorLease,
        stale_ms: u64,
        report: &(dyn Fn(MonitorEvent) + Send + Sync),
        clock: Instant,
    ) -> Option<SideWork> {
        let thresholds = *w.fleet.thresholds();
        let (hosts, servers) = match (self.inventory.host_list(), self.inventory.monitor_servers())
        {
            (Ok(h), Ok(s)) => (h, s),
            (Err(e), _) | (_, Err(e)) => {
                report(problem(format!("cannot read the inventory: {e}")));
                return Some(SideWork::default());
            }
        };
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        w.fleet.retain(&names);
        let kept = |h: &String| names.contains(&h.as_str());
        w.uris.retain(|h, _| kept(h));
        w.since.retain(|h, _| kept(h));
        w.probed_at.retain(|h, _| kept(h));
        w.running.retain(|h, _| kept(h));
        w.not_running.retain(|h, _| kept(h));
        w.last_seen.retain(|h, _| kept(h));
        for h in &hosts {
            self.monitor_track(w, h, clock.elapsed());
        }

        // The second plane: each witnessing load balancer, once.
        let (pooled, readings) = self.monitor_read_lbs(&servers, thresholds).await;
        let seen = witnesses(&pooled, &readings);
        let now = clock.elapsed();
        let trouble = seen.trouble();
        let eval = w.fleet.evaluate(now, |h| seen.of(h), trouble.as_deref());
        let mut changes = eval.changes;

        // Seen alive this round: libvirt answered, or the load balancer hears a server.
        let at = now_ms_rfc3339();
        for host in w.uris.keys() {
            let heard = matches!(seen.of(host), crate::monitor::Witness::Seen(s) if s.alive > 0);
            if w.answered.remove(host) || heard {
                w.last_seen.insert(host.clone(), at.clone());
            }
        }

        // Returning hosts: reconciled (beside the rounds) before they are ready; the outcomes
        // that came back since the last round apply now. Never while frozen.
        for (host, outcome) in std::mem::take(&mut w.reconciled) {
            changes.extend(w.fleet.reconciled(&host, outcome, clock.elapsed()));
        }
        let mut work = SideWork::default();
        for host in w.fleet.to_reconcile() {
            let Some(h) = hosts.iter().find(|h| h.name.as_str() == host) else {
                continue;
            };
            if w.reconciling.insert(host.clone()) {
                work.reconcile.push(h.clone());
            }
        }

        // Servers that should run and do not, from each host's last listing.
        let mut not_running_events = Vec::new();
        for host in w.uris.keys() {
            let Some(running) = w.running.get(host) else {
                continue;
            };
            let missing: Vec<String> = servers
                .iter()
                .filter(|s| s.host == *host && s.running && !running.contains(&s.name))
                .map(|s| s.name.clone())
                .collect();
            let before = w.not_running.get(host).cloned().unwrap_or_default();
            if missing != before {
                not_running_events.push(MonitorEvent::NotRunning {
                    at: now_ms_rfc3339(),
                    host: host.clone(),
                    servers: missing.clone(),
                });
                w.not_running.insert(host.clone(), missing);
            }
        }

        // Written before it is reported.
        for c in &changes {
            w.since.insert(c.host.clone(), at.clone());
        }
        let records: Vec<MonitorRecord> = w
            .uris
            .keys()
            .filter_map(|host| {
                let state = w.fleet.state(host)?;
                Some(MonitorRecord {
                    host: host.clone(),
                    state,
                    since: w.since.get(host).cloned().unwrap_or_else(|| at.clone()),
                    detail: w.fleet.detail(host).to_owned(),
                    not_running: w.not_running.get(host).cloned().unwrap_or_default(),
                    probed_at: w.probed_at.get(host).cloned().unwrap_or_default(),
                    last_seen: w.last_seen.get(host).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let frozen = w.fleet.frozen().unwrap_or("").to_owned();
        match eval.freeze {
            Some(Freeze::Frozen { why }) => w.unreported.push(MonitorEvent::Frozen {
                at: at.clone(),
                why,
            }),
            Some(Freeze::Thawed { why }) => w.unreported.push(MonitorEvent::Thawed {
                at: at.clone(),
                why,
            }),
            None => {}
        }
        for c in &changes {
            w.unreported.push(MonitorEvent::Transition {
                at: at.clone(),
                host: c.host.clone(),
                from: c.from,
                to: c.to,
                why: c.why.clone(),
            });
        }
        w.unreported.extend(not_running_events);
        w.unhooked.extend(changes);
        match self
            .inventory
            .monitor_write(me, &records, &frozen, stale_ms)
        {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // Nothing is reported as changed that the inventory does not hold yet: the
                // changes wait for the next round that writes.
                report(problem(format!("cannot write the hosts' states: {e}")));
                return Some(work);
            }
        }
        for ev in std::mem::take(&mut w.unreported) {
            report(ev);
        }
        work.hook = std::mem::take(&mut w.unhooked);
        Some(work)
    }

    /// Reads every HAProxy that holds pooled servers, at once, each within the call timeout.
    /// Servers behind other load balancers (Caddy: no active health checks) are no witness.
    async fn monitor_read_lbs(
        &self,
        servers: &[MonitoredServer],
        thresholds: Thresholds,
    ) -> (
        Vec<PooledServer>,
        HashMap<String, Result<Vec<MemberHealth>, String>>,
    ) {
        let pooled: Vec<PooledServer> = servers
            .iter()
            .filter_map(|s| {
                let (lb, kind, pool) = s.pooled.as_ref()?;
                (*kind == crate::model::LbKind::Haproxy).then(|| PooledServer {
                    server: s.name.clone(),
                    host: s.host.clone(),
                    lb: lb.clone(),
                    pool: pool.clone(),
                })
            })
            .collect();
        let wanted: HashSet<&str> = pooled.iter().map(|p| p.lb.as_str()).collect();
        let lbs = match self.inventory.lb_list() {
            Ok(l) => l,
            Err(e) => {
                let why = format!("cannot list the load balancers: {e}");
                let readings = wanted
                    .iter()
                    .map(|lb| ((*lb).to_owned(), Err(why.clone())))
                    .collect();
                return (pooled, readings);
            }
        };
        let limit = thresholds.call_timeout();
        let reads = lbs
            .into_iter()
            .filter(|lb| wanted.contains(lb.name.as_str()))
            .map(|lb| async move {
                let reading = match LbDriver::of(&lb) {
                    Ok(LbDriver::Haproxy(mut h)) => {
                        h.timeout = limit;
                        match tokio::time::timeout(limit, h.member_health()).await {
                            Ok(Ok(members)) => Ok(members),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!(
                                "no answer within {}",
                                crate::monitor::machine::secs(limit)
                            )),
                        }
                    }
                    Ok(LbDriver::Caddy(_)) => Err("not a witness".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                (lb.name, reading)
            });
        let readings = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .collect();
        (pooled, readings)
    }
}

fn problem(what: String) -> MonitorEvent {
    MonitorEvent::Problem {
        at: now_ms_rfc3339(),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostState;

    #[test]
    fn event_times_have_milliseconds() {
        let t = now_ms_rfc3339();
        assert!(t.ends_with('Z'), "{t}");
        let frac = t
            .rsplit_once('.')
            .map(|(_, f)| f.trim_end_matches('Z').len());
        // time prints no fraction when it is .000
        assert!(matches!(frac, None | Some(1..=3)), "{t}");
    }

    #[test]
    fn default_hooks_take_a_returning_host_as_clean() {
        let hooks = DefaultHooks;
        let inv = crate::inventory::Inventory::open_in_memory().unwrap();
        let engine = Engine::with(
            inv,
            crate::hypervisor::HvConfig::default(),
            crate::inventory::Actor::new("test"),
            std::path::PathBuf::from("/nonexistent/library"),
        );
        let host: Host = serde_json::from_value(serde_json::json!({
            "name": "h1", "uri": "test:///default", "pool": "default", "bridge": "br0",
            "status": "ok", "status_detail": "", "facts": null, "added_at": "", "checked_at": "",
            "network": "", "gateway": "", "domain_type": ""
        }))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(hooks.reconcile(&engine, &host)),
            Reconciled::clean()
        );
        let change = Change {
            host: "h1".into(),
            from: Some(HostState::Suspect),
            to: HostState::Failed,
            why: String::new(),
        };
        assert_eq!(rt.block_on(hooks.on_transition(&engine, &change)), Ok(()));
    }
}
