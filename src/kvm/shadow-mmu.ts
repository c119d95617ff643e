// The VM-wide half of a KVM-style shadow MMU (arch/x86/kvm/mmu/mmu.c,
// mmu_internal.h, spte.c; arch/x86/include/asm/kvm_host.h kvm_mmu_page_role): shadow pages keyed
// by (gfn, role) in a hash, write protection of guest page-table frames,
// unsync leaf pages and their resync, the reverse map from gfns to the leaf
// SPTEs that map them, zapping, and remote TLB flushes. The per-vCPU half
// (roots, CR3 loads, exits) is src/kvm/shadow-vcpu.ts.
//
// Shadow pages live in the host-table pool and are real x86-64 paging
// structures: the hardware walker (the wasm core) walks them. Leaf SPTEs map
// a gfn to host-physical address gpa (guest RAM is identity-mapped into
// host-physical space); non-leaf SPTEs point at pool pages.

import type { GuestMemory } from "../memory.js";
import type { HostPool } from "./host-pool.js";
import type { CostModel } from "./cost-model.js";
import type { ShadowPolicy } from "./policy.js";
import { PTE } from "../x86/regs.js";
import { SimLock } from "./sim-lock.js";
import { flushRemoteTlbs, type KickTarget } from "./guest-mode.js";

// ---- role (union kvm_mmu_page_role, one u32) --------------------------------
//
//   31    24 23  18 17  16  15  14  13  12  11  10  8  7   6 5  4   3    0
//  ┌────────┬──────┬───┬───┬───┬───┬───┬───┬───┬──────┬───┬───┬───┬──────┐
//  │  smm   │  0   │gm │ad │sa │se │wp │nx │inv│access│dir│ 0 │ 0 │level │
//  └────────┴──────┴───┴───┴───┴───┴───┴───┴───┴──────┴───┴───┴───┴──────┘
//   gm guest_mode, ad ad_disabled, sa smap_andnot_wp, se smep_andnot_wp,
//   wp cr0_wp, nx efer_nx, inv invalid (never part of a lookup key).

export const ROLE_LEVEL_MASK = 0xf;
export const ROLE_DIRECT = 1 << 7;
export const ROLE_ACCESS_SHIFT = 8;
export const ROLE_EFER_NX = 1 << 12;
export const ROLE_CR0_WP = 1 << 13;
export const ROLE_SMEP_ANDNOT_WP = 1 << 14;
export const ROLE_SMAP_ANDNOT_WP = 1 << 15;
export const ROLE_GUEST_MODE = 1 << 17;

/** syncLeaf outcomes. */
const SYNC_SAME = 0, SYNC_CHANGED = 1, SYNC_FLUSH = 2, SYNC_DROPPED = 3;
/** Unsync pages mmu_sync_children syncs per write-protect round (KVM_PAGE_ARRAY_NR). */
const SYNC_BATCH = 16;
/** Low-word PTE bits syncLeaf edits. */
const PTE_RW = 1 << 1, PTE_US = 1 << 2, PTE_A = 1 << 5, PTE_D = 1 << 6;

/** ACC bits (KVM): X = not XD, W, U. */
export const ACC_EXEC = 1, ACC_WRITE = 2, ACC_USER = 4, ACC_ALL = 7;

/** The role word of a shadow page at `level` under the guest mode `base` (level bits clear). */
export function roleAt(base: number, level: number, access: number, direct: boolean): number {
  return (base & ~(ROLE_LEVEL_MASK | ROLE_DIRECT | (7 << ROLE_ACCESS_SHIFT))) | level | (access << ROLE_ACCESS_SHIFT) | (direct ? ROLE_DIRECT : 0);
}

export function roleLevel(role: number): number {
  return role & ROLE_LEVEL_MASK;
}

