//! What both front doors ask for, merged with defaults and current values once.
//!
//! The CLI and the desktop commands parse their own input (flags, form fields) and then build
//! one of these requests; the merging of given values over the unit's policy, the
//! definition's size or the host's settings, and the mapping of a build source, a virt type
//! and a firmware name, happen here and nowhere else. A third front door calls the same.

use super::builder::BuildFrom;
use super::images::BootInput;
use super::{Engine, OpError};
use crate::model::{Builder, DomainType, Firmware, Host, RolloutPolicy, ServerSize};
use serde::Serialize;
use std::path::PathBuf;

/// Changes to a unit's rollout policy: what is given replaces the unit's value, the rest is
/// kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyChange {
    pub max_unavailable: Option<u32>,
    pub min_in_service: Option<u32>,
    pub min_healthy_s: Option<u32>,
    pub drain_timeout_s: Option<u32>,
    pub health_timeout_s: Option<u32>,
    pub rollout_deadline_s: Option<u32>,
    /// `Some(false)`: undo only a server that fails its gate; `Some(true)`: every server that
    /// changed goes back.
    pub auto_rollback: Option<bool>,
    pub max_failed_requests: Option<u64>,
    pub auto_recover_per_day: Option<u32>,
    pub isolation_timeout_s: Option<u32>,
    pub isolation_address: Option<String>,
}

impl PolicyChange {
    /// Whether anything is changed at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The unit's policy with these changes over it; `None` when nothing is given.
    pub fn over(&self, unit: &RolloutPolicy) -> Option<RolloutPolicy> {
        (!self.is_empty()).then(|| RolloutPolicy {
            max_unavailable: self.max_unavailable.unwrap_or(unit.max_unavailable),
            min_in_service: self.min_in_service.or(unit.min_in_service),
            min_healthy_s: self.min_healthy_s.unwrap_or(unit.min_healthy_s),
            drain_timeout_s: self.drain_timeout_s.unwrap_or(unit.drain_timeout_s),
            health_timeout_s: self.health_timeout_s.unwrap_or(unit.health_timeout_s),
            rollout_deadline_s: self.rollout_deadline_s.unwrap_or(unit.rollout_deadline_s),
            auto_rollback: self.auto_rollback.unwrap_or(unit.auto_rollback),
            max_failed_requests: self.max_failed_requests.or(unit.max_failed_requests),
            auto_recover_per_day: self
                .auto_recover_per_day
                .unwrap_or(unit.auto_recover_per_day),
            isolation_timeout_s: self.isolation_timeout_s.unwrap_or(unit.isolation_timeout_s),
            isolation_address: self
                .isolation_address
                .clone()
                .unwrap_or_else(|| unit.isolation_address.clone()),
            ..unit.clone()
        })
    }
}

/// A server size where only some values are given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeChange {
    pub cpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_gib: Option<u32>,
}

/// Changes to a host's network settings; `domain_type` `auto` (or empty): what the host's
/// capabilities offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNetworkChange {
    pub network: Option<String>,
    pub gateway: Option<String>,
    pub domain_type: Option<String>,
}

impl HostNetworkChange {
    pub fn is_empty(&self) -> bool {
        self.network.is_none() && self.gateway.is_none() && self.domain_type.is_none()
    }
}

// A builder with where to reach it: what `image build` prints and the Images view lists.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct BuilderView {
    pub builder: Builder,
    /// `127.0.0.1:5900` on the builder's host, while it runs.
    pub console: Option<String>,
    pub host_uri: String,
}

impl Engine {
    /// A builder with its console and its host's URI. An unreachable host must not hide the
    /// builder: its console is then unknown.
    pub async fn builder_view(&self, builder: Builder) -> Result<BuilderView, OpError> {
        let console = self.builder_console(&builder).await.ok().flatten();
        let host_uri = self.host_show(builder.host.as_str())?.uri.to_string();
        Ok(BuilderView {
            builder,
            console,
            host_uri,
        })
    }

