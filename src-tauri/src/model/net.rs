//! Network identities of virtual servers: MAC addresses and IPv4 addresses with prefix.

use super::{quote_input, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// A unicast Ethernet address, shown lowercase `52:54:00:ab:cd:ef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub fn new(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "mac",
                format!(
                    "{} is not a MAC address like 52:54:00:12:34:56",
                    quote_input(value)
                ),
            )
        };
        let parts: Vec<&str> = value.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut bytes = [0u8; 6];
        for (b, p) in bytes.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if bytes[0] & 1 == 1 {
            return Err(ValidationError::new(
                "mac",
                format!("{} is a multicast address", quote_input(value)),
            ));
        }
        Ok(Self(bytes))
    }
    pub fn bytes(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}
impl TryFrom<String> for MacAddr {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<MacAddr> for String {
    fn from(value: MacAddr) -> String {
        value.to_string()
    }
}

/// An IPv4 address with its network prefix, `10.77.0.11/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, ValidationError> {
        if !(1..=32).contains(&prefix) {
            return Err(ValidationError::new(
                "address",
                format!("prefix /{prefix} must be between 1 and 32"),
            ));
        }
        Ok(Self { addr, prefix })
    }
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let bad = || {
            ValidationError::new(
                "address",
                format!(
                    "{} is not an IPv4 address with prefix like 10.77.0.11/24",
                    quote_input(value)
                ),
            )
        };
        let (addr, prefix) = value.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix)
    }
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(self) -> u8 {
        self.prefix
    }
    /// True when `other` lies in this address's network.
    pub fn contains(self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
impl TryFrom<String> for Ipv4Cidr {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Ipv4Cidr> for String {
    fn from(value: Ipv4Cidr) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = MacAddr::parse("52:54:00:AB:cd:0f").unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52-54-00-ab-cd-ef",
            "zz:54:00:ab:cd:ef",
            "5:54:00:ab:cd:ef",
            "01:00:5e:00:00:01",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c = Ipv4Cidr::parse("10.77.0.11/24").unwrap();
        assert_eq!(c.to_string(), "10.77.0.11/24");
        assert!(c.contains("10.77.0.200".parse().unwrap()));
        assert!(!c.contains("10.77.1.1".parse().unwrap()));
        assert!(Ipv4Cidr::parse("10.0.0.1/32")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "10.77.0.11",
            "10.77.0.11/33",
            "10.77.0.11/0",
            "10.77.0/24",
            "::1/64",
            "a/24",
        ] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
