// The TDP MMU (KVM arch/x86/kvm/mmu/tdp_mmu.c, introduced in v5.10 by Ben
// Gardon, 89e5a426): the direct MMU that builds EPT tables by walking them
// with an iterator (src/kvm/tdp-iter.ts) instead of hashing shadow pages,
// with roots shared by every vCPU whose root role matches.
//
// Root lifecycle, two versions (opts.preserveRoots):
//   v5.10   a root starts with one reference per vCPU holding it; the last
//           put (kvm_tdp_mmu_put_root → kvm_tdp_mmu_free_root) zaps the whole
//           tree and frees it — so a vCPU that unloads its root on every
//           CR0.WP toggle or SMM transition rebuilds the tree from nothing.
//   v6.4    edbdb43fc96b "Preserve TDP MMU roots until they are explicitly
//           invalidated" (Sean Christopherson): a new root starts at 2, one
//           reference for the vCPU and one for the MMU, put only by
//           kvm_tdp_mmu_invalidate_all_roots + kvm_tdp_mmu_zap_invalidated_roots.
//
// SPTE updates and the frozen-SPTE protocol. The fault path runs under
// mmu_lock held for read in KVM, concurrently with other vCPUs' faults: it
// links tables and installs leaves with compare-exchange
// (tdp_mmu_set_spte_atomic) and retries (RET_PF_RETRY) when one fails. A
// table it takes out of the tree (handle_removed_pt) has each child SPTE
// frozen to REMOVED_SPTE (0x5a0, FROZEN_SPTE in later kernels) first, so no
// other walker installs anything under it, then is freed. A fault that meets
// a frozen SPTE retries. 0x5a0 has bits 2:0 clear, so the hardware walker
// sees it as not present (an EPT violation; SDM Vol.3C §29.3.2 — with
// mode-based execute control bit 10 would count too, and vmmu's MMUs never
// enable it). The zap, write-protect and split entry points model the
// write-lock variants (kvm_tdp_mmu_zap_leafs, zap_gfn_range) and use plain
// stores, except the compare-exchange retry loops KVM also runs under the
// read lock (wrprot_gfn_range, tdp_mmu_split_huge_pages_root).
//
// Yielding (tdp_mmu_iter_cond_resched). KVM yields when need_resched(): a
// time test. Here the walk yields every `yieldEvery` iterator steps
// (default 512, one table's worth of SPTEs: an assumption) and restarts from
// the root at the next gfn (tdp_iter_restart). KVM flushes a pending TLB
// flush before dropping mmu_lock, because another thread could run during
// the yield; no other thread runs during a yield here, so the flush stays
// pending and is returned to the caller.
//
// The NX huge page mitigation (opts.nxHugePages; KVM's nx_huge_pages module
// parameter, b8e8c8303ff2 "kvm: mmu: ITLB_MULTIHIT mitigation", v5.4; "auto"
// turns it on for CPUs with the iTLB multihit erratum): a guest must never
// execute from a huge page the hypervisor could later split behind its back.
//   1. make_spte: a huge leaf is made without X;
//   2. kvm_mmu_hugepage_adjust: a fault with the execute bit in its exit
//      qualification (fault->huge_page_disallowed) maps at 4 KiB, while
//      req_level keeps the level it could have had;
//   3. kvm_tdp_mmu_map: a huge leaf in the way is split (tdp_mmu_split_huge_page;
//      make_huge_page_split_spte gives 4 KiB pieces X back), and each table
//      linked on the way down is marked nx_huge_page_disallowed — tracked as a
//      possible NX huge page (track_possible_nx_huge_page, kvm->stat.nx_lpage_splits)
//      when req_level reaches the level it replaces a huge page at;
//   4. disallowed_hugepage_adjust: a later fault whose goal level holds a
//      table so marked goes one level down instead of replacing the table by
//      a huge leaf (since 76901e56fb51 "explicitly check nx_hugepage in
//      disallowed_hugepage_adjust()", v6.1; v5.10 went down for any table).
// The recovery thread that zaps tracked tables (kvm_nx_huge_page_recovery_worker)
// is not modelled.

