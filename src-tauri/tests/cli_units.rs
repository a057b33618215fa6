//! `flotillactl unit|lb|op|host set` on libvirt test-driver hosts: what a script sees (JSON,
//! exit codes) for good and bad input.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::cli::{code, ctl, flotillactl, ok};
use common::fixture;
use std::path::Path;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for h in ["h1", "h2"] {
        let node = fixture::node_copy(data, h);
        ok(ctl(
            data,
            &[
                "host",
                "add",
                h,
                "--uri",
                &format!("test://{}", node.display()),
                "--bridge",
                "br0",
            ],
        ));
    }
    let disk = data.join("m.qcow2");
    fixture::qcow2(&disk, "32M");
    ok(ctl(
        data,
        &["image", "import", "base", disk.to_str().unwrap()],
    ));
    ok(ctl(data, &["def", "create", "shop"]));
    dir
}

#[test]
fn create_plan_deploy_and_delete_from_the_command_line() {
    let dir = setup();
    let d = dir.path();
    // No network on the hosts yet: a clear message says how to set it.
    let o = ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base:1",
            "--definition",
            "shop",
            "--count",
            "2",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
        ],
    );
    let (c, err) = code(&o);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("flotillactl host set"), "{err}");
    for h in ["h1", "h2"] {
        ok(ctl(
            d,
            &[
                "host",
                "set",
                h,
                "--network",
                "10.77.0.0/24",
                "--gateway",
                "10.77.0.1",
                "--domain-type",
                "qemu",
            ],
        ));
    }
    let shown: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["host", "show", "h1", "--json"]))).unwrap();
    assert_eq!(shown["network"], "10.77.0.0/24");
    assert_eq!(shown["domain_type"], "qemu");

    let created: serde_json::Value = serde_json::from_str(&ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base:1",
            "--definition",
            "shop",
            "--count",
            "2",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
            "--memory",
            "128",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(created["unit"]["servers"].as_array().unwrap().len(), 2);
    assert_eq!(created["unit"]["servers"][1]["host"], "h2");

    let plan: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "plan", "shop", "deploy", "--json"]))).unwrap();
    assert_eq!(plan["servers"][0]["steps"][1], "ensure-master");
    assert_eq!(plan["servers"][0]["steps"][0], "claim-names");
    let text = ok(ctl(d, &["unit", "plan", "shop", "scale", "3"]));
    assert!(text.contains("shop-3 (10.77.0.13 on h1) [new]"), "{text}");

    let report: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "deploy", "shop", "--json"]))).unwrap();
    assert_eq!(report["ok"], true);
    let list: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "list", "--json"]))).unwrap();
    assert!(list[0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["state"] == "running"));

    // Live status: the hosts are asked now (each flotillactl process has its own test-driver
    // state, so the domains this process did not define are "not defined" there).
    let live: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "status", "shop", "--json"]))).unwrap();
    assert_eq!(live.as_array().unwrap().len(), 2);
    assert_eq!(live[0]["power"], "not defined");
    assert_eq!(live[0]["lb_status"], "no load balancer");
    // Deleting deployed servers needs --yes.
    let o = ctl(d, &["unit", "delete", "shop"]);
    assert_eq!(code(&o).0, Some(2), "{}", code(&o).1);
    // What a unit uses cannot be removed.
    assert_eq!(code(&ctl(d, &["host", "remove", "h1"])).0, Some(5));
    assert_eq!(code(&ctl(d, &["image", "delete", "base:1"])).0, Some(5));
    ok(ctl(d, &["unit", "delete", "shop", "--yes"]));
    assert_eq!(ok(ctl(d, &["unit", "list", "--json"])).trim(), "[]");
    let ops: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["op", "list", "--json"]))).unwrap();
    assert_eq!(ops["interrupted"].as_array().unwrap().len(), 0);
    assert!(ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "deploy" && o["state"] == "succeeded"));
}

