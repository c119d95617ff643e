/**
 * The browser demo in real headless Chromium (Debian's `chromium`, driven by
 * playwright-core over the DevTools protocol): the page is bundled from web/,
 * served by `scripts/serve.mjs` (what `npm run serve` runs) with COOP/COEP,
 * loaded, and run to the end; every number it shows is checked against the
 * same scenario replayed here in Node (web/scene.ts), including the seed
 * reproduction's simulated cycles and the translations of the vCPU its Web
 * Worker drives.
 *
 * Skips, saying why, where no Chromium executable exists (VMMU_CHROMIUM
 * overrides the path). VMMU_DEMO_SCREENSHOT=FILE also writes the README's
 * screenshot (docs/demo.png) of the page's top.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { hex } from "../../src/index.js";
import { runKpti } from "../../src/experiments/run-kpti.js";
import { createDemo, readWalk, runTlbStory, KPTI_RUN, WALK_PRESETS, WORKER_VAS, type Demo, type TlbStory } from "../../web/scene.js";
import { skipped } from "../helpers/note.js";

const CHROMIUM = process.env.VMMU_CHROMIUM ?? "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const SKIP_REASON = `Chromium not found at ${CHROMIUM}: install Debian's chromium (.ci/run does) to run the browser test`;
const ROOT = join(import.meta.dirname, "../..");

interface Served { url: string; proc: ChildProcess }

/** Starts scripts/serve.mjs on a free port; resolves with its URL once it listens. */
function startServer(root: string): Promise<Served> {
  const proc = spawn(process.execPath, [join(ROOT, "scripts/serve.mjs"), "--port", "0", "--root", root], { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "", err = "";
    proc.stdout!.on("data", (b: Buffer) => {
      out += b;
      const m = /http:\/\/127\.0\.0\.1:(\d+)\//.exec(out);
      if (m) resolve({ url: m[0], proc });
    });
    proc.stderr!.on("data", (b: Buffer) => { err += b; });
    proc.on("exit", (code) => reject(new Error(`serve.mjs exited ${code}: ${err}`)));
  });
}

/** The Node replay of everything the page does to the machine, in the page's order. */
async function replay(): Promise<{ demo: Demo; story: TlbStory }> {
  const demo = await createDemo();
  const story = runTlbStory(demo);
  const worker = demo.machine.vcpu(1);
  for (const va of WORKER_VAS) worker.translate(va, "read", true); // the worker's walks set A bits
  return { demo, story };
}

