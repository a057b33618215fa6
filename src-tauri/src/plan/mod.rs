//! Pure decisions: which host gets a server (`place`, the one placement rule), the names,
//! addresses and MACs of new servers, which servers a scale in removes, which steps an
//! operation takes per server, which servers it touches and whether it may start (`unit`),
//! the names of volumes (`names`), the fingerprint of a plan, what losing hosts does to the
//! units (`impact`). No I/O, no engine: plain data in, a decision out, each with its T0 tests
//! beside it. `ops/` reads the inventory, calls these and executes what they decide.

use serde::Serialize;

mod alloc;
pub mod fence;
mod fingerprint;
pub mod impact;
pub mod names;
mod place;
pub mod recover;
pub mod unit;
pub use alloc::{
    allocate, host_rooms, mac_candidate, scale_in, server_mac, AllocError, AllocRequest, Allocated,
    Allocation, HostView, Registered, Wanted, RESERVED_PREFIX,
};
pub use fingerprint::{
    fingerprint, parse_fingerprint, HostBasis, LbBasis, PlanBasis, ServerBasis, FINGERPRINT_LEN,
};
pub use place::{place, place_one, HostRoom, Need, PlaceError};
pub use unit::FALLBACK_SIZE;

/// One step of an operation on one server. `ops::units` knows how to do and undo each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Prove the server's names are free on its host or already its own: a domain of its name
    /// that Flotilla did not define for it, or a volume of its names that Flotilla did not
    /// record as its own, stops the deploy before anything is made.
    ClaimNames,
    /// The master version on the host (uploaded once, checksum-cached).
    EnsureMaster,
    /// The unit version's payload disk (and kernel files of a direct-boot master) on the host.
    EnsurePayload,
    /// The server's linked-clone overlay of the master.
    CreateDisk,
    /// The server's NoCloud seed disk.
    WriteSeed,
    /// The libvirt domain (fixed MAC, metadata naming unit and version).
    Define,
    /// The load-balancer member, out of rotation.
    LbAdd,
    Start,
    /// Wait for the definition's health check.
    WaitHealthy,
    /// Put the member in rotation.
    LbReady,
    /// No new requests to the member.
    LbDrain,
    /// Wait until its sessions end or the drain timeout passes.
    WaitDrained,
    /// Member out of rotation.
    LbMaint,
    /// Graceful shutdown (ACPI), forced only when asked.
    Shutdown,
    LbRemove,
    /// Destroy and undefine the domain.
    Undefine,
    /// Delete the server's disk, seed and serial log.
    DeleteVolumes,
    /// Forget the server in the inventory.
    Forget,
    /// Rollout: the server moves to the new unit version while it is shut down — a new
    /// linked clone of the new master (master or disk size changed; the old disk is kept until
    /// the rollout is done) or the same disk (definition only), a new seed with a new
    /// instance-id and the new payload, the domain redefined with the same name, MAC and
    /// address. Undo: the old disk, seed and payload again.
    Swap,
    /// Recovery: the server's old copy is known to be off before anything else happens — a
    /// fence recorded during this loss of its host, the admin's confirmation, its host powered
    /// off through its BMC, or its guest's isolation time waited out (`plan::fence`). The
    /// proof is recorded (`host_fences`) and journaled. Undo: nothing (a host that was powered
    /// off stays off; the proof stays true for this loss).
    Fence,
    /// Recovery: the server of a failed host is fenced at the load balancer (maintenance) and
    /// recorded on a surviving host under its next generation, with new volumes there; the
    /// deploy's steps then re-create it with its name, address and MAC. Undo: recorded on the
    /// failed host again (still fenced).
    Relocate,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClaimNames => "claim-names",
            Self::EnsureMaster => "ensure-master",
            Self::EnsurePayload => "ensure-payload",
            Self::CreateDisk => "create-disk",
            Self::WriteSeed => "write-seed",
            Self::Define => "define",
            Self::LbAdd => "lb-add",
            Self::Start => "start",
            Self::WaitHealthy => "wait-healthy",
            Self::LbReady => "lb-ready",
            Self::LbDrain => "lb-drain",
            Self::WaitDrained => "wait-drained",
            Self::LbMaint => "lb-maint",
            Self::Shutdown => "shutdown",
            Self::LbRemove => "lb-remove",
            Self::Undefine => "undefine",
            Self::DeleteVolumes => "delete-volumes",
            Self::Forget => "forget",
            Self::Swap => "swap-version",
            Self::Relocate => "relocate",
            Self::Fence => "fence",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        ALL_STEPS.into_iter().find(|s| s.as_str() == value)
    }

    /// Steps after which there is no way back (what they removed is gone); a failure after one
    /// of them is finished by retrying, not undone.
    pub fn irreversible(self) -> bool {
        matches!(self, Self::Undefine | Self::DeleteVolumes | Self::Forget)
    }

    fn uses_lb(self) -> bool {
        matches!(
            self,
            Self::LbAdd
                | Self::LbReady
                | Self::LbDrain
                | Self::WaitDrained
                | Self::LbMaint
                | Self::LbRemove
        )
    }
}

pub const ALL_STEPS: [Step; 21] = [
    Step::ClaimNames,
    Step::EnsureMaster,
    Step::EnsurePayload,
    Step::CreateDisk,
    Step::WriteSeed,
    Step::Define,
    Step::LbAdd,
    Step::Start,
    Step::WaitHealthy,
    Step::LbReady,
    Step::LbDrain,
    Step::WaitDrained,
    Step::LbMaint,
    Step::Shutdown,
    Step::LbRemove,
    Step::Undefine,
    Step::DeleteVolumes,
    Step::Forget,
    Step::Swap,
    Step::Relocate,
    Step::Fence,
];

