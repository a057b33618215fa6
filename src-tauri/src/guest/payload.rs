//! The app payload disk: a version of a definition directory as a read-only FAT image labelled
//! `FLOTILLAAPP`, mounted by the guest at /run/flotilla/app (docs/guest-contract.md). Same
//! content → identical bytes (fixed timestamps, volume id from the content hash, files in the
//! given order), so hosts can cache it by checksum. Files are streamed, never held in memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const PAYLOAD_LABEL: &str = "FLOTILLAAPP";
/// Where the guest mounts the payload (`$FLOTILLA_PAYLOAD` in hooks).
pub const PAYLOAD_MOUNT: &str = "/run/flotilla/app";

/// What goes into the payload image: a file copied in, or generated content.
#[derive(Debug, Clone)]
pub enum PayloadSource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// How the guest mounts the payload: read-only, and for root only. The payload holds the
/// definition (its `[env]` values, its config templates) and the hook scripts; vfat has no
/// owners or modes of its own, and without these options every local user could read them.
/// Files show as mode 0700 (a package the hooks run stays executable for root).
pub const PAYLOAD_MOUNT_OPTIONS: &str = "ro,uid=0,gid=0,fmask=0077,dmask=0077";

/// The command that mounts the payload from `dev` (a shell word) at [`PAYLOAD_MOUNT`]: the
/// only way the scripts Flotilla writes mount it.
fn mount_payload(dev: &str) -> String {
    format!("mount -t vfat -o {PAYLOAD_MOUNT_OPTIONS} {dev} {PAYLOAD_MOUNT}")
}

/// Where cloud-init's `scripts-per-boot` module looks for scripts to run at every boot.
pub const PER_BOOT_DIR: &str = "/var/lib/cloud/scripts/per-boot";
/// Where cloud-init keeps the instance id it is running as (written before any module runs).
pub const INSTANCE_ID_FILE: &str = "/var/lib/cloud/data/instance-id";

/// The script that starts the app at every boot after the first of an instance: it mounts the
/// payload again (a mount does not survive a reboot) and runs the start hook. It does nothing
/// when the guest now runs as another instance: that instance's `runcmd` installs and starts.
pub fn boot_script(instance_id: &str) -> String {
    [
        "#!/bin/sh".to_owned(),
        format!("# Written by Flotilla at the first boot of instance {instance_id} (docs/guest-contract.md):"),
        "# cloud-init runs it at every boot; the first boot's runcmd ran install and start.".into(),
        format!("[ \"$(cat {INSTANCE_ID_FILE} 2>/dev/null)\" = '{instance_id}' ] || exit 0"),
        format!("mkdir -p {PAYLOAD_MOUNT}"),
        format!(
            "grep -qs ' {PAYLOAD_MOUNT} ' /proc/mounts || {}",
            mount_payload(&format!("\"$(findfs LABEL={PAYLOAD_LABEL})\""))
        ),
        format!("exec sh {PAYLOAD_MOUNT}/flotilla/hooks/start"),
        String::new(),
    ]
    .join("\n")
}

/// The seed's `runcmd`: what runs **once per instance** — mount the payload, the install hook,
/// `per_server` (the rendered `[[config]]` files), the per-boot script ([`boot_script`]) that
/// starts the app at every later boot — and then the start hook for this first boot. The
/// lines hold no quotes (the per-boot script goes in base64), so any hook text is safe.
pub fn payload_runcmd(instance_id: &str, per_server: Vec<String>) -> Vec<String> {
    use base64::Engine as _;
    let script = base64::engine::general_purpose::STANDARD.encode(boot_script(instance_id));
    let path = format!("{PER_BOOT_DIR}/flotilla-start");
    let mut out = vec![
        format!("mkdir -p {PAYLOAD_MOUNT}"),
        // No double quotes in a runcmd line; findfs prints one device name.
        mount_payload(&format!("$(findfs LABEL={PAYLOAD_LABEL})")),
        format!("sh {PAYLOAD_MOUNT}/flotilla/hooks/install"),
    ];
    out.extend(per_server);
    out.push(format!(
        "mkdir -p {PER_BOOT_DIR} && echo {script} | base64 -d > {path} && chmod 0755 {path}"
    ));
    out.push(format!("sh {PAYLOAD_MOUNT}/flotilla/hooks/start"));
    out
}

