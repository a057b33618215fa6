//! `unit plan`: the dry run of an action, as the confirmation shows it.

use super::super::output::{print_json, say_line};
use super::args::PlanAction;
use crate::error::ApiError;
use crate::ops::units::OpPlan;
use crate::ops::Engine;
use std::process::ExitCode;

pub(super) fn plan(
    engine: &Engine,
    json: bool,
    name: &str,
    action: PlanAction,
) -> Result<ExitCode, ApiError> {
    let action = action.action(engine, name)?;
    let plan = engine.unit_plan(name, &action)?;
    if json {
        print_json(&plan);
    } else {
        show_plan(&plan);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show_plan(p: &OpPlan) {
    say_line(&format!(
        "Plan: {} of unit {} ({} servers, {} at a time)",
        p.action,
        p.unit,
        p.servers.len(),
        p.batch_size
    ));
    if let Some(n) = p.in_service_during {
        say_line(&format!("  in service while a batch is out: {n}"));
    }
    match p.estimate_s {
        Some(secs) => say_line(&format!("  about {secs} s ({})", p.estimate_from)),
        None => say_line(&format!("  time: {}", p.estimate_from)),
    }
    for w in &p.warnings {
        say_line(&format!("  warning: {w}"));
    }
    if let Some(c) = &p.confirm {
        say_line(&format!("  to confirm: {c} (--yes)"));
    }
    for s in &p.servers {
        let steps: Vec<&str> = s.steps.iter().map(|s| s.as_str()).collect();
        say_line(&format!(
            "  {} ({} on {}){}: {}",
            s.server,
            s.address,
            s.host,
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" [{}]", s.note)
            },
            steps.join(" → ")
        ));
        if let Some(f) = &s.fence {
            say_line(&format!("      fence: {}", f.words));
        }
    }
    say_line(&format!(
        "Fingerprint: {} (run exactly this plan with --plan {})",
        p.fingerprint, p.fingerprint
    ));
}
