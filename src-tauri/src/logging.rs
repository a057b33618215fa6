//! Diagnostics: `tracing` spans per operation, server and step, and an event for every libvirt
//! call and load-balancer command (with its duration and result), written to a log file in the
//! data directory that rotates daily (`<data dir>/logs/flotilla.YYYY-MM-DD.log`, a week kept).
//! The level comes from `FLOTILLA_LOG` (tracing's filter syntax, e.g. `debug` or
//! `flotilla::hypervisor=trace`), else `info` (`flotillactl --verbose`: `debug`).
//!
//! Every line passes through [`crate::model::redact`] on its way to the file: a password in a URL
//! (`scheme://user:password@host`) never reaches the log, whatever code logged it.

use crate::model::redact;
use std::io::Write;
use std::path::{Path, PathBuf};
use tracing_subscriber::fmt::MakeWriter;

/// Environment variable with the log filter.
pub const LOG_ENV: &str = "FLOTILLA_LOG";
const PREFIX: &str = "flotilla";
const SUFFIX: &str = "log";
const KEEP_FILES: usize = 7;

/// Where the logs of the inventory in `data_dir` are written.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// Starts logging to `<data_dir>/logs` for this process. `verbose` raises the default level
/// (`FLOTILLA_LOG` still wins). A second call, or a failure to create the folder, leaves
/// logging as it was: diagnostics never stop the program.
pub fn init(data_dir: &Path, verbose: bool) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::EnvFilter;
    let dir = log_dir(data_dir);
    // Logs name hosts, addresses and errors: for the admin's eyes only (the folder 0700, and
    // today's file 0600 before the appender opens it; later files are inside the folder).
    crate::files::private_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = crate::files::make_private(&dir);
    let today = time::OffsetDateTime::now_utc().date();
    let file = dir.join(format!(
        "{PREFIX}.{:04}-{:02}-{:02}.{SUFFIX}",
        today.year(),
        u8::from(today.month()),
        today.day()
    ));
    if !file.exists() {
        let _ = crate::files::private_file(&file);
    }
    let _ = crate::files::make_private(&file);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(PREFIX)
        .filename_suffix(SUFFIX)
        .max_log_files(KEEP_FILES)
        .build(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let default = if verbose {
        "warn,flotilla=debug"
    } else {
        "warn,flotilla=info"
    };
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Redacting(appender)),
    );
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())
}

/// The log lines of operation `op` (in any span of it), oldest first, at most `max`.
pub fn operation_lines(data_dir: &Path, op: i64, max: usize) -> Vec<String> {
    let dir = log_dir(data_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    // Date-stamped names sort by time.
    files.sort();
    let (a, b) = (format!("op{{id={op} "), format!("op{{id={op}}}"));
    let mut out: Vec<String> = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        out.extend(
            text.lines()
                .filter(|l| l.contains(&a) || l.contains(&b))
                .map(str::to_owned),
        );
    }
    if out.len() > max {
        out.drain(..out.len() - max);
    }
    out
}

/// A log writer that redacts every line before it reaches the file.
struct Redacting<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per call.
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(redact(text).as_bytes())?,
            Err(_) => self
                .0
                .write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_of_one_operation_are_found_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let logs = log_dir(dir.path());
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(
            logs.join("flotilla.2026-11-29.log"),
            "t1  INFO op{id=7 unit=shop}: flotilla: begun\nt2  INFO op{id=70 unit=x}: other\n",
        )
        .unwrap();
        std::fs::write(
            logs.join("flotilla.2026-11-30.log"),
            "t3  WARN op{id=7 unit=shop}:server{name=shop-1}:step{name=define}: failed\nt4 unrelated\n",
        )
        .unwrap();
        std::fs::write(logs.join("notes.txt"), "op{id=7 } not a log\n").unwrap();
        let lines = operation_lines(dir.path(), 7, 100);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("t1") && lines[1].starts_with("t3"));
        assert_eq!(operation_lines(dir.path(), 7, 1).len(), 1, "capped");
    }
}
