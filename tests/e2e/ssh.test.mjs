// T3 on the real lab over SSH (skipped, and reported as skipped, when the lab is not up): the
// Add host wizard reads the lab host's SSH key, shows its SHA256 fingerprint as ssh prints it,
// stores nothing until the admin trusts it, then connects over qemu+ssh and adds the host.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { byTestId, repo as repoDir, screenshot, startApp } from "./driver.mjs";

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

// The same host with a new key (as after a reinstall, or someone in between): the wizard warns,
// names both fingerprints, offers no way on, and the trusted key stays.
test("a changed SSH host key is shown as a warning and cannot be trusted from the wizard", { skip: skip || (process.getuid?.() === 0 ? false : "needs root (lab rekey-host)"), timeout: 120000 }, async () => {
  const { spawnSync } = await import("node:child_process");
  const b = app.browser;
  const knownHosts = path.join(app.dataDir, "ssh/known_hosts");
  const trusted = readFileSync(knownHosts, "utf8");
  const r = spawnSync(path.join(repoDir, "tests/rig/lab"), ["rekey-host", "1"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const now = Object.fromEntries(readFileSync(envFile, "utf8").split("\n").filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)));
  await (await byTestId(b, "add-host")).click();
  await (await byTestId(b, "host-name")).setValue("ssh-h1-again");
  await (await byTestId(b, "host-uri")).setValue(now.FLOTILLA_LAB_H1_SSH_URI);
  await (await byTestId(b, "host-bridge")).setValue("br0");
  await (await byTestId(b, "test-connection")).click();
  const warning = await byTestId(b, "host-key-changed");
  const text = await warning.getText();
  assert.match(text, /has changed/);
  assert.ok(text.includes(now.FLOTILLA_LAB_H1_SSH_FINGERPRINT) && text.includes(lab.FLOTILLA_LAB_H1_SSH_FINGERPRINT), text);
  assert.equal(await (await b.$('[data-testid="trust-host-key"]')).isExisting(), false, "no way to trust a changed key here");
  await screenshot(b, "add-host-key-changed");
  assert.equal(readFileSync(knownHosts, "utf8"), trusted, "the trusted key stays");
});
