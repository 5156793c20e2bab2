// The web UI of `retro serve` in headless Chromium (run by run.sh, which sets RETRO_URL, RETRO_BIN
// and RETRO_TEST_DEPOT): the log, a checkpoint, a partition, the search box, and a checkpoint
// applied from outside appearing live. Saves screenshots to a temporary directory and prints it.
// Exits non-zero on the first failed check.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const url = process.env.RETRO_URL;
const retro = process.env.RETRO_BIN;
const depot = process.env.RETRO_TEST_DEPOT;
assert.ok(url && retro && depot, "RETRO_URL, RETRO_BIN and RETRO_TEST_DEPOT must be set (use run.sh)");

const started = Date.now();
const step = (what) => console.log(`ui: ${((Date.now() - started) / 1000).toFixed(2)}s ${what}`);
const short = (id) => id.replace("sha256:", "").slice(0, 12);

async function api(path) {
  const response = await fetch(url + path, { headers: { Accept: "application/json" } });
  assert.equal(response.status, 200, `GET ${path}`);
  return response.json();
}

// The server is up once /health answers.
for (let i = 0; ; i++) {
  try {
    if ((await fetch(url + "/health")).ok) break;
  } catch (err) {
    if (i >= 100) throw err;
  }
  await new Promise((r) => setTimeout(r, 50));
}

const userDataDir = mkdtempSync(join(tmpdir(), "retro-chromium-profile-"));
const shots = mkdtempSync(join(tmpdir(), "retro-ui-screenshots-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1200, height: 800 },
  timeout: 30_000,
});
step("chromium started");