#[test]
fn bad_input_gets_a_clear_error_and_its_own_exit_code() {
    let dir = setup();
    let d = dir.path();
    for h in ["h1", "h2"] {
        ok(ctl(
            d,
            &[
                "host",
                "set",
                h,
                "--network",
                "10.77.0.0/24",
                "--gateway",
                "10.77.0.1",
            ],
        ));
    }
    let base = [
        "unit",
        "create",
        "other",
        "--image",
        "base:1",
        "--definition",
        "shop",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        code(&ctl(d, &a))
    };
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "web",
            "--image",
            "base",
            "--definition",
            "shop",
            "--server",
            "web-1=10.77.0.50@h1",
        ],
    ));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--server", "web-1=10.77.0.51"], 4, "already exists"),
        (vec!["--server", "x-1=10.77.0.50"], 4, "10.77.0.50"),
        (
            vec!["--server", "x-1=10.78.0.5@h1"],
            2,
            "outside the host's network",
        ),
        (vec!["--server", "x-1=10.77.0.1@h1"], 2, "gateway"),
        (vec!["--server", "x-1"], 2, "NAME=ADDRESS"),
        (vec!["--server", "x-1=10.77.0.60@nohost"], 3, "nohost"),
        (
            vec![
                "--count",
                "2",
                "--name-pattern",
                "x-{n}",
                "--addresses",
                "10.77.0.60-10.77.0.60",
            ],
            2,
            "no free address",
        ),
        (
            vec![
                "--count",
                "2",
                "--name-pattern",
                "x",
                "--addresses",
                "10.77.0.60-10.77.0.70",
            ],
            2,
            "{n}",
        ),
        (
            vec![
                "--count",
                "2",
                "--name-pattern",
                "x-{n}",
                "--addresses",
                "10.77.0.70-10.77.0.60",
            ],
            2,
            "ends before it starts",
        ),
        (
            vec![
                "--count",
                "2",
                "--name-pattern",
                "x-{n}",
                "--addresses",
                "10.77.0.60-10.77.0.70",
                "--memory",
                "1",
            ],
            2,
            "memory",
        ),
        (
            vec![
                "--count",
                "2",
                "--name-pattern",
                "x-{n}",
                "--addresses",
                "10.77.0.60-10.77.0.70",
                "--lb",
                "nolb",
            ],
            3,
            "nolb",
        ),
    ];
    for (extra, want, text) in cases {
        let (c, err) = with(&extra);
        assert_eq!(c, Some(want), "{extra:?}: {err}");
        assert!(err.contains(text), "{extra:?}: {err}");
    }
    let (c, err) = code(&ctl(
        d,
        &[
            "unit",
            "create",
            "other",
            "--image",
            "base:7",
            "--definition",
            "shop",
            "--server",
            "o-1=10.77.0.61",
        ],
    ));
    assert_eq!(c, Some(3), "{err}");
    let huge = "a".repeat(100_000);
    let (c, _) = code(&ctl(
        d,
        &[
            "unit",
            "create",
            &huge,
            "--image",
            "base",
            "--definition",
            "shop",
            "--server",
            "o-1=10.77.0.61",
        ],
    ));
    assert_eq!(c, Some(2));
    let (c, err) = code(&ctl(
        d,
        &[
            "lb",
            "add",
            "lb1",
            "--haproxy-socket",
            "/nonexistent/haproxy.sock",
        ],
    ));
    assert_eq!(c, Some(13), "{err}");
    assert!(err.contains("cannot reach the load balancer"), "{err}");
    let (c, _) = code(&ctl(
        d,
        &[
            "lb",
            "add",
            "lb1",
            "--caddy-admin",
            "ftp://x",
            "--caddy-route-id",
            "r",
        ],
    ));
    assert_eq!(c, Some(2));
    let (c, _) = code(&ctl(d, &["host", "set", "h1", "--network", "not-a-net"]));
    assert_eq!(c, Some(2));
    let (c, _) = code(&ctl(d, &["op", "resume", "999"]));
    assert_eq!(c, Some(3));
    // A confirmation that a host is off: a host name, one this inventory has, and lost.
    for (bad, want, says) in [
        ("h1;poweroff", 2, "host-is-off"),
        (huge.as_str(), 2, "host-is-off"),
        ("", 2, "host-is-off"),
        ("nohost", 3, "nohost"),
        ("h1", 2, "not monitored"),
    ] {
        for args in [
            vec!["unit", "recover", "web", "--host-is-off", bad],
            vec!["unit", "plan", "web", "recover", "--host-is-off", bad],
        ] {
            let (c, err) = code(&ctl(d, &args));
            assert_eq!(c, Some(want), "{:?}: {err}", &args[..3]);
            assert!(
                err.contains(says) && err.len() < 2000,
                "{}",
                &err[..err.len().min(300)]
            );
        }
    }
    // Isolation response settings out of range or hostile.
    for (flag, value) in [
        ("--isolation-timeout", "3"),
        ("--isolation-address", "10.77.0.1:99999"),
        ("--isolation-address", "$(reboot)"),
    ] {
        let (c, err) = code(&ctl(d, &["unit", "policy", "web", flag, value]));
        assert_eq!(c, Some(2), "{flag} {value}: {err}");
        assert!(err.contains("isolation"), "{err}");
    }
    // Nothing of the refused commands was recorded.
    let list: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "list", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["servers"].as_array().unwrap().len(), 1);
    assert_eq!(ok(ctl(d, &["lb", "list", "--json"])).trim(), "[]");
}

