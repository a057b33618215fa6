//! T1: units on libvirt's test driver (real libvirt API, in process) with a real inventory.
//! One test binary, one module per family (`cargo test --test units rollout::` runs one):
//!
//! - [`lifecycle`]: deploy, stop, start, scale, delete; bad input and a host without room.
//! - [`every_step`]: every step failing in turn, every step run twice, for every action.
//! - [`journal`]: a crash between steps, then resume or unwind; the journal's own failures.
//! - [`lb`]: units behind a real Caddy; the reconcile of a pool's upstreams.
//! - [`ownership`]: domains, volumes and copies Flotilla did not make are left alone.
//! - [`confirmed_plan`]: what the admin confirmed is what runs.
//! - [`builds`]: builders and image copies unwound by the journal.
//! - [`rollout`]: rollouts, canaries and rollback; a unit's policy.
//! - [`recover`]: recovery of the servers of failed hosts.
//! - [`fence`]: fencing (confirmed, isolation, power through a BMC) before a recovery.
//!
//! [`fixture`] holds the units' `Fixture`; what other T1 files share is in `../common/`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../common/mod.rs"]
mod common;
mod fixture;

mod builds;
mod confirmed_plan;
mod every_step;
mod fence;
mod journal;
mod lb;
mod lifecycle;
mod ownership;
mod recover;
mod rollout;