/// Run through the QEMU guest agent before a payload is swapped in a running server (an
/// update without a reboot): the stop hook of the payload mounted now, then the payload is
/// unmounted so that the disk can be unplugged. Nothing mounted: nothing to stop. Its exit
/// status is the stop hook's (unless `tolerant`: going back, whatever it says) or umount's;
/// when the payload cannot be unmounted, the app is started again first (a mounted payload
/// means a running app).
pub fn live_stop_script(tolerant: bool) -> String {
    let stop = format!("sh {PAYLOAD_MOUNT}/flotilla/hooks/stop");
    [
        format!("grep -qs ' {PAYLOAD_MOUNT} ' /proc/mounts || exit 0"),
        if tolerant {
            format!("if [ -f {PAYLOAD_MOUNT}/flotilla/hooks/stop ]; then {stop} || true; fi")
        } else {
            format!("if [ -f {PAYLOAD_MOUNT}/flotilla/hooks/stop ]; then {stop} || exit $?; fi")
        },
        format!("umount {PAYLOAD_MOUNT} || {{ sh {PAYLOAD_MOUNT}/flotilla/hooks/start; exit 1; }}"),
    ]
    .join("\n")
}

/// Run through the guest agent to start the app again in a server whose app was stopped
/// there (a live update going back): the start hook of the payload attached now. A mounted
/// payload means its app runs (the stop unmounts it; the swap mounts it and starts).
pub fn live_start_script() -> String {
    format!(
        "grep -qs ' {PAYLOAD_MOUNT} ' /proc/mounts && exit 0; mkdir -p {PAYLOAD_MOUNT} && {} && sh {PAYLOAD_MOUNT}/flotilla/hooks/start",
        mount_payload(&format!("\"$(findfs LABEL={PAYLOAD_LABEL})\""))
    )
}

/// Run through the guest agent after the new payload disk is plugged in: what the seed's
/// `runcmd` does for a new instance (mount — once the hot-plugged disk has appeared — the
/// install hook, `per_server`, the start hook), without a reboot and under the same instance
/// id, so the per-boot script already in the guest starts this payload at later boots.
pub fn live_install_script(per_server: Vec<String>) -> String {
    let mut lines = vec![
        "set -e".to_owned(),
        format!("mkdir -p {PAYLOAD_MOUNT}"),
        // The hot-plugged disk shows up after a moment (udev); 30 s at most.
        format!("n=0; until dev=$(findfs LABEL={PAYLOAD_LABEL} 2>/dev/null); do n=$((n+1)); [ $n -lt 60 ] || {{ echo 'the payload disk did not appear in the guest' >&2; exit 1; }}; sleep 0.5; done"),
        format!(
            "grep -qs ' {PAYLOAD_MOUNT} ' /proc/mounts || {}",
            mount_payload("\"$dev\"")
        ),
        format!("sh {PAYLOAD_MOUNT}/flotilla/hooks/install"),
    ];
    // `set -e` does not stop at a failing `a && b` list: each config line says so itself.
    lines.extend(
        per_server
            .into_iter()
            .map(|l| format!("{{ {l}; }} || exit 1")),
    );
    lines.push(format!("sh {PAYLOAD_MOUNT}/flotilla/hooks/start"));
    lines.join("\n")
}

