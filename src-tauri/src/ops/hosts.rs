//! Registering and checking hosts.
//!
//! `host_add`: validate input → refuse a taken name early → connect and read facts → refuse a
//! host without the pool or bridge → insert. Every failure happens before the insert, so a
//! failed add stores nothing (only an audit entry saying it failed).

use super::{Engine, OpError};
use crate::inventory::{InventoryError, NewHost};
use crate::model::{
    quote_input, BridgeName, Host, HostFacts, HostName, HostStatus, Ipv4Cidr, LibvirtUri, PoolName,
    ValidationError,
};
use serde::Serialize;
use std::net::Ipv4Addr;

/// What the user typed to add a host. Empty pool or bridge means the default.
#[derive(Debug, Clone, Default)]
pub struct HostInput {
    pub name: String,
    pub uri: String,
    pub pool: Option<String>,
    pub bridge: Option<String>,
    /// For a `qemu+ssh://` host whose key Flotilla does not trust yet: the SHA256 fingerprint
    /// the admin checked and accepts. Stored only when the host presents exactly that key.
    pub accept_host_key: Option<String>,
}

/// Validated connection settings of a host.
#[derive(Debug, Clone)]
pub struct HostTarget {
    pub uri: LibvirtUri,
    pub pool: PoolName,
    pub bridge: BridgeName,
}

impl HostTarget {
    pub fn parse(uri: &str, pool: Option<&str>, bridge: Option<&str>) -> Result<Self, OpError> {
        let or_default = |v: Option<&str>, d: &'static str| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .unwrap_or(d)
                .to_owned()
        };
        Ok(Self {
            uri: LibvirtUri::parse(uri.trim())?,
            pool: PoolName::parse(&or_default(pool, PoolName::DEFAULT))?,
            bridge: BridgeName::parse(&or_default(bridge, BridgeName::DEFAULT))?,
        })
    }
}

/// Whether Flotilla trusts the SSH host key a host presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum HostKeyState {
    Known,
    Unknown,
    Changed,
}

/// The SSH host key a host presents, for the Add host wizard's fingerprint step.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostKeyInfo {
    /// The name the key is filed under (`host`, or `[host]:port`).
    pub host: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub key_type: String,
    /// As `ssh` prints it: `SHA256:…`.
    pub fingerprint: String,
    pub state: HostKeyState,
    /// For a changed key: the fingerprint Flotilla trusts.
    // (A key marked `@revoked` is shown as changed; this then says why no key is trusted.)
    pub trusted: Option<String>,
    /// Flotilla's known-hosts file.
    pub known_hosts: String,
}

/// What "Test connection" shows: the facts, and what would stop the host from being added.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct HostProbe {
    pub facts: HostFacts,
    pub problems: Vec<String>,
}

impl Engine {
    /// Flotilla's own known-hosts file (in the data directory).
    pub fn known_hosts(&self) -> crate::hostkeys::KnownHosts {
        crate::hostkeys::KnownHosts::in_data_dir(self.data_dir())
    }

    /// The SSH host key of the host in `uri` and whether it is trusted; `None` when the URI
    /// does not use SSH. Stores nothing.
    pub async fn host_key(&self, uri: &str) -> Result<Option<HostKeyInfo>, OpError> {
        let uri = LibvirtUri::parse(uri.trim())?;
        let Some(target) = crate::hostkeys::SshTarget::of_uri(uri.as_str())? else {
            return Ok(None);
        };
        let presented = scan_key(target.clone()).await?;
        let known = self.known_hosts();
        let (state, key, trusted) = match known.check(&target, presented)? {
            crate::hostkeys::KeyCheck::Known(k) => (HostKeyState::Known, k, None),
            crate::hostkeys::KeyCheck::Unknown(k) => (HostKeyState::Unknown, k, None),
            crate::hostkeys::KeyCheck::Changed {
                presented, trusted, ..
            } => (HostKeyState::Changed, presented, Some(trusted.to_string())),
            // Refused like a changed key (never offered for confirmation).
            crate::hostkeys::KeyCheck::Revoked { presented, line } => {
                let why = format!("none: the key presented is marked @revoked on line {line}");
                (HostKeyState::Changed, presented, Some(why))
            }
        };
        Ok(Some(HostKeyInfo {
            host: target.known_hosts_name(),
            key_type: key.key_type,
            fingerprint: key.fingerprint.to_string(),
            state,
            trusted,
            known_hosts: known.path().display().to_string(),
        }))
    }

