// T3: a definition created through the wizard, edited with inline errors as you type, and a
// package added through the app's drop handler with a real file.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { byTestId, ctl, screenshot, startApp } from "./driver.mjs";

let app;

before(async () => {
  app = await startApp();
});

after(async () => {
  await app?.stop();
});

test("create through the wizard, edit with inline errors, drop a package", async () => {
  const b = app.browser;
  await (await byTestId(b, "nav-definitions")).click();
  await byTestId(b, "definitions-empty");
  await (await byTestId(b, "new-definition")).click();
  await (await byTestId(b, "def-name")).setValue("shop");
  await (await byTestId(b, "def-next")).click();
  await (await byTestId(b, "def-port")).setValue("8081");
  await (await byTestId(b, "def-create")).click();
  const detail = await b.$('[data-testid="def-detail"][data-name="shop"]');
  await detail.waitForDisplayed({ timeout: 10000 });

  // An error while typing is shown with its line and column; saving is not possible.
  const editor = await byTestId(b, "def-editor");
  // Typing 1.3 KB key by key through WebDriver is slow: set the text and fire the input event
  // the editor listens to.
  const type = (value) =>
    b.execute(
      (el, v) => {
        el.value = v;
        el.dispatchEvent(new Event("input", { bubbles: true }));
      },
      editor,
      value,
    );
  const text = await editor.getValue();
  assert.match(text, /port = 8081/);
  await type(text.replace("port = 8081", "port = 0"));
  const problems = await byTestId(b, "def-problems");
  await b.waitUntil(async () => /\d+:8 server\.port: expected a port between 1 and 65535/.test(await problems.getText()), { timeout: 5000 });
  assert.equal(await (await byTestId(b, "def-save")).isEnabled(), false);
  await screenshot(b, "definitions-error");
  await type(text.replace("port = 8081", "port = 9090"));
  await problems.waitForDisplayed({ reverse: true, timeout: 5000 });
  await (await byTestId(b, "def-save")).click();
  await b.waitUntil(async () => (await (await byTestId(b, "def-save")).getText()).includes("v3"), { timeout: 5000 });

  // A package dropped on the definition.
  const dir = mkdtempSync(path.join(os.tmpdir(), "flotilla-pkg-"));
  const pkg = path.join(dir, "index.html");
  writeFileSync(pkg, "<h1>shop</h1>\n");
  await b.execute((paths) => window.__flotillaDropPackages(paths), [pkg]);
  const row = await b.$('[data-testid="package-row"][data-file="index.html"]');
  await row.waitForDisplayed({ timeout: 10000 });
  await screenshot(b, "definitions-packages");

  await (await byTestId(b, "tab-history")).click();
  await (await byTestId(b, "show-diff")).click();
  assert.match(await (await byTestId(b, "def-diff")).getText(), /\+ package index\.html/);

  const history = JSON.parse(ctl(app.dataDir, "def", "history", "shop", "--json").stdout);
  assert.deepEqual(history.map((h) => h.version), [1, 2, 3]);
  const shown = JSON.parse(ctl(app.dataDir, "def", "show", "shop", "--json").stdout);
  assert.equal(shown.packages[0].file, "index.html");
  assert.match(shown.text, /port = 9090/);
});

test("a save over a version saved meanwhile by the CLI is refused with the difference", async () => {
  const b = app.browser;
  await (await b.$('[data-testid="def-item"][data-name="shop"]')).click();
  const editor = await byTestId(b, "def-editor");
  const before = await editor.getValue();
  assert.match(before, /port = 9090/);
  const mine = before.replace('path = "/health"', 'path = "/ready"');
  await b.execute(
    (el, v) => {
      el.value = v;
      el.dispatchEvent(new Event("input", { bubbles: true }));
    },
    editor,
    mine,
  );
  // Meanwhile, the CLI saves a version from the same starting point.
  const dir = mkdtempSync(path.join(os.tmpdir(), "flotilla-def-"));
  const theirs = path.join(dir, "theirs.toml");
  writeFileSync(theirs, before.replace('kind = "httpd"', 'kind = "nginx"'));
  const cli = ctl(app.dataDir, "def", "set-file", "shop", theirs);
  assert.equal(cli.status, 0, cli.stderr);

  await (await byTestId(b, "def-save")).click();
  const box = await byTestId(b, "def-conflict");
  await box.waitForDisplayed({ timeout: 5000 });
  const message = await box.getText();
  assert.match(message, /changed since v3/);
  assert.match(message, /~ server\.kind: "httpd" → "nginx"/);
  assert.equal(await editor.getValue(), mine, "the user's text is kept");
  assert.equal(await (await byTestId(b, "def-save")).isEnabled(), false);
  await screenshot(b, "definitions-conflict");
  let history = JSON.parse(ctl(app.dataDir, "def", "history", "shop", "--json").stdout);
  assert.deepEqual(history.map((h) => h.version), [1, 2, 3, 4], "nothing saved over v4");

  // Deliberately based on v4 after reading the difference: saved as v5.
  await (await byTestId(b, "def-rebase")).click();
  await (await byTestId(b, "def-save")).click();
  await b.waitUntil(async () => (await (await byTestId(b, "def-save")).getText()).includes("v6"), { timeout: 5000 });
  history = JSON.parse(ctl(app.dataDir, "def", "history", "shop", "--json").stdout);
  assert.deepEqual(history.map((h) => h.version), [1, 2, 3, 4, 5]);
  const shown = JSON.parse(ctl(app.dataDir, "def", "show", "shop", "--json").stdout);
  assert.match(shown.text, /path = "\/ready"/);
});