/** One shadow page (struct kvm_mmu_page): a pool page of 512 SPTEs shadowing one guest table (or a direct range). */
export class ShadowPage {
  /** Child shadow pages by SPTE index (non-leaf pages). */
  readonly children = new Map<number, ShadowPage>();
  /** gfn each leaf SPTE maps, by index (for the reverse map). */
  readonly leafGfns = new Map<number, bigint>();
  /** Parent SPTEs pointing here. */
  readonly parents = new Set<{ sp: ShadowPage; index: number }>();
  /** Indices of child SPTEs leading to unsync pages (unsync_child_bitmap). */
  readonly unsyncChildren = new Set<number>();
  unsync = false;
  valid = true;
  rootCount = 0;
  writeFlooding = 0;
  /** gfn as a number (exact: guest RAM is below 2^52 bytes), the key of the VM-wide maps. */
  readonly gfnKey: number;

  /** `entryBase` is the pool-wide number of SPTE 0 (HostPool.entryBase). */
  constructor(readonly gfn: bigint, readonly role: number, readonly pcid: number, readonly hpa: bigint, readonly entryBase: number) {
    this.gfnKey = Number(gfn);
  }

  get level(): number {
    return roleLevel(this.role);
  }

  get direct(): boolean {
    return (this.role & ROLE_DIRECT) !== 0;
  }

  get access(): number {
    return (this.role >> ROLE_ACCESS_SHIFT) & 7;
  }
}

/** Counters of the shadow MMU; the exit counts live on the vCPUs. */
export interface ShadowStats {
  spAllocated: number;
  spZapped: number;
  spLive: number;
  spPeak: number;
  syncs: number;
  spteSynced: number;
  /** SPTEs whose sync rewrite asked mmu_spte_update for a TLB flush (accessed, or losing W or D). */
  syncSpteFlushes: number;
  spteInstalled: number;
  emulatedWrites: number;
  unsyncs: number;
  remoteFlushes: number;
  localFlushes: number;
  addrFlushes: number;
  guestWalks: number;
  guestWalkRefs: number;
  rootsBuilt: number;
  /** Remote-flush requests per target vCPU that found it in guest mode (an IPI round trip waited for). */
  flushIpis: number;
  /** Remote-flush requests per target vCPU that found it handling an exit (not waited for). */
  flushIpisSkipped: number;
  /** Cycles the vCPUs spun on mmu_lock, summed. */
  mmuLockWait: number;
  /** Root references dropped (kvm_mmu_free_roots, one root): the shadow page stays hashed unless it was zapped. */
  rootsFreed: number;
  rootsReused: number;
  /** Cached roots reused after the guest flushed their PCID (lai2021: kept with need-sync, resynced and flushed on reuse). */
  rootsNeedSyncReused: number;
}

function zeroStats(): ShadowStats {
  return {
    spAllocated: 0, spZapped: 0, spLive: 0, spPeak: 0, syncs: 0, spteSynced: 0, syncSpteFlushes: 0, spteInstalled: 0, emulatedWrites: 0,
    unsyncs: 0, remoteFlushes: 0, localFlushes: 0, addrFlushes: 0, guestWalks: 0, guestWalkRefs: 0,
    rootsBuilt: 0, rootsFreed: 0, rootsReused: 0, rootsNeedSyncReused: 0, flushIpis: 0, flushIpisSkipped: 0, mmuLockWait: 0,
  };
}

/** What a VM-wide operation needs from the vCPUs: flushing their hardware TLBs (in guest mode or not), charging time. */
export interface FlushTarget extends KickTarget {
  /** Charges `cycles` to this vCPU. */
  charge(cycles: number): void;
  /** The vCPU's simulated time. */
  readonly cycles: number;
  /** Sets KVM_REQ_TLB_FLUSH on the vCPU; true if it was not pending (requests coalesce into one flush at the next entry). */
  requestTlbFlush(): boolean;
}

