//! `host set/add … --bmc …`: a host's BMC for power fencing. The password never comes from
//! the command line (it would be in the shell history and in `ps`): from stdin or a file.

use crate::error::{ApiError, ErrorCode};
use crate::model::{secret_from_text, Host, Secret};
use crate::ops::bmc::BmcInput;
use crate::ops::requests::HostNetworkChange;
use crate::ops::Engine;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Longest password input read (bytes): more is refused, not cut.
const MAX_INPUT: u64 = 4096;

#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct BmcArgs {
    /// The host's BMC (Redfish), for power fencing: https://ADDRESS[:PORT]. http:// only to
    /// 127.0.0.1 or [::1] (the password would otherwise cross the network in clear).
    #[arg(long, value_name = "URL")]
    pub bmc: Option<String>,
    /// The Redfish system id of this host on the BMC (often 1; `host bmc-check` lists them
    /// when it is wrong).
    #[arg(long, value_name = "ID")]
    pub bmc_system: Option<String>,
    /// The BMC user (the Operator role suffices to power off).
    #[arg(long, value_name = "USER")]
    pub bmc_user: Option<String>,
    /// Read the BMC password from standard input (typed without echo on a terminal; else
    /// everything up to the end, one trailing line break dropped).
    #[arg(long, conflicts_with = "bmc_password_file")]
    pub bmc_password_stdin: bool,
    /// Read the BMC password from FILE (one trailing line break dropped).
    #[arg(long, value_name = "FILE")]
    pub bmc_password_file: Option<PathBuf>,
    /// PEM file with the BMC's own certificate or the CA that signed it, trusted for this BMC
    /// instead of the system's CA certificates (for a self-signed BMC).
    #[arg(long, value_name = "FILE", conflicts_with = "no_bmc_ca")]
    pub bmc_ca: Option<PathBuf>,
    /// Verify the BMC against the system's CA certificates again.
    #[arg(long)]
    pub no_bmc_ca: bool,
}

impl BmcArgs {
    pub fn is_empty(&self) -> bool {
        self.bmc.is_none()
            && self.bmc_system.is_none()
            && self.bmc_user.is_none()
            && !self.bmc_password_stdin
            && self.bmc_password_file.is_none()
            && self.bmc_ca.is_none()
            && !self.no_bmc_ca
    }

    /// The BMC settings to set: what was given, the rest from `current` (the host's stored
    /// settings). `None` when no BMC option was given. Reads the password and CA files.
    pub fn input(&self, current: Option<&Host>, host: &str) -> Result<Option<BmcInput>, ApiError> {
        if self.is_empty() {
            return Ok(None);
        }
        let stored = current.and_then(|h| h.bmc.as_ref());
        let need = |given: &Option<String>, stored: Option<&String>, flag: &str| {
            given.clone().or_else(|| stored.cloned()).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidInput,
                    format!("{flag} is needed: host {host} has no BMC yet (give --bmc URL --bmc-system ID --bmc-user USER and --bmc-password-stdin or --bmc-password-file)"),
                )
            })
        };
        let url = need(&self.bmc, stored.map(|b| &b.url), "--bmc")?;
        let system = need(&self.bmc_system, stored.map(|b| &b.system), "--bmc-system")?;
        let user = need(&self.bmc_user, stored.map(|b| &b.user), "--bmc-user")?;
        let ca_pem = match (&self.bmc_ca, self.no_bmc_ca) {
            (Some(file), _) => Some(read_limited(file, 256 * 1024, "--bmc-ca")?),
            (None, true) => None,
            (None, false) => stored.and_then(|b| b.ca_pem.clone()),
        };
        let password = if self.bmc_password_stdin {
            Some(password_from_stdin(host)?)
        } else if let Some(file) = &self.bmc_password_file {
            Some(to_secret(&read_limited(
                file,
                MAX_INPUT,
                "--bmc-password-file",
            )?)?)
        } else {
            None
        };
        if password.is_none() && stored.is_none() {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!("the BMC password is needed: host {host} has no BMC yet (give --bmc-password-stdin or --bmc-password-file)"),
            ));
        }
        let input = BmcInput {
            url,
            system,
            user,
            password,
            ca_pem,
        };
        // Checked now, so that `host add` refuses a bad BMC before it adds the host.
        input.check()?;
        Ok(Some(input))
    }
}

fn to_secret(text: &str) -> Result<Secret, ApiError> {
    secret_from_text(text).map_err(|e| ApiError::from(crate::ops::OpError::from(e)))
}

/// A file the admin named, at most `max` bytes of UTF-8 text.
fn read_limited(path: &Path, max: u64, flag: &str) -> Result<String, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("{flag} {}: {why}", path.display()),
        )
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(bad("is a directory".into()));
    }
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|_| bad("is not UTF-8 text".into()))?;
    if text.len() as u64 > max {
        return Err(bad(format!("is larger than {max} bytes")));
    }
    Ok(text)
}

/// The password from stdin: on a terminal typed without echo (`stty -echo`), else read to
/// the end.
fn password_from_stdin(host: &str) -> Result<Secret, ApiError> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("BMC password for host {host}: ");
        let echo_off = std::process::Command::new("stty")
            .arg("-echo")
            .status()
            .is_ok_and(|s| s.success());
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        if echo_off {
            let _ = std::process::Command::new("stty").arg("echo").status();
        }
        eprintln!();
        read.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("cannot read the password: {e}"),
            )
        })?;
        return to_secret(&line);
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidInput,
                "--bmc-password-stdin: standard input is not UTF-8 text",
            )
        })?;
    if text.len() as u64 > MAX_INPUT {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("--bmc-password-stdin: more than {MAX_INPUT} bytes on standard input"),
        ));
    }
    to_secret(&text)
}

/// `host set NAME [--network …] --bmc … | --no-bmc`: the network settings first (when
/// given), then the BMC.
pub(super) async fn host_set(
    engine: &Engine,
    json: bool,
    name: &str,
    (network, gateway, domain_type): (Option<String>, Option<String>, Option<String>),
    bmc: BmcArgs,
    no_bmc: bool,
) -> Result<ExitCode, ApiError> {
    let current = engine.host_show(name)?;
    // Everything read and checked before anything changes.
    let input = bmc.input(Some(&current), name)?;
    let change = HostNetworkChange {
        network,
        gateway,
        domain_type,
    };
    if !change.is_empty() {
        engine.host_change_network(name, Some(&current), &change)?;
    }
    let host = if no_bmc {
        engine.host_set_bmc(name, None).await?
    } else {
        engine.host_set_bmc(name, input).await?
    };
    super::output::host_show(json, &host);
    if !json && host.bmc.is_some() {
        eprintln!("Check it with: flotillactl host bmc-check {name}");
    }
    Ok(ExitCode::SUCCESS)
}
