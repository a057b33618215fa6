// Benchmark (not a test): the Impact view's first paint — from the click on "Impact" until its
// graph of hosts, servers, units and pools is laid out and painted — on an inventory of a given
// size (e.g. 500 servers from tests/src/bin/gen-fleet), against the same view on a tiny one.
//
// Run (under X, e.g. xvfb-run -a -s "-screen 0 1280x860x24"), with FLOTILLA_BIN set to the app:
//   node tests/e2e/bench-impact-view.mjs RUNS NAME=DATA_DIR...
// Prints, per data directory, the median, min and max over RUNS cold starts of the app.
import { startApp, byTestId } from "./driver.mjs";

const [runsArg, ...dirs] = process.argv.slice(2);
const runs = Number(runsArg);
if (!(runs > 0) || dirs.length === 0) {
  console.error("usage: node tests/e2e/bench-impact-view.mjs RUNS NAME=DATA_DIR...");
  process.exit(2);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

for (const spec of dirs) {
  const [name, dataDir] = spec.split("=");
  const times = [];
  const reports = [];
  let nodes = 0;
  for (let i = 0; i < runs; i++) {
    const app = await startApp({ dataDir });
    try {
      const b = app.browser;
      // The app has shown its first view: the Impact view is what is timed, not the start.
      await byTestId(b, "nav-impact");
      await b.pause(Number(process.env.SETTLE_MS ?? 1500));
      const nav = await b.$('[data-testid="nav-impact"]');
      const began = Date.now();
      await nav.click();
      // The report is in when its units table is drawn; the graph is laid out after it.
      const table = await b.$('[data-testid="impact-unit"]');
      await table.waitForExist({ timeout: 60000, interval: 10 });
      reports.push(Date.now() - began);
      const graph = await b.$('[data-testid="impact-graph"][data-drawn]');
      await graph.waitForExist({ timeout: 60000, interval: 10 });
      await b.execute(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))));
      times.push(Date.now() - began);
      nodes = Number(await graph.getAttribute("data-drawn"));
    } finally {
      await app.stop();
    }
  }
  console.log(
    `${name}: ${nodes} graph nodes; first paint median ${median(times)} ms (min ${Math.min(...times)}, max ${Math.max(...times)}, ${runs} runs); its report and tables shown after ${median(reports)} ms`,
  );
}
