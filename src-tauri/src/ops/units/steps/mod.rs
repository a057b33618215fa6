//! The steps of a server, each a named pair: `do_x` and `undo_x` (or no undo, said once in
//! [`TABLE`]), grouped by what they act on:
//!
//! | file        | steps                                                          |
//! |-------------|----------------------------------------------------------------|
//! | `names`     | claim-names                                                    |
//! | `shared`    | ensure-master, ensure-payload (objects units share on a host)  |
//! | `disk`      | create-disk, write-seed                                        |
//! | `domain`    | define, start, shutdown                                        |
//! | `swap`      | swap-version (a rollout's new version, and back)               |
//! | `lb`        | lb-add, lb-remove, lb-ready, lb-drain, lb-maint, wait-drained  |
//! | `gate`      | wait-healthy                                                   |
//! | `moves`     | fence, relocate (a recovery's; their work is in `recover.rs`)  |
//! | `remove`    | undefine, delete-volumes, forget (past the point of no return) |
//!
//! Every do and undo acts behind the same ownership guards: a domain is touched only when its
//! metadata names this unit and server (`refuse_foreign`, `domain_owner`), a volume only when
//! the inventory records it as this server's (`own_or_absent`, `delete_own`). The runner
//! (`super::run`, on `ops::exec::Journal`) journals and repeats them; an undo is idempotent
//! ("already gone" is done).

use super::*;
use std::future::Future;
use std::net::SocketAddrV4;
use std::pin::Pin;

mod disk;
mod domain;
mod gate;
mod lb;
mod moves;
mod names;
mod remove;
mod shared;
mod swap;

/// Reports an upload's progress (at each whole percent) as a detail of the running step.
pub(in crate::ops::units) fn upload_progress(
    ctx: &Ctx,
    s: &Server,
    step: Step,
    pos: (u32, u32),
) -> crate::ops::images::ProgressFn {
    let (progress, op, server) = (ctx.progress.clone(), ctx.op, s.name.clone());
    let last = std::sync::Mutex::new(u64::MAX);
    Arc::new(move |p| {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == pct {
            return;
        }
        *last = pct;
        progress(StepEvent {
            operation: op,
            server: server.clone(),
            step,
            status: StepStatus::Started,
            detail: format!("{} {pct}% of {} MiB", p.phase, p.total >> 20),
            done: pos.0,
            total: pos.1,
            lb: None,
        });
    })
}

pub(in crate::ops::units) use crate::ops::exec::Dir;

/// Who a domain with a server's name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ops::units) enum Owner {
    Absent,
    /// Defined by Flotilla for this server of this unit.
    Unit,
    /// Anything else: never changed or removed.
    Foreign,
}

/// What every do and undo of a server's step is given.
#[derive(Clone, Copy)]
pub(in crate::ops::units) struct StepCx<'a> {
    pub ctx: &'a Ctx,
    /// The server as it was before the operation.
    pub s: &'a Server,
    /// Its host.
    pub host: &'a Host,
    /// Its load balancer member's address.
    pub addr: SocketAddrV4,
    pub step: Step,
    /// Steps done, of total (the progress of long uploads).
    pub pos: (u32, u32),
}

type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<(), OpError>> + Send + 'a>>;

/// A do or an undo.
type Action = for<'a> fn(&'a Engine, StepCx<'a>) -> StepFuture<'a>;

/// One step: its do, and its undo (`None`: no undo — it makes nothing, what it makes is shared,
/// or it is past the point of no return).
pub(in crate::ops::units) struct Pair {
    pub step: Step,
    pub r#do: Action,
    pub undo: Option<Action>,
}

macro_rules! action {
    ($f:ident) => {{
        fn act<'a>(e: &'a Engine, c: StepCx<'a>) -> StepFuture<'a> {
            Box::pin(e.$f(c))
        }
        act as Action
    }};
}

macro_rules! pair {
    ($step:ident { + $do:ident - $undo:ident }) => {
        Pair {
            step: Step::$step,
            r#do: action!($do),
            undo: Some(action!($undo)),
        }
    };
    ($step:ident { + $do:ident }) => {
        Pair {
            step: Step::$step,
            r#do: action!($do),
            undo: None,
        }
    };
}

