//! How `flotillactl` prints: aligned text for people, JSON for scripts.

use crate::error::ApiError;
use crate::inventory::AuditEntry;
use crate::model::{BootMode, BridgeCheck, Builder, Host, ImageVersion};
use crate::ops::images::{EnsureOutcome, ImageProgress, ProgressFn};
use crate::ops::monitor::MonitorStatus;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// `println!` that ends the program quietly when stdout is closed (`flotillactl … | head`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

pub(super) fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => say!("{s}"),
        Err(e) => eprintln!("error: cannot encode the result as JSON: {e}"),
    }
}

/// One line on stdout (see `say!`).
pub(super) fn say_line(line: &str) {
    say!("{line}");
}

pub fn json_value(v: &serde_json::Value) {
    print_json(v);
}

pub fn error(json: bool, e: &ApiError) {
    if json {
        print_json(&serde_json::json!({ "error": e }));
    }
    eprintln!("error: {}", e.message);
    if let Some(detail) = &e.detail {
        for line in detail.lines() {
            eprintln!("  {line}");
        }
    }
}

/// A spinner on stderr while something slow happens; invisible when stderr is not a terminal
/// or when printing JSON.
pub fn spinner(json: bool, message: String) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        say!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// The monitor's word for a host in the STATE column: its state while a monitor keeps it
/// current, else `not monitored`.
fn monitor_state(h: &Host) -> String {
    match h.monitor.state {
        Some(s) => s.as_str().to_owned(),
        None => "not monitored".to_owned(),
    }
}

pub fn host_list(json: bool, hosts: &[Host], monitor: Option<&MonitorStatus>) {
    if json {
        return print_json(hosts);
    }
    if hosts.is_empty() {
        say!("No hosts. Add one with: flotillactl host add NAME --uri URI");
        return;
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let f = h.facts.as_ref();
            vec![
                h.name.to_string(),
                h.status.as_str().to_string(),
                monitor_state(h),
                f.map_or("-".into(), |f| f.cpus.to_string()),
                f.map_or("-".into(), |f| bytes(f.memory_bytes)),
                f.and_then(|f| f.pool.as_ref()).map_or("-".into(), |p| {
                    format!("{}/{}", bytes(p.available_bytes), bytes(p.capacity_bytes))
                }),
                h.bridge.to_string(),
                h.uri.to_string(),
                h.bmc
                    .as_ref()
                    .map_or("-".into(), |b| format!("{} system {}", b.url, b.system)),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATUS",
            "STATE",
            "CPUS",
            "MEMORY",
            "POOL FREE/SIZE",
            "BRIDGE",
            "URI",
            "BMC",
        ],
        &rows,
    );
    if let Some(m) = monitor {
        say!("{}", monitor_line(m));
    }
}

/// One line on who monitors the hosts (under `host list`).
fn monitor_line(m: &MonitorStatus) -> String {
    match &m.holder {
        Some(h) if h.current => {
            let mut line = format!("Monitor: {h}");
            if let Some(ms) = m.worst_case_detection_ms {
                line.push_str(&format!(
                    "; a dead host is failed within {}",
                    crate::monitor::machine::secs(Duration::from_millis(ms))
                ));
            }
            if let Some(why) = &m.frozen {
                line.push_str(&format!(". FROZEN: {why}"));
            }
            line
        }
        _ => "Monitor: not running, so STATE is not monitored (run `flotillactl monitor`, or open the desktop app)".into(),
    }
}

