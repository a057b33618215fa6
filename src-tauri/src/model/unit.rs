//! Management units (the brief's 管理単位): the servers that run one business application, the
//! master and definition versions they run, their size, load-balancer binding and rollout
//! policy. Pure: parsing and validation of what an admin types.

use super::{quote_input, HostName, ValidationError};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Most servers one unit may have (and one bulk registration may create).
pub const MAX_SERVERS: u32 = 1000;

/// CPUs, memory and disk of every server of a unit version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerSize {
    pub cpus: u32,
    pub memory_mib: u32,
    /// Disk size in GiB; 0 keeps the master's size.
    pub disk_gib: u32,
}

impl ServerSize {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=256).contains(&self.cpus) {
            return Err(ValidationError::new(
                "cpus",
                format!("{} is not between 1 and 256", self.cpus),
            ));
        }
        if !(64..=4 * 1024 * 1024).contains(&self.memory_mib) {
            return Err(ValidationError::new(
                "memory",
                format!("{} MiB is not between 64 MiB and 4 TiB", self.memory_mib),
            ));
        }
        if self.disk_gib > 64 * 1024 {
            return Err(ValidationError::new(
                "disk",
                format!("{} GiB is more than 64 TiB", self.disk_gib),
            ));
        }
        Ok(())
    }
}

/// How batch operations treat a unit: rollouts, restarts and stops of chosen servers go in
/// batches of `max_unavailable`, never below `min_in_service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(default)]
pub struct RolloutPolicy {
    pub max_unavailable: u32,
    /// Seconds to wait for a draining server's sessions to end.
    pub drain_timeout_s: u32,
    /// Seconds a started server has to pass its health check.
    pub health_timeout_s: u32,
    /// Seconds a server has to shut down after the ACPI request.
    pub shutdown_timeout_s: u32,
    /// Servers that must stay in service during a rollout or restart; none: all but one (at
    /// least one).
    pub min_in_service: Option<u32>,
    /// Seconds an updated server must stay healthy, without a dip, before it is back in
    /// rotation (a dip starts the count again).
    pub min_healthy_s: u32,
    /// Seconds a rollout may take; checked between batches: past it the rollout stops (and
    /// rolls back when `auto_rollback`). 0: no deadline.
    pub rollout_deadline_s: u32,
    /// When a server fails its gate during a rollout, every server that changed goes back to
    /// the last version on which all passed. Off: only the failing server is undone and the
    /// unit stays mixed for the admin to decide.
    pub auto_rollback: bool,
    /// A rollout stops and rolls back once the load balancer counted more failed requests
    /// (5xx answers, broken responses) during it than this. None: no limit.
    pub max_failed_requests: Option<u64>,
    /// Recoveries of this unit Flotilla may start by itself in 24 hours when the monitor finds
    /// one of its hosts failed (`unit recover`, never while the monitor is frozen). 0: none —
    /// the admin recovers.
    pub auto_recover_per_day: u32,
    /// The isolation response (vSphere's, in the guest): a server that cannot reach
    /// `isolation_address` for this many seconds stops its app and powers itself off, so that
    /// a recovery may re-create it elsewhere once that time has passed since its host was last
    /// seen. 0: off. Servers get it with their next seed (deploy, recovery, a rollout that
    /// reboots them).
    pub isolation_timeout_s: u32,
    /// What the guests check: `ADDRESS` or `ADDRESS:PORT` of the load balancer as the guests
    /// reach it; empty: the gateway of their network, port 80. A refused connection counts as
    /// reached (something answered); only silence counts as cut off.
    pub isolation_address: String,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            max_unavailable: 1,
            drain_timeout_s: 30,
            health_timeout_s: 300,
            shutdown_timeout_s: 60,
            min_in_service: None,
            min_healthy_s: 10,
            rollout_deadline_s: 0,
            auto_rollback: true,
            max_failed_requests: None,
            auto_recover_per_day: 0,
            isolation_timeout_s: 0,
            isolation_address: String::new(),
        }
    }
}

