//! Helpers for the cross-cutting tests in `tests/tests/`: reading the lab's settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// The lab's web definition (busybox httpd on port 8080, healthy at `/health`): one copy,
/// `tests/fixtures/web-definition.toml`, which the benches in `tests/rig/` read too.
pub const WEB_DEFINITION: &str = include_str!("../fixtures/web-definition.toml");

/// [`WEB_DEFINITION`] with the server named `name`.
pub fn web_definition(name: &str) -> String {
    let named = WEB_DEFINITION.replacen("name = \"web\"", &format!("name = \"{name}\""), 1);
    assert_ne!(
        named, WEB_DEFINITION,
        "the fixture names its server \"web\""
    );
    named
}

/// The running lab (tests/rig/lab up), as described by its `lab.env`.
#[derive(Debug, Clone)]
pub struct Lab {
    vars: HashMap<String, String>,
}

impl Lab {
    /// Reads `$FLOTILLA_LAB_DIR/lab.env` (default /var/tmp/flotilla-lab). Panics with the
    /// command to run when the lab is not up.
    pub fn from_env() -> Self {
        let dir =
            std::env::var("FLOTILLA_LAB_DIR").unwrap_or_else(|_| "/var/tmp/flotilla-lab".into());
        let path = PathBuf::from(&dir).join("lab.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the lab is not up ({}: {e}); run `tests/rig/lab up` as root",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { vars }
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("lab.env has no {key}"))
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.get("FLOTILLA_LAB_DIR"))
    }

    /// The directory with vmlinuz, initrd.img and master.qcow2 of the tiny guest.
    pub fn guest(&self) -> PathBuf {
        PathBuf::from(self.get("FLOTILLA_LAB_GUEST"))
    }

    pub fn host_uri(&self, i: u32) -> String {
        self.get(&format!("FLOTILLA_LAB_H{i}_URI")).to_owned()
    }

    /// Fetches `url` from inside the lab's network namespace (where the guests' addresses are
    /// reachable); `None` when nothing answered.
    pub fn http_get(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", self.get("FLOTILLA_LAB_NETNS")])
            // curl, not busybox wget: the static busybox's wget crashes in glibc's resolver.
            .args(["curl", "-sS", "--max-time", "2", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The serial console log of a domain on lab host `i` (as libvirt there writes it).
    pub fn serial_log(&self, i: u32, file_name: &str) -> String {
        let path = self.dir().join(format!("h{i}/log/qemu/{file_name}"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| format!("(no serial log at {}: {e})", path.display()))
    }
}

impl Lab {
    /// Runs `tests/rig/lab ARGS…` (kill-host, revive-host, …) and panics if it fails.
    pub fn run(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/lab");
        let out = Command::new(&script)
            .args(args)
            .env("FLOTILLA_LAB_DIR", self.dir())
            .output()
            .expect("run tests/rig/lab");
        assert!(
            out.status.success(),
            "lab {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A guest booted on a lab host through Flotilla's own code: the image's files uploaded into
/// the host's pool, a linked-clone overlay of its master, a NoCloud seed from `guest/`, a
/// domain with a fixed MAC on the host's bridge.
#[derive(Debug)]
pub struct GuestRun {
    pub host: u32,
    /// Unique prefix of every object made (domain, volumes, serial log).
    pub tag: String,
    /// Directory with vmlinuz, initrd.img and master.qcow2.
    pub image: PathBuf,
    pub cmdline: String,
    pub memory_mib: u64,
    pub hostname: String,
    pub mac: String,
    pub address: String,
    pub runcmd: Vec<String>,
    pub boot_limit: std::time::Duration,
    /// An app payload disk to attach after the seed.
    pub payload: Option<PathBuf>,
    /// What to fetch once it boots: `/` or `:8080/index.html`.
    pub http_path: String,
}

const GUEST_FILES: [(&str, flotilla::hypervisor::DiskFormat); 3] = [
    ("master.qcow2", flotilla::hypervisor::DiskFormat::Qcow2),
    ("vmlinuz", flotilla::hypervisor::DiskFormat::Raw),
    ("initrd.img", flotilla::hypervisor::DiskFormat::Raw),
];

impl GuestRun {
    fn uri(&self, lab: &Lab) -> flotilla::model::LibvirtUri {
        flotilla::model::LibvirtUri::parse(&lab.host_uri(self.host)).expect("lab URI")
    }

    fn pool() -> flotilla::model::PoolName {
        flotilla::model::PoolName::parse("default").expect("pool name")
    }

    pub fn serial_file(&self) -> String {
        format!("{}.serial", self.tag)
    }

    /// Boots the guest and fetches `http://<address>/` until it answers. Returns the page and
    /// the time from `start` to the first answer. Leaves everything in place: call `cleanup`.
    pub async fn boot_and_fetch(
        &self,
        lab: &Lab,
        hv: &flotilla::hypervisor::Hypervisor,
    ) -> Result<(String, std::time::Duration), String> {
        use flotilla::guest::{write_seed_disk, NicConfig, SeedSpec};
        use flotilla::hypervisor::{
            BootSpec, DiskFormat, DiskSpec, DomainSpec, DomainType, NicSpec,
        };
        use flotilla::model::{BridgeName, HostName, Ipv4Cidr, MacAddr};
        let (uri, pool, tag) = (self.uri(lab), Self::pool(), &self.tag);
        let mut paths = HashMap::new();
        for (file, format) in GUEST_FILES {
            let vol = hv
                .volume_upload(
                    &uri,
                    &pool,
                    &format!("{tag}-{file}"),
                    self.image.join(file),
                    format,
                    |_, _| {},
                )
                .await
                .map_err(|e| format!("upload {file}: {e:?}"))?;
            paths.insert(file, vol.path);
        }
        let disk = hv
            .volume_create_overlay(
                &uri,
                &pool,
                &format!("{tag}-disk.qcow2"),
                &format!("{tag}-master.qcow2"),
                DiskFormat::Qcow2,
            )
            .await
            .map_err(|e| format!("overlay: {e:?}"))?;
        let mac = MacAddr::parse(&self.mac).map_err(|e| e.to_string())?;
        let address = Ipv4Cidr::parse(&self.address).map_err(|e| e.to_string())?;
        let seed_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let seed_file = seed_dir.path().join("seed.img");
        write_seed_disk(
            &SeedSpec {
                instance_id: format!("{tag}-1"),
                hostname: HostName::parse(&self.hostname).map_err(|e| e.to_string())?,
                nics: vec![NicConfig {
                    mac,
                    address,
                    gateway: Some(
                        lab.get("FLOTILLA_LAB_GATEWAY")
                            .parse()
                            .map_err(|_| "gateway")?,
                    ),
                }],
                nameservers: vec![],
                runcmd: self.runcmd.clone(),
            },
            &seed_file,
        )
        .map_err(|e| format!("seed: {e}"))?;
        let seed = hv
            .volume_upload(
                &uri,
                &pool,
                &format!("{tag}-seed.img"),
                seed_file,
                DiskFormat::Raw,
                |_, _| {},
            )
            .await
            .map_err(|e| format!("upload seed: {e:?}"))?;
        let mut extra = Vec::new();
        if let Some(payload) = &self.payload {
            let vol = hv
                .volume_upload(
                    &uri,
                    &pool,
                    &format!("{tag}-payload.img"),
                    payload.clone(),
                    DiskFormat::Raw,
                    |_, _| {},
                )
                .await
                .map_err(|e| format!("upload payload: {e:?}"))?;
            extra.push(DiskSpec {
                path: vol.path,
                format: DiskFormat::Raw,
                readonly: true,
                cdrom: false,
            });
        }
        hv.domain_define(
            &uri,
            &DomainSpec {
                name: tag.clone(),
                domain_type: DomainType::Qemu,
                vcpus: 1,
                memory_mib: self.memory_mib,
                boot: BootSpec::Kernel {
                    kernel: paths["vmlinuz"].clone(),
                    initrd: Some(paths["initrd.img"].clone()),
                    cmdline: self.cmdline.clone(),
                },
                disks: vec![
                    DiskSpec {
                        path: disk.path,
                        format: DiskFormat::Qcow2,
                        readonly: false,
                        cdrom: false,
                    },
                    DiskSpec {
                        path: seed.path,
                        format: DiskFormat::Raw,
                        readonly: true,
                        cdrom: false,
                    },
                ]
                .into_iter()
                .chain(extra)
                .collect(),
                nics: vec![NicSpec {
                    mac,
                    bridge: BridgeName::parse("br0").map_err(|e| e.to_string())?,
                }],
                serial_log: Some(format!("/var/log/libvirt/qemu/{}", self.serial_file())),
                metadata: vec![("test".into(), tag.clone())],
                vnc: false,
                guest_agent: false,
            },
        )
        .await
        .map_err(|e| format!("define: {e:?}"))?;
        hv.domain_start(&uri, tag)
            .await
            .map_err(|e| format!("start: {e:?}"))?;
        let started = std::time::Instant::now();
        let url = format!("http://{}{}", address.addr(), self.http_path);
        while started.elapsed() < self.boot_limit {
            if let Some(page) = lab.http_get(&url) {
                return Ok((page, started.elapsed()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(format!(
            "{url} did not answer within {} s",
            self.boot_limit.as_secs()
        ))
    }

    /// Removes the domain, its volumes and its serial log; returns the serial log's content.
    pub async fn cleanup(&self, lab: &Lab, hv: &flotilla::hypervisor::Hypervisor) -> String {
        let (uri, pool, tag) = (self.uri(lab), Self::pool(), &self.tag);
        hv.domain_destroy(&uri, tag).await.expect("destroy");
        hv.domain_undefine(&uri, tag).await.expect("undefine");
        for suffix in ["disk.qcow2", "seed.img", "payload.img"]
            .into_iter()
            .chain(GUEST_FILES.iter().map(|f| f.0))
        {
            hv.volume_delete(&uri, &pool, &format!("{tag}-{suffix}"))
                .await
                .expect("delete volume");
        }
        let serial = lab.serial_log(self.host, &self.serial_file());
        let _ = std::fs::remove_file(lab.dir().join(format!(
            "h{}/log/qemu/{}",
            self.host,
            self.serial_file()
        )));
        serial
    }
}

/// An engine with its inventory and library in `dir`.
pub fn engine_in(dir: &std::path::Path) -> flotilla::ops::Engine {
    flotilla::ops::Engine::with(
        flotilla::inventory::Inventory::open_in(dir).expect("inventory"),
        flotilla::hypervisor::HvConfig::default(),
        flotilla::inventory::Actor::new("test"),
        dir.join("library"),
    )
}

impl Lab {
    /// An engine in `dir` ready for units: both lab hosts with the lab's network (and TCG:
    /// /dev/kvm does not work here, RIG.md) and the lab's HAProxy registered as `lab`.
    pub async fn unit_engine(&self, dir: &std::path::Path) -> flotilla::ops::Engine {
        let e = engine_in(dir);
        self.add_hosts(&e, &[1, 2]).await;
        for h in ["lab-h1", "lab-h2"] {
            e.host_set_network(h, "10.77.0.0/24", self.get("FLOTILLA_LAB_GATEWAY"), "qemu")
                .expect("set the lab network");
        }
        e.lb_add(
            "lab",
            &flotilla::ops::lbs::LbTarget::HaproxySocket {
                path: self.get("FLOTILLA_LAB_HAPROXY_SOCKET").into(),
            },
        )
        .await
        .expect("register the lab's HAProxy");
        e
    }

    /// `unit_engine` with the tiny guest imported as master `tiny` (v1) and the definition
    /// `name` (its v2 is `text`).
    pub async fn tiny_unit_engine(
        &self,
        dir: &std::path::Path,
        name: &str,
        text: &str,
    ) -> flotilla::ops::Engine {
        let e = self.unit_engine(dir).await;
        let guest = self.guest();
        e.image_import(
            &flotilla::ops::images::ImportRequest {
                image: "tiny".into(),
                file: guest.join("master.qcow2"),
                notes: String::new(),
                boot: flotilla::ops::images::BootInput::Kernel {
                    kernel: guest.join("vmlinuz"),
                    initrd: Some(guest.join("initrd.img")),
                    cmdline: "console=ttyS0 root=LABEL=root".into(),
                },
            },
            std::sync::Arc::new(|_| {}),
        )
        .await
        .expect("import the tiny guest");
        e.def_create(name).expect("create the definition");
        e.def_set_text(name, text, None)
            .expect("set the definition");
        e
    }

    /// Registers lab hosts `hosts` (1-based) as `lab-hN` with the bridge `br0`.
    pub async fn add_hosts(&self, e: &flotilla::ops::Engine, hosts: &[u32]) {
        for i in hosts {
            e.host_add(&flotilla::ops::hosts::HostInput {
                name: format!("lab-h{i}"),
                uri: self.host_uri(*i),
                pool: None,
                bridge: Some("br0".into()),
                accept_host_key: None,
            })
            .await
            .expect("add a lab host");
        }
    }
}

/// Steady HTTP load on a URL from inside the lab's network (`wrk`, which never retries), in
/// back-to-back rounds of a few seconds until stopped: every request counted, every failed
/// one (non-2xx/3xx answers and socket errors) too.
#[derive(Debug)]
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worker: Option<std::thread::JoinHandle<LoadResult>>,
}

/// What a load saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadResult {
    pub requests: u64,
    /// Answers that were not 2xx or 3xx.
    pub bad_status: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

impl LoadResult {
    pub fn failed(&self) -> u64 {
        self.bad_status + self.socket_errors
    }

    /// Adds one round of wrk's report.
    fn add(&mut self, report: &str) {
        let number = |s: &str| s.trim().trim_end_matches(',').parse::<u64>().unwrap_or(0);
        for line in report.lines().map(str::trim) {
            if let Some((n, _)) = line.split_once(" requests in ") {
                self.requests += number(n);
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                // connect 0, read 0, write 0, timeout 0
                self.socket_errors += rest
                    .split(',')
                    .filter_map(|p| p.split_whitespace().nth(1))
                    .map(number)
                    .sum::<u64>();
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
                self.bad_status += number(n);
            }
        }
    }
}

impl Lab {
    /// Starts a steady load on `url` (2 connections).
    pub fn load(&self, url: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, netns, url) = (
            stop.clone(),
            self.get("FLOTILLA_LAB_NETNS").to_owned(),
            url.to_owned(),
        );
        let worker = std::thread::spawn(move || {
            let mut seen = LoadResult::default();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &netns])
                    .args(["wrk", "-t1", "-c2", "-d3s", "--timeout", "5s", &url])
                    .output()
                    .expect("run wrk in the lab's namespace");
                assert!(
                    out.status.success(),
                    "wrk failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                seen.add(&String::from_utf8_lossy(&out.stdout));
            }
            seen
        });
        Load {
            stop,
            worker: Some(worker),
        }
    }
}

impl Load {
    /// Ends the load after its current round and says what it saw.
    pub fn stop(mut self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.worker
            .take()
            .expect("stopped once")
            .join()
            .expect("the load thread")
    }
}

#[cfg(test)]
mod tests {
    use super::LoadResult;

    #[test]
    fn a_wrk_report_is_counted() {
        let mut r = LoadResult::default();
        r.add(
            "Running 3s test @ http://10.77.0.1/\n  1 threads and 2 connections\n  5120 requests in 3.00s, 600.00KB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\nRequests/sec: 1706.00\n",
        );
        r.add("  10 requests in 3.00s, 1KB read\n");
        assert_eq!(
            r,
            LoadResult {
                requests: 5130,
                bad_status: 7,
                socket_errors: 6
            }
        );
        assert_eq!(r.failed(), 13);
    }
}

impl Lab {
    /// The servers whose guest runs on lab host `i` now, judged on the host itself (not
    /// through its libvirt, which a test may have frozen): a QEMU process of the domain is
    /// alive, and its serial console does not end with the guest powering down (a guest that
    /// powered itself off while libvirtd was frozen keeps its stopped QEMU process).
    pub fn guests_running(&self, i: u32) -> std::collections::BTreeSet<String> {
        let dir = self.dir().join(format!("h{i}"));
        let mut out = std::collections::BTreeSet::new();
        let Ok(pids) = std::fs::read_dir(dir.join("run/qemu")) else {
            return out;
        };
        for f in pids.flatten() {
            let path = f.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pid") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            // A domain's QEMU has its status file beside its pid file (`driver.pid` is
            // libvirt's own lock).
            if !dir.join(format!("run/qemu/{name}.xml")).exists() {
                continue;
            }
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            if pid.is_empty() || !PathBuf::from(format!("/proc/{pid}")).exists() {
                continue;
            }
            let serial = self.serial_text(i, name);
            let last_boot = serial.rfind("Linux version").unwrap_or(0);
            if serial[last_boot..].contains("reboot: Power down") {
                continue;
            }
            out.insert(name.to_owned());
        }
        out
    }

    /// What `server`'s guest on lab host `i` wrote to its serial console (QEMU writes it into
    /// the host's pool); empty when there is none.
    pub fn serial_text(&self, i: u32, server: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("h{i}/pool/{server}.serial")))
            .unwrap_or_default()
    }

    /// Lab host `i`'s BMC stand-in as `(url, system, user, password)`: the one `lab up`
    /// started, or one started now (`lab bmc-up`) when lab.env names none or nothing answers
    /// there. `true` when it was started here (stop it with `lab bmc-down`).
    pub fn bmc(&mut self, i: u32) -> ((String, String, String, String), bool) {
        let key = format!("FLOTILLA_LAB_H{i}_BMC_URL");
        let answers = self
            .vars
            .get(&key)
            .and_then(|u| u.strip_prefix("http://"))
            .is_some_and(|addr| std::net::TcpStream::connect(addr.trim()).is_ok());
        if !answers {
            self.run(&["bmc-up", &i.to_string()]);
            *self = Self::from_env();
        }
        let password =
            std::fs::read_to_string(self.get(&format!("FLOTILLA_LAB_H{i}_BMC_PASSWORD_FILE")))
                .expect("the BMC stand-in's password file")
                .trim()
                .to_owned();
        (
            (
                self.get(&key).to_owned(),
                self.get(&format!("FLOTILLA_LAB_H{i}_BMC_SYSTEM"))
                    .to_owned(),
                self.get(&format!("FLOTILLA_LAB_H{i}_BMC_USER")).to_owned(),
                password,
            ),
            !answers,
        )
    }

    /// The MACs that answer ARP for `address` on the lab's segment (from its namespace).
    pub fn macs_answering(&self, address: &str) -> std::collections::BTreeSet<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", self.get("FLOTILLA_LAB_NETNS")])
            .args([
                "busybox", "arping", "-c", "3", "-w", "4", "-I", "labbr", address,
            ])
            .output()
            .expect("busybox arping");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once('[')?;
                let (mac, _) = rest.split_once(']')?;
                Some(mac.to_ascii_lowercase())
            })
            .collect()
    }

    /// Watches, on a thread of its own every 100 ms, which hosts run each server's guest
    /// ([`Lab::guests_running`]) until the watch is ended: every moment a server ran on two
    /// hosts at once is kept.
    pub fn watch_twice(&self, hosts: &[u32]) -> TwiceWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (lab, hosts, flag) = (self.clone(), hosts.to_vec(), stop.clone());
        let worker = std::thread::spawn(move || {
            let began = std::time::Instant::now();
            let mut twice = Vec::new();
            let mut samples = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let mut seen: HashMap<String, Vec<u32>> = HashMap::new();
                for i in &hosts {
                    for s in lab.guests_running(*i) {
                        seen.entry(s).or_default().push(*i);
                    }
                }
                for (s, on) in seen.into_iter().filter(|(_, on)| on.len() > 1) {
                    twice.push(format!(
                        "{s} ran on lab hosts {on:?} at {} ms",
                        began.elapsed().as_millis()
                    ));
                }
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (samples, twice)
        });
        TwiceWatch {
            stop,
            worker: Some(worker),
        }
    }
}

