//! The NoCloud seed: a small FAT disk labelled `CIDATA` holding `meta-data`, `network-config`
//! (v2, addresses matched by MAC) and `user-data` (`#cloud-config` with `runcmd`).
//!
//! Every value put into the YAML is validated first (hostname, MAC, address) or refused when it
//! could break out of its quoting (`runcmd` lines), so the files parse the same way in the real
//! cloud-init and in the lab's tiny guest.

use crate::model::{HostName, Ipv4Cidr, MacAddr};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

/// Volume label of the seed disk (cloud-init looks for `cidata` in either case).
pub const SEED_LABEL: &str = "CIDATA";
/// 1 MiB: FAT12, far more than the three small files need.
const SEED_BYTES: u64 = 1 << 20;
const MAX_USER_DATA: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("invalid seed: {0}")]
    Invalid(String),
    #[error("cannot write the seed disk {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One network interface of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    pub mac: MacAddr,
    pub address: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
}

/// Everything a server's seed says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSpec {
    /// Changes whenever the server must be configured afresh (cloud-init runs once per id).
    pub instance_id: String,
    pub hostname: HostName,
    pub nics: Vec<NicConfig>,
    pub nameservers: Vec<Ipv4Addr>,
    /// Shell commands run in order at first boot (cloud-config `runcmd`).
    pub runcmd: Vec<String>,
}

impl SeedSpec {
    fn validate(&self) -> Result<(), SeedError> {
        let id_ok = !self.instance_id.is_empty()
            && self.instance_id.len() <= 128
            && self
                .instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return Err(SeedError::Invalid(format!(
                "instance-id {:?} must be 1-128 of A-Z a-z 0-9 - _ .",
                self.instance_id
            )));
        }
        for nic in &self.nics {
            if let Some(gw) = nic.gateway {
                if !nic.address.contains(gw) {
                    return Err(SeedError::Invalid(format!(
                        "gateway {gw} is outside the network of {}",
                        nic.address
                    )));
                }
            }
        }
        let mut size = 0;
        for cmd in &self.runcmd {
            if cmd.is_empty() || cmd.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
                return Err(SeedError::Invalid(format!(
                    "runcmd line {cmd:?} must be one non-empty line without double quotes or backslashes"
                )));
            }
            size += cmd.len();
        }
        if size > MAX_USER_DATA {
            return Err(SeedError::Invalid(format!(
                "runcmd is {size} bytes; at most {MAX_USER_DATA}"
            )));
        }
        Ok(())
    }

    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            self.instance_id, self.hostname
        )
    }

    pub fn network_config(&self) -> String {
        let mut out = String::from("version: 2\nethernets:\n");
        for (i, nic) in self.nics.iter().enumerate() {
            out.push_str(&format!(
                "  nic{i}:\n    match:\n      macaddress: \"{}\"\n    set-name: eth{i}\n    addresses:\n      - {}\n",
                nic.mac, nic.address
            ));
            if let Some(gw) = nic.gateway {
                out.push_str(&format!("    gateway4: {gw}\n"));
            }
            if !self.nameservers.is_empty() {
                let list: Vec<String> = self.nameservers.iter().map(|n| n.to_string()).collect();
                out.push_str(&format!(
                    "    nameservers:\n      addresses: [{}]\n",
                    list.join(", ")
                ));
            }
        }
        out
    }

    pub fn user_data(&self) -> String {
        let mut out = format!(
            "#cloud-config\nhostname: {}\npreserve_hostname: false\n",
            self.hostname
        );
        if !self.runcmd.is_empty() {
            out.push_str("runcmd:\n");
            for cmd in &self.runcmd {
                out.push_str(&format!("  - \"{cmd}\"\n"));
            }
        }
        out
    }
}