import type { DirectFaultResult, DirectMmu, DirectMmuStats, RoleWord } from "./direct-mmu.js";
import { HostPool } from "./host-pool.js";
import { TdpIter, pagesPerLevel, roundGfnForLevel } from "./tdp-iter.js";
import { SPTE_W, isLastSpte, isShadowPresent, makeLeafSpte, makeNonLeafSpte, makeSpteExecutable, spteHpa, splitChildSpte } from "./ept-spte.js";
import { ROLE_LEVEL_MASK } from "./shadow-mmu.js";
import { hex } from "../addr.js";
import { boolArg, intArg, optBoolArg, optionsObject, show } from "../validate.js";

/** KVM REMOVED_SPTE (FROZEN_SPTE since v6.11): a not-present SPTE no one may overwrite but its freezer. */
export const REMOVED_SPTE = 0x5a0n;

/** Role bit 11, role.invalid (shadow-mmu.ts diagram): never part of a lookup key. */
const ROLE_INVALID = 1 << 11;

export interface TdpMmuOptions {
  /** Guest RAM [0, ramBytes), a whole number of 4 KiB pages. */
  ramBytes: bigint;
  /** EPT walk length (default 4; KVM picks 5 only when the guest MAXPHYADDR needs it). */
  levels?: 4 | 5;
  /** EPT A/D bits (default true: KVM's enable_ept_ad_bits). */
  adEnabled?: boolean;
  /** v6.4 roots (edbdb43fc96b): the MMU holds a reference until invalidateAllRoots. */
  preserveRoots: boolean;
  /**
   * The largest page the host backs guest RAM with (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB;
   * default 2, transparent huge pages). An assumption: KVM reads it from the host
   * page tables (host_pfn_mapping_level); vmmu has no host mm to read.
   */
  hostLevel?: 1 | 2 | 3;
  /** Iterator steps between yield points (default 512). */
  yieldEvery?: number;
  /** KVM's nx_huge_pages (the iTLB multihit mitigation; header): huge leaves non-executable, instruction fetches mapped at 4 KiB (default false). */
  nxHugePages?: boolean;
  /**
   * A huge leaf in a fault's way is split into a table of smaller leaves with
   * no flush (David Matlack, c4b33d28ea51, v6.2; the default). Off: as v5.10's
   * kvm_tdp_mmu_map, the huge SPTE is zapped, remote TLBs are flushed
   * (kvm_flush_remote_tlbs_with_address) and an empty table is linked, so the
   * region's other gfns fault again.
   */
  splitOnFault?: boolean;
}

/**
 * DirectMmuStats plus the iterator's yields and the faults that returned
 * RET_PF_RETRY. spAllocated and spFreed count root pages too, so
 * spAllocated − spFreed = pagesInUse(); a split adds 513 to spteInstalled
 * (512 pieces and the link).
 */
export interface TdpMmuStats extends DirectMmuStats {
  yields: number;
  retries: number;
  /** Leaf SPTEs write-protected by wrprotGfnRange. */
  wrprotected: number;
  /**
   * Tables a fault linked where, but for the NX huge page mitigation, it would
   * have mapped a huge page (track_possible_nx_huge_page). KVM's
   * kvm->stat.nx_lpage_splits counts the same tables but as a gauge (down when
   * one is freed): possibleNxHugePages().
   */
  nxLpageSplits: number;
}

/** A fault's result; `retry` is RET_PF_RETRY (nothing changed: a frozen SPTE or a lost compare-exchange; the vCPU re-enters and faults again). */
export interface TdpFaultResult extends DirectFaultResult {
  retry: boolean;
}

