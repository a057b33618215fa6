//! Flotilla's known-hosts decisions against OpenSSH's own: a real `sshd` (in a network
//! namespace of its own, so it can listen on port 22 and 2222 of its loopback) and the real
//! `ssh` client judge the same files Flotilla judges — upper-case names, `[host]:port`,
//! wildcards and negations, name lists, `@revoked` and `@cert-authority` lines, and files
//! hashed by `ssh-keygen -H`. A spelling of the host that ssh reads as the same host must never
//! make a changed key look unknown to Flotilla (a confirmation would then add it beside the
//! trusted one).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::hostkeys::{verify_or_accept, Fingerprint, HostKey, KeyCheck, KnownHosts, SshTarget};
use std::path::Path;
use std::process::Command;

fn keygen(path: &Path) -> (String, String) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(st.success());
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut f = text.split_whitespace();
    (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
}

/// What ssh decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ssh {
    Known,
    Unknown,
    Changed,
    Revoked,
}

/// One known-hosts file and the connection judged against it.
struct Case {
    lines: Vec<String>,
    host: &'static str,
    port: u16,
    /// Hash the file with `ssh-keygen -H` first.
    hashed: bool,
}

/// Runs a real sshd in a new network namespace and, for every case, the real ssh client with
/// the case's file as its only known-hosts file: its verdict from its own words.
fn ssh_verdicts(dir: &Path, host_key: &Path, cases: &[Case]) -> Vec<Ssh> {
    std::fs::create_dir_all("/run/sshd").unwrap();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port 22\nPort 2222\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile none\n",
            host_key.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let mut script = format!(
        "ip link set lo up\n/usr/sbin/sshd -f {} -E {}\nsleep 0.3\n",
        config.display(),
        dir.join("sshd.log").display()
    );
    for (i, c) in cases.iter().enumerate() {
        let file = dir.join(format!("kh{i}"));
        script.push_str(&format!(
            "echo \"== {i}\"; ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o CheckHostIP=no -o ConnectTimeout=5 -p {} {} true 2>&1\n",
            file.display(),
            c.port,
            c.host
        ));
    }
    script.push_str(&format!("kill $(cat {})\n", dir.join("sshd.pid").display()));
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux), as root");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut verdicts = Vec::new();
    for (i, part) in text.split("== ").skip(1).enumerate() {
        let v = if part.contains("REVOKED") {
            Ssh::Revoked
        } else if part.contains("HAS CHANGED") {
            Ssh::Changed
        } else if part.contains("host key is known") {
            Ssh::Unknown
        } else if part.contains("Permission denied") {
            Ssh::Known
        } else {
            panic!("case {i}: ssh said something else: {part}\n{text}");
        };
        verdicts.push(v);
    }
    assert_eq!(verdicts.len(), cases.len(), "{text}");
    verdicts
}

fn flotilla_verdict(known: &KnownHosts, target: &SshTarget, presented: &HostKey) -> Ssh {
    match known.check(target, presented.clone()).unwrap() {
        KeyCheck::Known(_) => Ssh::Known,
        KeyCheck::Unknown(_) => Ssh::Unknown,
        KeyCheck::Changed { .. } => Ssh::Changed,
        KeyCheck::Revoked { .. } => Ssh::Revoked,
    }
}