    /// Trusts the SSH host key of the host in `uri`, if it presents exactly `fingerprint`
    /// (the admin confirmed it). A changed key is refused; a key already trusted is fine.
    pub async fn host_key_accept(&self, uri: &str, fingerprint: &str) -> Result<(), OpError> {
        let uri = LibvirtUri::parse(uri.trim())?;
        if crate::hostkeys::SshTarget::of_uri(uri.as_str())?.is_none() {
            return Err(ValidationError::new(
                "uri",
                format!(
                    "{} does not use SSH (qemu+ssh:// or qemu+libssh2://); it has no SSH host key to trust",
                    quote_input(uri.as_str())
                ),
            )
            .into());
        }
        let outcome = self.trust_host_key(&uri, Some(fingerprint)).await;
        self.audit("host.accept-key", uri.as_str(), &outcome);
        outcome
    }

    /// For a `+ssh` URI: the key is trusted, or stored now as accepted, or an error says what
    /// the host presented and what to do. Nothing for other transports.
    async fn trust_host_key(
        &self,
        uri: &LibvirtUri,
        accepted: Option<&str>,
    ) -> Result<(), OpError> {
        // A malformed fingerprint is refused before anything goes over the network.
        let accepted = accepted
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(crate::hostkeys::Fingerprint::parse)
            .transpose()?;
        let Some(target) = crate::hostkeys::SshTarget::of_uri(uri.as_str())? else {
            if accepted.is_some() {
                return Err(ValidationError::new(
                    "accept_host_key",
                    format!(
                        "{} does not use SSH (qemu+ssh:// or qemu+libssh2://): there is no host key to accept",
                        quote_input(uri.as_str())
                    ),
                )
                .into());
            }
            return Ok(());
        };
        let presented = scan_key(target.clone()).await?;
        crate::hostkeys::verify_or_accept(
            &self.known_hosts(),
            &target,
            presented,
            accepted.as_ref(),
        )?;
        Ok(())
    }

    /// Connects to a host that is not (necessarily) registered and reports what it found.
    /// Stores nothing.
    pub async fn host_probe(&self, target: &HostTarget) -> Result<HostProbe, OpError> {
        let probe = self.host_probe_keep(target).await;
        self.forget_unless_registered(&target.uri);
        probe
    }

    /// Like `host_probe`, but leaves the connection open (for an add that may follow).
    async fn host_probe_keep(&self, target: &HostTarget) -> Result<HostProbe, OpError> {
        // Over SSH, an untrusted or changed host key is said as such, before libvirt's ssh
        // refuses it with fewer words.
        self.trust_host_key(&target.uri, None).await?;
        let facts = self
            .hypervisor
            .host_facts(&target.uri, &target.pool, &target.bridge)
            .await?;
        let problems = facts.problems(&target.pool, &target.bridge);
        Ok(HostProbe { facts, problems })
    }

    /// Don't keep a connection open to a host nobody registered.
    fn forget_unless_registered(&self, uri: &LibvirtUri) {
        let registered = self
            .inventory
            .host_list()
            .map(|hosts| hosts.iter().any(|h| &h.uri == uri))
            .unwrap_or(false);
        if !registered {
            self.hypervisor.forget(uri);
        }
    }

    pub async fn host_add(&self, input: &HostInput) -> Result<Host, OpError> {
        let target_name = format!("host/{}", input.name);
        let outcome = self.host_add_inner(input).await;
        self.audit("host.add", &target_name, &outcome);
        outcome
    }

    async fn host_add_inner(&self, input: &HostInput) -> Result<Host, OpError> {
        let name = HostName::parse(input.name.trim())?;
        let target = HostTarget::parse(&input.uri, input.pool.as_deref(), input.bridge.as_deref())?;
        // Fail fast, before a possibly slow connection attempt.
        for existing in self.inventory.host_list()? {
            if existing.name == name {
                return Err(InventoryError::Duplicate {
                    kind: "host",
                    name: name.to_string(),
                }
                .into());
            }
            if existing.uri == target.uri {
                return Err(InventoryError::UriTaken {
                    uri: target.uri.to_string(),
                    holder: existing.name.to_string(),
                }
                .into());
            }
        }
        self.trust_host_key(&target.uri, input.accept_host_key.as_deref())
            .await?;
        let uri = target.uri.clone();
        let added = self.host_insert_probed(name, target).await;
        if added.is_err() {
            self.forget_unless_registered(&uri);
        }
        added
    }