/// Writes the seed disk image (raw FAT) to `path`, replacing it. Same spec → same bytes.
pub fn write_seed_disk(spec: &SeedSpec, path: &Path) -> Result<(), SeedError> {
    spec.validate()?;
    let io = |source| SeedError::Io {
        path: path.display().to_string(),
        source,
    };
    let volume_id = spec.instance_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut file = super::new_fat_image(path, SEED_BYTES, SEED_LABEL, volume_id).map_err(io)?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(io)?;
        // Without interfaces there is no network-config: cloud-init then falls back to DHCP.
        let mut files = vec![("meta-data", spec.meta_data())];
        if !spec.nics.is_empty() {
            files.push(("network-config", spec.network_config()));
        }
        files.push(("user-data", spec.user_data()));
        for (name, content) in files {
            let mut f = fs.root_dir().create_file(name).map_err(io)?;
            f.truncate().map_err(io)?;
            f.write_all(content.as_bytes()).map_err(io)?;
        }
        fs.unmount().map_err(io)?;
    }
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn spec() -> SeedSpec {
        SeedSpec {
            instance_id: "web-1.u1.v3".into(),
            hostname: HostName::parse("web-1").unwrap(),
            nics: vec![NicConfig {
                mac: MacAddr::parse("52:54:00:00:00:11").unwrap(),
                address: Ipv4Cidr::parse("10.77.0.11/24").unwrap(),
                gateway: Some("10.77.0.1".parse().unwrap()),
            }],
            nameservers: vec![],
            runcmd: vec![
                "/opt/middleware/httpd-start".into(),
                "echo 'hi there' > /tmp/x".into(),
            ],
        }
    }

    #[test]
    fn files_say_what_the_guest_needs() {
        let s = spec();
        assert_eq!(
            s.meta_data(),
            "instance-id: web-1.u1.v3\nlocal-hostname: web-1\n"
        );
        let net = s.network_config();
        assert!(net.contains("macaddress: \"52:54:00:00:00:11\""), "{net}");
        assert!(net.contains("      - 10.77.0.11/24\n"), "{net}");
        assert!(net.contains("gateway4: 10.77.0.1"), "{net}");
        let user = s.user_data();
        assert!(user.starts_with("#cloud-config\n"));
        assert!(
            user.contains("  - \"echo 'hi there' > /tmp/x\"\n"),
            "{user}"
        );
    }

    #[test]
    fn the_disk_is_a_labelled_fat_with_the_three_files_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        write_seed_disk(&spec(), &a).unwrap();
        write_seed_disk(&spec(), &b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "same spec, same bytes"
        );

        let file = std::fs::File::open(&a).unwrap();
        let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        let mut meta = String::new();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut meta)
            .unwrap();
        assert_eq!(meta, spec().meta_data());
        let names: Vec<String> = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    }

    #[test]
    fn hostile_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let mut s = spec();
        s.runcmd = vec!["echo \"x\"".into()];
        assert!(matches!(
            write_seed_disk(&s, &path),
            Err(SeedError::Invalid(_))
        ));
        s.runcmd = vec!["a\nb".into()];
        assert!(write_seed_disk(&s, &path).is_err());
        s.runcmd = vec!["x".repeat(MAX_USER_DATA + 1)];
        assert!(write_seed_disk(&s, &path).is_err());
        let mut s = spec();
        s.instance_id = "id: injected\nlocal-hostname: evil".into();
        assert!(write_seed_disk(&s, &path).is_err());
        let mut s = spec();
        s.nics[0].gateway = Some("192.168.1.1".parse().unwrap());
        let err = write_seed_disk(&s, &path).unwrap_err().to_string();
        assert!(err.contains("outside the network"), "{err}");
        let mut s = spec();
        s.nics.clear();
        write_seed_disk(&s, &path).unwrap();
        let fs =
            fatfs::FileSystem::new(std::fs::File::open(&path).unwrap(), fatfs::FsOptions::new())
                .unwrap();
        let names: Vec<String> = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["meta-data", "user-data"],
            "no network-config without interfaces"
        );
    }
}
