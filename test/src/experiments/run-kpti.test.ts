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

  it("with an eager user-PCID flush, shahid2018 frees the flushed PCID's cached roots and rebuilds them; lai2021 keeps them and resyncs on reuse", async () => {
    const opts = { vcpus: 2, jobs: 6, accessesPerProcess: 3000, memoryBytes: 64 << 20, seed: 3 } as const;
    const eager = await runKpti({ ...opts, policies: ["shahid2018", "lai2021"], pcidFlush: "eager" });
    const lazy = await runKpti({ ...opts, policies: ["shahid2018", "lai2021"] });
    // Lazy: the guest never flushes a PCID whose root is cached, so the two policies are one.
    expect(lazy.lai2021!.cycles).toBe(lazy.shahid2018!.cycles);
    expect(lazy.lai2021!.roots.needSyncReused).toBe(0);
    // Eager: INVPCID type 1 of the user PCID while its root sits in prev_roots.
    expect(eager.shahid2018!.guest.invpcid).toBeGreaterThan(lazy.shahid2018!.guest.invpcid);
    expect(eager.lai2021!.roots.needSyncReused).toBeGreaterThan(0);
    expect(eager.shahid2018!.roots.needSyncReused).toBe(0);
    expect(eager.shahid2018!.roots.freed).toBeGreaterThan(eager.lai2021!.roots.freed);
  });

  it("finishes with a VM exit dearer than the tick period (vmmu run kpti --cost vmExit=600000)", async () => {
    const res = await runKpti({ vcpus: 1, policies: ["baseline"], jobs: 1, accessesPerProcess: 100, costs: { ...DEFAULT_COSTS, vmExit: 600_000 } });
    expect(res.baseline!.cycles).toBeGreaterThan(0);
  });
});