export class ShadowMmu {
  /** gfn (as a number, like every gfn key below) → shadow pages of it. */
  private readonly hash = new Map<number, ShadowPage[]>();
  /** gfn → number of upper-level (level > 1) shadow pages shadowing it (gfn_write_track). */
  private readonly writeTrack = new Map<number, number>();
  /** gfn → level-1 shadow pages shadowing it. */
  private readonly leafShadows = new Map<number, Set<ShadowPage>>();
  /** gfn → leaf SPTEs mapping it (rmap), keyed by pool entry number (sp.entryBase + index). */
  private readonly rmap = new Map<number, Map<number, ShadowPage>>();
  /** Shadow pages in allocation order, oldest first (active_mmu_pages), for reclaim. */
  private readonly active = new Set<ShadowPage>();
  readonly stats: ShadowStats = zeroStats();
  vcpus: FlushTarget[] = [];
  /**
   * kvm->mmu_lock (a spinlock in every kernel the shadow policies cover) in
   * simulated time: the vCPUs' shadow-MMU work holds it (ShadowVcpu.locked).
   */
  readonly mmuLock = new SimLock(() => this.vcpus.reduce((m, v) => Math.min(m, v.cycles), Infinity));
  private readonly ipiCount = { ipis: 0, skipped: 0 };
  /** The guest table being synced, copied out in one piece (syncPage). */
  private readonly gpteWords = new Uint32Array(1024);
  private readonly gpteBytes = new Uint8Array(this.gpteWords.buffer);
  /** Guest RAM as numbers (exact: below 2^52). */
  private readonly ramBase: number;
  private readonly ramSize: number;

  constructor(readonly memory: GuestMemory, readonly pool: HostPool, readonly policy: ShadowPolicy, readonly costs: CostModel) {
    this.ramBase = Number(memory.slot.base);
    this.ramSize = Number(memory.slot.size);
  }

  // ---- write protection -----------------------------------------------------

  /** True iff a leaf SPTE mapping `gfn` must stay read-only (some shadow page shadows gfn and cannot be unsync). */
  isWriteProtected(gfn: bigint): boolean {
    return this.isWriteProtectedKey(Number(gfn));
  }

  private isWriteProtectedKey(k: number): boolean {
    if ((this.writeTrack.get(k) ?? 0) > 0) return true;
    const leaves = this.leafShadows.get(k);
    if (!leaves) return false;
    for (const sp of leaves) if (sp.valid && !sp.unsync) return true;
    return false;
  }

  /**
   * mmu_try_to_unsync_pages: called when a writable SPTE for `gfn` is wanted.
   * Returns true if the SPTE may be writable (no shadow page, or every
   * shadowing page is level 1 and is now unsync).
   */
  tryUnsync(gfn: bigint): boolean {
    const k = Number(gfn);
    if ((this.writeTrack.get(k) ?? 0) > 0) return false;
    const leaves = this.leafShadows.get(k);
    if (!leaves) return true;
    for (const sp of leaves) {
      if (!sp.valid || sp.unsync) continue;
      sp.unsync = true;
      this.stats.unsyncs++;
      this.markUnsyncUp(sp);
    }
    return true;
  }

  private markUnsyncUp(sp: ShadowPage): void {
    for (const p of sp.parents) {
      const had = p.sp.unsyncChildren.size > 0;
      p.sp.unsyncChildren.add(p.index);
      if (!had) this.markUnsyncUp(p.sp);
    }
  }

  private clearUnsyncUp(sp: ShadowPage): void {
    for (const p of sp.parents) {
      p.sp.unsyncChildren.delete(p.index);
      if (p.sp.unsyncChildren.size === 0 && !p.sp.unsync) this.clearUnsyncUp(p.sp);
    }
  }

  /**
   * Makes every leaf SPTE mapping `gfn` read-only (rmap walk). Returns true if
   * a writable SPTE changed (the caller owes a TLB flush).
   */
  private writeProtectGfn(gfn: number): boolean {
    const refs = this.rmap.get(gfn);
    if (!refs) return false;
    let changed = false;
    for (const n of refs.keys()) {
      const spte = this.pool.entry(n);
      if ((spte & PTE.RW) !== 0n) {
        this.pool.setEntry(n, spte & ~PTE.RW);
        changed = true;
      }
    }
    return changed;
  }

  // ---- leaf SPTEs -------------------------------------------------------------