pub fn host_show(json: bool, h: &Host) {
    if json {
        return print_json(h);
    }
    let mut lines = vec![
        ("Name", h.name.to_string()),
        ("Status", h.status.as_str().to_string()),
    ];
    if !h.status_detail.is_empty() {
        lines.push(("Problem", h.status_detail.clone()));
    }
    let m = &h.monitor;
    match (m.state, m.last_state) {
        (Some(state), _) => {
            lines.push(("State", format!("{state} since {}", m.since)));
            if !m.detail.is_empty() {
                lines.push(("Why", m.detail.clone()));
            }
            if !m.not_running.is_empty() {
                lines.push(("Not running", m.not_running.join(", ")));
            }
            lines.push(("Probed", m.probed_at.clone()));
        }
        (None, Some(last)) => lines.push((
            "State",
            format!(
                "not monitored (the last record, not current: {last} since {}; last probe {})",
                m.since, m.probed_at
            ),
        )),
        (None, None) => lines.push(("State", "not monitored".into())),
    }
    if !m.last_seen.is_empty() {
        lines.push(("Last seen", m.last_seen.clone()));
    }
    if let Some(f) = &h.fence {
        lines.push((
            "Fence",
            format!(
                "{} by {} at {}: {}",
                f.method.as_str(),
                f.by,
                f.at,
                f.detail
            ),
        ));
    }
    if !h.fenced.is_empty() {
        lines.push((
            "Fenced",
            format!(
                "{} held out of rotation since the host was lost (they rejoin once it is back and their check passes)",
                h.fenced.join(", ")
            ),
        ));
    }
    lines.extend([
        ("URI", h.uri.to_string()),
        ("Pool", h.pool.to_string()),
        ("Bridge", h.bridge.to_string()),
        (
            "Network",
            if h.network.is_empty() {
                "not set (flotillactl host set NAME --network CIDR --gateway IP)".into()
            } else if h.gateway.is_empty() {
                h.network.clone()
            } else {
                format!("{}, gateway {}", h.network, h.gateway)
            },
        ),
        (
            "Domain type",
            match (h.domain_type.as_str(), h.facts.as_ref().map(|f| f.kvm)) {
                ("", Some(true)) => "kvm (automatic: the host offers KVM)".into(),
                ("", _) => "qemu (automatic: no KVM offered)".into(),
                (t, _) => format!("{t} (set by the admin)"),
            },
        ),
    ]);
    if let Some(f) = &h.facts {
        lines.extend([
            ("Hostname", f.hostname.clone()),
            (
                "Hypervisor",
                format!("{} {}", f.hypervisor, f.hypervisor_version),
            ),
            ("libvirt", f.libvirt_version.clone()),
            ("CPUs", format!("{} × {}", f.cpus, f.cpu_model)),
            ("Memory", bytes(f.memory_bytes)),
        ]);
        if let Some(p) = &f.pool {
            lines.push((
                "Pool space",
                format!(
                    "{} free of {}{}",
                    bytes(p.available_bytes),
                    bytes(p.capacity_bytes),
                    if p.active { "" } else { " (inactive)" }
                ),
            ));
        }
        lines.push((
            "Bridge state",
            match &f.bridge {
                BridgeCheck::Found => "found".into(),
                BridgeCheck::Missing { .. } => "missing".into(),
                BridgeCheck::Unknown { reason } => format!("unknown ({reason})"),
            },
        ));
    }
    match &h.bmc {
        None => lines.push((
            "BMC",
            format!("none (power fencing: flotillactl host set {} --bmc URL --bmc-system ID --bmc-user USER --bmc-password-stdin)", h.name),
        )),
        Some(b) => lines.extend([
            ("BMC", format!("{} system {}, user {}", b.url, b.system, b.user)),
            ("BMC password", format!("kept {}", b.password.describe(h.name.as_str()))),
            (
                "BMC TLS",
                match &b.ca_pem {
                    None => "verified against the system's CA certificates".into(),
                    Some(pem) => format!(
                        "verified against {} certificate(s) given for this BMC only",
                        pem.matches("-----BEGIN CERTIFICATE-----").count()
                    ),
                },
            ),
        ]),
    }
    lines.extend([
        ("Added", h.added_at.clone()),
        ("Checked", h.checked_at.clone()),
    ]);
    for (k, v) in lines {
        say!("{:<13} {v}", format!("{k}:"));
    }
}

