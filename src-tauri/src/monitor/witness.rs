//! The second plane: how the load balancer sees each host's servers, from one `show stat`
//! per load balancer. Pure: the runner reads the load balancers and the inventory.
//!
//! Only load balancers that check their members' health themselves are witnesses (HAProxy).
//! Caddy, as Flotilla configures it, runs no active health checks: its servers are left out.

use super::machine::{Seen, Witness};
use crate::lb::haproxy::MemberHealth;
use std::collections::{BTreeMap, HashMap};

/// A server the inventory holds in rotation (desired load-balancer state ready) in a pool of a
/// witnessing load balancer. A server inside its health gate (drain, its health forced down
/// until its checks pass) or being drained is no evidence either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledServer {
    pub server: String,
    pub host: String,
    pub lb: String,
    pub pool: String,
}

/// How the load balancer sees one server: whether its guest answers at all. A guest that
/// answers *anything* — a TCP reset, a TLS or HTTP error, a wrong status, a connection it accepts
/// and then does not serve — runs, and so does its host. Only silence (time-outs, no route)
/// is evidence that the host may be dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSeen {
    /// Up, or down while its checks get an answer from the guest.
    Alive,
    /// Down, and its checks get no answer at all.
    Silent,
    /// In maintenance at the load balancer: not checked.
    Maint,
    /// Not checked, not in the table, or a check that failed on the load balancer's side.
    Unknown,
}

/// Reads HAProxy's status words (`status`), the last check's result (`check_status`: `L4TOUT`,
/// `L4CON`, `L7STS`, …) and what it met (`last_chk`: `Connection refused`, `No route to host`).
///
/// - `UP`, `UP 1/2`, `DRAIN`, `NOLB`: alive (its checks pass, or passed a moment ago);
/// - `DOWN` after a check that got past layer 4 (`L4OK`, `L6…`, `L7…`, a layer-7 time-out
///   included: the guest accepted the connection): alive, only unhealthy;
/// - `DOWN` after `L4CON` with a refused or reset connection: alive — the guest's kernel answered;
/// - `DOWN` after `L4TOUT`, or `L4CON` for any other reason (no route to host: nobody answers
///   ARP): silent;
/// - `MAINT…`: in maintenance; anything else (`no check`, `SOCKERR` — the load balancer's own
///   socket failed —, `INI`): unknown.
pub fn classify(status: &str, check: &str, said: &str) -> ServerSeen {
    let word = status.split_whitespace().next().unwrap_or("");
    match word {
        "UP" | "DRAIN" | "NOLB" => ServerSeen::Alive,
        "DOWN" => classify_failed_check(check, said),
        "MAINT" => ServerSeen::Maint,
        _ => ServerSeen::Unknown,
    }
}

fn classify_failed_check(check: &str, said: &str) -> ServerSeen {
    let said = said.to_ascii_lowercase();
    let past_layer4 = check.starts_with("L6") || check.starts_with("L7") || check == "L4OK";
    let reset = check == "L4CON" && (said.contains("refused") || said.contains("reset"));
    if past_layer4 || reset {
        ServerSeen::Alive
    } else if check == "L4TOUT" || check == "L4CON" {
        ServerSeen::Silent
    } else {
        ServerSeen::Unknown
    }
}

/// What the witnesses say: per host, and why a load balancer could not be asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Witnesses {
    pub by_host: HashMap<String, Witness>,
    /// Load balancers that could not be asked, with why (`lab: connection refused`).
    pub trouble: Vec<String>,
}

impl Witnesses {
    pub fn of(&self, host: &str) -> Witness {
        self.by_host
            .get(host)
            .cloned()
            .unwrap_or_else(|| Witness::None {
                why: "no server of this host is in a load-balancer pool with health checks".into(),
            })
    }

    /// All the trouble in one line, when there is any.
    pub fn trouble(&self) -> Option<String> {
        (!self.trouble.is_empty()).then(|| self.trouble.join("; "))
    }
}

/// How many servers are named in a host's detail before "and N more".
const NAMED: usize = 4;

