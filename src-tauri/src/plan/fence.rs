//! Which fence stands between a lost host and the re-creation of its servers elsewhere.
//!
//! A recovery starts a second copy of a server (same name, MAC and address) on another host.
//! "Not answering" is not "dead": a host cut off from the admin side and the load balancer
//! may still run its guests. So a server is re-created only once its old copy is known to be
//! off, by one of:
//! - a fence **recorded** during this loss of the host (an earlier recovery powered it off, or
//!   the admin confirmed it);
//! - the admin's **confirmation** given with this recovery (`--host-is-off`, or typing the
//!   host's name in the dialog);
//! - **power** fencing through the host's BMC (Redfish `ForceOff`, the power state read back);
//! - the guest's **isolation** response: it powers itself off `isolation_s` after it lost its
//!   load balancer, so the recovery waits that long plus [`ISOLATION_MARGIN`] since the host
//!   was last seen alive.
//!
//! Otherwise there is **no fence**: the recovery waits for the admin's confirmation. Automatic
//! recovery never confirms anything itself.

use serde::Serialize;
use std::time::Duration;

/// Added to a guest's isolation time before its copy counts as off: its watchdog checks every
/// 2 s, runs the stop hook (at most 10 s) and powers off (a few seconds); the rest covers the
/// gap between the host's last sighting and the guest's own last contact.
pub const ISOLATION_MARGIN: Duration = Duration::from_secs(20);

/// What is known about one server of a lost host.
#[derive(Debug, Clone, Default)]
pub struct FenceFacts<'a> {
    pub host: &'a str,
    /// A fence recorded during this loss of the host: how, and by whom.
    pub recorded: Option<(&'a str, &'a str)>,
    /// Who confirmed, with this recovery, that the host is off.
    pub confirmed_by: Option<&'a str>,
    /// The host's BMC, in words (`https://10.0.0.5, system 1`), when it has one.
    pub bmc: Option<&'a str>,
    /// The isolation response the server's guest was given (seconds); 0: none.
    pub isolation_s: u32,
    /// Seconds the unit's policy asks for now (the guest may not have it yet).
    pub policy_isolation_s: u32,
    /// How long ago the host was last seen alive; `None`: never seen by a monitor.
    pub last_seen_ago: Option<Duration>,
}

/// The fence a server gets before it is re-created elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fence {
    /// Known off already, during this loss of its host.
    Recorded { method: String, by: String },
    /// The admin confirmed with this recovery that the host is off.
    Confirmed { by: String },
    /// Its host is powered off through its BMC first.
    Power { bmc: String },
    /// Its guest powers itself off `isolation_s` after it lost its load balancer; the
    /// recovery waits `wait_s` more (0: the time has passed).
    Isolation { isolation_s: u32, wait_s: u64 },
    /// Nothing proves it is off: the recovery waits for the admin's confirmation.
    None { why: String },
}

impl Fence {
    /// Whether a recovery may go on without the admin (automatic recovery).
    pub fn automatic(&self) -> bool {
        matches!(
            self,
            Self::Recorded { .. } | Self::Power { .. } | Self::Isolation { .. }
        )
    }

    /// Whether a recovery may go on at all (a confirmation or a fence stands behind it).
    pub fn stands(&self) -> bool {
        !matches!(self, Self::None { .. })
    }

    /// In words, for the plan and the dialog.
    pub fn words(&self, host: &str) -> String {
        match self {
            Self::Recorded { method, by } => {
                format!("{host} is known to be off ({method}: {by})")
            }
            Self::Confirmed { by } => format!("{by} confirms that {host} is off"),
            Self::Power { bmc } => {
                format!("{host} is powered off through its BMC ({bmc}) first, and the power state read back as Off")
            }
            Self::Isolation {
                isolation_s,
                wait_s: 0,
            } => format!(
                "its guest powers itself off {isolation_s} s after it loses its load balancer: that time has passed since {host} was last seen"
            ),
            Self::Isolation {
                isolation_s,
                wait_s,
            } => format!(
                "its guest powers itself off {isolation_s} s after it loses its load balancer: the recovery waits {wait_s} s more for it"
            ),
            Self::None { why } => format!(
                "no fence: {why}; it is re-created only once you confirm that {host} is off (powered off or disconnected)"
            ),
        }
    }
}