/** One root (struct kvm_mmu_page of a TDP root): its table, role word, references and role.invalid. */
export interface TdpRoot {
  readonly hpa: bigint;
  readonly role: RoleWord;
  refcount: number;
  invalid: boolean;
}

interface RootRec extends TdpRoot {
  /** Pool entry number of SPTE 0 of the root table. */
  readonly base: number;
}

function zeroStats(): TdpMmuStats {
  return {
    rootsBuilt: 0, rootsFreed: 0, rootsReused: 0, faults: 0, spurious: 0, spteInstalled: 0, spteZapped: 0,
    spAllocated: 0, spFreed: 0, splits: 0, remoteFlushes: 0, yields: 0, retries: 0, wrprotected: 0,
    nxLpageSplits: 0,
  };
}

export class TdpMmu implements DirectMmu {
  readonly kind = "tdp" as const;
  readonly stats: TdpMmuStats = zeroStats();
  readonly levels: 4 | 5;
  readonly adEnabled: boolean;
  readonly preserveRoots: boolean;
  readonly ramBytes: bigint;
  readonly yieldEvery: number;
  readonly nxHugePages: boolean;
  readonly splitOnFault: boolean;
  private host: 1 | 2 | 3;
  private readonly ramPages: number;
  /** First gfn past the tree (512^levels). */
  private readonly maxGfn: number;
  private readonly roots: RootRec[] = [];
  private readonly it: TdpIter;
  private sinceYield = 0;
  private pages = 0;
  /**
   * Tables with sp->nx_huge_page_disallowed (linked by a fault whose huge page
   * the mitigation disallowed), by hpa → whether tracked as a possible NX huge
   * page (req_level ≥ the level of the SPTE linking it).
   */
  private readonly nxDisallowed = new Map<bigint, boolean>();

  constructor(readonly pool: HostPool, opts: TdpMmuOptions) {
    if (!(pool instanceof HostPool)) throw new TypeError(`vmmu: pool must be a HostPool, got ${show(pool)}`);
    const o = optionsObject(opts, "opts");
    const levels = o.levels === undefined ? 4 : o.levels;
    if (levels !== 4 && levels !== 5) throw new RangeError(`vmmu: opts.levels must be 4 or 5, got ${show(levels)}`);
    this.levels = levels;
    this.maxGfn = pagesPerLevel(levels + 1);
    if (typeof o.ramBytes !== "bigint") throw new TypeError(`vmmu: opts.ramBytes must be a bigint, got ${show(o.ramBytes)}`);
    if (o.ramBytes <= 0n || (o.ramBytes & 0xfffn) !== 0n || o.ramBytes > BigInt(this.maxGfn) << 12n) {
      throw new RangeError(`vmmu: opts.ramBytes must be a positive multiple of 4096 within the ${levels}-level EPT span, got ${show(o.ramBytes)}`);
    }
    this.ramBytes = o.ramBytes;
    this.ramPages = Number(o.ramBytes >> 12n);
    this.adEnabled = optBoolArg(o.adEnabled, "opts.adEnabled", true);
    this.preserveRoots = boolArg(o.preserveRoots, "opts.preserveRoots");
    this.host = (o.hostLevel === undefined ? 2 : intArg(o.hostLevel, "opts.hostLevel", 1, 3)) as 1 | 2 | 3;
    this.yieldEvery = o.yieldEvery === undefined ? 512 : intArg(o.yieldEvery, "opts.yieldEvery", 1, 2 ** 30);
    this.nxHugePages = optBoolArg(o.nxHugePages, "opts.nxHugePages", false);
    this.splitOnFault = optBoolArg(o.splitOnFault, "opts.splitOnFault", true);
    this.it = new TdpIter(pool);
  }

  /** The largest page the host backs guest RAM with (1..3); changing it affects later faults only. */
  get hostLevel(): 1 | 2 | 3 {
    return this.host;
  }

