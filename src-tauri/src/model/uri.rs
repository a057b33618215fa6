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
/// `ext` is left out on purpose: it connects by running a local program (`command=`).
/// `libssh` is refused too, with its reason (see `LibvirtUri::parse`).
const TRANSPORTS: &[&str] = &["ssh", "libssh2", "tls", "tcp", "unix"];
const MAX_LEN: usize = 2048;

/// The query parameters Flotilla passes to libvirt, and what each value must look like. An
/// allow-list: libvirt's remote driver reads `command` (the local ssh program), `netcat` (the
/// program run on the remote host), `proxy` (which helper runs there) and `name` (another URI,
/// which may carry its own transport and program), and passes anything it does not know on to
/// the daemon. None of that may come in through a URI typed into a wizard.
const PARAMS: &[(&str, ParamValue)] = &[
    ("socket", ParamValue::Path),
    ("keyfile", ParamValue::Path),
    ("known_hosts", ParamValue::Path),
    ("pkipath", ParamValue::Path),
    ("authfile", ParamValue::Path),
    ("no_tty", ParamValue::Flag),
    ("no_verify", ParamValue::Flag),
    ("no_sanity", ParamValue::Flag),
    ("mode", ParamValue::OneOf(&["auto", "legacy", "direct"])),
    (
        "known_hosts_verify",
        ParamValue::OneOf(&["normal", "auto", "ignore"]),
    ),
    (
        "sshauth",
        ParamValue::ListOf(&["agent", "privkey", "password", "keyboard-interactive"]),
    ),
    ("auth", ParamValue::Word),
    ("tls_priority", ParamValue::Priority),
];

/// Parameters that choose how an SSH host's key is checked: Flotilla checks it itself, against
/// its own known-hosts file (`hostkeys`), for `ssh` and `libssh2` alike.
const HOST_KEY_PARAMS: &[&str] = &["known_hosts", "known_hosts_verify", "no_verify"];

/// Parameters that make libvirt run a program, with the reason given in the refusal.
const PROGRAM_PARAMS: &[(&str, &str)] = &[
    (
        "command",
        "it names the program libvirt runs on this machine to reach the host",
    ),
    (
        "netcat",
        "it names the program libvirt runs on the remote host through ssh",
    ),
    (
        "proxy",
        "it chooses the helper program libvirt runs on the remote host",
    ),
    (
        "name",
        "it is a second URI for the remote side, which may carry its own transport and command",
    ),
];

#[derive(Debug, Clone, Copy)]
enum ParamValue {
    /// A file or socket path: printable, no shell metacharacters.
    Path,
    /// `0` or `1` (libvirt reads these as integers).
    Flag,
    OneOf(&'static [&'static str]),
    /// Comma-separated words from the list.
    ListOf(&'static [&'static str]),
    /// An auth type such as `sasl` or `sasl.gssapi`.
    Word,
    /// A GnuTLS priority string such as `NORMAL:-VERS-TLS1.0`.
    Priority,
}

