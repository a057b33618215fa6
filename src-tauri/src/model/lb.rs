//! Load-balancer kinds.

use serde::{Deserialize, Serialize};

/// Which API a registered load balancer speaks. Stored and serialized as `haproxy` or `caddy`
/// (the inventory's `lbs.kind`, the GUI's `LbInstance.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum LbKind {
    /// HAProxy's runtime API (a Unix socket or TCP address).
    Haproxy,
    /// Caddy's admin API and one reverse_proxy handler.
    Caddy,
}

impl LbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Haproxy => "haproxy",
            Self::Caddy => "caddy",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Haproxy, Self::Caddy]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// Compares with the stored name (`kind == "caddy"`), as tests and front ends read it.
impl PartialEq<&str> for LbKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for LbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_reads_back_as_it_is_stored_and_serialized() {
        for k in [LbKind::Haproxy, LbKind::Caddy] {
            assert_eq!(LbKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(LbKind::parse("nginx"), None);
        assert_eq!(LbKind::Caddy, "caddy");
    }
}
