//! The only code that touches libvirt.
//!
//! Per host URI, dedicated worker threads (*lanes*): every libvirt call blocks, so callers on
//! the async runtime send a job to one of the host's workers and await the answer (with a
//! timeout, since a dead `qemu+ssh://` host can hang a call for minutes). Short calls (define,
//! start, stop, look-ups) have their own lane; storage streams have another (the *long* lane,
//! with its own connection and a longer limit), so a stop is never queued behind a
//! multi-gigabyte copy; work inside a running guest (guest agent commands, live disk swaps)
//! has a third, so a live update is not queued behind one either. The monitor's liveness
//! probe has a fourth (`probe.rs`). All but the long lane share one connection. A job whose
//! caller gave up (timed out, or dropped the call) is never started later. A call that fails
//! because the connection broke drops it; the next call reconnects.
//!
//! The `virt` crate's types are allowed here and below, and refused everywhere else
//! (`disallowed-types` in clippy.toml).
#![allow(clippy::disallowed_types)]

mod domain;
mod facts;
mod storage;

/// Lives in `model/` (both front doors and the engine use it); re-exported for the callers
/// that build a [`DomainSpec`].
pub use crate::model::DomainType;
pub use domain::{
    domain_xml, BootSpec, DiskSpec, DiskSwap, DomainSpec, GuestExec, NicSpec, Overrun,
};
pub use storage::{DiskFormat, VolumeInfo};

use crate::model::LibvirtUri;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};

// The monitor's liveness probe, on a third lane per host.
mod probe;
pub use probe::{ProbeAnswer, ProbeError};

#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("cannot connect to {uri}")]
    Connect {
        uri: String,
        #[source]
        source: VirtError,
    },
    #[error("libvirt could not {op} on {uri}")]
    Call {
        uri: String,
        op: &'static str,
        #[source]
        source: VirtError,
    },
    #[error("{uri} did not answer within {secs} s while trying to {op}{}", if *started {
        " (it had begun and may still finish on the host)"
    } else {
        " (it was never started and will not be)"
    })]
    Timeout {
        uri: String,
        op: &'static str,
        secs: u64,
        /// Whether the call had reached libvirt. When false it never will: a job whose
        /// caller gave up is dropped by the worker.
        started: bool,
    },
    #[error("the libvirt worker for {uri} stopped unexpectedly")]
    WorkerGone { uri: String },
    /// A URI that is not (or no longer) allowed: never handed to libvirt.
    #[error("Flotilla does not connect to {uri}: {reason}; remove the host and add it again with an allowed URI")]
    UriRefused { uri: String, reason: String },
    #[error("cannot read {} to send it to {uri}", path.display())]
    LocalFile {
        uri: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a job on a worker thread can fail with: libvirt, or a local file it reads.
#[derive(Debug)]
pub(crate) enum CallError {
    Virt(VirtError),
    LocalFile(PathBuf, std::io::Error),
}

impl From<VirtError> for CallError {
    fn from(e: VirtError) -> Self {
        Self::Virt(e)
    }
}

impl HvError {
    /// True when a call failed because the connection to the host broke under it (the host,
    /// its libvirtd or the sshd carrying the connection went away): the host is unreachable,
    /// and the next call connects afresh.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Self::Call { source, .. } => {
                breaks_connection(source)
                    || (source
                        .code()
                        .is_known_and(|c| c == ErrorNumber::SystemError)
                        && [
                            "Cannot write data",
                            "Cannot recv data",
                            "End of file while reading data",
                            "Broken pipe",
                            "Connection reset",
                        ]
                        .iter()
                        .any(|m| source.message().contains(m)))
            }
            _ => false,
        }
    }

    /// libvirt's own words for what went wrong, when there are any.
    pub fn libvirt_reason(&self) -> Option<&str> {
        match self {
            Self::Connect { source, .. } | Self::Call { source, .. } => Some(source.message()),
            _ => None,
        }
    }
}