  set hostLevel(level: 1 | 2 | 3) {
    this.host = intArg(level, "hostLevel", 1, 3) as 1 | 2 | 3;
  }

  /** The roots as they stand (copies), oldest first. */
  rootList(): TdpRoot[] {
    return this.roots.map((r) => ({ hpa: r.hpa, role: r.role, refcount: r.refcount, invalid: r.invalid }));
  }

  /**
   * kvm_tdp_mmu_get_vcpu_root_hpa (v5.10) / kvm_tdp_mmu_alloc_root (v6.4):
   * 1. a valid root whose role word equals `role` → one more reference (rootsReused);
   * 2. else a zeroed pool page as a new root, with 2 references under
   *    preserveRoots (the vCPU's and the MMU's), else 1 (rootsBuilt).
   * `role`'s level bits must equal the MMU's levels; role.invalid must be clear.
   */
  acquireRoot(role: RoleWord): { hpa: bigint; built: boolean } {
    const r = intArg(role, "role", -(2 ** 31), 0xffff_ffff) >>> 0;
    if ((r & ROLE_LEVEL_MASK) !== this.levels) throw new RangeError(`vmmu: role ${hex(BigInt(r))} has level ${r & ROLE_LEVEL_MASK}; this TDP MMU builds ${this.levels}-level roots`);
    if ((r & ROLE_INVALID) !== 0) throw new RangeError(`vmmu: role ${hex(BigInt(r))} has role.invalid set (it is never part of a lookup key)`);
    for (const root of this.roots) {
      if (!root.invalid && root.role === r) {
        root.refcount++;
        this.stats.rootsReused++;
        return { hpa: root.hpa, built: false };
      }
    }
    const hpa = this.allocTable();
    this.roots.push({ hpa, role: r, refcount: this.preserveRoots ? 2 : 1, invalid: false, base: this.pool.entryBase(hpa) });
    this.stats.rootsBuilt++;
    this.stats.spAllocated++;
    return { hpa, built: true };
  }

  /**
   * kvm_tdp_mmu_put_root for a vCPU's reference. At zero the root is freed:
   * its whole tree zapped (zap_gfn_range(root, 0, max_gfn)), every table page
   * and the root page returned to the pool (rootsFreed). Under preserveRoots a
   * valid root keeps the MMU's reference, so a release that would drop it
   * throws (KVM: the last put is only legal for an invalid root), as does a
   * release of an hpa that is not a root.
   */
  releaseRoot(hpa: bigint): number {
    const root = this.rootOf(hpa, "releaseRoot");
    if (this.preserveRoots && !root.invalid && root.refcount <= 1) {
      throw new Error(`vmmu: releaseRoot(${hex(hpa)}): the root holds no vCPU reference (only the MMU's, put by invalidateAllRoots)`);
    }
    const freed = this.stats.spFreed;
    this.putRoot(root);
    // v5.10: every table the free disconnects is flushed from every vCPU, one
    // kvm_flush_remote_tlbs_with_address per table (__handle_changed_spte →
    // handle_disconnected_tdp_mmu_page), each a KVM_REQUEST_WAIT request that
    // IPIs the vCPUs in guest mode and waits for them; the root page itself is
    // freed without one. bb95dfb9e2df (v5.19) dropped these flushes for a whole
    // root; under preserved roots a root's tree is zapped when it is invalidated,
    // and its last put flushes nothing. (Requests coalesce only while a target
    // is still out of guest mode; each call is counted.)
    const flushes = this.preserveRoots ? 0 : Math.max(0, this.stats.spFreed - freed - 1);
    this.stats.remoteFlushes += flushes;
    return flushes;
  }

  isValidRoot(hpa: bigint): boolean {
    for (const r of this.roots) if (r.hpa === hpa) return !r.invalid;
    return false;
  }

  pagesInUse(): number {
    return this.pages;
  }

