//! Table `lbs`: the registered load balancers (HAProxy runtime API, Caddy admin API). A unit
//! bound to one keeps it from being removed (foreign key). Created by the first wave's units
//! migration (`units::CREATE`).

use super::{conflict, corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::LbKind;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// A registered load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct LbInstance {
    pub name: String,
    /// `haproxy` or `caddy`.
    pub kind: LbKind,
    /// `unix:/path`, `tcp:host:port` (HAProxy) or the admin URL (Caddy).
    pub endpoint: String,
    /// Caddy: the `@id` of the reverse_proxy handler whose upstreams Flotilla manages.
    pub route_id: String,
    pub added_at: String,
}

impl Inventory {
    pub fn lb_insert(
        &self,
        name: &str,
        kind: LbKind,
        endpoint: &str,
        route_id: &str,
    ) -> Result<LbInstance, InventoryError> {
        self.conn()
            .execute(
                "INSERT INTO lbs (name, kind, endpoint, route_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, kind.as_str(), endpoint, route_id, now_rfc3339()],
            )
            .map_err(|e| conflict(e, "load balancer", name.to_owned()))?;
        self.lb_named(name)
    }

    pub fn lb_list(&self) -> Result<Vec<LbInstance>, InventoryError> {
        self.count_read("lb_list");
        self.lbs_where("1 = 1", params![])
    }

    fn lbs_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<LbInstance>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, kind, endpoint, route_id, added_at FROM lbs WHERE {filter} ORDER BY name"
            ))
            .map_err(query_err("list load balancers"))?;
        let rows = stmt
            .query_map(args, |r| {
                let name: String = r.get(0)?;
                let kind: String = r.get(1)?;
                let Some(kind) = LbKind::parse(&kind) else {
                    return Ok(Err(corrupt_value("lbs", &name, "kind", &kind)));
                };
                Ok(Ok(LbInstance {
                    name,
                    kind,
                    endpoint: r.get(2)?,
                    route_id: r.get(3)?,
                    added_at: r.get(4)?,
                }))
            })
            .map_err(query_err("list load balancers"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(query_err("list load balancers"))??);
        }
        Ok(out)
    }

    pub fn lb_get(&self, name: &str) -> Result<LbInstance, InventoryError> {
        self.count_read("lb_get");
        self.lb_named(name)
    }

    fn lb_named(&self, name: &str) -> Result<LbInstance, InventoryError> {
        self.lbs_where("name = ?1", params![name])?
            .pop()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "load balancer",
                name: name.to_owned(),
            })
    }

    /// Removes a load balancer; refused while a unit is bound to it.
    pub fn lb_delete(&self, name: &str) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin load balancer removal")?;
        let id: i64 = tx
            .query_row("SELECT id FROM lbs WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(query_err("find a load balancer"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "load balancer",
                name: name.to_owned(),
            })?;
        let users = Self::dependents(&tx, "lbs", id)?;
        if !users.is_empty() {
            return Err(InventoryError::InUse {
                kind: "load balancer",
                name: name.to_owned(),
                users,
            });
        }
        tx.execute("DELETE FROM lbs WHERE id = ?1", [id])
            .map_err(query_err("remove a load balancer"))?;
        tx.commit().map_err(query_err("remove a load balancer"))
    }
}