/// `setup()` with both hosts on the lab's network.
fn networked() -> tempfile::TempDir {
    let dir = setup();
    for h in ["h1", "h2"] {
        ok(ctl(
            dir.path(),
            &[
                "host",
                "set",
                h,
                "--network",
                "10.77.0.0/24",
                "--gateway",
                "10.77.0.1",
            ],
        ));
    }
    dir
}

#[test]
fn a_size_given_in_part_takes_the_rest_from_the_definition() {
    let dir = networked();
    let d = dir.path();
    let text = flotilla::model::definition::EXAMPLE.replacen(
        "cpus = 1\nmemory_mib = 256",
        "cpus = 2\nmemory_mib = 768\ndisk_gib = 4",
        1,
    );
    let file = d.join("definition.toml");
    std::fs::write(&file, text).unwrap();
    ok(ctl(d, &["def", "set-file", "shop", file.to_str().unwrap()]));
    let create = |name: &str, extra: &[&str]| -> serde_json::Value {
        let pattern = format!("{name}-{{n}}");
        let mut args = vec![
            "unit",
            "create",
            name,
            "--image",
            "base",
            "--definition",
            "shop",
            "--count",
            "1",
            "--name-pattern",
            &pattern,
            "--addresses",
            "10.77.0.11-10.77.0.40",
            "--json",
        ];
        args.extend_from_slice(extra);
        let created: serde_json::Value = serde_json::from_str(&ok(ctl(d, &args))).unwrap();
        created["unit"]["versions"][0]["size"].clone()
    };
    let size = |cpus: u32, memory_mib: u32, disk_gib: u32| serde_json::json!({ "cpus": cpus, "memory_mib": memory_mib, "disk_gib": disk_gib });
    assert_eq!(create("a", &[]), size(2, 768, 4));
    assert_eq!(create("b", &["--memory", "128"]), size(2, 128, 4));
    assert_eq!(
        create("c", &["--cpus", "3", "--disk", "0"]),
        size(3, 768, 0)
    );
    // A definition that does not exist is named as such.
    let o = ctl(
        d,
        &[
            "unit",
            "create",
            "x",
            "--image",
            "base",
            "--definition",
            "nodef",
            "--cpus",
            "2",
            "--count",
            "1",
            "--name-pattern",
            "x-{n}",
            "--addresses",
            "10.77.0.50",
        ],
    );
    assert_eq!(code(&o).0, Some(3), "{}", code(&o).1);
}

