//! The names Flotilla gives a unit's volumes on a host: a version's payload, a server's disk,
//! seed and serial log, a recovered server's volumes under its generation, and the volumes a
//! rollout swaps in (`swap_plan`).

use crate::inventory::PriorVolumes;

/// The payload volume of unit version `version` (one per host that runs it).
pub fn payload_volume(unit: &str, version: u32) -> String {
    format!("{unit}-u{version}-payload.img")
}

/// A server's first disk (deploy).
pub fn disk_volume(server: &str) -> String {
    format!("{server}-disk.qcow2")
}

/// A server's first seed (deploy).
pub fn seed_volume(server: &str) -> String {
    format!("{server}-seed.img")
}

/// A server's serial log.
pub fn serial_volume(server: &str) -> String {
    format!("{server}.serial")
}

/// A recovered server's disk and seed on its new host, named for its generation, so that no
/// volume an older generation left there is taken for its own.
pub fn generation_volumes(server: &str, generation: u32) -> (String, String) {
    (
        format!("{server}-disk-g{generation}.qcow2"),
        format!("{server}-seed-g{generation}.img"),
    )
}

/// The volumes a rollout swap gives a server, and which of them it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub disk: String,
    pub seed: String,
    /// The do creates them (else it boots volumes that exist).
    pub made_disk: bool,
    pub made_seed: bool,
    /// After the new seed's instance id: set when the version's own id is the one the guest
    /// runs as already.
    pub instance_suffix: String,
}

/// What a rollout's swap of one server is, from plain data: `server` with its disk and seed
/// now (`disk`, `seed`) and its record of what it ran before (`prior`), going to unit version
/// `target` in operation `op`; `replace`: the master or the disk size differs from what it
/// runs now.
///
/// Going back to the version it ran before the last swap (a rollback): its kept disk and
/// seed, booted again — with a fresh seed when the later version ran on that disk or seed (a
/// definition-only change, or one made without a reboot: its config files and per-boot script
/// are the later version's, and the old instance id would run none of this version's again).
/// Otherwise a new seed (a new instance-id, so cloud-init installs the new payload) and, when
/// `replace`, a new disk (asked only then: it reads the release the server runs now).
pub fn swap<E>(
    server: &str,
    disk: &str,
    seed: &str,
    prior: Option<&PriorVolumes>,
    target: u32,
    op: i64,
    replace: impl FnOnce() -> Result<bool, E>,
) -> Result<Swap, E> {
    if let Some(p) = prior.filter(|p| p.version == target) {
        if p.seed == seed || p.disk == disk {
            return Ok(Swap {
                disk: p.disk.clone(),
                seed: format!("{server}-seed-u{target}-o{op}.img"),
                made_disk: false,
                made_seed: true,
                instance_suffix: format!(".o{op}"),
            });
        }
        return Ok(Swap {
            disk: p.disk.clone(),
            seed: p.seed.clone(),
            made_disk: false,
            made_seed: false,
            instance_suffix: String::new(),
        });
    }
    let replace = replace()?;
    Ok(Swap {
        disk: if replace {
            format!("{server}-disk-u{target}.qcow2")
        } else {
            disk.to_owned()
        },
        seed: format!("{server}-seed-u{target}.img"),
        made_disk: replace,
        made_seed: true,
        instance_suffix: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names() {
        assert_eq!(payload_volume("shop", 3), "shop-u3-payload.img");
        assert_eq!(disk_volume("shop-1"), "shop-1-disk.qcow2");
        assert_eq!(seed_volume("shop-1"), "shop-1-seed.img");
        assert_eq!(serial_volume("shop-1"), "shop-1.serial");
        assert_eq!(
            generation_volumes("shop-1", 2),
            ("shop-1-disk-g2.qcow2".into(), "shop-1-seed-g2.img".into())
        );
    }

    #[test]
    fn a_swap_forward_makes_a_seed_and_a_disk_only_when_needed() {
        let s = swap("s-1", "s-1-disk.qcow2", "s-1-seed.img", None, 2, 7, || {
            Ok::<_, ()>(false)
        })
        .unwrap();
        assert_eq!(
            s,
            Swap {
                disk: "s-1-disk.qcow2".into(),
                seed: "s-1-seed-u2.img".into(),
                made_disk: false,
                made_seed: true,
                instance_suffix: String::new(),
            }
        );
        let s = swap("s-1", "s-1-disk.qcow2", "s-1-seed.img", None, 2, 7, || {
            Ok::<_, ()>(true)
        })
        .unwrap();
        assert_eq!((s.disk.as_str(), s.made_disk), ("s-1-disk-u2.qcow2", true));
        // A prior record of another version is no way back to this one.
        let other = PriorVolumes {
            version: 1,
            disk: "old.qcow2".into(),
            seed: "old.img".into(),
        };
        let s = swap("s-1", "d", "e", Some(&other), 2, 7, || Ok::<_, ()>(false)).unwrap();
        assert_eq!(s.seed, "s-1-seed-u2.img");
    }

    #[test]
    fn a_swap_back_boots_the_kept_volumes_or_a_fresh_seed_on_a_shared_disk() {
        let prior = PriorVolumes {
            version: 1,
            disk: "s-1-disk.qcow2".into(),
            seed: "s-1-seed.img".into(),
        };
        // The later version has its own disk and seed: boot the kept ones again.
        let s = swap(
            "s-1",
            "s-1-disk-u2.qcow2",
            "s-1-seed-u2.img",
            Some(&prior),
            1,
            9,
            || Err("no release is read for a way back"),
        )
        .unwrap();
        assert_eq!(
            s,
            Swap {
                disk: "s-1-disk.qcow2".into(),
                seed: "s-1-seed.img".into(),
                made_disk: false,
                made_seed: false,
                instance_suffix: String::new(),
            }
        );
        // It ran on the same disk: a fresh seed with the operation's instance id.
        let s = swap(
            "s-1",
            "s-1-disk.qcow2",
            "s-1-seed-u2.img",
            Some(&prior),
            1,
            9,
            || Err("no release is read for a way back"),
        )
        .unwrap();
        assert_eq!(
            s,
            Swap {
                disk: "s-1-disk.qcow2".into(),
                seed: "s-1-seed-u1-o9.img".into(),
                made_disk: false,
                made_seed: true,
                instance_suffix: ".o9".into(),
            }
        );
    }
}
