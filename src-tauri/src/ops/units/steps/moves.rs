//! `fence`, `relocate`: a recovery's steps. What they do is the recovery's own
//! (`super::super::recover`: `fence`, `relocate`); here they are pairs like every other step.
//! A fence has no undo (a host that was powered off stays off; the proof stays true).

use super::*;

impl Engine {
    pub(in crate::ops::units) async fn do_fence(&self, c: StepCx<'_>) -> Result<(), OpError> {
        self.fence(c.ctx, c.s, Dir::Do).await
    }

    pub(in crate::ops::units) async fn do_relocate(&self, c: StepCx<'_>) -> Result<(), OpError> {
        self.relocate(c.ctx, c.s, Dir::Do).await
    }

    pub(in crate::ops::units) async fn undo_relocate(&self, c: StepCx<'_>) -> Result<(), OpError> {
        self.relocate(c.ctx, c.s, Dir::Undo).await
    }
}