/// What an operation does to each server it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    Deploy,
    Start,
    Stop,
    Restart,
    /// Tear down servers that leave the unit (scale in, delete).
    Remove,
    /// Move running servers to another unit version, `max_unavailable` at a time.
    Rollout,
    /// Re-create the servers of failed hosts on surviving ones.
    Recover,
    /// Servers that kept running on a host that was cut off (fenced at the load balancer)
    /// back into rotation once the host is back, after the load balancer's own check: no
    /// reboot.
    Rejoin,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Remove => "remove",
            Self::Rollout => "rollout",
            Self::Recover => "recover",
            Self::Rejoin => "rejoin",
        }
    }
}

/// The steps of `kind` for one server, in order. `lb`: the unit has a load balancer.
pub fn server_steps(kind: OpKind, lb: bool) -> Vec<Step> {
    use Step::*;
    let all: &[Step] = match kind {
        OpKind::Deploy => &[
            ClaimNames,
            EnsureMaster,
            EnsurePayload,
            CreateDisk,
            WriteSeed,
            Define,
            LbAdd,
            Start,
            WaitHealthy,
            LbReady,
        ],
        OpKind::Start => &[Start, WaitHealthy, LbReady],
        OpKind::Rejoin => &[WaitHealthy, LbReady],
        OpKind::Stop => &[LbDrain, WaitDrained, LbMaint, Shutdown],
        OpKind::Restart => &[
            LbDrain,
            WaitDrained,
            LbMaint,
            Shutdown,
            Start,
            WaitHealthy,
            LbReady,
        ],
        // Prestage first (the new master and payload on the host), so the time out of
        // service is only drain → stop → swap → start → healthy.
        OpKind::Rollout => &[
            EnsureMaster,
            EnsurePayload,
            LbDrain,
            WaitDrained,
            LbMaint,
            Shutdown,
            Swap,
            Start,
            WaitHealthy,
            LbReady,
        ],
        // The old copy known to be off first; then the deploy's steps on the new host, after
        // the move; the member exists already (the same name, address and port), fenced until
        // the new server passed its check.
        OpKind::Recover => &[
            Fence,
            Relocate,
            ClaimNames,
            EnsureMaster,
            EnsurePayload,
            CreateDisk,
            WriteSeed,
            Define,
            Start,
            WaitHealthy,
            LbReady,
        ],
        OpKind::Remove => &[
            LbDrain,
            WaitDrained,
            LbMaint,
            Shutdown,
            LbRemove,
            Undefine,
            DeleteVolumes,
            Forget,
        ],
    };
    all.iter().copied().filter(|s| lb || !s.uses_lb()).collect()
}

/// Restarts, rollouts and stops of chosen servers take servers out of service: at most
/// `max_unavailable` at a time. Deploy and start only add capacity, and a stop of the whole
/// unit (`whole_unit`) takes it all out anyway: those run all servers at once (bounded per
/// host by the engine).
pub fn batch_size(kind: OpKind, max_unavailable: u32, servers: usize, whole_unit: bool) -> usize {
    match kind {
        OpKind::Stop if whole_unit => servers.max(1),
        OpKind::Stop | OpKind::Restart | OpKind::Rollout => {
            (max_unavailable.max(1) as usize).min(servers.max(1))
        }
        _ => servers.max(1),
    }
}

/// Why a restart or rollout of `targets` servers, `batch` at a time, must not start: it would
/// leave fewer than `min_in_service` of the unit's `in_service` servers in service.
pub fn below_min_in_service(in_service: u32, batch: u32, min_in_service: u32) -> Option<String> {
    let left = in_service.saturating_sub(batch);
    (left < min_in_service).then(|| {
        format!(
            "taking {batch} of the {in_service} servers in service out at a time leaves {left}, fewer than the unit's minimum of {min_in_service} in service; lower max-unavailable, scale out first, or lower the minimum (`flotillactl unit policy NAME --min-in-service N`)"
        )
    })
}

/// The warning shown when every server of a unit is on one host: losing it stops the unit.
pub fn single_host_warning(hosts_of_servers: &[&str]) -> Option<String> {
    let first = hosts_of_servers.first()?;
    if hosts_of_servers.len() > 1 && hosts_of_servers.iter().all(|h| h == first) {
        Some(format!(
            "all {} servers are on host {first}: if it fails, the whole unit is down",
            hosts_of_servers.len()
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_have_the_documented_order() {
        let deploy: Vec<&str> = server_steps(OpKind::Deploy, true)
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            deploy,
            [
                "claim-names",
                "ensure-master",
                "ensure-payload",
                "create-disk",
                "write-seed",
                "define",
                "lb-add",
                "start",
                "wait-healthy",
                "lb-ready"
            ]
        );
        // Without a load balancer there are no LB steps.
        assert!(server_steps(OpKind::Remove, false)
            .iter()
            .all(|s| !s.uses_lb()));
        assert_eq!(
            server_steps(OpKind::Stop, false),
            [Step::Shutdown],
            "stop without LB is a shutdown"
        );
        for s in ALL_STEPS {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn batches_and_warnings() {
        assert_eq!(batch_size(OpKind::Stop, 2, 5, false), 2);
        assert_eq!(
            batch_size(OpKind::Stop, 2, 5, true),
            5,
            "a whole-unit stop: all at once"
        );
        assert_eq!(batch_size(OpKind::Restart, 9, 5, false), 5);
        assert_eq!(batch_size(OpKind::Rollout, 1, 4, false), 1);
        assert_eq!(batch_size(OpKind::Deploy, 1, 5, false), 5);
        assert!(single_host_warning(&["h1", "h1"]).is_some());
        assert!(single_host_warning(&["h1", "h2"]).is_none());
        assert!(single_host_warning(&["h1"]).is_none());
    }
}
