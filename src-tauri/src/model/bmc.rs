//! A host's BMC (baseboard management controller), reached over Redfish: where (URL), which
//! computer system, as whom, and where its password is kept. Pure validation; the client is
//! `bmc/`, the password store `secrets.rs`.

use super::{quote_input, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// How Flotilla reaches a host's BMC, as the inventory holds it and both front doors show it.
/// Never holds the password: `password` says where it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct BmcSettings {
    /// `https://10.0.0.5` or `https://bmc-h1.example:8443` (`http://` only to this machine's
    /// loopback); scheme, host and port only.
    pub url: String,
    /// The Redfish ComputerSystem's `Id` (`1`, `System.Embedded.1`, a UUID, …).
    pub system: String,
    pub user: String,
    /// PEM certificates to trust for this BMC *instead of* the system's roots (a self-signed
    /// BMC certificate, or the CA that signed it); `None`: the system's roots.
    pub ca_pem: Option<String>,
    /// Where the password is kept.
    pub password: SecretPlace,
}

/// Where a secret is kept. Both front doors read both places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum SecretPlace {
    /// The desktop's Secret Service (GNOME Keyring, KWallet, KeePassXC) of the user.
    SecretService,
    /// A private file (0600, in a 0700 directory) in the data directory:
    /// `secrets/bmc-<host>`.
    File,
}

impl SecretPlace {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretService => "secret_service",
            Self::File => "file",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::SecretService, Self::File]
            .into_iter()
            .find(|p| p.as_str() == value)
    }

    /// Where, in words (`host show`, the Hosts view), for the secret of `host`.
    pub fn describe(self, host: &str) -> String {
        match self {
            Self::SecretService => "in the desktop's Secret Service (keyring)".into(),
            Self::File => format!("in the private file secrets/bmc-{host} of the data directory"),
        }
    }
}

/// A BMC's base URL: `https://HOST[:PORT]`, or `http://` to a loopback address only (the
/// password would otherwise cross the network in clear). No user or password in it, no path,
/// query or fragment. Shown without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcUrl(url::Url);

/// Longest URL accepted (bytes).
pub const MAX_URL: usize = 300;

impl BmcUrl {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "bmc-url";
        let bad = |problem: String| ValidationError::new(FIELD, problem);
        // A refused URL is quoted in its error: never the part before an `@` (it may hold a
        // password, and the URL may be too broken to find it another way).
        let shown = match value.rfind('@') {
            Some(at) => format!("…{}", &value[at..]),
            None => value.to_owned(),
        };
        if value.is_empty() {
            return Err(bad(
                "must not be empty; give the BMC's address, like https://10.0.0.5".into(),
            ));
        }
        if value.len() > MAX_URL {
            return Err(bad(format!(
                "{} is {} bytes long; at most {MAX_URL} are allowed",
                quote_input(&shown),
                value.len()
            )));
        }
        // Before parsing: the URL parser silently drops tabs and newlines.
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!(
                "{} contains a space or a control character",
                quote_input(&shown)
            )));
        }
        if !value.contains("://") {
            return Err(bad(format!(
                "{} is not a URL like https://10.0.0.5",
                quote_input(&shown)
            )));
        }
        let url = url::Url::parse(value).map_err(|e| {
            bad(format!(
                "{} is not a URL like https://10.0.0.5 ({e})",
                quote_input(&shown)
            ))
        })?;
        match url.scheme() {
            "https" | "http" => {}
            other => {
                return Err(bad(format!(
                    "{} uses {}; a BMC is reached over https:// (http:// only on this machine's loopback)",
                    quote_input(&shown),
                    quote_input(other)
                )))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(format!(
                "{} holds a user or password (user:pass@); give the user with --bmc-user and the password with --bmc-password-stdin or --bmc-password-file, so it is never shown or stored in clear",
                quote_input(&shown)
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(format!(
                "{} has a query or fragment (? or #); give only scheme, host and port",
                quote_input(&shown)
            )));
        }
        if url.path() != "/" {
            return Err(bad(format!(
                "{} has a path; give only scheme, host and port (Flotilla adds /redfish/v1/…)",
                quote_input(&shown)
            )));
        }
        let host = match url.host() {
            Some(h) => h,
            None => return Err(bad(format!("{} names no host", quote_input(&shown)))),
        };
        if url.scheme() == "http" {
            let loopback = match host {
                url::Host::Ipv4(a) => IpAddr::V4(a).is_loopback(),
                url::Host::Ipv6(a) => IpAddr::V6(a).is_loopback(),
                url::Host::Domain(_) => false,
            };
            if !loopback {
                return Err(bad(format!(
                    "{} uses http:// to another machine: the BMC password would cross the network in clear; use https:// (http:// is allowed only to 127.0.0.1 or [::1])",
                    quote_input(&shown)
                )));
            }
        }
        Ok(Self(url))
    }

    /// `https://10.0.0.5:8443` (no trailing slash; the default port left out).
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// `path` (absolute, `/redfish/v1/…`) on this BMC.
    pub fn join(&self, path: &str) -> Option<url::Url> {
        let joined = self.0.join(path).ok()?;
        self.same_origin(&joined).then_some(joined)
    }

    /// Whether `other` is on this BMC (scheme, host and port), so that it may be sent the
    /// BMC's password.
    pub fn same_origin(&self, other: &url::Url) -> bool {
        self.0.origin() == other.origin()
    }
}

