// Simulated time: cycles charged per event. Every default names its source
// (a paper, a measurement, a KVM commit message) or is labelled an assumption; all
// are overridable (`vmmu run kpti --cost name=value`). The model is not tuned
// to reproduce the seed's numbers.

import { optionsObject, show } from "../validate.js";

export interface CostModel {
  /**
   * VM exit + entry round trip, with KVM's dispatch of a light exit. The only
   * measurement found: VMRUN → #VMEXIT 1,344–1,376 cycles for a KVM_RUN round
   * trip on an AMD EPYC host (LKML, Dec 2020: lkml.iu.edu/hypermail/linux/kernel/2012.2/00527.html),
   * hardware transition only; ≈150 of exit dispatch added (assumption). 2018
   * hosts with Spectre/L1TF mitigations (IBRS or retpolines, RSB stuffing, L1D
   * flush on entry) paid more: no published per-exit figure found, so `vmmu run
   * kpti` prints the result with this cost halved and doubled.
   */
  vmExit: number;
  /** One paging-structure memory reference by a hardware walk (cache hit mix). Assumption. */
  hwWalkRef: number;
  /** A hardware TLB hit. Assumption (1 cycle: pipelined with the access). */
  tlbHit: number;
  /** One guest page-table level walked in software by the hypervisor (FNAME(walk_addr_generic): gpte read, checks). Assumption. */
  swWalkLevel: number;
  /** Allocating and zeroing one shadow page (4 KiB). Assumption: ≈ 512 64-bit stores + bookkeeping. */
  spAlloc: number;
  /** Installing one SPTE (make_spte + link). Assumption. */
  spteInstall: number;
  /**
   * One SPTE of v4.16 FNAME(sync_page): kvm_vcpu_read_guest_atomic of the gpte
   * (memslot lookup, an 8-byte user copy: ≈80), the gpte checks and set_spte
   * (make the SPTE, mmu_spte_update's atomic exchange: ≈70). Assumption.
   */
  syncSpte: number;
  /** Walking the shadow tree looking for unsync children (per shadow page visited). Assumption. */
  syncVisit: number;
  /** Emulating one guest store to a write-protected page table (x86_emulate_instruction + kvm_mmu_track_write). Assumption. */
  emulate: number;
  /** Zapping one shadow page (unlink parents and children, free). Assumption. */
  zap: number;
  /** A local TLB flush of one context (INVVPID single-context / INVEPT). No published cycle count found; assumption. */
  localFlush: number;
  /** A TLB flush of one address (INVVPID individual-address / INVLPG). No published cycle count found; assumption. */
  addrFlush: number;
  /**
   * A remote TLB flush as its sender waits for it: the IPIs to the vCPUs in
   * guest mode, their exits and acks (smp_call_function_many waits for all
   * together). No published cycle count found; assumption.
   */
  remoteFlush: number;
  /** Finding a root in the shadow-page hash (kvm_mmu_get_page hit). Assumption. */
  hashLookup: number;
  /**
   * The slow path of a root not in the root cache, beyond the hash lookup:
   * kvm_mmu_free_roots, then KVM_REQ_MMU_RELOAD → kvm_mmu_load
   * (mmu_topup_memory_caches, mmu_lock, mmu_alloc_shadow_roots,
   * kvm_mmu_load_pgd). No published cycle count found; assumption.
   */
  rootReload: number;
  /** Searching the 4-entry root cache (fast_cr3_switch; now mmu.c cached_root_find_and_keep_current). Assumption: tens of cycles. */
  rootCacheLookup: number;
  /** MMU re-initialisation avoided per nested exit: ≈1,000 cycles (Vitaly Kuznetsov, "x86/kvm/nVMX: optimize MMU switch between L1 and L2", kvm@vger.kernel.org, 2018). Used when a root must be rebuilt. */
  mmuReinit: number;
  /** A native MOV CR3 / INVLPG / INVPCID executed by hardware (no exit). Assumption. */
  nativeCr3: number;
  /** Handling one EPT violation in a direct MMU beyond the exit and the SPTE work: memslot lookup, gfn→pfn (GUP fast), mmu_lock, the iterator descent (KVM direct_page_fault / kvm_tdp_mmu_map). No published cycle count found; assumption. */
  tdpFault: number;
  /** Zapping one present SPTE (tdp_mmu_set_spte + handle_changed_spte bookkeeping); table pages freed are charged `zap` each. Assumption. */
  spteZap: number;
  /** SMM entry or RSM: KVM writes / reads the 512-byte SMRAM state-save area and reloads segment and control state (enter_smm, emulator_leave_smm). Assumption. */
  smmStateSave: number;
  /** Guest instructions per unit of guest "work" (syscall bodies, compute) are charged 1:1. */
}

export const DEFAULT_COSTS: CostModel = {
  vmExit: 1500,
  hwWalkRef: 20,
  tlbHit: 1,
  swWalkLevel: 60,
  spAlloc: 600,
  spteInstall: 40,
  syncSpte: 150,
  syncVisit: 30,
  emulate: 2500,
  zap: 300,
  localFlush: 400,
  addrFlush: 150,
  remoteFlush: 2500,
  hashLookup: 80,
  rootReload: 300,
  rootCacheLookup: 40,
  mmuReinit: 1000,
  nativeCr3: 200,
  tdpFault: 1500,
  spteZap: 20,
  smmStateSave: 3000,
};

/**
 * Exception vectors KVM on VMX always intercepts (vmx.c update_exception_bitmap:
 * #DB since the CVE-2015-8104 fixes, #UD, #AC, #MC; #PF only without EPT, handled
 * as a page fault): each exits and is reinjected (kvm_queue_exception).
 */
export const INTERCEPTED_VECTORS: ReadonlySet<number> = new Set([1, 6, 17, 18]);

/**
 * The most cycles one event may cost: 10^7 (3 ms at 3 GHz), so that simulated
 * totals over ~10^8 events stay exact in a double.
 */
export const MAX_COST = 1e7;

/** Throws a TypeError or RangeError naming the cost unless `v` is a number in 0..MAX_COST. */
export function checkCost(name: string, v: unknown): number {
  if (typeof v !== "number") throw new TypeError(`vmmu: cost ${name} must be a number of cycles, got ${show(v)}`);
  if (!Number.isFinite(v) || v < 0 || v > MAX_COST) throw new RangeError(`vmmu: cost ${name} must be 0..${MAX_COST} cycles, got ${show(v)}`);
  return v;
}

/** Throws naming the key unless `costs` is a complete cost model (own keys only) with every cost in range. */
export function checkCostModel(costs: unknown, name = "costs"): CostModel {
  const o = optionsObject(costs, name);
  for (const k of Object.keys(DEFAULT_COSTS)) checkCost(`${name}.${k}`, Object.hasOwn(o, k) ? o[k] : undefined);
  return o as unknown as CostModel;
}

/** Applies `name=value` overrides; throws naming a bad key or value (own keys of the model only). */
export function withOverrides(base: CostModel, overrides: Record<string, number>): CostModel {
  const out = { ...base };
  for (const [k, v] of Object.entries(optionsObject(overrides, "overrides"))) {
    if (!Object.hasOwn(base, k)) throw new RangeError(`vmmu: unknown cost '${k}' (one of: ${Object.keys(base).join(", ")})`);
    (out as Record<string, number>)[k] = checkCost(k, v);
  }
  return out;
}
