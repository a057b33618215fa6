//! `undefine`, `delete-volumes`, `forget`: past the point of no return. A failure after
//! these is finished by running the operation again, never undone: no undo.

use super::*;

impl Engine {
    /// Past the point of no return: a failure after these is finished by running the
    /// operation again, never undone.
    pub(in crate::ops::units) async fn do_undefine(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        let uri = &host.uri;
        if self.domain_owner(ctx, s, host).await? == Owner::Unit {
            self.hypervisor.domain_destroy(uri, &s.name).await?;
            self.hypervisor.domain_undefine(uri, &s.name).await?;
        }
        Ok(())
    }

    pub(in crate::ops::units) async fn do_delete_volumes(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { s, host, .. } = c;
        let mut volumes = self.inventory.server_volumes_of(&s.name)?;
        for v in server_volumes(&s.name) {
            if !volumes.contains(&v) {
                volumes.push(v);
            }
        }
        for v in volumes {
            self.delete_own(s, host, &v).await?;
        }
        Ok(())
    }

    pub(in crate::ops::units) async fn do_forget(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { s, .. } = c;
        Ok(self.inventory.server_delete(&s.name)?)
    }
}
