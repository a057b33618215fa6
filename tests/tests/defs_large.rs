//! A 2 GiB package goes into a definition streamed: the process never holds it in memory.
//! Slow (copies and hashes 2 GiB), so it runs in the lab stage of scripts/test.sh.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::{Arc, Mutex};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "slow: copies and hashes a 2 GiB file (scripts/test.sh runs it)"]
fn a_2_gib_package_is_copied_in_with_progress_and_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let e = flotilla_tests::engine_in(dir.path());
    e.def_create("big").unwrap();
    let file = dir.path().join("big.bin");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let expected = String::from_utf8(
        std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let expected = expected.split_whitespace().next().unwrap().to_owned();
    let before = peak_rss_kib();
    let seen = Arc::new(Mutex::new(0u64));
    let s = seen.clone();
    let v = e
        .def_add_packages(
            "big",
            std::slice::from_ref(&file),
            Arc::new(move |p| *s.lock().unwrap() = p.done),
        )
        .unwrap();
    assert_eq!(v.version, 2);
    assert_eq!(*seen.lock().unwrap(), 2 << 30, "progress reached the end");
    let shown = e.def_show("big", None).unwrap();
    assert_eq!(shown.packages[0].size, 2 << 30);
    assert_eq!(shown.packages[0].sha256, expected, "matches sha256sum");
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "peak memory grew by {grown} KiB while copying 2 GiB"
    );
}
