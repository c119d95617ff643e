/**
 * The direct-MMU benchmark fixtures (bench/tdp-scenarios.ts) do the work the
 * bench reports: every fault of a sample installs a leaf on an empty root,
 * "sparse" links one new table per fault, emptying gives every page back,
 * a populated root holds the leaves it was asked for, and the end-to-end
 * guest takes one EPT violation per fresh page, again after an invalidation.
 */
import { describe, expect, it } from "vitest";
import {
  directMmu, e2eGuest, emptyMmu, faultGpas, faultSpan, invalidateE2e, poolMachine, populate, ROOT_ROLE, touch, unitBytes,
} from "../../bench/tdp-scenarios.js";
import { disposeAfterAll } from "../helpers/machine.js";

const KINDS = ["tdp", "legacy"] as const;

describe("fault samples on an empty root", () => {
  for (const kind of KINDS) {
    for (const level of [1, 2] as const) {
      it(`install one leaf per gpa on the ${kind} MMU at host level ${level}, dense sharing tables and sparse linking one per fault, and emptying returns every page`, async () => {
        const pm = await poolMachine(8 << 20);
        disposeAfterAll(pm.machine);
        const n = 600;
        for (const pattern of ["dense", "sparse"] as const) {
          const mmu = directMmu(kind, pm.pool, faultSpan(pattern, level, n), level);
          const { hpa: root } = mmu.acquireRoot(ROOT_ROLE);
          const s0 = { ...mmu.stats };
          for (const gpa of faultGpas(pattern, level, n)) {
            const r = mmu.pageFault(root, gpa, false, false);
            expect(r.spurious).toBe(false);
            expect(r.level).toBe(level);
          }
          const allocated = mmu.stats.spAllocated - s0.spAllocated;
          const linked = mmu.stats.spteInstalled - s0.spteInstalled - n;
          expect(linked).toBe(allocated);
          // A leaf table holds 512 leaves: dense needs ⌈n / 512⌉ of them, sparse one per fault.
          const leafTables = pattern === "dense" ? Math.ceil(n / 512) : n;
          expect(allocated).toBeGreaterThanOrEqual(leafTables);
          expect(allocated).toBeLessThanOrEqual(leafTables + 3);
          expect(mmu.pagesInUse()).toBe(allocated + 1);
          emptyMmu(mmu, root);
          expect(pm.pool.inUse).toBe(0);
        }
      });
    }
  }

  it("gpas are distinct leaves one unit (dense) or one table span (sparse) apart", () => {
    expect(faultGpas("dense", 1, 3)).toEqual([0n, 4096n, 8192n]);
    expect(faultGpas("sparse", 2, 2)).toEqual([0n, 1n << 30n]);
    expect(unitBytes(2)).toBe(2n << 20n);
    expect(faultSpan("sparse", 1, 4)).toBe(8n << 20n);
  });
});

describe("a populated root", () => {
  for (const kind of KINDS) {
    it(`holds the ${kind} MMU's 4 KiB leaves, all of which a zap of the whole range removes`, async () => {
      const pm = await poolMachine(8 << 20);
      disposeAfterAll(pm.machine);
      const leaves = 2048 + 7;
      const mmu = directMmu(kind, pm.pool, BigInt(leaves) << 12n, 1);
      const { hpa: root } = mmu.acquireRoot(ROOT_ROLE);
      populate(mmu, root, leaves);
      expect(mmu.pagesInUse()).toBe(1 + 1 + 1 + Math.ceil(leaves / 512));
      expect(mmu.zapGfnRange(0n, BigInt(leaves)).zapped).toBe(leaves);
      emptyMmu(mmu, root);
      expect(pm.pool.inUse).toBe(0);
    });
  }
});

describe("the end-to-end guest", () => {
  for (const kind of KINDS) {
    it(`takes one EPT violation per fresh page on the ${kind} MMU, none on a second touch, and one each again after an invalidation`, async () => {
      const g = await e2eGuest(kind, 1, 16 << 20);
      disposeAfterAll(g.vm.machine);
      const v = g.vm.vcpus[0]!;
      const gpas = faultGpas("dense", 1, 100);
      const x0 = v.exits["ept-violation"];
      touch(g, gpas);
      expect(v.exits["ept-violation"] - x0).toBe(100);
      touch(g, gpas);
      expect(v.exits["ept-violation"] - x0).toBe(100);
      invalidateE2e(g);
      touch(g, gpas);
      expect(v.exits["ept-violation"] - x0).toBe(200);
      expect(g.vm.mmu.stats.faults).toBe(200);
    });
  }
});
