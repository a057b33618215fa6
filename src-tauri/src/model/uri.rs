//! libvirt connection URIs: `driver[+transport]://[user@][host][:port]/path[?params]`.

use super::{quote_input, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

const DRIVERS: &[&str] = &[
    "qemu",
    "test",
    "lxc",
    "xen",
    "libxl",
    "ch",
    "bhyve",
    "vz",
    "openvz",
    "vbox",
    "esx",
    "gsx",
    "vpx",
    "hyperv",
    "vmwareplayer",
    "vmwarews",
    "vmwarefusion",
];
const TRANSPORTS: &[&str] = &["ssh", "libssh", "libssh2", "tls", "tcp", "unix", "ext"];
const MAX_LEN: usize = 2048;

/// A libvirt connection URI, checked for shape before libvirt ever sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "desktop", derive(specta::Type), specta(transparent))]
pub struct LibvirtUri(String);

impl LibvirtUri {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |problem: String| Err(ValidationError::new("uri", problem));
        if value.is_empty() {
            return err("must not be empty; for example qemu:///system".into());
        }
        if value.len() > MAX_LEN {
            return err(format!(
                "{} is too long; at most {MAX_LEN} bytes",
                quote_input(value)
            ));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return err(format!(
                "{} contains spaces or control characters",
                quote_input(value)
            ));
        }
        let Some((scheme, _)) = value.split_once("://") else {
            return err(format!(
                "{} is not a libvirt URI; expected driver[+transport]://[user@]host/path, \
                 for example qemu:///system or qemu+ssh://admin@host1/system",
                quote_input(value)
            ));
        };
        let (driver, transport) = match scheme.split_once('+') {
            Some((d, t)) => (d, Some(t)),
            None => (scheme, None),
        };
        if !DRIVERS.contains(&driver) {
            return err(format!(
                "unknown hypervisor driver {} in {}; known drivers: {}",
                quote_input(driver),
                quote_input(value),
                DRIVERS.join(", ")
            ));
        }
        if let Some(t) = transport {
            if !TRANSPORTS.contains(&t) {
                return err(format!(
                    "unknown transport {} in {}; known transports: {}",
                    quote_input(t),
                    quote_input(value),
                    TRANSPORTS.join(", ")
                ));
            }
        }
        let parsed = match url::Url::parse(value) {
            Ok(p) => p,
            Err(e) => return err(format!("{} is not a valid URI: {e}", quote_input(value))),
        };
        if parsed.password().is_some() {
            return err(
                "must not contain a password (it would be stored in clear); \
                 use ssh keys or libvirt's auth configuration"
                    .into(),
            );
        }
        if driver == "test" {
            if transport.is_some() || parsed.host_str().is_some_and(|h| !h.is_empty()) {
                return err(
                    "test driver URIs are local: test:///default or test:///abs/path.xml".into(),
                );
            }
            if parsed.path() == "/" || parsed.path().is_empty() {
                return err(
                    "test driver URIs need a node file: test:///default or test:///abs/path.xml"
                        .into(),
                );
            }
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The driver part (`qemu`, `test`, …).
    pub fn driver(&self) -> &str {
        let scheme = self.0.split_once("://").map_or("", |(s, _)| s);
        scheme.split_once('+').map_or(scheme, |(d, _)| d)
    }
}

impl fmt::Display for LibvirtUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for LibvirtUri {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<LibvirtUri> for String {
    fn from(value: LibvirtUri) -> String {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::LibvirtUri;

    #[test]
    fn accepts_the_uris_admins_use() {
        for ok in [
            "qemu:///system",
            "qemu:///session",
            "qemu+ssh://admin@h1/system",
            "qemu+ssh://admin@h1:2222/system?keyfile=/root/.ssh/id_ed25519",
            "qemu+tls://h1.example.org/system",
            "qemu+unix:///system?socket=/run/flotilla-lab/h1/libvirt-sock",
            "test:///default",
            "test:///tmp/node.xml",
        ] {
            let uri = LibvirtUri::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(uri.as_str(), ok);
        }
        assert_eq!(
            LibvirtUri::parse("qemu+ssh://h/system").unwrap().driver(),
            "qemu"
        );
    }

    #[test]
    fn refuses_malformed_and_hostile_uris_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("system", "not a libvirt URI"),
            ("qmeu:///system", "unknown hypervisor driver"),
            ("qemu+carrier-pigeon://h/system", "unknown transport"),
            ("qemu:///sys tem", "spaces"),
            ("qemu:///system\n", "control"),
            ("qemu+ssh://admin:secret@h1/system", "password"),
            ("qemu+ssh://[::1/system", "not a valid URI"),
            ("test://h1/default", "local"),
            ("test:///", "node file"),
        ];
        for (input, expect) in cases {
            let err = LibvirtUri::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(expect),
                "{input:?}: expected {expect:?} in {err:?}"
            );
            assert!(err.starts_with("uri:"), "{err}");
        }
        let huge = format!("qemu:///{}", "a".repeat(10_000));
        let err = LibvirtUri::parse(&huge).unwrap_err().to_string();
        assert!(err.contains("too long") && err.len() < 300, "{err}");
    }
}
