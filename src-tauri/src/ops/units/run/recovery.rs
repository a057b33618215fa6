//! What is particular to a recovery in the driver: where each server goes, decided once (a
//! resume goes on with the same moves: its servers may be recorded on their new hosts
//! already), and nothing re-created without a fence for every server. The moves, fences and
//! the `fence` and `relocate` steps themselves are `super::super::recover`'s.

use super::*;

impl Engine {
    /// The servers a recovery re-creates, its moves recorded in `args` the first time.
    pub(super) fn recovery_targets(
        &self,
        u: &Unit,
        args: &mut OpArgs,
    ) -> Result<Vec<Server>, OpError> {
        let UnitAction::Recover { from, host_is_off } = &args.action else {
            return Ok(Vec::new());
        };
        if args.moves.is_empty() {
            args.moves = match args.confirmed_moves.take() {
                Some(confirmed) => confirmed,
                None => self.recover_moves(u, from, host_is_off)?,
            };
            // Nothing is re-created without a fence for every server (a resumed recovery
            // checks again in its `fence` steps).
            let fences = self.recover_fences(u, &args.moves, host_is_off)?;
            if let Some(why) = plan::fence::manual_refusal(&u.name, &fences) {
                return Err(OpError::FenceNeeded(why));
            }
            if args.moves.is_empty() {
                return Err(ValidationError::new(
                    "from",
                    format!(
                        "no server of unit {} is on a failed host: nothing to recover{}",
                        u.name,
                        self.shut_off_in_place(u)?
                    ),
                )
                .into());
            }
        }
        Ok(Self::moved(u, &args.moves))
    }
}
