//! `host set NAME --network … --gateway … --domain-type …` (without BMC options).

use crate::error::ApiError;
use crate::ops::requests::HostNetworkChange;
use crate::ops::Engine;
use std::process::ExitCode;

/// `host set NAME --network CIDR --gateway IP --domain-type kvm|qemu|auto`
pub(super) fn set_network(
    engine: &Engine,
    json: bool,
    name: &str,
    network: Option<String>,
    gateway: Option<String>,
    domain_type: Option<String>,
) -> Result<ExitCode, ApiError> {
    let current = engine.host_show(name)?;
    let h = engine.host_change_network(
        name,
        Some(&current),
        &HostNetworkChange {
            network,
            gateway,
            domain_type,
        },
    )?;
    super::output::host_show(json, &h);
    Ok(ExitCode::SUCCESS)
}
