//! Secrets that are not in the inventory (a host's BMC password): the user's Secret Service
//! (GNOME Keyring, KWallet, KeePassXC — through `keyring`'s pure-Rust D-Bus client) when the
//! session has one, else — a server, the CLI over SSH, or `FLOTILLA_SECRETS=file` — a private
//! file in the data directory (`secrets/bmc-<host>`, 0600 in a 0700 folder). Both front
//! doors read both places: the monitor in `flotillactl` finds what the desktop app stored.
//!
//! A secret never appears in an error, a log line or a `Debug` output: errors name the host
//! and the place, and the Secret Service's own errors are reduced to their kind.

use crate::model::{HostName, Secret, SecretPlace};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `file`: keep secrets in the data directory even when a Secret Service is there.
pub const SECRETS_ENV: &str = "FLOTILLA_SECRETS";

/// The Secret Service items' `service` attribute.
const SERVICE: &str = "flotilla-bmc";

/// How long one Secret Service call may take (a locked keyring may show an unlock prompt).
const SERVICE_LIMIT: Duration = Duration::from_secs(8);

/// Longest secret file read (bytes).
const MAX_FILE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no BMC password is stored for host {host} ({}); set it with: flotillactl host set {host} --bmc-password-stdin", looked.join("; "))]
    Missing { host: String, looked: Vec<String> },
    #[error("cannot {what} the BMC password of host {host} in {}", path.display())]
    File {
        host: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the BMC password of host {host} in {} is not usable: {problem}", path.display())]
    BadFile {
        host: String,
        path: PathBuf,
        problem: String,
    },
}

/// Where secrets go for one data directory.
#[derive(Debug, Clone)]
pub struct Secrets {
    data_dir: PathBuf,
    prefer_file: bool,
    limit: Duration,
}

/// Why the Secret Service could not be used, in words without the secret.
#[derive(Debug)]
enum ServiceFail {
    NoEntry,
    Failed(String),
}

