//! The audit log.

use super::{print_json, table};
use crate::inventory::AuditEntry;

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
