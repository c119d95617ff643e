/**
 * What cross-origin isolation is needed for, in real headless Chromium: a page
 * served without COOP/COEP runs a machine on its main thread (a shared
 * WebAssembly.Memory needs no isolation) but may not post `machine.handle` to
 * a worker (HTML §2.7 structured serialization: a SharedArrayBuffer only to a
 * cross-origin-isolated agent cluster — DataCloneError); the same page served
 * with `Cross-Origin-Opener-Policy: same-origin` and
 * `Cross-Origin-Embedder-Policy: require-corp` posts it. The README's "Threads"
 * section says so. Skips, saying why, where no Chromium exists (VMMU_CHROMIUM).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { skipped } from "../helpers/note.js";

const CHROMIUM = process.env.VMMU_CHROMIUM ?? "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const SKIP_REASON = `Chromium not found at ${CHROMIUM}: install Debian's chromium (.ci/run does) to run the browser tests`;
const LIBRARY = join(import.meta.dirname, "../../dist/vmmu.mjs");
const TITLE = "a page without cross-origin isolation";

const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
import { createMachine, X86PageTableBuilder, LONG_MODE } from "./vmmu.mjs";
try {
  const m = await createMachine({ arch: "x86_64", memoryBytes: 16 << 20, vcpus: 2 });
  const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
  pt.map(0x40_0000n, 0x80_0000n, "4K", { user: true, write: true });
  const v = m.vcpu(0);
  v.setControl({ ...LONG_MODE, cr3: pt.root });
  const r = v.translate(0x40_0123n, "write", true);
  let post = "posted";
  const w = new Worker(URL.createObjectURL(new Blob([""], { type: "text/javascript" })));
  try { w.postMessage(m.handle); } catch (e) { post = e.name; }
  w.terminate();
  window.result = { isolated: self.crossOriginIsolated, pa: "pa" in r ? r.pa.toString(16) : JSON.stringify(r), post };
} catch (e) { window.result = { error: String(e) }; }
</script>`;

/** Serves the page and dist/vmmu.mjs on 127.0.0.1, with COOP/COEP when `isolate`. */
function serve(isolate: boolean): Promise<{ server: Server; url: string }> {
  const lib = readFileSync(LIBRARY);
  const server = createServer((req, res) => {
    const headers: Record<string, string> = isolate ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" } : {};
    if (req.url === "/") res.writeHead(200, { ...headers, "content-type": "text/html" }).end(PAGE);
    else if (req.url === "/vmmu.mjs") res.writeHead(200, { ...headers, "content-type": "text/javascript" }).end(lib);
    else res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    const a = server.address();
    resolve({ server, url: `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}/` });
  }));
}

describe.skipIf(!HAVE_CHROMIUM)(TITLE, () => {
  let browser: Browser;
  beforeAll(async () => {
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--disable-dev-shm-usage"] });
  }, 60_000);
  afterAll(async () => { await browser?.close(); });

  const load = async (isolate: boolean): Promise<Record<string, unknown>> => {
    const { server, url } = await serve(isolate);
    try {
      const page = await browser.newPage();
      await page.goto(url);
      await page.waitForFunction(() => (window as unknown as { result?: unknown }).result, null, { timeout: 30_000 });
      return await page.evaluate(() => (window as unknown as { result: Record<string, unknown> }).result);
    } finally {
      server.close();
    }
  };

  it("runs a machine on its main thread but may not post machine.handle to a worker", async () => {
    expect(await load(false)).toEqual({ isolated: false, pa: "800123", post: "DataCloneError" });
  }, 60_000);

  it("posts machine.handle once served with COOP same-origin and COEP require-corp", async () => {
    expect(await load(true)).toEqual({ isolated: true, pa: "800123", post: "posted" });
  }, 60_000);
});

if (!HAVE_CHROMIUM) {
  describe(`${TITLE} — skipped: ${SKIP_REASON}`, () => {
    it("runs in Chromium", (ctx) => {
      skipped(TITLE, `skipped: ${SKIP_REASON}`);
      ctx.skip(SKIP_REASON);
    });
  });
}
