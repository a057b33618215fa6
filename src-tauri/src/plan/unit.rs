//! The decisions of a unit operation made from plain data (the unit as read once): which
//! servers it touches, whether it may start (the in-service budget), the version a rollout
//! puts on servers, the size a unit gets when none is given, what deleting it must confirm,
//! and how a `NAME[:VERSION]` reference reads. `ops::units` reads the inventory, calls these
//! and does what they decide.

use super::{batch_size, below_min_in_service, OpKind};
use crate::inventory::{Server, Unit};
use crate::model::definition::Definition;
use crate::model::{quote_input, RolloutPolicy, ServerSize, ServerState, ValidationError};

/// The size of a server when neither the admin nor the definition gives one (and of a unit
/// without a current version): 1 CPU, 256 MiB, the master's disk.
pub const FALLBACK_SIZE: ServerSize = ServerSize {
    cpus: 1,
    memory_mib: 256,
    disk_gib: 0,
};

/// The size of a unit's servers when the admin gives none (the wizard's first values, the
/// missing `--cpus`/`--memory`/`--disk` of `unit create`): the definition's `[resources]`,
/// else [`FALLBACK_SIZE`].
pub fn default_size(def: &Definition) -> ServerSize {
    let r = &def.resources;
    ServerSize {
        cpus: r.cpus.as_ref().map_or(FALLBACK_SIZE.cpus, |c| *c.get_ref()),
        memory_mib: r.memory_mib.as_ref().map_or(FALLBACK_SIZE.memory_mib, |m| {
            u32::try_from(*m.get_ref()).unwrap_or(u32::MAX)
        }),
        disk_gib: r
            .disk_gib
            .as_ref()
            .map_or(FALLBACK_SIZE.disk_gib, |d| *d.get_ref()),
    }
}

/// Deleting a unit whose servers are deployed destroys them: both front doors then ask the
/// admin to confirm explicitly (`unit delete --yes`, the dialog's warning). What is to be
/// confirmed, or `None` when nothing exists on any host yet.
pub fn delete_confirmation(u: &Unit) -> Option<String> {
    let deployed = u
        .servers
        .iter()
        .filter(|s| s.state != ServerState::Planned)
        .count();
    (deployed > 0).then(|| {
        format!(
            "unit {} has {deployed} deployed servers; deleting removes them, their disks and their load-balancer members",
            u.name
        )
    })
}

/// `NAME` or `NAME:VERSION` (`NAME:vVERSION`) as typed into `field`.
pub fn parse_ref(
    field: &'static str,
    value: &str,
) -> Result<(String, Option<u32>), ValidationError> {
    let v = value.trim();
    let (name, version) = match v.split_once(':') {
        Some((n, ver)) => {
            let ver = ver.trim_start_matches('v');
            let ver: u32 = ver.parse().map_err(|_| {
                ValidationError::new(
                    field,
                    format!("{} is not NAME or NAME:VERSION", quote_input(value)),
                )
            })?;
            (n, Some(ver))
        }
        None => (v, None),
    };
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    Ok((name.to_owned(), version))
}

/// A server in service: running and, with a load balancer, ready in it.
pub fn in_service(u: &Unit, s: &Server) -> bool {
    s.state == ServerState::Running && (u.lb.is_none() || s.lb_state == "ready")
}

/// Why an operation must not start because it would take too many servers out of service at
/// once: restarts and rollouts (a batch at a time, under `policy`) and stops of chosen servers
/// (for good). A stop of the whole unit (`whole_unit`) is the admin's explicit choice and is
/// not limited.
pub fn budget_refusal(
    u: &Unit,
    kind: OpKind,
    targets: &[Server],
    policy: &RolloutPolicy,
    whole_unit: bool,
) -> Option<String> {
    if targets.is_empty() {
        return None;
    }
    let out = match kind {
        OpKind::Restart | OpKind::Rollout => {
            batch_size(kind, policy.max_unavailable, targets.len(), false)
        }
        OpKind::Stop if !whole_unit => targets.len(),
        _ => return None,
    } as u32;
    let in_service_now = u.servers.iter().filter(|s| in_service(u, s)).count() as u32;
    // A target already out of service (fenced, or shut off on a host that came back) takes
    // nothing more out.
    let out = out.min(targets.iter().filter(|s| in_service(u, s)).count() as u32);
    let min = policy.min_in_service_of(u.servers.len() as u32);
    below_min_in_service(in_service_now, out, min)
}

/// The unit version a rollout puts on servers: the pending one (or the current one, when
/// nothing is pending: servers a failed rollout left behind); a rollback (`back`), the current
/// one — the last on which every server passed its gate.
pub fn rollout_target(u: &Unit, back: bool) -> Result<u32, ValidationError> {
    if back {
        if !u
            .servers
            .iter()
            .any(|s| s.version.is_some_and(|v| v != u.current_version))
        {
            return Err(ValidationError::new(
                "unit",
                format!(
                    "every server of unit {} runs its current version v{}: nothing to roll back; to go back to an earlier version: flotillactl unit rollback {} --to VERSION",
                    u.name, u.current_version, u.name
                ),
            ));
        }
        return Ok(u.current_version);
    }
    Ok(u.pending().map_or(u.current_version, |v| v.version))
}

