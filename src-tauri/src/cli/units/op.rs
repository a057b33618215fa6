//! `flotillactl op`: the operation journal; resume or unwind an interrupted operation.

use super::super::output::{print_json, say_line, table};
use super::run::{report, Bars};
use crate::error::ApiError;
use crate::ops::{Engine, OpError};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(in crate::cli) enum OpCommand {
    /// Recent operations with their steps; interrupted ones are marked.
    List {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Run an interrupted operation again (its steps are idempotent).
    Resume { id: i64 },
    /// Undo what an interrupted operation did.
    Unwind { id: i64 },
    /// The log lines of an operation (its spans in <data dir>/logs).
    Log { id: i64 },
}

pub(in crate::cli) async fn op(
    engine: &Engine,
    json: bool,
    cmd: OpCommand,
) -> Result<ExitCode, ApiError> {
    match cmd {
        OpCommand::List { limit } => list(engine, json, limit),
        OpCommand::Resume { id } => {
            let bars = Bars::new(json);
            let outcome = engine.operation_resume(id, bars.callback()).await;
            bars.finish();
            report(json, outcome)
        }
        OpCommand::Unwind { id } => {
            let bars = Bars::new(json);
            let outcome = engine.operation_unwind(id, bars.callback()).await;
            bars.finish();
            report(json, outcome)
        }
        OpCommand::Log { id } => log(engine, json, id),
    }
}

/// `op list`: interrupted operations first, then the recent ones.
fn list(engine: &Engine, json: bool, limit: u32) -> Result<ExitCode, ApiError> {
    let ops = engine
        .inventory
        .operation_list(limit)
        .map_err(OpError::from)?;
    let interrupted = engine.interrupted_operations()?;
    if json {
        print_json(&serde_json::json!({ "operations": ops, "interrupted": interrupted }));
    } else {
        for i in &interrupted {
            say_line(&format!(
                "INTERRUPTED #{} {} of unit {} ({} steps done): flotillactl op resume {} | flotillactl op unwind {}",
                i.operation, i.kind, i.unit, i.steps_done, i.operation, i.operation
            ));
        }
        let rows: Vec<Vec<String>> = ops
            .iter()
            .map(|o| {
                vec![
                    format!("#{}", o.id),
                    o.kind.clone(),
                    o.target.clone(),
                    o.state.clone(),
                    o.started_at.clone(),
                    o.steps.len().to_string(),
                    o.error
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(80)
                        .collect(),
                ]
            })
            .collect();
        table(
            &["ID", "KIND", "TARGET", "STATE", "STARTED", "STEPS", "ERROR"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn log(engine: &Engine, json: bool, id: i64) -> Result<ExitCode, ApiError> {
    let lines = engine.operation_log(id);
    if json {
        print_json(&serde_json::json!({ "operation": id, "lines": lines }));
    } else if lines.is_empty() {
        say_line(&format!(
            "no log lines of operation #{id} (logs are kept for a week; FLOTILLA_LOG may have filtered them)"
        ));
    } else {
        for l in lines {
            say_line(&l);
        }
    }
    Ok(ExitCode::SUCCESS)
}
