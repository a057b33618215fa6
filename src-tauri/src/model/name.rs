//! Names of things in the inventory and on hosts.

use super::{quote_input, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A host's name in Flotilla: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`
/// (a DNS label, so it can appear in generated hostnames and domain names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "desktop", derive(specta::Type), specta(transparent))]
pub struct HostName(String);

impl HostName {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        check_label("name", value)?;
        Ok(Self(value.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_label(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(ValidationError::new(
            field,
            format!(
                "{} is {} characters long; at most 63 are allowed",
                quote_input(value),
                value.chars().count()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "{} contains {}; use only lowercase letters a-z, digits and '-'",
                quote_input(value),
                quote_input(&bad.to_string())
            ),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(ValidationError::new(
            field,
            format!("{} must not start or end with '-'", quote_input(value)),
        ));
    }
    Ok(())
}

/// Generic libvirt object name (storage pool, bridge): printable, no '/', bounded length.
fn check_object_name(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{} is too long; at most {max} bytes", quote_input(value)),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(ValidationError::new(
            field,
            format!(
                "{} contains {}; use letters, digits, '-', '_', '.', ':' or '@'",
                quote_input(value),
                quote_input(&bad.to_string())
            ),
        ));
    }
    if value == "." || value == ".." {
        return Err(ValidationError::new(field, "must not be '.' or '..'"));
    }
    Ok(())
}

/// Name of a libvirt storage pool on a host (`default` unless told otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "desktop", derive(specta::Type), specta(transparent))]
pub struct PoolName(String);

impl PoolName {
    pub const DEFAULT: &'static str = "default";
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        check_object_name("pool", value, 128)?;
        Ok(Self(value.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Name of the Linux bridge guests attach to (`virbr0`, libvirt's default network, unless told
/// otherwise). Linux limits interface names to 15 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "desktop", derive(specta::Type), specta(transparent))]
pub struct BridgeName(String);

impl BridgeName {
    pub const DEFAULT: &'static str = "virbr0";
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        check_object_name("bridge", value, 15)?;
        if value.contains(':') || value.contains('@') {
            return Err(ValidationError::new(
                "bridge",
                format!("{} is not a Linux interface name", quote_input(value)),
            ));
        }
        Ok(Self(value.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($($t:ident),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
    )*};
}
string_newtype_impls!(HostName, PoolName, BridgeName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_dns_label_rules() {
        for ok in ["h1", "a", "web-01", &"a".repeat(63), "0"] {
            assert!(HostName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "H1",
            "h_1",
            "h.1",
            "-h1",
            "h1-",
            "h 1",
            "h1\n",
            "hé",
            "../h1",
            "h1;rm -rf /",
            &"a".repeat(64),
        ] {
            let err = HostName::parse(bad).expect_err(bad);
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn host_name_error_says_what_is_wrong() {
        let err = HostName::parse("Web1").unwrap_err().to_string();
        assert!(err.contains("\"W\""), "names the bad character: {err}");
        assert!(err.contains("lowercase"), "says the rule: {err}");
        let err = HostName::parse(&"x".repeat(300)).unwrap_err().to_string();
        assert!(err.contains("300 characters"), "{err}");
        assert!(
            err.len() < 200,
            "a huge input must not flood the message: {err}"
        );
    }

    #[test]
    fn pool_and_bridge_names() {
        assert!(PoolName::parse("default").is_ok());
        assert!(PoolName::parse("lab-pool_1.x").is_ok());
        assert!(PoolName::parse("../etc").is_err());
        assert!(PoolName::parse("a/b").is_err());
        assert!(PoolName::parse("..").is_err());
        assert!(PoolName::parse("").is_err());
        assert!(BridgeName::parse("br0").is_ok());
        assert!(BridgeName::parse("virbr0").is_ok());
        assert!(
            BridgeName::parse("a-very-long-bridge").is_err(),
            "over 15 bytes"
        );
        assert!(BridgeName::parse("br 0").is_err());
        assert!(BridgeName::parse("br0@x").is_err());
    }

    #[test]
    fn names_round_trip_through_serde_and_validate_on_the_way_in() {
        let name: HostName = serde_json::from_str("\"h1\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"h1\"");
        assert!(serde_json::from_str::<HostName>("\"H1\"").is_err());
    }
}
