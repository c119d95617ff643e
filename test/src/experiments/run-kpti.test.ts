/**
 * The seed-reproduction run (src/experiments/run-kpti.ts): the KPTI kernel
 * compile on the shadow MMU once per policy, same seed, each policy's
 * simulated time beside its ratio to the baseline; it finishes even when a
 * VM exit costs more than the guest's tick period.
 */
import { describe, expect, it } from "vitest";
import { runKpti } from "../../../src/experiments/run-kpti.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";

describe("runKpti", () => {
  it("runs each policy in turn on the same programs and gives each its ratio to the baseline", async () => {
    const progress: [number, number][] = [];
    const res = await runKpti({
      vcpus: 1, policies: ["shahid2018", "baseline"], jobs: 1, accessesPerProcess: 200, memoryBytes: 64 << 20,
      onProgress: (p, f) => progress.push([p, f]),
    });
    expect(Object.keys(res)).toEqual(["shahid2018", "baseline"]);
    const base = res.baseline!, fast = res.shahid2018!;
    for (const r of [base, fast]) {
      expect(r.guest.processes).toBe(4);
      expect(r.cycles).toBe(Math.max(...r.cyclesPerVcpu));
      expect(r.accesses).toBeGreaterThan(0);
    }
    expect(base.ratioToBaseline).toBe(1);
    expect(fast.ratioToBaseline).toBe(fast.cycles / base.cycles);
    expect(progress.filter(([, f]) => f === 1)).toEqual([[0, 1], [1, 1]]);
  });

  it("gives no ratio when the baseline was not run", async () => {
    const res = await runKpti({ vcpus: 1, policies: ["lai2021"], jobs: 1, accessesPerProcess: 100, memoryBytes: 64 << 20 });
    expect(res.lai2021!.ratioToBaseline).toBeUndefined();
  });

  it("finishes with a VM exit dearer than the tick period (vmmu run kpti --cost vmExit=600000)", async () => {
    const res = await runKpti({ vcpus: 1, policies: ["baseline"], jobs: 1, accessesPerProcess: 100, costs: { ...DEFAULT_COSTS, vmExit: 600_000 } });
    expect(res.baseline!.cycles).toBeGreaterThan(0);
  });
});
