// T3: a host's BMC in the desktop app — the Add host wizard's optional "Power management (BMC)"
// section with its Check button, and BMC… in the Hosts view (check, remove) — against the
// lab's BMC stand-in (tests/rig/bmc.py) over a libvirt test-driver host, checked through
// flotillactl. The password appears in no window text.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { byTestId as find, ctl, repo, screenshot, startApp } from "./driver.mjs";

const PASSWORD = "E2e-bmc-pw-4411";
let app;
let bmc;
let work;
let node;
let url;

const byTestId = (id) => find(app.browser, id);

before(async () => {
  // Never a developer's own keyring: the app and flotillactl keep the password in a file.
  process.env.FLOTILLA_SECRETS = "file";
  work = mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-bmc-"));
  node = path.join(work, "rack-7.xml");
  copyFileSync(path.join(repo, "tests/fixtures/test-node.xml"), node);
  writeFileSync(path.join(work, "pw"), PASSWORD);
  const portFile = path.join(work, "port");
  bmc = spawn(
    "python3",
    [path.join(repo, "tests/rig/bmc.py"), "--listen", "127.0.0.1:0", "--port-file", portFile, "--system", "1",
      "--name", "rack 7, slot 3", "--user", "admin", "--password-file", path.join(work, "pw"),
      "--off-cmd", `mv '${node}' '${node}.off'`, "--on-cmd", `mv '${node}.off' '${node}'`, "--state-cmd", `test -e '${node}'`],
    { stdio: "ignore" },
  );
  for (let i = 0; i < 100 && !existsSync(portFile); i++) await new Promise((r) => setTimeout(r, 100));
  url = `http://127.0.0.1:${readFileSync(portFile, "utf8").trim()}`;
  app = await startApp();
});

after(async () => {
  await app?.stop();
  bmc?.kill();
});

test("a host is added with its BMC, checked from the wizard, then checked and removed in the Hosts view", async () => {
  await (await byTestId("nav-hosts")).click();
  await (await byTestId("add-host")).click();
  await (await byTestId("host-name")).setValue("rack-7");
  await (await byTestId("host-uri")).setValue(`test://${node}`);
  await (await byTestId("host-bridge")).setValue("br0");
  await (await byTestId("test-connection")).click();
  await byTestId("probe-facts");

  await (await byTestId("bmc-section-toggle")).click();
  // A URL that would send the password in clear is flagged as typed.
  await (await byTestId("bmc-url")).setValue("http://10.0.0.5");
  assert.match(await (await byTestId("bmc-url-problem")).getText(), /in clear/);
  await (await byTestId("bmc-url")).setValue(url);
  await (await byTestId("bmc-system")).setValue("1");
  await (await byTestId("bmc-user")).setValue("admin");
  await (await byTestId("bmc-password")).setValue("wrong");
  await (await byTestId("bmc-check")).click();
  const refused = await byTestId("bmc-error");
  assert.equal(await refused.getAttribute("data-code"), "bmc_failed");
  assert.match(await refused.getText(), /refused: HTTP 401.*check the BMC user and password/);

  await (await byTestId("bmc-password")).setValue(PASSWORD);
  await (await byTestId("bmc-check")).click();
  assert.equal(await (await byTestId("bmc-power")).getText(), "On");
  assert.match(await (await byTestId("bmc-status")).getText(), /rack 7, slot 3/);
  await screenshot(app.browser, "add-host-bmc");
  assert.ok(!(await app.browser.$("body").getText()).includes(PASSWORD), "the password is never shown");

  await (await byTestId("confirm-add")).click();
  const row = await app.browser.$('[data-testid="host-row"][data-host="rack-7"]');
  await row.waitForDisplayed({ timeout: 10000 });
  assert.match(await (await row.$('[data-testid="host-bmc"]')).getText(), new RegExp(`BMC ${url} · system 1`));

  // The other front door: the BMC stored, the password not in what it prints.
  const shown = ctl(app.dataDir, "host", "show", "rack-7", "--json");
  assert.equal(shown.status, 0, shown.stderr);
  const host = JSON.parse(shown.stdout);
  assert.deepEqual([host.bmc.url, host.bmc.system, host.bmc.user], [url, "1", "admin"]);
  assert.equal(host.bmc.password, "file");
  assert.ok(!shown.stdout.includes(PASSWORD));
  const checked = ctl(app.dataDir, "host", "bmc-check", "rack-7", "--json");
  assert.equal(checked.status, 0, checked.stderr);
  assert.equal(JSON.parse(checked.stdout).bmc.power_state, "On");

  // BMC… in the Hosts view: the stored settings are checked, then the BMC is removed.
  await (await row.$('[data-testid="host-bmc-edit"]')).click();
  await byTestId("bmc-form");
  await (await byTestId("bmc-check")).click();
  assert.equal(await (await byTestId("bmc-power")).getText(), "On");
  await (await byTestId("bmc-remove")).click();
  await (await byTestId("bmc-remove-yes")).click();
  await app.browser.waitUntil(async () => (await (await row.$('[data-testid="host-bmc"]')).getText()).startsWith("no BMC"), {
    timeout: 10000,
    timeoutMsg: "the row never said no BMC",
  });
  const after = JSON.parse(ctl(app.dataDir, "host", "show", "rack-7", "--json").stdout);
  assert.equal(after.bmc, null);
  assert.ok(existsSync(node), "checking never powered the host off");
});