  /** Installs leaf SPTE `index` of `sp` mapping `gfn` with `spte` (0 clears it); keeps the rmap. Returns true if a present SPTE changed. */
  setLeaf(sp: ShadowPage, index: number, gfn: bigint | undefined, spte: bigint): boolean {
    const n = sp.entryBase + index;
    const old = this.pool.entry(n);
    const oldGfn = sp.leafGfns.get(index);
    if (oldGfn !== undefined) {
      this.rmap.get(Number(oldGfn))?.delete(n);
      sp.leafGfns.delete(index);
    }
    this.pool.setEntry(n, spte);
    if (spte !== 0n && gfn !== undefined) {
      sp.leafGfns.set(index, gfn);
      const k = Number(gfn);
      let m = this.rmap.get(k);
      if (!m) this.rmap.set(k, (m = new Map()));
      m.set(n, sp);
      this.stats.spteInstalled++;
    }
    return (old & PTE.P) !== 0n && old !== spte;
  }

  // ---- shadow pages -----------------------------------------------------------

  /** Finds a valid shadow page for (gfn, role, pcid), or undefined. */
  find(gfn: bigint, role: number, pcid: number): ShadowPage | undefined {
    for (const sp of this.hash.get(Number(gfn)) ?? []) if (sp.valid && sp.role === role && sp.pcid === pcid) return sp;
    return undefined;
  }

  /**
   * kvm_mmu_get_shadow_page: the shadow page for (gfn, role, pcid), found or
   * created. An unsync page found is synced first. Creating an indirect page
   * write-protects its gfn (upper levels: write-tracked; level 1: its leaf
   * SPTEs go read-only). Returns the page and whether a flush is owed.
   */
  getPage(gfn: bigint, role: number, pcid: number, from: FlushTarget): { sp: ShadowPage; created: boolean; flush: boolean } {
    const charge = (c: number): void => from.charge(c);
    const direct = (role & ROLE_DIRECT) !== 0;
    const k = Number(gfn);
    let flush = false;
    const found = this.hash.get(k);
    for (const sp of found ? [...found] : []) {
      if (!sp.valid) continue;
      if (sp.role === role && sp.pcid === pcid) {
        // kvm_mmu_get_page: a found unsync page is synced, then KVM_REQ_TLB_FLUSH.
        if (sp.unsync) { this.syncPage(sp, from); this.flushLocal(from); }
        sp.writeFlooding = 0;
        return { sp, created: false, flush };
      }
      // The guest recycled this gfn as a different table: an unsync leaf page for it is stale.
      if (!direct && roleLevel(role) > 1 && sp.unsync) flush = this.zapPage(sp, charge) || flush;
    }
    let hpa = this.pool.alloc();
    if (hpa === undefined) {
      flush = this.reclaim(charge) || flush;
      hpa = this.pool.alloc();
      if (hpa === undefined) throw new Error("vmmu: shadow-page pool exhausted even after reclaiming (raise poolBytes)");
    }
    charge(this.costs.spAlloc);
    const sp = new ShadowPage(gfn, role, pcid, hpa, this.pool.entryBase(hpa));
    let list = this.hash.get(k);
    if (!list) this.hash.set(k, (list = []));
    list.push(sp);
    this.active.add(sp);
    this.stats.spAllocated++;
    this.stats.spLive++;
    if (this.stats.spLive > this.stats.spPeak) this.stats.spPeak = this.stats.spLive;
    if (!direct) {
      if (roleLevel(role) > 1) this.writeTrack.set(k, (this.writeTrack.get(k) ?? 0) + 1);
      else {
        let s = this.leafShadows.get(k);
        if (!s) this.leafShadows.set(k, (s = new Set()));
        s.add(sp);
      }
      flush = this.writeProtectGfn(k) || flush;
    }
    return { sp, created: true, flush };
  }

