/**
 * runCr0Wp's options and sensitivity variants (src/experiments/run-cr0wp.ts);
 * the full report is tested through the CLI (test/src/cli/run-cr0wp.test.ts).
 */
import { describe, expect, it } from "vitest";
import { cr0WpVariants, runCr0Wp, type Cr0WpRunOptions } from "../../../src/experiments/run-cr0wp.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";

const SMALL: Cr0WpRunOptions = { mmus: ["tdp", "legacy", "shadow"], policies: ["baseline"], pairs: 1, iterations: 20 };

describe("the NX huge pages sensitivity variant", () => {
  it("moves only nxHugePages, and runCr0Wp hands it to the direct MMUs: their fetches split huge pages, shadow paging is unaffected", async () => {
    const variants = cr0WpVariants(DEFAULT_COSTS);
    const nx = variants.find((v) => v.name === "NX huge pages on")!;
    expect(nx).toBeDefined();
    expect(nx.apply(SMALL)).toEqual({ ...SMALL, nxHugePages: true });
    for (const v of variants) if (v !== nx) expect(v.apply(SMALL).nxHugePages).toBeUndefined();
    const off = await runCr0Wp(SMALL), on = await runCr0Wp(nx.apply(SMALL));
    for (const mmu of ["tdp", "legacy"]) {
      expect(off[mmu]!.baseline!.nxLpageSplits).toBe(0);
      expect(on[mmu]!.baseline!.nxLpageSplits).toBeGreaterThan(0);
    }
    expect(on.shadow!.baseline!.nxLpageSplits).toBe(0);
    expect(on.shadow!.baseline!.cycles).toBe(off.shadow!.baseline!.cycles);
  }, 60_000);
});
