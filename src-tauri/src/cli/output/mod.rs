//! How `flotillactl` prints: aligned text for people, JSON for scripts. The shared pieces
//! (JSON, lines, tables, progress) are here; what each resource looks like is in its own file.

use crate::error::ApiError;
use crate::ops::images::{ImageProgress, ProgressFn};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// `println!` that ends the program quietly when stdout is closed (`flotillactl … | head`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

// After `say!`: the files below use it.
mod audit;
mod defs;
mod hosts;
mod images;
mod impact;

pub use audit::*;
pub use defs::*;
pub use hosts::*;
pub use images::*;
pub use impact::*;

pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => say!("{s}"),
        Err(e) => eprintln!("error: cannot encode the result as JSON: {e}"),
    }
}

/// One line on stdout (see `say!`).
pub fn say_line(line: &str) {
    say!("{line}");
}

pub fn json_value(v: &serde_json::Value) {
    print_json(v);
}

pub fn error(json: bool, e: &ApiError) {
    if json {
        print_json(&serde_json::json!({ "error": e }));
    }
    eprintln!("error: {}", e.message);
    if let Some(detail) = &e.detail {
        for line in detail.lines() {
            eprintln!("  {line}");
        }
    }
}

/// A spinner on stderr while something slow happens; invisible when stderr is not a terminal
/// or when printing JSON.
pub fn spinner(json: bool, message: String) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        say!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn removed(json: bool, kind: &str, name: &str) {
    if json {
        print_json(&serde_json::json!({ "removed": { "kind": kind, "name": name } }));
    } else {
        say!("Removed {kind} {name}.");
    }
}

pub fn lines(json: bool, lines: &[String]) {
    if json {
        return print_json(lines);
    }
    if lines.is_empty() {
        say!("No differences.");
    }
    for l in lines {
        say!("{l}");
    }
}

pub fn written(json: bool, path: &std::path::Path, sha256: Option<&str>) {
    if json {
        return print_json(&serde_json::json!({ "written": path, "sha256": sha256 }));
    }
    match sha256 {
        Some(s) => say!("Wrote {} (sha256 {s}).", path.display()),
        None => say!("Wrote {}.", path.display()),
    }
}

/// A progress bar on stderr for image operations (hidden with --json or without a terminal).
pub struct Progress {
    bar: ProgressBar,
}

pub fn progress(json: bool) -> Progress {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Progress { bar }
}

impl Progress {
    pub fn callback(&self) -> ProgressFn {
        let bar = self.bar.clone();
        Arc::new(move |p: ImageProgress| {
            if bar.message() != p.phase {
                bar.set_message(p.phase.clone());
                bar.reset();
            }
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
    }
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_human() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(8 << 30), "8.0 GiB");
        assert_eq!(super::bytes(1536), "1.5 KiB");
    }
}
