//! The monitor's decisions, without I/O: per host, what its libvirt probes and the load
//! balancer's view of its servers mean (ready, suspect, failed, partitioned, unreachable,
//! returning), and for the whole fleet whether Flotilla itself looks cut off (frozen).
//!
//! Time is a [`Duration`] since the monitor started (a monotonic clock: a laptop that sleeps
//! does not count missed probes for the time it slept). The runner (`ops::monitor`) feeds probe
//! results as they arrive ([`Fleet::probe`]) and evaluates once per probe interval
//! ([`Fleet::evaluate`]) with the load balancer's witness of each host.
//!
//! Rules, with `I` the probe interval and `a` the time of a host's last answer:
//! - a *miss*: once a probe after `a` failed (an error, or no answer within the call timeout),
//!   every whole interval since `a` is a miss, and at least one;
//! - `misses_to_suspect` misses: *suspect*;
//! - `misses_to_failed` misses (`misses_to_failed × I` without an answer): management is
//!   *lost*, and the witness decides: every pooled server of the host seen down by the load
//!   balancer → *failed*; any seen up → *partitioned*; otherwise → *unreachable*;
//! - *failed* is left only when libvirt answers again; a host that was lost (failed,
//!   partitioned, unreachable) answers → *returning*, and is *ready* only once a reconcile says
//!   it is clean ([`Fleet::reconciled`]); a suspect host is ready again after
//!   [`ANSWERS_TO_CLEAR`] answers in a row (a host that flaps stays suspect);
//! - *frozen*: the load balancer cannot be asked, or at least 2 and more than half of the hosts
//!   that are not already failed miss probes at once. While frozen no host becomes failed
//!   (it becomes unreachable, saying it would be failed), and no reconcile is started.

use crate::model::{HostState, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A suspect host is ready again after this many answers in a row.
pub const ANSWERS_TO_CLEAR: u32 = 2;

/// The monitor's settings. Whole milliseconds, so they read the same in JSON, the CLI and the
/// desktop app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Thresholds {
    /// How often each host's libvirt is probed (and the fleet evaluated).
    pub interval_ms: u64,
    /// How long one probe may take before it counts as failed. An answer later than one
    /// interval is *slow*: it counts as an answer, and the detail says so.
    pub call_timeout_ms: u64,
    /// Missed probes that make a host suspect.
    pub misses_to_suspect: u32,
    /// Missed probes (whole intervals without an answer) after which management is lost.
    pub misses_to_failed: u32,
}

impl Default for Thresholds {
    /// 1 s probes, 2 s call timeout, suspect at the first miss, lost after 5 s: a dead host
    /// is failed at most 6 s after it died (the target is 10 s).
    fn default() -> Self {
        Self {
            interval_ms: 1000,
            call_timeout_ms: 2000,
            misses_to_suspect: 1,
            misses_to_failed: 5,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(100..=60_000).contains(&self.interval_ms) {
            return Err(ValidationError::new(
                "interval",
                format!(
                    "{} ms is outside 100-60000 ms between probes",
                    self.interval_ms
                ),
            ));
        }
        if !(100..=60_000).contains(&self.call_timeout_ms) {
            return Err(ValidationError::new(
                "call timeout",
                format!(
                    "{} ms is outside 100-60000 ms for one probe",
                    self.call_timeout_ms
                ),
            ));
        }
        if !(1..=100).contains(&self.misses_to_suspect) {
            return Err(ValidationError::new(
                "misses to suspect",
                format!("{} is outside 1-100", self.misses_to_suspect),
            ));
        }
        if self.misses_to_failed < self.misses_to_suspect || self.misses_to_failed > 1000 {
            return Err(ValidationError::new(
                "misses to failed",
                format!(
                    "{} must be between the misses to suspect ({}) and 1000",
                    self.misses_to_failed, self.misses_to_suspect
                ),
            ));
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// An answer that took this long or longer is slow: the next probe was already due.
    pub fn slow_after(&self) -> Duration {
        self.interval()
    }

    /// How long without an answer makes management lost.
    pub fn lost_after(&self) -> Duration {
        self.interval() * self.misses_to_failed
    }

    /// The longest time from a host's death to its `failed` state, when the load balancer
    /// already sees its servers down by then: the host may have answered just before it died;
    /// the next probe starts within an interval and fails within the call timeout; management
    /// is lost `lost_after` after the last answer; evaluations run once per interval.
    pub fn worst_case_detection(&self) -> Duration {
        self.interval() + self.lost_after().max(self.interval() + self.call_timeout())
    }

    /// An outage of libvirt shorter than this never makes management lost: the last answer
    /// may come up to an interval before it began; after it ended, a probe still waiting may
    /// take the call timeout to give up, the next one starts within an interval. (A longer
    /// libvirtd restart is not a failure either: its guests keep running, so the load
    /// balancer sees them up — partitioned at worst.)
    pub fn tolerated_outage(&self) -> Duration {
        self.lost_after()
            .saturating_sub(self.interval() * 2)
            .saturating_sub(self.call_timeout())
    }

    /// Hosts lost within this time of each other count together for the freeze (more than half
    /// of them lost: Flotilla is the one cut off), and an automatic recovery waits this long
    /// after a failure before it fences, to see whether other hosts follow.
    pub fn group_window(&self) -> Duration {
        self.lost_after() * 3
    }

    /// A monitor's record not renewed for this long is not trusted by readers: a few probe
    /// intervals, and the call timeout an evaluation may wait for the load balancer.
    pub fn stale_after(&self) -> Duration {
        self.interval() * 3 + self.call_timeout()
    }

    /// The settings and what they imply, in words.
    pub fn describe(&self) -> String {
        format!(
            "probe every {} (libvirt call timeout {}); suspect after {} missed probe{}; management lost after {} without an answer ({} misses); a dead host is failed at most {} after it died, once the load balancer also sees its servers down; an outage shorter than {} is never taken for a loss",
            secs(self.interval()),
            secs(self.call_timeout()),
            self.misses_to_suspect,
            if self.misses_to_suspect == 1 { "" } else { "s" },
            secs(self.lost_after()),
            self.misses_to_failed,
            secs(self.worst_case_detection()),
            secs(self.tolerated_outage()),
        )
    }
}

/// `1.5 s`, `12 s`.
pub fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// What one probe of a host's libvirt said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered after `latency` (slow when that is an interval or more).
    Answered { latency: Duration },
    /// It failed, or did not answer within the call timeout (`unanswered`: the call was sent or
    /// still being connected and no answer came, as from a daemon that is slow — busy probing
    /// QEMU after a restart — or a path that is cut without a reset; not a refused or broken
    /// connection).
    Failed { reason: String, unanswered: bool },
}

/// How the load balancer sees the pooled servers of one host (servers the inventory holds in
/// rotation: desired state ready).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Up, or down while its checks get any answer from the guest (a reset, a wrong status):
    /// the guest runs, so its host runs.
    pub alive: u32,
    /// Down, its checks getting no answer at all (time-outs, no route).
    pub silent: u32,
    /// In maintenance at the load balancer: not checked, so no evidence either way.
    pub maint: u32,
    /// Not in the load balancer's table (lost on a reload) or a status without checks.
    pub unknown: u32,
    /// The servers and their status, shortened (for the detail).
    pub words: String,
}

impl Seen {
    /// Every server the load balancer checks is silent, and it checks at least one.
    pub fn all_silent(&self) -> bool {
        self.silent > 0 && self.alive == 0 && self.unknown == 0
    }

