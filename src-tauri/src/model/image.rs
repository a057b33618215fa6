//! Master images and their versions.

use super::{HostName, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A master image's name: the same rules as a host name (a DNS label), since it appears in
/// volume names on hosts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "desktop", derive(specta::Type), specta(transparent))]
pub struct ImageName(String);

impl ImageName {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        HostName::parse(value)
            .map(|n| Self(n.to_string()))
            .map_err(|e| ValidationError::new("image", e.problem))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for ImageName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<ImageName> for String {
    fn from(value: ImageName) -> String {
        value.0
    }
}

/// `NAME` (the newest version) or `NAME:VERSION` (`web:3` or `web:v3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub image: ImageName,
    pub version: Option<u32>,
}

impl ImageRef {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let (name, version) = match value.split_once(':') {
            None => (value, None),
            Some((n, v)) => {
                let digits = v.strip_prefix('v').unwrap_or(v);
                let parsed = digits
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ValidationError::new(
                            "version",
                            format!(
                                "{} is not a version number like 3 or v3",
                                super::quote_input(v)
                            ),
                        )
                    })?;
                (n, Some(parsed))
            }
        };
        Ok(Self {
            image: ImageName::parse(name)?,
            version,
        })
    }
}

/// How a version boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BootMode {
    /// Firmware boots the disk, as stock cloud images do.
    Disk { firmware: Firmware },
    /// Direct kernel boot: kernel and initrd are library files kept with the version.
    Kernel {
        kernel_file: String,
        initrd_file: Option<String>,
        cmdline: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

/// A version to record: its file is already in the library, complete and read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImageVersion {
    pub image: ImageName,
    pub version: u32,
    /// Path relative to the library folder.
    pub file: String,
    pub sha256: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    /// The version this one was made from (builder runs); `None` for imports.
    pub parent: Option<u32>,
    /// Where it came from: `import of <file>` or `builder <run id> on <host>`.
    pub origin: String,
    pub boot: BootMode,
    /// What sealing was actually done (never claimed when it was not).
    pub seal: Vec<String>,
    pub notes: String,
}

/// A version as the inventory holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ImageVersion {
    pub image: ImageName,
    pub version: u32,
    pub file: String,
    pub sha256: String,
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub parent: Option<u32>,
    pub origin: String,
    pub boot: BootMode,
    pub seal: Vec<String>,
    pub notes: String,
    pub created_at: String,
    /// Hosts that hold a verified copy.
    pub copies: Vec<ImageVersionCopy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ImageVersionCopy {
    pub host: HostName,
    pub volume: String,
    pub path: String,
    pub verified_at: String,
}

impl ImageVersion {
    /// The volume name a copy of this version has in a host's pool.
    pub fn volume_name(&self) -> String {
        format!("flotilla-{}-v{}.qcow2", self.image, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        let r = ImageRef::parse("web").unwrap();
        assert_eq!((r.image.as_str(), r.version), ("web", None));
        assert_eq!(ImageRef::parse("web:3").unwrap().version, Some(3));
        assert_eq!(ImageRef::parse("web:v12").unwrap().version, Some(12));
        for bad in [
            "web:", "web:0", "web:x", "Web:1", "web:v-1", ":1", "web:1:2",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}

/// A builder VM: a running machine from which the next version of `image` will be captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Builder {
    pub image: ImageName,
    pub host: HostName,
    /// `name:vN` of the version it started from, if any.
    pub base: Option<String>,
    /// Local path of the installer ISO it started from, if any.
    pub iso: Option<String>,
    pub domain: String,
    /// Volumes on the host that belong to the builder (removed on capture or abort).
    pub volumes: Vec<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: u64,
    /// How the captured version will boot.
    pub boot: BootMode,
    /// `building`, `running` or `capturing`.
    pub state: String,
    /// Set once capture recorded the new version (cleanup may still be due).
    pub captured_version: Option<u32>,
    /// Host path of the serial console log.
    pub serial_log: String,
    pub created_at: String,
}