    /// The size a new unit of `definition` gets: what is given, the rest from the definition
    /// (as the wizard's first values). `None` when nothing is given: the engine then takes the
    /// definition's size itself.
    pub fn unit_size_with(
        &self,
        definition: &str,
        change: SizeChange,
    ) -> Result<Option<ServerSize>, OpError> {
        if change == SizeChange::default() {
            return Ok(None);
        }
        let d = self.unit_default_size(definition)?;
        Ok(Some(ServerSize {
            cpus: change.cpus.unwrap_or(d.cpus),
            memory_mib: change.memory_mib.unwrap_or(d.memory_mib),
            disk_gib: change.disk_gib.unwrap_or(d.disk_gib),
        }))
    }

    /// Sets a host's network settings: what is given, the rest as stored in `current` (read
    /// here when the caller has not, and only when a value is missing).
    pub fn host_change_network(
        &self,
        name: &str,
        current: Option<&Host>,
        change: &HostNetworkChange,
    ) -> Result<Host, OpError> {
        let read;
        let current = match current {
            Some(h) => Some(h),
            None if change.network.is_some()
                && change.gateway.is_some()
                && change.domain_type.is_some() =>
            {
                None
            }
            None => {
                read = self.host_show(name)?;
                Some(&read)
            }
        };
        let pick = |given: &Option<String>, stored: fn(&Host) -> &String| {
            given
                .clone()
                .or_else(|| current.map(|h| stored(h).clone()))
                .unwrap_or_default()
        };
        let dt = pick(&change.domain_type, |h| &h.domain_type);
        self.host_set_network(
            name,
            &pick(&change.network, |h| &h.network),
            &pick(&change.gateway, |h| &h.gateway),
            if dt == "auto" { "" } else { &dt },
        )
    }
}

/// Where a builder starts: a library version (`NAME` or `NAME:VERSION`) before an installer
/// ISO; `None` when neither is given (each door says which of its fields to fill).
pub fn build_from(from: Option<String>, iso: Option<PathBuf>) -> Option<BuildFrom> {
    match (from, iso) {
        (Some(f), _) => Some(BuildFrom::Version(f)),
        (None, Some(iso)) => Some(BuildFrom::Iso(iso)),
        (None, None) => None,
    }
}

/// A builder's virtualization by name: `kvm`, else software emulation (`qemu`).
pub fn builder_domain_type(virt_type: &str) -> DomainType {
    if virt_type == "kvm" {
        DomainType::Kvm
    } else {
        DomainType::Qemu
    }
}

/// A firmware by name: `uefi`, else BIOS.
pub fn firmware_named(firmware: &str) -> Firmware {
    match firmware {
        "uefi" => Firmware::Uefi,
        _ => Firmware::Bios,
    }
}

/// How an imported image boots: its kernel directly when one is given, else its disk with
/// `firmware`.
pub fn boot_input(
    firmware: &str,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
) -> BootInput {
    match kernel {
        Some(kernel) => BootInput::Kernel {
            kernel,
            initrd,
            cmdline: cmdline.unwrap_or_default(),
        },
        None => BootInput::Disk(firmware_named(firmware)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_change_keeps_what_is_not_given() {
        let unit = RolloutPolicy {
            max_unavailable: 2,
            auto_rollback: true,
            isolation_address: "10.0.0.1".into(),
            ..RolloutPolicy::default()
        };
        assert_eq!(PolicyChange::default().over(&unit), None);
        let p = PolicyChange {
            drain_timeout_s: Some(7),
            auto_rollback: Some(false),
            ..PolicyChange::default()
        }
        .over(&unit)
        .unwrap();
        assert_eq!(p.max_unavailable, 2);
        assert_eq!(p.drain_timeout_s, 7);
        assert!(!p.auto_rollback);
        assert_eq!(p.isolation_address, "10.0.0.1");
    }

    #[test]
    fn names_map_to_one_value_each() {
        assert_eq!(builder_domain_type("kvm"), DomainType::Kvm);
        assert_eq!(builder_domain_type("qemu"), DomainType::Qemu);
        assert_eq!(firmware_named("uefi"), Firmware::Uefi);
        assert_eq!(firmware_named("bios"), Firmware::Bios);
        assert!(build_from(None, None).is_none());
        assert!(matches!(
            build_from(Some("deb".into()), Some("x.iso".into())),
            Some(BuildFrom::Version(v)) if v == "deb"
        ));
        assert!(matches!(
            boot_input("uefi", None, None, None),
            BootInput::Disk(Firmware::Uefi)
        ));
    }
}