    fn total(&self) -> u32 {
        self.alive + self.silent + self.maint + self.unknown
    }
}

/// The second plane's view of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    Seen(Seen),
    /// No second witness: the host has no pooled server behind a load balancer with health
    /// checks, or the load balancer could not be asked.
    None {
        why: String,
    },
}

/// Whether a returning host is clean (the reconcile hook's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// Nothing stale (left) on the host: it may be ready. `done`: what the reconcile did, in
    /// words ("nothing stale on the host", or the stale copies it removed).
    Clean { done: String },
    /// Not yet (work left, or it failed): asked again at the next evaluation.
    NotYet { why: String },
}

impl Reconciled {
    /// Clean, with nothing to remove.
    pub fn clean() -> Self {
        Self::Clean {
            done: "nothing stale on the host".into(),
        }
    }
}

/// A host's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub host: String,
    /// `None`: the host had no state yet (first answer or first loss after the start).
    pub from: Option<HostState>,
    pub to: HostState,
    pub why: String,
}

/// The fleet's freeze changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freeze {
    Frozen { why: String },
    Thawed { why: String },
}

/// What one evaluation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub freeze: Option<Freeze>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone)]
struct Tracker {
    state: Option<HostState>,
    since: Duration,
    /// When the last answer arrived (or tracking began).
    last_answer: Duration,
    /// Probes that failed since the last answer.
    failed_probes: u32,
    /// Answers in a row (reset by a failed probe).
    answers_in_row: u32,
    last_reason: String,
    /// The last failed probe got no answer in time (rather than a refusal or an error).
    last_unanswered: bool,
    /// The last answer's latency when it was slow.
    slow: Option<Duration>,
    /// Lost once: must be reconciled before it is ready.
    dirty: bool,
    detail: String,
}

/// Every monitored host's tracker, and the fleet's freeze.
#[derive(Debug, Clone)]
pub struct Fleet {
    thresholds: Thresholds,
    hosts: BTreeMap<String, Tracker>,
    frozen: Option<String>,
}

impl Fleet {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            hosts: BTreeMap::new(),
            frozen: None,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Starts tracking `host` (nothing when it is tracked already). `recorded`: the state a
    /// previous monitor left in the inventory. A host recorded as lost or returning must
    /// still be reconciled before it is ready: recovery may have moved its servers while no
    /// monitor watched.
    pub fn track(&mut self, host: &str, recorded: Option<HostState>, now: Duration) {
        self.hosts
            .entry(host.to_owned())
            .or_insert_with(|| Tracker {
                state: recorded,
                since: now,
                last_answer: now,
                failed_probes: 0,
                answers_in_row: 0,
                last_reason: String::new(),
                last_unanswered: false,
                slow: None,
                dirty: recorded.is_some_and(|s| s.is_lost() || s == HostState::Returning),
                detail: String::new(),
            });
    }

    /// Stops tracking hosts not in `hosts` (removed from the inventory).
    pub fn retain(&mut self, hosts: &[&str]) {
        self.hosts.retain(|h, _| hosts.contains(&h.as_str()));
    }