  /** Tables tracked as possible NX huge pages now (KVM's kvm->stat.nx_lpage_splits); 0 without nxHugePages. */
  possibleNxHugePages(): number {
    let n = 0;
    for (const tracked of this.nxDisallowed.values()) if (tracked) n++;
    return n;
  }

  /**
   * kvm_tdp_mmu_map. Steps:
   * 1. kvm_mmu_hugepage_adjust: req_level is the largest level ≤ hostLevel
   *    whose aligned gfn range lies inside guest RAM; the goal level is
   *    req_level, or 4 KiB for an instruction fetch (`exec`) under nxHugePages;
   * 2. walk the root down to the goal: under nxHugePages, a table at the goal
   *    level that a disallowed fault linked lowers the goal by one
   *    (disallowed_hugepage_adjust); a frozen SPTE → retry; a present non-leaf
   *    → step down; a non-present SPTE → link a zeroed table (tdp_mmu_link_sp);
   *    a huge leaf → split it into a table of 512 pieces and link that
   *    (tdp_mmu_split_huge_page: same translation, or 4 KiB pieces made
   *    executable under nxHugePages; no flush). A table linked by an `exec`
   *    fault under nxHugePages is marked nx_huge_page_disallowed, and counted
   *    in nxLpageSplits when req_level reaches the level it is linked at;
   * 3. at the goal (tdp_mmu_map_handle_target_level): make_spte for guest RAM
   *    (ACC_ALL: RWX whatever the access, but not X on a huge leaf under
   *    nxHugePages; D pre-set with A/D on since the SPTE
   *    is writable); equal to the SPTE there → spurious; else install it with
   *    compare-exchange; if it replaced a present non-leaf, the child table is
   *    taken out (handle_removed_pt) and remote TLBs are flushed for the gfn.
   * A failed compare-exchange or a frozen SPTE returns `retry` with nothing changed.
   * Throws a RangeError for a gpa outside guest RAM, an Error for an unknown
   * or invalid root (KVM reloads the root before the fault is handled) or an
   * empty pool.
   */
  pageFault(rootHpa: bigint, gpa: bigint, write: boolean, exec: boolean): TdpFaultResult {
    const root = this.rootOf(rootHpa, "pageFault");
    if (root.invalid) throw new Error(`vmmu: pageFault: root ${hex(rootHpa)} is invalid; the vCPU must load a valid root first (KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)`);
    if (typeof gpa !== "bigint") throw new TypeError(`vmmu: gpa must be a bigint, got ${show(gpa)}`);
    if (gpa < 0n || gpa >= this.ramBytes) throw new RangeError(`vmmu: gpa ${hex(gpa)} is outside guest RAM [0, ${hex(this.ramBytes)}) (MMIO is not modelled)`);
    boolArg(write, "write");
    boolArg(exec, "exec");
    const st = this.stats;
    st.faults++;
    const res: TdpFaultResult = { spurious: false, spteInstalled: 0, spAllocated: 0, split: false, level: 0, flush: false, retry: false };
    const gfn = Number(gpa >> 12n);
    const nx = this.nxHugePages;
    const reqLevel = this.goalLevel(gfn);
    const disallowed = exec && nx;
    let goal = disallowed ? 1 : reqLevel;
    const it = this.it;
    for (it.start(root.base, this.levels, 1, gfn, gfn + 1); it.more(); it.next()) {
      const old = it.oldSpte;
      if (nx && it.level === goal && goal > 1 && isShadowPresent(old) && !isLastSpte(old, goal) && this.nxDisallowed.has(spteHpa(old))) goal--;
      if (old === REMOVED_SPTE) return this.retry(res);
      if (it.level === goal) return this.mapTarget(it, res);
      if (isShadowPresent(old) && !isLastSpte(old, it.level)) continue;
      const child = this.allocTable();
      const huge = isShadowPresent(old) && this.splitOnFault;
      if (huge) this.fillSplit(child, old, it.level);
      else if (isShadowPresent(old)) {
        // v5.10: the huge leaf goes, with a remote flush, before the empty table is linked.
        res.flush = true;
        st.spteZapped++;
        st.remoteFlushes++;
      }
      if (!this.pool.cmpxchg(it.sptep, old, makeNonLeafSpte(child, this.adEnabled))) {
        this.freeTable(child);
        return this.retry(res);
      }
      res.spAllocated++;
      st.spAllocated++;
      if (disallowed) {
        const possible = reqLevel >= it.level;
        this.nxDisallowed.set(child, possible);
        if (possible) st.nxLpageSplits++;
      }
      const written = huge ? 513 : 1;
      res.spteInstalled += written;
      st.spteInstalled += written;
      if (huge) {
        res.split = true;
        st.splits++;
      }
    }
    return this.retry(res);
  }

