// `vmmu run cr0wp` through the bundled CLI (dist/cli.mjs, built by npm ci).

import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, "run", "cr0wp", ...args], { encoding: "utf8", timeout: 120_000 });

describe("vmmu run cr0wp", () => {
  it("prints one JSON object keyed by MMU then policy, with the counters that explain the time", () => {
    const r = run("--mmu", "all", "--policy", "baseline,krause2023", "--pairs", "2", "--iterations", "60", "--json");
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(Object.keys(j)).toEqual(["legacy", "tdp", "shadow", "_meta"]);
    for (const mmu of ["legacy", "tdp", "shadow"]) {
      expect(Object.keys(j[mmu])).toEqual(["baseline", "krause2023"]);
      expect(j[mmu].baseline.ratioToBaseline).toBe(1);
      expect(j[mmu].baseline.guest.cr0Writes).toBeGreaterThan(0);
      expect(j[mmu].baseline.exits.cr0).toBe(j[mmu].baseline.guest.cr0Writes);
      expect(j[mmu].baseline.exits.exception).toBe(j[mmu].baseline.guest.debugExceptions);
      for (const k of ["cycles", "exits", "roots", "eptViolations", "sptes", "flushes", "mmuLockWait"]) expect(j[mmu].baseline).toHaveProperty(k);
    }
    expect(j.tdp.baseline.mmuLockWait).toBeGreaterThan(0);
    expect(j.tdp.krause2023.mmuLockWait).toBeLessThan(j.tdp.baseline.mmuLockWait);
    expect(j.tdp.baseline.flushIpis.waited + j.tdp.baseline.flushIpis.skipped).toBeGreaterThan(0);
    expect(j.tdp.baseline.roots.freed).toBeGreaterThan(j.tdp.baseline.exits.cr0 / 8);
    expect(j.tdp.baseline.eptViolations).toBeGreaterThan(10 * j.tdp.krause2023.eptViolations);
    expect(j.legacy.baseline.roots.freed).toBe(0);
    expect(j.tdp.krause2023.exits.cr0 ?? 0).toBeLessThan(j.tdp.baseline.exits.cr0 / 100);
    expect(j.shadow.krause2023.exits.cr0).toBe(j.shadow.baseline.exits.cr0);
    expect(j._meta.settings).toMatchObject({ workload: "cr0wp", pairs: 2, iterations: 60, vcpus: 2 });
    expect(j._meta.settings.costs).toEqual(DEFAULT_COSTS);
  });

  it("prints a table per MMU beside the seed's table", () => {
    const r = run("--mmu", "tdp,legacy", "--policy", "all", "--pairs", "1", "--iterations", "40");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^TDP MMU \(EPT\):/m);
    expect(r.stdout).toMatch(/^legacy direct MMU \(EPT\):/m);
    for (const p of ["baseline", "keep-roots", "preserve-roots", "krause-p1-3", "krause2023"]) expect(r.stdout).toMatch(new RegExp(`^${p} .* [0-9]+\\.[0-9]%$`, "m"));
    expect(r.stdout).toMatch(/^policy .* lock wait$/m);
    expect(r.stdout).toMatch(/v5\.10\.177 +10\.37 \/ 4\.88 +88\.7 \/ 4\.92/);
    expect(r.stdout).toMatch(/here \(baseline → krause2023\): legacy [0-9.]+×, TDP [0-9.]+×/);
  });

  it("a KERNEXEC count and a cost override move the result", () => {
    const cycles = (...extra: string[]) => {
      const r = run("--mmu", "tdp", "--policy", "baseline", "--pairs", "1", "--iterations", "40", "--json", ...extra);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout).tdp.baseline.cycles as number;
    };
    const base = cycles();
    expect(cycles("--kernexec", "0,0,4")).toBeGreaterThan(base);
    expect(cycles("--kernexec", "off")).toBeLessThan(base);
    expect(cycles("--cost", "vmExit=5000")).toBeGreaterThan(base);
  });

  it("--nx-huge-pages on|off sets KVM's NX huge page mitigation in the direct MMUs (on by default): fetches split huge pages, and the TDP MMU's rebuilt roots fault more", () => {
    const json = (...extra: string[]) => {
      const r = run("--mmu", "tdp,legacy", "--policy", "baseline", "--pairs", "1", "--iterations", "40", "--json", ...extra);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const off = json("--nx-huge-pages", "off"), on = json(), bare = json("--nx-huge-pages", "--seed", "1"), inline = json("--nx-huge-pages=off");
    expect(off._meta.settings.nxHugePages).toBe(false);
    expect(on._meta.settings.nxHugePages).toBe(true);
    expect(bare._meta.settings.nxHugePages).toBe(true);
    expect(inline._meta.settings.nxHugePages).toBe(false);
    for (const mmu of ["tdp", "legacy"]) {
      expect(off[mmu].baseline.nxLpageSplits).toBe(0);
      expect(on[mmu].baseline.nxLpageSplits).toBeGreaterThan(0);
      expect(on[mmu].baseline.eptViolations).toBeGreaterThan(off[mmu].baseline.eptViolations);
      expect(on[mmu].baseline.guest).toEqual(off[mmu].baseline.guest);
    }
    expect(on.tdp.baseline.cycles).toBeGreaterThan(off.tdp.baseline.cycles);
    const text = run("--mmu", "legacy", "--policy", "baseline", "--pairs", "1", "--iterations", "20");
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^NX huge pages on \(direct MMUs\): .*legacy\/baseline [1-9]/m);
    expect(run("--help").stdout).toMatch(/--nx-huge-pages: KVM's nx_huge_pages/);
    const bad = run("--nx-huge-pages=maybe");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^vmmu: --nx-huge-pages takes on or off, got 'maybe'$/m);
  });

  it("--interleave block runs the same guest program with CR0.WP windows that never overlap; the JSON records the setting", () => {
    const json = (...extra: string[]) => {
      const r = run("--mmu", "tdp", "--policy", "baseline", "--vcpus", "2", "--pairs", "4", "--iterations", "30", "--json", ...extra);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const fine = json(), coarse = json("--interleave", "block");
    expect(fine._meta.settings.interleave).toBe("fine");
    expect(coarse._meta.settings.interleave).toBe("block");
    expect(coarse.tdp.baseline.guest).toEqual(fine.tdp.baseline.guest);
    expect(fine.tdp.baseline.eptViolations).toBeGreaterThan(coarse.tdp.baseline.eptViolations);
    const bad = run("--interleave", "random");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^vmmu: --interleave takes fine or block, got 'random'$/m);
  });

  it("refuses unknown MMUs, policies, options and bad counts with exit 2 and one vmmu: line", () => {
    for (const [args, msg] of [
      [["--mmu", "ept"], /unknown mmu 'ept'/],
      [["--policy", "v6.1"], /unknown policy 'v6.1'/],
      [["--pairs", "0"], /--pairs needs an integer/],
      [["--kernexec", "1,2"], /--kernexec needs off or/],
      [["--cost", "nope=1"], /unknown cost 'nope'/],
      [["--frobnicate"], /unknown option '--frobnicate'/],
    ] as const) {
      const r = run(...args);
      expect(r.status, args.join(" ")).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
    const h = run("--help");
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/--mmu legacy\|tdp\|shadow/);
  });
});
