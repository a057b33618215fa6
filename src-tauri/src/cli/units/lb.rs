//! `flotillactl lb`: load balancers.

use super::super::output::{print_json, say_line, table};
use super::args::bad;
use crate::error::ApiError;
use crate::inventory::LbInstance;
use crate::ops::lbs::LbTarget;
use crate::ops::Engine;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(in crate::cli) enum LbCommand {
    /// Register a load balancer (it is contacted once to check the address).
    Add {
        name: String,
        /// HAProxy runtime API on a unix socket (`stats socket … level admin`).
        #[arg(long, group = "target")]
        haproxy_socket: Option<String>,
        /// HAProxy runtime API on TCP, HOST:PORT.
        #[arg(long, group = "target")]
        haproxy_addr: Option<String>,
        /// Caddy admin API URL, e.g. http://127.0.0.1:2019.
        #[arg(long, group = "target", requires = "caddy_route_id")]
        caddy_admin: Option<String>,
        /// The @id of the reverse_proxy handler Flotilla manages.
        #[arg(long)]
        caddy_route_id: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    /// Connect and show the pools of the units bound to it and their members.
    Check {
        name: String,
    },
    /// Put back every member the load balancer lost (HAProxy forgets them on reload).
    Reconcile {
        name: String,
    },
    /// Unregister (refused while a unit uses it).
    Remove {
        name: String,
    },
}

pub(in crate::cli) async fn lb(
    engine: &Engine,
    json: bool,
    cmd: LbCommand,
) -> Result<ExitCode, ApiError> {
    match cmd {
        LbCommand::Add {
            name,
            haproxy_socket,
            haproxy_addr,
            caddy_admin,
            caddy_route_id,
        } => {
            add(
                engine,
                json,
                &name,
                haproxy_socket,
                haproxy_addr,
                caddy_admin,
                caddy_route_id,
            )
            .await?
        }
        LbCommand::List => list(engine, json)?,
        LbCommand::Show { name } => show(engine, json, &name)?,
        LbCommand::Check { name } => check(engine, json, &name).await?,
        LbCommand::Reconcile { name } => reconcile(engine, json, &name).await?,
        LbCommand::Remove { name } => {
            engine.lb_remove(&name)?;
            super::super::output::removed(json, "load balancer", &name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn add(
    engine: &Engine,
    json: bool,
    name: &str,
    haproxy_socket: Option<String>,
    haproxy_addr: Option<String>,
    caddy_admin: Option<String>,
    caddy_route_id: Option<String>,
) -> Result<(), ApiError> {
    let target = match (haproxy_socket, haproxy_addr, caddy_admin) {
        (Some(path), _, _) => LbTarget::HaproxySocket { path },
        (_, Some(addr), _) => LbTarget::HaproxyAddr { addr },
        (_, _, Some(admin)) => LbTarget::Caddy {
            admin,
            route_id: caddy_route_id.unwrap_or_default(),
        },
        _ => {
            return Err(bad(
                "say how to reach it: --haproxy-socket PATH, --haproxy-addr HOST:PORT or --caddy-admin URL --caddy-route-id ID",
            ))
        }
    };
    let lb = engine.lb_add(name, &target).await?;
    if json {
        print_json(&lb);
    } else {
        show_lb(&lb);
    }
    Ok(())
}

fn list(engine: &Engine, json: bool) -> Result<(), ApiError> {
    let list = engine.lb_list()?;
    if json {
        print_json(&list);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    l.kind.to_string(),
                    l.endpoint.clone(),
                    l.route_id.clone(),
                ]
            })
            .collect();
        table(&["NAME", "KIND", "ENDPOINT", "ROUTE ID"], &rows);
    }
    Ok(())
}

fn show(engine: &Engine, json: bool, name: &str) -> Result<(), ApiError> {
    let lb = engine.lb_show(name)?;
    if json {
        print_json(&lb);
    } else {
        show_lb(&lb);
    }
    Ok(())
}

/// `lb check`: the pools of the units bound to it and their members.
async fn check(engine: &Engine, json: bool, name: &str) -> Result<(), ApiError> {
    let c = engine.lb_check(name).await?;
    if json {
        print_json(&c);
    } else {
        show_lb(&c.lb);
        if !c.has_drain {
            say_line("  Caddy has no drain state: Flotilla removes a member and waits the drain timeout as a grace period.");
        }
        say_line(&format!("  health checks: {}", c.checks));
        for (pool, exists) in &c.pools {
            say_line(&format!(
                "  pool {pool}: {}",
                if *exists { "present" } else { "MISSING" }
            ));
        }
        let rows: Vec<Vec<String>> = c
            .members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.address.clone(),
                    m.status.clone(),
                    format!("{:?}", m.admin).to_lowercase(),
                    m.sessions.to_string(),
                ]
            })
            .collect();
        table(&["MEMBER", "ADDRESS", "STATUS", "ADMIN", "SESSIONS"], &rows);
    }
    Ok(())
}

async fn reconcile(engine: &Engine, json: bool, name: &str) -> Result<(), ApiError> {
    let r = engine.lb_reconcile(name).await?;
    if json {
        print_json(&r);
    } else {
        say_line(&format!(
            "put back {} members, corrected {}, {} were right",
            r.added.len(),
            r.corrected.len(),
            r.unchanged
        ));
        for b in &r.busy {
            say_line(&format!("  {b}"));
        }
    }
    Ok(())
}

fn show_lb(l: &LbInstance) {
    say_line(&format!("Load balancer {} ({})", l.name, l.kind));
    say_line(&format!("  endpoint: {}", l.endpoint));
    if !l.route_id.is_empty() {
        say_line(&format!("  route id: {}", l.route_id));
    }
}