impl Secrets {
    /// For `data_dir`; with `prefer_file`, new secrets go into files even when a Secret
    /// Service is there (reads still look in both places).
    pub fn new(data_dir: &Path, prefer_file: bool) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            prefer_file,
            limit: SERVICE_LIMIT,
        }
    }

    /// Whether the environment asks for files (`FLOTILLA_SECRETS=file`).
    pub fn files_wanted_by_env() -> bool {
        std::env::var(SECRETS_ENV).is_ok_and(|v| v.trim() == "file")
    }

    /// The file that holds `host`'s BMC password when it is kept in a file.
    pub fn file_of(&self, host: &HostName) -> PathBuf {
        self.data_dir.join("secrets").join(format!("bmc-{host}"))
    }

    /// The Secret Service item's user attribute: the host and the data directory (two
    /// inventories on one desktop may have hosts of the same name).
    fn account(&self, host: &HostName) -> String {
        format!("{host}@{}", self.data_dir.display())
    }

    /// Stores `host`'s BMC password: in the Secret Service unless there is none (or
    /// `FLOTILLA_SECRETS=file`), else in a private file. The copy in the other place, if
    /// any, is removed. Blocks (up to a few seconds for the Secret Service).
    pub fn store(&self, host: &HostName, secret: &Secret) -> Result<SecretPlace, SecretError> {
        if !self.prefer_file {
            match self.service_set(host, secret) {
                Ok(()) => {
                    self.file_remove(host)?;
                    return Ok(SecretPlace::SecretService);
                }
                Err(why) => tracing::info!(
                    host = %host,
                    reason = %why,
                    "no Secret Service to keep the BMC password in; it goes into a private file"
                ),
            }
        }
        self.file_store(host, secret)?;
        // Asked to use a file although there may be a Secret Service: an older copy there
        // would be found by nobody first, but it is the old password; remove it.
        if self.prefer_file {
            if let Err(ServiceFail::Failed(why)) = self.service_remove(host) {
                tracing::debug!(host = %host, reason = %why, "could not look for an older copy in the Secret Service");
            }
        }
        Ok(SecretPlace::File)
    }

    /// `host`'s BMC password and where it was found: the file first (no D-Bus round trip),
    /// then the Secret Service.
    pub fn load(&self, host: &HostName) -> Result<(Secret, SecretPlace), SecretError> {
        let path = self.file_of(host);
        let mut looked = Vec::new();
        match self.file_load(host)? {
            Some(secret) => return Ok((secret, SecretPlace::File)),
            None => looked.push(format!("not in {}", path.display())),
        }
        match self.service_get(host) {
            Ok(secret) => return Ok((secret, SecretPlace::SecretService)),
            Err(ServiceFail::NoEntry) => looked.push("not in the Secret Service".into()),
            Err(ServiceFail::Failed(why)) => {
                looked.push(format!("the Secret Service could not be asked: {why}"))
            }
        }
        Err(SecretError::Missing {
            host: host.to_string(),
            looked,
        })
    }

    /// Removes `host`'s BMC password from the file and, with `service`, from the Secret
    /// Service. A Secret Service that cannot be reached is no error (there may be none); it
    /// is logged, and returned as a warning.
    pub fn remove(&self, host: &HostName, service: bool) -> Result<Option<String>, SecretError> {
        self.file_remove(host)?;
        if !service {
            return Ok(None);
        }
        match self.service_remove(host) {
            Ok(()) | Err(ServiceFail::NoEntry) => Ok(None),
            Err(ServiceFail::Failed(why)) => {
                let warning = format!(
                    "the Secret Service could not be asked to remove the BMC password of host {host} ({why}); if the desktop app stored it there, remove the item \"{SERVICE}\" / \"{}\" with your keyring tool (seahorse, `secret-tool clear service {SERVICE} username '{}'`)",
                    self.account(host),
                    self.account(host)
                );
                tracing::warn!("{warning}");
                Ok(Some(warning))
            }
        }
    }

    // ---- the file ----------------------------------------------------------------------

    fn file_store(&self, host: &HostName, secret: &Secret) -> Result<(), SecretError> {
        let path = self.file_of(host);
        let err = |what, source| SecretError::File {
            host: host.to_string(),
            what,
            path: path.clone(),
            source,
        };
        let dir = self.data_dir.join("secrets");
        crate::files::private_dir_all(&dir).map_err(|e| err("store", e))?;
        // A folder left readable (made by hand, an older build): made private first.
        crate::files::make_private(&dir).map_err(|e| err("store", e))?;
        let tmp = dir.join(format!(".bmc-{host}.{}.tmp", std::process::id()));
        let written = crate::files::private_file(&tmp)
            .and_then(|mut f| {
                f.write_all(secret.expose().as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err("store", e));
        }
        Ok(())
    }

    fn file_load(&self, host: &HostName) -> Result<Option<Secret>, SecretError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = self.file_of(host);
        let bad = |problem: String| SecretError::BadFile {
            host: host.to_string(),
            path: path.clone(),
            problem,
        };
        // Not through a symlink, and never waiting on a FIFO.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(bad(
                    "it is a symbolic link; remove it and set the password again".into(),
                ))
            }
            Err(e) => {
                return Err(SecretError::File {
                    host: host.to_string(),
                    what: "read",
                    path,
                    source: e,
                })
            }
        };
        let meta = file.metadata().map_err(|e| SecretError::File {
            host: host.to_string(),
            what: "read",
            path: path.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(bad("it is not a regular file".into()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(bad(format!(
                "others may read it (mode {:o}); set the password again so it is written private",
                meta.mode() & 0o777
            )));
        }
        let mut text = String::new();
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|_| bad("it is not UTF-8 text".into()))?;
        if text.len() as u64 > MAX_FILE {
            return Err(bad(format!("it is larger than {MAX_FILE} bytes")));
        }
        crate::model::secret_from_text(&text)
            .map(Some)
            .map_err(|e| bad(e.problem))
    }

    fn file_remove(&self, host: &HostName) -> Result<(), SecretError> {
        let path = self.file_of(host);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SecretError::File {
                host: host.to_string(),
                what: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    // ---- the Secret Service --------------------------------------------------------------

    /// Runs `call` on a thread of its own and waits at most `limit`: a Secret Service that
    /// hangs (an unlock prompt nobody answers) must not hang Flotilla. `keyring` drives its
    /// D-Bus connection on async-io, independently of any tokio runtime.
    fn service<T: Send + 'static>(
        &self,
        host: &HostName,
        call: impl FnOnce(&keyring::Entry) -> keyring::Result<T> + Send + 'static,
    ) -> Result<T, ServiceFail> {
        let account = self.account(host);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("secret-service".into())
            .spawn(move || {
                let result = keyring::Entry::new(SERVICE, &account).and_then(|e| call(&e));
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Err(ServiceFail::Failed(format!("cannot start a thread: {e}")));
        }
        match rx.recv_timeout(self.limit) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(keyring::Error::NoEntry)) => Err(ServiceFail::NoEntry),
            Ok(Err(e)) => Err(ServiceFail::Failed(describe(&e))),
            Err(_) => Err(ServiceFail::Failed(format!(
                "it did not answer within {} s (is the keyring locked?)",
                self.limit.as_secs()
            ))),
        }
    }

    fn service_set(&self, host: &HostName, secret: &Secret) -> Result<(), ServiceFail> {
        let secret = secret.clone();
        self.service(host, move |e| e.set_password(secret.expose()))
    }

    fn service_get(&self, host: &HostName) -> Result<Secret, ServiceFail> {
        let text = self.service(host, |e| e.get_password())?;
        Secret::new(text).map_err(|e| {
            ServiceFail::Failed(format!("the item there is not usable: {}", e.problem))
        })
    }

    fn service_remove(&self, host: &HostName) -> Result<(), ServiceFail> {
        self.service(host, |e| e.delete_credential())
    }
}

