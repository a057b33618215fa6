// T3 on the real lab (skipped, and reported as skipped, when the lab is not up): the wizard adds
// a libvirtd host of the lab by its qemu+unix URI and shows what the real daemon reports.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { byTestId, repo as repoDir, screenshot, startApp } from "./driver.mjs";

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

// A host of the lab dies under the running app: its own monitor finds it failed, the Units
// view marks the lost server and offers Recover, the Impact view shows the host failed now;
// Recover re-creates the server on the other host; the revived host comes back ready.
test("a lab host dies: the app shows it failed, and Recover brings the unit back", { skip: lab && process.getuid?.() === 0 ? false : "needs the lab and root (kill-host)", timeout: 600000 }, async () => {
  const { ctl } = await import("./driver.mjs");
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const os = await import("node:os");
  const { spawnSync } = await import("node:child_process");
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-failure-"));
  const ok = (r) => {
    if (r.status !== 0) throw new Error(`flotillactl ${r.stderr}`);
    return r.stdout;
  };
  const labCtl = (...args) => {
    const r = spawnSync(path.join(repoDir, "tests/rig/lab"), args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`lab ${args.join(" ")}: ${r.stderr}`);
  };
  for (const i of [1, 2]) {
    ok(ctl(dataDir, "host", "add", `lab-h${i}`, "--uri", lab[`FLOTILLA_LAB_H${i}_URI`], "--bridge", "br0"));
    ok(ctl(dataDir, "host", "set", `lab-h${i}`, "--network", lab.FLOTILLA_LAB_NET, "--gateway", lab.FLOTILLA_LAB_GATEWAY, "--domain-type", "qemu"));
  }
  ok(ctl(dataDir, "lb", "add", "lab", "--haproxy-socket", lab.FLOTILLA_LAB_HAPROXY_SOCKET));
  const g = lab.FLOTILLA_LAB_GUEST;
  // An image name of its own: a copy another lab test left on a host is not this one's.
  ok(ctl(dataDir, "image", "import", "tinygone", `${g}/master.qcow2`, "--kernel", `${g}/vmlinuz`, "--initrd", `${g}/initrd.img`, "--cmdline", "console=ttyS0 root=LABEL=root"));
  const def = path.join(dataDir, "definition.toml");
  writeFileSync(
    def,
    '[server]\nname = "gone"\nkind = "busybox httpd"\nport = 8080\n\n[health]\npath = "/health"\ninterval_s = 1\ntimeout_s = 1\nrise = 1\nfall = 2\n\n[hooks]\ninstall = "mkdir -p /srv/www && hostname > /srv/www/index.html && echo ok > /srv/www/health"\nstart = "busybox httpd -p 8080 -h /srv/www"\nstop = "true"\n',
  );
  ok(ctl(dataDir, "def", "create", "gone"));
  ok(ctl(dataDir, "def", "set-file", "gone", def));
  ok(ctl(dataDir, "unit", "create", "gone", "--image", "tinygone:1", "--definition", "gone:2", "--count", "2", "--name-pattern", "gone-{n}", "--addresses", "10.77.0.91-10.77.0.99", "--cpus", "1", "--memory", "128", "--lb", "lab", "--pool", lab.FLOTILLA_LAB_HAPROXY_BACKEND));
  ok(ctl(dataDir, "unit", "deploy", "gone"));
  const shown = JSON.parse(ok(ctl(dataDir, "unit", "show", "gone", "--json")));
  const lost = shown.servers.find((s) => s.host === "lab-h2").name;
  const a = await startApp({ dataDir });
  let killed = false;
  try {
    const b = a.browser;
    await (await byTestId(b, "nav-hosts")).click();
    const states = () => b.$$('[data-testid="host-state"]').map((e) => e.getText());
    const allReady = async () => {
      const s = await states();
      return s.length === 2 && s.every((t) => t === "ready");
    };
    await b.waitUntil(allReady, { timeout: 60000, timeoutMsg: "both lab hosts ready" });
    labCtl("kill-host", "2");
    killed = true;
    await (await byTestId(b, "nav-units")).click();
    const recover = await b.$('[data-testid="unit-recover"]');
    await recover.waitForDisplayed({ timeout: 60000, timeoutMsg: "no Recover button after the host died" });
    assert.match(await recover.getText(), /Recover 1 lost/);
    const row = await b.$(`[data-testid="server-row"][data-server="${lost}"]`);
    assert.match(await row.getText(), /host failed/);
    assert.match(await (await byTestId(b, "unit-health")).getText(), /degraded: 1 of 2 in service/);
    await screenshot(b, "unit-host-failed");
    await (await byTestId(b, "nav-impact")).click();
    const failedNow = await byTestId(b, "impact-host-failed");
    assert.match(await failedNow.getText(), /failed now/);
    const unitRow = await b.$('[data-testid="impact-unit"][data-unit="gone"]');
    assert.equal(await unitRow.getAttribute("data-health"), "degraded");
    // Its HAProxy pool, with what it keeps.
    assert.match(await (await byTestId(b, "impact-pool")).getText(), /be_lab.*gone/s);
    await screenshot(b, "impact-host-failed");
    // Recover from the Impact view: the plan first, with each server's fence. lab-h2 has no
    // BMC and the unit no isolation response, so nothing proves its server is off: the run
    // waits until the admin types the host's name (the host was killed: it is off).
    await (await byTestId(b, "impact-recover")).click();
    const plan = await byTestId(b, "impact-recover-plan");
    const runButton = await byTestId(b, "impact-recover-run");
    assert.match(await plan.getText(), new RegExp(`${lost} on lab-h1 \\(re-created here: its host lab-h2 failed\\)`));
    const fence = await b.$(`[data-testid="fence-row"][data-server="${lost}"]`);
    await fence.waitForDisplayed({ timeout: 10000 });
    assert.equal(await fence.getAttribute("data-kind"), "none");
    assert.match(await fence.getText(), /no fence: lab-h2 has no BMC/);
    assert.equal(await runButton.isEnabled(), false, "no recovery without a fence");
    const typeHost = await b.$('[data-testid="confirm-off-host"][data-host="lab-h2"]');
    await typeHost.setValue("lab-h");
    await b.pause(500);
    assert.equal(await runButton.isEnabled(), false, "a name typed in part confirms nothing");
    await screenshot(b, "recover-fence-confirm");
    await typeHost.setValue("lab-h2");
    await b.waitUntil(async () => (await fence.getAttribute("data-kind")) === "confirmed", { timeout: 10000, timeoutMsg: "the plan did not take the confirmation" });
    assert.match(await fence.getText(), /confirms that lab-h2 is off/);
    await b.waitUntil(() => runButton.isEnabled(), { timeout: 10000, timeoutMsg: "Recover stayed disabled after the confirmation" });
    await runButton.click();
    await b.waitUntil(async () => (await plan.getText()).includes("Recovered gone"), { timeout: 180000, timeoutMsg: "the recovery from the Impact view did not finish" });
    await (await byTestId(b, "nav-units")).click();
    await b.waitUntil(async () => !(await (await b.$('[data-testid="unit-recover"]')).isExisting()) && (await row.getText()).includes("lab-h1"), { timeout: 180000, timeoutMsg: "the server was not recovered onto lab-h1" });
    await screenshot(b, "unit-recovered");
    // The confirmation is the fence on record for this loss of lab-h2, with the admin's name.
    const fenced = JSON.parse(ok(ctl(dataDir, "host", "show", "lab-h2", "--json")));
    assert.equal(fenced.fence?.method, "confirmed", JSON.stringify(fenced.fence));
    assert.equal(fenced.fence.by, os.userInfo().username);
    labCtl("revive-host", "2");
    killed = false;
    await (await byTestId(b, "nav-hosts")).click();
    await b.waitUntil(allReady, { timeout: 60000, timeoutMsg: "lab-h2 did not come back ready" });
    // The recovered server dies on its ready host (its QEMU killed, as a crash): the monitor
    // finds it not running, and the unit offers to restart it in place.
    const destroyed = spawnSync("virsh", ["-q", "-c", lab.FLOTILLA_LAB_H1_URI, "destroy", lost], { encoding: "utf8" });
    assert.equal(destroyed.status, 0, destroyed.stderr);
    await (await byTestId(b, "nav-units")).click();
    const restartDown = await b.$('[data-testid="unit-restart-down"]');
    await restartDown.waitForDisplayed({ timeout: 60000, timeoutMsg: "no Restart button for the server that died" });
    assert.match(await restartDown.getText(), /Restart 1 not running/);
    assert.match(await row.getText(), /not running/);
    // The live power state (pushed every few seconds) agrees before the picture is taken.
    await b.waitUntil(async () => (await row.getText()).includes("shut off"), { timeout: 30000, timeoutMsg: "the live state never said shut off" });
    await screenshot(b, "unit-not-running");
    await restartDown.click();
    await byTestId(b, "unit-confirm");
    await (await byTestId(b, "confirm-run")).click();
    await b.waitUntil(async () => !(await restartDown.isExisting()) && !(await row.getText()).includes("not running"), { timeout: 180000, timeoutMsg: "the server was not restarted in place" });
    const after = JSON.parse(ok(ctl(dataDir, "unit", "show", "gone", "--json")));
    const back = after.servers.find((s) => s.name === lost);
    assert.equal(back.host, "lab-h1");
    assert.equal(back.lb_state, "ready");
  } finally {
    if (killed) labCtl("revive-host", "2");
    await a.stop();
    ctl(dataDir, "unit", "delete", "gone", "--yes", "--force");
    ctl(dataDir, "image", "delete", "tinygone:1");
  }
});