#[test]
fn flotilla_judges_known_hosts_files_as_ssh_does_and_never_takes_a_changed_key_for_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (kt, kb) = keygen(&d.join("host"));
    let (ot, ob) = keygen(&d.join("other"));
    let k = format!("{kt} {kb}");
    let o = format!("{ot} {ob}");
    let line = |s: &str| s.replace("{K}", &k).replace("{O}", &o);
    let case = |lines: &[&str], host: &'static str, port: u16, hashed: bool| Case {
        lines: lines.iter().map(|l| line(l)).collect(),
        host,
        port,
        hashed,
    };
    // Host names are upper case in the cases only where it matters; `{K}` is the key the host
    // presents, `{O}` another one.
    let mut cases = vec![
        case(&["localhost {K}"], "localhost", 22, false),
        case(&["LOCALHOST {K}"], "localhost", 22, false),
        case(&["localhost {O}"], "LOCALHOST", 22, false),
        case(&["LocalHost {O}"], "localhost", 22, false),
        case(&["[localhost]:22 {O}"], "localhost", 22, false),
        case(&["[localhost]:22 {K}"], "localhost", 22, false),
        case(&["[localhost]:2222 {O}"], "localhost", 2222, false),
        case(&["[LOCALHOST]:2222 {O}"], "localhost", 2222, false),
        case(&["localhost {O}"], "localhost", 2222, false),
        case(&["[localhost]:2222 {K}"], "localhost", 22, false),
        case(&["l*h?st {O}"], "localhost", 22, false),
        case(&["h1,LOCALHOST,h2 {O}"], "localhost", 22, false),
        case(&["!localhost,* {O}"], "localhost", 22, false),
        case(&["localhost {K}", "@revoked * {K}"], "localhost", 22, false),
        case(
            &["@revoked localhost {O}", "localhost {K}"],
            "localhost",
            22,
            false,
        ),
        case(&["@cert-authority localhost {O}"], "localhost", 22, false),
        case(
            &["# localhost {O}", "", "localhost\t {O}"],
            "localhost",
            22,
            false,
        ),
        case(&["h1 {O}", "localhost {K}"], "localhost", 22, false),
    ];
    // The same files as ssh-keygen -H writes them (wildcard and marker lines stay as they are).
    for (lines, host, port) in [
        (&["localhost {K}"][..], "localhost", 22),
        (&["localhost {O}"], "localhost", 22),
        (&["localhost {O}"], "LOCALHOST", 22),
        (&["[localhost]:2222 {O}"], "localhost", 2222),
        (&["[localhost]:2222 {K}"], "localhost", 2222),
        (&["[localhost]:22 {O}"], "localhost", 22),
        (&["h1,localhost {O}"], "localhost", 22),
        (&["localhost {K}", "@revoked * {K}"], "localhost", 22),
    ] {
        cases.push(case(lines, host, port, true));
    }
    for (i, c) in cases.iter().enumerate() {
        let file = d.join(format!("kh{i}"));
        std::fs::write(&file, c.lines.join("\n") + "\n").unwrap();
        if c.hashed {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-H", "-f"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(out.status.success());
            let hashed = std::fs::read_to_string(&file).unwrap();
            assert!(hashed.contains("|1|"), "ssh-keygen -H hashed it: {hashed}");
        }
    }
    let ssh = ssh_verdicts(d, &d.join("host"), &cases);

    let presented = HostKey {
        key_type: kt.clone(),
        blob: kb.clone(),
        fingerprint: Fingerprint::of_blob(&kb).unwrap(),
    };
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let data = d.join(format!("data{i}"));
        let known = KnownHosts::in_data_dir(&data);
        std::fs::create_dir_all(known.path().parent().unwrap()).unwrap();
        std::fs::copy(d.join(format!("kh{i}")), known.path()).unwrap();
        let target = SshTarget {
            host: c.host.into(),
            port: c.port,
        };
        let ours = flotilla_verdict(&known, &target, &presented);
        // Where ssh itself reads `[host]:22` as another name than `host`, Flotilla is
        // stricter: another key filed under it is a change, not an unknown host.
        let bracketed_22 = c.port == 22
            && c.lines.iter().any(|l| l.starts_with("[localhost]:22 "))
            && c.lines.iter().any(|l| l.ends_with(&o));
        let want = if bracketed_22 { Ssh::Changed } else { ssh[i] };
        if ours != want {
            wrong.push(format!(
                "case {i} {:?} (hashed: {}) to {}:{}: ssh {:?}, Flotilla {ours:?}",
                c.lines, c.hashed, c.host, c.port, ssh[i]
            ));
        }
        // A key that is not known is stored only when ssh would not refuse it: a changed or
        // revoked one is refused even with its fingerprint confirmed, and the file stays.
        if want != Ssh::Known {
            let before = std::fs::read(known.path()).unwrap();
            let outcome = verify_or_accept(
                &known,
                &target,
                presented.clone(),
                Some(&presented.fingerprint),
            );
            let after = std::fs::read(known.path()).unwrap();
            match want {
                Ssh::Unknown => {
                    if outcome.is_err() {
                        wrong.push(format!("case {i}: an unknown key confirmed was refused"));
                    }
                }
                _ => {
                    if outcome.is_ok() || before != after {
                        wrong.push(format!(
                            "case {i} {:?}: a {want:?} key was stored on confirmation",
                            c.lines
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The oracle told cases apart (a broken sshd would say one thing for all).
    for v in [Ssh::Known, Ssh::Unknown, Ssh::Changed, Ssh::Revoked] {
        assert!(ssh.contains(&v), "ssh never said {v:?}: {ssh:?}");
    }
}

/// `ssh-keygen -F` (OpenSSH's own search, hashed lines included) and Flotilla find the same
/// line for a hashed file, and a changed key's error names that line.
#[test]
fn a_changed_key_under_a_hashed_name_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, kb) = keygen(&d.join("host"));
    let (ot, ob) = keygen(&d.join("other"));
    let known = KnownHosts::in_data_dir(&d.join("data"));
    std::fs::create_dir_all(known.path().parent().unwrap()).unwrap();
    std::fs::write(
        known.path(),
        format!("h1 {ot} {ob}\n[h2.example.org]:2200 {ot} {ob}\nh3 {ot} {ob}\n"),
    )
    .unwrap();
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(known.path())
        .output()
        .unwrap()
        .status
        .success());
    let found = Command::new("ssh-keygen")
        .args(["-F", "[h2.example.org]:2200", "-f"])
        .arg(known.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&found.stdout);
    assert!(said.contains("found: line 2"), "{said}");
    let target = SshTarget {
        host: "H2.Example.ORG".into(),
        port: 2200,
    };
    let presented = HostKey {
        key_type: "ssh-ed25519".into(),
        blob: kb.clone(),
        fingerprint: Fingerprint::of_blob(&kb).unwrap(),
    };
    let e = verify_or_accept(&known, &target, presented, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HAS CHANGED") && e.contains("line 2"), "{e}");
    assert!(
        e.contains(Fingerprint::of_blob(&ob).unwrap().as_str()),
        "{e}"
    );
}