impl std::fmt::Display for ServiceFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoEntry => f.write_str("no such item"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

/// A keyring error in words, never with a secret: `BadEncoding` carries the stored bytes,
/// so it is named, not shown.
fn describe(e: &keyring::Error) -> String {
    let text = match e {
        keyring::Error::BadEncoding(_) => "the stored item is not UTF-8 text".to_owned(),
        keyring::Error::Ambiguous(items) => {
            format!("{} items match; remove the extra ones", items.len())
        }
        keyring::Error::NoStorageAccess(inner) => format!("no access ({inner})"),
        keyring::Error::PlatformFailure(inner) => inner.to_string(),
        other => other.to_string(),
    };
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Files only: no Secret Service is asked (the tests must not touch a developer's
    /// keyring). The Secret Service path is tested against a real GNOME Keyring in
    /// `tests/secret_service.rs`.
    fn files(dir: &Path) -> Secrets {
        Secrets {
            data_dir: dir.to_owned(),
            prefer_file: true,
            limit: Duration::from_secs(2),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_secret_is_private_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = files(dir.path());
        let h = HostName::parse("h1").unwrap();
        let pw = Secret::parse("s3cret pass:word").unwrap();
        s.file_store(&h, &pw).unwrap();
        let path = s.file_of(&h);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(s.file_load(&h).unwrap(), Some(pw.clone()));
        // A replacement leaves no temporary file behind.
        s.file_store(&h, &Secret::parse("new").unwrap()).unwrap();
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        s.file_remove(&h).unwrap();
        assert!(!path.exists());
        s.file_remove(&h).unwrap();
        assert_eq!(s.file_load(&h).unwrap(), None);
    }

    #[test]
    fn unsafe_secret_files_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = files(dir.path());
        let h = HostName::parse("h1").unwrap();
        s.file_store(&h, &Secret::parse("hunter2").unwrap())
            .unwrap();
        let path = s.file_of(&h);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = s.file_load(&h).unwrap_err().to_string();
        assert!(e.contains("others may read it (mode 644)"), "{e}");
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let e = s.file_load(&h).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&path).unwrap();
        for (content, says) in [
            (vec![b'x'; 5000], "larger than 4096"),
            (b"hunter2\nmore".to_vec(), "control character"),
            (vec![0xff, 0xfe], "not UTF-8"),
            (Vec::new(), "must not be empty"),
        ] {
            std::fs::write(&path, &content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = s.file_load(&h).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("hunter2") && e.len() < 300, "{e}");
        }
    }
}