impl fmt::Display for BmcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Id` of a Redfish ComputerSystem: 1–128 of `A-Z a-z 0-9 . _ ~ -` (URL-safe as it is,
/// so it goes into a path unchanged), not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId(String);

impl SystemId {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "bmc-system";
        if value.is_empty() {
            return Err(ValidationError::new(
                FIELD,
                "must not be empty; give the Redfish system id (often 1; `flotillactl host bmc-check` lists them)",
            ));
        }
        if value.len() > 128 {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "{} is {} bytes long; at most 128 are allowed",
                    quote_input(value),
                    value.len()
                ),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')))
        {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "{} contains {}; use letters, digits, '.', '_', '~' or '-'",
                    quote_input(value),
                    quote_input(&c.to_string())
                ),
            ));
        }
        if value == "." || value == ".." {
            return Err(ValidationError::new(
                FIELD,
                format!("{} is not a system id", quote_input(value)),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A BMC account name: 1–64 characters, no white space, control characters or `:` (HTTP
/// basic authentication ends the user at the first `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcUser(String);

impl BmcUser {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "bmc-user";
        if value.is_empty() {
            return Err(ValidationError::new(FIELD, "must not be empty"));
        }
        if value.chars().count() > 64 {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "{} is {} characters long; at most 64 are allowed",
                    quote_input(value),
                    value.chars().count()
                ),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || *c == ':')
        {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "{} contains {}; a BMC user has no spaces, control characters or ':'",
                    quote_input(value),
                    quote_input(&c.to_string())
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password. It is never shown: `Debug` prints `***`, there is no `Display`, `Serialize`
/// or `Deserialize` (a front door parses what it receives), and a refusal never quotes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Longest password accepted (characters).
pub const MAX_SECRET: usize = 256;

impl Secret {
    /// A password as typed or read: 1–256 characters without control characters (a line
    /// break read from a file or stdin is taken off by the front door).
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::new(value.to_owned())
    }

    pub fn new(value: String) -> Result<Self, ValidationError> {
        const FIELD: &str = "bmc-password";
        if value.is_empty() {
            return Err(ValidationError::new(FIELD, "must not be empty"));
        }
        let n = value.chars().count();
        if n > MAX_SECRET {
            return Err(ValidationError::new(
                FIELD,
                format!("is {n} characters long; at most {MAX_SECRET} are allowed"),
            ));
        }
        if let Some(i) = value.chars().position(char::is_control) {
            return Err(ValidationError::new(
                FIELD,
                format!(
                    "holds a control character (at character {}); a password read from a file or stdin may end with one line break, nothing else",
                    i + 1
                ),
            ));
        }
        Ok(Self(value))
    }

    /// The password itself, for the one place that sends or stores it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A password as read from a file or stdin: one trailing line break (`\n` or `\r\n`) is not
/// part of it.
pub fn secret_from_text(text: &str) -> Result<Secret, ValidationError> {
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    Secret::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_are_kept_in_their_canonical_form() {
        for (input, shown) in [
            ("https://10.0.0.5", "https://10.0.0.5"),
            ("https://10.0.0.5/", "https://10.0.0.5"),
            ("https://10.0.0.5:443", "https://10.0.0.5"),
            ("https://BMC-H1.example:8443", "https://bmc-h1.example:8443"),
            ("https://[fd00::5]", "https://[fd00::5]"),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("http://127.3.4.5:1", "http://127.3.4.5:1"),
            ("http://[::1]:8000/", "http://[::1]:8000"),
        ] {
            let u = BmcUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(u.as_str(), shown, "{input}");
            assert_eq!(u.to_string(), shown);
        }
    }

    #[test]
    fn hostile_urls_are_refused_with_the_reason_and_never_echo_a_password() {
        let huge = format!("https://{}.example", "a".repeat(400));
        for (input, says) in [
            ("", "must not be empty"),
            (huge.as_str(), "at most 300"),
            ("https://10.0.0.5\n", "control character"),
            ("https://10.0.\t0.5", "control character"),
            ("https://10.0.0.5 /x", "a space"),
            ("https://admin:s3cr3t@10.0.0.5", "user or password"),
            ("https://admin:s3cr3t@10.0.0.5 x", "a space"),
            ("admin:s3cr3t@10.0.0.5", "not a URL"),
            ("https://admin:s3cr3t@[::1", "not a URL"),
            ("https://admin@10.0.0.5", "user or password"),
            ("https://10.0.0.5/?x=1", "query"),
            ("https://10.0.0.5/#frag", "query or fragment"),
            ("https://10.0.0.5/redfish/v1", "has a path"),
            ("ftp://10.0.0.5", "uses \"ftp\""),
            ("file:///etc/passwd", "uses \"file\""),
            ("javascript:alert(1)", "not a URL"),
            ("10.0.0.5", "not a URL"),
            ("http://10.0.0.5", "in clear"),
            ("http://localhost:8000", "in clear"),
            ("http://[fd00::1]", "in clear"),
            ("http://0.0.0.0:80", "in clear"),
            ("https://", "not a URL"),
        ] {
            let err = BmcUrl::parse(input).expect_err(input);
            assert_eq!(err.field, "bmc-url");
            let text = err.to_string();
            assert!(text.contains(says), "{input:?}: {text}");
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.len() < 400, "{text}");
        }
    }

    #[test]
    fn only_the_same_scheme_host_and_port_is_the_same_bmc() {
        let u = BmcUrl::parse("https://10.0.0.5").unwrap();
        assert!(u.join("/redfish/v1/Systems/1").is_some());
        assert!(u.same_origin(&url::Url::parse("https://10.0.0.5:443/redfish/v1/x").unwrap()));
        for other in [
            "http://10.0.0.5/redfish",
            "https://10.0.0.6/redfish",
            "https://10.0.0.5:8443/redfish",
        ] {
            assert!(!u.same_origin(&url::Url::parse(other).unwrap()), "{other}");
        }
        assert!(
            u.join("//evil.example/redfish").is_none(),
            "a scheme-relative target leaves the BMC"
        );
    }

    #[test]
    fn system_ids() {
        for ok in [
            "1",
            "System.Embedded.1",
            "6695eb01-f6a4-8304-79aa-97f2502e193f",
            "self~2",
        ] {
            assert_eq!(SystemId::parse(ok).unwrap().as_str(), ok);
        }
        for (bad, says) in [
            ("", "must not be empty"),
            ("..", "not a system id"),
            (".", "not a system id"),
            ("1/../2", "contains \"/\""),
            ("a b", "contains \" \""),
            ("1\n", "contains \"\\n\""),
            ("%2e", "contains \"%\""),
            ("1?x", "contains \"?\""),
        ] {
            let e = SystemId::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(SystemId::parse(&"1".repeat(129))
            .unwrap_err()
            .to_string()
            .contains("at most 128"));
    }

    #[test]
    fn users() {
        for ok in ["admin", "root", "ADMIN", "ops.team-1", "jürgen"] {
            BmcUser::parse(ok).unwrap();
        }
        for (bad, says) in [
            ("", "must not be empty"),
            ("ad min", "contains \" \""),
            (" admin", "contains \" \""),
            ("admin:pw", "contains \":\""),
            ("ad\u{7}min", "control"),
            ("adm\nin", "control"),
        ] {
            let e = BmcUser::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(BmcUser::parse(&"u".repeat(65))
            .unwrap_err()
            .to_string()
            .contains("at most 64"));
    }

    #[test]
    fn passwords_are_checked_without_ever_being_shown() {
        let s = Secret::parse("pa ss:w@rd/ü").unwrap();
        assert_eq!(s.expose(), "pa ss:w@rd/ü");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        for bad in ["", "hunter2\nhunter3", "hunter2\0", "\u{1b}[31mhunter2"] {
            let e = Secret::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("bmc-password:"), "{e}");
            assert!(!e.contains("hunter"), "the password is not quoted: {e}");
        }
        let long = "x".repeat(MAX_SECRET + 1);
        assert!(Secret::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 256"));
        // One trailing line break from a file or `echo` is not part of it; a second is.
        assert_eq!(secret_from_text("hunter2\n").unwrap().expose(), "hunter2");
        assert_eq!(secret_from_text("hunter2\r\n").unwrap().expose(), "hunter2");
        assert_eq!(secret_from_text("hunter2").unwrap().expose(), "hunter2");
        assert!(secret_from_text("hunter2\n\n").is_err());
        assert!(secret_from_text("\n").is_err());
    }

    #[test]
    fn secret_places_round_trip() {
        for p in [SecretPlace::SecretService, SecretPlace::File] {
            assert_eq!(SecretPlace::parse(p.as_str()), Some(p));
        }
        assert_eq!(SecretPlace::parse(""), None);
        assert!(SecretPlace::File.describe("h1").contains("secrets/bmc-h1"));
    }
}
