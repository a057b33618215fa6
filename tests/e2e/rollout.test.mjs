// T3: a rollout paused from the GUI while it runs, then resumed. The app is a test build whose
// unit steps each wait 400 ms (FLOTILLA_STEP_DELAY_MS, test builds only), so that there is
// time to click Pause; two libvirt test-driver hosts prepared with flotillactl.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { byTestId, ctl, repo, screenshot, startApp } from "./driver.mjs";

let app;

function ok(r) {
  assert.equal(r.status, 0, r.stderr);
  return r;
}

before(async () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-rollout-"));
  for (const h of ["h1", "h2"]) {
    const node = path.join(dataDir, `${h}.xml`);
    copyFileSync(path.join(repo, "tests/fixtures/test-node.xml"), node);
    ok(ctl(dataDir, "host", "add", h, "--uri", `test://${node}`, "--bridge", "br0"));
    ok(ctl(dataDir, "host", "set", h, "--network", "10.77.0.0/24", "--gateway", "10.77.0.1"));
  }
  const disk = path.join(dataDir, "master.qcow2");
  assert.equal(spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]).status, 0);
  ok(ctl(dataDir, "image", "import", "base", disk));
  ok(ctl(dataDir, "def", "create", "shop"));
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