/// The fence for one server (see the module).
pub fn fence_for(f: &FenceFacts) -> Fence {
    if let Some((method, by)) = f.recorded {
        return Fence::Recorded {
            method: method.to_owned(),
            by: by.to_owned(),
        };
    }
    if let Some(by) = f.confirmed_by {
        return Fence::Confirmed { by: by.to_owned() };
    }
    if let Some(bmc) = f.bmc {
        return Fence::Power {
            bmc: bmc.to_owned(),
        };
    }
    if f.isolation_s > 0 {
        if let Some(ago) = f.last_seen_ago {
            let needed = Duration::from_secs(u64::from(f.isolation_s)) + ISOLATION_MARGIN;
            return Fence::Isolation {
                isolation_s: f.isolation_s,
                wait_s: needed.saturating_sub(ago).as_secs_f64().ceil() as u64,
            };
        }
    }
    // Here the guest has no isolation time, or the host's last sighting is unknown.
    let isolation = if f.isolation_s > 0 {
        format!(
            "no monitor saw {} alive, so its guest's isolation time cannot be counted",
            f.host
        )
    } else if f.policy_isolation_s > 0 {
        "its guest was deployed before the unit's isolation response was turned on (a rollout or a restart with a new seed gives it one)".to_owned()
    } else {
        "the unit's guests have no isolation response".to_owned()
    };
    Fence::None {
        why: format!("{} has no BMC for power fencing and {isolation}", f.host),
    }
}

/// Why an automatic recovery of these servers waits for the admin, or `None` when every server
/// has a fence it can act on alone. `fences`: (server, host, fence).
pub fn automatic_refusal(fences: &[(String, String, Fence)]) -> Option<String> {
    let waiting: Vec<String> = fences
        .iter()
        .filter(|(_, _, f)| !f.automatic())
        .map(|(s, h, f)| format!("{s} on {h}: {}", f.words(h)))
        .collect();
    (!waiting.is_empty()).then(|| {
        format!(
            "an automatic recovery needs a fence for every server and waits for the admin: {}",
            waiting.join("; ")
        )
    })
}

