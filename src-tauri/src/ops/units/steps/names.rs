//! `claim-names`: the names a server will use (its domain, disk, seed and serial log) are
//! free, or this server's. Nothing is made: no undo.

use super::*;

impl Engine {
    /// Nothing is made: nothing to undo.
    pub(in crate::ops::units) async fn do_claim_names(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        if self.domain_owner(ctx, s, host).await? == Owner::Foreign {
            return Err(foreign_domain(ctx, s, host));
        }
        // The names it will use (a recovery's are named for its generation).
        for volume in [s.disk_volume(), s.seed_volume(), serial_volume(&s.name)] {
            self.own_or_absent(s, host, &volume, true).await?;
        }
        Ok(())
    }
}
