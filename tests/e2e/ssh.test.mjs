// T3 on the real lab over SSH (skipped, and reported as skipped, when the lab is not up): the
// Add host wizard reads the lab host's SSH key, shows its SHA256 fingerprint as ssh prints it,
// stores nothing until the admin trusts it, then connects over qemu+ssh and adds the host.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { byTestId, screenshot, startApp } from "./driver.mjs";

const envFile = path.join(process.env.FLOTILLA_LAB_DIR ?? "/var/tmp/flotilla-lab", "lab.env");
const lab = existsSync(envFile)
  ? Object.fromEntries(readFileSync(envFile, "utf8").split("\n").filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)))
  : null;
const skip = lab?.FLOTILLA_LAB_H1_SSH_URI ? false : `the lab (with SSH) is not up (${envFile})`;
let app;

before(async () => {
  if (!skip) app = await startApp();
});

after(async () => {
  await app?.stop();
});

test("the wizard shows an unknown SSH host key's fingerprint and adds the host once it is trusted", { skip, timeout: 120000 }, async () => {
  const b = app.browser;
  const knownHosts = path.join(app.dataDir, "ssh/known_hosts");
  await (await byTestId(b, "nav-hosts")).click();
  await (await byTestId(b, "add-host")).click();
  await (await byTestId(b, "host-name")).setValue("ssh-h1");
  await (await byTestId(b, "host-uri")).setValue(lab.FLOTILLA_LAB_H1_SSH_URI);
  await (await byTestId(b, "host-bridge")).setValue("br0");
  await (await byTestId(b, "test-connection")).click();

  const fp = await byTestId(b, "host-key-fingerprint");
  assert.equal(await fp.getText(), lab.FLOTILLA_LAB_H1_SSH_FINGERPRINT, "the fingerprint as ssh-keygen -lf prints it");
  assert.match(await (await byTestId(b, "host-key")).getText(), /ED25519/);
  assert.ok(!existsSync(knownHosts) || readFileSync(knownHosts, "utf8") === "", "nothing stored before the admin trusts the key");
  await screenshot(b, "add-host-fingerprint");

  await (await byTestId(b, "trust-host-key")).click();
  const facts = await byTestId(b, "probe-facts");
  assert.match(await facts.getText(), /QEMU/);
  assert.equal(await (await byTestId(b, "fact-hostname")).getText(), "flotilla-h1", "facts read over SSH from the lab host");
  assert.match(readFileSync(knownHosts, "utf8"), new RegExp(`^${lab.FLOTILLA_LAB_H1_SSH_HOST.replaceAll(".", "\\.")} ssh-ed25519 `));
  await (await byTestId(b, "confirm-add")).click();
  const row = await b.$('[data-testid="host-row"][data-host="ssh-h1"]');
  await row.waitForDisplayed({ timeout: 20000 });
  assert.equal(await (await row.$('[data-testid="host-status"]')).getText(), "ok");
});