/// The servers of `u` an operation on chosen servers touches: those named (every one when
/// `names` is empty) in `state`. `Err` names a server the unit does not have.
pub fn chosen(u: &Unit, names: &[String], state: ServerState) -> Result<Vec<Server>, String> {
    if let Some(n) = names
        .iter()
        .find(|n| !u.servers.iter().any(|s| s.name == **n))
    {
        return Err(n.clone());
    }
    Ok(u.servers
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .filter(|s| s.state == state)
        .cloned()
        .collect())
}

/// The servers a rollout to `target` takes: the running ones on another version, and any of
/// the target version a crashed rollout left out of rotation; only the first `canary` of them
/// when given. A stopped server refuses the rollout (its health could not be checked).
pub fn rollout_servers(
    u: &Unit,
    target: u32,
    canary: Option<u32>,
) -> Result<Vec<Server>, ValidationError> {
    if let Some(s) = u.servers.iter().find(|s| s.state == ServerState::Stopped) {
        return Err(ValidationError::new(
            "unit",
            format!(
                "server {} of unit {} is stopped; start it first (flotillactl unit start {} {}) so that the rollout can check its health",
                s.name, u.name, u.name, s.name
            ),
        ));
    }
    let lb = u.lb.is_some();
    let mut targets: Vec<Server> = u
        .servers
        .iter()
        .filter(|s| s.state == ServerState::Running)
        .filter(|s| s.version != Some(target) || (lb && s.lb_state != "ready"))
        .cloned()
        .collect();
    if let Some(n) = canary {
        if n == 0 {
            return Err(ValidationError::new("canary", "at least 1 server"));
        }
        targets.truncate(n as usize);
    }
    Ok(targets)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::definition::{parse_definition, EXAMPLE, FILE_NAME};

    pub(crate) fn server(name: &str, state: ServerState) -> Server {
        Server {
            name: name.into(),
            unit: "shop".into(),
            host: "h1".into(),
            address: "10.77.0.11".into(),
            mac: "52:54:00:00:00:01".into(),
            state,
            version: None,
            lb_state: "none".into(),
            disk: String::new(),
            seed: String::new(),
            prior: None,
            generation: 0,
            isolation_s: 0,
            fenced_at: String::new(),
            fenced: String::new(),
        }
    }

    pub(crate) fn unit(servers: Vec<Server>) -> Unit {
        Unit {
            name: "shop".into(),
            lb: None,
            lb_pool: String::new(),
            name_pattern: String::new(),
            addresses: String::new(),
            policy: RolloutPolicy::default(),
            current_version: 1,
            versions: Vec::new(),
            servers,
            created_at: String::new(),
        }
    }

    fn running(name: &str, version: u32) -> Server {
        Server {
            version: Some(version),
            ..server(name, ServerState::Running)
        }
    }

    #[test]
    fn the_default_size_is_the_definitions_resources() {
        let parse = |text: &str| parse_definition(FILE_NAME, text).unwrap();
        let sized = EXAMPLE.replacen(
            "cpus = 1\nmemory_mib = 256",
            "cpus = 2\nmemory_mib = 768\ndisk_gib = 4",
            1,
        );
        assert_ne!(sized, EXAMPLE, "the example's [resources] changed");
        assert_eq!(
            default_size(&parse(&sized)),
            ServerSize {
                cpus: 2,
                memory_mib: 768,
                disk_gib: 4
            }
        );
        // Without [resources]: 1 CPU, 256 MiB, the master's disk.
        let start = EXAMPLE.find("[resources]").unwrap();
        let end = EXAMPLE[start..].find("\n\n").unwrap() + start;
        let bare = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        assert_eq!(
            default_size(&parse(&bare)),
            ServerSize {
                cpus: 1,
                memory_mib: 256,
                disk_gib: 0
            }
        );
        assert_eq!(default_size(&parse(&bare)), FALLBACK_SIZE);
    }

    #[test]
    fn deleting_deployed_servers_needs_confirmation() {
        let mut u = unit(vec![
            server("shop-1", ServerState::Planned),
            server("shop-2", ServerState::Planned),
        ]);
        assert_eq!(
            delete_confirmation(&u),
            None,
            "nothing exists on a host yet"
        );
        u.servers[1].state = ServerState::Stopped;
        u.servers.push(server("shop-3", ServerState::Running));
        let what = delete_confirmation(&u).unwrap();
        assert!(
            what.starts_with("unit shop has 2 deployed servers"),
            "{what}"
        );
        u.servers.clear();
        assert_eq!(delete_confirmation(&u), None);
    }

    #[test]
    fn references_read_name_and_optional_version() {
        assert_eq!(parse_ref("image", " web ").unwrap(), ("web".into(), None));
        assert_eq!(
            parse_ref("image", "web:3").unwrap(),
            ("web".into(), Some(3))
        );
        assert_eq!(
            parse_ref("image", "web:v3").unwrap(),
            ("web".into(), Some(3))
        );
        let e = parse_ref("image", "web:x").unwrap_err();
        assert_eq!(e.field, "image");
        assert!(e.problem.contains("is not NAME or NAME:VERSION"), "{e:?}");
        assert!(parse_ref("definition", ":3").is_err());
        assert!(parse_ref("definition", "  ").is_err());
    }

    #[test]
    fn the_budget_refuses_what_leaves_too_few_in_service() {
        let u = unit((1..=4).map(|i| running(&format!("shop-{i}"), 1)).collect());
        let policy = RolloutPolicy {
            max_unavailable: 2,
            min_in_service: Some(3),
            ..RolloutPolicy::default()
        };
        // A restart of all four, two at a time, leaves 2 < 3.
        let why = budget_refusal(&u, OpKind::Restart, &u.servers, &policy, false).unwrap();
        assert!(why.contains("leaves 2"), "{why}");
        // One at a time leaves 3: fine.
        let one = RolloutPolicy {
            max_unavailable: 1,
            ..policy.clone()
        };
        assert_eq!(
            budget_refusal(&u, OpKind::Rollout, &u.servers, &one, false),
            None
        );
        // A stop of chosen servers takes them all out; a stop of the whole unit is not limited.
        assert!(budget_refusal(&u, OpKind::Stop, &u.servers[..2], &one, false).is_some());
        assert_eq!(
            budget_refusal(&u, OpKind::Stop, &u.servers, &one, true),
            None
        );
        // Targets out of service already take nothing more out: two of four stopped, a
        // minimum of two, a stop of those two leaves the two in service.
        let mut fenced = u.clone();
        for s in &mut fenced.servers[..2] {
            s.state = ServerState::Stopped;
        }
        let two = RolloutPolicy {
            min_in_service: Some(2),
            ..one.clone()
        };
        assert_eq!(
            budget_refusal(&fenced, OpKind::Stop, &fenced.servers[..2], &two, false),
            None
        );
        assert!(budget_refusal(&u, OpKind::Stop, &u.servers[..3], &two, false).is_some());
        // No targets, no refusal.
        assert_eq!(
            budget_refusal(&u, OpKind::Restart, &[], &policy, false),
            None
        );
        assert_eq!(
            budget_refusal(&u, OpKind::Deploy, &u.servers, &policy, false),
            None
        );
    }

    #[test]
    fn a_rollout_targets_the_pending_version_and_a_rollback_the_current_one() {
        let mut u = unit(vec![running("shop-1", 1), running("shop-2", 1)]);
        // Nothing pending: the current version.
        assert_eq!(rollout_target(&u, false).unwrap(), 1);
        // Every server on the current version: nothing to roll back.
        let e = rollout_target(&u, true).unwrap_err();
        assert!(e.problem.contains("nothing to roll back"), "{e:?}");
        u.servers[1].version = Some(2);
        assert_eq!(rollout_target(&u, true).unwrap(), 1);
    }

    #[test]
    fn a_rollout_takes_the_servers_off_its_version_and_refuses_a_stopped_one() {
        let mut u = unit(vec![
            running("shop-1", 1),
            running("shop-2", 2),
            running("shop-3", 1),
        ]);
        let names = |v: Vec<Server>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(rollout_servers(&u, 2, None).unwrap()),
            ["shop-1", "shop-3"]
        );
        assert_eq!(names(rollout_servers(&u, 2, Some(1)).unwrap()), ["shop-1"]);
        assert!(rollout_servers(&u, 2, Some(0)).is_err());
        // With a load balancer, one of the target version out of rotation goes again.
        u.lb = Some("lb".into());
        for s in &mut u.servers {
            s.lb_state = "ready".into();
        }
        u.servers[1].lb_state = "drain".into();
        assert_eq!(
            names(rollout_servers(&u, 2, None).unwrap()),
            ["shop-1", "shop-2", "shop-3"]
        );
        u.servers[2].state = ServerState::Stopped;
        let e = rollout_servers(&u, 2, None).unwrap_err();
        assert!(
            e.problem.contains("server shop-3 of unit shop is stopped"),
            "{e:?}"
        );
    }

    #[test]
    fn chosen_servers_are_named_ones_in_the_state_the_operation_needs() {
        let u = unit(vec![
            running("shop-1", 1),
            server("shop-2", ServerState::Stopped),
            running("shop-3", 1),
        ]);
        let names = |v: Vec<Server>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(chosen(&u, &[], ServerState::Running).unwrap()),
            ["shop-1", "shop-3"]
        );
        assert_eq!(
            names(
                chosen(
                    &u,
                    &["shop-2".into(), "shop-3".into()],
                    ServerState::Running
                )
                .unwrap()
            ),
            ["shop-3"]
        );
        assert_eq!(
            chosen(&u, &["shop-9".into()], ServerState::Running),
            Err("shop-9".to_owned())
        );
    }
}