  /**
   * kvm_tdp_mmu_zap_leafs on every valid root: each present leaf SPTE meeting
   * gfns [start, end) is cleared (a huge leaf as a whole); tables stay.
   * Returns the leaves zapped and whether the caller must flush remote TLBs.
   * (KVM's mmu_notifier path, kvm_tdp_mmu_unmap_gfn_range, also zaps invalid
   * roots, whose trees it zaps asynchronously; here invalidateAllRoots zaps
   * them at once, so an invalid root has no leaf left to zap.)
   */
  zapGfnRange(start: bigint, end: bigint): { zapped: number; flush: boolean } {
    const [s, e] = this.gfnRange(start, end, "zapGfnRange");
    let zapped = 0;
    for (const root of this.roots) if (!root.invalid) zapped += this.zapRange(root, s, e, true);
    if (zapped > 0) this.stats.remoteFlushes++;
    return { zapped, flush: zapped > 0 };
  }

  /**
   * kvm_tdp_mmu_wrprot_slot → wrprot_gfn_range on every valid root: clears W
   * on present leaf SPTEs at `minLevel` or above meeting gfns [start, end),
   * by compare-exchange retried until it holds (MMU-writable stays set, so a
   * write fault can make the SPTE writable again). Returns whether any SPTE
   * changed; the caller flushes remote TLBs if so.
   */
  wrprotGfnRange(start: bigint, end: bigint, minLevel: number): boolean {
    const [s, e] = this.gfnRange(start, end, "wrprotGfnRange");
    intArg(minLevel, "minLevel", 1, 3);
    let changed = false;
    const it = this.it;
    for (const root of this.roots) {
      if (root.invalid) continue;
      for (it.start(root.base, this.levels, minLevel, s, e); it.more(); it.next()) {
        if (this.condResched(it)) continue;
        for (;;) {
          const old = it.oldSpte;
          if (!isShadowPresent(old) || !isLastSpte(old, it.level) || (old & SPTE_W) === 0n) break;
          if (this.pool.cmpxchg(it.sptep, old, old & ~SPTE_W)) {
            changed = true;
            this.stats.wrprotected++;
            break;
          }
          it.reread();
        }
      }
    }
    if (changed) this.stats.remoteFlushes++;
    return changed;
  }

  /**
   * kvm_tdp_mmu_try_split_huge_pages → tdp_mmu_split_huge_pages_root to 4 KiB,
   * on every valid root: each huge leaf meeting gfns [start, end) becomes a
   * table of 512 pieces with the same rights and A/D bits (1 GiB leaves in two
   * steps, the walk descending into each new table); same translation, so no
   * flush. Returns the number of huge pages split.
   */
  splitHugePages(start: bigint, end: bigint): number {
    const [s, e] = this.gfnRange(start, end, "splitHugePages");
    let n = 0;
    const it = this.it;
    for (const root of this.roots) {
      if (root.invalid) continue;
      for (it.start(root.base, this.levels, 2, s, e); it.more(); it.next()) {
        if (this.condResched(it)) continue;
        for (;;) {
          const old = it.oldSpte;
          if (!isShadowPresent(old) || !isLastSpte(old, it.level) || old === REMOVED_SPTE) break;
          const child = this.allocTable();
          this.fillSplit(child, old, it.level);
          if (this.pool.cmpxchg(it.sptep, old, makeNonLeafSpte(child, this.adEnabled))) {
            n++;
            this.stats.splits++;
            this.stats.spAllocated++;
            this.stats.spteInstalled += 513;
            break;
          }
          this.freeTable(child);
          it.reread();
        }
      }
    }
    return n;
  }