    async fn host_insert_probed(
        &self,
        name: HostName,
        target: HostTarget,
    ) -> Result<Host, OpError> {
        let probe = self.host_probe_keep(&target).await?;
        if !probe.problems.is_empty() {
            return Err(OpError::HostNotReady {
                uri: target.uri.to_string(),
                problems: probe.problems,
            });
        }
        Ok(self.inventory.host_insert(&NewHost {
            name,
            uri: target.uri,
            pool: target.pool,
            bridge: target.bridge,
            status: HostStatus::Ok,
            status_detail: String::new(),
            facts: probe.facts,
        })?)
    }

    pub fn host_list(&self) -> Result<Vec<Host>, OpError> {
        let mut hosts = self.inventory.host_list()?;
        let fences = self.inventory.host_fence_list()?;
        let servers = self.inventory.server_list()?;
        for h in &mut hosts {
            Self::fill_fences(h, &fences, &servers);
        }
        Ok(hosts)
    }

    pub fn host_show(&self, name: &str) -> Result<Host, OpError> {
        let mut h = self.inventory.host_get(&HostName::parse(name.trim())?)?;
        let fences = self.inventory.host_fence_list()?;
        let servers = self.inventory.server_list()?;
        Self::fill_fences(&mut h, &fences, &servers);
        Ok(h)
    }

    /// The host's recorded fence, and its servers held out of rotation because it was lost.
    fn fill_fences(
        h: &mut Host,
        fences: &[crate::model::HostFence],
        servers: &[crate::inventory::Server],
    ) {
        h.fence = fences.iter().find(|f| f.host == h.name.as_str()).cloned();
        h.fenced = servers
            .iter()
            .filter(|s| s.host == h.name.as_str() && !s.fenced_at.is_empty())
            .map(|s| s.name.clone())
            .collect();
    }

    /// Connects again and records what was found. An unreachable host is not an error here:
    /// the returned host says `unreachable` and why.
    pub async fn host_check(&self, name: &str) -> Result<Host, OpError> {
        let outcome = self.host_check_inner(name).await;
        self.audit("host.check", &format!("host/{name}"), &outcome);
        outcome
    }

    pub(super) async fn host_check_inner(&self, name: &str) -> Result<Host, OpError> {
        let host = self.host_show(name)?;
        let found = self
            .hypervisor
            .host_facts(&host.uri, &host.pool, &host.bridge)
            .await;
        let updated = match found {
            Ok(facts) => {
                let problems = facts.problems(&host.pool, &host.bridge);
                let status = if problems.is_empty() {
                    HostStatus::Ok
                } else {
                    HostStatus::Degraded
                };
                self.inventory.host_set_check(
                    &host.name,
                    status,
                    &problems.join("; "),
                    Some(&facts),
                )?
            }
            Err(e) => {
                let mut reason = match e.libvirt_reason() {
                    Some(r) => format!("{e}: {r}"),
                    None => e.to_string(),
                };
                // ssh refused the host's key: say whether it is unknown or changed, and what
                // the host presents now.
                if crate::hostkeys::refused_by_ssh(&reason) {
                    if let Err(OpError::HostKey(k)) = self.trust_host_key(&host.uri, None).await {
                        reason = k.to_string();
                    }
                }
                self.inventory
                    .host_set_check(&host.name, HostStatus::Unreachable, &reason, None)?
            }
        };
        Ok(updated)
    }