  /** Links `child` under SPTE `index` of `parent` (a non-leaf SPTE with full rights). */
  link(parent: ShadowPage, index: number, child: ShadowPage): void {
    const old = parent.children.get(index);
    if (old === child) return;
    if (old) this.unlinkChild(parent, index, old);
    if (parent.leafGfns.has(index)) this.setLeaf(parent, index, undefined, 0n);
    parent.children.set(index, child);
    child.parents.add({ sp: parent, index });
    this.pool.setEntry(parent.entryBase + index, child.hpa | PTE.P | PTE.RW | PTE.US);
    if (child.unsync || child.unsyncChildren.size > 0) {
      const had = parent.unsyncChildren.size > 0;
      parent.unsyncChildren.add(index);
      if (!had) this.markUnsyncUp(parent);
    }
  }

  private unlinkChild(parent: ShadowPage, index: number, child: ShadowPage): void {
    for (const p of child.parents) if (p.sp === parent && p.index === index) child.parents.delete(p);
    parent.children.delete(index);
    parent.unsyncChildren.delete(index);
    this.pool.setEntry(parent.entryBase + index, 0n);
  }

  /** Clears SPTE `index` of `sp` (leaf or link). Returns true if a present SPTE went away. */
  zapSpte(sp: ShadowPage, index: number): boolean {
    const child = sp.children.get(index);
    if (child) {
      this.unlinkChild(sp, index, child);
      return true;
    }
    return this.setLeaf(sp, index, undefined, 0n);
  }

  /**
   * kvm_mmu_prepare_zap_page: unlinks `sp` from its parents and children, drops
   * its leaf SPTEs from the rmap, ends its write protection; frees it unless a
   * root still references it (then it is only marked invalid). Returns true if
   * a present SPTE went away (a flush is owed).
   */
  zapPage(sp: ShadowPage, charge: (c: number) => void): boolean {
    if (!sp.valid) return false;
    charge(this.costs.zap);
    let flush = sp.parents.size > 0;
    for (const p of [...sp.parents]) this.unlinkChild(p.sp, p.index, sp);
    for (const [index, child] of [...sp.children]) this.unlinkChild(sp, index, child);
    for (const index of [...sp.leafGfns.keys()]) flush = this.setLeaf(sp, index, undefined, 0n) || flush;
    if (sp.unsync) this.clearUnsyncUp(sp);
    sp.unsync = false;
    sp.valid = false;
    if (!sp.direct) {
      if (sp.level > 1) {
        const n = (this.writeTrack.get(sp.gfnKey) ?? 1) - 1;
        if (n > 0) this.writeTrack.set(sp.gfnKey, n); else this.writeTrack.delete(sp.gfnKey);
      } else {
        this.leafShadows.get(sp.gfnKey)?.delete(sp);
      }
    }
    this.stats.spZapped++;
    if (sp.rootCount === 0) this.free(sp);
    return flush;
  }

  /** Returns an unreferenced, invalid page to the pool. */
  free(sp: ShadowPage): void {
    const list = this.hash.get(sp.gfnKey);
    if (list) {
      const i = list.indexOf(sp);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.hash.delete(sp.gfnKey);
    }
    if (this.active.delete(sp)) {
      this.pool.release(sp.hpa);
      this.stats.spLive--;
    }
  }

  /** make_mmu_pages_available: reclaims unless `n` pool pages are free. Returns true if a flush is owed. */
  ensureFree(n: number, charge: (c: number) => void): boolean {
    return this.pool.pages - this.pool.inUse < n ? this.reclaim(charge) : false;
  }

  /** PCIDs that own valid shadow pages (alon2018: every tree a flush may be owed to, on any vCPU). */
  taggedPcids(): Set<number> {
    const out = new Set<number>();
    for (const list of this.hash.values()) for (const sp of list) if (sp.valid && sp.pcid >= 0) out.add(sp.pcid);
    return out;
  }

  /** make_mmu_pages_available: zaps the oldest pages no root uses until a tenth of the pool is free. */
  private reclaim(charge: (c: number) => void): boolean {
    let flush = false;
    const target = Math.max(25, this.pool.pages >> 3);
    for (const sp of [...this.active]) {
      if (this.pool.pages - this.pool.inUse >= target) break;
      if (sp.rootCount > 0) continue;
      if (sp.valid) flush = this.zapPage(sp, charge) || flush;
      else this.free(sp);
    }
    return flush;
  }

