//! `wait-healthy`: the server answers its health check (a rollout's gate: it stays healthy
//! for the policy's time before it is back in rotation).

use super::*;

impl Engine {
    pub(in crate::ops::units) async fn do_wait_healthy(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { ctx, s, host, .. } = c;
        // A rollout checks the version it puts on the server; other operations the
        // version the server runs.
        let runs = if ctx.kind == Some(OpKind::Rollout) {
            ctx.uv.version
        } else {
            s.version.unwrap_or(ctx.uv.version)
        };
        self.wait_healthy(ctx, s, host, runs).await
    }

    /// Out of rotation again (the member was drained for its health check).
    pub(in crate::ops::units) async fn undo_wait_healthy(
        &self,
        c: StepCx<'_>,
    ) -> Result<(), OpError> {
        let StepCx { ctx, s, .. } = c;
        if ctx.lb.is_some() {
            self.lb_set(ctx, s, MemberState::Maint).await?;
        }
        Ok(())
    }

    /// Waits for the definition's health check: as the load balancer sees it (HAProxy runs
    /// the check while the member drains), or by asking the server. A test-driver host runs
    /// no guest: in test builds its running domain stands in for a healthy server.
    /// Waits until the server passes the health check of unit version `runs` (as the load
    /// balancer sees it when it checks, else asked directly), for the gate's time when set.
    pub(in crate::ops::units) async fn wait_healthy(
        &self,
        ctx: &Ctx,
        s: &Server,
        host: &Host,
        runs: u32,
    ) -> Result<(), OpError> {
        if cfg!(feature = "test-hooks")
            && host.facts.as_ref().is_some_and(|f| f.hypervisor == "TEST")
        {
            return match self
                .hypervisor
                .domain_is_running(&host.uri, &s.name)
                .await?
            {
                Some(true) => Ok(()),
                _ => Err(OpError::Timeout(format!("{} is not running", s.name))),
            };
        }
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.health_timeout_s));
        let def = ctx.definition(runs);
        let path = def.health.path.get_ref().clone();
        let expect = *def.health.expect_status.get_ref();
        let interval = Duration::from_millis(500);
        let addr = member_address(&s.address, ctx.port)?;
        let mut last = String::from("no answer yet");
        // The gate: healthy without a dip for `gate_s` (a dip starts the count again).
        let gate = Duration::from_secs(u64::from(ctx.gate_s));
        let mut since: Option<Instant> = None;
        let mut passed = |healthy: bool| -> bool {
            if !healthy {
                since = None;
                return false;
            }
            since.get_or_insert_with(Instant::now).elapsed() >= gate
        };
        if let Some((d, p)) = ctx.lb.as_ref().filter(|(d, _)| d.reports_health()) {
            d.member_set(p, &s.name, addr, MemberState::Drain).await?;
            d.member_mark_down(p, &s.name).await?;
            self.inventory.server_set_lb_state(&s.name, "drain")?;
            while Instant::now() < deadline {
                if let Some(m) = d.members(p).await?.into_iter().find(|m| m.name == s.name) {
                    if m.healthy {
                        if let Some(layer) = crate::lb::check_layer(&m.check) {
                            // Best effort: what the rollout plan warns about.
                            let _ = self.inventory.unit_set_lb_checks(&ctx.unit.name, layer);
                        }
                    }
                    if passed(m.healthy) {
                        return Ok(());
                    }
                    if !m.healthy {
                        last = format!("the load balancer reports {}", m.status);
                    } else if !gate.is_zero() {
                        last = format!(
                            "healthy, but not yet for the {} s it must stay so",
                            gate.as_secs()
                        );
                    }
                }
                tokio::time::sleep(interval).await;
            }
        } else {
            // Straight to the server: a proxy from the environment (HTTP_PROXY) is never
            // asked about a server's own address.
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(
                    u64::from(*def.health.timeout_s.get_ref()).max(1),
                ))
                .build()
                .map_err(|e| OpError::Timeout(e.to_string()))?;
            let url = format!("http://{addr}{path}");
            while Instant::now() < deadline {
                let healthy = match client.get(&url).send().await {
                    Ok(r) if r.status().as_u16() == expect => true,
                    Ok(r) => {
                        last = format!("GET {url} answered {}", r.status());
                        false
                    }
                    Err(e) => {
                        last = format!("GET {url} failed: {e}");
                        false
                    }
                };
                if passed(healthy) {
                    return Ok(());
                }
                tokio::time::sleep(interval).await;
            }
        }
        let serial = self
            .hypervisor
            .volume_tail(&host.uri, &host.pool, &serial_volume(&s.name), 600)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(OpError::Timeout(format!(
            "{} did not pass its health check (GET {path} on port {}, status {expect}) within {} s; {last}{}",
            s.name,
            ctx.port,
            ctx.policy.health_timeout_s,
            if serial.trim().is_empty() {
                String::new()
            } else {
                format!("; the end of its serial console:\n{}", serial.trim_end())
            }
        )))
    }
}