/// See [`Lab::watch_twice`].
#[derive(Debug)]
pub struct TwiceWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worker: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl TwiceWatch {
    /// Ends the watch: how many samples it took, and every moment a server ran twice.
    pub fn end(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.worker
            .take()
            .and_then(|w| w.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for TwiceWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits (up to `limit`) until the inventory holds `state` for `host` (the monitor's record, as
/// another process reads it); returns when.
pub async fn wait_host_state(
    e: &flotilla::ops::Engine,
    host: &str,
    state: flotilla::model::HostState,
    limit: std::time::Duration,
) -> std::time::Instant {
    let began = std::time::Instant::now();
    loop {
        let h = e.host_show(host).expect("a host of the test");
        if h.monitor.state == Some(state) {
            return std::time::Instant::now();
        }
        assert!(
            began.elapsed() < limit,
            "{host} is not {state} after {limit:?}: {:?}",
            h.monitor
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Lab {
    /// Runs a blocking lab action on a thread of its own: a monitor that shares the test's task
    /// (`join!`) would not probe at all while the action blocked it.
    pub async fn off_task<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Lab) -> T + Send + 'static,
    ) -> T {
        let lab = self.clone();
        tokio::task::spawn_blocking(move || f(&lab))
            .await
            .expect("the lab action ran")
    }

    /// The lab's Debian 12 cloud-init image (`tests/rig/build-cloud-guest.sh`, cached), imported
    /// into `e` as master `name` (v1, BIOS boot from its disk).
    pub async fn import_cloud_image(&self, e: &flotilla::ops::Engine, name: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/build-cloud-guest.sh");
        let built = Command::new(&script)
            .output()
            .expect("run build-cloud-guest.sh");
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let image = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
        e.image_import(
            &flotilla::ops::images::ImportRequest {
                image: name.into(),
                file: image.join("disk.qcow2"),
                notes: "Debian 12 + cloud-init, BIOS boot".into(),
                boot: flotilla::ops::images::BootInput::Disk(flotilla::model::Firmware::Bios),
            },
            std::sync::Arc::new(|_| {}),
        )
        .await
        .expect("import the cloud image");
    }
}
