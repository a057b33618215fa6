//! The isolation response in the guest (vSphere's, as a watchdog the seed installs): a server
//! that cannot reach its load balancer's address for `timeout` seconds stops its app and
//! powers itself off. Then a host cut off from the admin side and the load balancer does not
//! keep a copy running while a recovery starts another one elsewhere: the recovery waits that
//! long, plus a margin, since the host was last seen (`plan::fence`).
//!
//! Reaching means any answer: a TCP connection that is accepted or refused (the address's
//! kernel answered), or — without Python — an ICMP echo reply. Only silence counts as cut off,
//! as in the monitor's witness. The watchdog starts at every boot of the instance that
//! installed it (a systemd unit where systemd runs, else cloud-init's per-boot scripts) and
//! does nothing under another instance id, so a seed without it turns it off again.
//! docs/guest-contract.md describes it for master-image authors.

use super::payload::{INSTANCE_ID_FILE, PAYLOAD_MOUNT, PER_BOOT_DIR};
use std::net::Ipv4Addr;

/// Where the seed puts the watchdog in the guest.
pub const WATCHDOG: &str = "/var/lib/flotilla/isolation";
/// Its Python loop (used where `python3` exists: one process, no fork per check).
pub const WATCHDOG_PY: &str = "/var/lib/flotilla/isolation.py";
/// Its systemd unit.
pub const UNIT: &str = "/etc/systemd/system/flotilla-isolation.service";

/// Seconds between checks.
pub const CHECK_EVERY_S: u32 = 2;
/// Seconds the stop hook may take before the guest powers off anyway.
pub const STOP_HOOK_LIMIT_S: u32 = 10;

/// What the watchdog checks, and after how long without an answer it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    pub address: Ipv4Addr,
    pub port: u16,
    pub timeout_s: u32,
}

/// The sh watchdog: checks this instance, then runs the Python loop or, without Python, a
/// shell loop with `ping`.
fn watchdog(instance_id: &str, i: &Isolation) -> String {
    let (addr, port, limit) = (i.address, i.port, i.timeout_s);
    format!(
        r#"#!/bin/sh
# Flotilla's isolation response (docs/guest-contract.md), installed by the seed of instance
# {instance_id}: when {addr}:{port} gives no answer for {limit} s, stop the app and power off.
[ "$(cat {INSTANCE_ID_FILE} 2>/dev/null)" = '{instance_id}' ] || exit 0
say() {{ echo "flotilla-isolation: $*" > /dev/console 2>/dev/null; echo "flotilla-isolation: $*"; }}
if command -v python3 >/dev/null 2>&1; then
  exec python3 {WATCHDOG_PY} {addr} {port} {limit}
fi
say "watching {addr} (ping) every {CHECK_EVERY_S} s; off after {limit} s without an answer"
last=$(cut -d. -f1 /proc/uptime)
while :; do
  now=$(cut -d. -f1 /proc/uptime)
  if ping -c 1 -W {CHECK_EVERY_S} {addr} >/dev/null 2>&1; then
    last=$now
  elif [ $((now - last)) -ge {limit} ]; then
    say "no answer from {addr} for $((now - last)) s: stopping the app and powering off"
    if [ -f {PAYLOAD_MOUNT}/flotilla/hooks/stop ]; then
      timeout {STOP_HOOK_LIMIT_S} sh {PAYLOAD_MOUNT}/flotilla/hooks/stop >/dev/null 2>&1
    fi
    sync
    if [ -d /run/systemd/system ]; then systemctl poweroff --force --force; fi
    poweroff -f
  fi
  sleep {CHECK_EVERY_S}
done
"#
    )
}