/// Why a recovery of these servers must not start (some have no fence and no confirmation),
/// with what the admin can do; `None` when every server has one.
pub fn manual_refusal(unit: &str, fences: &[(String, String, Fence)]) -> Option<String> {
    let mut hosts: Vec<&str> = fences
        .iter()
        .filter(|(_, _, f)| !f.stands())
        .map(|(_, h, _)| h.as_str())
        .collect();
    if hosts.is_empty() {
        return None;
    }
    hosts.sort_unstable();
    hosts.dedup();
    let servers: Vec<String> = fences
        .iter()
        .filter(|(_, _, f)| !f.stands())
        .map(|(s, h, f)| format!("{s} on {h} ({})", f.words(h)))
        .collect();
    Some(format!(
        "the recovery waits: a lost host may still run its servers (cut off, not dead), and re-creating them now could run them twice — {}. If you know {} off, confirm it: flotillactl unit recover {unit}{} (or type the host's name in the Recover dialog); or give the host a BMC (flotillactl host set HOST --bmc …)",
        servers.join("; "),
        if hosts.len() == 1 {
            format!("{} is", hosts[0])
        } else {
            format!("{} are", hosts.join(", "))
        },
        hosts
            .iter()
            .map(|h| format!(" --host-is-off {h}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> FenceFacts<'static> {
        FenceFacts {
            host: "h2",
            last_seen_ago: Some(Duration::from_secs(5)),
            ..FenceFacts::default()
        }
    }

    #[test]
    fn without_bmc_isolation_or_confirmation_there_is_no_fence() {
        let f = fence_for(&facts());
        assert!(!f.stands() && !f.automatic(), "{f:?}");
        let words = f.words("h2");
        assert!(words.contains("h2 has no BMC"), "{words}");
        assert!(words.contains("no isolation response"), "{words}");
        assert!(words.contains("confirm that h2 is off"), "{words}");
    }

    #[test]
    fn each_kind_of_fence_is_chosen_in_order_of_what_is_known() {
        // The BMC: automatic.
        let f = fence_for(&FenceFacts {
            bmc: Some("https://10.0.0.5, system 1"),
            ..facts()
        });
        assert_eq!(
            f,
            Fence::Power {
                bmc: "https://10.0.0.5, system 1".into()
            }
        );
        assert!(f.automatic());
        // A confirmation given now wins over the BMC (nothing needs powering off), but an
        // automatic recovery never has one.
        let f = fence_for(&FenceFacts {
            bmc: Some("b"),
            confirmed_by: Some("alice"),
            ..facts()
        });
        assert_eq!(f, Fence::Confirmed { by: "alice".into() });
        assert!(f.stands() && !f.automatic());
        // Recorded during this loss: nothing more to do.
        let f = fence_for(&FenceFacts {
            recorded: Some(("power", "BMC https://b: ForceOff, Off read back")),
            bmc: Some("b"),
            ..facts()
        });
        assert!(matches!(f, Fence::Recorded { .. }) && f.automatic());
    }

    #[test]
    fn isolation_waits_its_time_plus_the_margin_since_the_host_was_last_seen() {
        let f = fence_for(&FenceFacts {
            isolation_s: 60,
            policy_isolation_s: 60,
            last_seen_ago: Some(Duration::from_secs(30)),
            ..facts()
        });
        assert_eq!(
            f,
            Fence::Isolation {
                isolation_s: 60,
                wait_s: 50
            }
        );
        assert!(f.automatic());
        assert!(
            f.words("h2").contains("waits 50 s more"),
            "{}",
            f.words("h2")
        );
        let f = fence_for(&FenceFacts {
            isolation_s: 60,
            last_seen_ago: Some(Duration::from_secs(81)),
            ..facts()
        });
        assert_eq!(
            f,
            Fence::Isolation {
                isolation_s: 60,
                wait_s: 0
            }
        );
        // A fraction of a second left is waited for, not rounded away.
        let f = fence_for(&FenceFacts {
            isolation_s: 60,
            last_seen_ago: Some(Duration::from_millis(79_500)),
            ..facts()
        });
        assert_eq!(
            f,
            Fence::Isolation {
                isolation_s: 60,
                wait_s: 1
            }
        );
    }

    #[test]
    fn isolation_does_not_count_where_it_cannot_have_acted() {
        // The policy asks for it, but the guest booted without it.
        let f = fence_for(&FenceFacts {
            isolation_s: 0,
            policy_isolation_s: 60,
            ..facts()
        });
        assert!(
            matches!(&f, Fence::None { why } if why.contains("deployed before the unit's isolation response")),
            "{f:?}"
        );
        // No monitor ever saw the host: its last contact is unknown.
        let f = fence_for(&FenceFacts {
            isolation_s: 60,
            last_seen_ago: None,
            ..facts()
        });
        assert!(
            matches!(&f, Fence::None { why } if why.contains("no monitor saw h2 alive")),
            "{f:?}"
        );
    }

    #[test]
    fn refusals_name_the_servers_hosts_and_the_way_on() {
        let none = fence_for(&facts());
        let power = Fence::Power { bmc: "b".into() };
        let fences = vec![
            ("web-1".to_owned(), "h2".to_owned(), none.clone()),
            ("web-2".to_owned(), "h3".to_owned(), power.clone()),
            ("web-3".to_owned(), "h2".to_owned(), none),
        ];
        let why = manual_refusal("shop", &fences).unwrap();
        assert!(why.contains("web-1 on h2"), "{why}");
        assert!(!why.contains("web-2 on h3"), "{why}");
        assert!(
            why.contains("flotillactl unit recover shop --host-is-off h2 "),
            "{why}"
        );
        assert!(why.contains("If you know h2 is off"), "{why}");
        let auto = automatic_refusal(&fences).unwrap();
        assert!(auto.contains("waits for the admin"), "{auto}");
        let confirmed = vec![(
            "web-1".to_owned(),
            "h2".to_owned(),
            Fence::Confirmed { by: "alice".into() },
        )];
        assert_eq!(manual_refusal("shop", &confirmed), None);
        assert!(automatic_refusal(&confirmed).is_some());
        assert_eq!(
            automatic_refusal(&[("web-2".into(), "h3".into(), power)]),
            None
        );
    }
}