pub fn host_added(json: bool, h: &Host) {
    if json {
        return print_json(h);
    }
    say!("Added host {} ({}).", h.name, h.uri);
    host_show(false, h);
}

pub fn removed(json: bool, kind: &str, name: &str) {
    if json {
        print_json(&serde_json::json!({ "removed": { "kind": kind, "name": name } }));
    } else {
        say!("Removed {kind} {name}.");
    }
}

pub fn audit(json: bool, log: &[AuditEntry]) {
    if json {
        return print_json(log);
    }
    let rows: Vec<Vec<String>> = log
        .iter()
        .map(|a| {
            vec![
                a.at.clone(),
                format!("{} ({})", a.actor, a.via),
                a.action.clone(),
                a.target.clone(),
                format!("{:?}", a.result).to_lowercase(),
                a.detail.clone(),
            ]
        })
        .collect();
    table(
        &["WHEN", "WHO", "ACTION", "TARGET", "RESULT", "DETAIL"],
        &rows,
    );
}

/// A progress bar on stderr for image operations (hidden with --json or without a terminal).
pub struct Progress {
    bar: ProgressBar,
}

pub fn progress(json: bool) -> Progress {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Progress { bar }
}

impl Progress {
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        Arc::new(move |p: ImageProgress| {
            if bar.message() != p.phase {
                bar.set_message(p.phase.clone());
                bar.reset();
            }
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
    }
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

fn boot_text(b: &BootMode) -> String {
    match b {
        BootMode::Disk { firmware } => format!("from its disk ({firmware:?})").to_lowercase(),
        BootMode::Kernel { cmdline, .. } => format!("direct kernel boot ({cmdline})"),
    }
}

pub fn image_list(json: bool, versions: &[ImageVersion]) {
    if json {
        return print_json(versions);
    }
    if versions.is_empty() {
        say!("No images. Import one with: flotillactl image import NAME FILE");
        return;
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                format!("{}:v{}", v.image, v.version),
                bytes(v.virtual_size),
                bytes(v.actual_size),
                v.sha256[..12].to_string(),
                v.copies
                    .iter()
                    .map(|c| c.host.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                v.created_at.clone(),
                v.origin.clone(),
            ]
        })
        .collect();
    table(
        &[
            "VERSION", "SIZE", "ON DISK", "SHA256", "ON HOSTS", "CREATED", "ORIGIN",
        ],
        &rows,
    );
}

pub fn image_show(json: bool, v: &ImageVersion) {
    if json {
        return print_json(v);
    }
    let lines = [
        ("Image", format!("{}:v{}", v.image, v.version)),
        (
            "Made from",
            v.parent.map_or("-".into(), |p| format!("v{p}")),
        ),
        ("Origin", v.origin.clone()),
        ("Boots", boot_text(&v.boot)),
        (
            "Size",
            format!(
                "{} virtual, {} on disk",
                bytes(v.virtual_size),
                bytes(v.actual_size)
            ),
        ),
        ("sha256", v.sha256.clone()),
        ("File", v.file.clone()),
        (
            "Sealed",
            if v.seal.is_empty() {
                "no".into()
            } else {
                v.seal.join(", ")
            },
        ),
        (
            "On hosts",
            if v.copies.is_empty() {
                "none".into()
            } else {
                v.copies
                    .iter()
                    .map(|c| c.host.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("Created", v.created_at.clone()),
        ("Notes", v.notes.clone()),
    ];
    for (k, val) in lines {
        say!("{:<10} {val}", format!("{k}:"));
    }
}

pub fn ensured(json: bool, e: &EnsureOutcome) {
    if json {
        return print_json(e);
    }
    if e.bytes_copied == 0 {
        say!(
            "{}:v{} is already on {} ({}); nothing copied.",
            e.image,
            e.version,
            e.host,
            e.path
        );
    } else {
        say!(
            "Copied {}:v{} to {} ({}, {}), verified by sha256.",
            e.image,
            e.version,
            e.host,
            e.path,
            bytes(e.bytes_copied)
        );
    }
}

pub fn builder(json: bool, b: &Builder, console: Option<&str>, uri: &str) {
    if json {
        return print_json(&serde_json::json!({ "builder": b, "console": console }));
    }
    say!(
        "Builder {} for image {} runs on host {}.",
        b.domain,
        b.image,
        b.host
    );
    match console {
        Some(vnc) if uri.contains("+ssh://") => say!(
            "Console:  VNC {vnc} on {}, through SSH: flotillactl image console {}   (or: virt-viewer -c '{uri}' {})",
            b.host,
            b.image,
            b.domain
        ),
        Some(vnc) => say!(
            "Console:  VNC {vnc} on {}; open it with: virt-viewer -c '{uri}' {}",
            b.host,
            b.domain
        ),
        None => say!("Console:  virt-viewer -c '{uri}' {}", b.domain),
    }
    say!("Serial:   {} (on {})", b.serial_log, b.host);
    say!(
        "When done: flotillactl image capture {}   (or: image builder-abort {})",
        b.image,
        b.image
    );
}

pub fn builder_list(json: bool, list: &[Builder]) {
    if json {
        return print_json(list);
    }
    if list.is_empty() {
        say!("No builders. Start one with: flotillactl image build NAME --host H --from IMAGE");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.image.to_string(),
                b.host.to_string(),
                b.state.clone(),
                b.base.clone().or_else(|| b.iso.clone()).unwrap_or_default(),
                b.domain.clone(),
                b.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["IMAGE", "HOST", "STATE", "FROM", "DOMAIN", "STARTED"],
        &rows,
    );
}

pub fn def_version(json: bool, v: &crate::inventory::DefinitionVersion) {
    if json {
        return print_json(v);
    }
    say!(
        "{} v{} ({}) — {}",
        v.name,
        v.version,
        &v.hash[..12],
        v.change
    );
}

pub fn def_versions(json: bool, list: &[crate::inventory::DefinitionVersion]) {
    if json {
        return print_json(list);
    }
    if list.is_empty() {
        say!("No definitions. Create one with: flotillactl def create NAME");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                format!("v{}", v.version),
                v.hash[..12].to_string(),
                v.created_at.clone(),
                v.change.clone(),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "HASH", "CREATED", "CHANGE"], &rows);
}

pub fn def_show(json: bool, d: &crate::ops::definitions::DefinitionView) {
    if json {
        return print_json(d);
    }
    say!(
        "# {} v{} ({})",
        d.version.name,
        d.version.version,
        d.version.hash
    );
    say!("{}", d.text.trim_end());
    if !d.packages.is_empty() {
        say!("# packages in the directory:");
        for p in &d.packages {
            say!("#   {}  {}  {}", p.sha256, bytes(p.size), p.file);
        }
    }
}

pub fn lines(json: bool, lines: &[String]) {
    if json {
        return print_json(lines);
    }
    if lines.is_empty() {
        say!("No differences.");
    }
    for l in lines {
        say!("{l}");
    }
}

pub fn written(json: bool, path: &std::path::Path, sha256: Option<&str>) {
    if json {
        return print_json(&serde_json::json!({ "written": path, "sha256": sha256 }));
    }
    match sha256 {
        Some(s) => say!("Wrote {} (sha256 {s}).", path.display()),
        None => say!("Wrote {}.", path.display()),
    }
}

/// What failed hosts do to the units, and the N+1 audit.
pub(super) fn impact(r: &crate::ops::impact::ImpactReport) {
    use crate::plan::impact::UnitHealth;
    let i = &r.impact;
    if i.failed_hosts.is_empty() {
        say_line("Units now:");
    } else {
        say_line(&format!("If {} failed:", i.failed_hosts.join(", ")));
    }
    let rows: Vec<Vec<String>> = i
        .units
        .iter()
        .map(|u| {
            vec![
                u.unit.clone(),
                match u.health {
                    UnitHealth::Ok => "ok",
                    UnitHealth::Degraded => "degraded",
                    UnitHealth::BelowMinimum => "BELOW MINIMUM",
                    UnitHealth::Outage => "OUTAGE",
                }
                .into(),
                format!(
                    "{} → {} of {}",
                    u.in_service_now, u.in_service_after, u.desired
                ),
                u.min_in_service.to_string(),
                u.lost.join(", "),
                u.pool.clone().unwrap_or_else(|| "-".into()),
                if u.lost.is_empty() {
                    String::new()
                } else if u.replaceable {
                    match u.replace_estimate_s {
                        Some(s) => format!("room on the other hosts, about {s} s"),
                        None => "room on the other hosts".into(),
                    }
                } else {
                    u.room.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "UNIT",
            "STATE",
            "IN SERVICE",
            "MIN",
            "LOST",
            "POOL",
            "REPLACEMENT",
        ],
        &rows,
    );
    if !r.fences.is_empty() {
        say_line("Fence before a recovery re-creates them:");
        for f in &r.fences {
            say_line(&format!(
                "  {} ({} on {}): {}",
                f.server, f.unit, f.host, f.words
            ));
        }
    }
    if !i.pools.is_empty() {
        say_line("Load-balancer pools:");
        let rows: Vec<Vec<String>> = i
            .pools
            .iter()
            .map(|p| {
                vec![
                    p.pool.clone(),
                    format!("{} → {}", p.in_service_now, p.in_service_after),
                    format!("{} %", p.kept_percent()),
                    p.units.join(", "),
                ]
            })
            .collect();
        table(&["POOL", "IN SERVICE", "KEPT", "UNITS"], &rows);
    }
    impact_audit(&r.audit);
}

/// The N+1 audit as a table.
pub(super) fn impact_audit(audit: &[crate::plan::impact::HostRisk]) {
    say_line("N+1 audit (each host failing alone):");
    let rows: Vec<Vec<String>> = audit
        .iter()
        .map(|h| {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(", ")
                }
            };
            vec![
                h.host.clone(),
                list(&h.below_minimum),
                list(&h.single_host_units),
                list(&h.not_replaceable),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "BELOW MINIMUM",
            "ALL SERVERS HERE",
            "NO ROOM TO REPLACE",
        ],
        &rows,
    );
}

/// Shows an unknown SSH host key as `ssh` does and asks whether to trust it; true only for a
/// typed "yes" (or the fingerprint itself).
pub fn ask_host_key(host: &str, key_type: &str, fingerprint: &str) -> bool {
    use std::io::{BufRead, Read, Write};
    let kind = match key_type {
        t if t.contains("ed25519") => "ED25519",
        t if t.contains("ecdsa") => "ECDSA",
        _ => "RSA",
    };
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "The authenticity of host '{host}' can't be established.\n\
         {kind} key fingerprint is {fingerprint}.\n\
         This key is not known to Flotilla (its own known-hosts file).\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    );
    let _ = err.flush();
    let mut line = String::new();
    // One line, at most 1 KiB read.
    let _ = std::io::stdin().lock().take(1024).read_line(&mut line);
    let answer = line.trim();
    answer == "yes" || answer == fingerprint
}

/// `host bmc-check`: what the BMC says.
pub fn bmc_status(json: bool, host: &str, st: &crate::ops::bmc::BmcStatus) {
    if json {
        return print_json(&serde_json::json!({ "host": host, "bmc": st }));
    }
    let name = if st.system_name.is_empty() {
        String::new()
    } else {
        format!(" ({})", st.system_name)
    };
    say!(
        "Host {host}: BMC {} system {}{name}: power {}",
        st.url,
        st.system,
        st.power_state
    );
    if let Some(types) = &st.reset_types {
        say!("Reset types offered: {}", types.join(", "));
    }
    if let Some(place) = st.password {
        say!("Password: read {}", place.describe(host));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_human() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(8 << 30), "8.0 GiB");
        assert_eq!(super::bytes(1536), "1.5 KiB");
    }
}
