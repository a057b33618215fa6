// T3: a fleet-sized inventory in the real app — the Units and Hosts views render only the rows
// in view (virtualized), search finds a server by address, MAC and host and a host by name,
// hostile and huge searches are refused without changing what is shown, scrolling reaches the
// last row, and live power state arrives pushed by the app's live loop. The fleet is written
// by tests/src/bin/gen-fleet.rs: libvirt test-driver hosts standing in for real ones.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { byTestId as find, ctl, repo, screenshot, startApp } from "./driver.mjs";

const HOSTS = 60;
const UNITS = 30;
const PER_UNIT = 20;
let app;
let servers;

before(async () => {
  const gen = process.env.GEN_FLEET_BIN ?? path.join(repo, "target/debug/gen-fleet");
  if (!existsSync(gen)) {
    const built = spawnSync("cargo", ["build", "-p", "flotilla-tests", "--bin", "gen-fleet"], { cwd: repo, stdio: "inherit" });
    assert.equal(built.status, 0, "cargo build of gen-fleet");
  }
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-fleet-"));
  const r = spawnSync(gen, [dataDir, String(HOSTS), String(UNITS), String(PER_UNIT), "fleet"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const listed = ctl(dataDir, "unit", "list", "--json");
  assert.equal(listed.status, 0, listed.stderr);
  servers = JSON.parse(listed.stdout).flatMap((u) => u.servers);
  assert.equal(servers.length, UNITS * PER_UNIT);
  app = await startApp({ dataDir });
});

after(async () => {
  await app?.stop();
});

const b = () => app.browser;
const byTestId = (id) => find(app.browser, id);

async function rowNames() {
  return b().$$('[data-testid="server-row"]').map((r) => r.getAttribute("data-server"));
}

async function search(text) {
  const box = await byTestId("units-search");
  await box.setValue(text);
}

async function waitForRows(expected, what) {
  await b().waitUntil(async () => JSON.stringify((await rowNames()).sort()) === JSON.stringify([...expected].sort()), {
    timeout: 10000,
    timeoutMsg: `${what}: rows never became ${expected}`,
  });
}

/** Scrolls the page to its end until `selector` is in the DOM (row heights are learnt as rows render). */
async function scrollToEnd(selector) {
  await b().waitUntil(
    async () => {
      await b().execute(() => {
        const m = document.querySelector("main");
        m.scrollTop = m.scrollHeight;
      });
      return (await b().$$(selector).length) > 0;
    },
    { timeout: 15000, interval: 300, timeoutMsg: `scrolling never reached ${selector}` },
  );
}

test("the Units view of 600 servers renders a screenful, finds by address, MAC and host, and scrolls to the last", async () => {
  await (await byTestId("unit-card")).waitForDisplayed({ timeout: 20000 });
  const list = await byTestId("units-list");
  assert.equal(Number(await list.getAttribute("data-rows")), UNITS + UNITS * PER_UNIT, "every unit and server is in the list");
  const rendered = (await rowNames()).length;
  assert.ok(rendered > 5 && rendered < 100, `only rows near the view are in the DOM: ${rendered} of ${UNITS * PER_UNIT}`);

  // Live power arrives as an event from the app's live loop: every 10th unit was stopped.
  const first = servers[0];
  const firstPower = await b().$(`[data-testid="server-row"][data-server="${first.name}"] [data-testid="server-power"]`);
  await b().waitUntil(async () => (await firstPower.getText()) === "running", { timeout: 20000, timeoutMsg: "no live power state arrived" });
  await screenshot(b(), "units-fleet");

  // By address: exactly that server.
  const target = servers[UNITS * PER_UNIT - 7];
  await search(target.address);
  await waitForRows([target.name], "search by address");
  assert.match(await (await byTestId("units-found")).getText(), /^1 servers in 1 units found/);
  // By MAC, typed in capitals with dashes.
  await search(target.mac.toUpperCase().replaceAll(":", "-"));
  await waitForRows([target.name], "search by MAC");
  // By host: every server the inventory placed there (and only those).
  const onHost = servers.filter((s) => s.host === target.host).map((s) => s.name);
  await search(`host:${target.host}`);
  await waitForRows(onHost, "search by host");
  // A stopped unit's server, by state, shows the power its host reports.
  const stopped = servers.filter((s) => s.state === "stopped");
  assert.ok(stopped.length > 0);
  await search(`${stopped[0].name} state:stopped`);
  await waitForRows([stopped[0].name], "search by name and state");
  const power = await b().$(`[data-testid="server-row"][data-server="${stopped[0].name}"] [data-testid="server-power"]`);
  await b().waitUntil(async () => (await power.getText()) === "shut off", { timeout: 10000, timeoutMsg: "a stopped server's power" });
  await screenshot(b(), "units-fleet-search");

  // Hostile and huge input: plain text that finds nothing, or refused with the reason; the
  // rows shown stay as they were.
  await search("' OR 1=1 --");
  await byTestId("units-none-found");
  await search(target.address);
  await waitForRows([target.name], "search by address again");
  await search("x".repeat(5000));
  const err = await byTestId("units-search-error");
  assert.match(await err.getText(), /too long/);
  assert.deepEqual(await rowNames(), [target.name], "a refused search changes nothing shown");
  await search("colour:red");
  assert.match(await (await byTestId("units-search-error")).getText(), /not a field/);

  // No search: scrolling reaches the last server, still with a bounded number of rows.
  await search("");
  await b().waitUntil(async () => !(await b().$('[data-testid="units-search-error"]').isExisting()), { timeout: 5000 });
  const last = servers.at(-1);
  await scrollToEnd(`[data-testid="server-row"][data-server="${last.name}"]`);
  const atEnd = (await rowNames()).length;
  assert.ok(atEnd < 100, `rows at the end: ${atEnd}`);
});

test("the Hosts view of 60 hosts renders the rows in view, finds a host and scrolls to the last", async () => {
  await (await byTestId("nav-hosts")).click();
  await (await byTestId("hosts-table")).waitForDisplayed({ timeout: 10000 });
  const hostRows = () => b().$$('[data-testid="host-row"]').map((r) => r.getAttribute("data-host"));
  await b().waitUntil(async () => (await hostRows()).length > 0, { timeout: 10000 });
  const rendered = (await hostRows()).length;
  assert.ok(rendered < HOSTS, `only rows near the view are in the DOM: ${rendered} of ${HOSTS}`);
  await screenshot(b(), "hosts-fleet");

  await (await byTestId("hosts-search")).setValue("fleet-h042");
  await b().waitUntil(async () => JSON.stringify(await hostRows()) === '["fleet-h042"]', { timeout: 10000, timeoutMsg: "search by host name" });
  await (await byTestId("hosts-search")).setValue("state:nonsense-state");
  await b().waitUntil(async () => (await hostRows()).length === 0, { timeout: 10000, timeoutMsg: "nothing found" });
  await (await byTestId("hosts-search")).setValue("\u0007".repeat(3) + "a".repeat(300));
  assert.match(await (await byTestId("hosts-search-error")).getText(), /too long|control character/);
  await (await byTestId("hosts-search")).setValue("");
  await b().waitUntil(async () => !(await b().$('[data-testid="hosts-search-error"]').isExisting()), { timeout: 5000 });
  await scrollToEnd(`[data-testid="host-row"][data-host="fleet-h${String(HOSTS).padStart(3, "0")}"]`);
  assert.ok((await hostRows()).length < HOSTS);
});
