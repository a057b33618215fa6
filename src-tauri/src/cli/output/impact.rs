//! What failed hosts do to the units, and the N+1 audit.

use super::{say_line, table};

/// What failed hosts do to the units, and the N+1 audit.
pub fn impact(r: &crate::ops::impact::ImpactReport) {
    let i = &r.impact;
    if i.failed_hosts.is_empty() {
        say_line("Units now:");
    } else {
        say_line(&format!("If {} failed:", i.failed_hosts.join(", ")));
    }
    let rows: Vec<Vec<String>> = i.units.iter().map(unit_row).collect();
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

/// One unit's row: its state now and after, what it lost and whether it can be replaced.
fn unit_row(u: &crate::plan::impact::UnitImpact) -> Vec<String> {
    use crate::plan::impact::UnitHealth;
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
}

/// The N+1 audit as a table.
pub fn impact_audit(audit: &[crate::plan::impact::HostRisk]) {
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