const problems = [];
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(5_000);
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  // Failed loads are checked by URL below (the console only says "Failed to load resource").
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource"))
      problems.push(`console error: ${msg.text()}`);
  });
  const failures = [];
  page.on("response", (r) => {
    if (r.status() >= 400) failures.push(`${r.status()} ${new URL(r.url()).pathname}`);
  });

  // The log lists every checkpoint, newest first, and the live stream connects.
  const log = await api("/log?n=100");
  assert.equal(log.length, 5);
  await page.goto(url + "/");
  await page.locator("#log tr").nth(log.length - 1).waitFor();
  const rows = page.locator("#log tr");
  assert.equal(await rows.count(), log.length);
  for (const [i, c] of log.entries()) {
    const text = await rows.nth(i).innerText();
    assert.ok(text.includes(short(c.checkpoint)), `row ${i} shows ${short(c.checkpoint)}: ${text}`);
    assert.ok(text.includes(`${c.message.path} ${c.message.name}`), `row ${i} shows its command: ${text}`);
  }
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("live"));
  step(`log lists ${log.length} checkpoints; status live`);

  // A checkpoint: its headers, command and each event's data as formatted JSON.
  const transfer = log.find((c) => c.message.name === "transfer");
  await page.locator(`#log a[href="#/checkpoint/${transfer.checkpoint}"]`).click();
  await page.locator("h2", { hasText: `Checkpoint ${short(transfer.checkpoint)}` }).waitFor();
  const expanded = await api(`/checkpoints/${transfer.checkpoint}`);
  const headers = await page.locator('table[aria-label="headers"]').innerText();
  assert.ok(headers.includes(transfer.checkpoint), headers);
  assert.ok(headers.includes(transfer.affix), headers);
  assert.ok(headers.includes(short(transfer.parents[0])), headers);
  // Its command id and correlation id (run.sh gives the transfer both), no causation id.
  assert.ok(headers.includes("Command id\tui-transfer-1"), headers);
  assert.ok(headers.includes("Correlation id\tui-order-7"), headers);
  assert.ok(!headers.includes("Causation id"), headers);
  const pres = await page.locator("main pre").allInnerTexts();
  assert.equal(pres[0], JSON.stringify(expanded.message, null, 2));
  assert.equal(pres.length, 1 + expanded.events.length);
  for (const [i, e] of expanded.events.entries()) {
    assert.equal(pres[1 + i], JSON.stringify(e.data, null, 2), `event ${i} as formatted JSON`);
  }
  assert.ok(pres[1].includes('\n  "amount": 1200'), `indented JSON: ${pres[1]}`);
  const groups = await page.locator("main h3 a").allInnerTexts();
  assert.deepEqual(groups, ["accounts/alice", "accounts/bob"]);
  await page.screenshot({ path: join(shots, "checkpoint.png"), fullPage: true });
  step("checkpoint page shows its affix and events as formatted JSON");

  // A partition, from the checkpoint's link.
  await page.locator("main h3 a", { hasText: "accounts/bob" }).click();
  await page.locator("h2", { hasText: "Partition accounts/bob" }).waitFor();
  const bob = await api("/events?glob=accounts/bob");
  const eventRows = page.locator('table[aria-label="events"] tbody tr');
  assert.equal(await eventRows.count(), bob.length);
  for (const [i, e] of bob.entries()) {
    const cells = await eventRows.nth(i).locator("td").allInnerTexts();
    assert.equal(cells[0], String(e.version));
    assert.equal(cells[1], e.name);
    assert.equal(cells[2], JSON.stringify(e.data, null, 2));
    assert.equal(cells[3], short(e.checkpoint));
  }
  step(`partition page lists the ${bob.length} events of accounts/bob`);

  // The search box: a partition glob, then a checkpoint id prefix.
  await page.fill("#q", "accounts/*");
  await page.press("#q", "Enter");
  await page.locator("h2", { hasText: "Partitions matching" }).waitFor();
  const matching = await api("/partitions?glob=accounts/*");
  const items = await page.locator("main li").allInnerTexts();
  assert.equal(items.length, matching.length);
  for (const [i, p] of matching.entries()) {
    assert.ok(items[i].startsWith(p.partition) && items[i].includes(`${p.events} event(s)`), items[i]);
  }
  const first = log[log.length - 1];
  await page.fill("#q", short(first.checkpoint).slice(0, 8));
  await page.click('#search button[type="submit"]');
  await page.locator("h2", { hasText: `Checkpoint ${short(first.checkpoint)}` }).waitFor();
  assert.ok((await page.locator('table[aria-label="headers"]').innerText()).includes(first.checkpoint));
  await page.fill("#q", "sha256:ffffffff0000");
  await page.press("#q", "Enter");
  await page.locator("h2", { hasText: "Not found" }).waitFor();
  step("search box finds partitions by glob and a checkpoint by id prefix; unknown ids say not found");

  // Back to the log; a checkpoint applied from outside appears live, within 5 s.
  await page.click("header h1 a");
  await page.locator("#log tr").nth(log.length - 1).waitFor();
  const applied = Date.now();
  const id = execFileSync(
    retro,
    ["--depot", depot, "apply", "--session", "s-live", '{"path":"accounts/bob","name":"deposit","params":{"amount":77}}'],
    { encoding: "utf8" },
  ).trim();
  assert.match(id, /^sha256:[0-9a-f]{64}$/);
  const newest = page.locator("#log tr").first();
  await page.waitForFunction(
    (s) => document.querySelector("#log tr")?.textContent.includes(s),
    short(id),
    { timeout: 5_000 },
  );
  const latency = Date.now() - applied;
  const text = await newest.innerText();
  assert.ok(text.includes("s-live") && text.includes("accounts/bob deposit"), text);
  assert.equal(await page.locator("#log tr").count(), log.length + 1);
  assert.ok((await page.locator("#status").innerText()).includes(`${short(id)} landed`));
  await page.screenshot({ path: join(shots, "log.png"), fullPage: true });
  step(`the applied checkpoint appeared live after ${latency} ms`);

  assert.deepEqual(problems, [], "no page or console errors");
  // Only the deliberate unknown id failed (and the browser's own favicon request).
  assert.deepEqual(
    failures.filter((f) => f !== "404 /favicon.ico"),
    ["404 /checkpoints/sha256%3Affffffff0000"],
  );
} catch (err) {
  failed = true;
  console.error("ui: FAILED:", err?.stack ?? err);
  for (const p of problems) console.error("ui:", p);
  try {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: join(shots, "failure.png"), fullPage: true });
  } catch {}
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(`ui: screenshots in ${shots}`);
if (failed) process.exit(1);
console.log(`ui: all checks passed in ${((Date.now() - started) / 1000).toFixed(2)}s`);
