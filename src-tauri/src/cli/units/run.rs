//! Running an action: progress bars per server, and the report (exit status included).

use super::super::output::{print_json, say_line};
use super::args::{bad, Confirmed};
use super::plan::show_plan;
use crate::error::ApiError;
use crate::inventory::StepStatus;
use crate::ops::units::{delete_confirmation, OpReport, StepEvent, StepFn, UnitAction};
use crate::ops::{Engine, OpError};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Runs `action` on unit `name` (only the plan confirmed, with `--plan`) and reports it.
pub(super) async fn run(
    engine: &Engine,
    json: bool,
    unit: &str,
    action: UnitAction,
    plan: Confirmed,
) -> Result<ExitCode, ApiError> {
    let bars = Bars::new(json);
    let outcome = engine
        .unit_run_planned(unit, action, plan.fingerprint.as_deref(), bars.callback())
        .await;
    bars.finish();
    report(json, outcome)
}

/// `unit rollback`.
pub(super) async fn rollback(
    engine: &Engine,
    json: bool,
    name: &str,
    to: Option<u32>,
) -> Result<ExitCode, ApiError> {
    let bars = Bars::new(json);
    let outcome = engine.unit_rollback(name, to, bars.callback()).await;
    bars.finish();
    report(json, outcome)
}

/// Deleting deployed servers needs `--yes`.
pub(super) fn check_delete(engine: &Engine, name: &str, yes: bool) -> Result<(), ApiError> {
    if let Some(what) = delete_confirmation(&engine.unit_show(name)?) {
        if !yes {
            return Err(bad(format!("{what}. Run again with --yes to do it")));
        }
    }
    Ok(())
}

/// Exit status of a rollout that stopped at a safe point (a canary, or a pause asked for).
pub(super) const EXIT_PAUSED: u8 = 18;

pub(super) fn report(json: bool, outcome: Result<OpReport, OpError>) -> Result<ExitCode, ApiError> {
    match outcome {
        Ok(r) => {
            if json {
                print_json(&r);
            } else {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                say_line(&r.to_string());
            }
            Ok(if r.paused {
                ExitCode::from(EXIT_PAUSED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(OpError::PlanChanged { shown, plan }) => {
            let e = ApiError::from(&OpError::PlanChanged {
                shown,
                plan: plan.clone(),
            });
            if json {
                print_json(&serde_json::json!({ "error": e, "plan": plan }));
            } else {
                show_plan(&plan);
            }
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code.exit_status()))
        }
        Err(OpError::Failed(r)) => {
            let e = ApiError::from(&OpError::Failed(r.clone()));
            if json {
                print_json(&serde_json::json!({ "error": e, "report": r }));
            }
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code.exit_status()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Progress bars per server on a terminal (stderr); nothing for --json.
pub(super) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    json: bool,
}

impl Bars {
    pub(super) fn new(json: bool) -> Arc<Self> {
        Arc::new(Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            json,
        })
    }

    pub(super) fn callback(self: &Arc<Self>) -> StepFn {
        let me = self.clone();
        Arc::new(move |e: StepEvent| me.event(&e))
    }

    fn event(&self, e: &StepEvent) {
        if self.json {
            return;
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if e.server.is_empty() {
            // The operation's own line: what the load balancer counted so far.
            let line = bars.entry(String::new()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                if let Ok(style) = ProgressStyle::with_template("{prefix:>16} {msg}") {
                    b.set_style(style);
                }
                b.set_prefix("load balancer");
                b
            });
            line.set_message(e.detail.clone());
            return;
        }
        let bar = bars.entry(e.server.clone()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(u64::from(e.total)));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>16} [{bar:24}] {pos}/{len} {msg} {elapsed}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(e.server.clone());
            b
        });
        bar.set_position(u64::from(e.done));
        let verb = match e.status {
            StepStatus::Started => "",
            StepStatus::Succeeded => "done: ",
            StepStatus::Failed => "FAILED: ",
            StepStatus::UndoStarted => "undoing ",
            StepStatus::Undone => "undone: ",
            StepStatus::UndoFailed => "UNDO FAILED: ",
        };
        if e.detail.is_empty() || matches!(e.status, StepStatus::Failed | StepStatus::UndoFailed) {
            bar.set_message(format!("{verb}{}", e.step.as_str()));
        } else {
            bar.set_message(format!("{verb}{}: {}", e.step.as_str(), e.detail));
        }
    }

    pub(super) fn finish(&self) {
        for b in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
            b.abandon();
        }
    }
}
