//! SSH host keys the way admins expect them: Flotilla trusts the keys in its own known-hosts
//! file (`<data dir>/ssh/known_hosts`, OpenSSH format), shows an unknown key's SHA256
//! fingerprint exactly as `ssh` prints it, stores a key only when the admin confirmed that
//! fingerprint, and refuses a changed key.
//!
//! How libvirt is made to check against this file: libvirt 9.0's `ssh` transport runs the `ssh`
//! program (its `known_hosts=` parameter applies only to the `libssh`/`libssh2` transports).
//! Flotilla therefore writes a small wrapper script next to the file (`ssh/ssh-flotilla`) that
//! runs `/usr/bin/ssh` with `UserKnownHostsFile=<our file>`, `StrictHostKeyChecking=yes`,
//! `BatchMode=yes` (never a password prompt) and keep-alives, and hands it to libvirt as
//! `command=` when it opens a `qemu+ssh://` connection itself. A URI typed by a user still may
//! not carry `command=` (see `model/uri.rs`). The real `ssh` keeps the agent
//! (`SSH_AUTH_SOCK`) and per-host key files (`keyfile=`, passed as `-i`) working as admins
//! know them, including keys with a passphrase loaded into the agent.
//!
//! The in-process transport `qemu+libssh2://` takes the same file as
//! `known_hosts=` with `known_hosts_verify=normal` (an unknown or changed key fails the
//! connection); a URI may not name its own file or weaken the check (`model/uri.rs`), and
//! adding such a host goes through the same fingerprint confirmation. It runs no `ssh`
//! process per connection (see docs/benchmarks.md for what that saves on a large fleet).

use crate::model::quote_input;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssh_key::known_hosts::{HostPatterns, Marker};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The key types asked for, in the order OpenSSH 9 prefers them for a host it does not know
/// yet: the fingerprint shown is the one `ssh` itself would show on a first connection.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "ssh-rsa",
];
/// At most this much of a fingerprint typed by a user is quoted back in an error.
const MAX_FP_INPUT: usize = 200;
/// ssh-keyscan's own timeout (seconds) for a host that does not answer.
const SCAN_TIMEOUT_SECS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("host key fingerprint {shown}: {problem}")]
    BadFingerprint { shown: String, problem: String },
    #[error(
        "the SSH host key of {host} is not known to Flotilla. It presented the {key_type} key \
         {fingerprint}. Check that this is the host's key (on the host: ssh-keygen -lf \
         /etc/ssh/ssh_host_{short}_key.pub) and accept it: in the Add host wizard, or with \
         --accept-host-key {fingerprint}",
        short = short_type(key_type)
    )]
    Unknown {
        host: String,
        key_type: String,
        fingerprint: String,
    },
    #[error(
        "WARNING: THE SSH HOST KEY OF {host} HAS CHANGED. Flotilla trusts the {key_type} key \
         {trusted}, but the host presented {presented}. Someone may be intercepting the \
         connection, or the host was reinstalled. Nothing was done. If the change is expected, \
         remove line {line} (the key of {host}) from {file} and add the host again",
        host = .0.host, key_type = .0.key_type, trusted = .0.trusted,
        presented = .0.presented, line = .0.line, file = .0.file
    )]
    Changed(Box<KeyChange>),
    #[error(
        "WARNING: THE SSH HOST KEY OF {host} IS REVOKED. The host presented the {key_type} key \
         {presented}, which line {line} of {file} marks @revoked: ssh refuses it, and Flotilla \
         does not store it. Nothing was done. The host needs a new key; find out why this one \
         was revoked",
        host = .0.host, key_type = .0.key_type, presented = .0.presented, line = .0.line,
        file = .0.file
    )]
    Revoked(Box<KeyChange>),
    #[error(
        "the SSH host key of {host} is {presented}, not {accepted} as accepted; nothing was \
         stored. Check the fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub)"
    )]
    Mismatch {
        host: String,
        accepted: String,
        presented: String,
    },
    #[error("cannot read the SSH host key of {host}: {reason}")]
    Scan { host: String, reason: String },
    #[error("cannot use Flotilla's known-hosts file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A host key that is not the trusted one.
#[derive(Debug)]
pub struct KeyChange {
    pub host: String,
    pub key_type: String,
    pub trusted: String,
    pub presented: String,
    pub file: String,
    pub line: usize,
}

fn short_type(key_type: &str) -> &'static str {
    if key_type.contains("ed25519") {
        "ed25519"
    } else if key_type.contains("ecdsa") {
        "ecdsa"
    } else {
        "rsa"
    }
}

