//! Domains: the XML Flotilla defines (pure, validated by libvirt's own schema in the tests) and
//! their lifecycle. Undo-style calls (destroy, undefine) treat "no such domain" as done.

use super::storage::DiskFormat;
use super::{is_gone, HvError, Hypervisor};
use crate::model::{BridgeName, LibvirtUri, MacAddr};
use virt::domain::Domain;

/// Namespace of Flotilla's `<metadata>` element in domain XML.
pub const METADATA_NS: &str = "https://flotilla.invalid/xmlns/server/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (TCG): hosts without usable KVM, like the lab.
    Qemu,
    /// libvirt's test driver.
    Test,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
            Self::Test => "test",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSpec {
    /// Firmware boots the first disk (stock cloud images).
    Disk,
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
    x.push_str(&format!(
        "  <memory unit='MiB'>{}</memory>\n  <vcpu>{}</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n",
        spec.memory_mib, spec.vcpus
    ));
    match &spec.boot {
        BootSpec::Disk => x.push_str("    <boot dev='hd'/>\n"),
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
    for (i, d) in spec.disks.iter().enumerate() {
        let dev = format!("vd{}", char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)));
        x.push_str(&format!(
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{}'/>\n      <source file='{}'/>\n      <target dev='{dev}' bus='virtio'/>\n{}    </disk>\n",
            d.format.as_str(),
            e(&d.path),
            if d.readonly { "      <readonly/>\n" } else { "" }
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
    x.push_str("    <memballoon model='none'/>\n  </devices>\n</domain>\n");
    x
}

fn lookup(c: &virt::connect::Connect, name: &str) -> Result<Option<Domain>, virt::error::Error> {
    match c.lookup_domain_by_name(name) {
        Ok(d) => Ok(Some(d)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Hypervisor {
    /// Defines (or redefines) a persistent domain.
    pub async fn domain_define(&self, uri: &LibvirtUri, spec: &DomainSpec) -> Result<(), HvError> {
        let xml = domain_xml(spec);
        self.call(uri, "define a domain", move |c| {
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

    /// Removes a domain's definition. Returns false when it did not exist.
    pub async fn domain_undefine(&self, uri: &LibvirtUri, name: &str) -> Result<bool, HvError> {
        let name = name.to_owned();
        self.call(uri, "undefine a domain", move |c| {
            let Some(d) = lookup(c, &name)? else {
                return Ok(false);
            };
            match d.undefine() {
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
mod tests {
    use super::*;
    use crate::hypervisor::tests::test_node_uri;
    use crate::hypervisor::HvConfig;

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
                },
                DiskSpec {
                    path: "/var/lib/libvirt/images/web-1-seed.img".into(),
                    format: DiskFormat::Raw,
                    readonly: true,
                },
            ],
            nics: vec![NicSpec {
                mac: MacAddr::parse("52:54:00:00:00:11").unwrap(),
                bridge: BridgeName::parse("br0").unwrap(),
            }],
            serial_log: Some("/var/log/libvirt/qemu/web-1-serial.log".into()),
            metadata: vec![("unit".into(), "shop & <co>".into())],
        }
    }

    #[test]
    fn generated_xml_passes_libvirts_own_schema() {
        let dir = tempfile::tempdir().unwrap();
        for (i, s) in [
            spec(DomainType::Qemu),
            DomainSpec {
                boot: BootSpec::Disk,
                serial_log: None,
                metadata: vec![],
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
}
