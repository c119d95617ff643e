// `vmmu run kpti` through the bundled CLI (dist/cli.mjs, built by npm ci).

import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { coreHash } from "../../../src/index.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";
import { KPTI_MEMORY_BYTES, KPTI_SENSITIVE_COSTS, KPTI_SENSITIVE_WORK } from "../../../src/experiments/run-kpti.js";
import { LINUX_WORK_COSTS } from "../../../src/guest/linux.js";
import { POLICIES } from "../../../src/kvm/policy.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, "run", ...args], { encoding: "utf8", timeout: 120_000 });

describe("vmmu run kpti", () => {
  it("prints one JSON object keyed by policy, with the ratio to baseline", () => {
    const r = run("kpti", "--vcpus", "2", "--jobs", "2", "--accesses", "5000", "--policy", "baseline,shahid2018", "--json", "--no-sensitivity");
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
    // The guest's own totals, named as the contract names them, to set beside a real build's.
    for (const k of ["processes", "execs", "syscalls", "faults", "contextSwitches", "userCycles"]) expect(j.baseline.guest[k], k).toBeGreaterThan(0);
    expect(j.baseline.guest.execs).toBeLessThanOrEqual(j.baseline.guest.processes);
    expect(j.baseline.guest.userCycles).toBeLessThan(j.baseline.cyclesPerVcpu.reduce((a: number, b: number) => a + b, 0));
  });

  it("--json carries the settings (every parameter, costs included), the seed and the code version under _meta", () => {
    const r = run("kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "2000", "--policy", "baseline", "--seed", "7", "--cost", "vmExit=1700", "--cost", "guest.syscall=500", "--json", "--no-sensitivity");
    expect(r.status, r.stderr).toBe(0);
    const { _meta } = JSON.parse(r.stdout);
    expect(_meta.settings).toEqual({
      workload: "kpti", vcpus: 1, policies: ["baseline"], jobs: 1, accesses: 2000, seed: 7, memoryBytes: KPTI_MEMORY_BYTES, trace: null, pcidFlush: "lazy", maxShadowPages: null, userTime: "measured",
      costs: { ...DEFAULT_COSTS, vmExit: 1700 }, work: { ...LINUX_WORK_COSTS, syscall: 500 },
    });
    expect(_meta.seed).toBe(7);
    expect(_meta.core.wasm).toBe(coreHash);
    expect(_meta.core.version).toBe(JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")).version);
    if (_meta.core.commit !== undefined) expect(_meta.core.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(_meta.wallMs).toBeGreaterThan(0);
    expect(Object.keys(POLICIES).some((p) => p.startsWith("_"))).toBe(false);
  });

  it("prints the table beside the seed's figures and Liran's trade-off", () => {
    const r = run("kpti", "--vcpus", "1", "--jobs", "2", "--accesses", "5000", "--policy", "baseline,shahid2018,alon2018", "--no-sensitivity");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^policy\s+sim\. cycles\s+vs baseline/m);
    expect(r.stdout).toMatch(/^alon2018\s/m);
    expect(r.stdout).toContain("25m5s → 14m50s");
    expect(r.stdout).toContain("Liran Alon's trade-off");
  });

  it("refuses unknown policies, options and costs with exit 2 and one line", () => {
    for (const args of [["kpti", "--policy", "nope"], ["kpti", "--frobnicate"], ["kpti", "--cost", "nope=3"], ["kpti", "--cost", "guest.nope=3"], ["kpti", "--vcpus", "0"], ["other"]]) {
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
      [["--user-time", "real"], /^vmmu: --user-time needs measured or simulated, got 'real'$/],
      [["--pcid-flush", "sometimes"], /^vmmu: --pcid-flush needs lazy or eager, got 'sometimes'$/],
      [["--cost", "guest.entry=x"], /^vmmu: --cost guest\.entry: 'x' is not a number of cycles$/],
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
    const args = ["kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "3000", "--policy", "baseline", "--json", "--no-sensitivity"];
    const base = JSON.parse(run(...args).stdout);
    const dear = JSON.parse(run(...args, "--cost", "vmExit=5000").stdout);
    const slowGuest = JSON.parse(run(...args, "--cost", "guest.syscall=4000").stdout);
    expect(dear.baseline.cycles).toBeGreaterThan(base.baseline.cycles);
    expect(Math.abs(dear.baseline.exitsTotal - base.baseline.exitsTotal)).toBeLessThan(0.05 * base.baseline.exitsTotal);
    expect(slowGuest.baseline.cycles).toBeGreaterThan(base.baseline.cycles);
  });

  it("--max-shadow-pages caps the shadow pages as n_max_mmu_pages does: the pool reclaims, and zaps show", () => {
    const args = ["kpti", "--vcpus", "1", "--jobs", "2", "--accesses", "5000", "--policy", "alon2018", "--json", "--no-sensitivity"];
    const free = JSON.parse(run(...args).stdout).alon2018;
    const capped = JSON.parse(run(...args, "--max-shadow-pages", "64").stdout);
    expect(capped._meta.settings.maxShadowPages).toBe(64);
    expect(capped.alon2018.shadowPages.peak).toBeLessThanOrEqual(64);
    expect(capped.alon2018.shadowPages.zapped).toBeGreaterThan(free.shadowPages.zapped);
    expect(run("kpti", "--max-shadow-pages", "10").stderr.trim()).toMatch(/^vmmu: --max-shadow-pages needs an integer in 64\.\.1048576, got '10'$/);
  });

  it("prints how the headline speed-up moves when each cost is halved and doubled, and --json carries the rows", () => {
    const args = ["kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "2000", "--policy", "baseline,shahid2018"];
    const text = run(...args);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^sensitivity: the speed-up baseline → shahid2018 \(\d+\.\d\d× at the costs above\)/m);
    for (const c of [...KPTI_SENSITIVE_COSTS, ...KPTI_SENSITIVE_WORK.map((k) => `guest.${k}`)]) expect(text.stdout).toMatch(new RegExp(`^${c.replace(".", "\\.")}\\s+\\d+\\s+\\d+\\.\\d\\d×\\s+\\d+\\.\\d\\d×$`, "m"));
    const j = JSON.parse(run(...args, "--json").stdout);
    const rows = j._sensitivity as { cost: string; factor: number; value: number; speedup: number }[];
    expect(rows[0]).toMatchObject({ cost: "defaults", factor: 1 });
    expect(rows[0]!.speedup).toBeCloseTo(j.baseline.cycles / j.shahid2018.cycles, 9);
    expect(rows).toHaveLength(1 + 2 * (KPTI_SENSITIVE_COSTS.length + KPTI_SENSITIVE_WORK.length));
    expect(rows.find((r) => r.cost === "vmExit" && r.factor === 2)!.value).toBe(2 * DEFAULT_COSTS.vmExit);
    // Both policies exit, in different numbers: moving the exit cost moves the speed-up.
    expect(rows.find((r) => r.cost === "vmExit" && r.factor === 2)!.speedup).not.toBe(rows.find((r) => r.cost === "vmExit" && r.factor === 0.5)!.speedup);
    expect(run(...args, "--json", "--no-sensitivity").stdout).not.toContain("_sensitivity");
  });
});