/// A SHA256 key fingerprint as `ssh` prints it: `SHA256:` and 43 characters of unpadded
/// base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn parse(input: &str) -> Result<Self, HostKeyError> {
        let shown = || quote_input(&input.chars().take(MAX_FP_INPUT).collect::<String>());
        let bad = |problem: &str| HostKeyError::BadFingerprint {
            shown: shown(),
            problem: problem.to_owned(),
        };
        let value = input.trim();
        if value.len() > 100 {
            return Err(bad(
                "is too long; a SHA256 fingerprint is SHA256: and 43 characters",
            ));
        }
        let Some(b64) = value.strip_prefix("SHA256:") else {
            if value.starts_with("MD5:") || value.contains(':') && value.len() == 47 {
                return Err(bad(
                    "is an MD5 fingerprint; give the SHA256 one (ssh-keygen -lf FILE prints it)",
                ));
            }
            return Err(bad(
                "must start with SHA256: as ssh prints it, e.g. SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| bad("is not base64 after SHA256:"))?;
        if decoded.len() != 32 {
            return Err(bad(
                "has the wrong length; SHA256: is followed by 43 characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The fingerprint of a public key blob (the base64 field of a known-hosts or .pub line).
    /// A key `ssh-key` reads is fingerprinted by it; a blob of a type it does not know is
    /// hashed as it is (the same SHA-256 of the blob that `ssh-keygen -l` prints).
    pub fn of_blob(blob_b64: &str) -> Option<Self> {
        let blob = base64::engine::general_purpose::STANDARD
            .decode(blob_b64)
            .ok()?;
        if let Ok(key) = ssh_key::PublicKey::from_bytes(&blob) {
            return Some(Self::of_key(&key));
        }
        let digest = Sha256::digest(&blob);
        Some(Self(format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        )))
    }

    fn of_key(key: &ssh_key::PublicKey) -> Self {
        Self(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an SSH connection goes: the host as written in the URI and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    /// The name `ssh` looks the host up by in a known-hosts file.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// The name as `ssh` itself looks it up: it lower-cases the host name first (which is
    /// what a hashed line must hash).
    fn lookup_name(&self) -> String {
        self.known_hosts_name().to_ascii_lowercase()
    }

    /// Every name a key of this host may be filed under: ssh's own lookup name, the host as
    /// written (a hashed line of an admin's tool may hash it so), and on port 22 also
    /// `[host]:22`.
    /// ssh's own lookup name comes first.
    fn spellings(&self) -> Vec<String> {
        let mut names = vec![self.lookup_name(), self.known_hosts_name()];
        if self.port == 22 {
            names.push(format!("[{}]:22", self.host.to_ascii_lowercase()));
            names.push(format!("[{}]:22", self.host));
        }
        names.dedup();
        names
    }

    /// The target of a `+ssh` or `+libssh2` URI; `None` for any other transport. A
    /// host name that could be
    /// read as an option or a pattern (leading `-`, `*`, `?`, `!`, `,`, spaces) is refused.
    pub fn of_uri(uri: &str) -> Result<Option<Self>, HostKeyError> {
        let Some((scheme, _)) = uri.split_once("://") else {
            return Ok(None);
        };
        if !scheme
            .split_once('+')
            .is_some_and(|(_, t)| SSH_TRANSPORTS.contains(&t))
        {
            return Ok(None);
        }
        let bad = |reason: &str| HostKeyError::Scan {
            host: quote_input(uri),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(uri).map_err(|e| bad(&format!("not a valid URI: {e}")))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("a qemu+ssh URI needs a host name"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let ok = host.len() <= 253
            && !host.starts_with('-')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !ok {
            return Err(bad(
                "the host name may hold only letters, digits, . - _ (or an IPv6 address) and must not start with -",
            ));
        }
        Ok(Some(Self {
            host,
            port: parsed.port().unwrap_or(22),
        }))
    }
}

/// One key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub key_type: String,
    pub blob: String,
    pub fingerprint: Fingerprint,
}

/// What Flotilla knows about a host's key, compared with what the host presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// The presented key is trusted.
    Known(HostKey),
    /// No key of this host is trusted yet.
    Unknown(HostKey),
    /// A key of the same type is trusted, and it is not the one presented.
    Changed {
        presented: HostKey,
        trusted: Fingerprint,
        line: usize,
    },
    /// The presented key is marked `@revoked` for this host: ssh refuses it whatever else the
    /// file says.
    Revoked { presented: HostKey, line: usize },
}

/// Flotilla's own known-hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
}

impl KnownHosts {
    /// The file in `data_dir` (`ssh/known_hosts`), and the ssh wrapper beside it, written if
    /// missing or outdated.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("ssh").join("known_hosts"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The wrapper libvirt runs instead of `ssh` (see the module's description).
    pub fn wrapper_path(&self) -> PathBuf {
        self.path.with_file_name("ssh-flotilla")
    }

    fn file_err(&self, source: std::io::Error) -> HostKeyError {
        HostKeyError::File {
            path: self.path.clone(),
            source,
        }
    }

    /// Holds the ssh folder's lock until dropped: the app and any number of `flotillactl`
    /// processes may write the wrapper or add a key at the same time, and each must see the
    /// others' work (no half-renamed temporary file, no key lost to a concurrent rewrite).
    fn locked(&self) -> Result<std::fs::File, HostKeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::files::private_dir_all(dir).map_err(|e| self.file_err(e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(|e| self.file_err(e))?;
        // fs4 (flock), not std's File::lock: that needs Rust 1.89, the MSRV is 1.85.
        fs4::FileExt::lock(&lock).map_err(|e| self.file_err(e))?;
        Ok(lock)
    }

    /// Writes the wrapper script (mode 0700) when it is missing or says something else.
    pub fn ensure_wrapper(&self) -> Result<PathBuf, HostKeyError> {
        let wrapper = self.wrapper_path();
        let _lock = self.locked()?;
        let text = wrapper_script(&self.path);
        if std::fs::read_to_string(&wrapper).ok().as_deref() != Some(text.as_str()) {
            replace_file(&wrapper, text.as_bytes(), 0o700).map_err(|e| self.file_err(e))?;
        }
        Ok(wrapper)
    }

    /// Compares what the host presents with the file, the way `ssh` reads it: host names
    /// ignore case, `[host]:port` off port 22, `*`/`?` patterns and `!` negations in
    /// comma-separated lists, hashed names (`|1|salt|hash`, HMAC-SHA1 of the lower-case name),
    /// `@revoked` keys (refused whatever else the file says) and `@cert-authority` lines (they
    /// vouch for certificates, not for a plain key). *Known* is exactly what ssh accepts; a
    /// trusted key of the host under any spelling ssh reads as this host — or under
    /// `[host]:22` for port 22, which ssh itself reads as another name — that is not the
    /// presented one is a *change*, never "unknown", so a confirmation can never add a second
    /// key beside a trusted one.
    pub fn check(&self, target: &SshTarget, presented: HostKey) -> Result<KeyCheck, HostKeyError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.file_err(e)),
        };
        let lines: Vec<KnownLine> = parse_known_hosts(&text).collect();
        let key = KeyId::of(&presented.key_type, &presented.blob);
        let ssh_name = target.lookup_name();
        let names = target.spellings();
        if let Some(l) = lines
            .iter()
            .find(|l| l.marker == Some(Marker::Revoked) && l.key == key && l.names_any(&names))
        {
            return Ok(KeyCheck::Revoked {
                presented,
                line: l.number,
            });
        }
        let plain = || lines.iter().filter(|l| l.marker.is_none());
        if plain().any(|l| l.key == key && l.names(&ssh_name)) {
            return Ok(KeyCheck::Known(presented));
        }
        // ssh prefers the types it has a key for: a trusted key of another type is what it
        // would check. Any trusted key that differs is a change.
        if let Some(l) = plain().find(|l| l.key != key && l.names_any(&names)) {
            return Ok(KeyCheck::Changed {
                trusted: l.key.fingerprint(),
                presented,
                line: l.number,
            });
        }
        Ok(KeyCheck::Unknown(presented))
    }

    /// Adds a key of `target` (after the admin confirmed its fingerprint). The file is rewritten
    /// whole (mode 0600) and renamed into place, so it is never left half-written.
    pub fn add(&self, target: &SshTarget, key: &HostKey) -> Result<(), HostKeyError> {
        let _lock = self.locked()?;
        let mut text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.file_err(e)),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} {} {}\n",
            target.known_hosts_name(),
            key.key_type,
            key.blob
        ));
        replace_file(&self.path, text.as_bytes(), 0o600).map_err(|e| self.file_err(e))
    }
}