/// Settings of the adapter.
#[derive(Debug, Clone)]
pub struct HvConfig {
    /// How long one libvirt call (including connecting and waiting in the host's queue) may
    /// take before the caller gives up.
    pub call_timeout: Duration,
    /// The same for a whole storage stream (upload, download, read-back), which runs on the
    /// host's long lane.
    pub transfer_timeout: Duration,
    /// Flotilla's own known-hosts file (`hostkeys`): `qemu+ssh://` hosts are reached through
    /// its ssh wrapper, `qemu+libssh2://` hosts are told the file. Without it, libvirt checks
    /// host keys its own way (tests of local hosts only).
    pub known_hosts: Option<crate::hostkeys::KnownHosts>,
    /// A host's long-lane connection (streams, guest commands) is closed after this long
    /// without a call: it is opened for a transfer now and then, and over `qemu+ssh` each open
    /// connection is an `ssh` process here and a session on the host.
    pub long_lane_idle: Duration,
}

impl Default for HvConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(6 * 3600),
            known_hosts: None,
            long_lane_idle: Duration::from_secs(60),
        }
    }
}

/// Which of a host's workers (each a thread of its own) runs a call. The calls, probe and
/// guest lanes share one connection, the long lane has its own (`SharedConn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// Short calls: define, start, stop, look-ups, lists.
    Calls,
    /// Long calls: storage streams. Their own connection, so a short call on the same host
    /// never waits behind a multi-gigabyte copy.
    Long,
    /// Work inside running guests: commands through the QEMU guest agent, live disk swaps.
    /// Never queued behind a storage stream (they take minutes at most, a stream hours); on
    /// the connection the calls lane uses (their messages are small), so it costs a thread,
    /// not a connection (an `ssh` process here and a session on a `qemu+ssh` host).
    Guest,
    /// The monitor's liveness probe: never queued behind another call (its own thread; on
    /// the connection it shares with the calls lane, libvirt runs both side by side).
    Probe,
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A job's claim, decided once by whichever side gets there first: the worker (it starts the
/// job) or the caller (it gave up: timed out or dropped the call).
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// The caller's side of a claim: if the call is dropped (timeout, or its future dropped)
/// before the worker took the job, the job is abandoned and never runs.
struct GiveUpOnDrop(Arc<AtomicU8>);

impl GiveUpOnDrop {
    /// Gives up now; true when the worker had already started the job.
    fn give_up(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err_and(|now| now == STARTED)
    }
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        self.give_up();
    }
}

/// The worker's side: takes the job unless its caller gave up or its deadline passed.
fn claim_start(claim: &AtomicU8, deadline: Instant) -> bool {
    if Instant::now() >= deadline {
        // Too late to be useful: whoever waited is about to give up.
        let _ = claim.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
        return false;
    }
    claim
        .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// The connection a host's calls, probe and guest lanes share, with the value of the host's `broken`
/// counter when it was opened: one connection per host while Flotilla watches it (over
/// `qemu+ssh` each connection is an `ssh` process here and a session there; libvirt's client
/// runs calls from several threads on one connection side by side, so a probe does not wait
/// behind a call). The long lane keeps its own, so a multi-gigabyte stream never slows a probe
/// — except on a `test://` host, whose driver keeps a node file's state per connection (a
/// volume uploaded on the long lane would otherwise not exist for the others).
type SharedConn = Arc<Mutex<Option<(Connect, u64)>>>;

/// The state a worker thread owns: the host's URI and its connection, if open.
struct Session {
    uri: String,
    /// What libvirt is given to open `uri` (with Flotilla's ssh wrapper for `+ssh`).
    connect_uri: String,
    conn: Option<Connect>,
    shared: Option<SharedConn>,
    /// Shared by the lanes of one host: raised when any of them lost its connection, so the
    /// others (idle meanwhile, their connection as dead but not yet knowing it) connect afresh
    /// instead of failing their next call on it.
    broken: Arc<AtomicU64>,
    /// `broken` as it was when `conn` was opened.
    opened_at: u64,
}

impl Session {
    fn conn(&mut self) -> Result<&Connect, HvError> {
        // A remote connection whose socket closed (daemon restarted, host rebooted) reports
        // itself dead without a round trip; replace it.
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !c.is_alive().unwrap_or(false))
            || self.opened_at != self.broken.load(Ordering::Acquire)
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            // Checked again here, whatever the caller did: a URI from an older inventory may
            // name a program for libvirt to run.
            if let Err(e) = crate::model::LibvirtUri::parse(&self.uri) {
                return Err(HvError::UriRefused {
                    uri: self.uri.clone(),
                    reason: e.problem,
                });
            }
            let open = || {
                Connect::open(Some(&self.connect_uri)).map_err(|source| HvError::Connect {
                    uri: self.uri.clone(),
                    source,
                })
            };
            let broken_now = self.broken.load(Ordering::Acquire);
            let conn = match &self.shared {
                None => open()?,
                Some(shared) => {
                    let mut slot = shared
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    match slot.as_ref() {
                        // Opened since the host's last lost connection, and still alive.
                        Some((c, at)) if *at == broken_now && c.is_alive().unwrap_or(false) => {
                            c.clone()
                        }
                        _ => {
                            let c = open()?;
                            *slot = Some((c.clone(), broken_now));
                            c
                        }
                    }
                }
            };
            self.conn = Some(conn);
            self.opened_at = broken_now;
        }
        self.conn.as_ref().ok_or_else(|| HvError::WorkerGone {
            uri: self.uri.clone(),
        })
    }
}

