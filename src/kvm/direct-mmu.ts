// The contract between a vCPU running its guest under EPT and the VM-wide MMU
// that builds the EPT tables: KVM's direct MMU (arch/x86/kvm/mmu/mmu.c
// mmu_alloc_direct_roots, kvm_mmu_free_roots, direct_page_fault). Two
// implementations, selected per VM as KVM's `tdp_mmu` module parameter selects
// them: the TDP MMU (src/kvm/tdp-mmu.ts, arch/x86/kvm/mmu/tdp_mmu.c) and the
// legacy direct MMU (src/kvm/legacy-direct-mmu.ts: hashed shadow pages with
// direct roles, as KVM ran EPT before v5.10).
//
// Both build real EPT paging structures (SDM Vol.3C §29.3.2) in the host-table
// pool; the hardware walker (the wasm core, vCPU under setVmcs({ eptp })) walks
// them. Guest RAM is identity-mapped: the leaf for gfn maps host-physical
// address gfn << 12.

/** Root role word: `union kvm_mmu_page_role` as src/kvm/shadow-mmu.ts encodes it (roleAt, ROLE_* bits). */
export type RoleWord = number;

/** Role bit for SMM (KVM: role.smm, bits 31:24 of the word; as_id 1). */
export const ROLE_SMM = 1 << 24;

/** What one EPT-violation fault did, for cost accounting. */
export interface DirectFaultResult {
  /** RET_PF_SPURIOUS: the SPTE was already what the fault wanted (another vCPU fixed it, or a stale TLB entry). */
  spurious: boolean;
  /** Leaf and non-leaf SPTEs written. */
  spteInstalled: number;
  /** Page-table pages allocated (zeroed) from the pool. */
  spAllocated: number;
  /** A huge page split on the way down (no flush: same translation). */
  split: boolean;
  /** Level of the installed leaf (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB). */
  level: number;
  /** The fault replaced a present non-leaf SPTE and KVM flushes remote TLBs for the gfn (kvm_flush_remote_tlbs_gfn). */
  flush: boolean;
}

/** Counters every direct MMU keeps (cumulative since creation). */
export interface DirectMmuStats {
  rootsBuilt: number;
  /** Roots freed: their tree zapped and pages released. */
  rootsFreed: number;
  /** acquireRoot calls satisfied by an existing root. */
  rootsReused: number;
  faults: number;
  spurious: number;
  spteInstalled: number;
  spteZapped: number;
  spAllocated: number;
  spFreed: number;
  splits: number;
  /** TLB flushes the MMU asked for (remote = all vCPUs, for a gfn range or everything). */
  remoteFlushes: number;
}

export interface DirectMmu {
  readonly kind: "tdp" | "legacy";
  readonly stats: DirectMmuStats;

  /**
   * kvm_mmu_load → mmu_alloc_direct_roots: a root for `role` (level bits = the
   * EPT walk length, 4 or 5), found among the valid roots by role word or
   * built empty; takes one reference. `built` is true when a new root was
   * allocated. The EPTP the vCPU loads is hpa | WB memory type | (levels − 1) << 3
   * | A/D enable (bit 6) when `adEnabled`. `flush` is true when making room
   * for the root zapped present SPTEs (kvm_mmu_zap_oldest_mmu_pages): the
   * caller flushes every vCPU's TLB.
   */
  acquireRoot(role: RoleWord): { hpa: bigint; built: boolean; flush?: boolean };

  /**
   * kvm_mmu_free_roots for one root: drops one reference. What happens at zero
   * is the implementation's policy (v5.10 TDP: zap the whole tree and free it;
   * legacy: the root stays hashed unless invalid). Returns how many remote TLB
   * flushes KVM issues for it (v5.10: one per table the zap disconnects,
   * __handle_changed_spte → kvm_flush_remote_tlbs_with_address); the caller
   * flushes every vCPU that many times.
   */
  releaseRoot(hpa: bigint): number;

  /**
   * The EPT-violation handler (kvm_tdp_mmu_map / __direct_map): make `gpa`
   * reachable from root `rootHpa` with at least read access, plus write if
   * `write`, plus execute if `exec`. Throws a RangeError if `gpa` is outside guest RAM
   * (MMIO is not modelled).
   */
  pageFault(rootHpa: bigint, gpa: bigint, write: boolean, exec: boolean): DirectFaultResult;

  /** kvm_unmap_gfn_range / kvm_tdp_mmu_zap_leafs: zaps leaf SPTEs of gfns [start, end) in every valid root; returns how many and whether a flush is needed. */
  zapGfnRange(start: bigint, end: bigint): { zapped: number; flush: boolean };

  /** kvm_mmu_zap_all_fast: marks every root invalid; invalid roots are freed when their last reference drops. */
  invalidateAllRoots(): void;

  /** Whether `hpa` is a root that is still valid (vCPUs holding an invalid root must reload: KVM_REQ_MMU_FREE_OBSOLETE_ROOTS). */
  isValidRoot(hpa: bigint): boolean;

  /** Pool pages this MMU holds now. */
  pagesInUse(): number;
}

/** EPTP for a root built by a direct MMU (SDM Vol.3C §25.6.11): WB (6), walk length, A/D enable. */
export function directEptp(rootHpa: bigint, levels: 4 | 5, adEnabled: boolean): bigint {
  return rootHpa | 6n | (BigInt(levels - 1) << 3n) | (adEnabled ? 1n << 6n : 0n);
}
