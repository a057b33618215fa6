//! Domain types and their validation. Pure: no I/O.
//!
//! Every value that crosses a front door (CLI argument, wizard field, definition file) is
//! parsed into one of these types first; an invalid value never reaches the engine.

mod bmc;
pub mod definition;
mod domain_type;
mod host;
mod image;
mod lb;
mod name;
mod net;
mod redact;
pub mod search;
mod unit;
mod uri;

pub use bmc::{
    secret_from_text, BmcSettings, BmcUrl, BmcUser, Secret, SecretPlace, SystemId, MAX_SECRET,
    MAX_URL,
};
pub use domain_type::DomainType;
pub use host::{
    BridgeCheck, FenceMethod, Host, HostFacts, HostFence, HostMonitor, HostState, HostStatus,
    PoolFacts,
};
pub use image::{
    BootMode, Builder, Firmware, ImageName, ImageRef, ImageVersion, ImageVersionCopy,
    NewImageVersion,
};
pub use lb::LbKind;
pub use name::{BridgeName, HostName, PoolName};
pub use net::{Ipv4Cidr, MacAddr};
pub use redact::redact;
pub use unit::{
    check_server_address, parse_isolation_address, AddressRange, NamePattern, RolloutPolicy,
    ServerSize, ServerState, MAX_SERVERS,
};
pub use uri::LibvirtUri;

/// Why a value was refused. The message names the field, the value (shortened) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    pub field: &'static str,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// Shows a user-supplied value inside an error message without flooding it: at most 60
/// characters, control characters escaped.
pub fn quote_input(value: &str) -> String {
    const MAX: usize = 60;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let total = value.chars().count();
    if total > MAX {
        out.push_str(&format!("… ({total} characters)"));
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::quote_input;

    #[test]
    fn quote_input_shortens_and_escapes() {
        assert_eq!(quote_input("h1"), "\"h1\"");
        assert_eq!(quote_input("a\nb\0"), "\"a\\nb\\u{0}\"");
        let long = "x".repeat(500);
        let q = quote_input(&long);
        assert!(q.len() < 100, "a 500-character input must be cut: {q}");
        assert!(q.contains("(500 characters)"));
    }
}
