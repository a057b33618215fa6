// T3: a rollout paused from the GUI while it runs, then resumed. The app is a test build whose
// unit steps each wait 400 ms (FLOTILLA_STEP_DELAY_MS, test builds only), so that there is
// time to click Pause; two libvirt test-driver hosts prepared with flotillactl.
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
  const dataDir = preparedInventory("rollout");
  ok(ctl(dataDir, "unit", "create", "shop", "--image", "base:1", "--definition", "shop", "--count", "3", "--name-pattern", "shop-{n}", "--addresses", "10.77.0.11-10.77.0.20", "--memory", "128", "--min-healthy-time", "0"));
  process.env.FLOTILLA_STEP_DELAY_MS = "400";
  try {
    app = await startApp({ dataDir });
  } finally {
    delete process.env.FLOTILLA_STEP_DELAY_MS;
  }
});

after(async () => {
  await app?.stop();
});

async function versions(b) {
  const out = [];
  for (const v of await b.$$('[data-testid="server-version"]')) out.push(await v.getText());
  return out;
}

test("a rollout paused while it runs stops at a safe point, and resumes", async () => {
  const b = app.browser;
  await (await byTestId(b, "nav-units")).click();
  await (await byTestId(b, "unit-deploy")).click();
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /deploy of shop finished/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the deploy never finished",
  });

  // A new definition version, recorded as pending from the command line.
  const def = JSON.parse(ok(ctl(app.dataDir, "def", "show", "shop", "--json")).stdout);
  const file = path.join(app.dataDir, "shop-2.toml");
  writeFileSync(file, def.text.replace("[env]", '[env]\nRELEASE = "2"'));
  ok(ctl(app.dataDir, "def", "set-file", "shop", file, "--base", "1"));
  ok(ctl(app.dataDir, "unit", "update", "shop", "--definition", "shop"));
  await (await byTestId(b, "units-refresh")).click();

  await (await byTestId(b, "unit-rollout")).click();
  await byTestId(b, "unit-confirm");
  await (await byTestId(b, "confirm-run")).click();
  // While the first server is being updated (its progress shows): Pause.
  await b.waitUntil(async () => (await (await byTestId(b, "server-progress")).getText()) !== "", {
    timeout: 10000,
    timeoutMsg: "the rollout's progress",
  });
  await (await byTestId(b, "unit-pause")).click();
  await screenshot(b, "unit-rollout-pausing");
  await b.waitUntil(async () => /rollout of shop paused/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the rollout never paused",
  });
  assert.deepEqual(await versions(b), ["v2", "v1", "v1"], "one server, then the safe point");
  await byTestId(b, "unit-mixed");

  await (await byTestId(b, "unit-rollout")).click();
  await byTestId(b, "unit-confirm");
  await (await byTestId(b, "confirm-run")).click();
  await b.waitUntil(async () => /rollout of shop finished/.test(await (await byTestId(b, "units-result")).getText()), {
    timeout: 60000,
    timeoutMsg: "the rollout never finished",
  });
  assert.deepEqual(await versions(b), ["v2", "v2", "v2"]);
});