  // ---- sync -------------------------------------------------------------------

  /** Halves of the SPTE the last makeLeafSpte made (valid when it returned a gfn). */
  private spteLo = 0;
  private spteHi = 0;

  /**
   * The one gpte → SPTE rule (paging_tmpl.h FNAME(prefetch_invalid_gpte),
   * FNAME(protect_clean_gpte); spte.c make_spte), on the two 32-bit halves
   * `lo`, `hi` of a 4 KiB guest leaf entry, for a shadow page of role access
   * `roleAccess`: returns the gfn the SPTE maps and leaves the SPTE in
   * spteLo/spteHi, or -1 if the gpte makes none — not present, A = 0 (the next
   * access must fault so the guest's A bit gets set) or no RAM at the gfn.
   * Writable only if the walk allows it, the gpte is dirty (the first write
   * faults so the guest's D bit gets set) and the gfn is not write-protected.
   * Halves, not BigInt: syncPage applies it to every SPTE of a page.
   */
  private makeLeafSpte(lo: number, hi: number, roleAccess: number): number {
    if ((lo & 0x21) !== 0x21) return -1;
    const gfn = (hi & 0xfffff) * 0x100000 + (lo >>> 12);
    const gpa = gfn * 4096;
    if (gpa < this.ramBase || gpa - this.ramBase >= this.ramSize) return -1;
    const acc = roleAccess & ((lo & 6) | ((hi & 0x80000000) !== 0 ? 0 : ACC_EXEC));
    let spteLo = (lo & 0xfffff000) | 1;
    if ((acc & ACC_USER) !== 0) spteLo |= 4;
    if ((acc & ACC_WRITE) !== 0 && (lo & 0x40) !== 0 && !this.isWriteProtectedKey(gfn)) spteLo |= 2;
    this.spteLo = spteLo >>> 0;
    this.spteHi = ((hi & 0xfffff) | ((acc & ACC_EXEC) === 0 ? 0x80000000 : 0)) >>> 0;
    return gfn;
  }

  /**
   * The SPTE a guest leaf entry `gpte` (4 KiB) should produce in a shadow page
   * with role access `roleAccess`, for the current guest mode, and the gfn it
   * maps; undefined if the gpte makes none (makeLeafSpte).
   */
  leafSpte(gpte: bigint, roleAccess: number): { spte: bigint; gfn: bigint } | undefined {
    const gfn = this.makeLeafSpte(Number(gpte & 0xffff_ffffn), Number((gpte >> 32n) & 0xffff_ffffn), roleAccess);
    return gfn < 0 ? undefined : { spte: (BigInt(this.spteHi) << 32n) | BigInt(this.spteLo), gfn: BigInt(gfn) };
  }

