// T3: the unit wizard end to end (master → definition → servers → load balancer → review, which
// is the plan), then the batch buttons Restart, Stop, Start, Scale and Delete with the plan in
// the confirmation (a plan that changed before it ran is shown again, not run) and live
// progress — on two libvirt test-driver hosts prepared with flotillactl.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { byTestId, ctl, preparedInventory, screenshot, startApp } from "./driver.mjs";

let app;

function ok(r) {
  assert.equal(r.status, 0, r.stderr);
  return r;
}

before(async () => {
  app = await startApp({ dataDir: preparedInventory("units", ["h1", "h2"], ["--notes", "test master"]) });
});

after(async () => {
  await app?.stop();
});

async function waitForStates(b, expected) {
  await b.waitUntil(
    async () => {
      const states = await b.$$('[data-testid="server-state"]');
      const texts = [];
      for (const s of states) texts.push(await s.getText());
      return texts.length === expected.length && texts.every((t, i) => t === expected[i]);
    },
    { timeout: 30000, timeoutMsg: `server states never became ${expected}` },
  );
}

async function confirmAction(b, button) {
  await (await byTestId(b, button)).click();
  await byTestId(b, "unit-confirm");
  await (await byTestId(b, "confirm-run")).click();
}

test("create a unit with the wizard, deploy it, stop, start, scale and delete it", async () => {
  const b = app.browser;
  await (await byTestId(b, "nav-units")).click();
  await byTestId(b, "units-empty");
  await (await byTestId(b, "add-unit")).click();
  await (await byTestId(b, "unit-name")).setValue("shop");
  await (await byTestId(b, "unit-next")).click();
  await (await byTestId(b, "unit-count")).setValue("3");
  await (await byTestId(b, "unit-addresses")).setValue("10.77.0.11-10.77.0.30");
  await (await byTestId(b, "unit-memory")).setValue("128");
  await (await byTestId(b, "unit-next")).click();
  await (await byTestId(b, "unit-review")).click();

  // The review is the plan: servers spread over both hosts, with their addresses.
  await byTestId(b, "unit-preview");
  const rows = await b.$$('[data-testid="preview-row"]');
  assert.equal(rows.length, 3);
  const planned = [];
  for (const r of rows) {
    planned.push([await r.getAttribute("data-server"), await r.getAttribute("data-host"), await r.getAttribute("data-address")]);
  }
  assert.deepEqual(planned, [
    ["shop-1", "h1", "10.77.0.11"],
    ["shop-2", "h2", "10.77.0.12"],
    ["shop-3", "h1", "10.77.0.13"],
  ]);
  await screenshot(b, "unit-wizard-review");
  // Nothing is registered before the admin says so.
  assert.deepEqual(JSON.parse(ok(ctl(app.dataDir, "unit", "list", "--json")).stdout), []);

  await (await byTestId(b, "unit-create-deploy")).click();
  await waitForStates(b, ["running", "running", "running"]);
  await b.waitUntil(async () => /deploy of shop finished/.test(await (await byTestId(b, "units-result")).getText()), { timeout: 10000 });
  await screenshot(b, "units-view");

  // The inventory changes while a plan is shown: nothing runs, the plan as it is now is shown
  // to be confirmed again.
  await (await byTestId(b, "unit-restart")).click();
  const shownFirst = await (await byTestId(b, "plan-fingerprint")).getText();
  ok(ctl(app.dataDir, "host", "set", "h1", "--gateway", "10.77.0.254"));
  await (await byTestId(b, "confirm-run")).click();
  await byTestId(b, "plan-changed");
  assert.notEqual(await (await byTestId(b, "plan-fingerprint")).getText(), shownFirst);
  const refused = JSON.parse(ok(ctl(app.dataDir, "op", "list", "--json")).stdout).operations;
  assert.equal(refused.filter((o) => o.state !== "aborted").length, 1, "only the deploy ran");
  assert.ok(refused.filter((o) => o.state === "aborted").every((o) => o.steps.length === 0), "the refusal ran no step");
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /restart of shop finished/.test(await (await byTestId(b, "units-result")).getText()), { timeout: 10000 });

  // Stop one chosen server, then the rest.
  await (await b.$('[data-testid="server-row"][data-server="shop-2"] [data-testid="server-choose"]')).click();
  await (await byTestId(b, "unit-stop")).click();
  assert.match(await (await byTestId(b, "confirm-plan")).getText(), /^shop-2 on h2/);
  await (await byTestId(b, "confirm-run")).click();
  await waitForStates(b, ["running", "stopped", "running"]);
  await confirmAction(b, "unit-stop");
  await waitForStates(b, ["stopped", "stopped", "stopped"]);
  await confirmAction(b, "unit-start");
  await waitForStates(b, ["running", "running", "running"]);

  await (await byTestId(b, "unit-scale")).click();
  await (await byTestId(b, "scale-count")).setValue("4");
  // The dialog shows the plan for the count typed, and runs only that plan.
  let shown = "";
  await b
    .waitUntil(
      async () => {
        shown = await (await byTestId(b, "unit-confirm")).getText();
        return /shop-4 on h\d \(new, 10\.77\.0\.14\)/.test(shown);
      },
      { timeout: 10000 },
    )
    .catch(() => assert.fail(`the scale plan never showed shop-4:\n${shown}`));
  await (await byTestId(b, "confirm-run")).click();
  await waitForStates(b, ["running", "running", "running", "running"]);

  // The journal shows the steps of the operations.
  const journal = JSON.parse(ok(ctl(app.dataDir, "op", "list", "--json")).stdout);
  const kinds = journal.operations.map((o) => o.kind);
  for (const k of ["deploy", "restart", "stop", "start", "scale"]) assert.ok(kinds.includes(k), `${k} in ${kinds}`);
  // Every one succeeded, but for the refused restart (journaled with no step).
  assert.ok(journal.operations.every((o) => o.state === "succeeded" || (o.state === "aborted" && o.steps.length === 0)));

  // The Images view shows which units use a version, and will not delete it.
  await (await byTestId(b, "nav-images")).click();
  await b.waitUntil(async () => /shop v1/.test(await (await byTestId(b, "image-users")).getText()), { timeout: 10000 });
  assert.equal(await (await byTestId(b, "delete-version")).isEnabled(), false);

  await (await byTestId(b, "nav-operations")).click();
  await byTestId(b, "journal-table");
  // The newest operation's log lines (the scale, done by this app): its spans and steps.
  await (await b.$$('[data-testid="op-log"]'))[0].click();
  const lines = await byTestId(b, "op-log-lines");
  await b.waitUntil(async () => /server\{name=shop-4 host=\S+\}:step\{name="wait-healthy"\}: .*step succeeded/.test(await lines.getText()), {
    timeout: 10000,
    timeoutMsg: "the scale's log lines",
  });
  await screenshot(b, "operations-journal");
  await (await byTestId(b, "nav-units")).click();

  // The unit's policy: a bad one is refused with the reason and nothing is saved; two at a
  // time with two staying in service is saved and used below.
  await (await byTestId(b, "unit-policy")).click();
  await byTestId(b, "policy-dialog");
  await (await byTestId(b, "policy-max-unavailable")).setValue("0");
  await (await byTestId(b, "policy-save")).click();
  await b.waitUntil(async () => /max-unavailable/.test(await (await byTestId(b, "policy-error")).getText()), {
    timeout: 10000,
    timeoutMsg: "the policy's error",
  });
  assert.equal(JSON.parse(ok(ctl(app.dataDir, "unit", "show", "shop", "--json")).stdout).policy.max_unavailable, 1);
  await (await byTestId(b, "policy-max-unavailable")).setValue("2");
  await (await byTestId(b, "policy-min-in-service")).setValue("2");
  await (await byTestId(b, "policy-save")).click();
  await b.waitUntil(async () => !(await b.$('[data-testid="policy-dialog"]').isExisting()), { timeout: 10000 });
  const saved = JSON.parse(ok(ctl(app.dataDir, "unit", "show", "shop", "--json")).stdout).policy;
  assert.equal(saved.max_unavailable, 2);
  assert.equal(saved.min_in_service, 2);

  // Update: a new definition version is recorded as pending (nothing changes on the hosts),
  // then the rollout plan (in place, one server at a time) runs with live progress.
  const def = JSON.parse(ok(ctl(app.dataDir, "def", "show", "shop", "--json")).stdout);
  const file = path.join(app.dataDir, "shop-2.toml");
  writeFileSync(file, def.text.replace("[env]", '[env]\nRELEASE = "2"'));
  ok(ctl(app.dataDir, "def", "set-file", "shop", file, "--base", "1"));
  await (await byTestId(b, "unit-update")).click();
  await byTestId(b, "update-wizard");
  await (await byTestId(b, "update-definition")).selectByAttribute("value", "shop:2");
  await b.waitUntil(async () => /RELEASE/.test(await (await byTestId(b, "update-diff")).getText()), {
    timeout: 10000,
    timeoutMsg: "the definition's diff in the Update wizard",
  });
  await screenshot(b, "unit-update-wizard");
  await (await byTestId(b, "update-record")).click();
  await byTestId(b, "unit-confirm");
  assert.match(await (await byTestId(b, "unit-confirm")).getText(), /2 at a time, 2 staying in service/);
  await b.waitUntil(async () => /in place: v1 → v2/.test(await (await byTestId(b, "confirm-plan")).getText()), {
    timeout: 10000,
    timeoutMsg: "the rollout plan",
  });
  assert.match(await (await byTestId(b, "unit-pending")).getText(), /pending v2/);
  const pending = JSON.parse(ok(ctl(app.dataDir, "unit", "show", "shop", "--json")).stdout);
  assert.deepEqual(pending.servers.map((s) => s.version), [1, 1, 1, 1], "still serving on v1");
  await screenshot(b, "unit-rollout-plan");
  // A canary of 2: the plan shown is made again for it, the rollout pauses after them.
  await (await byTestId(b, "rollout-canary")).setValue("2");
  await b.waitUntil(async () => (await b.$$('[data-testid="confirm-plan"] li')).length === 2, {
    timeout: 10000,
    timeoutMsg: "the canary's plan",
  });
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /rollout of shop paused/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the canary never paused",
  });
  assert.match(await (await byTestId(b, "unit-mixed")).getText(), /v2 and v1|v1 and v2/);
  await screenshot(b, "unit-canary-paused");
  // Roll back: the two canaries go back to v1 (the disks they kept), v2 is forgotten.
  await (await byTestId(b, "unit-rollback")).click();
  await b.waitUntil(async () => (await b.$$('[data-testid="confirm-plan"] li')).length === 2, {
    timeout: 10000,
    timeoutMsg: "the rollback plan",
  });
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /rollback of shop finished/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the rollback never finished",
  });
  const back = JSON.parse(ok(ctl(app.dataDir, "unit", "show", "shop", "--json")).stdout);
  assert.deepEqual(back.servers.map((s) => s.version), [1, 1, 1, 1]);
  assert.equal(await b.$('[data-testid="unit-pending"]').isExisting(), false, "nothing pending any more");
  // Recorded again (as v3: numbers are never reused) and rolled out to all four.
  await (await byTestId(b, "unit-update")).click();
  await (await byTestId(b, "update-definition")).selectByAttribute("value", "shop:2");
  await (await byTestId(b, "update-record")).click();
  await b.waitUntil(async () => (await b.$$('[data-testid="confirm-plan"] li')).length === 4, {
    timeout: 10000,
    timeoutMsg: "the plan for all four",
  });
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /rollout of shop finished/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the rollout never finished",
  });
  const shownVersions = [];
  for (const v of await b.$$('[data-testid="server-version"]')) shownVersions.push(await v.getText());
  assert.deepEqual(shownVersions, ["v3", "v3", "v3", "v3"]);
  await screenshot(b, "unit-rolled-out");

  // The history: v3 current (what changed: the definition, with its diff), v1 before it.
  await (await byTestId(b, "unit-history")).click();
  await b.waitUntil(async () => (await b.$$('[data-testid="history-entry"]')).length === 2, {
    timeout: 10000,
    timeoutMsg: "the unit's two versions",
  });
  const newest = await (await b.$('[data-testid="history-entry"][data-version="3"]')).getText();
  assert.match(newest, /current/);
  assert.match(newest, /definition shop:v1 → shop:v2/);
  assert.match(newest, /RELEASE/);
  await screenshot(b, "unit-history");
  await (await b.$('[data-testid="history-dialog"] button')).click();

  // The Impact view: what losing h1 would do (a what-if: nothing changes).
  await (await byTestId(b, "nav-impact")).click();
  const health = async () => (await b.$('[data-testid="impact-unit"][data-unit="shop"]')).getAttribute("data-health");
  await b.waitUntil(async () => (await health()) === "ok", { timeout: 10000, timeoutMsg: "shop is ok now" });
  await (await b.$('[data-testid="impact-fail"][data-host="h1"]')).click();
  // Two of its four servers are on h1; its policy (above) keeps two in service: degraded.
  await b.waitUntil(async () => (await health()) === "degraded", {
    timeout: 10000,
    timeoutMsg: "shop degraded without h1",
  });
  assert.match(await (await b.$('[data-testid="impact-unit"][data-unit="shop"]')).getText(), /4 → 2 of 4/);
  assert.match(await (await b.$('[data-testid="audit-row"][data-host="h1"]')).getText(), /^h1\s*———$/, "losing h1 alone puts no unit below its minimum");
  // The graph is drawn (Cytoscape's canvas layers).
  assert.ok((await b.$$('[data-testid="impact-graph"] canvas')).length > 0, "the impact graph is drawn");
  await screenshot(b, "impact-what-if");
  await (await byTestId(b, "nav-units")).click();

  await confirmAction(b, "unit-delete");
  await byTestId(b, "units-empty");
  assert.deepEqual(JSON.parse(ok(ctl(app.dataDir, "unit", "list", "--json")).stdout), []);
});
