// T3: the Add-host wizard on the real desktop binary, checked against the inventory through
// flotillactl. Run by `npm run test:e2e` (under xvfb-run).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { byTestId as find, ctl, repo, screenshot, startApp } from "./driver.mjs";

const nodeXml = path.join(repo, "tests/fixtures/test-node.xml");
let app;

const shot = (name) => screenshot(app.browser, name);
const byTestId = (id) => find(app.browser, id);

async function rows() {
  return app.browser.$$('[data-testid="host-row"]').length;
}

before(async () => {
  app = await startApp();
});

after(async () => {
  await app?.stop();
});

test("adding a test-driver host through the wizard lists it", async () => {
  await (await byTestId("nav-hosts")).click();
  await byTestId("hosts-empty");
  await (await byTestId("add-host")).click();
  await (await byTestId("host-name")).setValue("lab-1");
  await (await byTestId("host-uri")).setValue(`test://${nodeXml}`);
  await (await byTestId("host-bridge")).setValue("br0");
  await (await byTestId("test-connection")).click();

  const facts = await byTestId("probe-facts");
  assert.match(await (await byTestId("fact-cpus")).getText(), /^4 ×/);
  assert.ok((await facts.getText()).includes("100.0 GiB"), "shows the pool's size");
  await shot("add-host-review");

  await (await byTestId("confirm-add")).click();
  const row = await app.browser.$('[data-testid="host-row"][data-host="lab-1"]');
  await row.waitForDisplayed({ timeout: 10000 });
  assert.equal(await (await row.$('[data-testid="host-status"]')).getText(), "ok");
  assert.equal(await rows(), 1);

  // The other front door sees what the GUI stored.
  const listed = ctl(app.dataDir, "host", "list", "--json");
  assert.equal(listed.status, 0, listed.stderr);
  const hosts = JSON.parse(listed.stdout);
  assert.deepEqual(hosts.map((h) => [h.name, h.bridge, h.status]), [["lab-1", "br0", "ok"]]);

  // The app's own monitor (started with the app) probes the new host: its state badge turns
  // ready when the monitor's event arrives, and the other front door reads the same state.
  const state = await row.$('[data-testid="host-state"]');
  await app.browser.waitUntil(async () => (await state.getText()) === "ready", {
    timeout: 15000,
    timeoutMsg: "the host's state badge never said ready",
  });
  assert.match(await (await byTestId("monitor-status")).getText(), /Monitored by this app: a dead host is failed within 6 s/);
  const monitored = JSON.parse(ctl(app.dataDir, "host", "list", "--json").stdout);
  assert.equal(monitored[0].monitor.state, "ready");
  await shot("hosts-view");
});

test("a bad name is flagged as you type and a bad URI shows libvirt's error; nothing is added", async () => {
  await (await byTestId("add-host")).click();
  await (await byTestId("host-name")).setValue("Bad_Name");
  assert.match(await (await byTestId("name-problem")).getText(), /not allowed/);
  assert.equal(await (await byTestId("test-connection")).isEnabled(), false);

  await (await byTestId("host-name")).setValue("lab-2");
  await (await byTestId("host-uri")).setValue("test:///nonexistent/flotilla-e2e.xml");
  await (await byTestId("test-connection")).click();
  const error = await byTestId("wizard-error");
  assert.equal(await error.getAttribute("data-code"), "unreachable");
  const text = await error.getText();
  assert.ok(text.includes("test:///nonexistent/flotilla-e2e.xml"), `names the URI: ${text}`);
  assert.ok(text.includes("failed to parse"), `gives libvirt's reason: ${text}`);
  await shot("add-host-error");

  await app.browser.keys("Escape");
  await (await app.browser.$('[data-testid="add-host-wizard"]')).waitForDisplayed({ reverse: true, timeout: 5000 });
  assert.equal(await rows(), 1, "the list is unchanged");
  const listed = JSON.parse(ctl(app.dataDir, "host", "list", "--json").stdout);
  assert.deepEqual(listed.map((h) => h.name), ["lab-1"], "nothing was stored");
});

test("check and remove from the Hosts view; the Operations view lists every change", async () => {
  const row = await app.browser.$('[data-testid="host-row"][data-host="lab-1"]');
  await (await row.$('[data-testid="host-check"]')).click();
  await (await row.$('[data-testid="host-check"]')).waitForDisplayed({ timeout: 10000 });
  assert.equal(await (await row.$('[data-testid="host-status"]')).getText(), "ok");

  await (await row.$('[data-testid="host-remove"]')).click();
  await (await byTestId("confirm-remove")).click();
  await byTestId("hosts-empty");
  assert.deepEqual(JSON.parse(ctl(app.dataDir, "host", "list", "--json").stdout), []);

  await (await byTestId("nav-operations")).click();
  await byTestId("audit-table");
  const actions = await app.browser.$$('[data-testid="audit-row"] td:nth-child(3)').map((td) => td.getText());
  assert.deepEqual(actions, ["host.remove", "host.check", "host.add"]);
  await shot("operations-view");
});