#[test]
fn a_script_runs_only_the_plan_it_saw() {
    let dir = networked();
    let d = dir.path();
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base",
            "--definition",
            "shop",
            "--count",
            "2",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
        ],
    ));
    let plan = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["unit", "plan", "shop"];
        all.extend_from_slice(args);
        all.push("--json");
        serde_json::from_str(&ok(ctl(d, &all))).unwrap()
    };
    let shown = plan(&["deploy"]);
    let old = shown["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(old.len(), 16);
    assert!(old.bytes().all(|c| c.is_ascii_hexdigit()), "{old}");
    assert_eq!(shown["confirm"], serde_json::Value::Null);
    let text = ok(ctl(d, &["unit", "plan", "shop", "deploy"]));
    assert!(text.contains(&format!("Fingerprint: {old}")), "{text}");

    // The hosts' network changed since: nothing runs; the new plan is shown (exit 16).
    for h in ["h1", "h2"] {
        ok(ctl(d, &["host", "set", h, "--gateway", "10.77.0.254"]));
    }
    let units_before = ok(ctl(d, &["unit", "list", "--json"]));
    let ops_before = ok(ctl(d, &["op", "list", "--json"]));
    let o = ctl(d, &["unit", "deploy", "shop", "--plan", &old, "--json"]);
    let (c, err) = code(&o);
    assert_eq!(c, Some(16), "{err}");
    assert!(err.contains("the inventory changed since plan"), "{err}");
    let refused: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(refused["error"]["code"], "plan_changed");
    let new = refused["plan"]["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(plan(&["deploy"])["fingerprint"], new.as_str());
    assert_eq!(refused["plan"]["servers"].as_array().unwrap().len(), 2);
    assert_eq!(ok(ctl(d, &["unit", "list", "--json"])), units_before);
    // The journal keeps the refusal, with no step run.
    let ops: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["op", "list", "--json"]))).unwrap();
    let before: serde_json::Value = serde_json::from_str(&ops_before).unwrap();
    let all = ops["operations"].as_array().unwrap();
    assert_eq!(
        all.len(),
        before["operations"].as_array().unwrap().len() + 1
    );
    assert_eq!(all[0]["state"], "aborted");
    assert!(all[0]["steps"].as_array().unwrap().is_empty());
    assert!(all[0]["error"]
        .as_str()
        .unwrap()
        .contains("nothing was done"));
    // Without --json the new plan is printed, the error on stderr.
    let o = ctl(d, &["unit", "deploy", "shop", "--plan", &old]);
    assert_eq!(code(&o).0, Some(16));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("Fingerprint: {new}")));
    // Not a fingerprint: bad input.
    let o = ctl(d, &["unit", "deploy", "shop", "--plan", "latest"]);
    let (c, err) = code(&o);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("not a plan fingerprint"), "{err}");
    assert_eq!(ok(ctl(d, &["unit", "list", "--json"])), units_before);

    let report: serde_json::Value = serde_json::from_str(&ok(ctl(
        d,
        &[
            "unit",
            "deploy",
            "shop",
            "--plan",
            &new.to_uppercase(),
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(report["ok"], true);

    // Every operation takes --plan. (Each flotillactl process has its own test-driver
    // state, so start and restart are only refused here, before they act.)
    let fp = |args: &[&str]| plan(args)["fingerprint"].as_str().unwrap().to_owned();
    for op in ["start", "restart"] {
        let o = ctl(d, &["unit", op, "shop", "--plan", "0123456789abcdef"]);
        assert_eq!(code(&o).0, Some(16), "{op}: {}", code(&o).1);
    }
    let stop_one = fp(&["stop", "--server", "shop-1"]);
    let stop_all = fp(&["stop"]);
    ok(ctl(
        d,
        &[
            "unit", "stop", "shop", "--server", "shop-1", "--force", "--plan", &stop_one,
        ],
    ));
    // The plan to stop both was made while shop-1 ran.
    let o = ctl(d, &["unit", "stop", "shop", "--plan", &stop_all]);
    assert_eq!(code(&o).0, Some(16), "{}", code(&o).1);
    let scale = fp(&["scale", "3"]);
    ok(ctl(d, &["unit", "scale", "shop", "3", "--plan", &scale]));
    let stop_all = fp(&["stop"]);
    ok(ctl(d, &["unit", "stop", "shop", "--plan", &stop_all]));
    let deleting = plan(&["delete"]);
    assert!(deleting["confirm"]
        .as_str()
        .unwrap()
        .contains("3 deployed servers"));
    let delete = deleting["fingerprint"].as_str().unwrap();
    // A plan is no confirmation of a delete.
    assert_eq!(
        code(&ctl(d, &["unit", "delete", "shop", "--plan", delete])).0,
        Some(2)
    );
    ok(ctl(
        d,
        &["unit", "delete", "shop", "--yes", "--plan", delete],
    ));
    assert_eq!(ok(ctl(d, &["unit", "list", "--json"])).trim(), "[]");
}

/// The log in the data directory: a failed deploy leaves lines naming the server, the step,
/// the host and libvirt's own words, `op log` shows them, the report says where they are; a
/// password in a URL never reaches the log.
#[test]
fn a_failed_deploy_is_in_the_log_and_passwords_are_not() {
    let dir = setup();
    let d = dir.path();
    // h1's pool has 4 MiB left: the master (192 KiB) fits, the payload disk (8 MiB) does not,
    // and libvirt says so.
    let node = d.join("h1.xml");
    let fill = (100u64 << 30) - (4 << 20);
    let xml = std::fs::read_to_string(&node).unwrap().replace(
        "</pool>",
        &format!("<volume><name>filler</name><capacity unit='bytes'>{fill}</capacity><allocation unit='bytes'>{fill}</allocation></volume></pool>"),
    );
    std::fs::write(&node, xml).unwrap();
    ok(ctl(
        d,
        &[
            "host",
            "set",
            "h1",
            "--network",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.1",
        ],
    ));
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base:1",
            "--definition",
            "shop:1",
            "--server",
            "shop-1=10.77.0.11@h1",
            "--memory",
            "128",
        ],
    ));
    let failed = ctl(d, &["unit", "deploy", "shop"]);
    let (code, stderr) = code(&failed);
    assert_eq!(code, Some(14), "{stderr}");
    assert!(
        stderr.contains("the full log: flotillactl op log"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["op", "list", "--json"]))).unwrap();
    let id = report["operations"][0]["id"].as_i64().unwrap();
    let log: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["op", "log", &id.to_string(), "--json"]))).unwrap();
    let lines: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let failure = lines
        .iter()
        .find(|l| l.contains("step failed"))
        .unwrap_or_else(|| panic!("no failed step in {lines:#?}"));
    for word in [
        "server{name=shop-1 host=h1}",
        "step{name=\"ensure-payload\"}",
        "Not enough free space in pool",
    ] {
        assert!(failure.contains(word), "{word:?} missing in {failure}");
    }
    assert!(
        lines.iter().any(|l| l.contains("libvirt call failed")
            && l.contains("op=\"upload a volume\"")
            && l.contains("ms=")),
        "the libvirt call itself, with its duration: {lines:#?}"
    );

    // Passwords in URLs: a host and a load balancer that cannot be reached, both refused.
    let h = ctl(
        d,
        &[
            "host",
            "add",
            "h9",
            "--uri",
            "qemu+tcp://admin:hunter2@127.0.0.1:1/system",
        ],
    );
    assert_ne!(h.status.code(), Some(0));
    let lb = ctl(
        d,
        &[
            "lb",
            "add",
            "edge",
            "--caddy-admin",
            "http://admin:hunter2@127.0.0.1:1",
            "--caddy-route-id",
            "x",
        ],
    );
    assert_ne!(lb.status.code(), Some(0));
    let mut all = String::new();
    for f in std::fs::read_dir(d.join("logs")).unwrap() {
        all.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    assert!(
        all.contains("admin:***@127.0.0.1:1"),
        "the URLs reached the log, redacted: {all}"
    );
    assert!(!all.contains("hunter2"), "a password reached the log");
}

