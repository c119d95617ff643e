// `vmmu run kpti` through the bundled CLI (dist/cli.mjs, built by npm ci).

import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { coreHash } from "../../../src/index.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";
import { KPTI_MEMORY_BYTES } from "../../../src/experiments/run-kpti.js";
import { POLICIES } from "../../../src/kvm/policy.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, "run", ...args], { encoding: "utf8", timeout: 120_000 });

describe("vmmu run kpti", () => {
  it("prints one JSON object keyed by policy, with the ratio to baseline", () => {
    const r = run("kpti", "--vcpus", "2", "--jobs", "2", "--accesses", "5000", "--policy", "baseline,shahid2018", "--json");
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(Object.keys(j)).toEqual(["baseline", "shahid2018", "_meta"]);
    expect(j.baseline.ratioToBaseline).toBe(1);
    expect(j.shahid2018.ratioToBaseline).toBeGreaterThan(0);
    expect(j.shahid2018.ratioToBaseline).toBeLessThan(1);
    for (const p of ["baseline", "shahid2018"]) {
      expect(j[p].exits.cr3).toBeGreaterThan(0);
      expect(j[p].exits.pf).toBeGreaterThan(0);
      expect(j[p].cyclesPerVcpu).toHaveLength(2);
      expect(j[p].guest.cr3Noflush).toBeGreaterThan(0);
      // Two vCPUs share mmu_lock and flush each other's TLBs: the spin and the IPIs are reported.
      expect(j[p].mmuLockWait).toBeGreaterThanOrEqual(0);
      expect(j[p].flushIpis.waited + j[p].flushIpis.skipped).toBe(j[p].flushes.remote);
      expect(j[p].exits.kick).toBe(j[p].flushIpis.waited);
    }
    expect(j.baseline.mmuLockWait).toBeGreaterThan(0);
    // Same guest work under both policies (the interleaving follows simulated time, so counts differ a little).
    expect(Math.abs(j.shahid2018.guest.syscalls - j.baseline.guest.syscalls)).toBeLessThan(0.05 * j.baseline.guest.syscalls);
    expect(j.shahid2018.guest.processes).toBe(j.baseline.guest.processes);
  });

  it("--json carries the settings (every parameter, costs included), the seed and the code version under _meta", () => {
    const r = run("kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "2000", "--policy", "baseline", "--seed", "7", "--cost", "vmExit=1500", "--json");
    expect(r.status, r.stderr).toBe(0);
    const { _meta } = JSON.parse(r.stdout);
    expect(_meta.settings).toEqual({
      workload: "kpti", vcpus: 1, policies: ["baseline"], jobs: 1, accesses: 2000, seed: 7, memoryBytes: KPTI_MEMORY_BYTES, trace: null,
      costs: { ...DEFAULT_COSTS, vmExit: 1500 },
    });
    expect(_meta.seed).toBe(7);
    expect(_meta.core.wasm).toBe(coreHash);
    expect(_meta.core.version).toBe(JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")).version);
    if (_meta.core.commit !== undefined) expect(_meta.core.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(_meta.wallMs).toBeGreaterThan(0);
    expect(Object.keys(POLICIES).some((p) => p.startsWith("_"))).toBe(false);
  });

  it("prints the table beside the seed's figures and Liran's trade-off", () => {
    const r = run("kpti", "--vcpus", "1", "--jobs", "2", "--accesses", "5000", "--policy", "baseline,shahid2018,alon2018");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^policy\s+sim\. cycles\s+vs baseline/m);
    expect(r.stdout).toMatch(/^alon2018\s/m);
    expect(r.stdout).toContain("25m5s → 14m50s");
    expect(r.stdout).toContain("Liran Alon's trade-off");
  });

  it("refuses unknown policies, options and costs with exit 2 and one line", () => {
    for (const args of [["kpti", "--policy", "nope"], ["kpti", "--frobnicate"], ["kpti", "--cost", "nope=3"], ["kpti", "--vcpus", "0"], ["other"]]) {
      const r = run(...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
  });

  it("refuses hostile arguments with exit 2 and one vmmu: line saying what is wrong, before running anything", () => {
    const dir = mkdtempSync(join(tmpdir(), "vmmu-run-"));
    const empty = join(dir, "empty.trace"), garbage = join(dir, "garbage.trace");
    writeFileSync(empty, "");
    writeFileSync(garbage, "\x7fELF\x02\x01\x01 not a trace\n==123== Lackey, an example Valgrind tool\nhello world\n");
    const cases: [string[], RegExp][] = [
      [["--policy", "__proto__"], /^vmmu: unknown policy '__proto__' \(one of: baseline, /],
      [["--policy", "constructor"], /^vmmu: unknown policy 'constructor'/],
      [["--policy", "toString"], /^vmmu: unknown policy 'toString'/],
      [["--policy", ","], /^vmmu: --policy needs a name/],
      [["--cost", "__proto__=1"], /^vmmu: unknown cost '__proto__'/],
      [["--cost", "constructor=1"], /^vmmu: unknown cost 'constructor'/],
      [["--cost", "vmExit=abc"], /^vmmu: --cost vmExit: 'abc' is not a number of cycles$/],
      [["--cost", "vmExit=-5"], /^vmmu: --cost vmExit: '-5' is not a number of cycles$/],
      [["--cost", "vmExit=99999999999"], /^vmmu: --cost vmExit: 99999999999 is above the 10000000-cycle limit$/],
      [["--cost", "vmExit"], /^vmmu: --cost needs name=value, got 'vmExit'$/],
      [["--seed="], /^vmmu: --seed needs an integer in 0\.\.4294967295, got ''$/],
      [["--seed", "abc"], /^vmmu: --seed needs an integer/],
      [["--seed", "1e3"], /^vmmu: --seed needs an integer/],
      [["--vcpus="], /^vmmu: --vcpus needs an integer/],
      [["--jobs", "-1"], /^vmmu: --jobs needs an integer/],
      [["--trace", empty], /^vmmu: --trace .*empty\.trace is not a lackey trace: no I\/L\/S\/M records with a user address in 0 lines/],
      [["--trace", garbage], /^vmmu: --trace .*garbage\.trace is not a lackey trace: no I\/L\/S\/M records with a user address in 3 lines/],
      [["--trace", join(dir, "missing.trace")], /^vmmu: --trace .*missing\.trace: cannot read it \(ENOENT\)$/],
      [["--trace="], /^vmmu: --trace needs a file/],
    ];
    for (const [args, want] of cases) {
      const r = run("kpti", "--jobs", "1", "--accesses", "1000", "--policy", "baseline", ...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stdout, args.join(" ")).toBe("");
      expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
      expect(r.stderr.trim(), args.join(" ")).toMatch(want);
    }
  });

  it("a cost override changes simulated time", () => {
    const base = JSON.parse(run("kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "3000", "--policy", "baseline", "--json").stdout);
    const dear = JSON.parse(run("kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "3000", "--policy", "baseline", "--json", "--cost", "vmExit=5000").stdout);
    expect(dear.baseline.cycles).toBeGreaterThan(base.baseline.cycles);
    expect(Math.abs(dear.baseline.exitsTotal - base.baseline.exitsTotal)).toBeLessThan(0.05 * base.baseline.exitsTotal);
  });
});