impl RolloutPolicy {
    /// The servers that stay in service for a unit of `count` servers.
    pub fn min_in_service_of(&self, count: u32) -> u32 {
        self.min_in_service
            .unwrap_or_else(|| count.saturating_sub(1).max(1))
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let checks: [(&'static str, u32, u32, u32); 8] = [
            ("max-unavailable", self.max_unavailable, 1, MAX_SERVERS),
            ("drain-timeout", self.drain_timeout_s, 0, 86_400),
            ("health-timeout", self.health_timeout_s, 1, 86_400),
            ("shutdown-timeout", self.shutdown_timeout_s, 1, 86_400),
            (
                "min-in-service",
                self.min_in_service.unwrap_or(0),
                0,
                MAX_SERVERS,
            ),
            ("min-healthy-time", self.min_healthy_s, 0, 3_600),
            ("rollout-deadline", self.rollout_deadline_s, 0, 7 * 86_400),
            ("auto-recover-per-day", self.auto_recover_per_day, 0, 100),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("{value} is not between {min} and {max}"),
                ));
            }
        }
        if self.isolation_timeout_s != 0 && !(10..=3_600).contains(&self.isolation_timeout_s) {
            return Err(ValidationError::new(
                "isolation-timeout",
                format!(
                    "{} s is not between 10 and 3600 (or 0: off); shorter would power servers off during an ordinary load-balancer restart",
                    self.isolation_timeout_s
                ),
            ));
        }
        if !self.isolation_address.is_empty() {
            parse_isolation_address(&self.isolation_address)?;
        }
        if self.min_healthy_s >= self.health_timeout_s {
            return Err(ValidationError::new(
                "min-healthy-time",
                format!(
                    "{} s must be shorter than the health timeout ({} s), or no server could ever pass its gate",
                    self.min_healthy_s, self.health_timeout_s
                ),
            ));
        }
        Ok(())
    }
}

/// `ADDRESS` or `ADDRESS:PORT` (IPv4; port 80 when none) that a guest's isolation response
/// checks.
pub fn parse_isolation_address(value: &str) -> Result<(std::net::Ipv4Addr, u16), ValidationError> {
    let bad = || {
        ValidationError::new(
            "isolation-address",
            format!(
                "{:?} is not an IPv4 address, optionally with :PORT (e.g. 10.77.0.1 or 10.77.0.1:80)",
                value.chars().take(64).collect::<String>()
            ),
        )
    };
    if value.len() > 21 {
        return Err(bad());
    }
    let (addr, port) = match value.split_once(':') {
        Some((a, p)) => (a, p.parse::<u16>().map_err(|_| bad())?),
        None => (value, 80),
    };
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if port == 0 || addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(bad());
    }
    Ok((addr, port))
}

/// What Flotilla last made of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Registered; nothing exists on its host yet.
    Planned,
    /// Deployed and started, in the load balancer.
    Running,
    /// Deployed, shut down, out of the load balancer.
    Stopped,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Planned, Self::Running, Self::Stopped]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

/// A server name pattern with one `{n}` (or `{n:0W}` for zero padding to width W):
/// `shop-{n}` → shop-1, shop-2, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    prefix: String,
    suffix: String,
    width: usize,
}

