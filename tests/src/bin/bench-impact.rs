//! Benchmark (not a test): the impact model and the N+1 audit on a generated inventory — by
//! default 1,000 hosts and 20,000 servers in 1,000 units of 20 servers spread over 5 hosts
//! each — timing one what-if (one host failed) and the whole audit (every host failing alone),
//! each the median of several runs, and as the baseline the audit done the plain way (the
//! whole model once per host). The model is pure: no libvirt, no inventory.
//! Run: cargo run --release -p flotilla-tests --bin bench-impact -- 1000 20000
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: a panic is the report

use flotilla::plan::impact::{impact, n_plus_one, HostShape, ServerShape, UnitShape};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("HOSTS SERVERS"))
        .collect();
    let (hosts, servers) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(20_000),
    );
    let per_unit = 20;
    let units = servers / per_unit;
    let host_shapes: Vec<HostShape> = (0..hosts)
        .map(|i| HostShape {
            name: format!("h{i:04}"),
            free_memory_mib: 64 * 1024,
            pool_free_bytes: Some(500 << 30),
            masters: [(format!("m{}", i % 10), 1)].into_iter().collect(),
            cpus: 32,
            network: None,
            ready: true,
        })
        .collect();
    let unit_shapes: Vec<UnitShape> = (0..units)
        .map(|u| UnitShape {
            name: format!("u{u:04}"),
            pool: Some(format!("lb/u{u:04}")),
            min_in_service: per_unit as u32 - 2,
            memory_mib: 1024,
            cpus: 2,
            master: (format!("m{}", u % 10), 1),
            master_bytes: 2 << 30,
            // Each unit on 5 hosts, 4 servers each: losing one host takes 4 of 20 away.
            servers: (0..per_unit)
                .map(|s| ServerShape {
                    name: format!("u{u:04}-{s}"),
                    host: format!("h{:04}", (u * 5 + s % 5) % hosts),
                    in_service: true,
                    running: true,
                    address: None,
                })
                .collect(),
        })
        .collect();
    let one: BTreeSet<String> = ["h0000".to_owned()].into_iter().collect();
    let what_if = median(
        (0..11)
            .map(|_| {
                let t = Instant::now();
                let r = impact(&host_shapes, &unit_shapes, &one);
                assert_eq!(r.units.len(), units);
                t.elapsed()
            })
            .collect(),
    );
    let audit = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                let r = n_plus_one(&host_shapes, &unit_shapes);
                assert_eq!(r.len(), hosts);
                t.elapsed()
            })
            .collect(),
    );
    // The baseline, side by side: the audit done the plain way — the whole model once per
    // host, with every unit.
    let plain = {
        let t = Instant::now();
        let below: usize = host_shapes
            .iter()
            .map(|h| {
                let failed: BTreeSet<String> = [h.name.clone()].into_iter().collect();
                impact(&host_shapes, &unit_shapes, &failed).units.len()
            })
            .sum();
        assert_eq!(below, hosts * units);
        t.elapsed()
    };
    println!("hosts {hosts}");
    println!("servers {}", units * per_unit);
    println!("units {units}");
    println!("what_if_ms {:.1}", what_if.as_secs_f64() * 1000.0);
    println!("audit_ms {:.1}", audit.as_secs_f64() * 1000.0);
    println!("plain_audit_ms {:.1}", plain.as_secs_f64() * 1000.0);
}
