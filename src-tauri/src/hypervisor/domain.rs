//! Domains: the XML Flotilla defines (pure, validated by libvirt's own schema in the tests) and
//! their lifecycle. Undo-style calls (destroy, undefine) treat "no such domain" as done.

use super::storage::DiskFormat;
use super::{is_gone, HvError, Hypervisor};
use crate::model::{BridgeName, DomainType, LibvirtUri, MacAddr};
use virt::domain::Domain;
use virt::error::ErrorNumber;

/// Namespace of Flotilla's `<metadata>` element in domain XML.
pub const METADATA_NS: &str = "https://flotilla.invalid/xmlns/server/1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSpec {
    /// Firmware (BIOS, or UEFI when `uefi`) boots the first disk, as stock cloud images do;
    /// with `cdrom_first` an attached CD-ROM (an installer) is tried before it.
    Disk { uefi: bool, cdrom_first: bool },
    /// Direct kernel boot; paths are on the host.
    Kernel {
        kernel: String,
        initrd: Option<String>,
        cmdline: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Path on the host.
    pub path: String,
    pub format: DiskFormat,
    pub readonly: bool,
    /// A CD-ROM (SATA) instead of a virtio disk.
    pub cdrom: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub mac: MacAddr,
    pub bridge: BridgeName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    pub domain_type: DomainType,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub boot: BootSpec,
    /// Attached in order as vda, vdb, …
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// Host path of a file that receives the serial console.
    pub serial_log: Option<String>,
    /// Key/value pairs recorded in Flotilla's metadata element (unit, version, …).
    pub metadata: Vec<(String, String)>,
    /// A VNC console listening on the host's loopback (reach it with `virt-viewer -c URI NAME`).
    pub vnc: bool,
    /// A virtio channel for the QEMU guest agent.
    pub guest_agent: bool,
}

/// What became of a live disk swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSwap {
    /// The new disk is attached where the old one was.
    Done,
    /// The guest did not release the old disk in time: it is still attached, nothing changed.
    NotReleased,
    /// Neither disk is attached.
    Missing,
}

/// What a command run through the guest agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestExec {
    /// Its exit status; `None` when it did not exit by itself (a signal ended it, or it ran
    /// past its limit).
    pub exit_code: Option<i64>,
    /// The signal that ended it, when one did.
    pub signal: Option<i64>,
    /// Set when it ran past its limit: it was then killed in the guest with its process group.
    pub overran: Option<Overrun>,
    pub stdout: String,
    pub stderr: String,
}

/// What became of a command in a guest that ran past its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overrun {
    /// Killed with its process group: none of its processes is left in the guest.
    Killed,
    /// Killed, but Flotilla could not confirm that none of its processes is left (why).
    NotConfirmed(String),
}

pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The libvirt domain XML for a spec.
pub fn domain_xml(spec: &DomainSpec) -> String {
    let e = xml_escape;
    let mut x = format!(
        "<domain type='{}'>\n  <name>{}</name>\n",
        spec.domain_type.as_str(),
        e(&spec.name)
    );
    if !spec.metadata.is_empty() {
        x.push_str(&format!(
            "  <metadata>\n    <flotilla:server xmlns:flotilla='{METADATA_NS}'>\n"
        ));
        for (k, v) in &spec.metadata {
            x.push_str(&format!(
                "      <flotilla:property name='{}'>{}</flotilla:property>\n",
                e(k),
                e(v)
            ));
        }
        x.push_str("    </flotilla:server>\n  </metadata>\n");
    }
    let efi = matches!(spec.boot, BootSpec::Disk { uefi: true, .. });
    x.push_str(&format!(
        "  <memory unit='MiB'>{}</memory>\n  <vcpu>{}</vcpu>\n  <os{}>\n    <type arch='x86_64'>hvm</type>\n",
        spec.memory_mib,
        spec.vcpus,
        if efi { " firmware='efi'" } else { "" }
    ));
    match &spec.boot {
        BootSpec::Disk { cdrom_first, .. } => {
            if *cdrom_first {
                x.push_str("    <boot dev='cdrom'/>\n");
            }
            x.push_str("    <boot dev='hd'/>\n");
        }
        BootSpec::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            x.push_str(&format!("    <kernel>{}</kernel>\n", e(kernel)));
            if let Some(initrd) = initrd {
                x.push_str(&format!("    <initrd>{}</initrd>\n", e(initrd)));
            }
            x.push_str(&format!("    <cmdline>{}</cmdline>\n", e(cmdline)));
        }
    }
    x.push_str(
        "  </os>\n  <features>\n    <acpi/>\n    <apic/>\n  </features>\n  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n",
    );
    let letter = |i: usize| char::from(b'a' + u8::try_from(i % 26).unwrap_or(0));
    let (mut virtio, mut sata) = (0, 0);
    for d in &spec.disks {
        let (device, target) = if d.cdrom {
            sata += 1;
            (
                "cdrom",
                format!("<target dev='sd{}' bus='sata'/>", letter(sata - 1)),
            )
        } else {
            virtio += 1;
            (
                "disk",
                format!("<target dev='vd{}' bus='virtio'/>", letter(virtio - 1)),
            )
        };
        x.push_str(&format!(
            "    <disk type='file' device='{device}'>\n      <driver name='qemu' type='{}'/>\n      <source file='{}'/>\n      {target}\n{}    </disk>\n",
            d.format.as_str(),
            e(&d.path),
            if d.readonly || d.cdrom { "      <readonly/>\n" } else { "" }
        ));
    }
    for n in &spec.nics {
        x.push_str(&format!(
            "    <interface type='bridge'>\n      <mac address='{}'/>\n      <source bridge='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
            n.mac,
            e(n.bridge.as_str())
        ));
    }
    if let Some(log) = &spec.serial_log {
        x.push_str(&format!(
            "    <serial type='file'>\n      <source path='{}'/>\n      <target port='0'/>\n    </serial>\n    <console type='file'>\n      <source path='{}'/>\n      <target type='serial' port='0'/>\n    </console>\n",
            e(log),
            e(log)
        ));
    }
    if spec.guest_agent {
        x.push_str("    <channel type='unix'>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>\n");
    }
    if spec.vnc {
        x.push_str("    <graphics type='vnc' autoport='yes' listen='127.0.0.1'>\n      <listen type='address' address='127.0.0.1'/>\n    </graphics>\n    <video>\n      <model type='vga'/>\n    </video>\n");
    }
    x.push_str("    <memballoon model='none'/>\n  </devices>\n</domain>\n");
    x
}

