// `npm run serve` (scripts/serve.mjs): serves a directory on 127.0.0.1 with the
// cross-origin-isolation headers on every answer, nothing outside it, GET/HEAD
// only; argument errors exit 2, a missing page exits 1 naming the fix.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const SERVE = fileURLToPath(new URL("../../scripts/serve.mjs", import.meta.url));

const run = (args: string[]) => spawnSync(process.execPath, [SERVE, ...args], { encoding: "utf8", timeout: 20_000 });

describe("serve.mjs", () => {
  let dir: string, proc: ChildProcess, url: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "vmmu-serve-"));
    mkdirSync(join(dir, "site", "sub"), { recursive: true });
    writeFileSync(join(dir, "site", "index.html"), "<!doctype html><title>t</title>");
    writeFileSync(join(dir, "site", "sub", "a.js"), "export {};");
    writeFileSync(join(dir, "secret.txt"), "outside the root");
    proc = spawn(process.execPath, [SERVE, "--port", "0", "--root", join(dir, "site")], { stdio: ["ignore", "pipe", "pipe"] });
    url = await new Promise<string>((resolve, reject) => {
      let out = "";
      proc.stdout!.on("data", (b: Buffer) => { out += b; const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out); if (m) resolve(m[0]); });
      proc.on("exit", (c) => reject(new Error(`serve.mjs exited ${c}`)));
    });
  });

  afterAll(() => {
    proc?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("listens on 127.0.0.1 and serves the root's files with COOP/COEP and their content type", async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetch(url);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("cross-origin-opener-policy")).toBe("same-origin");
    expect(page.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
    expect(await page.text()).toContain("<title>t</title>");
    const js = await fetch(url + "sub/a.js");
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
  });

  it("answers 404 for what is not a file under the root, and never serves outside it", async () => {
    for (const p of ["missing.js", "sub", "../secret.txt", "%2e%2e/secret.txt", "sub/..%2f..%2fsecret.txt"]) {
      const r = await fetch(url + p);
      expect([400, 404], p).toContain(r.status);
      expect(await r.text(), p).not.toContain("outside the root");
      expect(r.headers.get("cross-origin-opener-policy"), p).toBe("same-origin");
    }
  });

  it("accepts GET and HEAD only", async () => {
    expect((await fetch(url, { method: "HEAD" })).status).toBe(200);
    const post = await fetch(url, { method: "POST", body: "x" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  it("exits 2 on a bad argument and 1 when the page is not built, saying what to do", () => {
    const port = run(["--port", "http"]);
    expect(port.status).toBe(2);
    expect(port.stderr).toMatch(/--port must be 0\.\.65535, got 'http'/);
    const other = run(["--bogus"]);
    expect(other.status).toBe(2);
    expect(other.stderr).toMatch(/unknown argument '--bogus'/);
    const empty = run(["--port", "0", "--root", join(dir, "sub-missing")]);
    expect(empty.status).toBe(1);
    expect(empty.stderr).toMatch(/index\.html is missing: run npm run build first/);
    const help = run(["--help"]);
    expect(help.status).toBe(0);
    expect(help.stderr).toMatch(/usage: npm run serve/);
  });
});