/// True when the error says the object does not exist (undo treats that as done).
fn is_gone(err: &VirtError) -> bool {
    err.code().is_known_and(|c| {
        matches!(
            c,
            ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume | ErrorNumber::NoStoragePool
        )
    })
}

/// True when a call failed because the connection went away under it: a connection-class
/// error, or an OS error on the connection's socket (what libvirt says when the `ssh` process
/// carrying a `qemu+ssh` connection died: libvirt notices only when it next reads or writes,
/// as Flotilla runs no libvirt event loop, so `is_alive` still said yes).
fn lost_connection(err: &VirtError) -> bool {
    breaks_connection(err)
        || (err.code().is_known_and(|c| c == ErrorNumber::SystemError)
            && [
                "Cannot write data",
                "Cannot recv data",
                "End of file while reading data",
                "Broken pipe",
                "Connection reset",
            ]
            .iter()
            .any(|m| err.message().contains(m)))
}

/// True when the error means the connection itself is unusable.
fn breaks_connection(err: &VirtError) -> bool {
    breaks_connection_code(err.code())
}

fn breaks_connection_code(code: virt::error::ErrorNumberEnum) -> bool {
    code.is_known_and(|c| {
        matches!(
            c,
            // Not SystemError: libvirt uses it for any OS error (a missing file, say); a
            // connection that really died is caught by `is_alive` before the next call.
            ErrorNumber::NoConnect
                | ErrorNumber::InvalidConn
                | ErrorNumber::Rpc
                | ErrorNumber::AuthFailed
                | ErrorNumber::AuthCancelled
                | ErrorNumber::AuthUnavailable
        )
    })
}

#[derive(Debug)]
struct Worker {
    tx: mpsc::Sender<Job>,
    /// Joined when the adapter is dropped, so connections are closed before the process
    /// exits (libvirt running in a worker while the process tears down its libraries crashed
    /// flotillactl at exit, in libcrypto).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    fn spawn(
        uri: &str,
        lane: Lane,
        shared: Option<SharedConn>,
        known_hosts: Option<&crate::hostkeys::KnownHosts>,
        broken: Arc<AtomicU64>,
        idle_close: Option<Duration>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let mut session = Session {
            uri: uri.to_owned(),
            connect_uri: crate::hostkeys::connect_uri(uri, known_hosts),
            opened_at: broken.load(Ordering::Acquire),
            broken,
            conn: None,
            shared,
        };
        let kind = match lane {
            Lane::Calls => "libvirt",
            Lane::Long => "libvirt long",
            Lane::Probe => "libvirt probe",
            Lane::Guest => "libvirt guest",
        };
        let name = format!("{kind} {}", uri.chars().take(40).collect::<String>());
        // The thread ends when every sender is gone (the worker was forgotten).
        let spawned = std::thread::Builder::new().name(name).spawn(move || loop {
            let job = match idle_close {
                Some(idle) if session.conn.is_some() => match rx.recv_timeout(idle) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        session.conn = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                _ => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            job(&mut session);
        });
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without a thread every call on this worker reports WorkerGone; say why once.
                eprintln!("flotilla: cannot start a libvirt worker thread: {e}");
                None
            }
        };
        Self {
            tx,
            thread: Mutex::new(thread),
        }
    }
}