#[test]
fn update_rollout_history_and_rollback_from_the_command_line() {
    let dir = networked();
    let d = dir.path();
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base:1",
            "--definition",
            "shop",
            "--count",
            "2",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
    let versions = |d: &Path| -> Vec<u64> {
        let u: serde_json::Value =
            serde_json::from_str(&ok(ctl(d, &["unit", "show", "shop", "--json"]))).unwrap();
        u["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["version"].as_u64().unwrap())
            .collect()
    };
    // Wrong, hostile and huge input: a clear error, its exit code, no version recorded.
    let huge = "x".repeat(100_000);
    for (args, exit, says) in [
        (vec!["--cpus", "1"], 2, "nothing to update"),
        (vec!["--image", "../../etc/passwd"], 2, "image"),
        (vec!["--image", "base:v9"], 3, "base:v9"),
        (vec!["--definition", "shop:-1"], 2, "NAME or NAME:VERSION"),
        (vec!["--definition", huge.as_str()], 2, "definition"),
        (vec!["--cpus", "0"], 2, "cpus"),
        (vec!["--memory", "99999999999"], 2, "memory"),
    ] {
        let mut all = vec!["unit", "update", "shop"];
        all.extend(&args);
        let o = ctl(d, &all);
        let (c, err) = code(&o);
        assert_eq!(c, Some(exit), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.len() < 2000,
            "the error does not echo huge input: {}",
            err.len()
        );
    }
    let h: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "history", "shop", "--json"]))).unwrap();
    assert_eq!(h.as_array().unwrap().len(), 1, "nothing was recorded: {h}");

    // A new definition version, recorded as the unit's pending version.
    let def: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["def", "show", "shop", "--json"]))).unwrap();
    let text = def["text"]
        .as_str()
        .unwrap()
        .replacen("[env]", "[env]\nRELEASE = \"2\"", 1);
    let file = d.join("shop-2.toml");
    std::fs::write(&file, text).unwrap();
    ok(ctl(
        d,
        &[
            "def",
            "set-file",
            "shop",
            file.to_str().unwrap(),
            "--base",
            "1",
        ],
    ));
    let out = ok(ctl(d, &["unit", "update", "shop", "--definition", "shop"]));
    assert!(out.contains("v2 is pending"), "{out}");
    assert_eq!(versions(d), [1, 1], "the unit keeps serving on v1");
    let plan: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["unit", "plan", "shop", "rollout", "--json"]))).unwrap();
    assert!(plan["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));
    assert_eq!(plan["batch_size"], 1);
    assert!(
        plan["servers"][0]["note"]
            .as_str()
            .unwrap()
            .starts_with("in place"),
        "{plan}"
    );
    // (The rollout itself runs in the lab tests: the test driver forgets a host's domains
    // when the process that made them ends.)
    let out = ok(ctl(d, &["unit", "history", "shop"]));
    assert!(out.contains("v2 (pending"), "{out}");
    assert!(out.contains("definition shop:v1 → shop:v2"), "{out}");
    assert!(out.contains("RELEASE"), "the definition's diff: {out}");
    let out = ok(ctl(d, &["unit", "show", "shop"]));
    assert!(out.contains("pending v2"), "{out}");
    let o = ctl(d, &["unit", "rollback", "shop"]);
    let (c, err) = code(&o);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("no earlier version v0"), "{err}");
    let o = ctl(d, &["unit", "rollback", "shop", "--to", "42"]);
    let (c, err) = code(&o);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("no earlier version v42"), "{err}");
}

