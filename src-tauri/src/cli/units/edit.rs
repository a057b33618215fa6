//! `unit create|update|policy|pause`: what changes the unit's record, not its servers.

use super::super::output::{print_json, say_line};
use super::args::{CreateArgs, RolloutFlags};
use super::show::show_unit;
use crate::error::ApiError;
use crate::ops::units::UnitUpdate;
use crate::ops::Engine;
use std::process::ExitCode;

/// `unit create`: registers the unit; nothing is created on the hosts.
pub(super) fn create(engine: &Engine, json: bool, args: CreateArgs) -> Result<ExitCode, ApiError> {
    let form = args.form(engine)?;
    let created = engine.unit_create(&form)?;
    if json {
        print_json(&created);
    } else {
        for w in &created.warnings {
            eprintln!("warning: {w}");
        }
        show_unit(&created.unit);
        say_line(&format!(
            "Registered; nothing exists on the hosts yet. Deploy with: flotillactl unit deploy {}",
            created.unit.name
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `unit update`: the next version, pending until a rollout.
pub(super) fn update(
    engine: &Engine,
    json: bool,
    name: &str,
    update: &UnitUpdate,
) -> Result<ExitCode, ApiError> {
    let v = engine.unit_update(name, update)?;
    if json {
        print_json(&v);
    } else {
        say_line(&format!(
            "Unit {name} v{} is pending: master {}:v{}, definition {}:v{}, {} CPUs, {} MiB. Nothing changed on the hosts. See the plan with: flotillactl unit plan {name} rollout",
            v.version,
            v.image,
            v.image_version,
            v.definition,
            v.definition_version,
            v.size.cpus,
            v.size.memory_mib
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `unit policy`: shows the policy, or sets the flags given over it.
pub(super) fn policy(
    engine: &Engine,
    json: bool,
    name: &str,
    policy: &RolloutFlags,
) -> Result<ExitCode, ApiError> {
    let u = engine.unit_show(name)?;
    let p = match policy.over(&u.policy) {
        Some(p) => engine.unit_set_policy(name, &p)?,
        None => u.policy,
    };
    if json {
        print_json(&p);
    } else {
        show_unit(&engine.unit_show(name)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `unit pause`: asks the running rollout to pause at its next safe point.
pub(super) fn pause(engine: &Engine, json: bool, name: &str) -> Result<ExitCode, ApiError> {
    let op = engine.unit_pause(name)?;
    if json {
        print_json(&serde_json::json!({ "operation": op, "pause": "asked" }));
    } else {
        say_line(&format!(
            "Asked rollout #{op} of unit {name} to pause after the servers it is updating now."
        ));
    }
    Ok(ExitCode::SUCCESS)
}