  /**
   * One leaf SPTE of an unsync page re-derived from its gpte halves `lo`, `hi`
   * as v4.16 FNAME(sync_page) does it (paging_tmpl.h; mmu.c set_spte with
   * speculative = true, mmu_spte_update):
   * 1. A gpte that makes no SPTE, or maps another frame: the SPTE is dropped
   *    (drop_spte) with no flush of its own: KVM counts it in kvm->tlbs_dirty,
   *    the next remote flush covers it. Returns SYNC_DROPPED.
   * 2. Else the SPTE is rewritten: rights from the gpte, the Accessed bit
   *    cleared (speculative: mark_spte_for_access_track), Dirty kept only while
   *    writable. mmu_spte_update asks for a TLB flush when the old SPTE was
   *    accessed, or loses W or D: returns SYNC_FLUSH, else SYNC_CHANGED or
   *    SYNC_SAME. Removing U or X asks for none (the guest's own flush, which
   *    caused the sync, covers its vCPU).
   */
  private syncLeaf(sp: ShadowPage, index: number, lo: number, hi: number): number {
    const w = this.pool.words(), o = this.pool.wordOf(sp.entryBase + index);
    const oldLo = w[o]!, oldHi = w[o + 1]!;
    const gfn = this.makeLeafSpte(lo, hi, sp.access);
    if (gfn < 0 || ((oldLo ^ this.spteLo) & 0xfffff000) !== 0 || ((oldHi ^ this.spteHi) & 0xfffff) !== 0) {
      this.setLeaf(sp, index, undefined, 0n);
      return SYNC_DROPPED;
    }
    let nextLo = ((oldLo & ~(PTE_RW | PTE_US | PTE_A)) | (this.spteLo & (PTE_RW | PTE_US))) >>> 0;
    if ((nextLo & PTE_RW) === 0) nextLo = (nextLo & ~PTE_D) >>> 0;
    const nextHi = ((oldHi & 0x7fffffff) | (this.spteHi & 0x80000000)) >>> 0;
    if (nextLo === oldLo && nextHi === oldHi) return SYNC_SAME;
    this.setLeaf(sp, index, BigInt(gfn), (BigInt(nextHi) << 32n) | BigInt(nextLo));
    const lost = oldLo & ~nextLo;
    return (lost & (PTE_A | PTE_RW | PTE_D)) !== 0 ? SYNC_FLUSH : SYNC_CHANGED;
  }

  /**
   * kvm_sync_spte for one address (the INVLPG path, FNAME(invlpg)): leaf SPTE
   * `index` of unsync page `sp` re-derived from its gpte (syncLeaf). Returns
   * true if a present SPTE changed (a remote flush is owed, as FNAME(invlpg)
   * flushes after zapping a present SPTE).
   */
  syncSpte(sp: ShadowPage, index: number): boolean {
    this.stats.spteSynced++;
    const gpte = this.memory.read64((sp.gfn << 12n) + BigInt(index) * 8n);
    return this.syncLeaf(sp, index, Number(gpte & 0xffff_ffffn), Number(gpte >> 32n)) !== SYNC_SAME;
  }

  /**
   * kvm_sync_page → FNAME(sync_page) for unsync leaf page `sp`, by `from`:
   * 1. The guest table is copied out in one piece and every SPTE in use is
   *    re-derived (syncLeaf).
   * 2. Remote flushes asked for by the rewrites: one per SPTE before P1
   *    (set_spte ends in kvm_flush_remote_tlbs), one for the page with P1
   *    (set_spte returns SET_SPTE_NEED_REMOTE_TLB_FLUSH, sync_page flushes once).
   * 3. The page is sync again; with `protect` its gfn is write-protected here
   *    (mmu_sync_children protects a batch before syncing it instead).
   * Returns true if the caller owes `from` a local flush: an SPTE was dropped,
   * or the write protection changed a writable SPTE (then a remote flush).
   */
  syncPage(sp: ShadowPage, from: FlushTarget, protect = true): boolean {
    this.stats.syncs++;
    from.charge(this.costs.syncVisit);
    let dropped = false, flushes = 0;
    const indices = [...sp.leafGfns.keys()];
    if (indices.length > 0) this.memory.readInto(sp.gfn << 12n, this.gpteBytes);
    const g = this.gpteWords;
    for (const index of indices) {
      from.charge(this.costs.syncSpte);
      this.stats.spteSynced++;
      const r = this.syncLeaf(sp, index, g[index * 2]!, g[index * 2 + 1]!);
      if (r === SYNC_DROPPED) dropped = true;
      else if (r === SYNC_FLUSH) {
        this.stats.syncSpteFlushes++;
        if (!this.policy.syncFlushOnce) this.flushRemote(from);
        else flushes++;
      }
    }
    if (flushes > 0) this.flushRemote(from);
    sp.unsync = false;
    this.clearUnsyncUp(sp);
    if (protect && this.writeProtectGfn(sp.gfnKey)) { this.flushRemote(from); return false; }
    return dropped;
  }

