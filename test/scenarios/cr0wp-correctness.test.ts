/**
 * Differential test of the three hypervisor MMUs (EPT on the TDP MMU, EPT on
 * the legacy direct MMU, shadow paging) under every CR0.WP policy: the random
 * guest kernel of test/helpers/guest-model.ts — address spaces created and torn
 * down, page-table edits with and without invalidation, CR3 switches, INVLPG,
 * INVPCID, shootdowns — also toggles CR0.WP (kernel accesses with WP = 0 and 1)
 * and takes SMIs (accesses with paging off in SMM, then RSM). Every access is
 * judged against the reference walker over the guest's own tables with the
 * vCPU's current CR0.WP, allowing only the staleness the architecture allows.
 * Intel SDM Vol.3A §4.6 (CR0.WP), §4.10 (TLBs), Vol.3C §32.5 (SMM); KVM
 * x86.c kvm_post_set_cr0, mmu.c kvm_mmu_reset_context, tdp_mmu.c.
 */
import { describe, expect, it, onTestFinished } from "vitest";
import { CR0WP_POLICIES } from "../../src/kvm/cr0wp-policy.js";
import { GuestModel } from "../helpers/guest-model.js";
import { fuzzCount, seedNote, testSeed } from "../helpers/rng.js";
import { collectGarbage } from "../helpers/machine.js";
import { verbose } from "../helpers/note.js";

const SEED = testSeed();
/** Steps per run (GM_STEPS overrides). */
const STEPS = Number(process.env.GM_STEPS ?? 1500);

const CONFIGS = [
  { vcpus: 1, tlbEntries: 4096, hostLevel: 2 as const },
  { vcpus: 3, tlbEntries: 64, hostLevel: 1 as const },
] as const;

describe("no MMU shows the guest a translation the architecture forbids while it toggles CR0.WP and enters SMM", () => {
  const mmus = ["tdp", "legacy", "shadow"] as const;
  mmus.forEach((mmu, m) => {
    Object.keys(CR0WP_POLICIES).forEach((cr0wp, p) => {
      CONFIGS.forEach((c, i) => {
        const seed = (SEED + ((m * 8 + p) * CONFIGS.length + i) * 0x9e3779b9) >>> 0;
        const name = `${mmu}, ${cr0wp}: ${c.vcpus} vCPU${c.vcpus > 1 ? "s" : ""}, ${c.tlbEntries}-entry TLB${mmu === "shadow" ? "" : `, host level ${c.hostLevel}`}`;
        it(name, async () => {
          const note = seedNote(SEED, `-t '${mmu}, ${cr0wp}: ${c.vcpus} vCPU'`);
          const g = await new GuestModel({
            seed, policy: "shahid2018", note, mmu, cr0wp, vcpus: c.vcpus, tlbEntries: c.tlbEntries, hostLevel: c.hostLevel,
            skipLargePageDirtyCheck: false,
          }).boot();
          onTestFinished(() => { (g.tdp?.machine ?? g.vm.machine).dispose(); collectGarbage(); });
          const s = g.run(STEPS);
          verbose(`${note} ${name}: ${s.accesses} accesses (${s.staleUses} stale but legal), ${s.wpToggles} WP toggles, ${s.smm} SMM round trips (${s.smmAccesses} accesses)`);
          fuzzCount("cr0wp", s.steps);
          expect(s.steps, note).toBe(STEPS);
          expect(s.wpToggles, note).toBeGreaterThan(0);
          expect(s.smm, note).toBeGreaterThan(0);
          expect(s.adChecks, note).toBeGreaterThan(0);
        });
      });
    });
  });
});