/// Whether a `guest-info` answer says `guest-exec` and `guest-exec-status` are enabled.
fn exec_enabled(info: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(info).unwrap_or_default();
    let enabled = |name: &str| {
        v["return"]["supported_commands"]
            .as_array()
            .is_some_and(|cmds| {
                cmds.iter()
                    .any(|c| c["name"] == name && c["enabled"].as_bool() == Some(true))
            })
    };
    enabled("guest-exec") && enabled("guest-exec-status")
}

/// How long one guest agent command may wait for the agent (seconds).
const AGENT_WAIT_S: i32 = 10;
/// How long past its limit a command may take to end by itself (the guest's `timeout` kills
/// it at its limit) before Flotilla kills its process group through the agent.
const GUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long Flotilla waits for that kill to be confirmed.
const GUEST_KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `sh -c` text that runs the script given on standard input. The script is read whole before
/// anything of it runs, and its commands read nothing from that input (`/dev/null`): a
/// command reading standard input cannot swallow the rest of the script. An empty input (the
/// agent gave none) is an error, never a success that ran nothing. Nothing of the script is on
/// a command line.
pub(crate) const SCRIPT_FROM_STDIN: &str = "s=$(cat) && [ -n \"$s\" ] || { echo 'flotilla: no script on standard input' >&2; exit 2; }; exec </dev/null; eval \"$s\"";