/// The Python loop: a TCP connection each check; accepted or refused is an answer.
fn watchdog_py() -> String {
    format!(
        r#"# Flotilla's isolation response (docs/guest-contract.md): python3 isolation.py ADDRESS PORT SECONDS
import os, socket, subprocess, sys, time

addr, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def say(what):
    line = "flotilla-isolation: " + what
    print(line, flush=True)
    try:
        with open("/dev/console", "w") as c:
            c.write(line + "\n")
    except OSError:
        pass

def answers():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout({CHECK_EVERY_S})
    try:
        s.connect((addr, port))
        return True
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except OSError:
        return False
    finally:
        s.close()

say("watching %s:%d every {CHECK_EVERY_S} s; off after %d s without an answer" % (addr, port, limit))
last = time.monotonic()
while True:
    began = time.monotonic()
    if answers():
        last = time.monotonic()
    elif time.monotonic() - last >= limit:
        say("no answer from %s:%d for %d s: stopping the app and powering off" % (addr, port, time.monotonic() - last))
        stop = "{PAYLOAD_MOUNT}/flotilla/hooks/stop"
        if os.path.isfile(stop):
            try:
                subprocess.run(["sh", stop], timeout={STOP_HOOK_LIMIT_S}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except Exception:
                pass
        os.sync()
        if os.path.isdir("/run/systemd/system"):
            subprocess.run(["systemctl", "poweroff", "--force", "--force"])
        subprocess.run(["poweroff", "-f"])
    time.sleep(max(0.0, {CHECK_EVERY_S} - (time.monotonic() - began)))
"#
    )
}

fn unit_file() -> String {
    format!(
        "[Unit]\nDescription=Flotilla isolation response (power off when the load balancer cannot be reached)\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart={WATCHDOG}\nRestart=on-failure\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// The seed's `runcmd` lines that install and start the watchdog (quote-free: the files go
/// in base64). Where systemd runs, a unit starts it at every boot; elsewhere a per-boot script
/// does. Its output goes nowhere: a per-boot script's output is read to its end.
pub fn isolation_runcmd(instance_id: &str, i: &Isolation) -> Vec<String> {
    use base64::Engine as _;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let per_boot = format!("{PER_BOOT_DIR}/flotilla-isolation");
    let launcher = format!("#!/bin/sh\nsetsid {WATCHDOG} </dev/null >/dev/null 2>&1 &\n");
    vec![
        format!(
            "mkdir -p /var/lib/flotilla && echo {} | base64 -d > {WATCHDOG} && chmod 0700 {WATCHDOG}",
            b64(watchdog(instance_id, i))
        ),
        format!(
            "echo {} | base64 -d > {WATCHDOG_PY} && chmod 0600 {WATCHDOG_PY}",
            b64(watchdog_py())
        ),
        format!(
            "if [ -d /run/systemd/system ]; then echo {} | base64 -d > {UNIT} && systemctl daemon-reload && systemctl enable --now flotilla-isolation.service; else mkdir -p {PER_BOOT_DIR} && echo {} | base64 -d > {per_boot} && chmod 0755 {per_boot} && {per_boot}; fi",
            b64(unit_file()),
            b64(launcher)
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn decoded(line: &str) -> String {
        let b64 = line
            .split_whitespace()
            .skip_while(|w| *w != "echo")
            .nth(1)
            .unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    fn isolation() -> Isolation {
        Isolation {
            address: Ipv4Addr::new(10, 77, 0, 1),
            port: 80,
            timeout_s: 60,
        }
    }

    #[test]
    fn the_lines_fit_the_seed_and_carry_this_instance_and_settings() {
        let lines = isolation_runcmd("web-1.shop.u2", &isolation());
        assert_eq!(lines.len(), 3);
        for l in &lines {
            assert!(
                !l.contains('"') && !l.contains('\\') && !l.contains('\n'),
                "{l}"
            );
        }
        let sh = decoded(&lines[0]);
        assert!(sh.contains("= 'web-1.shop.u2' ] || exit 0"), "{sh}");
        assert!(
            sh.contains("exec python3 /var/lib/flotilla/isolation.py 10.77.0.1 80 60"),
            "{sh}"
        );
        assert!(sh.contains("ping -c 1 -W 2 10.77.0.1"), "{sh}");
        assert!(sh.contains("poweroff -f"), "{sh}");
        let py = decoded(&lines[1]);
        assert!(
            py.contains(
                "except (ConnectionRefusedError, ConnectionResetError):\n        return True"
            ),
            "{py}"
        );
        assert!(lines[2].contains("systemctl enable --now flotilla-isolation.service"));
    }

    #[test]
    fn the_python_loop_is_valid_python_and_a_refusal_counts_as_an_answer() {
        // The loop itself, run against this machine's loopback: a closed port refuses (an
        // answer); the watchdog's check is driven directly, without powering anything off.
        let Ok(out) = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sys\nsys.argv = ['x', '127.0.0.1', '9', '60']\nsrc = open('/dev/stdin').read().split('say(\"watching')[0]\nexec(src)\nprint(answers())")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(watchdog_py().as_bytes())?;
                c.wait_with_output()
            })
        else {
            panic!("python3 is needed for this test (scripts/setup.sh)");
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "True",
            "{out:?}"
        );
    }
}