    /// Records a probe's result, `at` the time it arrived.
    pub fn probe(&mut self, host: &str, probe: Probe, at: Duration) {
        let slow_after = self.thresholds.slow_after();
        let Some(t) = self.hosts.get_mut(host) else {
            return;
        };
        match probe {
            Probe::Answered { latency } => {
                t.last_answer = t.last_answer.max(at);
                t.failed_probes = 0;
                t.answers_in_row += 1;
                t.slow = (latency >= slow_after).then_some(latency);
            }
            Probe::Failed { reason, unanswered } => {
                t.failed_probes += 1;
                t.answers_in_row = 0;
                t.last_reason = reason;
                t.last_unanswered = unanswered;
            }
        }
    }

    pub fn state(&self, host: &str) -> Option<HostState> {
        self.hosts.get(host).and_then(|t| t.state)
    }

    /// The current state's explanation, kept up to date at every evaluation.
    pub fn detail(&self, host: &str) -> &str {
        self.hosts.get(host).map_or("", |t| t.detail.as_str())
    }

    /// Why the fleet is frozen, when it is.
    pub fn frozen(&self) -> Option<&str> {
        self.frozen.as_deref()
    }

    /// Hosts waiting for a reconcile (returning). None while frozen: automatic actions wait.
    pub fn to_reconcile(&self) -> Vec<String> {
        if self.frozen.is_some() {
            return Vec::new();
        }
        self.hosts
            .iter()
            .filter(|(_, t)| t.state == Some(HostState::Returning) && t.dirty)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Missed probes of a host at `now` (see the module's rules).
    fn misses(&self, t: &Tracker, now: Duration) -> u32 {
        if t.failed_probes == 0 {
            return 0;
        }
        let intervals = now.saturating_sub(t.last_answer).as_millis()
            / u128::from(self.thresholds.interval_ms.max(1));
        u32::try_from(intervals).unwrap_or(u32::MAX).max(1)
    }

    /// Evaluates every host at `now`. `witness` gives the load balancer's view of a host;
    /// `lb_trouble` says why the load balancer (or one of them) could not be asked.
    pub fn evaluate(
        &mut self,
        now: Duration,
        witness: impl Fn(&str) -> Witness,
        lb_trouble: Option<&str>,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let frozen = self.freeze_reason(now, lb_trouble);
        match (&self.frozen, &frozen) {
            (None, Some(why)) => {
                out.freeze = Some(Freeze::Frozen { why: why.clone() });
            }
            (Some(_), None) => {
                out.freeze = Some(Freeze::Thawed {
                    why:
                        "the load balancer answers and most hosts answer: automatic actions resume"
                            .into(),
                });
            }
            _ => {}
        }
        self.frozen = frozen;
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        for host in names {
            let w = witness(&host);
            if let Some(change) = self.decide(&host, now, &w) {
                out.changes.push(change);
            }
        }
        out
    }

    fn freeze_reason(&self, now: Duration, lb_trouble: Option<&str>) -> Option<String> {
        if let Some(trouble) = lb_trouble {
            return Some(format!(
                "the load balancer cannot be asked ({trouble}): without the second witness no host is declared failed"
            ));
        }
        // A host that failed within the group window counts with the hosts missing now: hosts
        // lost one after another (a flaky uplink on Flotilla's side) are lost together.
        let window = self.thresholds.group_window();
        let failed_lately = |t: &Tracker| {
            t.state == Some(HostState::Failed) && now.saturating_sub(t.since) <= window
        };
        let candidates: Vec<&Tracker> = self
            .hosts
            .values()
            .filter(|t| t.state != Some(HostState::Failed) || failed_lately(t))
            .collect();
        let missing = candidates
            .iter()
            .filter(|t| {
                failed_lately(t) || self.misses(t, now) >= self.thresholds.misses_to_suspect
            })
            .count();
        (missing >= 2 && missing * 2 > candidates.len()).then(|| {
            format!(
                "{missing} of {} hosts stopped answering within {}: Flotilla itself looks cut off (its own network?), so no host is declared failed and nothing is recovered automatically",
                candidates.len(),
                secs(window)
            )
        })
    }

    fn decide(&mut self, host: &str, now: Duration, witness: &Witness) -> Option<Change> {
        let th = self.thresholds;
        let misses = self.hosts.get(host).map(|t| self.misses(t, now))?;
        let frozen = self.frozen.clone();
        let t = self.hosts.get_mut(host)?;
        let lost_for = now.saturating_sub(t.last_answer);
        let slow_note = t.slow.map(|l| {
            format!(
                "libvirt answered slowly ({}; slow from {})",
                secs(l),
                secs(th.slow_after())
            )
        });
        let (to, why) = if t.failed_probes == 0 {
            if t.answers_in_row == 0 {
                // Nothing known yet (no probe came back since tracking began).
                return None;
            }
            match t.state {
                None | Some(HostState::Suspect) if t.dirty => (
                    HostState::Returning,
                    "libvirt answers; the host was lost before, so it is reconciled before it is ready".to_owned(),
                ),
                None => (HostState::Ready, "libvirt answers".to_owned()),
                Some(HostState::Ready) => (HostState::Ready, slow_note.unwrap_or_default()),
                Some(HostState::Suspect) if t.answers_in_row >= ANSWERS_TO_CLEAR => (
                    HostState::Ready,
                    format!("libvirt answers again ({} answers in a row)", t.answers_in_row),
                ),
                Some(HostState::Suspect) => (
                    HostState::Suspect,
                    format!(
                        "libvirt answered again; ready after {ANSWERS_TO_CLEAR} answers in a row"
                    ),
                ),
                Some(lost) if lost.is_lost() => (
                    HostState::Returning,
                    format!(
                        "libvirt answers again (the host was {lost} for {}); not ready until it is reconciled",
                        secs(now.saturating_sub(t.since))
                    ),
                ),
                Some(_) => (HostState::Returning, t.detail.clone()),
            }
        } else if misses < th.misses_to_suspect {
            let state = t.state?;
            (state, t.detail.clone())
        } else if misses < th.misses_to_failed {
            let missed = format!(
                "libvirt did not answer: {} ({misses} missed, {} without an answer; lost after {})",
                t.last_reason,
                secs(lost_for),
                secs(th.lost_after())
            );
            match t.state {
                None | Some(HostState::Ready | HostState::Returning | HostState::Suspect) => {
                    (HostState::Suspect, missed)
                }
                // Lost already (a monitor that started while it was): stays so until it answers.
                Some(lost) => (lost, t.detail.clone()),
            }
        } else {
            let lost = format!(
                "libvirt lost for {} ({}; {misses} missed)",
                secs(lost_for),
                t.last_reason
            );
            let verdict = match witness {
                Witness::Seen(s) if s.all_silent() => match &frozen {
                    None => (
                        HostState::Failed,
                        format!(
                            "{lost} and the load balancer hears nothing from all {} of its checked servers (no answer, not even a refusal): {}; dead or cut off — its servers are re-created elsewhere only once they are known to be off",
                            s.silent, s.words
                        ),
                    ),
                    Some(why) => (
                        HostState::Unreachable,
                        format!(
                            "{lost} and the load balancer hears nothing from its servers, so it would be failed, but the monitor is frozen: {why}"
                        ),
                    ),
                },
                Witness::Seen(s) if s.alive > 0 => (
                    HostState::Partitioned,
                    format!(
                        "{lost}, but {} of its {} servers answer the load balancer ({}): they run, so the host runs and {}; not a failure",
                        s.alive,
                        s.total(),
                        s.words,
                        if t.last_unanswered {
                            "its libvirt does not answer in time: slow (a daemon busy after a \
                             restart answers late) or the path to it is cut"
                        } else {
                            "Flotilla cannot reach it"
                        }
                    ),
                ),
                Witness::Seen(s) => (
                    HostState::Unreachable,
                    format!(
                        "{lost}; the load balancer cannot tell ({}: {} not in its table or without checks, {} in maintenance): not failed without a second witness",
                        if s.words.is_empty() { "nothing" } else { s.words.as_str() },
                        s.unknown,
                        s.maint
                    ),
                ),
                Witness::None { why } => (
                    HostState::Unreachable,
                    format!("{lost}; no second witness ({why}): not failed"),
                ),
            };
            match t.state {
                // Failed is left only through returning: fencing or recovery may have begun.
                Some(HostState::Failed) => (
                    HostState::Failed,
                    format!(
                        "{} (failed for {})",
                        verdict.1,
                        secs(now.saturating_sub(t.since))
                    ),
                ),
                _ => verdict,
            }
        };
        t.detail = why.clone();
        if t.state == Some(to) {
            return None;
        }
        let from = t.state;
        t.state = Some(to);
        t.since = now;
        if to.is_lost() {
            t.dirty = true;
        }
        Some(Change {
            host: host.to_owned(),
            from,
            to,
            why,
        })
    }

    /// The reconcile hook's answer for a returning host: clean makes it ready.
    pub fn reconciled(&mut self, host: &str, outcome: Reconciled, now: Duration) -> Option<Change> {
        let t = self.hosts.get_mut(host)?;
        if t.state != Some(HostState::Returning) {
            return None;
        }
        match outcome {
            Reconciled::Clean { done } => {
                t.dirty = false;
                t.state = Some(HostState::Ready);
                t.since = now;
                t.detail = format!("reconciled: {done}");
                Some(Change {
                    host: host.to_owned(),
                    from: Some(HostState::Returning),
                    to: HostState::Ready,
                    why: t.detail.clone(),
                })
            }
            Reconciled::NotYet { why } => {
                t.detail = format!("libvirt answers again; waiting for the reconcile: {why}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HostState::*;

    const I: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn up() -> Probe {
        Probe::Answered { latency: ms(5) }
    }

    fn down() -> Probe {
        Probe::Failed {
            reason: "cannot connect".into(),
            unanswered: false,
        }
    }

    /// No answer within the call timeout (a slow daemon, or a silent cut).
    fn late() -> Probe {
        Probe::Failed {
            reason: "did not answer within 2 s".into(),
            unanswered: true,
        }
    }

    fn seen(alive: u32, silent: u32) -> Witness {
        Witness::Seen(Seen {
            alive,
            silent,
            words: "web-1 DOWN".into(),
            ..Seen::default()
        })
    }

    /// A fleet of `hosts`, each answered once at t = 0 and evaluated: all ready.
    fn ready_fleet(hosts: &[&str]) -> Fleet {
        let mut f = Fleet::new(Thresholds::default());
        for h in hosts {
            f.track(h, None, Duration::ZERO);
            f.probe(h, up(), ms(10));
        }
        let e = f.evaluate(ms(10), |_| seen(1, 0), None);
        assert!(e.changes.iter().all(|c| c.to == Ready), "{e:?}");
        f
    }

    /// Runs ticks at t = start + k·I for k in 1..=n: `h` gets `probe(k)` (other hosts answer),
    /// then the fleet is evaluated with `witness`. Returns every change, in order.
    fn run(
        f: &mut Fleet,
        h: &str,
        start: Duration,
        n: u32,
        probe: impl Fn(u32) -> Option<Probe>,
        witness: impl Fn(&str) -> Witness + Copy,
        lb_trouble: Option<&str>,
    ) -> Vec<Change> {
        let names: Vec<String> = f.hosts.keys().cloned().collect();
        let mut out = Vec::new();
        for k in 1..=n {
            let now = start + I * k;
            for other in &names {
                if other == h {
                    if let Some(p) = probe(k) {
                        f.probe(h, p, now);
                    }
                } else {
                    f.probe(other, up(), now);
                }
            }
            out.extend(f.evaluate(now, witness, lb_trouble).changes);
        }
        out
    }

    fn path(changes: &[Change], host: &str) -> Vec<HostState> {
        changes
            .iter()
            .filter(|c| c.host == host)
            .map(|c| c.to)
            .collect()
    }

    #[test]
    fn defaults_meet_the_ten_second_target_and_say_so() {
        let t = Thresholds::default();
        t.validate().unwrap();
        assert_eq!(t.lost_after(), ms(5000));
        assert_eq!(t.worst_case_detection(), ms(6000));
        assert!(t.worst_case_detection() <= Duration::from_secs(10));
        assert_eq!(t.tolerated_outage(), ms(1000));
        assert_eq!(t.stale_after(), ms(5000));
        let words = t.describe();
        assert!(
            words.contains("failed at most 6 s after it died"),
            "{words}"
        );
        assert!(words.contains("lost after 5 s"), "{words}");
        // A call timeout longer than the lost window sets the bound instead.
        let slow = Thresholds {
            call_timeout_ms: 9000,
            ..t
        };
        assert_eq!(slow.worst_case_detection(), ms(11_000));
        for bad in [
            Thresholds {
                interval_ms: 50,
                ..t
            },
            Thresholds {
                call_timeout_ms: 0,
                ..t
            },
            Thresholds {
                misses_to_suspect: 0,
                ..t
            },
            Thresholds {
                misses_to_suspect: 3,
                misses_to_failed: 2,
                ..t
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_dead_host_goes_suspect_then_failed_when_both_planes_agree() {
        let mut f = ready_fleet(&["h1", "h2"]);
        let changes = run(
            &mut f,
            "h2",
            ms(10),
            6,
            |_| Some(down()),
            |h| if h == "h2" { seen(0, 2) } else { seen(1, 0) },
            None,
        );
        assert_eq!(path(&changes, "h2"), [Suspect, Failed]);
        assert!(path(&changes, "h1").is_empty());
        let failed = changes.iter().find(|c| c.to == Failed).unwrap();
        assert_eq!(failed.from, Some(Suspect));
        assert!(
            failed
                .why
                .contains("hears nothing from all 2 of its checked servers"),
            "{}",
            failed.why
        );
        // Failed exactly once the lost window passed: 5 intervals after the last answer.
        assert_eq!(f.state("h2"), Some(Failed));
        assert!(f.frozen().is_none());
        // Failed stays failed, whatever the witness says, until libvirt answers.
        let later = run(
            &mut f,
            "h2",
            ms(6010),
            3,
            |_| Some(down()),
            |_| seen(2, 0),
            None,
        );
        assert!(later.is_empty(), "{later:?}");
        assert!(
            f.detail("h2").contains("(failed for 4 s)"),
            "{}",
            f.detail("h2")
        );
    }

    #[test]
    fn failed_is_reached_no_later_than_the_worst_case_detection_time() {
        let th = Thresholds::default();
        // The host answers at t = 0 and dies at once; probes fail from the next tick on.
        let mut f = Fleet::new(th);
        f.track("h1", None, Duration::ZERO);
        f.track("h2", None, Duration::ZERO);
        f.probe("h1", up(), Duration::ZERO);
        f.probe("h2", up(), Duration::ZERO);
        f.evaluate(Duration::ZERO, |_| seen(1, 0), None);
        let mut failed_at = None;
        for k in 1..=20u32 {
            let now = I * k;
            f.probe("h1", up(), now);
            // The probe sent at the previous tick times out a call timeout later.
            if now >= I + th.call_timeout() {
                f.probe("h2", down(), now);
            }
            let e = f.evaluate(
                now,
                |h| if h == "h2" { seen(0, 1) } else { seen(1, 0) },
                None,
            );
            if e.changes.iter().any(|c| c.to == Failed) {
                failed_at = Some(now);
                break;
            }
        }
        let at = failed_at.expect("failed");
        assert!(at <= th.worst_case_detection(), "{at:?}");
        assert!(at >= th.lost_after(), "not before the lost window: {at:?}");
    }

    #[test]
    fn partitioned_never_becomes_failed_while_the_lb_sees_servers_up() {
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        let changes = run(
            &mut f,
            "h2",
            ms(10),
            30,
            |_| Some(down()),
            |h| if h == "h2" { seen(1, 1) } else { seen(1, 0) },
            None,
        );
        assert_eq!(path(&changes, "h2"), [Suspect, Partitioned]);
        let p = changes.iter().find(|c| c.to == Partitioned).unwrap();
        assert!(p.why.contains("1 of its 2 servers answer"), "{}", p.why);
        assert!(p.why.contains("not a failure"), "{}", p.why);
        assert!(p.why.contains("cannot reach it"), "{}", p.why);
        // A daemon that is merely slow (no answer in time, its servers up): said so, not failed.
        let mut slow = ready_fleet(&["h1", "h2", "h3"]);
        let c = run(
            &mut slow,
            "h2",
            ms(10),
            60,
            |_| Some(late()),
            |h| if h == "h2" { seen(2, 0) } else { seen(1, 0) },
            None,
        );
        assert_eq!(path(&c, "h2"), [Suspect, Partitioned]);
        let p = c.iter().find(|c| c.to == Partitioned).unwrap();
        assert!(
            p.why.contains("does not answer in time: slow") && p.why.contains("not a failure"),
            "{}",
            p.why
        );
        assert!(f.to_reconcile().is_empty());
        // When it answers again it is reconciled before it is ready.
        let back = run(
            &mut f,
            "h2",
            ms(30_010),
            1,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(path(&back, "h2"), [Returning]);
        // A partitioned host whose servers then go down (it died) is failed.
        let mut g = ready_fleet(&["h1", "h2", "h3"]);
        let c = run(
            &mut g,
            "h2",
            ms(10),
            6,
            |_| Some(down()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(path(&c, "h2"), [Suspect, Partitioned]);
        let c = run(
            &mut g,
            "h2",
            ms(6010),
            1,
            |_| Some(down()),
            |h| if h == "h2" { seen(0, 1) } else { seen(1, 0) },
            None,
        );
        assert_eq!(path(&c, "h2"), [Failed]);
    }

    #[test]
    fn no_second_witness_is_unreachable_not_failed() {
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        let none = |_: &str| Witness::None {
            why: "no server of this host is in a checked pool".into(),
        };
        let changes = run(&mut f, "h2", ms(10), 20, |_| Some(down()), none, None);
        assert_eq!(path(&changes, "h2"), [Suspect, Unreachable]);
        assert!(
            f.detail("h2").contains("no second witness"),
            "{}",
            f.detail("h2")
        );
        // Servers the load balancer does not know (a reload lost them) are no witness either.
        let mut g = ready_fleet(&["h1", "h2", "h3"]);
        let unknown = |_: &str| {
            Witness::Seen(Seen {
                silent: 1,
                unknown: 1,
                ..Seen::default()
            })
        };
        let c = run(&mut g, "h2", ms(10), 20, |_| Some(down()), unknown, None);
        assert_eq!(path(&c, "h2"), [Suspect, Unreachable]);
        // Servers in maintenance say nothing; the others down is enough.
        let mut m = ready_fleet(&["h1", "h2", "h3"]);
        let maint = |_: &str| {
            Witness::Seen(Seen {
                silent: 1,
                maint: 3,
                ..Seen::default()
            })
        };
        let c = run(&mut m, "h2", ms(10), 6, |_| Some(down()), maint, None);
        assert_eq!(path(&c, "h2"), [Suspect, Failed]);
    }

    #[test]
    fn frozen_when_most_hosts_stop_answering_at_once_blocks_failed() {
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        let names = ["h1", "h2", "h3"];
        let mut freezes = Vec::new();
        let mut changes = Vec::new();
        for k in 1..=10u32 {
            let now = ms(10) + I * k;
            // h1 and h2 stop answering (2 of 3: more than half); h3 answers.
            f.probe("h1", down(), now);
            f.probe("h2", down(), now);
            f.probe("h3", up(), now);
            let e = f.evaluate(now, |_| seen(0, 1), None);
            freezes.extend(e.freeze);
            changes.extend(e.changes);
        }
        assert!(
            matches!(&freezes[..], [Freeze::Frozen { why }] if why.contains("2 of 3 hosts stopped answering")),
            "{freezes:?}"
        );
        for h in ["h1", "h2"] {
            assert_eq!(path(&changes, h), [Suspect, Unreachable], "{h}");
            assert!(f
                .detail(h)
                .contains("would be failed, but the monitor is frozen"));
        }
        assert!(!changes.iter().any(|c| c.to == Failed));
        // Back: both answer; the freeze thaws, and they return (reconcile) rather than fail.
        let mut thawed = Vec::new();
        let mut back = Vec::new();
        for k in 11..=12u32 {
            let now = ms(10) + I * k;
            for h in names {
                f.probe(h, up(), now);
            }
            let e = f.evaluate(now, |_| seen(1, 0), None);
            thawed.extend(e.freeze);
            back.extend(e.changes);
        }
        assert!(matches!(&thawed[..], [Freeze::Thawed { .. }]), "{thawed:?}");
        assert_eq!(path(&back, "h1"), [Returning]);
        assert_eq!(f.to_reconcile(), ["h1", "h2"]);
    }

    #[test]
    fn one_host_of_two_lost_is_not_a_freeze_but_two_of_two_is() {
        let mut f = ready_fleet(&["h1", "h2"]);
        let c = run(
            &mut f,
            "h2",
            ms(10),
            6,
            |_| Some(down()),
            |h| if h == "h2" { seen(0, 1) } else { seen(1, 0) },
            None,
        );
        assert_eq!(path(&c, "h2"), [Suspect, Failed]);
        assert!(f.frozen().is_none());
        // A failed host no longer counts: h1 alone stopping is one of one, no freeze either.
        let c = run(
            &mut f,
            "h1",
            ms(6010),
            6,
            |_| Some(down()),
            |_| seen(0, 1),
            None,
        );
        assert_eq!(path(&c, "h1"), [Suspect, Failed]);

        let mut g = ready_fleet(&["h1", "h2"]);
        let mut changes = Vec::new();
        for k in 1..=8u32 {
            let now = ms(10) + I * k;
            g.probe("h1", down(), now);
            g.probe("h2", down(), now);
            changes.extend(g.evaluate(now, |_| seen(0, 1), None).changes);
        }
        assert!(g.frozen().unwrap().contains("2 of 2 hosts"));
        assert!(!changes.iter().any(|c| c.to == Failed), "{changes:?}");
    }

    #[test]
    fn hosts_lost_one_after_another_within_the_window_count_together() {
        // Three hosts; h1 is lost alone (both planes: failed), h2 follows a few seconds later:
        // two of three within the group window is Flotilla's own uplink flapping, not two
        // host failures — h2 is not failed.
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        let silent = |h: &str| if h == "h3" { seen(1, 0) } else { seen(0, 2) };
        let mut changes = Vec::new();
        let mut frozen = None;
        for k in 1..=20u32 {
            let now = ms(10) + I * k;
            f.probe("h1", down(), now);
            f.probe("h2", if k >= 8 { down() } else { up() }, now);
            f.probe("h3", up(), now);
            let e = f.evaluate(now, silent, None);
            frozen = frozen.or(e.freeze);
            changes.extend(e.changes);
        }
        assert_eq!(path(&changes, "h1"), [Suspect, Failed]);
        assert_eq!(path(&changes, "h2"), [Suspect, Unreachable], "{changes:?}");
        assert!(
            matches!(&frozen, Some(Freeze::Frozen { why }) if why.contains("2 of 3 hosts stopped answering within 15 s")),
            "{frozen:?}"
        );
        // The same second loss long after the first is a failure of its own.
        let mut g = ready_fleet(&["h1", "h2", "h3"]);
        let mut changes = Vec::new();
        for k in 1..=40u32 {
            let now = ms(10) + I * k;
            g.probe("h1", down(), now);
            g.probe("h2", if k >= 30 { down() } else { up() }, now);
            g.probe("h3", up(), now);
            changes.extend(g.evaluate(now, silent, None).changes);
        }
        assert_eq!(path(&changes, "h2"), [Suspect, Failed], "{changes:?}");
    }

    #[test]
    fn an_unreachable_load_balancer_freezes_and_blocks_failed() {
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        let lb_gone = |_: &str| Witness::None {
            why: "load balancer lab: connection refused".into(),
        };
        let mut freeze = None;
        let mut changes = Vec::new();
        for k in 1..=8u32 {
            let now = ms(10) + I * k;
            f.probe("h1", up(), now);
            f.probe("h2", down(), now);
            f.probe("h3", up(), now);
            let e = f.evaluate(now, lb_gone, Some("lab: connection refused"));
            freeze = freeze.or(e.freeze);
            changes.extend(e.changes);
        }
        assert!(
            matches!(&freeze, Some(Freeze::Frozen { why }) if why.contains("load balancer cannot be asked (lab: connection refused)")),
            "{freeze:?}"
        );
        assert_eq!(path(&changes, "h2"), [Suspect, Unreachable]);
        // Ready hosts stay ready while frozen: an HAProxy restart changes nothing for them.
        assert_eq!(f.state("h1"), Some(Ready));
        // The load balancer is back and sees h2's servers down: not frozen, h2 fails.
        let e = f.evaluate(
            ms(10) + I * 9,
            |h| if h == "h2" { seen(0, 2) } else { seen(1, 0) },
            None,
        );
        assert!(matches!(e.freeze, Some(Freeze::Thawed { .. })));
        assert_eq!(path(&e.changes, "h2"), [Failed]);
    }

    #[test]
    fn a_slow_answer_is_an_answer_not_a_miss() {
        let mut f = ready_fleet(&["h1", "h2"]);
        let slow = |_| Some(Probe::Answered { latency: ms(1800) });
        let changes = run(&mut f, "h2", ms(10), 20, slow, |_| seen(0, 2), None);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(f.state("h2"), Some(Ready));
        assert!(
            f.detail("h2").contains("answered slowly (1.8 s"),
            "{}",
            f.detail("h2")
        );
        // A fast answer clears the note.
        run(
            &mut f,
            "h2",
            ms(20_010),
            1,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(f.detail("h2"), "");
    }

    #[test]
    fn a_short_outage_below_the_threshold_is_suspect_then_ready_never_failed() {
        let th = Thresholds::default();
        let mut f = ready_fleet(&["h1", "h2"]);
        // libvirtd restarts: probes fail for the tolerated outage, then answer again.
        let outage = (th.tolerated_outage().as_millis() / I.as_millis()) as u32;
        let changes = run(
            &mut f,
            "h2",
            ms(10),
            outage + 4,
            |k| Some(if k <= outage { down() } else { up() }),
            |_| seen(0, 2),
            None,
        );
        assert_eq!(path(&changes, "h2"), [Suspect, Ready]);
        assert!(
            f.to_reconcile().is_empty(),
            "nothing to reconcile after a blip"
        );
    }

    #[test]
    fn a_flapping_host_stays_suspect_and_never_fails() {
        let mut f = ready_fleet(&["h1", "h2"]);
        let changes = run(
            &mut f,
            "h2",
            ms(10),
            40,
            |k| Some(if k % 2 == 0 { up() } else { down() }),
            |_| seen(0, 2),
            None,
        );
        assert_eq!(
            path(&changes, "h2"),
            [Suspect],
            "one change, not one per flap"
        );
        assert!(
            f.detail("h2").contains("did not answer") || f.detail("h2").contains("answered again")
        );
        // It settles: two answers in a row make it ready.
        let c = run(
            &mut f,
            "h2",
            ms(40_010),
            2,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(path(&c, "h2"), [Ready]);
    }

    #[test]
    fn a_returning_host_needs_a_clean_reconcile_before_ready() {
        let mut f = ready_fleet(&["h1", "h2"]);
        let dead = |h: &str| if h == "h2" { seen(0, 1) } else { seen(1, 0) };
        run(&mut f, "h2", ms(10), 6, |_| Some(down()), dead, None);
        assert_eq!(f.state("h2"), Some(Failed));
        let back = run(
            &mut f,
            "h2",
            ms(6010),
            3,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(path(&back, "h2"), [Returning]);
        assert!(
            back[0].why.contains("not ready until it is reconciled"),
            "{}",
            back[0].why
        );
        assert_eq!(f.to_reconcile(), ["h2"]);
        // Not yet: stays returning, the detail says why.
        assert_eq!(
            f.reconciled(
                "h2",
                Reconciled::NotYet {
                    why: "2 stale domains".into()
                },
                ms(9100)
            ),
            None
        );
        assert_eq!(f.state("h2"), Some(Returning));
        assert!(f.detail("h2").contains("2 stale domains"));
        // Lost again before it was clean: it must still be reconciled when it comes back.
        run(&mut f, "h2", ms(9010), 2, |_| Some(down()), dead, None);
        assert_eq!(f.state("h2"), Some(Suspect));
        let again = run(
            &mut f,
            "h2",
            ms(11_010),
            1,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(path(&again, "h2"), [Returning], "not ready: still dirty");
        let ready = f.reconciled("h2", Reconciled::clean(), ms(12_100)).unwrap();
        assert_eq!((ready.from, ready.to), (Some(Returning), Ready));
        assert!(f.to_reconcile().is_empty());
        // A reconcile answer for a host that is not returning changes nothing.
        assert_eq!(f.reconciled("h1", Reconciled::clean(), ms(12_100)), None);
    }

    #[test]
    fn no_reconcile_starts_while_frozen() {
        let mut f = ready_fleet(&["h1", "h2", "h3"]);
        run(
            &mut f,
            "h2",
            ms(10),
            6,
            |_| Some(down()),
            |h| if h == "h2" { seen(0, 1) } else { seen(1, 0) },
            None,
        );
        run(
            &mut f,
            "h2",
            ms(6010),
            1,
            |_| Some(up()),
            |_| seen(1, 0),
            None,
        );
        assert_eq!(f.to_reconcile(), ["h2"]);
        f.evaluate(ms(7100), |_| seen(1, 0), Some("lab: timed out"));
        assert!(f.frozen().is_some());
        assert!(f.to_reconcile().is_empty());
    }

    #[test]
    fn a_monitor_started_after_a_failure_keeps_it_until_the_host_is_reconciled() {
        // The previous monitor recorded h2 failed; this one starts and h2 answers.
        let mut f = Fleet::new(Thresholds::default());
        f.track("h1", Some(Ready), Duration::ZERO);
        f.track("h2", Some(Failed), Duration::ZERO);
        // Before any probe result nothing changes.
        assert!(f.evaluate(ms(100), |_| seen(1, 0), None).changes.is_empty());
        f.probe("h1", up(), ms(200));
        f.probe("h2", up(), ms(200));
        let e = f.evaluate(ms(300), |_| seen(1, 0), None);
        assert_eq!(path(&e.changes, "h2"), [Returning]);
        assert!(path(&e.changes, "h1").is_empty(), "h1 was ready and is");
        // A host with no record gets its first state from its first result.
        f.track("h3", None, ms(300));
        f.probe("h3", up(), ms(400));
        let e = f.evaluate(ms(500), |_| seen(1, 0), None);
        assert_eq!(e.changes[0].from, None);
        assert_eq!(path(&e.changes, "h3"), [Ready]);
        // Removed hosts are forgotten.
        f.retain(&["h1", "h3"]);
        assert_eq!(f.state("h2"), None);
    }
}
