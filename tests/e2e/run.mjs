// Runs the GUI end-to-end tests under a virtual X server unless one is already there.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here).filter((f) => f.endsWith(".test.mjs")).map((f) => path.join(here, f));
const node = [process.execPath, "--test", "--test-concurrency=1", ...files];
const cmd = process.env.DISPLAY ? node : ["xvfb-run", "-a", "-s", "-screen 0 1280x860x24", ...node];
const r = spawnSync(cmd[0], cmd.slice(1), { stdio: "inherit" });
process.exit(r.status ?? 1);
