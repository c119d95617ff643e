// scripts/bench-baseline.mjs: builds a previous core (wasm and public API
// bundle) from a git rev, for bench/before-after.bench.ts. Run as a child
// into a temp directory: the bundle it writes is the library of that rev —
// its wasm hash matches the wasm file, and it builds machines and walks page
// tables through its own createMachine — and bad revs or arguments fail.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { skipped } from "../helpers/note.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const REV = "ab130d2";
const out = mkdtempSync(path.join(os.tmpdir(), "vmmu-baseline-test-"));
/** The rev's commit, absent in a shallow clone or an unpacked tarball (then the suite skips). */
const commit = spawnSync("git", ["rev-parse", "--verify", "--quiet", `${REV}^{commit}`], { cwd: root, encoding: "utf8" }).stdout?.trim() ?? "";
if (!commit) skipped("test/scripts/bench-baseline.test.ts", `skipped: git rev ${REV} is not in this checkout`);

afterAll(() => rmSync(out, { recursive: true, force: true }));

function baseline(...args: string[]) {
  const r = spawnSync(process.execPath, ["scripts/bench-baseline.mjs", ...args], { cwd: root, encoding: "utf8" });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** The parts of the old public API this test drives (the bundle has no types). */
interface OldLib {
  coreHash: string;
  createMachine(o: { arch: "x86_64"; memoryBytes: bigint }): Promise<{
    memory: unknown;
    vcpu(i: number): { setControl(c: object): void; translate(va: bigint): { pa?: bigint; fault?: unknown } };
    dispose(): void;
  }>;
  X86PageTableBuilder: new (mem: unknown, o: { tableBase: bigint; tableLimit: bigint }) => { root: bigint; map(va: bigint, pa: bigint, size: "4K"): void };
  LONG_MODE: object;
}

describe.skipIf(!commit)("scripts/bench-baseline.mjs", () => {
  it("builds the core of a previous rev into a loadable library whose wasm is the file beside it", async () => {
    const r = baseline(REV, "--out", out);
    expect(r.code, r.out).toBe(0);
    const lib = path.join(out, `vmmu-${REV}.mjs`), wasm = path.join(out, `core-${REV}.wasm`), metaFile = path.join(out, `vmmu-${REV}.json`);
    for (const f of [lib, wasm, metaFile]) expect(existsSync(f), f).toBe(true);
    const meta = JSON.parse(readFileSync(metaFile, "utf8")) as { rev: string; commit: string; coreHash: string; wasmBytes: number };
    const bytes = readFileSync(wasm);
    expect(meta).toMatchObject({ rev: REV, commit, wasmBytes: bytes.length, coreHash: createHash("sha256").update(bytes).digest("hex").slice(0, 16) });

    const old = (await import(pathToFileURL(lib).href)) as OldLib;
    expect(old.coreHash).toBe(meta.coreHash);
    const m = await old.createMachine({ arch: "x86_64", memoryBytes: 16n << 20n });
    const b = new old.X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    b.map(0x40_0000n, 0x30_0000n, "4K");
    const v = m.vcpu(0);
    v.setControl({ ...old.LONG_MODE, cr3: b.root });
    expect(v.translate(0x40_0123n)).toMatchObject({ pa: 0x30_0123n });
    expect(v.translate(0x80_0000n)).toHaveProperty("fault");
    m.dispose();

    const again = baseline(REV, "--out", out);
    expect(again.code, again.out).toBe(0);
    expect(again.out).not.toMatch(/compiling/);
  });

  it("fails on a rev git does not know, and on --out without a directory", () => {
    const bad = baseline("no-such-rev-0000", "--out", out);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/bench-baseline: git rev-parse/);
    const noDir = baseline("--out");
    expect(noDir.code).toBe(2);
    expect(noDir.out).toMatch(/--out needs a directory/);
  });
});