impl NamePattern {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let bad = |why: &str| {
            ValidationError::new("name-pattern", format!("{} {why}", quote_input(value)))
        };
        let start = value
            .find('{')
            .ok_or_else(|| bad("needs {n} where the number goes, like web-{n}"))?;
        let end = value[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| bad("has a '{' without '}'"))?;
        let width = match &value[start + 1..end] {
            "n" => 0,
            spec => spec
                .strip_prefix("n:0")
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| (1..=9).contains(w))
                .ok_or_else(|| bad("may use only {n} or {n:0W} with W from 1 to 9"))?,
        };
        let p = Self {
            prefix: value[..start].to_owned(),
            suffix: value[end + 1..].to_owned(),
            width,
        };
        if p.suffix.contains('{') || p.suffix.contains('}') {
            return Err(bad("may contain only one {n}"));
        }
        // Both ends must make a valid name with a number in the middle.
        HostName::parse(&p.name(1)).map_err(|e| ValidationError::new("name-pattern", e.problem))?;
        HostName::parse(&p.name(MAX_SERVERS))
            .map_err(|e| ValidationError::new("name-pattern", e.problem))?;
        Ok(p)
    }

    pub fn name(&self, n: u32) -> String {
        format!("{}{:0w$}{}", self.prefix, n, self.suffix, w = self.width)
    }

    /// The number in `name` when it matches the pattern.
    pub fn number_of(&self, name: &str) -> Option<u32> {
        let digits = name
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// A range of IPv4 addresses, `10.77.0.11-10.77.0.40` (both ends included) or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddressRange {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "addresses",
                format!(
                    "{} is not an IPv4 address or a range like 10.77.0.11-10.77.0.40",
                    quote_input(value)
                ),
            )
        };
        let (a, b) = value.trim().split_once('-').unwrap_or((value, value));
        let first: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
        if u32::from(last) < u32::from(first) {
            return Err(ValidationError::new(
                "addresses",
                format!("the range {value} ends before it starts"),
            ));
        }
        Ok(Self { first, last })
    }

    pub fn iter(self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An address a server may use on a network: not the network or broadcast address, not the
/// gateway.
pub fn check_server_address(
    address: Ipv4Addr,
    network: super::Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
) -> Result<(), ValidationError> {
    if !network.contains(address) {
        return Err(ValidationError::new(
            "address",
            format!("{address} is outside the host's network {network}"),
        ));
    }
    let host_bits = 32 - u32::from(network.prefix());
    if host_bits >= 2 {
        let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
        let a = u32::from(address);
        if a & !mask == 0 || a & !mask == !mask {
            return Err(ValidationError::new(
                "address",
                format!("{address} is the network or broadcast address of {network}"),
            ));
        }
    }
    if gateway == Some(address) {
        return Err(ValidationError::new(
            "address",
            format!("{address} is the network's gateway"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ipv4Cidr;

    #[test]
    fn name_patterns() {
        let p = NamePattern::parse("shop-{n}").unwrap();
        assert_eq!(p.name(7), "shop-7");
        assert_eq!(p.number_of("shop-12"), Some(12));
        assert_eq!(p.number_of("shop-x"), None);
        assert_eq!(p.number_of("other-1"), None);
        let p = NamePattern::parse("web{n:03}-a").unwrap();
        assert_eq!(p.name(7), "web007-a");
        assert_eq!(p.number_of("web012-a"), Some(12));
        for bad in [
            "",
            "web",
            "web-{",
            "web-{x}",
            "web-{n}-{n}",
            "Web-{n}",
            "web_{n}",
            "web-{n:0}",
            "web-{n:10}",
            &format!("{}{{n}}", "a".repeat(62)),
            "{n}-",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn address_ranges() {
        let r = AddressRange::parse("10.77.0.11-10.77.0.13").unwrap();
        assert_eq!(
            r.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
        );
        assert_eq!(AddressRange::parse("10.0.0.5").unwrap().iter().count(), 1);
        let all = AddressRange::parse("0.0.0.0-255.255.255.255").unwrap();
        assert_eq!(
            (all.first, all.last),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
        );
        for bad in ["", "10.0.0.9-10.0.0.1", "10.0.0.1-", "x", "10.0.0.1/24"] {
            assert!(AddressRange::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_addresses_are_checked_against_the_network() {
        let net = Ipv4Cidr::parse("10.77.0.0/24").unwrap();
        let gw = Some("10.77.0.1".parse().unwrap());
        assert!(check_server_address("10.77.0.11".parse().unwrap(), net, gw).is_ok());
        for bad in ["10.77.1.11", "10.77.0.0", "10.77.0.255", "10.77.0.1"] {
            assert!(
                check_server_address(bad.parse().unwrap(), net, gw).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_and_policies_have_bounds() {
        let ok = ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        };
        assert!(ok.validate().is_ok());
        assert!(ServerSize { cpus: 0, ..ok }.validate().is_err());
        assert!(ServerSize {
            memory_mib: 1,
            ..ok
        }
        .validate()
        .is_err());
        assert!(RolloutPolicy::default().validate().is_ok());
        assert!(RolloutPolicy {
            max_unavailable: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
