//! The monitor's liveness probe: one cheap round trip to a host's libvirt
//! (`virConnectGetLibVersion`) and the list of its running domains, on a lane of its own (its
//! own worker thread and connection), so neither a storage stream nor a slow define on the same
//! host delays it. Each probe has a short timeout; a connection that broke is replaced by the
//! next probe (the worker checks `is_alive` before each call, and a call whose error means the
//! connection is gone drops it).
//!
//! A probe never hangs the monitor: after its timeout the caller gets an error and the stuck
//! worker is set aside (it ends when libvirt returns). At most [`MAX_WAITING`] probes of one
//! host may still be inside libvirt; beyond that a probe fails at once instead of starting yet
//! another thread and connection to a host that does not answer.
//!
//! Domain lifecycle events are not used: `virt` 0.5 wraps the default event loop but not
//! `virConnectDomainEventRegisterAny`, which only `virt-sys` has (and `unsafe`, which the
//! workspace forbids). The running domains are listed with the probe instead (one call:
//! `virConnectListAllDomains` with `VIR_CONNECT_LIST_DOMAINS_ACTIVE`), so a crashed or stopped
//! server is seen within one probe interval.

use super::{HvError, Hypervisor, Lane};
use crate::model::LibvirtUri;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::error::Error as VirtError;

/// At most this many probes of one host may be waiting inside libvirt at once (their callers
/// gave up after the timeout; the calls have not returned).
pub const MAX_WAITING: usize = 2;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// From sending the probe to its answer (queueing included).
    pub latency: Duration,
    /// The host's libvirt version (what the round trip asked).
    pub libvirt_version: u32,
    /// Names of the domains running now; `None` when listing them failed (libvirt still
    /// answered).
    pub running: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Hv(#[from] HvError),
    #[error("{uri}: {waiting} earlier probes are still waiting for libvirt to return; no other is started until one does")]
    StillWaiting { uri: String, waiting: usize },
}