impl ParamValue {
    fn problem(self, value: &str) -> Option<String> {
        let chars_ok = |extra: &str| {
            !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        match self {
            Self::Path if !chars_ok("/._-+@~,:") => Some(
                "expected a path of A-Z a-z 0-9 / . _ - + @ ~ , : (no spaces, quotes or shell \
                 characters)"
                    .into(),
            ),
            Self::Flag if value != "0" && value != "1" => Some("expected 0 or 1".into()),
            Self::OneOf(allowed) if !allowed.contains(&value) => {
                Some(format!("expected one of {}", allowed.join(", ")))
            }
            Self::ListOf(allowed) if !value.split(',').all(|v| allowed.contains(&v)) => Some(
                format!("expected a comma-separated list of {}", allowed.join(", ")),
            ),
            Self::Word if !chars_ok(".-_") => {
                Some("expected a word such as sasl or sasl.gssapi".into())
            }
            Self::Priority if !chars_ok(":+-!%._") => {
                Some("expected a GnuTLS priority string such as NORMAL:-VERS-TLS1.0".into())
            }
            _ => None,
        }
    }
}

/// Decodes `%XX` escapes as libvirt does before it compares parameter names. An invalid
/// escape stays as it is (it cannot then match an allowed name).
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the query of a URI against [`PARAMS`]. libvirt splits the query at `&` and `;`,
/// unescapes each name and compares it ignoring ASCII case; this does the same, so neither
/// `NetCat=` nor `%6eetcat=` nor `keyfile=x;netcat=y` passes.
fn query_problem(query: &str, over_ssh: bool) -> Option<String> {
    for pair in query.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(raw_name).to_ascii_lowercase();
        let shown = if raw_name == name {
            quote_input(&name)
        } else {
            format!("{} (written {})", quote_input(&name), quote_input(raw_name))
        };
        if let Some((_, why)) = PROGRAM_PARAMS.iter().find(|(p, _)| *p == name) {
            return Some(format!(
                "parameter {shown} is refused: {why}; Flotilla never lets a URI run a program"
            ));
        }
        if over_ssh && HOST_KEY_PARAMS.contains(&name.as_str()) {
            return Some(format!(
                "parameter {shown} is refused: Flotilla checks SSH host keys itself, against its \
                 own known-hosts file (a new host's key is confirmed by its fingerprint when the \
                 host is added)"
            ));
        }
        let Some((_, kind)) = PARAMS.iter().find(|(p, _)| *p == name) else {
            return Some(format!(
                "parameter {shown} is not one Flotilla passes to libvirt; allowed: {}",
                PARAMS
                    .iter()
                    .map(|(p, _)| *p)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let value = percent_decode(raw_value);
        if let Some(problem) = kind.problem(&value) {
            return Some(format!(
                "parameter {shown} = {}: {problem}",
                quote_input(&value)
            ));
        }
    }
    None
}

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
            if t.eq_ignore_ascii_case("ext") {
                return err(format!(
                    "the ext transport in {} is refused: it connects by running a local program \
                     (command=); use ssh, libssh2, tls, tcp or unix",
                    quote_input(value)
                ));
            }
            if t.eq_ignore_ascii_case("libssh") {
                return err(format!(
                    "the libssh transport in {} is refused: with libvirt 9.0 and libssh 0.10 (Debian \
                     12) a reply of more than a few KB (a host's capabilities) stalls until a \
                     keep-alive wakes it, or for ever; use qemu+ssh:// or qemu+libssh2://",
                    quote_input(value)
                ));
            }
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
        if value.contains('#') {
            return err(format!(
                "{} has a #fragment; libvirt URIs have none",
                quote_input(value)
            ));
        }
        if let Some((_, query)) = value.split_once('?') {
            let over_ssh = transport.is_some_and(|t| crate::hostkeys::SSH_TRANSPORTS.contains(&t));
            if let Some(problem) = query_problem(query, over_ssh) {
                return err(problem);
            }
        }
        if driver == "test" {
            // `test+unix` asks a local libvirtd to run the test driver (its state then lives
            // in that daemon, as a remote host's would).
            if transport.is_some_and(|t| t != "unix")
                || parsed.host_str().is_some_and(|h| !h.is_empty())
            {
                return err(
                    "test driver URIs are local: test:///default, test:///abs/path.xml or \
                     test+unix:///abs/path.xml?socket=/path/to/libvirt-sock"
                        .into(),
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

    /// A URI as the inventory stored it, without the checks: a host registered before a check
    /// existed stays listed (and removable). The hypervisor adapter parses it again before it
    /// connects, so a refused one is never handed to libvirt.
    pub fn from_stored(value: &str) -> Self {
        Self(value.to_owned())
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
            "qemu+ssh://admin@h1/system?keyfile=/root/.ssh/id&no_tty=1&mode=direct",
            "qemu+libssh2://h1/system?sshauth=agent,privkey",
            "qemu+libssh2://admin@h1:2222/system?keyfile=/k&sshauth=privkey",
            "qemu+tls://h1/system?no_verify=1",
            "qemu+tls://h1/system?pkipath=/etc/flotilla/pki&tls_priority=NORMAL:-VERS-TLS1.0",
            "qemu+ssh://h1/system?Keyfile=/k;no_tty=0",
            "qemu+tcp://h1/system?auth=sasl.gssapi&no_sanity=1",
            "test:///default",
            "test:///tmp/node.xml",
            "test+unix:///tmp/node.xml?socket=/run/lab/libvirt-sock",
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
            ("test+ssh://h1/default", "local"),
            ("test+unix://h1/tmp/node.xml?socket=/s", "local"),
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
        let huge = format!("qemu+ssh://h/system?keyfile={}", "a".repeat(10_000));
        let err = LibvirtUri::parse(&huge).unwrap_err().to_string();
        assert!(err.contains("too long") && err.len() < 300, "{err}");
    }

    /// Every way libvirt would read a parameter that runs a program: by name, in other case,
    /// percent-encoded, after a `;` (libvirt splits there too), hidden behind an allowed one.
    #[test]
    fn refuses_uris_that_would_run_a_program() {
        let cases = [
            (
                "qemu+ext:///system?command=/tmp/evil",
                "ext transport",
                "local program",
            ),
            ("qemu+EXT:///system", "ext transport", "local program"),
            ("qemu+libssh://h/system", "libssh transport", "stalls"),
            (
                "qemu+ssh://h/system?command=/tmp/evil",
                "\"command\"",
                "runs on this machine",
            ),
            (
                "qemu+ssh://h/system?netcat=/tmp/evil",
                "\"netcat\"",
                "remote host",
            ),
            (
                "qemu+ssh://h/system?NetCat=/tmp/evil",
                "\"netcat\" (written \"NetCat\")",
                "remote host",
            ),
            (
                "qemu+ssh://h/system?%6eetcat=/tmp/evil",
                "(written \"%6eetcat\")",
                "remote host",
            ),
            (
                "qemu+ssh://h/system?%4E%45TCAT=x",
                "\"netcat\"",
                "remote host",
            ),
            (
                "qemu+ssh://h/system?keyfile=/k;netcat=/tmp/evil",
                "\"netcat\"",
                "program",
            ),
            (
                "qemu+ssh://h/system?keyfile=/k&&COMMAND=x",
                "\"command\"",
                "program",
            ),
            (
                "qemu+ssh://h/system?proxy=netcat",
                "\"proxy\"",
                "helper program",
            ),
            (
                "qemu+ssh://h/system?name=qemu%2Bext:///system",
                "\"name\"",
                "second URI",
            ),
            (
                "qemu+ssh://h/system?netcat%00=x",
                "not one Flotilla passes",
                "allowed: socket",
            ),
            (
                "qemu+ssh://h/system?editor=vi",
                "\"editor\" is not one",
                "allowed: socket, keyfile",
            ),
            (
                "qemu+ssh://h/system?keyfile",
                "\"keyfile\" = \"\"",
                "expected a path",
            ),
            (
                "qemu+ssh://h/system?keyfile=/k%60reboot%60",
                "keyfile",
                "shell",
            ),
            ("qemu+ssh://h/system?socket=/s%3Breboot", "socket", "shell"),
            ("qemu+ssh://h/system?no_tty=yes", "no_tty", "0 or 1"),
            (
                "qemu+ssh://h/system?mode=shell",
                "mode",
                "auto, legacy, direct",
            ),
            (
                "qemu+ssh://h/system?sshauth=agent,gss",
                "sshauth",
                "comma-separated",
            ),
            ("qemu+ssh://h/system#netcat=x", "fragment", "none"),
        ];
        for (input, names, why) in cases {
            let err = LibvirtUri::parse(input).expect_err(input).to_string();
            assert!(err.starts_with("uri:"), "{input}: {err}");
            assert!(
                err.contains(names) && err.contains(why),
                "{input}: expected {names:?} and {why:?} in {err:?}"
            );
        }
    }

    #[test]
    fn refuses_uris_that_would_weaken_or_move_the_host_key_check() {
        let cases = [
            ("qemu+ssh://h/system?no_verify=1", "\"no_verify\""),
            (
                "qemu+ssh://h/system?keyfile=/k;No_Verify=1",
                "\"no_verify\"",
            ),
            (
                "qemu+libssh2://h/system?known_hosts_verify=ignore",
                "\"known_hosts_verify\"",
            ),
            (
                "qemu+libssh2://h/system?known_hosts_verify=auto",
                "\"known_hosts_verify\"",
            ),
            (
                "qemu+libssh2://h/system?known_hosts=/tmp/kh",
                "\"known_hosts\"",
            ),
            ("qemu+libssh2://h/system?%6Eo_verify=1", "\"no_verify\""),
            (
                "qemu+ssh://h/system?known_hosts=/root/.ssh/kh",
                "\"known_hosts\"",
            ),
        ];
        for (input, name) in cases {
            let err = LibvirtUri::parse(input).expect_err(input).to_string();
            assert!(
                err.contains(name) && err.contains("checks SSH host keys itself"),
                "{input}: {err}"
            );
        }
    }
}
