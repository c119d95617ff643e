/**
 * runCr0Wp's options and sensitivity variants (src/experiments/run-cr0wp.ts);
 * the full report is tested through the CLI (test/src/cli/run-cr0wp.test.ts).
 */
import { describe, expect, it } from "vitest";
import { cr0WpVariants, runCr0Wp, CR0WP_NX_HUGE_PAGES, type Cr0WpRunOptions } from "../../../src/experiments/run-cr0wp.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";

const SMALL: Cr0WpRunOptions = { mmus: ["tdp", "legacy", "shadow"], policies: ["baseline"], pairs: 1, iterations: 20 };

describe("the NX huge pages sensitivity variant", () => {
  it("moves only nxHugePages (on by default, CR0WP_NX_HUGE_PAGES), and runCr0Wp hands it to the direct MMUs: their fetches split huge pages, shadow paging is unaffected", async () => {
    expect(CR0WP_NX_HUGE_PAGES).toBe(true);
    const variants = cr0WpVariants(DEFAULT_COSTS);
    const nx = variants.find((v) => v.name === "NX huge pages off")!;
    expect(nx).toBeDefined();
    expect(nx.apply(SMALL)).toEqual({ ...SMALL, nxHugePages: false });
    for (const v of variants) if (v !== nx) expect(v.apply(SMALL).nxHugePages).toBeUndefined();
    const on = await runCr0Wp(SMALL), off = await runCr0Wp(nx.apply(SMALL));
    for (const mmu of ["tdp", "legacy"]) {
      expect(off[mmu]!.baseline!.nxLpageSplits).toBe(0);
      expect(on[mmu]!.baseline!.nxLpageSplits).toBeGreaterThan(0);
    }
    expect(on.shadow!.baseline!.nxLpageSplits).toBe(0);
    expect(on.shadow!.baseline!.cycles).toBe(off.shadow!.baseline!.cycles);
  }, 60_000);
});

describe("the interleaving sensitivity variant", () => {
  it("moves only interleave to block: the same guest program, and on a 2-vCPU TDP MMU the WP=1 tree never dies, so it faults less than when windows may overlap", async () => {
    const variants = cr0WpVariants(DEFAULT_COSTS);
    const block = variants.find((v) => v.name === "windows never overlap")!;
    expect(block.apply(SMALL)).toEqual({ ...SMALL, interleave: "block" });
    for (const v of variants) if (v !== block) expect(v.apply(SMALL).interleave).toBeUndefined();
    const o: Cr0WpRunOptions = { mmus: ["tdp"], policies: ["baseline"], vcpus: 2, pairs: 4, iterations: 30 };
    const fine = (await runCr0Wp(o)).tdp!.baseline!, coarse = (await runCr0Wp(block.apply(o))).tdp!.baseline!;
    expect(fine.guest).toEqual(coarse.guest);
    expect(fine.eptViolations).toBeGreaterThan(2 * coarse.eptViolations);
    expect(fine.cycles).toBeGreaterThan(coarse.cycles);
  }, 60_000);
});