  /**
   * kvm_tdp_mmu_invalidate_all_roots + kvm_tdp_mmu_zap_invalidated_roots
   * (v5.10: kvm_mmu_zap_all_fast → kvm_tdp_mmu_zap_all): every valid root is
   * marked invalid and its tree zapped (the root page stays while referenced);
   * under preserveRoots the MMU's reference is put, freeing a root no vCPU
   * holds. No flush: a vCPU must load a valid root, and loading a root flushes
   * (kvm_mmu_load → kvm_mmu_flush_tlb_current).
   */
  invalidateAllRoots(): void {
    for (const root of [...this.roots]) {
      if (root.invalid) continue;
      root.invalid = true;
      this.zapRange(root, 0, this.maxGfn, false);
      if (this.preserveRoots) this.putRoot(root);
    }
  }

  // ---- internals -------------------------------------------------------------

  private rootOf(hpa: bigint, what: string): RootRec {
    if (typeof hpa !== "bigint") throw new TypeError(`vmmu: ${what}: rootHpa must be a bigint, got ${show(hpa)}`);
    for (const r of this.roots) if (r.hpa === hpa) return r;
    throw new Error(`vmmu: ${what}: ${hex(hpa)} is not a root of this TDP MMU`);
  }

  private gfnRange(start: bigint, end: bigint, what: string): [number, number] {
    if (typeof start !== "bigint" || typeof end !== "bigint") throw new TypeError(`vmmu: ${what}: start and end must be bigints, got ${show(start)}, ${show(end)}`);
    if (start < 0n || end < start) throw new RangeError(`vmmu: ${what}: need 0 ≤ start ≤ end, got start ${start}, end ${end}`);
    const cap = BigInt(this.maxGfn);
    return [Number(start < cap ? start : cap), Number(end < cap ? end : cap)];
  }

  /** kvm_mmu_hugepage_adjust with one memslot [0, ramBytes) and the host's page size. */
  private goalLevel(gfn: number): number {
    for (let level = this.host; level > 1; level--) {
      const n = pagesPerLevel(level);
      if (roundGfnForLevel(gfn, level) + n <= this.ramPages) return level;
    }
    return 1;
  }

  private retry(res: TdpFaultResult): TdpFaultResult {
    res.retry = true;
    this.stats.retries++;
    return res;
  }

  private mapTarget(it: TdpIter, res: TdpFaultResult): TdpFaultResult {
    const st = this.stats, old = it.oldSpte, level = it.level;
    res.level = level;
    const spte = makeLeafSpte(BigInt(it.gfn) << 12n, level, { write: true, exec: !(this.nxHugePages && level > 1), ad: this.adEnabled });
    if (spte === old) {
      res.spurious = true;
      st.spurious++;
      return res;
    }
    if (!this.pool.cmpxchg(it.sptep, old, spte)) return this.retry(res);
    res.spteInstalled++;
    st.spteInstalled++;
    if (isShadowPresent(old) && !isLastSpte(old, level)) {
      this.removeTable(spteHpa(old), level - 1);
      res.flush = true;
      st.remoteFlushes++;
    }
    return res;
  }