  /**
   * mmu_sync_children (v4.16 mmu.c) for the tree under `root`, by `from`:
   * 1. mmu_unsync_walk collects the unsync pages reachable through
   *    unsync_child bitmaps, pre-order, in batches of up to 16
   *    (KVM_PAGE_ARRAY_NR).
   * 2. Each batch: rmap_write_protect every gfn, one remote flush if any
   *    writable SPTE changed; then kvm_sync_page each (syncPage).
   * Returns the number of pages synced; the caller flushes `from` locally
   * when it is not 0 (kvm_mmu_flush_or_zap: KVM_REQ_TLB_FLUSH).
   */
  syncTree(root: ShadowPage, from: FlushTarget): number {
    const pages: ShadowPage[] = [];
    const visit = (sp: ShadowPage) => {
      from.charge(this.costs.syncVisit);
      for (const index of [...sp.unsyncChildren]) {
        const child = sp.children.get(index);
        if (!child) { sp.unsyncChildren.delete(index); continue; }
        if (child.unsync) pages.push(child);
        if (child.unsyncChildren.size > 0) visit(child);
      }
    };
    if (root.unsync) pages.push(root);
    visit(root);
    for (let b = 0; b < pages.length; b += SYNC_BATCH) {
      const batch = pages.slice(b, b + SYNC_BATCH);
      let protectedAny = false;
      for (const sp of batch) protectedAny = this.writeProtectGfn(sp.gfnKey) || protectedAny;
      if (protectedAny) this.flushRemote(from);
      for (const sp of batch) this.syncPage(sp, from, false);
    }
    return pages.length;
  }

  // ---- guest writes to write-protected tables ------------------------------------

  /**
   * kvm_mmu_track_write: the hypervisor emulated a guest store of `bytes` at
   * `gpa`. For every shadow page of that gfn: a misaligned or whole-page write,
   * or write flooding of a non-leaf page, zaps the page; otherwise the SPTE of
   * the written gpte is zapped (the next access faults it back in). One remote
   * flush if a present SPTE went away.
   */
  trackWrite(gpa: bigint, bytes: number, from: FlushTarget): void {
    const gfn = gpa >> 12n;
    const pages = (this.hash.get(Number(gfn)) ?? []).filter((sp) => sp.valid && !sp.direct);
    if (pages.length === 0) return;
    const charge = (c: number) => from.charge(c);
    const misaligned = bytes !== 8 || (gpa & 7n) !== 0n;
    const index = Number((gpa & 0xfffn) >> 3n);
    let flush = false;
    for (const sp of pages) {
      if (misaligned || (sp.level > 1 && ++sp.writeFlooding >= 3)) {
        flush = this.zapPage(sp, charge) || flush;
      } else {
        flush = this.zapSpte(sp, index) || flush;
      }
    }
    if (flush) this.flushRemote(from);
  }

  // ---- TLB flushes -------------------------------------------------------------

  /** KVM_REQ_TLB_FLUSH on `from` alone: its hardware TLB, charged once until it next enters the guest. */
  flushLocal(from: FlushTarget): void {
    from.flushHardwareAll();
    if (from.requestTlbFlush()) from.charge(this.costs.localFlush);
  }

  /**
   * kvm_flush_remote_tlbs by `from`: every vCPU's hardware TLB flushed; the
   * other vCPUs in guest mode IPI'd, waited for and kicked
   * (flushRemoteTlbs, src/kvm/guest-mode.ts); `from` charged the waits, and
   * its own flush unless one is already pending (KVM_REQ_TLB_FLUSH requests
   * coalesce until the next entry).
   */
  flushRemote(from: FlushTarget): void {
    this.stats.remoteFlushes++;
    from.charge(flushRemoteTlbs(from, this.vcpus, from.cycles, 1, this.costs.remoteFlush, this.ipiCount));
    this.stats.flushIpis = this.ipiCount.ipis;
    this.stats.flushIpisSkipped = this.ipiCount.skipped;
    if (from.requestTlbFlush()) from.charge(this.costs.localFlush);
  }
}