/// Writes `path` whole with `mode`: a temporary file of its own in the same folder (several
/// Flotilla processes may start at once), renamed into place, so the file is never seen
/// half-written.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".flotilla-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Single-quotes a path for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn wrapper_script(known_hosts: &Path) -> String {
    let kh = sh_quote(&known_hosts.to_string_lossy());
    format!(
        "#!/bin/sh\n\
         # Written by Flotilla: libvirt runs this instead of ssh for qemu+ssh:// hosts, so that\n\
         # only the host keys in Flotilla's known-hosts file are trusted. Options given first win\n\
         # over libvirt's own. Rewritten when Flotilla starts.\n\
         exec /usr/bin/ssh -o UserKnownHostsFile={kh} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o BatchMode=yes \
         -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
         -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 \"$@\"\n"
    )
}

/// A key as a known-hosts line names it: read by `ssh-key` (compared by key data, whatever
/// the comment), or — a type it does not know — by its type and base64 blob as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyId {
    Parsed(ssh_key::public::KeyData),
    Opaque(String, String),
}

impl KeyId {
    fn of(key_type: &str, blob: &str) -> Self {
        match ssh_key::PublicKey::from_openssh(&format!("{key_type} {blob}")) {
            Ok(k) => Self::Parsed(k.key_data().clone()),
            Err(_) => Self::Opaque(key_type.to_owned(), blob.to_owned()),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        match self {
            Self::Parsed(data) => Fingerprint::of_key(&ssh_key::PublicKey::from(data.clone())),
            Self::Opaque(_, blob) => {
                Fingerprint::of_blob(blob).unwrap_or_else(|| Fingerprint("?".into()))
            }
        }
    }
}

/// One line of a known-hosts file that names hosts and a key.
#[derive(Debug, Clone)]
struct KnownLine {
    /// 1-based, as editors and ssh's own messages count.
    number: usize,
    marker: Option<Marker>,
    hosts: HostPatterns,
    key: KeyId,
}

impl KnownLine {
    /// Whether this line is about `name` (lower case, `host` or `[host]:port`), as ssh decides.
    fn names(&self, name: &str) -> bool {
        match &self.hosts {
            HostPatterns::Patterns(list) => pattern_list_matches(list, name),
            HostPatterns::HashedName { salt, hash } => {
                use hmac::Mac as _;
                hmac::Hmac::<sha1::Sha1>::new_from_slice(salt)
                    .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
                    .unwrap_or(false)
            }
        }
    }