  /**
   * tdp_mmu_split_huge_page's fill: the 512 pieces of huge leaf `huge` at
   * `level` into the table at `child` (make_huge_page_split_spte: 4 KiB pieces
   * executable under nxHugePages, since guest RAM's access is ACC_ALL).
   */
  private fillSplit(child: bigint, huge: bigint, level: number): void {
    const base = this.pool.entryBase(child);
    const exec = this.nxHugePages && level === 2;
    for (let i = 0; i < 512; i++) {
      const piece = splitChildSpte(huge, level, i);
      this.pool.setEntry(base + i, exec ? makeSpteExecutable(piece) : piece);
    }
  }

  /** A zeroed pool page for a table; throws when the pool is empty (KVM: the fault's memory cache top-up fails, -ENOMEM). */
  private allocTable(): bigint {
    const hpa = this.pool.alloc();
    if (hpa === undefined) throw new Error("vmmu: the host-table pool is exhausted (TDP MMU table allocation)");
    this.pages++;
    return hpa;
  }

  private freeTable(hpa: bigint): void {
    this.nxDisallowed.delete(hpa);
    this.pool.release(hpa);
    this.pages--;
  }

  /**
   * handle_removed_pt: takes the table at `hpa` (level `level`) out of use.
   * 1. freeze each child SPTE to REMOVED_SPTE by compare-exchange;
   * 2. a present leaf child counts as zapped; a present non-leaf child's table is removed first (bottom-up);
   * 3. the page goes back to the pool (KVM: call_rcu, after lockless walkers are done).
   */
  private removeTable(hpa: bigint, level: number): void {
    const base = this.pool.entryBase(hpa);
    for (let i = 0; i < 512; i++) {
      let old = this.pool.entry(base + i);
      while (!this.pool.cmpxchg(base + i, old, REMOVED_SPTE)) old = this.pool.entry(base + i);
      if (!isShadowPresent(old)) continue;
      if (isLastSpte(old, level)) this.stats.spteZapped++;
      else this.removeTable(spteHpa(old), level - 1);
    }
    this.freeTable(hpa);
    this.stats.spFreed++;
  }

  /**
   * Zaps SPTEs of `root` meeting gfns [start, end). `leafOnly` (tdp_mmu_zap_leafs):
   * present leaves cleared, tables kept. Else (v5.10 zap_gfn_range): also a
   * present non-leaf SPTE whose whole range lies inside [start, end) is
   * cleared and its table removed (handle_removed_pt). Returns the leaves zapped.
   */
  private zapRange(root: RootRec, start: number, end: number, leafOnly: boolean): number {
    const it = this.it;
    const before = this.stats.spteZapped;
    for (it.start(root.base, this.levels, 1, start, end); it.more(); it.next()) {
      if (this.condResched(it)) continue;
      const old = it.oldSpte;
      if (!isShadowPresent(old)) continue;
      if (isLastSpte(old, it.level)) {
        this.pool.setEntry(it.sptep, 0n);
        this.stats.spteZapped++;
        continue;
      }
      if (leafOnly || it.gfn < start || it.gfn + pagesPerLevel(it.level) > end) continue;
      this.pool.setEntry(it.sptep, 0n);
      this.removeTable(spteHpa(old), it.level - 1);
    }
    return this.stats.spteZapped - before;
  }

  /** tdp_mmu_iter_cond_resched: every yieldEvery steps, yield if the walk has moved since its last (re)start. */
  private condResched(it: TdpIter): boolean {
    if (++this.sinceYield < this.yieldEvery) return false;
    if (!it.yieldNow()) return false;
    this.sinceYield = 0;
    this.stats.yields++;
    return true;
  }

  /** kvm_tdp_mmu_put_root: one reference less; at zero the tree is zapped and every page freed. */
  private putRoot(root: RootRec): void {
    if (--root.refcount > 0) return;
    this.zapRange(root, 0, this.maxGfn, false);
    this.roots.splice(this.roots.indexOf(root), 1);
    this.freeTable(root.hpa);
    this.stats.spFreed++;
    this.stats.rootsFreed++;
  }
}