/// A hook as a script: the payload location and the definition's environment, then the hook.
pub fn hook_script(hook: &str, env: &[(String, String)]) -> String {
    let mut s = format!("#!/bin/sh\n# Generated by Flotilla from definition.toml.\nexport FLOTILLA_PAYLOAD={PAYLOAD_MOUNT}\n");
    for (k, v) in env {
        s.push_str(&format!("export {k}='{}'\n", v.replace('\'', "'\\''")));
    }
    s.push_str(hook);
    s.push('\n');
    s
}
/// FAT32's limit for one file.
const MAX_FILE: u64 = (4 << 30) - 1;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write the payload disk {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `files` (path inside the image, source file) into a FAT image at `out`.
pub fn write_payload_disk(
    files: &[(String, PayloadSource)],
    content_hash: &str,
    out: &Path,
) -> Result<(), PayloadError> {
    let io = |source| PayloadError::Io {
        path: out.display().to_string(),
        source,
    };
    let mut total = 0u64;
    for (name, src) in files {
        let len = match src {
            PayloadSource::File(p) => std::fs::metadata(p).map_err(io)?.len(),
            PayloadSource::Bytes(b) => b.len() as u64,
        };
        if len > MAX_FILE {
            return Err(PayloadError::Invalid(format!(
                "{name} is {len} bytes; a payload file can be at most 4 GiB"
            )));
        }
        total += len.div_ceil(4096) * 4096 + 4096;
    }
    // Room for the FATs and directories; at least 8 MiB so small payloads get a normal FAT.
    let size = (total + total / 16 + (8 << 20)).div_ceil(1 << 20) << 20;
    let volume_id = u32::from_str_radix(content_hash.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    let mut file = super::new_fat_image(out, size, PAYLOAD_LABEL, volume_id).map_err(io)?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        for (name, src) in files {
            let root = fs.root_dir();
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => {
                    let mut dir = root.clone();
                    for part in d.split('/') {
                        dir = match dir.open_dir(part) {
                            Ok(existing) => existing,
                            Err(_) => dir.create_dir(part).map_err(io)?,
                        };
                    }
                    (dir, b)
                }
                None => (root, name.as_str()),
            };
            let mut dest = dir.create_file(base).map_err(io)?;
            dest.truncate().map_err(io)?;
            match src {
                PayloadSource::Bytes(b) => dest.write_all(b).map_err(io)?,
                PayloadSource::File(p) => {
                    let mut input = std::fs::File::open(p).map_err(io)?;
                    loop {
                        let n = input.read(&mut buf).map_err(io)?;
                        if n == 0 {
                            break;
                        }
                        dest.write_all(&buf[..n]).map_err(io)?;
                    }
                }
            }
        }
        fs.unmount().map_err(io)?;
    }
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_update_stops_unmounts_then_mounts_installs_configures_starts() {
        let stop = live_stop_script(false);
        assert!(live_stop_script(true).contains("hooks/stop || true"));
        assert!(stop.contains("umount /run/flotilla/app || { sh /run/flotilla/app/flotilla/hooks/start; exit 1; }"), "{stop}");
        let at = |s: &str, what: &str| s.find(what).unwrap_or_else(|| panic!("{what} in {s}"));
        assert!(
            at(&stop, "hooks/stop") < at(&stop, "umount /run/flotilla/app"),
            "{stop}"
        );
        assert!(stop.starts_with("grep -qs ' /run/flotilla/app ' /proc/mounts || exit 0"));
        let install = live_install_script(vec!["echo config".into()]);
        assert!(
            install.starts_with("set -e\n"),
            "a failed line fails the update: {install}"
        );
        assert!(install.contains("{ echo config; } || exit 1"), "{install}");
        let order = [
            "findfs LABEL=FLOTILLAAPP",
            "mount -t vfat",
            "hooks/install",
            "echo config",
            "hooks/start",
        ];
        let pos: Vec<usize> = order.iter().map(|w| at(&install, w)).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{install}");
        assert!(
            !install.contains("per-boot"),
            "the instance and its per-boot script stay: {install}"
        );
    }

    /// Every script Flotilla writes that mounts the payload (the seed's runcmd, the per-boot
    /// script, the live install and the live start through the guest agent) mounts it for
    /// root only: it holds the definition's env values and config templates.
    #[test]
    fn the_payload_is_mounted_for_root_only_wherever_it_is_mounted() {
        let scripts = [
            ("runcmd", payload_runcmd("web-1.shop.u2", vec![]).join("\n")),
            ("per-boot", boot_script("web-1.shop.u2")),
            ("live install", live_install_script(vec![])),
            ("live start", live_start_script()),
        ];
        for (what, script) in scripts {
            let mounts: Vec<&str> = script
                .split(['\n', ';', '|', '&'])
                .filter(|part| part.trim_start().starts_with("mount "))
                .collect();
            assert_eq!(mounts.len(), 1, "{what}: {script}");
            for m in mounts {
                let words: Vec<&str> = m.split_whitespace().collect();
                let opts = words
                    .iter()
                    .position(|w| *w == "-o")
                    .and_then(|i| words.get(i + 1))
                    .unwrap_or_else(|| panic!("{what}: no options in {m}"));
                let opts: Vec<&str> = opts.split(',').collect();
                for want in ["ro", "uid=0", "gid=0", "fmask=0077", "dmask=0077"] {
                    assert!(opts.contains(&want), "{what}: {want} missing in {m}");
                }
                assert_eq!(words.last(), Some(&PAYLOAD_MOUNT), "{what}: {m}");
            }
        }
    }

    #[test]
    fn hook_scripts_quote_env_values_and_keep_the_hook_verbatim() {
        let s = hook_script(
            "echo \"$GREETING\" > /tmp/x",
            &[("GREETING".into(), "it's \"fine\"; rm -rf /".into())],
        );
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("export FLOTILLA_PAYLOAD=/run/flotilla/app\n"));
        assert!(
            s.contains("export GREETING='it'\\''s \"fine\"; rm -rf /'\n"),
            "{s}"
        );
        assert!(s.ends_with("echo \"$GREETING\" > /tmp/x\n"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.replace("> /tmp/x", ""))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's \"fine\"; rm -rf /\n",
            "the shell reads back the exact value"
        );
    }

    #[test]
    fn runcmd_lines_fit_the_seed_rules_and_install_before_start() {
        let lines = payload_runcmd("web-1.shop.u2", vec!["echo config".into()]);
        for line in &lines {
            assert!(
                !line.contains('"') && !line.contains('\\') && !line.contains('\n'),
                "{line}"
            );
        }
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(at("hooks/install") < at("echo config"), "{lines:?}");
        assert!(at("echo config") < at("per-boot"), "{lines:?}");
        assert!(at("per-boot") < at("hooks/start"), "{lines:?}");
    }

    /// The per-boot script, run by a real shell: it starts the app only when the guest still
    /// runs as the instance that wrote it.
    #[test]
    fn the_boot_script_runs_the_start_hook_only_for_its_own_instance() {
        let script = boot_script("web-1.shop.u2");
        // Stand-ins for the guest's files, so the script runs here unchanged but for paths.
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("instance-id");
        let mount = dir.path().join("app");
        let marker = dir.path().join("started");
        std::fs::create_dir_all(mount.join("flotilla/hooks")).unwrap();
        std::fs::write(
            mount.join("flotilla/hooks/start"),
            format!("echo started > {}\n", marker.display()),
        )
        .unwrap();
        let local = script
            .replace(INSTANCE_ID_FILE, &id.display().to_string())
            .replace(PAYLOAD_MOUNT, &mount.display().to_string())
            // The payload is "mounted" already (the test cannot mount a FAT image).
            .replace("grep -qs", "true ||");
        let run = || {
            let _ = std::fs::remove_file(&marker);
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(&local)
                .status()
                .unwrap();
            assert!(st.success());
            marker.exists()
        };
        std::fs::write(&id, "web-1.shop.u2\n").unwrap();
        assert!(run(), "same instance: the app starts");
        std::fs::write(&id, "web-1.shop.u3\n").unwrap();
        assert!(
            !run(),
            "another instance: its runcmd installs and starts, not this script"
        );
        std::fs::remove_file(&id).unwrap();
        assert!(!run(), "no instance id: nothing runs");
    }
}