/// Every step of a server, with its do and its undo.
pub(in crate::ops::units) const TABLE: [Pair; 21] = [
    pair!(ClaimNames { + do_claim_names }),
    pair!(EnsureMaster { + do_ensure_master }),
    pair!(EnsurePayload { + do_ensure_payload }),
    pair!(CreateDisk { + do_create_disk - undo_create_disk }),
    pair!(WriteSeed { + do_write_seed - undo_write_seed }),
    pair!(Define { + do_define - undo_define }),
    pair!(LbAdd { + add_member - remove_member }),
    pair!(Start { + do_start - undo_start }),
    pair!(WaitHealthy { + do_wait_healthy - undo_wait_healthy }),
    pair!(LbReady { + do_lb_ready - undo_lb_ready }),
    pair!(LbDrain { + do_lb_drain - undo_lb_out }),
    pair!(WaitDrained { + do_wait_drained }),
    pair!(LbMaint { + do_lb_maint - undo_lb_out }),
    pair!(Shutdown { + do_shutdown - undo_shutdown }),
    pair!(LbRemove { + remove_member - add_member }),
    pair!(Undefine { + do_undefine }),
    pair!(DeleteVolumes { + do_delete_volumes }),
    pair!(Forget { + do_forget }),
    pair!(Swap { + do_swap - undo_swap }),
    pair!(Relocate { + do_relocate - undo_relocate }),
    pair!(Fence { + do_fence }),
];

/// The table's row of `step`.
fn pair_of(step: Step) -> &'static Pair {
    TABLE
        .iter()
        .find(|p| p.step == step)
        .unwrap_or_else(|| unreachable!("every step is in the table (a test checks it)"))
}

impl Engine {
    /// Does one step. `pos` (steps done, of total) goes with the progress of long uploads.
    pub(in crate::ops::units) async fn do_step(
        &self,
        ctx: &Ctx,
        s: &Server,
        step: Step,
        pos: (u32, u32),
    ) -> Result<(), OpError> {
        self.server_step(ctx, s, step, Dir::Do, pos).await
    }

    /// Undoes one step (idempotent: "already gone" is done).
    pub(in crate::ops::units) async fn undo_step(
        &self,
        ctx: &Ctx,
        s: &Server,
        step: Step,
    ) -> Result<(), OpError> {
        self.server_step(ctx, s, step, Dir::Undo, (0, 0)).await
    }