#[test]
fn impact_of_failed_hosts_and_the_n_plus_one_audit() {
    let dir = networked();
    let d = dir.path();
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base:1",
            "--definition",
            "shop",
            "--count",
            "3",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
            "--memory",
            "128",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
    let now: serde_json::Value = serde_json::from_str(&ok(ctl(d, &["impact", "--json"]))).unwrap();
    assert_eq!(now["impact"]["units"][0]["health"], "ok", "{now}");
    // shop-1 and shop-3 are on h1 (spread): losing it leaves 1 of 3, below the minimum of 2.
    let what_if: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["impact", "--fail", "h1", "--json"]))).unwrap();
    let u = &what_if["impact"]["units"][0];
    assert_eq!(u["health"], "below_minimum", "{what_if}");
    assert_eq!(u["in_service_after"], 1);
    // How long replacing them would take, from the unit's deploy in the journal.
    assert!(u["replace_estimate_s"].is_u64(), "{what_if}");
    assert_eq!(u["lost"], serde_json::json!(["shop-1", "shop-3"]));
    let audit = what_if["audit"].as_array().unwrap();
    let h1 = audit.iter().find(|h| h["host"] == "h1").unwrap();
    assert_eq!(h1["below_minimum"], serde_json::json!(["shop"]));
    // The audit alone (`--host` is `--fail`'s other name).
    let only: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["impact", "audit", "--json"]))).unwrap();
    assert_eq!(
        &only, &what_if["audit"],
        "the audit does not depend on a what-if"
    );
    let text = ok(ctl(d, &["impact", "audit"]));
    assert!(
        text.contains("N+1 audit") && !text.contains("REPLACEMENT"),
        "{text}"
    );
    // What would prove each lost server off before a recovery: nothing but the admin here.
    let fences = what_if["fences"].as_array().unwrap();
    assert_eq!(fences.len(), 2, "{what_if}");
    assert!(
        fences.iter().all(|f| f["fence"]["kind"] == "none"),
        "{what_if}"
    );
    let text = ok(ctl(d, &["impact", "--fail", "h1"]));
    assert!(
        text.contains("shop-1 (shop on h1): no fence: h1 has no BMC"),
        "{text}"
    );
    let text = ok(ctl(d, &["impact", "--host", "h1", "--fail", "h2"]));
    assert!(text.contains("If h1, h2 failed"), "{text}");
    assert!(text.contains("OUTAGE"), "{text}");
    // Nothing changed: a what-if only reads.
    let again: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["impact", "--json"]))).unwrap();
    assert_eq!(again, now);
    // Unknown, hostile and huge host names: a clear error of its own kind, never echoing a
    // huge input.
    let huge = "h".repeat(100_000);
    for (bad, exit, says) in [
        ("nosuch", 3, "does not exist"),
        ("h1;rm -rf /", 2, "failed host"),
        (huge.as_str(), 2, "failed host"),
    ] {
        let o = ctl(d, &["impact", "--fail", bad]);
        let (c, err) = code(&o);
        assert_eq!(c, Some(exit), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.len() < 2000, "{}", err.len());
    }
}

