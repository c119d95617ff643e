// The shadow-MMU policies measured against each other: KVM before Junaid
// Shahid's 2018 series ("baseline"), each patch of that series, the whole
// series, Lai Jiangshan's 2021 "keep roots in prev_roots" proposal, and Liran
// Alon's 2018 PCID-tagged shadow pages (seeds 000 and 001;
// KVM arch/x86/kvm/mmu/mmu.c kvm_mmu_new_pgd, kvm_mmu_free_roots, x86.c kvm_set_cr3).
//
// Each policy is a set of switches. A patch that only makes sense on top of
// earlier ones (e.g. "skip the TLB flush on a NOFLUSH CR3 switch" needs the
// root cache and guest PCIDs in hardware, or it would be wrong) switches on
// its prerequisites too: the `requires` column says which.

import { show } from "../validate.js";

export interface ShadowPolicy {
  readonly name: string;
  readonly title: string;
  /** P1 FNAME(sync_page) flushes remote TLBs once for the page, not once per SPTE whose rewrite asks for it (set_spte). */
  readonly syncFlushOnce: boolean;
  /** P3 fast CR3 switch: current root + KVM_MMU_NUM_PREV_ROOTS = 3 previous roots in LRU order. */
  readonly prevRoots: boolean;
  /** P4 CR3 bit 63 is NOFLUSH only with CR4.PCIDE = 1 (else a reserved bit: #GP). */
  readonly noflushOnlyWithPcide: boolean;
  /** P6 the guest PCID goes into the hardware CR3, so hardware TLB entries are tagged by it. */
  readonly mapGuestPcids: boolean;
  /** P7 INVPCID is exposed to the guest and emulated under shadow paging. */
  readonly invpcid: boolean;
  /** P8 (with P5) a NOFLUSH CR3 switch skips the hardware TLB flush. */
  readonly skipFlushOnNoflush: boolean;
  /** P9 INVLPG is applied to every cached root (root_hpa parameter), instead of dropping the previous roots. */
  readonly invlpgAllRoots: boolean;
  /** P10 a NOFLUSH CR3 switch skips the shadow-page resync. */
  readonly skipSyncOnNoflush: boolean;
  /** P11 INVLPG flushes only the affected hardware TLB entries, not the whole context. */
  readonly flushOnlyAffected: boolean;
  /** lai2021: roots stay in prev_roots with an unsync flag and are re-synced + flushed on reuse; INVPCID marks them need-sync. */
  readonly keepUnsyncRoots: boolean;
  /** alon2018: shadow pages keyed by the PCID they were created under; a 4096-bit pending-flush bitmap per vCPU. */
  readonly pcidTaggedSps: boolean;
  /** alon2018: deferred INVLPG addresses per PCID (0 = off; overflow falls back to a full sync). */
  readonly deferredInvlpg: number;
}

type Switches = Omit<ShadowPolicy, "name" | "title">;

const NONE: Switches = {
  syncFlushOnce: false, prevRoots: false, noflushOnlyWithPcide: false, mapGuestPcids: false, invpcid: false,
  skipFlushOnNoflush: false, invlpgAllRoots: false, skipSyncOnNoflush: false, flushOnlyAffected: false,
  keepUnsyncRoots: false, pcidTaggedSps: false, deferredInvlpg: 0,
};

const SHAHID: Switches = {
  ...NONE, syncFlushOnce: true, prevRoots: true, noflushOnlyWithPcide: true, mapGuestPcids: true, invpcid: true,
  skipFlushOnNoflush: true, invlpgAllRoots: true, skipSyncOnNoflush: true, flushOnlyAffected: true,
};

/** Every policy by name; `requires` lists the switches a single patch pulls in. */
export const POLICIES: Record<string, ShadowPolicy & { requires: string[] }> = {};

function define(name: string, title: string, sw: Partial<Switches>, requires: string[] = []): void {
  POLICIES[name] = { name, title, ...NONE, ...sw, requires };
}

define("baseline", "KVM before the 2018 series: every CR3 load drops the root, finds the new one, resyncs and flushes", {});
define("sync-flush-once", "P1 kvm: x86: Make sync_page() flush remote TLBs once only", { syncFlushOnce: true });
define("fast-cr3", "P2+P3 Refactor mmu_free_roots(); Add fast CR3 switch code path (prev_roots)", { prevRoots: true });
define("noflush-pcide", "P4 Suppress CR3_PCID_INVD bit only when PCIDs are enabled", { noflushOnlyWithPcide: true });
define("map-pcids", "P5+P6 Add ability to skip TLB flush; Map guest PCIDs to host PCIDs", { mapGuestPcids: true });
define("invpcid", "P7 kvm: vmx: Support INVPCID in shadow paging mode", { invpcid: true });
define("skip-flush", "P8 Skip TLB flush on fast CR3 switch when indicated by guest", { skipFlushOnNoflush: true, prevRoots: true, mapGuestPcids: true }, ["fast-cr3", "map-pcids"]);
define("invlpg-roots", "P9 Add a root_hpa parameter to kvm_mmu->invlpg()", { invlpgAllRoots: true, prevRoots: true }, ["fast-cr3"]);
define("skip-sync", "P10 Skip shadow page resync on CR3 switch when indicated by guest", { skipSyncOnNoflush: true, prevRoots: true }, ["fast-cr3"]);
define("flush-affected", "P11 Flush only affected TLB entries in kvm_mmu_invlpg*", { flushOnlyAffected: true });
define("shahid2018", "Junaid Shahid's series, all 11 patches", SHAHID);
define("lai2021", "shahid2018 + Lai Jiangshan: keep unsync roots in prev_roots, re-sync and flush on reuse", { ...SHAHID, keepUnsyncRoots: true });
define("alon2018", "Liran Alon: shadow pages tagged by PCID, pending-flush bitmap, guest PCIDs in hardware", {
  syncFlushOnce: true, noflushOnlyWithPcide: true, mapGuestPcids: true, invpcid: true, flushOnlyAffected: true,
  pcidTaggedSps: true, deferredInvlpg: 0,
});
define("alon2018-invlpg", "alon2018 + per-PCID deferred INVLPG arrays (8 addresses)", {
  syncFlushOnce: true, noflushOnlyWithPcide: true, mapGuestPcids: true, invpcid: true, flushOnlyAffected: true,
  pcidTaggedSps: true, deferredInvlpg: 8,
});

/** The policy called `name`; throws a clear error listing the names otherwise. */
export function policyByName(name: string): ShadowPolicy {
  if (typeof name !== "string") throw new TypeError(`vmmu: policy must be a policy name, got ${show(name)}`);
  const p = Object.hasOwn(POLICIES, name) ? POLICIES[name] : undefined;
  if (!p) throw new RangeError(`vmmu: unknown policy '${name}' (policy must be one of: ${Object.keys(POLICIES).join(", ")})`);
  return p;
}
