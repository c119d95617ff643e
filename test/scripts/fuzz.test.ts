// `npm run fuzz` (scripts/fuzz.mjs): a real suite for a tiny budget, a fixture suite that
// fails for odd seeds (test/scripts/fixtures/fails-on-odd-seed.test.ts), the interrupt,
// and argument errors. Each case runs the script as `npm run fuzz` would, in a child.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const FIXTURE = "test/scripts/fixtures/fails-on-odd-seed.test.ts";

/** This process's environment without VMMU_ / GM_ settings, which a replay line would repeat. */
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VMMU_|GM_)/.test(k)));

interface Run { code: number | null; out: string }

/** Runs scripts/fuzz.mjs with `args`; `onOutput` sees the output so far and may signal the child. */
function fuzz(args: string[], env: Record<string, string> = {}, onOutput?: (out: string, pid: number) => void): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["scripts/fuzz.mjs", ...args], {
      cwd: root, env: { ...cleanEnv, ...env }, stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const take = (d: Buffer) => {
      out += d;
      onOutput?.(out, child.pid!);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("close", (code) => resolve({ code, out }));
  });
}

/** The summary row of `suite`: rounds, seeds tried, cases run, failures. */
function row(out: string, suite: string): { rounds: number; seeds: number; cases: number; failures: number } {
  const m = new RegExp(`^\\s+${suite}\\s+(\\d+)\\s+(\\d+)\\s+([\\d,]+) \\S+\\s+(\\d+)$`, "m").exec(out);
  expect(m, `summary row for ${suite} in:\n${out}`).not.toBeNull();
  const n = (s: string) => Number(s.replace(/,/g, ""));
  return { rounds: n(m![1]!), seeds: n(m![2]!), cases: n(m![3]!), failures: n(m![4]!) };
}

describe("npm run fuzz", () => {
  it("runs the x86 walker suite with a fresh seed for a tiny budget and sums its cases", { timeout: 120_000 }, async () => {
    const { code, out } = await fuzz(["--minutes", "0.01", "--suite", "x86-walk"]);
    expect(out).toMatch(/^\[\d+:\d\d\] x86-walk seed=\d+ ok /m);
    const r = row(out, "x86-walk");
    expect(r.rounds).toBeGreaterThanOrEqual(1);
    expect(r.seeds).toBeGreaterThanOrEqual(1);
    expect(r.cases).toBeGreaterThan(0);
    expect(r.failures).toBe(0);
    expect(code, out).toBe(0);
  });

  it("prints a failing seed with a replay line that reproduces it, keeps its log, and exits 1", { timeout: 60_000 }, async () => {
    const env = { VMMU_FUZZ_FIXTURE: "1" };
    const { code, out } = await fuzz(["--file", FIXTURE, "--seeds", "2,3", "--rounds", "2"], env);
    expect(out).toMatch(/seed=2 ok .*, 10 cases$/m);
    expect(out).not.toMatch(/FAIL fails-on-odd-seed seed=2/);
    const replay = `VMMU_SEED=3 VMMU_FUZZ_FIXTURE=1 npx vitest run ${FIXTURE}`;
    expect(out).toContain(`FAIL fails-on-odd-seed seed=3  replay: ${replay}`);
    expect(out).toContain("AssertionError: [replay with VMMU_SEED=3] the seed is odd");
    expect(row(out, "fails-on-odd-seed")).toEqual({ rounds: 2, seeds: 2, cases: 20, failures: 1 });
    const log = path.join(root, ".fuzz", "fails-on-odd-seed-seed3.log");
    expect(existsSync(log)).toBe(true);
    expect(readFileSync(log, "utf8")).toContain("the seed is odd");
    expect(code).toBe(1);

    const again = await new Promise<number | null>((resolve) => {
      spawn(process.execPath, ["node_modules/vitest/vitest.mjs", "run", FIXTURE], {
        cwd: root, env: { ...cleanEnv, VMMU_SEED: "3", ...env }, stdio: "ignore",
      }).on("close", resolve);
    });
    expect(again, replay).toBe(1);
  });

  it("on an interrupt, stops the running round and prints the summary so far", { timeout: 60_000 }, async () => {
    let sent = false;
    const { code, out } = await fuzz(["--file", FIXTURE, "--seeds", "2,4,6,8,10,12,14,16", "--minutes", "5"], { VMMU_FUZZ_FIXTURE: "1" }, (so, pid) => {
      if (!sent && /seed=2 ok/.test(so)) {
        sent = true;
        process.kill(pid, "SIGINT");
      }
    });
    expect(out).toContain("interrupted");
    expect(out).toMatch(/vmmu fuzz summary: 1 round, 0 failed, .*\(interrupted\)/);
    expect(row(out, "fails-on-odd-seed")).toEqual({ rounds: 1, seeds: 1, cases: 10, failures: 0 });
    expect(code).toBe(130);
  });

  it("rejects an unknown suite and a bad budget, naming the flag, with exit 2; --list names every suite", async () => {
    const bad = await fuzz(["--suite", "x86-walk,nope"]);
    expect(bad.out).toContain('vmmu fuzz: --suite "nope" is not a suite');
    expect(bad.code).toBe(2);
    const minutes = await fuzz(["--minutes", "0"]);
    expect(minutes.out).toContain("vmmu fuzz: --minutes needs a number > 0");
    expect(minutes.code).toBe(2);
    const list = await fuzz(["--list"]);
    for (const s of ["x86-walk", "arm64-walk", "x86-ept-walk", "tlb", "tlb-vmx", "tlbi", "shadow", "kernel-compile", "linux-tlb", "x86-fast-cache", "arm64-fast-cache"]) expect(list.out).toMatch(new RegExp(`^${s} `, "m"));
    expect(list.code).toBe(0);
  });
});
