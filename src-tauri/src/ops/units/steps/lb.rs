//! `lb-add`, `lb-remove`, `lb-ready`, `lb-drain`, `lb-maint`, `wait-drained`: a server's
//! member of the unit's load balancer pool.

use super::*;

impl Engine {
    /// The load balancer's member added, held out of rotation (`maint`): `lb-add`'s do, `lb-remove`'s undo.
    pub(in crate::ops::units) async fn add_member(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, addr, .. } = c;
        let lb = ctx.lb.as_ref();
        let (d, p) = lb_of(lb)?;
        d.member_add(p, &s.name, addr).await?;
        self.inventory.server_set_lb_state(&s.name, "maint")?;
        Ok(())
    }

    /// The load balancer's member removed: `lb-remove`'s do, `lb-add`'s undo.
    pub(in crate::ops::units) async fn remove_member(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, addr, .. } = c;
        let lb = ctx.lb.as_ref();
        let (d, p) = lb_of(lb)?;
        d.member_remove(p, &s.name, addr).await?;
        self.inventory.server_set_lb_state(&s.name, "none")?;
        Ok(())
    }

    /// In rotation: no longer held out because its host was lost.
    pub(in crate::ops::units) async fn do_lb_ready(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        self.lb_set(ctx, s, MemberState::Ready).await?;
        self.inventory.server_set_fenced(&s.name, "")?;
        Ok(())
    }

    /// In rotation: drained first, so that the requests it serves end (a rollback
    /// fails no request either).
    pub(in crate::ops::units) async fn undo_lb_ready(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        self.lb_set(ctx, s, MemberState::Drain).await?;
        self.wait_drained(ctx, s).await?;
        self.lb_set(ctx, s, MemberState::Maint).await?;
        // Held out because of its host again, if it was when the operation began.
        let was = ctx.unit.servers.iter().find(|o| o.name == s.name);
        self.inventory
            .server_set_fenced(&s.name, was.map_or("", |o| o.fenced_at.as_str()))?;
        Ok(())
    }

    pub(in crate::ops::units) async fn do_lb_drain(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        self.lb_set(ctx, s, MemberState::Drain).await
    }

    pub(in crate::ops::units) async fn do_lb_maint(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        self.lb_set(ctx, s, MemberState::Maint).await
    }

    /// Back in rotation: the undo of `lb-drain` and `lb-maint`.
    pub(in crate::ops::units) async fn undo_lb_out(&self, c: StepCx<'_>) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        self.lb_set(ctx, s, MemberState::Ready).await
    }

    pub(in crate::ops::units) async fn do_wait_drained(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { ctx, s, pos, .. } = c;
        self.wait_drained_showing(ctx, s, Some(pos)).await
    }

    pub(in crate::ops::units) async fn lb_set(
        &self,
        ctx: &Ctx,
        s: &Server,
        state: MemberState,
    ) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let addr = member_address(&s.address, ctx.port)?;
        // A member the LB lost (reload) is added back first.
        if !d
            .members(p)
            .await?
            .iter()
            .any(|m| m.name == s.name || m.address == addr.to_string())
        {
            d.member_add(p, &s.name, addr).await?;
        }
        d.member_set(p, &s.name, addr, state).await?;
        let text = match state {
            MemberState::Ready => "ready",
            MemberState::Drain => "drain",
            MemberState::Maint => "maint",
        };
        self.inventory.server_set_lb_state(&s.name, text)?;
        Ok(())
    }

    /// Waits until the member has no sessions and no queue, or the drain timeout passed (not
    /// an error: the timeout is the policy). Caddy removed it already: the timeout is its grace.
    pub(in crate::ops::units) async fn wait_drained(
        &self,
        ctx: &Ctx,
        s: &Server,
    ) -> Result<(), OpError> {
        self.wait_drained_showing(ctx, s, None).await
    }

    /// Waits until the load balancer reports no session and no queued request for the
    /// server (read back, never a fixed sleep), or the drain timeout; with `pos`, each
    /// reading is shown as the step's detail (the live panel's session count).
    pub(in crate::ops::units) async fn wait_drained_showing(
        &self,
        ctx: &Ctx,
        s: &Server,
        pos: Option<(u32, u32)>,
    ) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.drain_timeout_s));
        if !d.has_drain() {
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(());
        }
        let mut shown = None;
        while Instant::now() < deadline {
            let m = d.members(p).await?.into_iter().find(|m| m.name == s.name);
            let Some(m) = m.filter(|m| m.sessions > 0 || m.queued > 0) else {
                return Ok(());
            };
            if let Some((done, total)) = pos.filter(|_| shown != Some((m.sessions, m.queued))) {
                shown = Some((m.sessions, m.queued));
                (ctx.progress)(StepEvent {
                    operation: ctx.op,
                    server: s.name.clone(),
                    step: Step::WaitDrained,
                    status: StepStatus::Started,
                    detail: format!("{} sessions, {} queued", m.sessions, m.queued),
                    done,
                    total,
                    lb: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}