    /// One step either way, through [`TABLE`]; a step with no undo is undone by doing nothing.
    async fn server_step(
        &self,
        ctx: &Ctx,
        s: &Server,
        step: Step,
        dir: Dir,
        pos: (u32, u32),
    ) -> Result<(), OpError> {
        let c = StepCx {
            ctx,
            s,
            host: ctx.host(&s.host)?,
            addr: member_address(&s.address, ctx.port)?,
            step,
            pos,
        };
        let pair = pair_of(step);
        match (dir, pair.undo) {
            (Dir::Do, _) => (pair.r#do)(self, c).await,
            (Dir::Undo, Some(undo)) => undo(self, c).await,
            (Dir::Undo, None) => Ok(()),
        }
    }

    /// Refuses to start or stop a domain of the server's name that is not this unit's (someone
    /// replaced it by hand).
    pub(in crate::ops::units) async fn refuse_foreign(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<(), OpError> {
        if self.domain_owner(ctx, s, host).await? == Owner::Foreign {
            return Err(ValidationError::new(
                "server",
                format!(
                    "the domain {} on host {} is not the one Flotilla defined for unit {}; it was left alone",
                    s.name, host.name, ctx.unit.name
                ),
            )
            .into());
        }
        Ok(())
    }

    /// A volume of one of the server's names on its host: `None` when there is none, the
    /// volume when the inventory records it as this server's; refused (and left alone) when
    /// it is anyone else's. `fresh`: also see files libvirt has not noticed yet (a pool
    /// refresh on a miss) — what `claim-names` does once per server; the volume steps after
    /// it look up what libvirt knows, without a refresh each.
    pub(in crate::ops::units) async fn own_or_absent(
        &self,
        s: &Server,
        host: &Host,
        volume: &str,
        fresh: bool,
    ) -> Result<Option<crate::hypervisor::VolumeInfo>, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let found = if fresh {
            self.hypervisor.volume_find(uri, pool, volume).await?
        } else {
            self.hypervisor.volume_get(uri, pool, volume).await?
        };
        let Some(found) = found else {
            return Ok(None);
        };
        match self
            .inventory
            .server_volume_owner(host.name.as_str(), volume)?
        {
            Some(owner) if owner == s.name => Ok(Some(found)),
            owner => Err(ValidationError::new(
                "server",
                format!(
                    "host {} already has a volume {volume} that Flotilla did not create for server {}{}; it was left alone. Remove or rename it, or give this server another name",
                    host.name,
                    s.name,
                    owner.map_or_else(String::new, |o| format!(" (it belongs to server {o})"))
                ),
            )
            .into()),
        }
    }

    /// Deletes a volume of the server's names only when the inventory records it as this
    /// server's, then forgets the record; anything else of that name is left alone.
    pub(in crate::ops::units) async fn delete_own(
        &self,
        s: &Server,
        host: &Host,
        volume: &str,
    ) -> Result<(), OpError> {
        let owner = self
            .inventory
            .server_volume_owner(host.name.as_str(), volume)?;
        if owner.as_deref() == Some(s.name.as_str()) {
            self.hypervisor
                .volume_delete(&host.uri, &host.pool, volume)
                .await?;
            self.inventory
                .server_volume_forget(host.name.as_str(), volume)?;
        }
        Ok(())
    }

    /// After creating a recorded volume: when the creation failed and a volume of that name
    /// exists anyway, someone else made it in the meantime — the record goes, the volume stays.
    pub(in crate::ops::units) async fn keep_record_if_made<T>(
        &self,
        host: &Host,
        volume: &str,
        created: Result<T, crate::hypervisor::HvError>,
    ) -> Result<(), OpError> {
        let Err(e) = created else {
            return Ok(());
        };
        if self
            .hypervisor
            .volume_find(&host.uri, &host.pool, volume)
            .await?
            .is_some()
        {
            self.inventory
                .server_volume_forget(host.name.as_str(), volume)?;
        }
        Err(e.into())
    }

    /// Whether the domain named like the server is this unit's (its Flotilla metadata).
    pub(in crate::ops::units) async fn domain_owner(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
    ) -> Result<Owner, OpError> {
        let props = self
            .hypervisor
            .domain_flotilla_metadata(&host.uri, &s.name)
            .await?;
        Ok(match props {
            None => Owner::Absent,
            Some(p) => {
                let has = |k: &str, v: &str| p.iter().any(|(pk, pv)| pk == k && pv == v);
                if has("unit", &ctx.unit.name) && has("server", &s.name) {
                    Owner::Unit
                } else {
                    Owner::Foreign
                }
            }
        })
    }
}

/// What the steps of a server updated without a reboot say.
pub(in crate::ops::units) const LIVE_NOTE: &str = "without a reboot: through the QEMU guest agent";

/// A detail of a running step (progress only; the journal keeps the step's own rows).
fn note(ctx: &Ctx, s: &Server, step: Step, pos: (u32, u32), detail: &str) {
    (ctx.progress)(StepEvent {
        operation: ctx.op,
        server: s.name.clone(),
        step,
        status: StepStatus::Started,
        detail: detail.to_owned(),
        done: pos.0,
        total: pos.1,
        lb: None,
    });
}

/// The refusal when a domain of the server's name is not the one Flotilla defined for it.
fn foreign_domain(ctx: &Ctx, s: &Server, host: &Host) -> OpError {
    ValidationError::new(
        "server",
        format!(
            "host {} already has a domain named {} that Flotilla did not define for unit {}; it was left alone. Remove or rename it, or give this server another name",
            host.name, s.name, ctx.unit.name
        ),
    )
    .into()
}

/// The volumes a server owns on its host, by name: disk overlay, seed, serial log.
pub(in crate::ops::units) fn server_volumes(server: &str) -> [String; 3] {
    [
        disk_volume(server),
        seed_volume(server),
        serial_volume(server),
    ]
}

fn lb_of(lb: Option<&(LbDriver, String)>) -> Result<(&LbDriver, &str), OpError> {
    lb.map(|(d, p)| (d, p.as_str())).ok_or_else(|| {
        OpError::Invalid(ValidationError::new(
            "load balancer",
            "this unit has no load balancer",
        ))
    })
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn every_step_is_in_the_table_once() {
        for step in crate::plan::ALL_STEPS {
            assert_eq!(
                TABLE.iter().filter(|p| p.step == step).count(),
                1,
                "{}",
                step.as_str()
            );
        }
        assert_eq!(TABLE.len(), crate::plan::ALL_STEPS.len());
    }

    #[test]
    fn steps_past_the_point_of_no_return_have_no_undo() {
        for p in TABLE.iter().filter(|p| p.step.irreversible()) {
            assert!(p.undo.is_none(), "{}", p.step.as_str());
        }
    }
}
