// Starts tauri-driver (which drives WebKitWebDriver) and opens a WebDriver session on the real
// `flotilla` binary. The caller must run under an X server (xvfb-run).
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { remote } from "webdriverio";

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const outputDir = path.join(repo, "tests/e2e/output");

/** Saves a screenshot of what the window shows now to tests/e2e/output/NAME.png (and to docs/
 * when FLOTILLA_UPDATE_SCREENSHOTS is set). */
export async function screenshot(browser, name) {
  mkdirSync(outputDir, { recursive: true });
  const file = path.join(outputDir, `${name}.png`);
  // WebKit hands back the last painted frame: let it paint what the DOM now holds.
  await browser.execute(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))));
  await browser.pause(300);
  await browser.saveScreenshot(file);
  if (process.env.FLOTILLA_UPDATE_SCREENSHOTS) copyFileSync(file, path.join(repo, "docs", `${name}.png`));
}

/** The element with data-testid=ID, once it is displayed. */
export async function byTestId(browser, id) {
  const el = await browser.$(`[data-testid="${id}"]`);
  await el.waitForDisplayed({ timeout: 10000 });
  return el;
}

function findTool(name, envVar) {
  if (process.env[envVar]) return process.env[envVar];
  const cargoBin = path.join(os.homedir(), ".cargo/bin", name);
  if (existsSync(cargoBin)) return cargoBin;
  return name;
}

async function waitForPort(port, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.end();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`tauri-driver did not listen on port ${port} within ${ms} ms`);
}

/** Runs flotillactl against the same data directory as the app. */
export function ctl(dataDir, ...args) {
  const bin = process.env.FLOTILLACTL_BIN ?? path.join(repo, "target/debug/flotillactl");
  const r = spawnSync(bin, ["--data-dir", dataDir, ...args], { encoding: "utf8" });
  if (r.error) throw r.error;
  return r;
}

/** Starts the app on `dataDir` (default: a fresh one); returns {browser, dataDir, stop}. */
/** A new data directory with test-driver hosts (on the lab's network), a 64 MiB master
 * `base` and the definition `shop`, prepared with flotillactl. */
export function preparedInventory(prefix, hosts = ["h1", "h2"], importArgs = []) {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `flotilla-e2e-${prefix}-`));
  const ok = (r) => {
    if (r.status !== 0) throw new Error(`flotillactl failed: ${r.stderr}`);
  };
  for (const h of hosts) {
    const node = path.join(dataDir, `${h}.xml`);
    copyFileSync(path.join(repo, "tests/fixtures/test-node.xml"), node);
    ok(ctl(dataDir, "host", "add", h, "--uri", `test://${node}`, "--bridge", "br0"));
    ok(ctl(dataDir, "host", "set", h, "--network", "10.77.0.0/24", "--gateway", "10.77.0.1"));
  }
  const disk = path.join(dataDir, "master.qcow2");
  if (spawnSync("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]).status !== 0) throw new Error("qemu-img create failed");
  ok(ctl(dataDir, "image", "import", "base", disk, ...importArgs));
  ok(ctl(dataDir, "def", "create", "shop"));
  return dataDir;
}

export async function startApp({ dataDir = mkdtempSync(path.join(os.tmpdir(), "flotilla-e2e-")) } = {}) {
  const application = process.env.FLOTILLA_BIN ?? path.join(repo, "target/debug/flotilla");
  if (!existsSync(application)) throw new Error(`no app binary at ${application}; build it first`);
  const port = 4444 + Math.floor(Math.random() * 500);
  const driver = spawn(findTool("tauri-driver", "TAURI_DRIVER"), ["--port", String(port), "--native-port", String(port + 1000)], {
    env: { ...process.env, FLOTILLA_DATA_DIR: dataDir },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const stopDriver = () => {
    if (driver.exitCode === null) driver.kill();
  };
  try {
    await waitForPort(port, 15000);
    const browser = await remote({
      hostname: "127.0.0.1",
      port,
      logLevel: "warn",
      capabilities: { "tauri:options": { application } },
    });
    return {
      browser,
      dataDir,
      async stop() {
        try {
          await browser.deleteSession();
        } finally {
          stopDriver();
        }
      },
    };
  } catch (e) {
    stopDriver();
    throw e;
  }
}