/// The `guest-exec` request that runs `program` with `args` in the guest, in a session and
/// process group of its own (`setsid`: the pid the agent returns is the group's id, whatever
/// the guest's `timeout` does) under the guest's `timeout -s KILL`, which at the limit kills
/// it — GNU `timeout` with every process still in its group — even when Flotilla no longer
/// watches. `input` is given as its standard input (base64, the agent's `input-data`): it is
/// neither logged by the agent nor shown on a command line.
fn guest_exec_request(
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
    limit: std::time::Duration,
) -> String {
    use base64::Engine as _;
    let secs = limit.as_secs().max(1).to_string();
    let mut arg = vec!["timeout", "-s", "KILL", secs.as_str(), program];
    arg.extend_from_slice(args);
    let mut arguments = serde_json::json!({
        "path": "setsid",
        "arg": arg,
        "capture-output": true,
    });
    if let Some(bytes) = input {
        arguments["input-data"] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    serde_json::json!({ "execute": "guest-exec", "arguments": arguments }).to_string()
}

/// The shell text that kills process group `pgid` in the guest and waits (10 s at most)
/// until none of its processes is left; exit 0 when none is. A command that is not the leader
/// of its own group (it always is, started by `setsid`; this is the safety net) is killed alone
/// when it is still the agent's child, and the script says so and fails: its group is the
/// agent's, which must live.
fn kill_group_script(pgid: i64) -> String {
    format!(
        "p={pgid}
set -- $(sed -n 's/^.*) [A-Za-z] \\([0-9]*\\) \\([0-9]*\\) .*$/\\1 \\2/p' /proc/$p/stat 2>/dev/null)
if [ $# -eq 2 ] && [ \"$2\" != \"$p\" ]; then
  [ \"$1\" = \"$PPID\" ] && kill -s KILL $p 2>/dev/null
  echo \"process $p was not the leader of its own process group: only it was killed, not what it started\" >&2; exit 3
fi
n=0
while kill -s 0 -- -$p 2>/dev/null; do
  kill -s KILL -- -$p 2>/dev/null
  n=$((n+1)); [ $n -le 50 ] || {{ echo \"processes of group $p were still there 10 s after SIGKILL\" >&2; exit 1; }}
  sleep 0.2
done"
    )
}

/// A `guest-exec-status` answer: `None` while the command runs.
fn exec_status(reply: &str) -> Option<GuestExec> {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap_or_default();
    let r = &v["return"];
    if r["exited"].as_bool() != Some(true) {
        return None;
    }
    let text = |key: &str| {
        use base64::Engine as _;
        r[key]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Some(GuestExec {
        exit_code: r["exitcode"].as_i64(),
        signal: r["signal"].as_i64(),
        overran: None,
        stdout: text("out-data"),
        stderr: text("err-data"),
    })
}

/// Starts a `guest-exec` request and returns the pid the agent gives it.
fn guest_exec_start(d: &Domain, request: &str) -> Result<i64, virt::error::Error> {
    let started = d.qemu_agent_command(request, AGENT_WAIT_S, 0)?;
    Ok(serde_json::from_str::<serde_json::Value>(&started)
        .ok()
        .and_then(|v| v["return"]["pid"].as_i64())
        .unwrap_or(-1))
}

fn guest_exec_poll(d: &Domain, pid: i64) -> Result<Option<GuestExec>, virt::error::Error> {
    let status = serde_json::json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } })
        .to_string();
    Ok(exec_status(&d.qemu_agent_command(
        &status,
        AGENT_WAIT_S,
        0,
    )?))
}

/// Runs a `guest-exec` request and waits for it: `limit`, then [`GUEST_GRACE`] for the
/// guest's `timeout` to end it; a command that ran past its limit has its process group
/// killed (again) from here, and confirmed gone, before this returns — so whatever runs next
/// (an undo) never runs beside it.
fn guest_run_blocking(
    d: &Domain,
    request: &str,
    limit: std::time::Duration,
) -> Result<GuestExec, virt::error::Error> {
    use std::time::{Duration, Instant};
    let began = Instant::now();
    let pid = guest_exec_start(d, request)?;
    let until = began + limit + GUEST_GRACE;
    loop {
        if let Some(mut done) = guest_exec_poll(d, pid)? {
            // Ended by a signal at its limit: the guest's `timeout` killed it.
            if done.exit_code.is_none() && began.elapsed() + Duration::from_secs(1) >= limit {
                done.overran = Some(kill_group(d, pid));
            }
            return Ok(done);
        }
        if Instant::now() > until {
            return Ok(GuestExec {
                exit_code: None,
                signal: None,
                overran: Some(kill_group(d, pid)),
                stdout: String::new(),
                stderr: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Kills process group `pgid` in the guest through the agent and waits until none of its
/// processes is left ([`GUEST_KILL_WAIT`] at most).
fn kill_group(d: &Domain, pgid: i64) -> Overrun {
    use std::time::{Duration, Instant};
    if pgid <= 1 {
        return Overrun::NotConfirmed(format!(
            "the guest agent gave the command no process id ({pgid})"
        ));
    }
    let request = serde_json::json!({
        "execute": "guest-exec",
        "arguments": { "path": "/bin/sh", "arg": ["-c", kill_group_script(pgid)], "capture-output": true }
    })
    .to_string();
    let pid = match guest_exec_start(d, &request) {
        Ok(pid) => pid,
        Err(e) => {
            return Overrun::NotConfirmed(format!(
                "the guest agent did not run the kill: {}",
                e.message()
            ))
        }
    };
    let until = Instant::now() + GUEST_KILL_WAIT;
    while Instant::now() < until {
        match guest_exec_poll(d, pid) {
            Ok(Some(r)) if r.exit_code == Some(0) => return Overrun::Killed,
            Ok(Some(r)) => {
                let why = r.stderr.trim();
                return Overrun::NotConfirmed(if why.is_empty() {
                    format!("the kill ended with {:?}", r.exit_code.or(r.signal))
                } else {
                    why.to_owned()
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                return Overrun::NotConfirmed(format!(
                    "the guest agent did not answer about the kill: {}",
                    e.message()
                ))
            }
        }
    }
    Overrun::NotConfirmed(format!(
        "the kill did not finish within {} s",
        GUEST_KILL_WAIT.as_secs()
    ))
}

/// The target (`vdc`) of the disk whose source is the file `path`, in a domain's XML.
fn disk_target(xml: &str, path: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    doc.descendants()
        .filter(|n| n.has_tag_name("disk"))
        .find(|d| {
            d.children()
                .any(|c| c.has_tag_name("source") && c.attribute("file") == Some(path))
        })?
        .children()
        .find(|c| c.has_tag_name("target"))?
        .attribute("dev")
        .map(str::to_owned)
}

fn vnc_address(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let g = doc
        .descendants()
        .find(|n| n.has_tag_name("graphics") && n.attribute("type") == Some("vnc"))?;
    let port = g.attribute("port").filter(|p| *p != "-1")?;
    Some(format!(
        "{}:{port}",
        g.attribute("listen").unwrap_or("127.0.0.1")
    ))
}

fn lookup(c: &virt::connect::Connect, name: &str) -> Result<Option<Domain>, virt::error::Error> {
    match c.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Hypervisor {
    /// Defines (or redefines) a persistent domain. Redefining keeps the existing domain's
    /// UUID (libvirt refuses a second definition of a name under a new one), so defining is
    /// idempotent.
    pub async fn domain_define(&self, uri: &LibvirtUri, spec: &DomainSpec) -> Result<(), HvError> {
        let xml = domain_xml(spec);
        let name = spec.name.clone();
        self.call(uri, "define a domain", move |c| {
            let xml = match lookup(c, &name)? {
                Some(d) => xml.replacen(
                    "</name>\n",
                    &format!("</name>\n  <uuid>{}</uuid>\n", d.uuid_string()?),
                    1,
                ),
                None => xml,
            };
            c.define_domain_xml(&xml).map(|_| ())
        })
        .await
    }

    /// Starts a defined domain; starting a running one is not an error.
    pub async fn domain_start(&self, uri: &LibvirtUri, name: &str) -> Result<(), HvError> {
        let name = name.to_owned();
        self.call(uri, "start a domain", move |c| {
            let d = c.lookup_domain_by_name(&name)?;
            if d.is_active()? {
                return Ok(());
            }
            d.create().map(|_| ())
        })
        .await
    }

    /// Powers a domain off at once. Returns false when it was not running or does not exist.
    pub async fn domain_destroy(&self, uri: &LibvirtUri, name: &str) -> Result<bool, HvError> {
        let name = name.to_owned();
        self.call(uri, "power off a domain", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok(false);
            };
            if !d.is_active()? {
                return Ok(false);
            }
            d.destroy().map(|_| true)
        })
        .await
    }

    /// Removes a domain's definition, with its UEFI NVRAM and managed-save image if it has
    /// them. Returns false when it did not exist.
    pub async fn domain_undefine(&self, uri: &LibvirtUri, name: &str) -> Result<bool, HvError> {
        let name = name.to_owned();
        self.call(uri, "undefine a domain", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok(false);
            };
            let flags =
                virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM | virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
            let done = match d.undefine_flags(flags) {
                // Drivers without NVRAM support (the test driver) refuse the flags.
                Err(e)
                    if e.code().is_known_and(|c| {
                        matches!(c, ErrorNumber::InvalidArg | ErrorNumber::NoSupport)
                    }) =>
                {
                    d.undefine()
                }
                other => other,
            };
            match done {
                Ok(()) => Ok(true),
                Err(e) if is_gone(&e) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Whether the domain runs: `None` when it does not exist.
    pub async fn domain_is_running(
        &self,
        uri: &LibvirtUri,
        name: &str,
    ) -> Result<Option<bool>, HvError> {
        let name = name.to_owned();
        self.call(uri, "read a domain's state", move |c| {
            lookup(c, &name)?.map(|d| d.is_active()).transpose()
        })
        .await
    }

    /// Asks the guest to shut down (ACPI power button). Returns at once; poll
    /// `domain_is_running` to see it happen.
    pub async fn domain_shutdown(&self, uri: &LibvirtUri, name: &str) -> Result<(), HvError> {
        let name = name.to_owned();
        self.call(uri, "ask a domain to shut down", move |c| {
            let d = c.lookup_domain_by_name(&name)?;
            if d.is_active()? {
                d.shutdown()?;
            }
            Ok::<_, virt::error::Error>(())
        })
        .await
    }

    /// Where the domain's VNC console listens on its host (`127.0.0.1:5900`), when it has one
    /// and runs.
    pub async fn domain_vnc(
        &self,
        uri: &LibvirtUri,
        name: &str,
    ) -> Result<Option<String>, HvError> {
        let name = name.to_owned();
        self.call(uri, "read a domain's console", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok::<_, virt::error::Error>(None);
            };
            let xml = d.xml_desc(0)?;
            Ok(vnc_address(&xml))
        })
        .await
    }

    /// Runs a program in the guest through the QEMU guest agent and waits for it (at most
    /// `limit`). Returns its exit code and output. Past its limit it is killed in the guest
    /// with its process group (`GuestExec::overran`). Runs on the host's guest lane.
    pub async fn domain_guest_exec(
        &self,
        uri: &LibvirtUri,
        name: &str,
        program: &str,
        args: &[&str],
        limit: std::time::Duration,
    ) -> Result<GuestExec, HvError> {
        let request = guest_exec_request(program, args, None, limit);
        self.guest_run(uri, name, request, limit).await
    }

    /// Runs the shell script `script` in the guest through the QEMU guest agent, as
    /// [`Hypervisor::domain_guest_exec`] does. The script travels as the command's standard
    /// input (`guest-exec`'s `input-data`), never as an argument: the agent logs every
    /// command line it runs, and every user of the guest sees them (`ps`, `/proc/*/cmdline`).
    pub async fn domain_guest_script(
        &self,
        uri: &LibvirtUri,
        name: &str,
        script: &str,
        limit: std::time::Duration,
    ) -> Result<GuestExec, HvError> {
        let request = guest_exec_request(
            "/bin/sh",
            &["-c", SCRIPT_FROM_STDIN],
            Some(script.as_bytes()),
            limit,
        );
        self.guest_run(uri, name, request, limit).await
    }

    async fn guest_run(
        &self,
        uri: &LibvirtUri,
        name: &str,
        request: String,
        limit: std::time::Duration,
    ) -> Result<GuestExec, HvError> {
        let name = name.to_owned();
        // Its limit, then the grace and the kill of a command that ran past it.
        let budget = limit + GUEST_GRACE + GUEST_KILL_WAIT + std::time::Duration::from_secs(10);
        self.call_guest(uri, "run a command in the guest", budget, move |c| {
            let d = c.lookup_domain_by_name(&name)?;
            guest_run_blocking(&d, &request, limit)
        })
        .await
    }

    /// Whether the QEMU guest agent of a running domain answers and lets Flotilla run
    /// commands (`guest-info` lists `guest-exec` and `guest-exec-status` enabled; at most
    /// 5 s). False when the domain has no agent channel, the agent does not run in the guest,
    /// blocks those commands, or the domain is not running.
    pub async fn domain_agent_ready(&self, uri: &LibvirtUri, name: &str) -> Result<bool, HvError> {
        let name = name.to_owned();
        self.call(uri, "ask a domain's guest agent", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok::<_, virt::error::Error>(false);
            };
            if !d.is_active()? {
                return Ok(false);
            }
            let Ok(info) = d.qemu_agent_command(r#"{"execute":"guest-info"}"#, 5, 0) else {
                return Ok(false);
            };
            Ok(exec_enabled(&info))
        })
        .await
    }

    /// Replaces, in a running domain, the read-only raw disk whose file is `from` by `to`, at
    /// the same target: hot-unplugged (the guest must have released it: unmounted), waited
    /// for until QEMU reports it gone (at most `limit`), then `to` hot-plugged. Only the live
    /// domain changes; its persistent definition is the caller's. Already swapped (`to`
    /// attached, `from` not) is done.
    pub async fn domain_swap_disk_live(
        &self,
        uri: &LibvirtUri,
        name: &str,
        from: &str,
        to: &str,
        limit: std::time::Duration,
    ) -> Result<DiskSwap, HvError> {
        let (name, from, to) = (name.to_owned(), from.to_owned(), to.to_owned());
        self.call_guest(uri, "swap a disk of a running domain", limit + std::time::Duration::from_secs(10), move |c| {
            // VIR_DOMAIN_AFFECT_LIVE
            const LIVE: u32 = 1;
            let d = c.lookup_domain_by_name(&name)?;
            let target_of = |xml: &str, file: &str| disk_target(xml, file);
            let xml = d.xml_desc(0)?;
            let target = match (target_of(&xml, &from), target_of(&xml, &to)) {
                (Some(t), _) => t,
                (None, Some(_)) => return Ok::<_, virt::error::Error>(DiskSwap::Done),
                (None, None) => return Ok(DiskSwap::Missing),
            };
            let e = xml_escape;
            d.detach_device_flags(
                &format!("<disk type='file' device='disk'><source file='{}'/><target dev='{}' bus='virtio'/></disk>", e(&from), e(&target)),
                LIVE,
            )?;
            let until = std::time::Instant::now() + limit;
            while disk_target(&d.xml_desc(0)?, &from).is_some() {
                if std::time::Instant::now() > until {
                    return Ok(DiskSwap::NotReleased);
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            d.attach_device_flags(
                &format!("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='{}' bus='virtio'/><readonly/></disk>", e(&to), e(&target)),
                LIVE,
            )?;
            Ok(DiskSwap::Done)
        })
        .await
    }

    /// The properties in Flotilla's metadata of a domain (`unit`, `server`, …): `None` when no
    /// domain has that name, empty when it exists but Flotilla did not define it.
    pub async fn domain_flotilla_metadata(
        &self,
        uri: &LibvirtUri,
        name: &str,
    ) -> Result<Option<Vec<(String, String)>>, HvError> {
        let name = name.to_owned();
        self.call(uri, "read a domain's metadata", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok(None);
            };
            // VIR_DOMAIN_METADATA_ELEMENT, from the persistent definition (VIR_DOMAIN_AFFECT_CONFIG).
            let xml = match d.metadata(2, Some(METADATA_NS), 2) {
                Ok(xml) => xml,
                Err(e)
                    if e.code()
                        .is_known_and(|c| c == ErrorNumber::NoDomainMetadata) =>
                {
                    return Ok(Some(Vec::new()))
                }
                Err(e) => return Err(e),
            };
            let props = roxmltree::Document::parse(&xml)
                .map(|doc| {
                    doc.descendants()
                        .filter(|n| n.tag_name().name() == "property")
                        .filter_map(|n| {
                            Some((
                                n.attribute("name")?.to_owned(),
                                n.text().unwrap_or("").to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Some(props))
        })
        .await
    }

    /// The files a domain's disks are (its persistent definition's `<disk><source file>`):
    /// which volumes it boots, as libvirt has them. `None` when no domain has that name.
    pub async fn domain_disk_files(
        &self,
        uri: &LibvirtUri,
        name: &str,
    ) -> Result<Option<Vec<String>>, HvError> {
        let name = name.to_owned();
        self.call(uri, "read a domain's disks", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok::<_, virt::error::Error>(None);
            };
            // VIR_DOMAIN_XML_INACTIVE: the definition it boots with next.
            let xml = d.xml_desc(2)?;
            let files = roxmltree::Document::parse(&xml)
                .map(|doc| {
                    doc.descendants()
                        .filter(|n| n.tag_name().name() == "disk")
                        .filter_map(|disk| {
                            disk.children()
                                .find(|n| n.tag_name().name() == "source")
                                .and_then(|s| s.attribute("file"))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Some(files))
        })
        .await
    }

    /// Every domain on the host with whether it runs, in **one** call to the host (for status
    /// views): `virConnectListAllDomains` returns each domain with its name and id, and an
    /// active domain (running or paused) is the one with an id; reading them asks the host
    /// nothing more (no `virDomainIsActive` round trip per domain).
    pub async fn domain_states(
        &self,
        uri: &LibvirtUri,
    ) -> Result<std::collections::HashMap<String, bool>, HvError> {
        self.call(uri, "list domains", |c| {
            c.list_all_domains(0)?
                .iter()
                .map(|d| Ok((d.name()?, d.id().is_some())))
                .collect::<Result<std::collections::HashMap<_, _>, virt::error::Error>>()
        })
        .await
    }

    /// Names of all domains on the host, running or not.
    pub async fn domain_names(&self, uri: &LibvirtUri) -> Result<Vec<String>, HvError> {
        self.call(uri, "list domains", |c| {
            let mut names = c
                .list_all_domains(0)?
                .iter()
                .map(|d| d.name())
                .collect::<Result<Vec<_>, _>>()?;
            names.sort();
            Ok::<_, virt::error::Error>(names)
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hypervisor::tests::test_node_uri;
    use crate::hypervisor::HvConfig;

    #[test]
    fn commands_run_in_the_guest_only_where_its_agent_allows_them() {
        let info = |exec: bool| {
            format!(
                r#"{{"return":{{"version":"7.2","supported_commands":[{{"name":"guest-ping","enabled":true}},{{"name":"guest-exec","enabled":{exec}}},{{"name":"guest-exec-status","enabled":true}}]}}}}"#
            )
        };
        assert!(exec_enabled(&info(true)));
        assert!(!exec_enabled(&info(false)), "blocked with --block-rpcs");
        assert!(!exec_enabled(r#"{"return":{}}"#));
        assert!(!exec_enabled("not json"));
    }

    /// The arguments of a `guest-exec` request as the guest runs them.
    fn argv_of(request: &str) -> (Vec<String>, Option<Vec<u8>>) {
        use base64::Engine as _;
        let v: serde_json::Value = serde_json::from_str(request).unwrap();
        assert_eq!(v["execute"], "guest-exec");
        let a = &v["arguments"];
        let mut argv = vec![a["path"].as_str().unwrap().to_owned()];
        argv.extend(
            a["arg"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned()),
        );
        let input = a["input-data"]
            .as_str()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap());
        (argv, input)
    }

    /// Runs `argv` here as the guest agent would, with `input` on its standard input.
    fn run_like_the_agent(argv: &[String], input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A script (here one writing a config file with a secret) goes to the guest as the
    /// command's standard input: the command line — what the agent logs and the guest's users
    /// see in `ps` — carries nothing of it. Run here by a real shell as the agent would run
    /// it: the script's own processes see no secret on their command lines or their parent's,
    /// a command in it that reads standard input gets nothing (not the rest of the script),
    /// and its exit status is the script's.
    #[test]
    fn a_script_travels_on_standard_input_never_on_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("secret.conf");
        let script = format!(
            "set -e\n\
             echo \"own: $(tr '\\0' ' ' < /proc/$$/cmdline)\"\n\
             echo \"parent: $(tr '\\0' ' ' < /proc/$PPID/cmdline)\"\n\
             echo \"stdin: $(cat)\"\n\
             (umask 077 && echo token=S3CRET-7d1c > {})\n\
             false\n\
             echo not reached\n",
            conf.display()
        );
        let request = guest_exec_request(
            "/bin/sh",
            &["-c", SCRIPT_FROM_STDIN],
            Some(script.as_bytes()),
            std::time::Duration::from_secs(30),
        );
        let (argv, input) = argv_of(&request);
        assert_eq!(
            argv[..5],
            ["setsid", "timeout", "-s", "KILL", "30"],
            "{argv:?}"
        );
        assert!(!argv.join(" ").contains("S3CRET"), "{argv:?}");
        assert_eq!(input.as_deref(), Some(script.as_bytes()));

        let out = run_like_the_agent(&argv, script.as_bytes());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "set -e stops at false: {out:?}");
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "token=S3CRET-7d1c\n"
        );
        assert!(!stdout.contains("S3CRET"), "{stdout}");
        assert!(stdout.contains("own: /bin/sh -c s=$(cat)"), "{stdout}");
        assert!(
            stdout.contains("parent: timeout -s KILL 30 /bin/sh"),
            "{stdout}"
        );
        assert!(
            stdout.contains("stdin: \n"),
            "a command read the script: {stdout}"
        );
        assert!(!stdout.contains("not reached"), "{stdout}");
        // No script at all (an agent that dropped it) fails; it never "succeeds" empty.
        let out = run_like_the_agent(&argv, b"");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    }

    /// Live processes whose command line is `command`, with their process group.
    fn processes_with(command: &str) -> Vec<(i64, i64)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split(' ').collect();
            // A zombie has no command line; one reaped is gone.
            if fields.first() == Some(&"Z") {
                continue;
            }
            if String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim_end()
                == command
            {
                let pgrp = fields.get(2).and_then(|g| g.parse().ok()).unwrap_or(0);
                found.push((pid, pgrp));
            }
        }
        found
    }

    /// What Flotilla runs in a guest when a command ran past its limit, run here on a real
    /// command as the agent starts it (`setsid timeout …`: its own process group; a thread
    /// reaps it as the agent does): every process of the group — the command and what it
    /// started in the background — is gone when the script says so.
    #[test]
    fn a_command_past_its_limit_is_killed_with_everything_it_started() {
        let request = guest_exec_request(
            "/bin/sh",
            &["-c", "sleep 7191 & sleep 7191 & wait"],
            None,
            std::time::Duration::from_secs(600),
        );
        let (argv, _) = argv_of(&request);
        // Whatever the outcome, no sleeper outlives the test.
        struct Sweep;
        impl Drop for Sweep {
            fn drop(&mut self) {
                for (pid, _) in processes_with("sleep 7191") {
                    let _ = std::process::Command::new("kill")
                        .args(["-s", "KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        let _sweep = Sweep;
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = i64::from(child.id());
        let reaper = std::thread::spawn(move || {
            let mut child = child;
            child.wait().unwrap()
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while processes_with("sleep 7191").len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let running = processes_with("sleep 7191");
        assert_eq!(running.len(), 2, "{running:?}");
        assert!(
            running.iter().all(|&(_, g)| g == pid),
            "{running:?} in group {pid}"
        );

        let kill = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(kill_group_script(pid))
            .output()
            .unwrap();
        assert!(kill.status.success(), "{kill:?}");
        assert_eq!(processes_with("sleep 7191"), []);
        let status = reaper.join().unwrap();
        assert!(!status.success(), "{status:?}");
    }

    /// A command that does not lead its own process group shares its group with the agent
    /// (here with this test): the group is never killed, only the command, and the script
    /// fails saying so.
    #[test]
    fn the_kill_never_takes_a_group_the_command_does_not_lead() {
        let mut child = std::process::Command::new("sleep")
            .arg("7192")
            .spawn()
            .unwrap();
        let kill = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(kill_group_script(i64::from(child.id())))
            .output()
            .unwrap();
        assert_eq!(kill.status.code(), Some(3), "{kill:?}");
        assert!(
            String::from_utf8_lossy(&kill.stderr)
                .contains("not the leader of its own process group"),
            "{kill:?}"
        );
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            child.wait().unwrap().signal(),
            Some(9),
            "the command itself is killed"
        );
    }

    #[test]
    fn exit_status_signal_and_output_are_read_from_the_agents_answer() {
        assert_eq!(exec_status(r#"{"return":{"exited":false}}"#), None);
        let done = exec_status(
            r#"{"return":{"exited":true,"exitcode":3,"out-data":"b2sK","err-data":"YmFkCg=="}}"#,
        )
        .unwrap();
        assert_eq!(
            (
                done.exit_code,
                done.signal,
                done.stdout.as_str(),
                done.stderr.as_str()
            ),
            (Some(3), None, "ok\n", "bad\n")
        );
        let killed = exec_status(r#"{"return":{"exited":true,"signal":9}}"#).unwrap();
        assert_eq!((killed.exit_code, killed.signal), (None, Some(9)));
    }

    #[test]
    fn a_disk_is_found_by_its_file() {
        let mut sp = spec(DomainType::Qemu);
        sp.disks.push(DiskSpec {
            path: "/pool/shop-u2-payload.img".into(),
            format: DiskFormat::Raw,
            readonly: true,
            cdrom: false,
        });
        let xml = domain_xml(&sp);
        let n = sp.disks.len();
        let want = format!("vd{}", char::from(b'a' + u8::try_from(n - 1).unwrap()));
        assert_eq!(disk_target(&xml, "/pool/shop-u2-payload.img"), Some(want));
        assert_eq!(disk_target(&xml, "/pool/shop-u1-payload.img"), None);
        assert_eq!(disk_target("not xml", "/pool/shop-u2-payload.img"), None);
    }

    pub(crate) fn spec(domain_type: DomainType) -> DomainSpec {
        DomainSpec {
            name: "web-1".into(),
            domain_type,
            vcpus: 1,
            memory_mib: 128,
            boot: BootSpec::Kernel {
                kernel: "/var/lib/libvirt/images/vmlinuz".into(),
                initrd: Some("/var/lib/libvirt/images/initrd.img".into()),
                cmdline: "console=ttyS0 root=LABEL=root".into(),
            },
            disks: vec![
                DiskSpec {
                    path: "/var/lib/libvirt/images/web-1.qcow2".into(),
                    format: DiskFormat::Qcow2,
                    readonly: false,
                    cdrom: false,
                },
                DiskSpec {
                    path: "/var/lib/libvirt/images/web-1-seed.img".into(),
                    format: DiskFormat::Raw,
                    readonly: true,
                    cdrom: false,
                },
            ],
            nics: vec![NicSpec {
                mac: MacAddr::parse("52:54:00:00:00:11").unwrap(),
                bridge: BridgeName::parse("br0").unwrap(),
            }],
            serial_log: Some("/var/log/libvirt/qemu/web-1-serial.log".into()),
            metadata: vec![("unit".into(), "shop & <co>".into())],
            vnc: false,
            guest_agent: false,
        }
    }

    #[test]
    fn generated_xml_passes_libvirts_own_schema() {
        let dir = tempfile::tempdir().unwrap();
        for (i, s) in [
            spec(DomainType::Qemu),
            DomainSpec {
                boot: BootSpec::Disk {
                    uefi: true,
                    cdrom_first: true,
                },
                serial_log: None,
                metadata: vec![],
                vnc: true,
                guest_agent: true,
                disks: vec![
                    spec(DomainType::Kvm).disks[0].clone(),
                    DiskSpec {
                        path: "/isos/debian.iso".into(),
                        format: DiskFormat::Raw,
                        readonly: true,
                        cdrom: true,
                    },
                ],
                ..spec(DomainType::Kvm)
            },
        ]
        .iter()
        .enumerate()
        {
            let file = dir.path().join(format!("d{i}.xml"));
            std::fs::write(&file, domain_xml(s)).unwrap();
            let out = std::process::Command::new("virt-xml-validate")
                .arg(&file)
                .arg("domain")
                .output()
                .expect("virt-xml-validate (package libvirt-clients)");
            assert!(
                out.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                domain_xml(s)
            );
        }
        let xml = domain_xml(&spec(DomainType::Qemu));
        assert!(xml.contains("shop &amp; &lt;co&gt;"), "metadata is escaped");
        assert!(xml.contains("<mac address='52:54:00:00:00:11'/>"));
    }

    #[tokio::test]
    async fn lifecycle_on_the_test_driver_and_undo_of_what_is_gone() {
        let hv = Hypervisor::new(HvConfig::default());
        let uri = test_node_uri();
        let s = spec(DomainType::Test);
        hv.domain_define(&uri, &s).await.unwrap();
        assert_eq!(
            hv.domain_is_running(&uri, "web-1").await.unwrap(),
            Some(false)
        );
        hv.domain_start(&uri, "web-1").await.unwrap();
        hv.domain_start(&uri, "web-1").await.unwrap();
        assert_eq!(
            hv.domain_is_running(&uri, "web-1").await.unwrap(),
            Some(true)
        );
        assert!(hv
            .domain_names(&uri)
            .await
            .unwrap()
            .contains(&"web-1".to_string()));
        assert!(hv.domain_destroy(&uri, "web-1").await.unwrap());
        assert!(
            !hv.domain_destroy(&uri, "web-1").await.unwrap(),
            "already off"
        );
        assert!(hv.domain_undefine(&uri, "web-1").await.unwrap());
        assert!(
            !hv.domain_undefine(&uri, "web-1").await.unwrap(),
            "already gone"
        );
        assert_eq!(hv.domain_is_running(&uri, "web-1").await.unwrap(), None);
    }

    /// The one-call listing a status view uses: every domain of the host with whether it is
    /// active, as libvirt's test driver reports domains written into its node file (running,
    /// shut off, paused) and after one is started and one destroyed.
    #[tokio::test]
    async fn one_listing_tells_every_domain_and_whether_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("fleet-node.xml");
        let fixture = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/test-node.xml"),
        )
        .unwrap();
        let dom = |name: &str, runstate: Option<u8>| {
            format!(
                "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
                 <name>{name}</name><memory unit='MiB'>128</memory><os><type>hvm</type></os>{}</domain>",
                runstate.map_or(String::new(), |s| format!("<test:runstate>{s}</test:runstate>"))
            )
        };
        let domains = [
            dom("fleet-a", None),
            dom("fleet-b", Some(5)),
            dom("fleet-c", Some(3)),
        ]
        .concat();
        std::fs::write(
            &node,
            fixture.replace("</node>", &format!("{domains}</node>")),
        )
        .unwrap();
        let uri = LibvirtUri::parse(&format!("test://{}", node.display())).unwrap();
        let hv = Hypervisor::new(HvConfig::default());
        let states = hv.domain_states(&uri).await.unwrap();
        let want: std::collections::HashMap<String, bool> = [
            ("fleet-a".to_owned(), true),
            ("fleet-b".to_owned(), false),
            // Paused is still active: it has an id and holds its memory.
            ("fleet-c".to_owned(), true),
        ]
        .into_iter()
        .collect();
        assert_eq!(states, want);
        hv.domain_start(&uri, "fleet-b").await.unwrap();
        assert!(hv.domain_destroy(&uri, "fleet-a").await.unwrap());
        let states = hv.domain_states(&uri).await.unwrap();
        assert_eq!(states.get("fleet-a"), Some(&false));
        assert_eq!(states.get("fleet-b"), Some(&true));
        assert_eq!(states.len(), 3);
    }
}
