/**
 * Differential test of the shadow MMU (src/kvm/) under every policy: a random
 * guest kernel (test/helpers/guest-model.ts) creates and destroys address
 * spaces, maps memory on demand, edits, converts and tears down mappings with
 * and without invalidation, recycles page-table pages as data and as tables
 * of other levels, switches CR3 with and without NOFLUSH (PCIDE on), issues
 * INVLPG and INVPCID, and runs on 1–4 vCPUs with shootdowns. Every access is
 * judged against the reference walker over the guest's own tables, allowing
 * only the staleness the architecture (plus shared-page-table staleness until
 * the observer invalidates) allows, and A/D updates are checked. Intel SDM
 * Vol.3A §4.6–4.8, §4.10; KVM arch/x86/kvm/mmu/mmu.c.
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { POLICIES } from "../../src/kvm/policy.js";
import type { ShadowVm } from "../../src/kvm/shadow-vm.js";
import { GuestModel, type GuestModelStats } from "../helpers/guest-model.js";
import { fuzzCount, seedNote, testSeed } from "../helpers/rng.js";
import { collectGarbage } from "../helpers/machine.js";
import { verbose } from "../helpers/note.js";

const SEED = testSeed();
/** Steps per run (GM_STEPS overrides). */
const STEPS = Number(process.env.GM_STEPS ?? 3000);

/** Each policy runs these three configurations, each with its own seed. */
const CONFIGS = [
  { vcpus: 1, poolBytes: 8 << 20, tlbEntries: 4096 },
  { vcpus: 2, poolBytes: 160 << 10, tlbEntries: 64 },
  { vcpus: 4, poolBytes: 8 << 20, tlbEntries: 256 },
] as const;

const totals = new Map<string, GuestModelStats[]>();

describe("shadow paging never shows the guest a translation the architecture forbids", () => {
  Object.keys(POLICIES).forEach((policy, p) => {
    CONFIGS.forEach((c, i) => {
      const seed = (SEED + (p * CONFIGS.length + i) * 0x9e3779b9) >>> 0;
      const name = `${policy}: ${c.vcpus} vCPU${c.vcpus > 1 ? "s" : ""}, ${c.poolBytes >> 10} KiB shadow pool, ${c.tlbEntries}-entry TLB`;
      it(name, async () => {
        const note = seedNote(SEED, `-t '${policy}: ${c.vcpus} vCPU'`);
        const g = await new GuestModel({
          seed, policy, note, ...c, skipLargePageDirtyCheck: false,
        }).boot();
        onTestFinished(() => { g.vm.machine.dispose(); collectGarbage(); });
        const t0 = performance.now();
        const s = g.run(STEPS);
        const m = g.vm.mmu.stats;
        verbose(`${note} ${name}: ${s.steps} steps, ${s.accesses} accesses (${s.faults} faults, ${s.demandMaps} demand maps, ${s.staleUses} stale but legal, `
          + `${s.sharedStaleUses} of them explained only by a PTE's pre-edit value), ${s.adChecks} A/D checks, ${s.edits} edits (${s.uninvalidatedEdits} never invalidated), `
          + `CR3 ${s.cr3Flush} flushing / ${s.cr3Noflush} NOFLUSH, ${s.invlpg} INVLPG, ${s.invpcid} INVPCID, ${s.procsCreated} processes, `
          + `${s.tablesFreed} tables freed, ${s.crossReuse} frames reused differently; MMU: ${m.emulatedWrites} emulated writes, ${m.unsyncs} unsyncs, `
          + `${m.syncs} syncs, ${m.spZapped} zaps, ${m.rootsReused} roots reused; ${Math.round(performance.now() - t0)} ms`);
        totals.set(policy, [...(totals.get(policy) ?? []), s]);
        fuzzCount("shadow", s.steps);
        expect(s.steps, note).toBe(STEPS);
        expect(s.adChecks, note).toBeGreaterThan(0);
        expect(s.uninvalidatedEdits, note).toBeGreaterThan(0);
        expect(s.crossReuse, note).toBeGreaterThan(0);
        expect(m.unsyncs + m.emulatedWrites, note).toBeGreaterThan(0);
        if (c.poolBytes < 1 << 20) expect(m.spZapped, note).toBeGreaterThan(0);
      });
    });
  });

  it("every policy saw stale-but-legal translations and shared page tables across runs", () => {
    for (const [policy, runs] of totals) {
      const stale = runs.reduce((n, s) => n + s.staleUses, 0);
      if (runs.length === CONFIGS.length) expect(stale, `${seedNote(SEED)} ${policy}`).toBeGreaterThan(0);
    }
  });
});
