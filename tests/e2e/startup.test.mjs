// T3: an inventory that cannot be opened is explained in the window instead of a crash.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { byTestId, screenshot, startApp } from "./driver.mjs";

let app;

before(async () => {
  // A plain file where the data directory should be.
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-")), "not-a-directory");
  writeFileSync(file, "x");
  app = await startApp({ dataDir: file });
});

after(async () => {
  await app?.stop();
});

test("an unusable data directory is reported with what to do", async () => {
  const banner = await byTestId(app.browser, "startup-error");
  assert.equal(await banner.getAttribute("data-code"), "inventory");
  assert.match(await banner.getText(), /cannot create the data directory .*not-a-directory/);
  assert.match(await banner.getText(), /choose another data directory/, "says what to do");
  assert.equal(await app.browser.$('[data-testid="hosts-empty"]').isExisting(), false, "no misleading empty list");
  await screenshot(app.browser, "startup-error");
});
