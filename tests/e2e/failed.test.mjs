// T3: a deploy that fails (one server's define step fails, by the FLOTILLA_FAULT test hook in
// the app's own process) shows the error with the operation's report from the engine — which
// server failed at which step and what was undone — and the unit is back to "not deployed".
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { byTestId, ctl, preparedInventory, screenshot, startApp } from "./driver.mjs";

let app;

function ok(r) {
  assert.equal(r.status, 0, r.stderr);
  return r;
}

before(async () => {
  const dataDir = preparedInventory("failed", ["h1"]);
  ok(ctl(dataDir, "unit", "create", "shop", "--image", "base", "--definition", "shop", "--count", "2", "--name-pattern", "shop-{n}", "--addresses", "10.77.0.11-10.77.0.20", "--memory", "128"));
  // Read by the app at start (tauri-driver passes its environment on); flotillactl above ran without it.
  process.env.FLOTILLA_FAULT = "fail:shop-2:define";
  try {
    app = await startApp({ dataDir });
  } finally {
    delete process.env.FLOTILLA_FAULT;
  }
});

after(async () => {
  await app?.stop();
});

test("a failed deploy shows what failed and what was undone, and changes nothing", async () => {
  const b = app.browser;
  await (await byTestId(b, "nav-units")).click();
  await (await byTestId(b, "unit-deploy")).click();
  await byTestId(b, "unit-confirm");
  await (await byTestId(b, "confirm-run")).click();

  const box = await byTestId(b, "units-error");
  await b.waitUntil(async () => (await b.$$('[data-testid="op-report-server"]')).length > 0, {
    timeout: 30000,
    timeoutMsg: "the error never showed the operation's report",
  });
  assert.equal(await box.getAttribute("data-code"), "operation_failed");
  const report = await byTestId(b, "op-report");
  assert.match(await report.getText(), /deploy of shop/);
  const failing = await b.$('[data-testid="op-report-server"][data-server="shop-2"]');
  assert.ok(await failing.isExisting(), "shop-2 is in the report");
  const row = await failing.getText();
  assert.match(row, /define/, "the step it failed at");
  assert.match(row, /injected failure/, "and why");
  assert.match(row, /create-disk/, "what was undone");
  await screenshot(b, "unit-deploy-failed");

  const unit = JSON.parse(ok(ctl(app.dataDir, "unit", "show", "shop", "--json")).stdout);
  assert.deepEqual(unit.servers.map((s) => s.state), ["planned", "planned"]);
});
