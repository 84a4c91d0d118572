// End-to-end test of the playground page (`GET /`) in headless Chromium.
//
// Starts the already-built debug binary (`cargo build` first) on a free port, drives the
// page with playwright-core against Debian's /usr/bin/chromium, and saves a screenshot to
// docs/playground.png (the one the README shows). Run from the repository root:
//   (cd tests/e2e && npm ci) && cargo build && node --test tests/e2e/
//
// Environment: CONVD_BIN (default target/debug/convd), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT (default docs/playground.png). The error state is saved to
// target/e2e/playground-error.png (not committed) for whoever debugs a failure.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.CONVD_BIN ?? join(ROOT, "target/debug/convd");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.SCREENSHOT ?? join(ROOT, "docs/playground.png");

let server, base, context, page, profile;
const pageErrors = [];

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function waitHealthy(url, ms = 30_000) {
  const until = Date.now() + ms;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`convd exited with ${server.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`convd not healthy after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: run \`cargo build\` first`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(BIN, ["--bind", `127.0.0.1:${port}`], {
    env: { ...process.env, CONVD_LOG_LEVEL: "warn" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitHealthy(base);
  profile = mkdtempSync(join(tmpdir(), "convd-e2e-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1360, height: 1020 },
    deviceScaleFactor: 1,
    acceptDownloads: true,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400 && r.status() !== 422) pageErrors.push(`HTTP ${r.status()} ${r.url()}`);
  });
  page.on("console", (m) => {
    // The 422 we provoke on purpose is logged by Chromium as a failed resource load.
    if (m.type() === "error" && !/status of 422/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  server?.kill("SIGTERM");
});

/** Waits until the feature map is a fresh result of `w`×`h` pixels. */
async function waitForResult(w, h) {
  await page.waitForFunction(
    ([w, h]) => {
      const img = document.querySelector("#result-img");
      return document.querySelector("#results").dataset.state === "ready" &&
        img.complete && img.naturalWidth === w && img.naturalHeight === h;
    },
    [w, h],
    { timeout: 30_000 },
  );
}

test("the playground convolves a sample with the Laplacian and shows API errors at the field", { timeout: 120_000 }, async () => {
  await page.goto(`${base}/`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });

  // Pick a sample (300×200 RGB), then the Laplacian preset (3×3, padding 0 → 298×198).
  await page.getByRole("button", { name: "Coffee" }).click();
  const layer1 = page.locator("#layers > .layer").first();
  await layer1.getByRole("combobox", { name: "Preset" }).selectOption("laplacian");
  await waitForResult(298, 198);
  assert.equal(await page.getByRole("button", { name: "Coffee" }).getAttribute("aria-pressed"), "true");

  // The result is an image of the expected size that is not blank.
  const pixels = await page.evaluate(() => {
    const img = document.querySelector("#result-img");
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, sq = 0;
    const distinct = new Set();
    for (let i = 0; i < d.length; i += 4) { sum += d[i]; sq += d[i] * d[i]; distinct.add(d[i]); }
    const n = d.length / 4, mean = sum / n;
    return { w: c.width, h: c.height, std: Math.sqrt(sq / n - mean * mean), distinct: distinct.size };
  });
  assert.equal(pixels.w, 298);
  assert.equal(pixels.h, 198);
  assert.ok(pixels.std > 2 && pixels.distinct > 16, `result looks blank: ${JSON.stringify(pixels)}`);

  // The numbers below the pictures come from the API.
  assert.equal(await page.textContent("#st-input"), "1×3×200×300");
  assert.equal(await page.textContent("#st-output"), "1×1×198×298");
  assert.equal(await page.textContent("#st-padding"), "[0, 0, 0, 0]");
  assert.match(await page.textContent("#st-rf"), /^3×3/);
  assert.match(await page.textContent("#st-macs"), /^1,593,108 /); // 198·298 outputs × 3·3·3 weights
  assert.match(await page.textContent("#st-timing"), /conv [\d.]+ ms/);
  // The algorithm the server's plan ran (Server-Timing's conv description).
  assert.match(await page.textContent("#st-algo"), /^(direct|phased|separable|gemm_pointwise|gemm_im2col|implicit_gemm|winograd|channel_tile)$/);

  // "Download PNG" saves the picture shown.
  const [pngDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("link", { name: "Download PNG" }).click(),
  ]);
  const shown = readFileSync(await pngDownload.path());
  assert.equal(shown.subarray(1, 4).toString("latin1"), "PNG");
  assert.equal(shown.readUInt32BE(16), 298);
  assert.equal(shown.readUInt32BE(20), 198);

  // "Copy as curl" is the exact equivalent: running it gives the very same PNG bytes.
  const curl = await page.textContent("#curl");
  assert.match(curl, /\/v1\/convolve/);
  assert.match(curl, /"preset":"laplacian"/);
  let curlAvailable = true;
  try { execFileSync("curl", ["--version"], { stdio: "ignore" }); } catch { curlAvailable = false; }
  if (curlAvailable) {
    const dir = mkdtempSync(join(tmpdir(), "convd-e2e-curl-"));
    try {
      writeFileSync(join(dir, "coffee.png"), Buffer.from(await (await fetch(`${base}/samples/coffee.png`)).arrayBuffer()));
      execFileSync("bash", ["-c", curl], { cwd: dir });
      assert.ok(readFileSync(join(dir, "feature-map.png")).equals(shown), "curl gave other bytes");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  // Download as .npy.
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download .npy" }).click(),
  ]);
  const npy = readFileSync(await download.path());
  assert.equal(npy.subarray(0, 6).toString("latin1"), "\x93NUMPY");
  assert.match(npy.toString("latin1", 10, 120), /'shape': \(1, 1, 198, 298\)/);

  // Provoke an error: stride 0 is refused by the API (422, pointer /parts/spec/stride),
  // and the page shows it next to the stride field.
  const stride = layer1.getByRole("textbox", { name: "Stride" });
  await stride.fill("0");
  const strideError = layer1.locator("[data-field=stride] .field-error");
  await strideError.waitFor({ state: "visible", timeout: 30_000 });
  assert.match(await strideError.textContent(), /stride must be ≥ 1/);
  assert.equal(await stride.getAttribute("aria-invalid"), "true");
  assert.match(await page.textContent("#problem"), /422.*invalid-spec.*see Stride in Layer 1/s);
  await page.screenshot({ path: join(ROOT, "target/e2e/playground-error.png") });

  // Fixing the field clears the error; a second 3×3 layer grows the receptive field to 5×5.
  await stride.fill("1");
  await waitForResult(298, 198);
  assert.equal(await strideError.isVisible(), false);
  await page.getByRole("button", { name: "+ Add layer" }).click();
  await waitForResult(296, 196);
  assert.equal(await page.textContent("#rf-summary"), "3×3 + 3×3 → receptive field 5×5");
  assert.equal(await page.locator("#layer-table tbody tr").count(), 2);

  // A view worth a screenshot: a 5×5 Gaussian, then Sobel x, per colour channel.
  const layer2 = page.locator("#layers > .layer").nth(1);
  await layer1.getByRole("combobox", { name: "Preset" }).selectOption("gaussian");
  await layer2.getByRole("combobox", { name: "Preset" }).selectOption("sobel_x");
  await layer1.getByRole("combobox", { name: "Channels" }).selectOption("each");
  await layer2.getByRole("combobox", { name: "Channels" }).selectOption("each");
  await waitForResult(294, 194);
  assert.equal(await page.textContent("#rf-summary"), "5×5 + 3×3 → receptive field 7×7");
  assert.equal(await page.textContent("#st-output"), "1×3×194×294");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: SCREENSHOT });

  assert.deepEqual(pageErrors, []);
});
