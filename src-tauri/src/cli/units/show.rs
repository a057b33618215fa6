//! `unit list|show|status|history`: what a unit is and how its servers are.

use super::super::output::{print_json, say_line, table};
use crate::error::ApiError;
use crate::inventory::Unit;
use crate::ops::Engine;
use std::process::ExitCode;

pub(super) fn list(engine: &Engine, json: bool) -> Result<ExitCode, ApiError> {
    let units = engine.unit_list()?;
    if json {
        print_json(&units);
    } else {
        let rows: Vec<Vec<String>> = units
            .iter()
            .map(|u| {
                let count = |st: crate::model::ServerState| {
                    u.servers.iter().filter(|s| s.state == st).count()
                };
                vec![
                    u.name.clone(),
                    u.current()
                        .map(|v| {
                            format!(
                                "v{} {}:v{} {}:v{}",
                                v.version,
                                v.image,
                                v.image_version,
                                v.definition,
                                v.definition_version
                            )
                        })
                        .unwrap_or_default(),
                    u.servers.len().to_string(),
                    count(crate::model::ServerState::Running).to_string(),
                    count(crate::model::ServerState::Stopped).to_string(),
                    count(crate::model::ServerState::Planned).to_string(),
                    u.lb.clone()
                        .map(|l| format!("{l}/{}", u.lb_pool))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &[
                "NAME", "VERSION", "SERVERS", "RUNNING", "STOPPED", "PLANNED", "LB",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show(engine: &Engine, json: bool, name: &str) -> Result<ExitCode, ApiError> {
    let u = engine.unit_show(name)?;
    if json {
        print_json(&u);
    } else {
        show_unit(&u);
    }
    Ok(ExitCode::SUCCESS)
}

/// `unit status`: the hosts and the load balancer asked now.
pub(super) async fn status(engine: &Engine, json: bool, name: &str) -> Result<ExitCode, ApiError> {
    let live = engine.unit_live(name).await?;
    if json {
        print_json(&live);
    } else {
        let rows: Vec<Vec<String>> = live
            .iter()
            .map(|s| {
                vec![
                    s.server.clone(),
                    s.power.clone(),
                    s.lb_status.clone(),
                    match s.healthy {
                        Some(true) => "healthy".into(),
                        Some(false) => "not healthy".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        table(&["SERVER", "POWER", "LOAD BALANCER", "HEALTH"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn history(engine: &Engine, json: bool, name: &str) -> Result<ExitCode, ApiError> {
    let h = engine.unit_history(name)?;
    if json {
        print_json(&h);
    } else {
        for e in &h {
            say_line(&format!(
                "v{} ({}, {} servers, {})",
                e.version.version, e.status, e.servers, e.version.created_at
            ));
            for c in &e.changes {
                say_line(&format!("  {c}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `unit show`: versions, load balancer, policy, servers, and what to know about them.
pub(super) fn show_unit(u: &Unit) {
    versions(u);
    settings(u);
    servers(u);
    notes(u);
}

/// The current and pending versions, and a mixed unit's versions.
fn versions(u: &Unit) {
    say_line(&format!("Unit {}", u.name));
    if let Some(v) = u.current() {
        say_line(&format!(
            "  version v{}: master {}:v{}, definition {}:v{}, {} CPU, {} MiB, disk {}",
            v.version,
            v.image,
            v.image_version,
            v.definition,
            v.definition_version,
            v.size.cpus,
            v.size.memory_mib,
            if v.size.disk_gib == 0 {
                "as the master".to_string()
            } else {
                format!("{} GiB", v.size.disk_gib)
            }
        ));
    }
    if let Some(p) = u.pending() {
        say_line(&format!(
            "  pending v{}: master {}:v{}, definition {}:v{} (roll it out: flotillactl unit rollout {})",
            p.version, p.image, p.image_version, p.definition, p.definition_version, u.name
        ));
    }
    let on: std::collections::BTreeSet<u32> = u.servers.iter().filter_map(|s| s.version).collect();
    if on.len() > 1 {
        say_line(&format!(
            "  mixed: servers run {}",
            on.iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
}

/// The load balancer, the policy and the isolation response.
fn settings(u: &Unit) {
    say_line(&format!(
        "  load balancer: {}",
        u.lb.as_ref().map_or_else(
            || "none".to_string(),
            |l| format!("{l}, pool {}", u.lb_pool)
        )
    ));
    say_line(&format!(
        "  policy: max unavailable {}, min in service {}, drain timeout {} s, health timeout {} s, min healthy time {} s, shutdown timeout {} s, automatic recoveries {}",
        u.policy.max_unavailable,
        u.policy.min_in_service_of(u.servers.len() as u32),
        u.policy.drain_timeout_s,
        u.policy.health_timeout_s,
        u.policy.min_healthy_s,
        u.policy.shutdown_timeout_s,
        match u.policy.auto_recover_per_day {
            0 => "off".to_owned(),
            n => format!("at most {n} a day"),
        }
    ));
    say_line(&format!(
        "  isolation response: {}",
        match u.policy.isolation_timeout_s {
            0 => "off (a recovery needs the hosts' BMCs or your confirmation)".to_owned(),
            n => format!(
                "power off after {n} s without an answer from {}",
                if u.policy.isolation_address.is_empty() {
                    "the servers' gateway, port 80"
                } else {
                    u.policy.isolation_address.as_str()
                }
            ),
        }
    ));
}

fn servers(u: &Unit) {
    let rows: Vec<Vec<String>> = u
        .servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.host.clone(),
                s.address.clone(),
                s.mac.clone(),
                s.state.as_str().into(),
                s.version.map_or_else(|| "-".into(), |v| format!("v{v}")),
                s.lb_state.clone(),
            ]
        })
        .collect();
    table(
        &["SERVER", "HOST", "ADDRESS", "MAC", "STATE", "VERSION", "LB"],
        &rows,
    );
}

/// Fenced servers, and servers whose guest has no isolation response yet.
fn notes(u: &Unit) {
    for s in &u.servers {
        if !s.fenced.is_empty() {
            say_line(&format!("  {}: {}", s.name, s.fenced));
        }
        if u.policy.isolation_timeout_s > 0
            && s.isolation_s == 0
            && s.state != crate::model::ServerState::Planned
        {
            say_line(&format!(
                "  {}: its guest has no isolation response yet (it gets one with its next seed: a rollout that reboots it, or a recovery)",
                s.name
            ));
        }
    }
}
