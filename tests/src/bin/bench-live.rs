//! Benchmark (not a test): one live-status refresh of a whole fleet written by `gen-fleet`
//! (libvirt test-driver hosts standing in for real ones), the way the desktop app's live loop
//! does it now — one domain listing per host for all its servers, every host at once
//! (`Engine::fleet_live`) — and, as the baseline, the way the Units view did it before: one
//! `unit_live` per unit, one unit after the other, each listing every host its servers are on.
//! Prints one `key value` per line; each time is the median of RUNS refreshes (after one
//! untimed refresh that opens the connections).
//! Run: cargo run --release -p flotilla-tests --bin bench-live -- DATA_DIR [RUNS]
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: a panic is the report

use std::collections::HashSet;
use std::time::{Duration, Instant};

fn median(mut runs: Vec<Duration>) -> f64 {
    runs.sort();
    runs[runs.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().expect("DATA_DIR"));
    let runs: usize = args.get(1).map_or(5, |r| r.parse().expect("RUNS"));
    let e = flotilla::ops::Engine::open(&dir, "bench-live").unwrap();
    let units = e.inventory.unit_list().unwrap();
    let servers: usize = units.iter().map(|u| u.servers.len()).sum();
    let listings_per_unit: usize = units
        .iter()
        .map(|u| {
            u.servers
                .iter()
                .map(|s| &s.host)
                .collect::<HashSet<_>>()
                .len()
        })
        .sum();

    let warm = e.fleet_live().await.unwrap();
    assert_eq!(warm.servers.len(), servers);
    assert!(warm.unreachable.is_empty(), "{:?}", warm.unreachable);
    let mut fleet = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let live = e.fleet_live().await.unwrap();
        fleet.push(t.elapsed());
        assert_eq!(live.servers.len(), servers);
    }
    let mut per_unit = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut n = 0;
        for u in &units {
            n += e.unit_live(&u.name).await.unwrap().len();
        }
        per_unit.push(t.elapsed());
        assert_eq!(n, servers);
    }
    println!("hosts {}", warm.hosts_asked);
    println!("units {}", units.len());
    println!("servers {servers}");
    println!("fleet_listings {}", warm.hosts_asked);
    println!("per_unit_listings {listings_per_unit}");
    println!("fleet_refresh_ms {:.1}", median(fleet));
    println!("per_unit_refresh_ms {:.1}", median(per_unit));
}
