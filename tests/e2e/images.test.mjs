// T3: importing a disk image by dropping it (driven through the app's own drop handler with a
// real path), and — with the lab up — the New-master wizard up to a running builder.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { byTestId, ctl, screenshot, startApp } from "./driver.mjs";

const envFile = path.join(process.env.FLOTILLA_LAB_DIR ?? "/var/tmp/flotilla-lab", "lab.env");
const lab = existsSync(envFile)
  ? Object.fromEntries(readFileSync(envFile, "utf8").split("\n").filter((l) => l.includes("=")).map((l) => l.split(/=(.*)/s).slice(0, 2)))
  : null;
let app;

before(async () => {
  app = await startApp();
});

after(async () => {
  await app?.stop();
});

test("a dropped qcow2 is imported with progress and shows up as v1", async () => {
  const b = app.browser;
  const dir = mkdtempSync(path.join(os.tmpdir(), "flotilla-drop-"));
  const file = path.join(dir, "Debian 12 Cloud.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", file, "64M"]);
  const notAnImage = path.join(dir, "readme.txt");
  execFileSync("sh", ["-c", `yes 'not a disk' | head -c 100000 > '${notAnImage}'`]);

  await (await byTestId(b, "nav-images")).click();
  await byTestId(b, "images-empty");
  await b.execute((paths) => window.__flotillaDrop(paths), [file, notAnImage]);
  const rows = await b.$$('[data-testid="import-row"]');
  assert.equal(rows.length, 2);
  assert.equal(await (await rows[0].$('[data-testid="import-name"]')).getValue(), "debian-12-cloud", "name from the file");
  await (await byTestId(b, "import-all")).click();
  await b.waitUntil(async () => (await rows[0].getAttribute("data-state")) === "done", { timeout: 20000 });
  await b.waitUntil(async () => (await rows[1].getAttribute("data-state")) === "failed", { timeout: 20000 });
  assert.match(await (await rows[1].$('[data-testid="import-error"]')).getText(), /not a disk image/);
  const card = await b.$('[data-testid="image-card"][data-image="debian-12-cloud"]');
  await card.waitForDisplayed({ timeout: 10000 });
  assert.equal(await card.$$('[data-testid="image-version"]').length, 1);
  await screenshot(b, "images-import");

  const listed = JSON.parse(ctl(app.dataDir, "image", "list", "--json").stdout);
  assert.deepEqual(listed.map((v) => `${v.image}:${v.version}`), ["debian-12-cloud:1"], "only the real image was recorded");
});

test("the New-master wizard starts a builder that the Images view shows running", { skip: lab ? false : `the lab is not up (${envFile})` }, async () => {
  const b = app.browser;
  const guest = lab.FLOTILLA_LAB_GUEST;
  let r = ctl(app.dataDir, "host", "add", "lab-h1", "--uri", lab.FLOTILLA_LAB_H1_URI, "--bridge", "br0");
  assert.equal(r.status, 0, r.stderr);
  r = ctl(app.dataDir, "image", "import", "tiny", `${guest}/master.qcow2`, "--kernel", `${guest}/vmlinuz`, "--initrd", `${guest}/initrd.img`, "--cmdline", "console=ttyS0 root=LABEL=root");
  assert.equal(r.status, 0, r.stderr);
  await (await byTestId(b, "nav-hosts")).click();
  await (await byTestId(b, "nav-images")).click();
  await (await byTestId(b, "new-master")).click();
  await (await byTestId(b, "builder-image")).setValue("tiny");
  await (await byTestId(b, "builder-from")).selectByAttribute("value", "tiny:1");
  await (await byTestId(b, "builder-memory")).setValue("128");
  await (await byTestId(b, "builder-script")).setValue("echo edited-in-the-builder");
  await (await byTestId(b, "builder-start")).click();
  const card = await b.$('[data-testid="builder-card"][data-image="tiny"]');
  await card.waitForDisplayed({ timeout: 60000 });
  assert.equal(await (await card.$('[data-testid="builder-state"]')).getText(), "running");
  const serial = await card.$('[data-testid="builder-serial"]');
  await b.waitUntil(async () => (await serial.getText()).includes("runcmd: echo edited-in-the-builder"), { timeout: 90000, interval: 1000 });
  await screenshot(b, "images-builder");
  // Open console starts the viewer on this builder (virt-viewer installed by the setup).
  const viewers = () => execFileSync("pgrep", ["-a", "-f", "virt-viewer|remote-viewer"], { encoding: "utf8" }).split("\n").filter((l) => l.includes("viewer") && !l.includes("pgrep"));
  await (await card.$('[data-testid="builder-open-console"]')).click();
  let opened = [];
  await b.waitUntil(
    async () => {
      try {
        opened = viewers();
      } catch {
        opened = [];
      }
      return opened.some((l) => l.includes("tiny") || l.includes("vnc://"));
    },
    { timeout: 20000, timeoutMsg: "Open console started no viewer" },
  );
  for (const l of opened) execFileSync("kill", [l.split(" ")[0]]);

  await (await card.$('[data-testid="builder-abort"]')).click();
  await card.waitForDisplayed({ reverse: true, timeout: 30000 });
  assert.deepEqual(JSON.parse(ctl(app.dataDir, "image", "builders", "--json").stdout), [], "the builder is gone");
});