    /// Sets a host's network (servers' addresses must lie in it), gateway and domain type
    /// override (`kvm`, `qemu`, or empty for what its capabilities offer).
    pub fn host_set_network(
        &self,
        host: &str,
        network: &str,
        gateway: &str,
        domain_type: &str,
    ) -> Result<Host, OpError> {
        let outcome = (|| {
            let name = HostName::parse(host.trim())?;
            let network = network.trim();
            let net = if network.is_empty() {
                None
            } else {
                Some(
                    Ipv4Cidr::parse(network)
                        .map_err(|e| ValidationError::new("network", e.problem))?,
                )
            };
            let gateway = gateway.trim();
            if !gateway.is_empty() {
                let gw: Ipv4Addr = gateway.parse().map_err(|_| {
                    ValidationError::new(
                        "gateway",
                        format!("{} is not an IPv4 address", quote_input(gateway)),
                    )
                })?;
                match net {
                    Some(n) if n.contains(gw) => {}
                    _ => {
                        return Err(ValidationError::new(
                            "gateway",
                            format!("{gw} is outside the network {network}"),
                        )
                        .into())
                    }
                }
            }
            let dt = domain_type.trim();
            if !matches!(dt, "" | "kvm" | "qemu") {
                return Err(ValidationError::new(
                    "domain-type",
                    format!("{} must be kvm, qemu or empty (automatic)", quote_input(dt)),
                )
                .into());
            }
            let servers = self
                .inventory
                .server_list()?
                .into_iter()
                .filter(|s| s.host == name.as_str());
            for s in servers {
                let inside =
                    net.is_some_and(|n| s.address.parse::<Ipv4Addr>().is_ok_and(|a| n.contains(a)));
                if !inside {
                    return Err(ValidationError::new(
                        "network",
                        format!(
                            "server {} on this host has address {}, outside {}",
                            s.name,
                            s.address,
                            if network.is_empty() {
                                "(none)"
                            } else {
                                network
                            }
                        ),
                    )
                    .into());
                }
            }
            let canonical = net.map(|n| n.to_string()).unwrap_or_default();
            self.inventory
                .host_set_network(name.as_str(), &canonical, gateway, dt)?;
            self.host_show(name.as_str())
        })();
        self.audit("host.set", &format!("host/{host}"), &outcome);
        outcome
    }

    /// Unregisters a host. Refused while servers or images on it are in the inventory.
    pub fn host_remove(&self, name: &str) -> Result<(), OpError> {
        let outcome = self.host_remove_inner(name);
        self.audit("host.remove", &format!("host/{name}"), &outcome);
        outcome
    }

    fn host_remove_inner(&self, name: &str) -> Result<(), OpError> {
        let host = self.host_show(name)?;
        self.inventory.host_delete(&host.name)?;
        self.hypervisor.forget(&host.uri);
        // Its BMC password goes with it: the file always (one may be left from a failed
        // set), the Secret Service when a BMC was set.
        match self.secrets().remove(&host.name, host.bmc.is_some()) {
            Ok(None) => {}
            Ok(Some(warning)) => tracing::warn!(host = %host.name, "{warning}"),
            Err(e) => {
                tracing::warn!(host = %host.name, error = %e, "the removed host's BMC password could not be removed")
            }
        }
        Ok(())
    }
}

