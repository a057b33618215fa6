//! How a host runs its guests: shared by both front doors, the engine and the hypervisor
//! layer (which only turns it into libvirt's domain type).

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
