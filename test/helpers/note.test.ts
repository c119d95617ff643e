// Passing tests print nothing: no test file writes to the console itself (the
// suites' coverage lines go through verbose(), test/helpers/note.ts), and a
// suite that has notes prints none unless VMMU_VERBOSE asks for them. A suite
// that skips is not silent: the real-Linux suites without their fixtures say
// why, in their title and in one line on stderr.

import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** Test files that may contain console calls, and why. */
const ALLOWED: Record<string, string> = {
  "test/package/consumer.test.ts": "the console calls are in the source of the consumer program it writes and runs",
};

function testFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? testFiles(p) : n.endsWith(".test.ts") ? [p] : [];
  });
}

describe("passing tests print nothing", () => {
  it("no test file writes to the console or to stdout/stderr itself", () => {
    const offenders: string[] = [];
    for (const f of testFiles(join(ROOT, "test"))) {
      const rel = relative(ROOT, f);
      if (Object.hasOwn(ALLOWED, rel)) continue;
      readFileSync(f, "utf8").split("\n").forEach((line, i) => {
        if (/\bconsole\.(log|info|warn|error|debug)\(|\bprocess\.(stdout|stderr)\.write\(/.test(line)) offenders.push(`${rel}:${i + 1}: ${line.trim()}`);
      });
    }
    expect(offenders, "print through verbose() from test/helpers/note.ts").toEqual([]);
  });

  it("a suite with notes prints none by default and prints them with VMMU_VERBOSE=1", { timeout: 120_000 }, () => {
    const run = (env: Record<string, string | undefined>) => spawnSync(process.execPath,
      [join(ROOT, "node_modules/vitest/vitest.mjs"), "run", "test/src/kvm/smoke.test.ts"],
      { cwd: ROOT, encoding: "utf8", timeout: 120_000, env: { ...process.env, VMMU_VERBOSE: undefined, VMMU_FUZZ_COUNTS: undefined, FORCE_COLOR: undefined, NO_COLOR: "1", ...env } });
    const quiet = run({});
    expect(quiet.status, quiet.stdout + quiet.stderr).toBe(0);
    expect(quiet.stdout + quiet.stderr).not.toMatch(/(stdout|stderr) \|/);
    const loud = run({ VMMU_VERBOSE: "1" });
    expect(loud.status, loud.stdout + loud.stderr).toBe(0);
    expect(loud.stdout).toMatch(/stdout \| test\/src\/kvm\/smoke\.test\.ts/);
  });

  for (const [file, arch] of [["test/scenarios/realworld-x86.test.ts", "x86_64"], ["test/scenarios/realworld-arm64.test.ts", "arm64"]] as const) {
    it(`${file} without its fixtures skips and says why (VMMU_REALWORLD at an empty directory)`, { timeout: 120_000 }, () => {
      const empty = mkdtempSync(join(tmpdir(), "vmmu-no-realworld-"));
      const r = spawnSync(process.execPath, [join(ROOT, "node_modules/vitest/vitest.mjs"), "run", file, "--reporter=verbose"],
        { cwd: ROOT, encoding: "utf8", timeout: 120_000, env: { ...process.env, VMMU_REALWORLD: empty, VMMU_VERBOSE: undefined, VMMU_FUZZ_COUNTS: undefined, FORCE_COLOR: undefined, NO_COLOR: "1" } });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      const why = `skipped: real-Linux ${arch} fixtures not found in ${empty} (set VMMU_REALWORLD to the shared/realworld directory)`;
      expect(r.stdout).toContain(`— ${why}`);
      expect(r.stdout + r.stderr).toMatch(/Tests {2}\d+ skipped \(\d+\)/);
      expect((r.stdout + r.stderr).split("\n").filter((l) => l.startsWith("real Linux ")).map((l) => l.replace(/^.* — /, ""))).toEqual([why]);
    });
  }
});