/// Scans a host's key off the async runtime (ssh-keyscan is a blocking program), bounded.
async fn scan_key(target: crate::hostkeys::SshTarget) -> Result<crate::hostkeys::HostKey, OpError> {
    let host = target.known_hosts_name();
    let scan = tokio::task::spawn_blocking(move || crate::hostkeys::scan(&target));
    match tokio::time::timeout(crate::hostkeys::SCAN_LIMIT, scan).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(e)) => Err(OpError::Timeout(format!(
            "reading the SSH host key of {host} failed: {e}"
        ))),
        Err(_) => Err(OpError::Timeout(format!(
            "{host} did not show its SSH host key within {} s",
            crate::hostkeys::SCAN_LIMIT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, ErrorCode};
    use crate::hypervisor::tests::test_node_uri;
    use crate::hypervisor::HvConfig;
    use crate::inventory::{Actor, AuditResult, Inventory};

    fn engine() -> Engine {
        Engine::with(
            Inventory::open_in_memory().unwrap(),
            HvConfig::default(),
            Actor::new("test"),
            std::path::PathBuf::from("/nonexistent/flotilla-library"),
        )
    }

    fn input(name: &str, uri: &str, bridge: &str) -> HostInput {
        HostInput {
            name: name.into(),
            uri: uri.into(),
            pool: None,
            bridge: Some(bridge.into()),
            accept_host_key: None,
        }
    }

    #[tokio::test]
    async fn add_records_facts_and_status() {
        let e = engine();
        let h = e
            .host_add(&input("h1", test_node_uri().as_str(), "br0"))
            .await
            .unwrap();
        assert_eq!(h.status, HostStatus::Ok);
        assert_eq!(h.pool.as_str(), "default", "the pool defaults to 'default'");
        assert_eq!(h.facts.as_ref().unwrap().cpus, 4);
        assert_eq!(e.host_list().unwrap(), vec![h.clone()]);
        assert_eq!(e.host_show("h1").unwrap(), h);
        let log = e.inventory.audit_list(5).unwrap();
        assert_eq!(log[0].action, "host.add");
        assert_eq!(log[0].target, "host/h1");
        assert_eq!(log[0].result, AuditResult::Ok);
    }

    async fn refused(e: &Engine, i: HostInput) -> ApiError {
        let before = e.host_list().unwrap();
        let err = ApiError::from(e.host_add(&i).await.unwrap_err());
        assert_eq!(
            e.host_list().unwrap(),
            before,
            "a failed add changes no host"
        );
        assert_eq!(
            e.hypervisor.worker_count(),
            before.len(),
            "no connection kept"
        );
        err
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_stores_nothing() {
        let e = engine();
        let good = test_node_uri().to_string();
        let err = refused(&e, input("H1", &good, "br0")).await;
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert!(err.message.starts_with("name:"), "{}", err.message);

        let err = refused(&e, input("h1", "qemu+ssh://[bad/system", "br0")).await;
        assert_eq!(err.code, ErrorCode::InvalidInput);

        let err = refused(&e, input("h1", "test:///nonexistent/node.xml", "br0")).await;
        assert_eq!(err.code, ErrorCode::Unreachable);
        assert!(
            err.message.contains("test:///nonexistent/node.xml"),
            "names the URI: {}",
            err.message
        );
        assert!(
            err.message.contains("failed to parse"),
            "gives libvirt's reason: {}",
            err.message
        );

        let err = refused(&e, input("h1", &good, "nosuchbr")).await;
        assert_eq!(err.code, ErrorCode::HostNotReady);
        assert!(
            err.message.contains("'nosuchbr' does not exist"),
            "{}",
            err.message
        );

        let huge = "h".repeat(100_000);
        let err = refused(&e, input(&huge, &good, "br0")).await;
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert!(err.message.len() < 300);

        let log = e.inventory.audit_list(10).unwrap();
        assert_eq!(log.len(), 5);
        assert!(log.iter().all(|a| a.result == AuditResult::Error));
    }

    #[tokio::test]
    async fn duplicates_are_refused() {
        let e = engine();
        let uri = test_node_uri().to_string();
        e.host_add(&input("h1", &uri, "br0")).await.unwrap();
        let err = refused(&e, input("h1", "test:///elsewhere.xml", "br0")).await;
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        let err = refused(&e, input("h2", &uri, "br0")).await;
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        assert!(
            err.message.contains("'h1'"),
            "says who has the URI: {}",
            err.message
        );
    }

    #[tokio::test]
    async fn check_marks_a_vanished_host_unreachable_and_keeps_its_facts() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/test-node.xml"
            ),
            &node,
        )
        .unwrap();
        let uri = format!("test://{}", node.display());
        let e = engine();
        e.host_add(&input("h1", &uri, "br0")).await.unwrap();
        // The test driver reads its node file on connect: make the next connect fail.
        e.hypervisor.forget(&LibvirtUri::parse(&uri).unwrap());
        std::fs::remove_file(&node).unwrap();
        let h = e.host_check("h1").await.unwrap();
        assert_eq!(h.status, HostStatus::Unreachable);
        assert!(
            h.status_detail.contains("cannot connect"),
            "{}",
            h.status_detail
        );
        assert_eq!(h.facts.unwrap().cpus, 4, "last known facts are kept");
    }

    #[tokio::test]
    async fn remove_and_not_found() {
        let e = engine();
        e.host_add(&input("h1", test_node_uri().as_str(), "virbr0"))
            .await
            .unwrap();
        e.host_remove("h1").unwrap();
        assert!(e.host_list().unwrap().is_empty());
        assert_eq!(e.hypervisor.worker_count(), 0, "the connection is closed");
        let err = ApiError::from(e.host_remove("h1").unwrap_err());
        assert_eq!(err.code, ErrorCode::NotFound);
        let err = ApiError::from(e.host_check("nope").await.unwrap_err());
        assert_eq!(err.code, ErrorCode::NotFound);
    }
}