    /// Whether this line is about the host under any of `names`: the first is ssh's own
    /// lookup name (patterns apply); the others are other spellings of it, which count only
    /// where the line writes them out (or hashes them) — a wildcard line, or one whose `!`
    /// excludes the host, is read as ssh reads it.
    fn names_any(&self, names: &[String]) -> bool {
        let Some((ssh_name, others)) = names.split_first() else {
            return false;
        };
        if self.names(ssh_name) {
            return true;
        }
        match &self.hosts {
            HostPatterns::HashedName { .. } => others.iter().any(|n| self.names(n)),
            HostPatterns::Patterns(list) => {
                let excluded = list.iter().any(|p| {
                    p.strip_prefix('!')
                        .is_some_and(|p| pattern_list_matches(&[p.to_owned()], ssh_name))
                });
                !excluded
                    && others
                        .iter()
                        .any(|n| list.iter().any(|p| p.eq_ignore_ascii_case(n)))
            }
        }
    }
}

/// ssh's `match_pattern_list` for host names: comma-separated patterns with `*` and `?`,
/// compared ignoring ASCII case; a matching `!pattern` excludes the name whatever else
/// matches.
fn pattern_list_matches(patterns: &[String], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for p in patterns {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        if glob_matches(p.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` (any run, also empty) and `?` (any one byte), as ssh's `match_pattern`.
fn glob_matches(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The lines of a known-hosts text that name hosts and a key, read by `ssh-key` (markers,
/// hashed names, keys); fields may be separated by any run of blanks, as ssh allows. Comments,
/// blank lines and lines nobody can read are skipped, as ssh skips them.
fn parse_known_hosts(text: &str) -> impl Iterator<Item = KnownLine> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (marker, rest) = match fields.first()?.strip_prefix('@') {
            Some(_) => (Some(fields[0].parse::<Marker>().ok()?), &fields[1..]),
            None => (None, &fields[..]),
        };
        let [names, key_type, blob, ..] = rest else {
            return None;
        };
        let hosts = names.parse::<HostPatterns>().ok()?;
        Some(KnownLine {
            number: i + 1,
            marker,
            hosts,
            key: KeyId::of(key_type, blob),
        })
    })
}

/// Picks the key `ssh` would check first from `ssh-keyscan` output.
fn pick_key(scan_output: &str) -> Option<HostKey> {
    let keys: Vec<(String, String)> = scan_output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _name = f.next()?;
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect();
    KEY_TYPES.iter().find_map(|want| {
        // ssh-keyscan names RSA keys ssh-rsa whichever signature type it asked for.
        let want = if *want == "rsa-sha2-512" {
            "ssh-rsa"
        } else {
            want
        };
        keys.iter().find(|(t, _)| t == want).and_then(|(t, b)| {
            Some(HostKey {
                key_type: t.clone(),
                blob: b.clone(),
                fingerprint: Fingerprint::of_blob(b)?,
            })
        })
    })
}

/// Asks the host for its key with `ssh-keyscan` (OpenSSH's client tools).
pub fn scan(target: &SshTarget) -> Result<HostKey, HostKeyError> {
    let err = |reason: String| HostKeyError::Scan {
        host: target.known_hosts_name(),
        reason,
    };
    let out = Command::new("ssh-keyscan")
        .args(["-T", &SCAN_TIMEOUT_SECS.to_string()])
        .args(["-p", &target.port.to_string()])
        .args(["-t", "ed25519,ecdsa,rsa", "--", &target.host])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            err(format!(
                "cannot run ssh-keyscan (package openssh-client): {e}"
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    pick_key(&text).ok_or_else(|| {
        let said = String::from_utf8_lossy(&out.stderr);
        let said: String = said
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("; ");
        err(if said.trim().is_empty() {
            format!(
                "no SSH server answered on port {} within {SCAN_TIMEOUT_SECS} s",
                target.port
            )
        } else {
            said.chars().take(500).collect()
        })
    })
}

/// How long a scan may take at most (ssh-keyscan's timeout is per step).
pub const SCAN_LIMIT: Duration = Duration::from_secs(20);

/// The decision for adding a host: trusted already, stored now because the admin accepted
/// exactly the presented fingerprint, or an error that says what to do.
pub fn verify_or_accept(
    known: &KnownHosts,
    target: &SshTarget,
    presented: HostKey,
    accepted: Option<&Fingerprint>,
) -> Result<HostKey, HostKeyError> {
    let host = target.known_hosts_name();
    match known.check(target, presented)? {
        KeyCheck::Known(key) => Ok(key),
        KeyCheck::Changed {
            presented,
            trusted,
            line,
        } => Err(HostKeyError::Changed(Box::new(KeyChange {
            host,
            key_type: presented.key_type,
            trusted: trusted.0,
            presented: presented.fingerprint.0,
            file: known.path.display().to_string(),
            line,
        }))),
        KeyCheck::Revoked { presented, line } => Err(HostKeyError::Revoked(Box::new(KeyChange {
            host,
            key_type: presented.key_type,
            trusted: String::new(),
            presented: presented.fingerprint.0,
            file: known.path.display().to_string(),
            line,
        }))),
        KeyCheck::Unknown(key) => match accepted {
            None => Err(HostKeyError::Unknown {
                host,
                key_type: key.key_type,
                fingerprint: key.fingerprint.0,
            }),
            Some(fp) if *fp != key.fingerprint => Err(HostKeyError::Mismatch {
                host,
                accepted: fp.0.clone(),
                presented: key.fingerprint.0,
            }),
            Some(_) => {
                known.add(target, &key)?;
                Ok(key)
            }
        },
    }
}

/// Whether a libvirt error says the SSH host key was refused: `ssh`'s own words, or libvirt's
/// for its in-process transports (an unknown key "was not accepted", or "can't verify the
/// session host key" when nobody can be asked; a changed one "differs from stored identity").
pub fn refused_by_ssh(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("host key verification failed")
        || (r.contains("ssh host key for") && r.contains("was not accepted"))
        || r.contains("can't verify the session host key")
        || r.contains("differs from stored identity")
}

/// What the monitor and errors say when SSH refused a host's key.
pub const REFUSED_KEY_HINT: &str = "the host's SSH key is not one Flotilla trusts (unknown, or \
     changed since it was trusted): nothing is done on that host until the key is verified — \
     flotillactl host check NAME (or Test connection in the Add host wizard) shows the key it \
     presents now, and host trust-key NAME FINGERPRINT trusts it once the old line is removed";

/// Whether a libvirt error says the host refused every SSH key offered, or a key file needed a
/// passphrase nobody could type (`ssh`'s and `libssh2`'s words).
pub fn login_refused(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("permission denied (publickey")
        || r.contains("authentication methods with credentials were rejected")
        || r.contains("can't retrieve private key passphrase")
}

/// What errors say when the SSH login was refused.
pub const LOGIN_REFUSED_HINT: &str = "the host refused the SSH keys offered. Flotilla offers the \
     keys of your ssh-agent (SSH_AUTH_SOCK) and the key file named by keyfile= in the URI (over \
     qemu+ssh also those your ~/.ssh/config names); a key with a passphrase works only through \
     the agent (ssh-add it first): Flotilla never asks for a passphrase or a password";

/// The transports that reach a host through SSH: `ssh` runs the `ssh` program, `libssh2`
/// speaks SSH inside the process (`libssh` is refused: `model/uri.rs`).
pub const SSH_TRANSPORTS: &[&str] = &["ssh", "libssh2"];

/// A path as a URI query value.
fn query_value(path: &Path) -> String {
    let mut encoded = String::new();
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// The URI libvirt is given for a host: for `+ssh`, Flotilla's wrapper as `command=`; for
/// `+libssh2`, Flotilla's known-hosts file, checked strictly.
pub fn connect_uri(uri: &str, known: Option<&KnownHosts>) -> String {
    let transport = uri
        .split_once("://")
        .and_then(|(s, _)| s.split_once('+'))
        .map(|(_, t)| t);
    let extra = match (known, transport) {
        (Some(k), Some("ssh")) => format!("command={}", query_value(&k.wrapper_path())),
        (Some(k), Some("libssh2")) => format!(
            "known_hosts={}&known_hosts_verify=normal",
            query_value(k.path())
        ),
        _ => return uri.to_owned(),
    };
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{extra}")
}

/// How `ssh` is told to reach the host of a `+ssh` URI: its options (`-p`, `-l`, `-i`) and the
/// host, as libvirt passes them.
pub fn ssh_args(uri: &str) -> Result<Option<Vec<String>>, HostKeyError> {
    let Some(target) = SshTarget::of_uri(uri)? else {
        return Ok(None);
    };
    let parsed = url::Url::parse(uri).map_err(|e| HostKeyError::Scan {
        host: target.known_hosts_name(),
        reason: format!("not a valid URI: {e}"),
    })?;
    let mut args = vec!["-p".to_owned(), target.port.to_string()];
    if !parsed.username().is_empty() {
        args.extend(["-l".to_owned(), parsed.username().to_owned()]);
    }
    if let Some((_, key)) = parsed.query_pairs().find(|(k, _)| k == "keyfile") {
        args.extend(["-i".to_owned(), key.into_owned()]);
    }
    args.extend(["--".to_owned(), target.host]);
    Ok(Some(args))
}

/// A VNC console on a `+ssh` host, forwarded to a local port through an SSH connection of its
/// own (as virt-manager tunnels consoles): `ssh -N -L`, run through Flotilla's wrapper, so the
/// host key is checked against Flotilla's file. The forward ends when this is dropped.
#[derive(Debug)]
pub struct ConsoleTunnel {
    child: std::process::Child,
    /// `127.0.0.1:PORT` on this machine.
    pub local: String,
}

impl Drop for ConsoleTunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ConsoleTunnel {
    /// Forwards `remote` (`127.0.0.1:5900` as the host sees it) of the host in `uri`.
    /// Waits (at most 15 s) until the local end accepts connections.
    pub fn open(uri: &str, wrapper: &Path, remote: &str) -> Result<Self, HostKeyError> {
        let err = |reason: String| HostKeyError::Scan {
            host: uri.chars().take(200).collect(),
            reason,
        };
        let args = ssh_args(uri)?.ok_or_else(|| err("the host is not reached over SSH".into()))?;
        let ok_remote = remote.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && p.parse::<u16>().is_ok() && !h.contains(['/', ' '])
        });
        if !ok_remote {
            return Err(err(format!("{} is not a HOST:PORT", quote_input(remote))));
        }
        // A free local port: the kernel picks one, the listener is closed, ssh binds it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("no free local port: {e}")))?
            .port();
        let local = format!("127.0.0.1:{port}");
        let child = Command::new(wrapper)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("{local}:{remote}"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", wrapper.display())))?;
        let mut tunnel = Self { child, local };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = tunnel.child.try_wait() {
                let mut said = String::new();
                if let Some(mut e) = tunnel.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut said);
                }
                return Err(err(format!(
                    "ssh ended ({status}): {}",
                    said.trim().chars().take(500).collect::<String>()
                )));
            }
            if std::net::TcpStream::connect(&tunnel.local).is_ok() {
                return Ok(tunnel);
            }
            if std::time::Instant::now() >= deadline {
                return Err(err("the SSH tunnel did not open within 15 s".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key made with ssh-keygen -t ed25519.
    const BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIc3xIzyHLqOc/AAYb6Ia0Bn9Uy0rQLyDelUfFw43Lwj";

    fn target(host: &str, port: u16) -> SshTarget {
        SshTarget {
            host: host.into(),
            port,
        }
    }

    fn key(blob: &str) -> HostKey {
        HostKey {
            key_type: "ssh-ed25519".into(),
            blob: blob.into(),
            fingerprint: Fingerprint::of_blob(blob).unwrap(),
        }
    }

    #[test]
    fn the_fingerprint_is_the_one_ssh_keygen_prints() {
        let dir = tempfile::tempdir().unwrap();
        let pub_file = dir.path().join("k.pub");
        std::fs::write(&pub_file, format!("ssh-ed25519 {BLOB} x\n")).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&pub_file)
            .output()
            .expect("ssh-keygen (openssh-client)");
        let printed = String::from_utf8_lossy(&out.stdout);
        let expected = printed.split_whitespace().nth(1).unwrap();
        assert_eq!(Fingerprint::of_blob(BLOB).unwrap().as_str(), expected);
        assert!(Fingerprint::parse(expected).is_ok());
    }

    #[test]
    fn garbage_huge_and_md5_fingerprints_are_refused_with_a_reason() {
        for (bad, says) in [
            ("", "must start with SHA256:"),
            ("yes", "must start with SHA256:"),
            ("SHA256:", "wrong length"),
            ("SHA256:!!!!", "not base64"),
            ("SHA256:AAAA", "wrong length"),
            ("MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", "MD5"),
            ("SHA256:$(rm -rf /)", "not base64"),
        ] {
            let e = Fingerprint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let huge = format!("SHA256:{}", "A".repeat(1_000_000));
        let e = Fingerprint::parse(&huge).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
        assert!(
            e.len() < 600,
            "the error quotes a huge input whole: {}",
            e.len()
        );
    }

    #[test]
    fn ssh_targets_come_from_ssh_uris_only_and_hostile_names_are_refused() {
        assert_eq!(
            SshTarget::of_uri("qemu+ssh://admin@h1.example.org/system").unwrap(),
            Some(target("h1.example.org", 22))
        );
        assert_eq!(
            SshTarget::of_uri("qemu+ssh://admin@10.0.0.1:2222/system?keyfile=/k").unwrap(),
            Some(target("10.0.0.1", 2222))
        );
        assert_eq!(SshTarget::of_uri("qemu:///system").unwrap(), None);
        assert_eq!(SshTarget::of_uri("qemu+tls://h1/system").unwrap(), None);
        assert_eq!(
            SshTarget::of_uri("qemu+libssh2://admin@h2:2200/system").unwrap(),
            Some(target("h2", 2200))
        );
        assert_eq!(
            SshTarget::of_uri("qemu+libssh2://admin@h3/system").unwrap(),
            Some(target("h3", 22))
        );
        for hostile in [
            "qemu+ssh://-oProxyCommand=touch%20x/system",
            "qemu+libssh2://-oProxyCommand=touch%20x/system",
            "qemu+libssh2:///system",
            "qemu+ssh:///system",
            "qemu+ssh://a*b/system",
        ] {
            assert!(SshTarget::of_uri(hostile).is_err(), "{hostile}");
        }
        assert_eq!(target("h", 22).known_hosts_name(), "h");
        assert_eq!(target("h", 2222).known_hosts_name(), "[h]:2222");
    }

    #[test]
    fn an_unknown_key_is_stored_only_with_its_exact_fingerprint_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::in_data_dir(dir.path());
        let t = target("10.78.0.2", 22);
        let k = key(BLOB);
        // Unknown, not accepted: nothing stored.
        let e = verify_or_accept(&known, &t, k.clone(), None).unwrap_err();
        assert!(matches!(e, HostKeyError::Unknown { .. }), "{e}");
        assert!(e.to_string().contains(k.fingerprint.as_str()), "{e}");
        assert!(!known.path().exists());
        // A wrong fingerprint: nothing stored.
        let other = key("AAAAC3NzaC1lZDI1NTE5AAAAIBbHYurwyuoObwsVg83VufP/Gpp/g9tKTllEK8pW8kXQ");
        let e = verify_or_accept(&known, &t, k.clone(), Some(&other.fingerprint)).unwrap_err();
        assert!(matches!(e, HostKeyError::Mismatch { .. }), "{e}");
        assert!(!known.path().exists());
        // The right one: stored, in OpenSSH's format, then known.
        verify_or_accept(&known, &t, k.clone(), Some(&k.fingerprint)).unwrap();
        let text = std::fs::read_to_string(known.path()).unwrap();
        assert_eq!(text, format!("10.78.0.2 ssh-ed25519 {BLOB}\n"));
        verify_or_accept(&known, &t, k.clone(), None).unwrap();
        // A changed key: refused even with its fingerprint accepted; the file is unchanged.
        let e = verify_or_accept(&known, &t, other.clone(), Some(&other.fingerprint)).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, HostKeyError::Changed(c) if c.line == 1),
            "{msg}"
        );
        assert!(
            msg.contains("HAS CHANGED") && msg.contains(other.fingerprint.as_str()),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(known.path()).unwrap(), text);
        // The same host on another port is another known-hosts name.
        let e = verify_or_accept(&known, &target("10.78.0.2", 2222), other, None).unwrap_err();
        assert!(matches!(e, HostKeyError::Unknown { .. }), "{e}");
    }

    #[test]
    fn known_hosts_lines_are_read_as_ssh_reads_them() {
        let text = format!(
            "# comment\n\n@revoked * ssh-ed25519 {BLOB}\n|1|abc=|def= ssh-ed25519 {BLOB}\n\
             broken\n@bogus h ssh-ed25519 {BLOB}\nh1,H2\t ssh-ed25519   {BLOB} c o m\n\
             h3 ssh-unknown QUJD\n"
        );
        let lines: Vec<_> = parse_known_hosts(&text).collect();
        let numbers: Vec<usize> = lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [3, 7, 8], "{lines:?}");
        assert_eq!(lines[0].marker, Some(Marker::Revoked));
        assert!(lines[0].names("anything"));
        assert!(lines[1].names("h2") && lines[1].names("h1") && !lines[1].names("h"));
        assert_eq!(lines[1].key, KeyId::of("ssh-ed25519", BLOB));
        assert_eq!(
            lines[2].key,
            KeyId::Opaque("ssh-unknown".into(), "QUJD".into())
        );
    }

    #[test]
    fn host_patterns_match_as_in_ssh() {
        let m = |list: &str, name: &str| {
            pattern_list_matches(&list.split(',').map(String::from).collect::<Vec<_>>(), name)
        };
        assert!(m("h1", "h1") && m("H1", "h1") && m("h1", "H1"));
        assert!(m("*.example.org", "a.example.org") && !m("*.example.org", "example.org"));
        assert!(m("h?", "h1") && !m("h?", "h12") && m("h*", "h") && m("*", "x"));
        assert!(m("a,*", "h") && !m("!h,*", "h") && m("!h,*", "g") && !m("!h", "g"));
        assert!(m("[h]:2222", "[h]:2222") && !m("[h]:2222", "[h]:22") && !m("h", "[h]:22"));
        assert!(m("**a*b", "xxayyb") && !m("a*b", "ab c"));
    }

    #[test]
    fn ssh_uris_get_the_wrapper_libssh_uris_the_file_and_others_nothing() {
        let known = KnownHosts::in_data_dir(Path::new("/home/a b/.local/share/flotilla"));
        let w = Some(&known);
        assert_eq!(
            connect_uri("qemu+ssh://u@h/system", w),
            "qemu+ssh://u@h/system?command=/home/a%20b/.local/share/flotilla/ssh/ssh-flotilla"
        );
        assert_eq!(
            connect_uri("qemu+ssh://u@h/system?keyfile=/k", w),
            "qemu+ssh://u@h/system?keyfile=/k&command=/home/a%20b/.local/share/flotilla/ssh/ssh-flotilla"
        );
        assert_eq!(
            connect_uri("qemu+unix:///system?socket=/s", w),
            "qemu+unix:///system?socket=/s"
        );
        assert_eq!(
            connect_uri("qemu+libssh2://u@h/system?keyfile=/k", w),
            "qemu+libssh2://u@h/system?keyfile=/k&known_hosts=/home/a%20b/.local/share/flotilla/ssh/known_hosts&known_hosts_verify=normal"
        );
        assert_eq!(
            connect_uri("qemu+libssh2://u@h/system", w),
            "qemu+libssh2://u@h/system?known_hosts=/home/a%20b/.local/share/flotilla/ssh/known_hosts&known_hosts_verify=normal"
        );
        assert_eq!(
            connect_uri("qemu+ssh://u@h/system", None),
            "qemu+ssh://u@h/system"
        );
    }

    /// The words libvirt 9.0 and OpenSSH 9.2 / libssh2 1.10 use (seen on the lab), and others
    /// that must not be taken for a key or login refusal.
    #[test]
    fn key_and_login_refusals_are_told_apart_from_other_errors() {
        for key in [
            "Cannot recv data: Host key verification failed.: Connection reset by peer",
            "SSH transport error: No user interaction callback provided: Can't verify the session host key",
            "SSH transport error: SSH host key for '10.78.0.2' (02:DA) was not accepted",
            "!!! SSH HOST KEY VERIFICATION FAILED !!!: Identity of host '10.78.0.2:22' differs from stored identity.",
        ] {
            assert!(refused_by_ssh(key), "{key}");
            assert!(!login_refused(key), "{key}");
        }
        for login in [
            "Cannot recv data: labadmin@10.78.0.2: Permission denied (publickey).: Connection reset by peer",
            "authentication failed: All provided authentication methods with credentials were rejected by the server",
            "SSH transport error: No user interaction callback provided: Can't retrieve private key passphrase",
        ] {
            assert!(login_refused(login), "{login}");
            assert!(!refused_by_ssh(login), "{login}");
        }
        for other in [
            "Cannot recv data: ssh: connect to host 10.78.0.2 port 22: Connection refused",
            "Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory",
            "",
        ] {
            assert!(!refused_by_ssh(other) && !login_refused(other), "{other}");
        }
    }

    #[test]
    fn the_wrapper_is_written_once_and_quotes_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("it's here");
        let known = KnownHosts::in_data_dir(&data);
        let w = known.ensure_wrapper().unwrap();
        let text = std::fs::read_to_string(&w).unwrap();
        assert!(text.contains("UserKnownHostsFile='"), "{text}");
        assert!(text.contains(r"it'\''s here"), "{text}");
        assert!(text.contains("StrictHostKeyChecking=yes"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&w).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn ssh_is_told_the_port_user_and_key_file_of_the_uri() {
        assert_eq!(
            ssh_args("qemu+ssh://admin@h1:2222/system?keyfile=/k/id&no_tty=1").unwrap(),
            Some(
                ["-p", "2222", "-l", "admin", "-i", "/k/id", "--", "h1"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            ssh_args("qemu+ssh://h1/system").unwrap(),
            Some(["-p", "22", "--", "h1"].map(String::from).to_vec())
        );
        assert_eq!(ssh_args("qemu:///system").unwrap(), None);
    }

    #[test]
    fn the_key_ssh_prefers_is_picked_from_a_scan() {
        let out = "# h:22 SSH-2.0-OpenSSH_9.2\nh ssh-rsa RSABLOB\nh ecdsa-sha2-nistp256 AAAA\nh ssh-ed25519 AAAA\n";
        assert_eq!(pick_key(out).unwrap().key_type, "ssh-ed25519");
        let rsa_only = format!("h ssh-rsa {BLOB}\n");
        assert_eq!(pick_key(&rsa_only).unwrap().key_type, "ssh-rsa");
        assert!(pick_key("garbage\n\n").is_none());
    }
}
