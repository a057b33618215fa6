//! Hosts: the list, one host, its BMC, and the question about an unknown SSH host key.

use super::{bytes, print_json, table};
use crate::model::{BridgeCheck, Host, HostFacts};
use crate::ops::monitor::MonitorStatus;
use std::time::Duration;

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

/// One `Key: value` line each.
type Lines = Vec<(&'static str, String)>;

pub fn host_show(json: bool, h: &Host) {
    if json {
        return print_json(h);
    }
    let mut lines = vec![
        ("Name", h.name.to_string()),
        ("Status", h.status.as_str().to_string()),
    ];
    state_lines(h, &mut lines);
    place_lines(h, &mut lines);
    if let Some(f) = &h.facts {
        fact_lines(f, &mut lines);
    }
    bmc_lines(h, &mut lines);
    lines.extend([
        ("Added", h.added_at.clone()),
        ("Checked", h.checked_at.clone()),
    ]);
    for (k, v) in lines {
        say!("{:<13} {v}", format!("{k}:"));
    }
}

/// What is wrong, what the monitor says, and the fence.
fn state_lines(h: &Host, lines: &mut Lines) {
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
}

/// Where servers go: URI, pool, bridge, network, domain type.
fn place_lines(h: &Host, lines: &mut Lines) {
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
}

/// What the host reported at its last check.
fn fact_lines(f: &HostFacts, lines: &mut Lines) {
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

fn bmc_lines(h: &Host, lines: &mut Lines) {
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
}

pub fn host_added(json: bool, h: &Host) {
    if json {
        return print_json(h);
    }
    say!("Added host {} ({}).", h.name, h.uri);
    host_show(false, h);
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
