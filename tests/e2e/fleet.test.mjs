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

/** The `attr` of every element `selector` finds, read at one instant (rows come and go as the list scrolls). */
async function attrs(selector, attr) {
  return b().execute((sel, a) => [...document.querySelectorAll(sel)].map((e) => e.getAttribute(a)), selector, attr);
}

async function rowNames() {
  return attrs('[data-testid="server-row"]', "data-server");
}

async function search(text) {
  const box = await byTestId("units-search");
  await box.setValue(text);
}

/** Puts `text` into the field at once, as a paste does (typing 5,000 characters would search at each). */
async function paste(id, text) {
  await b().execute(
    (sel, value) => {
      const el = document.querySelector(sel);
      el.value = value;
      el.dispatchEvent(new Event("input", { bubbles: true }));
    },
    `[data-testid="${id}"]`,
    text,
  );
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
  const units = new Set(servers.filter((s) => s.host === target.host).map((s) => s.unit)).size;
  const found = await byTestId("units-found");
  await b().waitUntil(async () => (await found.getText()).startsWith(`${onHost.length} servers in ${units} units found`), {
    timeout: 10000,
    timeoutMsg: `search by host: expected ${onHost.length} servers`,
  });
  // Each a unit header and a server row: the rows near the view are rendered, all on that host.
  const shown = await rowNames();
  assert.ok(shown.length > 0 && shown.every((n) => onHost.includes(n)), `${shown} on ${target.host}`);
  // A stopped unit's server, by state, shows the power its host reports.
  const stopped = servers.filter((s) => s.state === "stopped");
  // A name no other name contains (s1 is in s10…s19).
  const one = stopped.find((s) => !servers.some((o) => o !== s && o.name.includes(s.name)));
  assert.ok(one, "a stopped server");
  await search(`${one.name} state:stopped`);
  await waitForRows([one.name], "search by name and state");
  const power = await b().$(`[data-testid="server-row"][data-server="${one.name}"] [data-testid="server-power"]`);
  await b().waitUntil(async () => (await power.getText()) === "shut off", { timeout: 10000, timeoutMsg: "a stopped server's power" });
  await screenshot(b(), "units-fleet-search");

  // Hostile and huge input: plain text that finds nothing, or refused with the reason; the
  // rows shown stay as they were.
  await search("' OR 1=1 --");
  await byTestId("units-none-found");
  await search(target.address);
  await waitForRows([target.name], "search by address again");
  await paste("units-search", "x".repeat(5000));
  await b().waitUntil(async () => /too long/.test(await (await byTestId("units-search-error")).getText()), {
    timeout: 5000,
    timeoutMsg: "a huge search is refused with the reason",
  });
  assert.deepEqual(await rowNames(), [target.name], "a refused search changes nothing shown");
  await paste("units-search", "colour:red");
  await b().waitUntil(async () => /not a field/.test(await (await byTestId("units-search-error")).getText()), {
    timeout: 5000,
    timeoutMsg: "an unknown field is named as such",
  });
  assert.deepEqual(await rowNames(), [target.name], "a refused search changes nothing shown");

  // No search: scrolling reaches the last server, still with a bounded number of rows.
  await search(" "); // blank: no search
  await b().waitUntil(async () => !(await b().$('[data-testid="units-search-error"]').isExisting()), { timeout: 5000 });
  const last = servers.at(-1);
  await scrollToEnd(`[data-testid="server-row"][data-server="${last.name}"]`);
  const atEnd = (await rowNames()).length;
  assert.ok(atEnd < 100, `rows at the end: ${atEnd}`);
});

test("the Hosts view of 60 hosts renders the rows in view, finds a host and scrolls to the last", async () => {
  await (await byTestId("nav-hosts")).click();
  await (await byTestId("hosts-table")).waitForDisplayed({ timeout: 10000 });
  const hostRows = () => attrs('[data-testid="host-row"]', "data-host");
  await b().waitUntil(async () => (await hostRows()).length > 0, { timeout: 10000 });
  const rendered = (await hostRows()).length;
  assert.ok(rendered < HOSTS, `only rows near the view are in the DOM: ${rendered} of ${HOSTS}`);
  await screenshot(b(), "hosts-fleet");

  await (await byTestId("hosts-search")).setValue("fleet-h042");
  await b().waitUntil(async () => JSON.stringify(await hostRows()) === '["fleet-h042"]', { timeout: 10000, timeoutMsg: "search by host name" });
  await (await byTestId("hosts-search")).setValue("state:nonsense-state");
  await b().waitUntil(async () => (await hostRows()).length === 0, { timeout: 10000, timeoutMsg: "nothing found" });
  await paste("hosts-search", "\u0007".repeat(3) + "a".repeat(300));
  await b().waitUntil(async () => /too long/.test(await (await byTestId("hosts-search-error")).getText()), {
    timeout: 5000,
    timeoutMsg: "a huge search is refused with the reason",
  });
  await (await byTestId("hosts-search")).setValue(" "); // blank: no search
  await b().waitUntil(async () => !(await b().$('[data-testid="hosts-search-error"]').isExisting()), { timeout: 5000 });
  await scrollToEnd(`[data-testid="host-row"][data-host="fleet-h${String(HOSTS).padStart(3, "0")}"]`);
  assert.ok((await hostRows()).length < HOSTS);
});