describe.skipIf(!HAVE_CHROMIUM)("browser demo in headless Chromium", () => {
  let dir: string, server: Served, browser: Browser, page: Page;
  const errors: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "vmmu-web-"));
    const b = spawnSync(process.execPath, [join(ROOT, "scripts/bundle-web.mjs"), "--out", dir], { encoding: "utf8" });
    if (b.status !== 0) throw new Error(`bundle-web.mjs failed: ${b.stderr}`);
    server = await startServer(dir);
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
    await page.goto(server.url);
    await page.waitForFunction(() => document.body.dataset.state !== "running", null, { timeout: 45_000 });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    server?.proc.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const text = (sel: string) => page.locator(sel).first().innerText();
  const attr = (sel: string, name: string) => page.locator(sel).first().getAttribute(name);
  const attrsOf = (sel: string, names: string[]) => page.locator(sel).evaluateAll(
    (els, ns) => els.map((e) => Object.fromEntries(ns.map((n) => [n, e.getAttribute(n)]))), names);

  it("is served with COOP/COEP, runs to the end without an error, cross-origin isolated", async () => {
    const res = await fetch(server.url);
    expect(res.headers.get("cross-origin-opener-policy")).toBe("same-origin");
    expect(res.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
    expect((await fetch(server.url + "nothing-here.js")).status).toBe(404);
    expect(await page.evaluate(() => document.body.dataset.state), await text("#status")).toBe("done");
    expect(errors).toEqual([]);
    expect(await page.evaluate(() => globalThis.crossOriginIsolated)).toBe(true);
    if (process.env.VMMU_DEMO_SCREENSHOT) await page.screenshot({ path: process.env.VMMU_DEMO_SCREENSHOT, clip: { x: 0, y: 0, width: 1280, height: 1000 } });
  });

  it("shows each walk level's entry address and value and the pa that Node computes for the same tables", async () => {
    const { demo } = await replay();
    for (const p of WALK_PRESETS) {
      await page.getByRole("button", { name: p.label, exact: true }).click();
      const expected = readWalk(demo, p.va);
      const levels = await attrsOf("#walk-out .level", ["data-level", "data-gpa", "data-raw"]);
      expect(levels, p.label).toEqual(expected.levels.map((l) => ({ "data-level": String(l.level), "data-gpa": hex(l.gpa), "data-raw": hex(l.raw) })));
      const peek = demo.vcpu.peek(p.va);
      expect(await attr("#walk-result", "data-pa"), p.label).toBe("fault" in peek ? "" : hex(peek.pa));
      expect(await attr("#walk-result", "data-agrees"), p.label).toBe("true");
    }
    // Every bit of the leaf is shown, grouped into its fields.
    await page.getByRole("button", { name: "user stack", exact: true }).click();
    const bits = await page.locator("#walk-out .level").last().locator("td.bit").allInnerTexts();
    const leaf = readWalk(demo, WALK_PRESETS[0]!.va).levels.at(-1)!;
    expect(bits.join("")).toBe(leaf.raw.toString(2).padStart(64, "0"));
    expect(await attrsOf("#walk-out .level >> nth=-1 >> td.field.used.set", ["data-field", "data-value"])).toEqual(
      leaf.fields.filter((f) => f.used && f.value !== 0n).map((f) => ({ "data-field": f.name, "data-value": f.value.toString() })));
    expect(leaf.fields.filter((f) => f.used && f.value !== 0n).map((f) => f.name)).toEqual(["XD", "PKEY", "addr", "US", "RW", "P"]);
  });

  it("walks an address typed into the form", async () => {
    const { demo } = await replay();
    await page.locator("#walk-va").fill("0xffff_8880_1234_5678");
    await page.locator("#walk-access").selectOption("read");
    await page.locator("#walk-user").uncheck();
    await page.getByRole("button", { name: "walk", exact: true }).click();
    expect(await attr("#walk-result", "data-pa")).toBe("0x12345678");
    expect(await page.locator("#walk-out .level").count()).toBe(readWalk(demo, 0xffff_8880_1234_5678n).levels.length);
    await page.locator("#walk-va").fill("not an address");
    await page.getByRole("button", { name: "walk", exact: true }).click();
    expect(await text("#walk-out")).toMatch(/va must be a hex address/);
  });

  it("lists the TLB's entries and each invalidation's effect as vCPU 0 holds them", async () => {
    const { story } = await replay();
    const row = (e: TlbStory["filled"]["entries"][number]) => ({
      "data-va": hex(e.va), "data-pa": hex(e.pa), "data-page-size": String(e.pageSize), "data-context": e.global ? "global" : `pcid ${e.pcid}`,
    });
    const names = ["data-va", "data-pa", "data-page-size", "data-context"];
    expect(await attrsOf("#tlb-entries tr.tlb-entry", names)).toEqual(story.filled.entries.map(row));
    expect(await attr("#tlb-count", "data-live")).toBe(String(story.filled.stats.live));
    expect(story.filled.entries).toHaveLength(7);
    const steps = await attrsOf(".inval-step", ["data-before", "data-after", "data-dropped"]);
    expect(steps).toEqual(story.steps.map((s) => ({
      "data-before": String(s.before.entries.length), "data-after": String(s.after.entries.length),
      "data-dropped": String(s.before.entries.length - s.after.entries.length),
    })));
    // The stale translation before INVLPG, the new one after; MOV CR3 keeps only the globals.
    expect(await attrsOf(".inval-step .probe", ["data-pa"])).toEqual([{ "data-pa": "0x2001123" }, { "data-pa": "0x5000123" }]);
    expect(story.steps[2]!.after.entries.every((e) => e.global)).toBe(true);
    for (let i = 0; i < story.steps.length; i++) {
      expect(await attrsOf(`#inval-before-${i} tr.tlb-entry`, names)).toEqual(story.steps[i]!.before.entries.map(row));
    }
  });

  it("plots one bar per policy with the simulated cycles Node computes for the same seed", async () => {
    const rows = await attrsOf(".kpti-row", ["data-policy", "data-cycles"]);
    expect(rows.map((r) => r["data-policy"])).toEqual([...KPTI_RUN.policies]);
    const bars = await attrsOf("#kpti-chart svg rect.bar", ["data-category", "data-value"]);
    expect(bars).toEqual(rows.map((r) => ({ "data-category": r["data-policy"], "data-value": r["data-cycles"] })));
    expect(await page.locator("#kpti-chart svg line.reference").count()).toBe(1);
    const node = await runKpti({ ...KPTI_RUN, policies: [...KPTI_RUN.policies] });
    expect(rows.map((r) => Number(r["data-cycles"]))).toEqual(KPTI_RUN.policies.map((p) => node[p]!.cycles));
    expect(Number(await attr("#kpti-seed", "data-ours"))).toBeCloseTo(node.baseline!.cycles / node.shahid2018!.cycles, 3);
  });

  it("drives vCPU 1 from a Web Worker over the page's shared memory", async () => {
    const { demo } = await replay();
    expect(await attr("#worker-env", "data-isolated")).toBe("true");
    const rows = await attrsOf(".worker-row", ["data-va", "data-pa", "data-match"]);
    expect(rows).toEqual(WORKER_VAS.map((va) => {
      const r = demo.vcpu.peek(va);
      return { "data-va": hex(va), "data-pa": "fault" in r ? "" : hex(r.pa), "data-match": "true" };
    }));
    const batch = await attrsOf("#worker-batch", ["data-count", "data-faults", "data-lookups", "data-main-lookups"]);
    const count = Number(batch[0]!["data-count"]);
    expect(count).toBeGreaterThan(0);
    expect(batch[0]).toEqual({
      "data-count": String(count), "data-faults": "0",
      "data-lookups": String(WORKER_VAS.length + 2 * count), "data-main-lookups": String(WORKER_VAS.length + 2 * count),
    });
    expect(await attrsOf("#worker-abit", ["data-before", "data-after"])).toEqual([{ "data-before": "0", "data-after": "1" }]);
  });
});

if (!HAVE_CHROMIUM) {
  describe(`browser demo in headless Chromium — skipped: ${SKIP_REASON}`, () => {
    it("runs the page", (ctx) => {
      skipped("browser demo in headless Chromium", `skipped: ${SKIP_REASON}`);
      ctx.skip(SKIP_REASON);
    });
  });
}
