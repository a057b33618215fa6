//! `flotillactl` — the command line. Thin: parse arguments, call the engine, print.
//!
//! Exit status: 0 success; otherwise [`ErrorCode::exit_status`] (2 also clap's usage errors,
//! 18 also a rollout that paused); `host check` exits 6 or 7 when the host is not ok. The
//! table: docs/cli.md.

mod bmc;
mod docs;
mod hosts;
mod output;
mod units;

use crate::error::{ApiError, ErrorCode};
use crate::ops::hosts::HostInput;
use crate::ops::{resolve_data_dir, Engine};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "flotillactl", version, about = "Manage Flotilla: hosts, images, definitions, units", long_about = None)]
struct Cli {
    /// Where the inventory lives (default: $FLOTILLA_DATA_DIR, else ~/.local/share/flotilla).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (errors too, as {"error": {code, message, detail}}).
    #[arg(long, global = true)]
    json: bool,
    /// Log in more detail (debug) to <data dir>/logs; FLOTILLA_LOG sets the filter exactly.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Managed machines (libvirt hosts).
    #[command(subcommand)]
    Host(HostCommand),
    /// Master images: the library of immutable versions, and their copies on hosts.
    #[command(subcommand)]
    Image(ImageCommand),
    /// App-server definition directories: definition.toml + packages, versioned.
    #[command(subcommand)]
    Def(DefCommand),
    /// Management units: the servers of one application, deployed and operated together.
    #[command(subcommand)]
    Unit(units::UnitCommand),
    /// Load balancers (HAProxy runtime API, Caddy admin API).
    #[command(subcommand)]
    Lb(units::LbCommand),
    /// The operation journal: list, and resume or unwind an interrupted operation.
    #[command(subcommand)]
    Op(units::OpCommand),
    /// What failed hosts do to the units (what-if with --fail), and the N+1 audit: what
    /// losing any one host would do.
    Impact {
        /// A host to take as failed (repeat for several); none: the units as they are now
        /// (with the hosts the monitor says failed).
        #[arg(long = "fail", visible_alias = "host", value_name = "HOST")]
        fail: Vec<String>,
        #[command(subcommand)]
        only: Option<ImpactCommand>,
    },
    /// Watch every host until Ctrl-C: libvirt probes and the load balancer's health checks of
    /// its servers. Prints each state change (time, host, old → new, why); --json: one JSON
    /// object per line. Writes each host's state to the inventory (`host list` shows it). One
    /// monitor per inventory: while another runs (the desktop app), this one stands by.
    Monitor {
        /// Milliseconds between probes of each host.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        interval_ms: u64,
        /// Milliseconds one probe may take before it counts as failed.
        #[arg(long, default_value_t = 2000, value_name = "MS")]
        call_timeout_ms: u64,
        /// Missed probes that make a host suspect.
        #[arg(long, default_value_t = 1, value_name = "N")]
        misses_to_suspect: u32,
        /// Probe intervals without an answer after which libvirt counts as lost (failed when
        /// the load balancer also sees the host's servers down).
        #[arg(long, default_value_t = 5, value_name = "N")]
        misses_to_failed: u32,
    },
    /// The audit log: who changed what, when, and whether it worked.
    Audit {
        /// How many entries, newest first.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    #[command(flatten)]
    Docs(docs::DocsCommand),
}

#[derive(Debug, Subcommand)]
enum ImpactCommand {
    /// Only the N+1 audit: for each host, the units that would go below their minimum if it
    /// failed alone, those with every server on it, and those the others have no room for.
    Audit,
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Register a host: connects to it, checks the pool and bridge, records what it found.
    Add {
        name: String,
        /// libvirt URI, e.g. qemu:///system, qemu+ssh://admin@h1/system, test:///path/node.xml
        #[arg(long)]
        uri: String,
        /// Storage pool for server disks.
        #[arg(long, default_value = "default")]
        pool: String,
        /// Bridge the servers' network interfaces attach to.
        #[arg(long, default_value = "virbr0")]
        bridge: String,
        /// For a qemu+ssh host whose key Flotilla does not know yet: the SHA256 fingerprint
        /// you checked (as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the
        /// host). Without it, `host add` shows the key and asks on a terminal, and refuses
        /// otherwise.
        #[arg(long, value_name = "SHA256:…")]
        accept_host_key: Option<String>,
        #[command(flatten)]
        bmc: bmc::BmcArgs,
    },
    /// List hosts with status and capacity.
    List,
    /// Show one host.
    Show { name: String },
    /// Connect again and record what is found now.
    Check { name: String },
    /// Unregister a host (refused while servers or images on it are in the inventory).
    Remove { name: String },
    /// Trust the SSH host key a registered qemu+ssh host presents now, given its SHA256
    /// fingerprint (after a reinstall: remove the old key first, as the refusal says). A key
    /// that differs from a trusted one is still refused.
    TrustKey {
        name: String,
        /// The fingerprint you checked on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).
        #[arg(long, value_name = "SHA256:…")]
        fingerprint: String,
    },
    /// Remove from a host that came back the copies of servers that were re-created
    /// elsewhere meanwhile (`unit recover`): their domains and volumes there. The monitor does
    /// it before such a host is ready again; this does it now.
    Reconcile { name: String },
    /// Set the network servers on this host use (their addresses must lie in it), the
    /// gateway, and the domain type (kvm or qemu; auto: what the host's capabilities offer);
    /// and the host's BMC for power fencing (Redfish).
    Set {
        name: String,
        /// The bridge's network, e.g. 10.77.0.0/24.
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long, value_parser = ["kvm", "qemu", "auto"])]
        domain_type: Option<String>,
        #[command(flatten)]
        bmc: bmc::BmcArgs,
        /// Remove the host's BMC and its stored password.
        #[arg(long, conflicts_with_all = ["bmc", "bmc_system", "bmc_user", "bmc_password_stdin", "bmc_password_file", "bmc_ca", "no_bmc_ca"])]
        no_bmc: bool,
    },
    /// Read the host's power state from its BMC (Redfish). Changes nothing.
    BmcCheck { name: String },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import a qcow2 or raw disk image as a new version of NAME (created if new). The file is
    /// probed for its real format, checked, flattened into qcow2 and made read-only.
    Import {
        name: String,
        file: PathBuf,
        #[arg(long, default_value = "")]
        notes: String,
        /// How the image boots from its disk.
        #[arg(long, default_value = "bios", value_parser = ["bios", "uefi"], conflicts_with = "kernel")]
        firmware: String,
        /// Boot this kernel directly (kept in the library with the version).
        #[arg(long, requires = "cmdline")]
        kernel: Option<PathBuf>,
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// Kernel command line for direct kernel boot.
        #[arg(long, requires = "kernel")]
        cmdline: Option<String>,
    },
    /// List every version of every image.
    List,
    /// Show NAME (its newest version) or NAME:VERSION.
    Show { image: String },
    /// Make sure a version is in a host's pool: uploads it (verified by sha256) unless a
    /// verified copy is already there.
    Ensure {
        image: String,
        #[arg(long)]
        host: String,
    },
    /// Delete NAME:VERSION: its copies on hosts, its record and its files. Refused while a later
    /// version or a unit uses it.
    Delete { image: String },
    /// Start a builder VM for a new version of NAME, from a library version or an installer ISO.
    /// Work in it (console: virt-viewer), then `image capture NAME`.
    Build {
        name: String,
        #[arg(long)]
        host: String,
        /// Library version to start from: IMAGE or IMAGE:VERSION.
        #[arg(long, conflicts_with = "iso", required_unless_present = "iso")]
        from: Option<String>,
        /// Installer ISO to boot (with a blank disk).
        #[arg(long)]
        iso: Option<PathBuf>,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        cpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
        memory: u64,
        /// Disk size, e.g. 20G (default: the base's size; 10G for an installer).
        #[arg(long, value_parser = parse_size)]
        disk_size: Option<u64>,
        /// A file of shell commands the builder runs at first boot (one per line).
        #[arg(long)]
        script: Option<PathBuf>,
        /// Static address of the builder on the host's bridge, e.g. 10.77.0.240/24 (default: DHCP).
        #[arg(long)]
        address: Option<String>,
        #[arg(long, requires = "address")]
        gateway: Option<String>,
        /// kvm for hardware virtualization, qemu for software emulation.
        #[arg(long, default_value = "qemu", value_parser = ["kvm", "qemu"])]
        virt_type: String,
    },
    /// Shut the builder of NAME down, capture its disk as the next version, remove the builder.
    Capture {
        name: String,
        /// Seal the image: `cloud-init` runs `cloud-init clean --logs` in the guest before the
        /// shutdown (needs the QEMU guest agent in it); `sysprep` runs virt-sysprep on the
        /// captured file (needs libguestfs-tools here). Repeat for both.
        #[arg(long, value_enum)]
        seal: Vec<SealArg>,
        /// Power the builder off if it ignores the shutdown request (unsaved guest data is lost).
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the guest to shut down.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: u64,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Remove the builder of NAME and everything it made, without capturing.
    BuilderAbort { name: String },
    /// List running builders.
    Builders,
    /// Forward the VNC console of NAME's builder on a qemu+ssh host to a local port through
    /// SSH (host key checked against Flotilla's known-hosts file) until Ctrl-C; open it with
    /// the viewer command printed.
    Console { name: String },
    /// Print the end of a builder's serial console (read through libvirt).
    Serial {
        name: String,
        /// How much of the end to print.
        #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
        bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum DefCommand {
    /// Create a definition from the annotated example (version 1).
    Create { name: String },
    /// List definitions with their newest version.
    List,
    /// Show a version's definition.toml and packages (default: the newest).
    Show {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Edit definition.toml in $EDITOR; saved as a new version when it is valid.
    Edit { name: String },
    /// Replace definition.toml with FILE (validated as a whole) as a new version.
    SetFile {
        name: String,
        file: PathBuf,
        /// The version FILE was edited from: refused, with what changed since, when a newer
        /// version exists. Without it FILE replaces whatever is newest.
        #[arg(long, value_name = "VERSION")]
        base: Option<u32>,
    },
    /// Copy files in as packages (streamed, sha256 and size recorded) as one new version.
    AddPackage {
        name: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove a package (new version).
    RemovePackage { name: String, file: String },
    /// Take in an existing directory (definition.toml + packages/), validated as a whole.
    Import { name: String, dir: PathBuf },
    /// Write a version as a .tar.gz.
    Export {
        name: String,
        version: u32,
        out: PathBuf,
    },
    /// Versions, oldest first, with what changed.
    History { name: String },
    /// Field and package changes between two versions.
    Diff { name: String, from: u32, to: u32 },
    /// Write a version's app payload disk (deterministic FAT image); prints its sha256.
    Payload {
        name: String,
        version: u32,
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SealArg {
    CloudInit,
    Sysprep,
}

/// `20G`, `512M`, `1T` or bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 20G"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(mult)
        .filter(|b| *b >= 1 << 20 && *b <= 64 << 40)
        .ok_or_else(|| format!("{s:?} must be between 1M and 64T"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    if let Command::Docs(cmd) = &cli.command {
        // Shell completions and man pages: no runtime, no inventory.
        return docs::run::<Cli>(cmd).unwrap_or_else(|e| fail(json, &e));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                json,
                &ApiError::new(
                    ErrorCode::Internal,
                    format!("cannot start the runtime: {e}"),
                ),
            )
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => fail(json, &e),
    }
}

fn fail(json: bool, e: &ApiError) -> ExitCode {
    output::error(json, e);
    ExitCode::from(e.code.exit_status())
}

async fn run(cli: Cli) -> Result<ExitCode, ApiError> {
    let data_dir = resolve_data_dir(cli.data_dir)?;
    let engine = Engine::open(&data_dir, "cli")?;
    if let Err(e) = crate::logging::init(&data_dir, cli.verbose) {
        eprintln!("flotillactl: no log file ({e}); going on without one");
    }
    let json = cli.json;
    match cli.command {
        Command::Host(cmd) => host(&engine, json, cmd).await,
        Command::Image(cmd) => image(&engine, json, cmd).await,
        Command::Def(cmd) => def(&engine, json, cmd),
        Command::Unit(cmd) => units::unit(&engine, json, cmd).await,
        Command::Lb(cmd) => units::lb(&engine, json, cmd).await,
        Command::Op(cmd) => units::op(&engine, json, cmd).await,
        Command::Impact { fail, only } => {
            let r = engine.impact(&fail)?;
            match (only, json) {
                (Some(ImpactCommand::Audit), true) => output::print_json(&r.audit),
                (Some(ImpactCommand::Audit), false) => output::impact_audit(&r.audit),
                (None, true) => output::print_json(&r),
                (None, false) => output::impact(&r),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Monitor {
            interval_ms,
            call_timeout_ms,
            misses_to_suspect,
            misses_to_failed,
        } => {
            let thresholds = crate::monitor::Thresholds {
                interval_ms,
                call_timeout_ms,
                misses_to_suspect,
                misses_to_failed,
            };
            monitor(&engine, json, thresholds).await
        }
        Command::Docs(cmd) => docs::run::<Cli>(&cmd),
        Command::Audit { limit } => {
            let log = engine
                .inventory
                .audit_list(limit)
                .map_err(|e| ApiError::from(crate::ops::OpError::from(e)))?;
            output::audit(json, &log);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn host(engine: &Engine, json: bool, cmd: HostCommand) -> Result<ExitCode, ApiError> {
    match cmd {
        HostCommand::Add {
            name,
            uri,
            pool,
            bridge,
            accept_host_key,
            bmc,
        } => {
            // The BMC settings are read and checked before the host is added.
            let bmc = bmc.input(None, &name)?;
            let mut input = HostInput {
                name,
                uri,
                pool: Some(pool),
                bridge: Some(bridge),
                accept_host_key,
            };
            let spinner = output::spinner(json, format!("Connecting to {}…", input.uri));
            let mut added = engine.host_add(&input).await;
            spinner.finish_and_clear();
            // An unknown key: asked on a terminal, as ssh asks; refused otherwise (the message
            // says how to pass the fingerprint).
            if let Err(crate::ops::OpError::HostKey(crate::hostkeys::HostKeyError::Unknown {
                host,
                key_type,
                fingerprint,
            })) = &added
            {
                use std::io::IsTerminal;
                if input.accept_host_key.is_none()
                    && !json
                    && std::io::stdin().is_terminal()
                    && std::io::stderr().is_terminal()
                {
                    if !output::ask_host_key(host, key_type, fingerprint) {
                        return Err(ApiError::new(
                            crate::error::ErrorCode::HostKeyUnknown,
                            format!("the host key of {host} was not accepted; nothing was stored"),
                        ));
                    }
                    input.accept_host_key = Some(fingerprint.clone());
                    let spinner = output::spinner(json, format!("Connecting to {}…", input.uri));
                    added = engine.host_add(&input).await;
                    spinner.finish_and_clear();
                }
            }
            let mut host = added?;
            if let Some(bmc) = bmc {
                host = engine
                    .host_set_bmc(&host.name.to_string(), Some(bmc))
                    .await
                    .map_err(|e| {
                        let mut err = ApiError::from(e);
                        err.message = format!(
                            "host {} was added, but its BMC was not set: {}",
                            host.name, err.message
                        );
                        err
                    })?;
            }
            output::host_added(json, &host);
        }
        HostCommand::List => {
            let hosts = engine.host_list()?;
            // Who monitors is a footnote: a lease that cannot be read does not fail the list.
            let status = engine.monitor_status().ok();
            output::host_list(json, &hosts, status.as_ref());
        }
        HostCommand::Show { name } => output::host_show(json, &engine.host_show(&name)?),
        HostCommand::Check { name } => {
            let spinner = output::spinner(json, format!("Checking {name}…"));
            let checked = engine.host_check(&name).await;
            spinner.finish_and_clear();
            let host = checked?;
            output::host_show(json, &host);
            return Ok(match host.status {
                crate::model::HostStatus::Ok => ExitCode::SUCCESS,
                crate::model::HostStatus::Degraded => {
                    ExitCode::from(ErrorCode::HostNotReady.exit_status())
                }
                crate::model::HostStatus::Unreachable => {
                    ExitCode::from(ErrorCode::Unreachable.exit_status())
                }
            });
        }
        HostCommand::Remove { name } => {
            engine.host_remove(&name)?;
            output::removed(json, "host", &name);
        }
        HostCommand::TrustKey { name, fingerprint } => {
            let host = engine.host_show(&name)?;
            engine
                .host_key_accept(host.uri.as_str(), &fingerprint)
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "host": name, "fingerprint": fingerprint.trim() })
                );
            } else {
                println!(
                    "Trusted the SSH host key {} of host {name}.",
                    fingerprint.trim()
                );
            }
        }
        HostCommand::Reconcile { name } => {
            let r = engine.host_reconcile(&name).await?;
            if json {
                output::print_json(&r);
            } else {
                output::say_line(&format!(
                    "host {}: removed {} stale domain(s) [{}] and {} volume(s)",
                    r.host,
                    r.removed.len(),
                    r.removed.join(", "),
                    r.volumes.len()
                ));
                for f in &r.failed {
                    eprintln!("could not remove {f}");
                }
            }
            if !r.failed.is_empty() {
                return Err(ApiError::new(
                    crate::error::ErrorCode::OperationFailed,
                    format!(
                        "host {} still holds stale copies: {}",
                        r.host,
                        r.failed.join("; ")
                    ),
                ));
            }
        }
        HostCommand::Set {
            name,
            network,
            gateway,
            domain_type,
            bmc,
            no_bmc,
        } => {
            if bmc.is_empty() && !no_bmc {
                return hosts::set_network(engine, json, &name, network, gateway, domain_type);
            }
            return bmc::host_set(
                engine,
                json,
                &name,
                (network, gateway, domain_type),
                bmc,
                no_bmc,
            )
            .await;
        }
        HostCommand::BmcCheck { name } => {
            let spinner = output::spinner(json, format!("Asking the BMC of {name}…"));
            let status = engine.host_bmc_check(&name).await;
            spinner.finish_and_clear();
            output::bmc_status(json, &name, &status?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flotillactl monitor`: in the foreground until Ctrl-C (or SIGTERM from a service manager),
/// then the lease is given up and it exits 0.
async fn monitor(
    engine: &Engine,
    json: bool,
    thresholds: crate::monitor::Thresholds,
) -> Result<ExitCode, ApiError> {
    use crate::monitor::MonitorEvent;
    let report = move |ev: MonitorEvent| {
        if json {
            match serde_json::to_string(&ev) {
                Ok(line) => output::say_line(&line),
                Err(e) => eprintln!("error: cannot encode an event as JSON: {e}"),
            }
        } else if let MonitorEvent::Problem { .. } = ev {
            eprintln!("{ev}");
        } else {
            output::say_line(&ev.to_string());
        }
    };
    engine
        .monitor_with_recovery(thresholds, "cli", &report, interrupted())
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM (a service manager stopping the monitor). A signal that cannot be
/// listened for never completes (rather than stopping the monitor at once).
async fn interrupted() {
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = int => {}
        () = term => {}
    }
}

fn def(engine: &Engine, json: bool, cmd: DefCommand) -> Result<ExitCode, ApiError> {
    match cmd {
        DefCommand::Create { name } => output::def_version(json, &engine.def_create(&name)?),
        DefCommand::List => output::def_versions(json, &engine.def_list()?),
        DefCommand::Show { name, version } => {
            output::def_show(json, &engine.def_show(&name, version)?)
        }
        DefCommand::Edit { name } => {
            let current = engine.def_show(&name, None)?;
            // The buffer lives in a private directory with a random name (0700), removed
            // when `dir` is dropped: nobody else can read it, or put a file in its place.
            let dir = crate::files::private_temp_dir("flotilla-edit-").map_err(|e| {
                ApiError::new(
                    ErrorCode::Internal,
                    format!("cannot make a temporary directory: {e}"),
                )
            })?;
            let file = dir.path().join("definition.toml");
            crate::files::private_file(&file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, current.text.as_bytes()))
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("cannot write {}: {e}", file.display()),
                    )
                })?;
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".into());
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&file)
                .status()
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("cannot start the editor {editor}: {e}"),
                    )
                })?;
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            drop(dir);
            if !status.success() {
                return Err(ApiError::new(
                    ErrorCode::InvalidInput,
                    "the editor failed; nothing was saved",
                ));
            }
            // Saved only on top of the version the editor opened: a version saved meanwhile
            // (from the app, another shell) is not undone.
            let base = Some(current.version.version);
            output::def_version(json, &engine.def_set_text(&name, &text, base)?);
        }
        DefCommand::SetFile { name, file, base } => {
            output::def_version(json, &engine.def_set_file(&name, &file, base)?);
        }
        DefCommand::AddPackage { name, files } => {
            let bar = output::progress(json);
            let done = engine.def_add_packages(&name, &files, bar.callback());
            bar.finish();
            output::def_version(json, &done?);
        }
        DefCommand::RemovePackage { name, file } => {
            output::def_version(json, &engine.def_remove_package(&name, &file)?)
        }
        DefCommand::Import { name, dir } => {
            let bar = output::progress(json);
            let done = engine.def_import(&name, &dir, bar.callback());
            bar.finish();
            output::def_version(json, &done?);
        }
        DefCommand::Export { name, version, out } => {
            engine.def_export(&name, version, &out)?;
            output::written(json, &out, None);
        }
        DefCommand::History { name } => output::def_versions(json, &engine.def_history(&name)?),
        DefCommand::Diff { name, from, to } => {
            output::lines(json, &engine.def_diff(&name, from, to)?)
        }
        DefCommand::Payload { name, version, out } => {
            let sum = engine.def_payload(&name, version, &out)?;
            output::written(json, &out, Some(&sum));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn image(engine: &Engine, json: bool, cmd: ImageCommand) -> Result<ExitCode, ApiError> {
    use crate::ops::images::ImportRequest;
    match cmd {
        ImageCommand::Import {
            name,
            file,
            notes,
            firmware,
            kernel,
            initrd,
            cmdline,
        } => {
            let boot = crate::ops::requests::boot_input(&firmware, kernel, initrd, cmdline);
            let bar = output::progress(json);
            let v = engine
                .image_import(
                    &ImportRequest {
                        image: name,
                        file,
                        notes,
                        boot,
                    },
                    bar.callback(),
                )
                .await;
            bar.finish();
            output::image_show(json, &v?);
        }
        ImageCommand::List => output::image_list(json, &engine.image_list()?),
        ImageCommand::Show { image } => output::image_show(json, &engine.image_show(&image)?),
        ImageCommand::Ensure { image, host } => {
            let bar = output::progress(json);
            let done = engine.image_ensure(&image, &host, bar.callback()).await;
            bar.finish();
            output::ensured(json, &done?);
        }
        ImageCommand::Delete { image } => {
            engine.image_delete(&image).await?;
            output::removed(json, "image version", &image);
        }
        ImageCommand::Build {
            name,
            host,
            from,
            iso,
            cpus,
            memory,
            disk_size,
            script,
            address,
            gateway,
            virt_type,
        } => {
            use crate::ops::builder::BuildRequest;
            use crate::ops::requests::{build_from, builder_domain_type};
            let script = match script {
                None => vec![],
                Some(path) => crate::ops::builder::script_lines(
                    &std::fs::read_to_string(&path).map_err(|e| {
                        ApiError::new(
                            ErrorCode::InvalidInput,
                            format!("cannot read the script {}: {e}", path.display()),
                        )
                    })?,
                ),
            };
            let Some(from) = build_from(from, iso) else {
                return Err(ApiError::new(
                    ErrorCode::InvalidInput,
                    "give --from IMAGE[:VERSION] or --iso FILE",
                ));
            };
            let bar = output::progress(json);
            let built = engine
                .image_build(
                    &BuildRequest {
                        image: name,
                        host,
                        from,
                        cpus,
                        memory_mib: memory,
                        disk_bytes: disk_size,
                        script,
                        address: address.map(|a| (a, gateway)),
                        domain_type: builder_domain_type(&virt_type),
                    },
                    bar.callback(),
                )
                .await;
            bar.finish();
            let v = engine.builder_view(built?).await?;
            output::builder(json, &v.builder, v.console.as_deref(), &v.host_uri);
        }
        ImageCommand::Capture {
            name,
            seal,
            force,
            timeout,
            notes,
        } => {
            use crate::ops::builder::CaptureRequest;
            let bar = output::progress(json);
            let v = engine
                .image_capture(
                    &CaptureRequest {
                        image: name,
                        seal_cloud_init: seal.contains(&SealArg::CloudInit),
                        seal_sysprep: seal.contains(&SealArg::Sysprep),
                        force,
                        shutdown_timeout: std::time::Duration::from_secs(timeout),
                        notes,
                    },
                    bar.callback(),
                )
                .await;
            bar.finish();
            output::image_show(json, &v?);
        }
        ImageCommand::BuilderAbort { name } => {
            engine.builder_abort(&name).await?;
            output::removed(json, "builder of", &name);
        }
        ImageCommand::Builders => output::builder_list(json, &engine.builder_list()?),
        ImageCommand::Console { name } => {
            let Some(tunnel) = engine.builder_console_tunnel(&name).await? else {
                return Err(ApiError::new(
                    crate::error::ErrorCode::InvalidInput,
                    format!(
                        "the builder of {name} is not on a qemu+ssh host, or has no VNC console now; \
                         `flotillactl image show`/`builders` says where its console is"
                    ),
                ));
            };
            if json {
                output::json_value(&serde_json::json!({ "vnc": tunnel.local }));
            } else {
                println!(
                    "Console of the builder of {name}: vnc://{0} (through SSH); open it with: remote-viewer vnc://{0}\nCtrl-C ends the tunnel.",
                    tunnel.local
                );
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = tokio::signal::ctrl_c().await;
            drop(tunnel);
        }
        ImageCommand::Serial { name, bytes } => {
            let text = engine.builder_serial(&name, bytes).await?;
            if json {
                output::json_value(&serde_json::json!({ "serial": text }));
            } else {
                print!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