/// `[[config]]` templates that would render more than a server's seed can carry — a 64 KiB
/// value used 70,000 times (4.6 GB), a variable used 80,000 times, files that are too much
/// together — are refused when the definition is saved (`set-file`, `import`, the editor),
/// at once, naming the file and the limit; nothing is recorded. A definition that renders up
/// to the limit (with the longest values its variables can take) deploys: the seed holds it.
#[test]
fn config_templates_are_refused_past_what_the_seed_can_carry() {
    let dir = networked();
    let d = dir.path();
    let shown: serde_json::Value =
        serde_json::from_str(&ok(ctl(d, &["def", "show", "shop", "--json"]))).unwrap();
    let text = shown["text"].as_str().unwrap().to_owned();
    let with_config = |env: &str, configs: &[(&str, &str)]| {
        let start = text.find("[env]").unwrap();
        let end = text.find("[resources]").unwrap();
        let mut t = format!("{}[env]\n{env}\n", &text[..start]);
        for (path, template) in configs {
            t.push_str(&format!(
                "[[config]]\npath = \"{path}\"\ntemplate = '''{template}'''\n"
            ));
        }
        t.push_str(&text[end..]);
        t
    };
    let versions = || {
        let h: Vec<serde_json::Value> =
            serde_json::from_str(&ok(ctl(d, &["def", "history", "shop", "--json"]))).unwrap();
        h.len()
    };
    let big = format!("BIG = \"{}\"", "x".repeat(64 * 1024));
    let gigabytes = "{{ env.BIG }}".repeat(70_000);
    let hostnames = "{{hostname}}".repeat(80_000);
    let half = "y".repeat(16 * 1024);
    let cases = [
        with_config(&big, &[("/etc/shop/huge.conf", &gigabytes)]),
        with_config("", &[("/etc/shop/names.conf", &hostnames)]),
        with_config(
            "",
            &[
                ("/etc/shop/a.conf", &half),
                ("/etc/shop/b.conf", "{{ address }}"),
                ("/etc/shop/c.conf", &half),
            ],
        ),
    ];
    let paths = [
        "/etc/shop/huge.conf",
        "/etc/shop/names.conf",
        "/etc/shop/c.conf",
    ];
    for (i, (bad, path)) in cases.iter().zip(paths).enumerate() {
        assert!(bad.len() < 1 << 20, "within the file size limit");
        let f = d.join(format!("bad{i}.toml"));
        std::fs::write(&f, bad).unwrap();
        let began = std::time::Instant::now();
        let o = ctl(d, &["def", "set-file", "shop", f.to_str().unwrap()]);
        let (c, err) = code(&o);
        assert_eq!(c, Some(2), "{err}");
        assert!(
            err.contains(&format!("config.template of \"{path}\"")) && err.contains("32768 bytes"),
            "{err}"
        );
        assert!(
            began.elapsed() < std::time::Duration::from_secs(20),
            "refused without rendering: {:?}",
            began.elapsed()
        );
    }
    // The same through import and the editor.
    let tgz = d.join("shop.tgz");
    ok(ctl(
        d,
        &["def", "export", "shop", "1", tgz.to_str().unwrap()],
    ));
    let imp = d.join("imp");
    std::fs::create_dir_all(&imp).unwrap();
    assert!(std::process::Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&imp)
        .status()
        .unwrap()
        .success());
    let toml = imp.join("definition.toml");
    let _ = std::fs::set_permissions(&toml, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    std::fs::write(&toml, &cases[0]).unwrap();
    let (c, err) = code(&ctl(d, &["def", "import", "shop", imp.to_str().unwrap()]));
    assert!(c == Some(2) && err.contains("/etc/shop/huge.conf"), "{err}");
    let edit = flotillactl(d)
        .args(["def", "edit", "shop"])
        .env("EDITOR", format!("cp {}", d.join("bad1.toml").display()))
        .env_remove("VISUAL")
        .output()
        .unwrap();
    let (c, err) = code(&edit);
    assert!(
        c == Some(2) && err.contains("/etc/shop/names.conf"),
        "{err}"
    );
    assert_eq!(versions(), 1, "nothing was recorded");

    // Up to the limit: saved, and a server's seed carries it.
    let fits = format!("{}{{{{ hostname }}}}", "z".repeat(32 * 1024 - 63));
    let f = d.join("fits.toml");
    std::fs::write(&f, with_config("", &[("/etc/shop/full.conf", &fits)])).unwrap();
    ok(ctl(d, &["def", "set-file", "shop", f.to_str().unwrap()]));
    ok(ctl(
        d,
        &[
            "unit",
            "create",
            "shop",
            "--image",
            "base",
            "--definition",
            "shop",
            "--count",
            "1",
            "--name-pattern",
            "shop-{n}",
            "--addresses",
            "10.77.0.11-10.77.0.20",
        ],
    ));
    ok(ctl(d, &["unit", "deploy", "shop"]));
}