impl ProbeError {
    /// In words, with libvirt's own reason when there is one.
    pub fn reason(&self) -> String {
        match self {
            Self::Hv(e) => match e.libvirt_reason() {
                Some(r) => format!("{e}: {r}"),
                None => e.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// Per host URI, the probes whose libvirt call has not returned yet.
#[derive(Debug, Default)]
pub(super) struct ProbesWaiting(Mutex<HashMap<String, Arc<AtomicUsize>>>);

impl ProbesWaiting {
    fn counter(&self, uri: &LibvirtUri) -> Arc<AtomicUsize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(uri.to_string())
            .or_default()
            .clone()
    }
}

/// Counts a probe as waiting until its job is gone: run, or dropped unrun.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type ProbeResult = Result<(u32, Option<Vec<String>>), VirtError>;

impl Hypervisor {
    /// Probes `uri`'s libvirt within `timeout` (connecting first if needed).
    pub async fn probe(
        &self,
        uri: &LibvirtUri,
        timeout: Duration,
    ) -> Result<ProbeAnswer, ProbeError> {
        self.probe_with(uri, timeout, probe_once).await
    }

    async fn probe_with<F>(
        &self,
        uri: &LibvirtUri,
        timeout: Duration,
        f: F,
    ) -> Result<ProbeAnswer, ProbeError>
    where
        F: FnOnce(&Connect, &str) -> ProbeResult + Send + 'static,
    {
        let counter = self.probes.counter(uri);
        let waiting = counter.fetch_add(1, Ordering::AcqRel);
        let guard = Waiting(counter);
        if waiting >= MAX_WAITING {
            return Err(ProbeError::StillWaiting {
                uri: uri.to_string(),
                waiting,
            });
        }
        let began = Instant::now();
        let target = uri.to_string();
        // The latency is taken when libvirt answered, on the worker: a caller that gets to
        // the answer late (a busy runtime) does not make the host look slow.
        let (libvirt_version, running, latency) = self
            .call_on(
                Lane::Probe,
                uri,
                "answer a liveness probe",
                timeout,
                move |c| {
                    let _guard = guard;
                    f(c, &target).map(|(v, running)| (v, running, began.elapsed()))
                },
            )
            .await?;
        Ok(ProbeAnswer {
            latency,
            libvirt_version,
            running,
        })
    }
}

fn probe_once(c: &Connect, uri: &str) -> ProbeResult {
    #[cfg(feature = "test-hooks")]
    test_node_present(uri)?;
    #[cfg(not(feature = "test-hooks"))]
    let _ = uri;
    let version = c.lib_version()?;
    // VIR_CONNECT_LIST_DOMAINS_ACTIVE: the running domains only, in one call.
    let running = c.list_all_domains(1).ok().map(|domains| {
        let mut names: Vec<String> = domains.iter().filter_map(|d| d.name().ok()).collect();
        names.sort();
        names
    });
    Ok((version, running))
}

/// Test hook (feature `test-hooks`): libvirt's test driver runs inside this process and cannot
/// die, and its open connection never notices its node file. So in test builds a probe of a
/// `test:///path/node.xml` host also opens that file afresh: a test "kills" the host by moving
/// its node file away (libvirt's own error comes back) and revives it by moving it back.
#[cfg(feature = "test-hooks")]
fn test_node_present(uri: &str) -> Result<(), VirtError> {
    if uri.starts_with("test:///") && uri != "test:///default" {
        Connect::open(Some(uri))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::tests::test_node_uri;
    use crate::hypervisor::{domain, DomainType, HvConfig};
    use std::sync::mpsc;

    fn own_node(dir: &std::path::Path) -> LibvirtUri {
        let node = dir.join("node.xml");
        std::fs::copy(
            test_node_uri().as_str().trim_start_matches("test://"),
            &node,
        )
        .unwrap();
        LibvirtUri::parse(&format!("test://{}", node.display())).unwrap()
    }

    #[tokio::test]
    async fn a_probe_answers_with_the_running_domains() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_node(dir.path());
        let hv = Hypervisor::new(HvConfig::default());
        let spec = domain::tests::spec(DomainType::Test);
        hv.domain_define(&uri, &spec).await.unwrap();
        let before = hv.probe(&uri, Duration::from_secs(2)).await.unwrap();
        assert!(before.libvirt_version > 0);
        assert!(!before.running.as_ref().unwrap().contains(&spec.name));
        hv.domain_start(&uri, &spec.name).await.unwrap();
        let after = hv.probe(&uri, Duration::from_secs(2)).await.unwrap();
        assert!(
            after.running.unwrap().contains(&spec.name),
            "listed once it runs"
        );
        assert!(after.latency < Duration::from_secs(2));
    }

    /// A short call that hangs on the host's calls lane (a define stuck in libvirt) does not
    /// delay the probe: it has a lane of its own.
    #[tokio::test]
    async fn a_probe_is_not_queued_behind_a_stuck_call_to_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_node(dir.path());
        let hv = Hypervisor::new(HvConfig::default());
        let (release, gate) = mpsc::channel::<()>();
        let stuck = hv.call_on(
            Lane::Calls,
            &uri,
            "hang",
            Duration::from_secs(30),
            move |c| {
                let _ = gate.recv_timeout(Duration::from_secs(30));
                c.hostname()
            },
        );
        let probe = async {
            // Let the stuck call reach its worker first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer = hv.probe(&uri, Duration::from_millis(1500)).await;
            release.send(()).unwrap();
            answer
        };
        let (stuck, answer) = tokio::join!(stuck, probe);
        stuck.unwrap();
        assert!(answer.unwrap().latency < Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn a_probe_that_hangs_times_out_and_hung_probes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_node(dir.path());
        let hv = Hypervisor::new(HvConfig::default());
        let (release, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let hang = |gate: Arc<Mutex<mpsc::Receiver<()>>>| {
            move |c: &Connect, _: &str| -> ProbeResult {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
                Ok((c.lib_version()?, None))
            }
        };
        let short = Duration::from_millis(200);
        for _ in 0..MAX_WAITING {
            let began = Instant::now();
            let err = hv
                .probe_with(&uri, short, hang(gate.clone()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ProbeError::Hv(HvError::Timeout { .. })),
                "{err:?}"
            );
            assert!(began.elapsed() < Duration::from_secs(2), "never hangs");
            assert!(err.reason().contains("did not answer"), "{}", err.reason());
        }
        // Two are stuck inside libvirt: the next fails at once, starting nothing.
        let err = hv.probe(&uri, short).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::StillWaiting { waiting: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("still waiting"), "{err}");
        // Once libvirt returns, probes work again (on a fresh worker).
        for _ in 0..MAX_WAITING {
            release.send(()).unwrap();
        }
        let mut answered = None;
        for _ in 0..50 {
            match hv.probe(&uri, Duration::from_secs(2)).await {
                Ok(a) => {
                    answered = Some(a);
                    break;
                }
                Err(ProbeError::StillWaiting { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(answered.is_some(), "probes work again");
    }

    #[cfg(feature = "test-hooks")]
    #[tokio::test]
    async fn a_test_host_whose_node_file_is_gone_fails_its_probe_with_libvirts_words() {
        let dir = tempfile::tempdir().unwrap();
        let uri = own_node(dir.path());
        let hv = Hypervisor::new(HvConfig::default());
        hv.probe(&uri, Duration::from_secs(2)).await.unwrap();
        let node = dir.path().join("node.xml");
        let away = dir.path().join("node.xml.dead");
        std::fs::rename(&node, &away).unwrap();
        let err = hv.probe(&uri, Duration::from_secs(2)).await.unwrap_err();
        assert!(err.reason().contains("node.xml"), "{}", err.reason());
        std::fs::rename(&away, &node).unwrap();
        hv.probe(&uri, Duration::from_secs(2)).await.unwrap();
    }
}
