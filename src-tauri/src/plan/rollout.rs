//! A running operation's own decisions between and after its batches: where a rollout stops
//! (a pause asked for, its deadline, the load balancer's count of failed requests) and which
//! servers a failed operation undoes. `ops::units::run` reads the clock, the counters and the
//! outcomes and asks these.

use super::OpKind;

/// Why a rollout stops at the safe point before a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A pause was asked for (a safe point, not a failure).
    Paused,
    /// The deadline passed (a failure: the rollout stops there and, with auto-rollback, goes back).
    Deadline,
}

/// Whether a rollout stops before batch `n` (0 is the first): a pause counts from the second
/// batch on (the first has nothing to stop after), the deadline (`deadline_s`, 0 = none) once
/// `elapsed_s` reached it.
pub fn stop_before_batch(
    n: usize,
    pause_asked: bool,
    deadline_s: u32,
    elapsed_s: u64,
) -> Option<Stop> {
    if n > 0 && pause_asked {
        return Some(Stop::Paused);
    }
    let deadline = u64::from(deadline_s);
    (deadline > 0 && elapsed_s >= deadline).then_some(Stop::Deadline)
}

/// What the load balancer's counts say after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// More failed requests than the policy allows, over the batches so far.
    pub too_many_failed: bool,
    /// A limit is set but the last batch's counters could not be read: a limit that cannot be
    /// checked is not silently skipped, the rollout stops.
    pub blind: bool,
}

/// `failed`: each batch's failed requests so far (`None`: its counters could not be read);
/// `max`: the policy's limit (`None`: no limit).
pub fn count_failed(max: Option<u64>, failed: &[Option<u64>]) -> Counted {
    let Some(max) = max else {
        return Counted::default();
    };
    Counted {
        too_many_failed: failed.iter().flatten().sum::<u64>() > max,
        blind: failed.last().is_some_and(|f| f.is_none()),
    }
}

/// A failed rollout without auto-rollback undoes only the servers that did not pass their
/// gate: the others keep the new version and the unit stays mixed.
pub fn undoes_only_failing(kind: OpKind, auto_rollback: bool) -> bool {
    kind == OpKind::Rollout && !auto_rollback
}

/// One server's outcome, as the failure policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Steps it completed.
    pub done: usize,
    /// One of its steps failed.
    pub failed: bool,
    /// It went past a step that has no way back (the old copy removed, say).
    pub past_no_return: bool,
}

/// Whether a failed operation undoes this server: never one past the point of no return;
/// with `only_failing`, not one that completed every one of its `all_steps` steps (a batch
/// peer stopped half-way is undone).
pub fn undoes(o: Outcome, only_failing: bool, all_steps: usize) -> bool {
    if o.past_no_return {
        return false;
    }
    !(only_failing && !o.failed && o.done == all_steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_stops_at_the_safe_point_after_the_first_batch_and_the_deadline_any_time() {
        assert_eq!(
            stop_before_batch(0, true, 0, 0),
            None,
            "nothing to stop after yet"
        );
        assert_eq!(stop_before_batch(1, true, 0, 0), Some(Stop::Paused));
        assert_eq!(
            stop_before_batch(1, false, 0, 1_000_000),
            None,
            "0 is no deadline"
        );
        assert_eq!(stop_before_batch(0, false, 60, 59), None);
        assert_eq!(stop_before_batch(0, false, 60, 60), Some(Stop::Deadline));
        assert_eq!(
            stop_before_batch(2, true, 60, 90),
            Some(Stop::Paused),
            "a pause asked for is a pause, not a failure"
        );
    }

    #[test]
    fn failed_requests_are_summed_over_the_batches_and_unreadable_counters_stop_a_limited_rollout()
    {
        assert_eq!(count_failed(None, &[Some(100), None]), Counted::default());
        assert_eq!(
            count_failed(Some(5), &[Some(3), Some(2)]),
            Counted::default()
        );
        assert!(count_failed(Some(5), &[Some(3), Some(3)]).too_many_failed);
        assert!(count_failed(Some(0), &[Some(1)]).too_many_failed);
        let blind = count_failed(Some(5), &[Some(1), None]);
        assert!(blind.blind && !blind.too_many_failed);
        assert!(
            !count_failed(Some(5), &[None, Some(1)]).blind,
            "only the batch just counted decides"
        );
    }

    #[test]
    fn only_a_rollout_without_auto_rollback_keeps_the_servers_that_passed() {
        assert!(undoes_only_failing(OpKind::Rollout, false));
        assert!(!undoes_only_failing(OpKind::Rollout, true));
        assert!(!undoes_only_failing(OpKind::Deploy, false));
    }

    #[test]
    fn a_failed_operation_undoes_every_server_but_those_past_no_return_or_kept() {
        let passed = Outcome {
            done: 6,
            failed: false,
            past_no_return: false,
        };
        let half = Outcome {
            done: 3,
            failed: false,
            past_no_return: false,
        };
        let failing = Outcome {
            done: 3,
            failed: true,
            past_no_return: false,
        };
        let gone = Outcome {
            done: 6,
            failed: false,
            past_no_return: true,
        };
        assert!(undoes(passed, false, 6) && undoes(half, false, 6) && undoes(failing, false, 6));
        assert!(
            !undoes(passed, true, 6),
            "passed its gate: keeps the new version"
        );
        assert!(
            undoes(half, true, 6),
            "a batch peer stopped half-way goes back"
        );
        assert!(undoes(failing, true, 6));
        assert!(!undoes(gone, false, 6) && !undoes(gone, true, 6));
    }
}
