// Benchmark (not a test): the desktop app's cold start to its first view and the memory of all
// its processes (the app, WebKit's web and network processes), on an empty inventory and on a
// generated fleet, for one or more app binaries side by side.
//
// Run (under X, e.g. xvfb-run -a -s "-screen 0 1280x860x24"):
//   node tests/e2e/bench-fleet.mjs RUNS LABEL=BINARY... -- NAME=DATA_DIR...
// e.g. node tests/e2e/bench-fleet.mjs 3 new=target/release/flotilla -- empty=/var/tmp/e fleet=/var/tmp/fleet-data
//
// Start: from the WebDriver session request (which launches the binary) until the Units view
// shows its first unit (or says there is none). Memory: the sum of the proportional set size
// (PSS, /proc/PID/smaps_rollup) of every process under the WebDriver, but the drivers
// themselves, read 8 s after the first view (the live loop has pushed its first state by then;
// SETTLE_MS=… reads it later).
// With CTL=path/to/flotillactl, also times `unit list` and `host list` (median of 11) on each
// data directory.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import net from "node:net";
import { remote } from "webdriverio";

const [runsArg, ...rest] = process.argv.slice(2);
const sep = rest.indexOf("--");
const apps = rest.slice(0, sep).map((a) => a.split("="));
const dirs = rest.slice(sep + 1).map((a) => a.split("="));
const runs = Number(runsArg);
// How long after the first view the memory is read (SETTLE_MS, default 8 s).
const settleMs = Number(process.env.SETTLE_MS ?? 8000);

function children() {
  const kids = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(after[1]);
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push({ pid: Number(d), comm });
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

/** PSS in MiB of every process below `root`, but the WebDriver itself; and their names. */
function pssBelow(root) {
  const kids = children();
  let total = 0;
  const names = [];
  const walk = (pid) => {
    for (const k of kids.get(pid) ?? []) {
      if (k.comm !== "WebKitWebDriver") {
        try {
          const m = readFileSync(`/proc/${k.pid}/smaps_rollup`, "utf8").match(/^Pss:\s+(\d+) kB/m);
          if (m) {
            total += Number(m[1]);
            names.push(`${k.comm}:${Math.round(Number(m[1]) / 1024)}`);
          }
        } catch {
          // gone meanwhile
        }
      }
      walk(k.pid);
    }
  };
  walk(root);
  return { mib: total / 1024, names };
}

function waitForPort(port, ms) {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const again = () => {
      const s = net.connect(port, "127.0.0.1");
      s.on("connect", () => {
        s.destroy();
        resolve();
      });
      s.on("error", () => (Date.now() > end ? reject(new Error("no tauri-driver")) : setTimeout(again, 50)));
    };
    again();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function once(binary, dataDir) {
  const port = 4444 + Math.floor(Math.random() * 500);
  const driver = spawn(process.env.TAURI_DRIVER ?? `${process.env.HOME}/.cargo/bin/tauri-driver`, ["--port", String(port), "--native-port", String(port + 1000)], {
    env: { ...process.env, FLOTILLA_DATA_DIR: dataDir },
    stdio: "ignore",
  });
  try {
    await waitForPort(port, 15000);
    const t0 = performance.now();
    const b = await remote({ hostname: "127.0.0.1", port, logLevel: "error", capabilities: { "tauri:options": { application: binary } } });
    await b.waitUntil(async () => (await b.$$('[data-testid="unit-card"], [data-testid="units-empty"]').length) > 0, { timeout: 60000, interval: 20 });
    const start = performance.now() - t0;
    await sleep(settleMs);
    const mem = pssBelow(driver.pid);
    const rows = await b.$$('[data-testid="server-row"]').length;
    await b.deleteSession();
    return { start, mem, rows };
  } finally {
    driver.kill();
    await sleep(500);
  }
}

for (const [label, binary] of apps) {
  for (const [name, dir] of dirs) {
    const results = [];
    for (let i = 0; i < runs; i++) results.push(await once(binary, dir));
    const starts = results.map((r) => r.start).sort((a, b) => a - b);
    const mems = results.map((r) => r.mem.mib).sort((a, b) => a - b);
    console.log(
      `${label} ${name}: start ${starts.map((s) => (s / 1000).toFixed(2)).join("/")} s (median ${(starts[Math.floor(runs / 2)] / 1000).toFixed(2)}), ` +
        `PSS ${mems.map((m) => m.toFixed(0)).join("/")} MiB (median ${mems[Math.floor(runs / 2)].toFixed(0)}), server rows in DOM ${results[0].rows}, processes ${results[0].mem.names.join(",")}`,
    );
  }
}

if (process.env.CTL) {
  for (const [name, dir] of dirs) {
    for (const cmd of [["unit", "list"], ["host", "list"], ["unit", "list", "--json"]]) {
      const times = [];
      for (let i = 0; i < 11; i++) {
        const t = performance.now();
        const r = spawnSync(process.env.CTL, ["--data-dir", dir, ...cmd], { encoding: "utf8" });
        times.push(performance.now() - t);
        if (r.status !== 0) throw new Error(r.stderr);
      }
      times.sort((a, b) => a - b);
      console.log(`flotillactl ${cmd.join(" ")} on ${name}: median ${times[5].toFixed(1)} ms (min ${times[0].toFixed(1)}, max ${times[10].toFixed(1)})`);
    }
  }
}
