// T3 on the real lab (skipped, and reported as skipped, when the lab is not up): the wizard adds
// a libvirtd host of the lab by its qemu+unix URI and shows what the real daemon reports.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { byTestId, screenshot, startApp } from "./driver.mjs";

const envFile = path.join(process.env.FLOTILLA_LAB_DIR ?? "/var/tmp/flotilla-lab", "lab.env");
const lab = existsSync(envFile)
  ? Object.fromEntries(readFileSync(envFile, "utf8").split("\n").filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)))
  : null;
let app;

before(async () => {
  if (lab) app = await startApp();
});

after(async () => {
  await app?.stop();
});

test("the wizard adds both lab hosts, which report QEMU", { skip: lab ? false : `the lab is not up (${envFile})` }, async () => {
  const b = app.browser;
  await (await byTestId(b, "nav-hosts")).click();
  for (const i of [1, 2]) {
    await (await byTestId(b, "add-host")).click();
    await (await byTestId(b, "host-name")).setValue(`lab-h${i}`);
    await (await byTestId(b, "host-uri")).setValue(lab[`FLOTILLA_LAB_H${i}_URI`]);
    await (await byTestId(b, "host-bridge")).setValue("br0");
    await (await byTestId(b, "test-connection")).click();
    const facts = await byTestId(b, "probe-facts");
    assert.match(await facts.getText(), /QEMU/);
    await (await byTestId(b, "confirm-add")).click();
    const row = await b.$(`[data-testid="host-row"][data-host="lab-h${i}"]`);
    await row.waitForDisplayed({ timeout: 10000 });
    assert.equal(await (await row.$('[data-testid="host-status"]')).getText(), "ok");
  }
  await screenshot(b, "hosts-view-lab");
});
