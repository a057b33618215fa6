// T3: an operation interrupted by a crash (flotillactl dies in the middle of a deploy, simulated
// with the FLOTILLA_FAULT test hook) is shown when the app starts, with Resume and Unwind;
// Unwind undoes it and the unit is back to "not deployed".
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { byTestId, ctl, preparedInventory, repo, screenshot, startApp } from "./driver.mjs";

let app;
let dataDir;

function ok(r) {
  assert.equal(r.status, 0, r.stderr);
  return r;
}

before(async () => {
  dataDir = preparedInventory("crash", ["h1"]);
  ok(ctl(dataDir, "unit", "create", "shop", "--image", "base", "--definition", "shop", "--count", "2", "--name-pattern", "shop-{n}", "--addresses", "10.77.0.11-10.77.0.20", "--memory", "128"));
  const bin = process.env.FLOTILLACTL_BIN ?? path.join(repo, "target/debug/flotillactl");
  const crashed = spawnSync(bin, ["--data-dir", dataDir, "unit", "deploy", "shop"], {
    encoding: "utf8",
    env: { ...process.env, FLOTILLA_FAULT: "crash:shop-2:define" },
  });
  assert.notEqual(crashed.status, 0, "the deploy was meant to die");
  app = await startApp({ dataDir });
});

after(async () => {
  await app?.stop();
});

test("the interrupted deploy is offered for resume or unwind, and unwinds", async () => {
  const b = app.browser;
  const banner = await byTestId(b, "interrupted");
  assert.match(await banner.getText(), /\(deploy of unit shop\) was interrupted/);
  await screenshot(b, "interrupted-operation");
  await (await byTestId(b, "op-unwind")).click();
  await banner.waitForDisplayed({ reverse: true, timeout: 20000 });
  const list = JSON.parse(ok(ctl(dataDir, "op", "list", "--json")).stdout);
  assert.equal(list.interrupted.length, 0);
  const unit = JSON.parse(ok(ctl(dataDir, "unit", "show", "shop", "--json")).stdout);
  assert.deepEqual(unit.servers.map((s) => s.state), ["planned", "planned"]);
});