/// The hypervisor adapter: per host URI, a worker thread (and connection) for each lane.
#[derive(Debug)]
pub struct Hypervisor {
    workers: Mutex<HashMap<(String, Lane), Arc<Worker>>>,
    /// Per host URI: the connection its lanes share (`SharedConn`).
    shared_conns: Mutex<HashMap<String, SharedConn>>,
    /// Per host URI: raised when a lane lost its connection (see `Session::broken`).
    broken: Mutex<HashMap<String, Arc<AtomicU64>>>,
    config: HvConfig,
    /// Probes still inside libvirt, per host (bounded: see `probe`).
    probes: probe::ProbesWaiting,
}

impl Drop for Hypervisor {
    /// Stops every worker and waits (bounded) until it has closed its connection.
    fn drop(&mut self) {
        let workers: Vec<Arc<Worker>> = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, w)| w)
            .collect();
        let handles: Vec<std::thread::JoinHandle<()>> = workers
            .iter()
            .filter_map(|w| {
                w.thread
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
            })
            .collect();
        // Dropping the last sender ends each worker's loop.
        drop(workers);
        let deadline = std::time::Instant::now() + Self::CLOSE_WAIT;
        for handle in handles {
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl Hypervisor {
    pub fn new(config: HvConfig) -> Self {
        static QUIET: Once = Once::new();
        // libvirt prints every error to stderr by default; Flotilla reports errors itself.
        QUIET.call_once(virt::error::clear_error_callback);
        Self {
            workers: Mutex::new(HashMap::new()),
            shared_conns: Mutex::new(HashMap::new()),
            broken: Mutex::new(HashMap::new()),
            config,
            probes: probe::ProbesWaiting::default(),
        }
    }

    fn worker(&self, uri: &LibvirtUri, lane: Lane) -> Arc<Worker> {
        let shared = (lane != Lane::Long || uri.driver() == "test").then(|| {
            self.shared_conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(uri.to_string())
                .or_default()
                .clone()
        });
        let broken = self
            .broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(uri.to_string())
            .or_default()
            .clone();
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        workers
            .entry((uri.to_string(), lane))
            .or_insert_with(|| {
                Arc::new(Worker::spawn(
                    uri.as_str(),
                    lane,
                    shared,
                    self.config.known_hosts.as_ref(),
                    broken,
                    (lane == Lane::Long).then_some(self.config.long_lane_idle),
                ))
            })
            .clone()
    }

    /// Closes the connections to `uri` (if any) and stops its workers once the calls still
    /// waiting for them are done (a call whose caller gave up is not run).
    pub fn forget(&self, uri: &LibvirtUri) {
        {
            let mut workers = self
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for lane in [Lane::Calls, Lane::Long, Lane::Probe, Lane::Guest] {
                workers.remove(&(uri.to_string(), lane));
            }
        }
        self.shared_conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uri.as_str());
    }

    /// Sets a stuck worker aside (it finishes on its own); the next call on its lane gets a
    /// fresh one. Only that worker: a fresh one another caller already got stays.
    fn set_aside(&self, uri: &LibvirtUri, lane: Lane, stuck: &Arc<Worker>) {
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (uri.to_string(), lane);
        if workers.get(&key).is_some_and(|w| Arc::ptr_eq(w, stuck)) {
            workers.remove(&key);
        }
    }

    /// How long dropping the adapter waits for workers to close their connections (a call
    /// hung on a dead host must not keep the program from ending).
    const CLOSE_WAIT: Duration = Duration::from_secs(3);

    /// Number of workers (each with possibly an open connection): up to one per host and lane.
    pub fn worker_count(&self) -> usize {
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Runs `f` with the host's connection on the host's worker thread for short calls.
    async fn call<R, E, F>(&self, uri: &LibvirtUri, op: &'static str, f: F) -> Result<R, HvError>
    where
        R: Send + 'static,
        E: Into<CallError>,
        F: FnOnce(&Connect) -> Result<R, E> + Send + 'static,
    {
        self.call_on(Lane::Calls, uri, op, self.config.call_timeout, f)
            .await
    }

    /// Runs a storage stream (upload, download, read-back) on the host's long lane, within
    /// `transfer_timeout`.
    async fn transfer<R, E, F>(
        &self,
        uri: &LibvirtUri,
        op: &'static str,
        f: F,
    ) -> Result<R, HvError>
    where
        R: Send + 'static,
        E: Into<CallError>,
        F: FnOnce(&Connect) -> Result<R, E> + Send + 'static,
    {
        self.call_long(uri, op, self.config.transfer_timeout, f)
            .await
    }

    /// Runs work inside a running guest (a command through its agent, a live disk swap) on
    /// the host's guest lane, within `limit`: never behind a storage stream to that host.
    async fn call_guest<R, E, F>(
        &self,
        uri: &LibvirtUri,
        op: &'static str,
        limit: Duration,
        f: F,
    ) -> Result<R, HvError>
    where
        R: Send + 'static,
        E: Into<CallError>,
        F: FnOnce(&Connect) -> Result<R, E> + Send + 'static,
    {
        self.call_on(Lane::Guest, uri, op, limit, f).await
    }

    /// Runs a long call (a storage stream) on the host's long lane, its own worker and
    /// connection, within `limit`.
    async fn call_long<R, E, F>(
        &self,
        uri: &LibvirtUri,
        op: &'static str,
        limit: Duration,
        f: F,
    ) -> Result<R, HvError>
    where
        R: Send + 'static,
        E: Into<CallError>,
        F: FnOnce(&Connect) -> Result<R, E> + Send + 'static,
    {
        self.call_on(Lane::Long, uri, op, limit, f).await
    }

    /// Sends `f` to the lane's worker and waits at most `limit` (queueing included). When the
    /// caller gives up first — the limit passes, or the returned future is dropped — the job
    /// is abandoned: the worker never starts it later. A job already started cannot be
    /// stopped (libvirt is inside a call); the timeout says which of the two happened.
    async fn call_on<R, E, F>(
        &self,
        lane: Lane,
        uri: &LibvirtUri,
        op: &'static str,
        limit: Duration,
        f: F,
    ) -> Result<R, HvError>
    where
        R: Send + 'static,
        E: Into<CallError>,
        F: FnOnce(&Connect) -> Result<R, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let caller = GiveUpOnDrop(claim.clone());
        let deadline = Instant::now() + limit;
        let timeout = |started| HvError::Timeout {
            uri: uri.to_string(),
            op,
            secs: limit.as_secs(),
            started,
        };
        let late = timeout(false);
        let job: Job = Box::new(move |session: &mut Session| {
            if !claim_start(&claim, deadline) {
                // The caller gave up (or is about to): never act for nobody.
                let _ = tx.send(Err(late));
                return;
            }
            #[cfg(test)]
            if lane == Lane::Long {
                tests::hold::wait_while_held(&session.uri);
            }
            let result = match session.conn() {
                Err(e) => Err(e),
                Ok(conn) => f(conn).map_err(|e| match e.into() {
                    CallError::Virt(source) => {
                        if lost_connection(&source) {
                            session.conn = None;
                            // The host's other lanes connect afresh too.
                            session.broken.fetch_add(1, Ordering::AcqRel);
                        }
                        HvError::Call {
                            uri: session.uri.clone(),
                            op,
                            source,
                        }
                    }
                    CallError::LocalFile(path, source) => HvError::LocalFile {
                        uri: session.uri.clone(),
                        path,
                        source,
                    },
                }),
            };
            // The caller may have given up meanwhile; nobody to tell then.
            let _ = tx.send(result);
        });
        let gone = || HvError::WorkerGone {
            uri: uri.to_string(),
        };
        let worker = self.worker(uri, lane);
        worker.tx.send(job).map_err(|_| gone())?;
        let began = Instant::now();
        let outcome = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                let started = caller.give_up();
                // The worker is stuck in libvirt; let it finish on its own and use a fresh one.
                self.set_aside(uri, lane, &worker);
                Err(timeout(started))
            }
        };
        let ms = began.elapsed().as_millis() as u64;
        match &outcome {
            Ok(_) => tracing::debug!(uri = %uri, op, ms, "libvirt call"),
            Err(e) => {
                let reason = e.libvirt_reason().unwrap_or_default();
                tracing::warn!(uri = %uri, op, ms, error = %e, reason, "libvirt call failed");
            }
        }
        outcome
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `test:///` URI for the checked-in test node (pool `default`, bridges `br0`, `virbr0`).
    pub(crate) fn test_node_uri() -> LibvirtUri {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/test-node.xml")
            .canonicalize()
            .expect("tests/fixtures/test-node.xml");
        LibvirtUri::parse(&format!("test://{}", path.display())).unwrap()
    }

    /// A URI stored before the checks (here one that would make libvirt run a program) is
    /// parsed again before connecting: the program never runs.
    #[tokio::test]
    async fn a_refused_uri_is_never_handed_to_libvirt() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = dir.path().join("x.sh");
        std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        let uri =
            LibvirtUri::from_stored(&format!("qemu+ext:///system?command={}", script.display()));
        let hv = Hypervisor::new(HvConfig::default());
        let err = hv
            .call(&uri, "read the hostname", |c| c.hostname())
            .await
            .unwrap_err();
        assert!(matches!(err, HvError::UriRefused { .. }), "{err}");
        assert!(!marker.exists(), "libvirt ran the URI's program");
    }

    #[tokio::test]
    async fn one_worker_per_host_and_calls_run_off_the_runtime() {
        let hv = Hypervisor::new(HvConfig::default());
        let uri = test_node_uri();
        let runtime_thread = std::thread::current().id();
        for _ in 0..3 {
            let on = hv
                .call(&uri, "read the hostname", move |c| {
                    assert_ne!(std::thread::current().id(), runtime_thread);
                    c.hostname()
                })
                .await
                .unwrap();
            assert!(!on.is_empty());
        }
        assert_eq!(
            hv.worker_count(),
            1,
            "repeated calls reuse the host's worker"
        );
        hv.forget(&uri);
        assert_eq!(hv.worker_count(), 0);
    }

    #[tokio::test]
    async fn a_missing_node_file_is_a_connect_error_naming_the_uri() {
        let hv = Hypervisor::new(HvConfig::default());
        let uri = LibvirtUri::parse("test:///nonexistent/flotilla-node.xml").unwrap();
        let err = hv
            .call(&uri, "read the hostname", |c| c.hostname())
            .await
            .unwrap_err();
        assert!(matches!(err, HvError::Connect { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("test:///nonexistent/flotilla-node.xml"));
        assert!(err.libvirt_reason().unwrap().contains("flotilla-node.xml"));
    }

    #[test]
    fn connection_level_errors_are_told_apart_from_call_errors() {
        use virt::error::ErrorNumberEnum;
        for broken in [
            ErrorNumber::NoConnect,
            ErrorNumber::Rpc,
            ErrorNumber::InvalidConn,
        ] {
            assert!(breaks_connection_code(ErrorNumberEnum::from(broken)));
        }
        // SystemError is any OS error (a missing file): not a reason to reconnect.
        for fine in [
            ErrorNumber::NoDomain,
            ErrorNumber::SystemError,
            ErrorNumber::OperationFailed,
        ] {
            assert!(!breaks_connection_code(ErrorNumberEnum::from(fine)));
        }
    }

    #[tokio::test]
    async fn a_call_that_hangs_times_out_and_the_next_call_gets_a_fresh_worker() {
        let hv = Hypervisor::new(HvConfig {
            call_timeout: Duration::from_millis(200),
            ..HvConfig::default()
        });
        let uri = test_node_uri();
        let err = hv
            .call(&uri, "wait forever", |c| {
                std::thread::sleep(Duration::from_secs(2));
                c.hostname()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, HvError::Timeout { started: true, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("did not answer"));
        assert_eq!(hv.worker_count(), 0, "the stuck worker was set aside");
        hv.call(&uri, "read the hostname", |c| c.hostname())
            .await
            .unwrap();
    }

    /// A copy of the test node under its own URI, so a test's holds and state are its own.
    fn own_test_node(dir: &std::path::Path) -> LibvirtUri {
        let node = dir.join("node.xml");
        let fixture = test_node_uri();
        std::fs::copy(fixture.as_str().trim_start_matches("test://"), &node).unwrap();
        LibvirtUri::parse(&format!("test://{}", node.display())).unwrap()
    }

    /// Test hook: long calls on a held URI wait, once their worker has taken them, until the
    /// test lets go — a multi-gigabyte transfer without the gigabytes.
    pub(crate) mod hold {
        use std::sync::{Condvar, Mutex, PoisonError};
        use std::time::Duration;

        /// Held URIs, each with how many long calls wait on it now.
        static HELD: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());
        static CHANGED: Condvar = Condvar::new();

        pub(crate) fn hold(uri: &str) {
            HELD.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((uri.to_owned(), 0));
        }

        pub(crate) fn release(uri: &str) {
            HELD.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(u, _)| u != uri);
            CHANGED.notify_all();
        }

        pub(crate) fn waiting(uri: &str) -> usize {
            HELD.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(u, _)| u == uri)
                .map_or(0, |(_, n)| *n)
        }

        pub(crate) fn wait_while_held(uri: &str) {
            let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(entry) = held.iter_mut().find(|(u, _)| u == uri) else {
                return;
            };
            entry.1 += 1;
            // Bounded: a test that fails before it lets go must not hang the run.
            let _ = CHANGED
                .wait_timeout_while(held, Duration::from_secs(60), |h| {
                    h.iter().any(|(u, _)| u == uri)
                })
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    #[tokio::test]
    async fn a_call_whose_caller_gave_up_is_never_run_later() {
        use futures_util::future::poll_immediate;
        let dir = tempfile::tempdir().unwrap();
        let uri = own_test_node(dir.path());
        let hv = Hypervisor::new(HvConfig {
            call_timeout: Duration::from_millis(300),
            ..HvConfig::default()
        });
        // A slow call occupies the host's worker until the test lets it go.
        let (release, gate) = mpsc::channel::<()>();
        let mut slow = std::pin::pin!(hv.call_on(
            Lane::Calls,
            &uri,
            "hold the worker",
            Duration::from_secs(60),
            move |c| {
                let _ = gate.recv_timeout(Duration::from_secs(60));
                c.hostname()
            }
        ));
        assert!(poll_immediate(&mut slow).await.is_none());
        // Queued behind it: a define whose caller gives up after 300 ms, and one whose caller
        // drops the call at once.
        let (late, dropped) = (
            DomainSpec {
                name: "late-1".into(),
                ..domain::tests::spec(DomainType::Test)
            },
            DomainSpec {
                name: "late-2".into(),
                ..domain::tests::spec(DomainType::Test)
            },
        );
        let mut define = std::pin::pin!(hv.domain_define(&uri, &late));
        assert!(poll_immediate(&mut define).await.is_none());
        let mut gave_up = Box::pin(hv.domain_define(&uri, &dropped));
        assert!(poll_immediate(&mut gave_up).await.is_none());
        drop(gave_up);
        // Behind both, with a long limit, on the same worker and connection: when it answers,
        // the worker has gone past the two.
        let mut after = std::pin::pin!(hv.call_on(
            Lane::Calls,
            &uri,
            "list domains",
            Duration::from_secs(60),
            |c| {
                c.list_all_domains(0)?
                    .iter()
                    .map(|d| d.name())
                    .collect::<Result<Vec<_>, _>>()
            }
        ));
        assert!(poll_immediate(&mut after).await.is_none());

        let err = define.await.unwrap_err();
        assert!(
            matches!(err, HvError::Timeout { started: false, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("never started"), "{err}");
        release.send(()).unwrap();
        slow.await.unwrap();
        let names = after.await.unwrap();
        assert!(
            !names.iter().any(|n| n.starts_with("late-")),
            "a define whose caller had given up ran later: {names:?}"
        );
    }

    #[tokio::test]
    async fn a_short_call_is_not_queued_behind_a_transfer_to_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_test_node(dir.path());
        let pool = crate::model::PoolName::parse("default").unwrap();
        let file = dir.path().join("master.img");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        let hv = Arc::new(Hypervisor::new(HvConfig {
            call_timeout: Duration::from_secs(5),
            ..HvConfig::default()
        }));
        hold::hold(uri.as_str());
        let upload = tokio::spawn({
            let (hv, uri, pool) = (hv.clone(), uri.clone(), pool.clone());
            async move {
                hv.volume_upload(&uri, &pool, "master.img", file, DiskFormat::Raw, |_, _| {})
                    .await
            }
        });
        for _ in 0..1000 {
            if hold::waiting(uri.as_str()) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hold::waiting(uri.as_str()), 1, "the upload is in progress");

        // A start on the same host while the upload goes on.
        let spec = domain::tests::spec(DomainType::Test);
        let started = async {
            hv.domain_define(&uri, &spec).await?;
            hv.domain_start(&uri, &spec.name).await?;
            hv.domain_is_running(&uri, &spec.name).await
        }
        .await;
        hold::release(uri.as_str());
        assert_eq!(started.unwrap(), Some(true));
        assert_eq!(hold::waiting(uri.as_str()), 0);

        let uploaded = upload.await.unwrap().unwrap();
        assert_eq!(uploaded.name, "master.img");
        // The test driver's lanes share one connection: the short lane sees the volume.
        assert!(hv
            .volume_get(&uri, &pool, "master.img")
            .await
            .unwrap()
            .is_some());
        assert_eq!(hv.worker_count(), 2, "one worker per lane");
    }

    /// A command in a guest (through its agent) on a host to which a long upload runs: it is
    /// not queued behind the upload. libvirt's test driver has no guest agent, so libvirt
    /// answers at once that it cannot — which shows the call reached it while the upload
    /// still held the long lane.
    #[tokio::test]
    async fn a_guest_command_is_not_queued_behind_a_transfer_to_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_test_node(dir.path());
        let pool = crate::model::PoolName::parse("default").unwrap();
        let file = dir.path().join("master.img");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        let hv = Arc::new(Hypervisor::new(HvConfig::default()));
        let spec = domain::tests::spec(DomainType::Test);
        hv.domain_define(&uri, &spec).await.unwrap();
        hv.domain_start(&uri, &spec.name).await.unwrap();
        hold::hold(uri.as_str());
        let upload = tokio::spawn({
            let (hv, uri, pool) = (hv.clone(), uri.clone(), pool.clone());
            async move {
                hv.volume_upload(&uri, &pool, "master.img", file, DiskFormat::Raw, |_, _| {})
                    .await
            }
        });
        for _ in 0..1000 {
            if hold::waiting(uri.as_str()) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(hold::waiting(uri.as_str()), 1, "the upload is in progress");

        let ran = tokio::time::timeout(
            Duration::from_secs(8),
            hv.domain_guest_script(&uri, &spec.name, "true", Duration::from_secs(5)),
        )
        .await;
        let still_uploading = hold::waiting(uri.as_str());
        hold::release(uri.as_str());
        let answer = ran.expect("the guest command waited behind the upload");
        assert_eq!(still_uploading, 1, "answered while the upload went on");
        let err = answer.unwrap_err();
        assert!(
            matches!(err, HvError::Call { .. }),
            "libvirt was asked and said no: {err:?}"
        );
        upload.await.unwrap().unwrap();
    }
}
