//! The units' fixture: an engine on two test-driver hosts with a master and a definition,
//! and what a user could see of it.

use crate::common::fixture::{self, quiet, test_node};
use crate::common::lb::upstreams;
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla::ops::{Engine, OpError};

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) e: Engine,
    /// A real Caddy the units are put behind, when set.
    pub(crate) lb: Option<String>,
}

impl Fixture {
    /// Two test-driver hosts with the lab's network, a master image and a definition.
    pub(crate) async fn new() -> Self {
        Self::with_pool_capacity(None).await
    }

    pub(crate) async fn with_pool_capacity(capacity: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let e = fixture::engine_in(dir.path());
        for h in ["h1", "h2"] {
            let node = dir.path().join(format!("{h}.xml"));
            let mut xml = std::fs::read_to_string(test_node()).unwrap();
            if let Some(c) = capacity {
                // The test driver gives every pool 100 GiB; a volume in the node file fills
                // all but `c` bytes of it.
                let fill = (100u64 << 30) - c.parse::<u64>().unwrap();
                xml = xml.replace(
                    "</pool>",
                    &format!("<volume><name>filler</name><capacity unit='bytes'>{fill}</capacity><allocation unit='bytes'>{fill}</allocation></volume></pool>"),
                );
            }
            std::fs::write(&node, xml).unwrap();
            fixture::add_host(&e, h, &node).await;
            e.host_set_network(h, "10.77.0.0/24", "10.77.0.1", "")
                .unwrap();
        }
        let disk = dir.path().join("master.qcow2");
        fixture::qcow2(&disk, "64M");
        fixture::import_base(&e, disk, String::new()).await;
        e.def_create("shop").unwrap();
        Self { dir, e, lb: None }
    }

    /// Puts the units created from now on behind a Caddy.
    pub(crate) async fn behind(&mut self, admin: &str) {
        self.e
            .lb_add(
                "edge",
                &flotilla::ops::lbs::LbTarget::Caddy {
                    admin: admin.to_owned(),
                    route_id: "flotilla".into(),
                },
            )
            .await
            .unwrap();
        self.lb = Some(admin.to_owned());
    }

    pub(crate) fn form(&self, name: &str, count: u32) -> UnitForm {
        UnitForm {
            name: name.into(),
            image: "base:1".into(),
            definition: "shop:1".into(),
            count,
            name_pattern: format!("{name}-{{n}}"),
            addresses: "10.77.0.11-10.77.0.60".into(),
            lb: self.lb.as_ref().map(|_| "edge".into()),
            policy: Some(flotilla::model::RolloutPolicy {
                drain_timeout_s: 0,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What a user could see on the hosts and in the inventory: domains (and whether they
    /// run), volumes, servers with their states.
    pub(crate) async fn snapshot(&self) -> String {
        let mut out = self.hosts_snapshot().await;
        if let Some(admin) = &self.lb {
            out.push_str(&format!("upstreams {:?}\n", upstreams(admin).await));
        }
        for u in self.e.unit_list().unwrap() {
            for s in u.servers {
                out.push_str(&format!(
                    "server {} {} {:?} {:?} lb={} gen={} prior={:?} isolation={} fenced={}\n",
                    s.name,
                    s.host,
                    s.state,
                    s.version,
                    s.lb_state,
                    s.generation,
                    s.prior,
                    s.isolation_s,
                    s.fenced_at
                ));
            }
        }
        out
    }

    /// Domains, volumes and recorded master copies on the hosts.
    pub(crate) async fn hosts_snapshot(&self) -> String {
        let mut out = String::new();
        for h in self.e.host_list().unwrap() {
            let mut doms = self.e.hypervisor.domain_names(&h.uri).await.unwrap();
            doms.sort();
            for d in doms {
                let running = self
                    .e
                    .hypervisor
                    .domain_is_running(&h.uri, &d)
                    .await
                    .unwrap();
                // The unit version its definition names (a rollout's swap and its undo).
                let version = self
                    .e
                    .hypervisor
                    .domain_flotilla_metadata(&h.uri, &d)
                    .await
                    .unwrap()
                    .and_then(|m| m.into_iter().find(|(k, _)| k == "unit-version"))
                    .map(|(_, v)| v);
                out.push_str(&format!(
                    "{} domain {d} running={running:?} version={version:?}\n",
                    h.name
                ));
            }
            let mut vols: Vec<String> = self
                .e
                .hypervisor
                .volume_list(&h.uri, &h.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.name)
                .collect();
            vols.sort();
            for v in vols {
                out.push_str(&format!("{} volume {v}\n", h.name));
            }
            for o in self.e.inventory.host_object_list(h.name.as_str()).unwrap() {
                out.push_str(&format!("{} verified {o}\n", h.name));
            }
        }
        for v in self.e.image_list().unwrap() {
            for c in v.copies {
                out.push_str(&format!("copy {}:{} on {}\n", v.image, v.version, c.host));
            }
        }
        out
    }

    /// Imports another version of the master `base` (an empty 64 MiB qcow2).
    pub(crate) async fn import_base(&self, version: u32) {
        let disk = self.dir.path().join(format!("master-{version}.qcow2"));
        fixture::qcow2(&disk, "64M");
        let v = fixture::import_base(&self.e, disk, format!("version {version}")).await;
        assert_eq!(v.version, version);
    }

    /// The next version of definition `shop` (another environment value).
    pub(crate) fn new_definition_version(&self) -> u32 {
        let now = self.e.def_show("shop", None).unwrap();
        let text = format!("{}\n# edited\n", now.text);
        let key = format!("RELEASE_{}", now.version.version + 1);
        let text = text.replacen("[env]", &format!("[env]\n{key} = \"next\""), 1);
        self.e
            .def_set_text("shop", &text, Some(now.version.version))
            .unwrap()
            .version
    }

    pub(crate) async fn run(&self, unit: &str, action: UnitAction) -> Result<(), OpError> {
        self.e.unit_run(unit, action, quiet()).await.map(|_| ())
    }
}

pub(crate) fn states(e: &Engine, unit: &str) -> Vec<String> {
    e.unit_show(unit)
        .unwrap()
        .servers
        .iter()
        .map(|s| format!("{}={}", s.name, s.state.as_str()))
        .collect()
}