/// The witness of every host with pooled servers. `readings`: per load balancer, its members'
/// health (one `show stat`), or why it could not be read. A server missing from the reading of
/// its load balancer is unknown (HAProxy forgets dynamic servers on reload).
pub fn witnesses(
    pooled: &[PooledServer],
    readings: &HashMap<String, Result<Vec<MemberHealth>, String>>,
) -> Witnesses {
    let mut out = Witnesses::default();
    let mut trouble: BTreeMap<&str, &str> = BTreeMap::new();
    // Per host: the servers seen, and the load balancers that could not be asked.
    // (server, how it is seen, in words, whether its load balancer was asked)
    type Sighting<'a> = (&'a str, ServerSeen, String, bool);
    let mut per_host: BTreeMap<&str, (Vec<Sighting>, Vec<String>)> = BTreeMap::new();
    for s in pooled {
        let entry = per_host.entry(s.host.as_str()).or_default();
        match readings.get(&s.lb) {
            Some(Ok(members)) => {
                let m = members
                    .iter()
                    .find(|m| m.pool == s.pool && m.name == s.server);
                let (seen, words) = match m {
                    Some(m) => (
                        classify(&m.status, &m.check, &m.check_said),
                        match (m.check.is_empty(), m.check_said.is_empty()) {
                            (true, _) => m.status.clone(),
                            (false, true) => format!("{} {}", m.status, m.check),
                            (false, false) => {
                                format!("{} {} ({})", m.status, m.check, m.check_said)
                            }
                        },
                    ),
                    None => (ServerSeen::Unknown, "not in its table".to_owned()),
                };
                entry.0.push((s.server.as_str(), seen, words, true));
            }
            Some(Err(why)) => {
                trouble.insert(s.lb.as_str(), why.as_str());
                entry.0.push((
                    s.server.as_str(),
                    ServerSeen::Unknown,
                    "not asked".into(),
                    false,
                ));
                entry
                    .1
                    .push(format!("load balancer {} could not be asked: {why}", s.lb));
            }
            None => {
                trouble.insert(s.lb.as_str(), "it was not read");
                entry.0.push((
                    s.server.as_str(),
                    ServerSeen::Unknown,
                    "not asked".into(),
                    false,
                ));
                entry.1.push(format!("load balancer {} was not read", s.lb));
            }
        }
    }
    for (host, (servers, unasked)) in per_host {
        let witness = if servers.iter().all(|(_, _, _, asked)| !asked) {
            let mut why = unasked;
            why.dedup();
            Witness::None {
                why: why.join("; "),
            }
        } else {
            let mut seen = Seen::default();
            for (_, s, _, _) in &servers {
                match s {
                    ServerSeen::Alive => seen.alive += 1,
                    ServerSeen::Silent => seen.silent += 1,
                    ServerSeen::Maint => seen.maint += 1,
                    ServerSeen::Unknown => seen.unknown += 1,
                }
            }
            let mut words: Vec<String> = servers
                .iter()
                .take(NAMED)
                .map(|(name, _, w, _)| format!("{name} {w}"))
                .collect();
            if servers.len() > NAMED {
                words.push(format!("and {} more", servers.len() - NAMED));
            }
            seen.words = words.join(", ");
            Witness::Seen(seen)
        };
        out.by_host.insert(host.to_owned(), witness);
    }
    out.trouble = trouble
        .into_iter()
        .map(|(lb, why)| format!("{lb}: {why}"))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled(server: &str, host: &str, lb: &str) -> PooledServer {
        PooledServer {
            server: server.into(),
            host: host.into(),
            lb: lb.into(),
            pool: "be_web".into(),
        }
    }

    fn member(name: &str, status: &str, check: &str) -> MemberHealth {
        let said = match check {
            "L4CON" => "No route to host",
            "L4TOUT" => "",
            _ => "",
        };
        MemberHealth {
            pool: "be_web".into(),
            name: name.into(),
            status: status.into(),
            check: check.into(),
            check_said: said.into(),
        }
    }

    #[test]
    fn any_answer_from_a_guest_means_alive_and_only_silence_counts() {
        use ServerSeen::*;
        // Checks that pass, or passed a moment ago.
        assert_eq!(classify("UP", "L7OK", ""), Alive);
        assert_eq!(classify("UP 1/2", "L4TOUT", ""), Alive, "still up");
        assert_eq!(classify("DRAIN", "L7OK", ""), Alive);
        assert_eq!(classify("NOLB", "L7OK", ""), Alive);
        // The guest's kernel answered the connection with a reset: it runs.
        assert_eq!(classify("DOWN", "L4CON", "Connection refused"), Alive);
        assert_eq!(classify("DOWN 1/2", "L4CON", "Connection refused"), Alive);
        assert_eq!(classify("DOWN", "L4CON", "Connection reset by peer"), Alive);
        // Past layer 4: TLS or HTTP failures, a wrong status, a layer-7 time-out after the
        // connection was accepted.
        assert_eq!(classify("DOWN", "L6RSP", "SSL handshake failure"), Alive);
        assert_eq!(classify("DOWN", "L6TOUT", ""), Alive);
        assert_eq!(classify("DOWN", "L7STS", "Internal Server Error"), Alive);
        assert_eq!(classify("DOWN", "L7RSP", "Invalid response"), Alive);
        assert_eq!(classify("DOWN", "L7TOUT", ""), Alive);
        assert_eq!(classify("DOWN", "L4OK", ""), Alive);
        // Silence: no answer in time, nobody answering ARP.
        assert_eq!(classify("DOWN", "L4TOUT", ""), Silent);
        assert_eq!(classify("DOWN", "L4CON", "No route to host"), Silent);
        assert_eq!(classify("DOWN", "L4CON", "Network is unreachable"), Silent);
        assert_eq!(classify("DOWN", "L4CON", ""), Silent);
        // No evidence either way.
        assert_eq!(classify("DOWN", "SOCKERR", "Socket error"), Unknown);
        assert_eq!(classify("DOWN", "INI", ""), Unknown);
        assert_eq!(classify("DOWN", "", ""), Unknown);
        assert_eq!(classify("MAINT", "", ""), Maint);
        assert_eq!(classify("MAINT (resolution)", "", ""), Maint);
        assert_eq!(classify("no check", "", ""), Unknown);
        assert_eq!(classify("", "", ""), Unknown);
    }

    #[test]
    fn each_host_is_witnessed_by_its_own_servers() {
        let servers = [
            pooled("web-1", "h1", "lab"),
            pooled("web-2", "h2", "lab"),
            pooled("web-3", "h1", "lab"),
            pooled("web-4", "h2", "lab"),
        ];
        let readings = HashMap::from([(
            "lab".to_owned(),
            Ok(vec![
                member("web-1", "UP", "L7OK"),
                member("web-2", "DOWN", "L4TOUT"),
                member("web-3", "UP", "L7OK"),
                member("web-4", "DOWN", "L4CON"),
                // Another unit's server of the same name in another pool is not ours.
                MemberHealth {
                    pool: "be_other".into(),
                    ..member("web-2", "UP", "L7OK")
                },
            ]),
        )]);
        let w = witnesses(&servers, &readings);
        assert!(w.trouble().is_none());
        match w.of("h2") {
            Witness::Seen(s) => {
                assert!(s.all_silent(), "{s:?}");
                assert_eq!(
                    s.words,
                    "web-2 DOWN L4TOUT, web-4 DOWN L4CON (No route to host)"
                );
            }
            other => panic!("{other:?}"),
        }
        match w.of("h1") {
            Witness::Seen(s) => assert_eq!((s.alive, s.silent), (2, 0)),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(w.of("h3"), Witness::None { why } if why.contains("no server of this host"))
        );
    }

    #[test]
    fn a_server_the_lb_forgot_is_unknown_and_an_unreadable_lb_is_no_witness() {
        let servers = [pooled("web-1", "h1", "lab"), pooled("web-2", "h1", "lab")];
        // A reload lost web-2: one down and one unknown is not "all down".
        let readings = HashMap::from([(
            "lab".to_owned(),
            Ok(vec![member("web-1", "DOWN", "L4TOUT")]),
        )]);
        match witnesses(&servers, &readings).of("h1") {
            Witness::Seen(s) => {
                assert_eq!((s.silent, s.unknown), (1, 1));
                assert!(!s.all_silent());
                assert!(s.words.contains("web-2 not in its table"), "{}", s.words);
            }
            other => panic!("{other:?}"),
        }
        let gone = HashMap::from([(
            "lab".to_owned(),
            Err("cannot reach the load balancer at unix:/x".to_owned()),
        )]);
        let w = witnesses(&servers, &gone);
        assert_eq!(
            w.trouble().as_deref(),
            Some("lab: cannot reach the load balancer at unix:/x")
        );
        assert!(
            matches!(w.of("h1"), Witness::None { why } if why == "load balancer lab could not be asked: cannot reach the load balancer at unix:/x"),
            "{:?}",
            w.of("h1")
        );
    }

    #[test]
    fn long_lists_are_shortened() {
        let servers: Vec<PooledServer> = (1..=7)
            .map(|i| pooled(&format!("web-{i}"), "h1", "lab"))
            .collect();
        let readings = HashMap::from([(
            "lab".to_owned(),
            Ok((1..=7)
                .map(|i| member(&format!("web-{i}"), "DOWN", "L4TOUT"))
                .collect()),
        )]);
        match witnesses(&servers, &readings).of("h1") {
            Witness::Seen(s) => {
                assert_eq!(s.silent, 7);
                assert!(s.words.ends_with("and 3 more"), "{}", s.words);
            }
            other => panic!("{other:?}"),
        }
    }
}
