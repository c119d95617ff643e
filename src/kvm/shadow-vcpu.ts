// The per-vCPU half of the shadow MMU: what KVM does on each VM exit of a
// shadow-paging guest (arch/x86/kvm/mmu/mmu.c, paging_tmpl.h, x86.c): shadow page faults (guest walk, then SPTEs), emulated writes to
// write-protected page tables, MOV CR3 with the root cache, INVLPG, INVPCID,
// and the hardware TLB flushes each needs — every decision behind a policy
// switch (src/kvm/policy.ts). Implements the guest's CPU (src/guest/cpu.ts).
//
// One vCPU with two MMU contexts backs each guest vCPU (KVM's root_mmu and
// walk_mmu): `hw`, the hardware, whose CR3 is the shadow root and whose TLB
// is the hardware TLB (tagged by PCID); and `walker` (hw.walkerContext()),
// which holds the guest's architectural control registers and does the
// hypervisor's software walks of the guest tables (with guest A/D updates),
// without a TLB and with its own counters.

import type { X86Vcpu } from "../x86/vcpu.js";
import type { X86Access } from "../x86/regs.js";
import { CR0, CR4, EFER, PTE, PTE_ADDR_MASK, CR3_NOFLUSH, CR3_PCID_MASK } from "../x86/regs.js";
import type { GuestCpu, GuestException } from "../guest/cpu.js";
import { INTERCEPTED_VECTORS, type CostModel } from "./cost-model.js";
import type { ShadowPolicy } from "./policy.js";
import { ROLE_SMM } from "./direct-mmu.js";
import { accessManyOnHardware } from "./batch-access.js";
import { HwMeter } from "./hw-meter.js";
import { GuestModeLog } from "./guest-mode.js";
import {
  ShadowMmu, ShadowPage, roleAt, ACC_ALL, ACC_EXEC, ACC_WRITE, ACC_USER,
  ROLE_CR0_WP, ROLE_EFER_NX, ROLE_SMEP_ANDNOT_WP, ROLE_SMAP_ANDNOT_WP, type FlushTarget,
} from "./shadow-mmu.js";

/** Why the guest exited to the hypervisor. */
export type ExitReason = "pf" | "cr3" | "invlpg" | "invpcid" | "cr0" | "cr4" | "ipi" | "emulate" | "smi" | "rsm" | "exception" | "kick";

interface RootSlot {
  /** Guest CR3 (with PCID, without bit 63). */
  pgd: bigint;
  sp: ShadowPage;
  /** lai2021: reused only after a resync and flush. */
  needSync: boolean;
}

const GP: GuestException = { gp: true };

/** kvm_mmu_free_roots flags (KVM_MMU_ROOT_CURRENT, KVM_MMU_ROOT_PREVIOUS(i), KVM_MMU_ROOTS_ALL). */
export const ROOT_CURRENT = 1;
export const ROOT_PREVIOUS = (i: number): number => 1 << (1 + i);
export const ROOTS_ALL = 0b1111;
const ADDR = PTE_ADDR_MASK;
const NUM_PREV_ROOTS = 3;

function indexAt(va: bigint, level: number): number {
  return Number((va >> BigInt(12 + 9 * (level - 1))) & 511n);
}

function gpteAcc(pte: bigint): number {
  return Number(pte & 6n) | ((pte & PTE.XD) !== 0n ? 0 : ACC_EXEC);
}


export class ShadowVcpu implements GuestCpu, FlushTarget {
  cycles = 0;
  readonly exits: Record<ExitReason, number> = { pf: 0, cr3: 0, invlpg: 0, invpcid: 0, cr0: 0, cr4: 0, ipi: 0, emulate: 0, smi: 0, rsm: 0, exception: 0, kick: 0 };
  /** Guest #PFs delivered (the guest's own faults, after the hypervisor's walk). */
  injected = 0;
  accesses = 0;
  private root: RootSlot | undefined;
  private readonly prev: (RootSlot | undefined)[] = [undefined, undefined, undefined];
  /** Hardware PCIDs that may hold entries (for address flushes across contexts). */
  private readonly hwPcids = new Set<number>([0]);
  /** alon2018: PCIDs with a flush owed at the next switch to them, and deferred INVLPG addresses. */
  private readonly pending = new Uint8Array(4096);
  private readonly deferred = new Map<number, bigint[]>();
  /** The hardware's hits and walk references, charged as simulated time. */
  private readonly meter: HwMeter;
  /** The guest's control registers as the walker holds them, re-read whenever the guest writes one. */
  private g: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } = { cr0: 0n, cr3: 0n, cr4: 0n, efer: 0n };
  /** Hardware CR4 as last loaded by setControl (undefined before the first load). */
  private hwCr4: bigint | undefined;
  private readonly chargeFn = (c: number): void => { this.cycles += c; };
  /** In SMM (role.smm); the guest's control state saved in SMRAM until RSM. */
  private smm = false;
  private smramState: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } | undefined;
  /** Time spent handling exits, for remote flushes (outsideGuestAt): an exit opens it, the guest's next operation closes it. */
  private readonly guestMode = new GuestModeLog();
  /** Depth of nested locked() regions (mmu_lock is taken once). */
  private lockDepth = 0;

  constructor(
    readonly index: number,
    readonly mmu: ShadowMmu,
    readonly hw: X86Vcpu,
    readonly walker: X86Vcpu,
    readonly policy: ShadowPolicy,
    readonly costs: CostModel,
    cHits: number,
    cRefs: number,
  ) {
    this.meter = new HwMeter(hw, cHits, cRefs);
  }

  get hasInvpcid(): boolean {
    return this.policy.invpcid;
  }

  charge(cycles: number): void {
    this.cycles += cycles;
  }

  work(n: number): void {
    this.guestMode.enter(this.cycles);
    this.cycles += n;
  }

  private exit(reason: ExitReason): void {
    this.guestMode.leave(this.cycles);
    this.exits[reason]++;
    this.cycles += this.costs.vmExit;
  }

  /** The guest runs again: an exit being handled is over (every GuestCpu operation starts with it); a pending KVM_REQ_TLB_FLUSH was served on the way in. */
  private resume(): void {
    this.guestMode.enter(this.cycles);
    this.tlbFlushRequested = false;
  }

  /** KVM_REQ_TLB_FLUSH is pending: requests coalesce into one flush at the next entry (vcpu_enter_guest). */
  private tlbFlushRequested = false;

  /** Sets KVM_REQ_TLB_FLUSH on this vCPU; returns true if it was not pending yet (the flush to charge). */
  requestTlbFlush(): boolean {
    if (this.tlbFlushRequested) return false;
    this.tlbFlushRequested = true;
    return true;
  }

  outsideGuestAt(t: number): boolean {
    return this.guestMode.outsideAt(t, this.cycles);
  }

  /** `times` flush IPIs received in guest mode at `t`: an exit (reason "kick"), the flush and the re-entry each, charged here. */
  kicked(t: number, times: number): void {
    this.exits.kick += times;
    this.cycles += this.guestMode.kicked(t, times, this.costs);
  }

  /**
   * Runs `f` under mmu_lock (re-entrant: nested regions take it once): its
   * simulated cost — the shadow-MMU work and the remote flushes it waits for
   * — is the hold; the spin before the grant (ShadowMmu.mmuLock's calendar)
   * is charged on top. KVM takes the lock for the fault path after the guest
   * walk (FNAME(page_fault)), root allocation and freeing, kvm_mmu_sync_roots,
   * FNAME(invlpg) and kvm_mmu_pte_write.
   */
  private locked<T>(f: () => T): T {
    if (this.lockDepth > 0) return f();
    const t = this.cycles;
    this.lockDepth++;
    let r: T;
    try { r = f(); } finally { this.lockDepth--; }
    const wait = this.mmu.mmuLock.acquire(t, this.cycles - t);
    this.cycles += wait;
    this.mmu.stats.mmuLockWait += wait;
    return r;
  }

  // ---- guest state ------------------------------------------------------------

  private guest(): { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint } {
    return this.g;
  }

  /** Re-reads the guest's control registers from the walker after it changed them. */
  private syncGuest(): void {
    const c = this.walker.control();
    this.g = { cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer };
  }

  private guestPcid(): number {
    const g = this.guest();
    return (g.cr4 & CR4.PCIDE) !== 0n ? Number(g.cr3 & CR3_PCID_MASK) : 0;
  }

  /** Page role of the guest mode (root level, WP/NX/SMEP/SMAP bits). */
  private roleBase(): number {
    const g = this.guest();
    const wp = (g.cr0 & CR0.WP) !== 0n;
    let r = ROLE_EFER_NX;
    if (wp) r |= ROLE_CR0_WP;
    if (!wp && (g.cr4 & CR4.SMEP) !== 0n) r |= ROLE_SMEP_ANDNOT_WP;
    if (!wp && (g.cr4 & CR4.SMAP) !== 0n) r |= ROLE_SMAP_ANDNOT_WP;
    if (this.smm) r |= ROLE_SMM;
    return r;
  }

  private rootLevel(): number {
    return (this.guest().cr4 & CR4.LA57) !== 0n ? 5 : 4;
  }

  /**
   * Starts the guest with control registers `c` (paging on, long mode): builds
   * the first root and loads the hardware. No exits are counted.
   */
  start(c: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint }): void {
    this.walker.setControl(c);
    this.walker.setTlbEnabled(false);
    this.syncGuest();
    this.allocRoot(c.cr3 & ~CR3_NOFLUSH);
    this.loadHardware();
  }

  /** True while the guest runs with CR0.PG = 0: the shadow root is a direct (identity) map (KVM's nonpaging MMU). */
  private nonpaging(): boolean {
    return (this.guest().cr0 & CR0.PG) === 0n;
  }

  /** The hardware control state: shadow root, the guest PCID when mapped, NX on, WP on. */
  private loadHardware(): void {
    const g = this.guest();
    const pcid = this.policy.mapGuestPcids && (g.cr4 & CR4.PCIDE) !== 0n ? Number(g.cr3 & CR3_PCID_MASK) : 0;
    this.hwPcids.add(pcid);
    const cr4 = CR4.PAE | (this.policy.mapGuestPcids ? CR4.PCIDE : 0n) | (g.cr4 & (CR4.SMEP | CR4.SMAP | CR4.LA57));
    const cr3 = this.root!.sp.hpa | BigInt(pcid);
    if (this.policy.mapGuestPcids && cr4 === this.hwCr4) {
      // Only CR3 differs from the state last loaded, and hardware PCIDE is on:
      // a NOFLUSH MOV CR3 loads it with no flush, as setControl would.
      if (this.hw.writeCr3(cr3 | CR3_NOFLUSH)) throw new Error("vmmu: hardware CR3 load refused (shadow MMU bug)");
      return;
    }
    this.hw.setControl({
      cr0: CR0.PE | CR0.PG | CR0.WP, cr4, efer: EFER.LME | EFER.LMA | EFER.NXE,
      cr3, pkru: 0n, rflags: 0n,
    });
    this.hwCr4 = cr4;
  }

  private hwPcid(): number {
    return this.policy.mapGuestPcids ? this.guestPcid() : 0;
  }

  // ---- hardware TLB ------------------------------------------------------------

  private hwInvpcid(type: number, pcid: number, va?: bigint): void {
    const f = this.hw.invpcid(type, pcid, va);
    if (f) throw new Error(`vmmu: hardware INVPCID ${type} for PCID ${pcid} refused (shadow MMU bug)`);
    if (type === 1) this.pcidEpoch.set(pcid, (this.pcidEpoch.get(pcid) ?? 0) + 1);
    else if (type !== 0) this.allEpoch++;
  }

  /** Hardware flushes of every context, and of each hardware PCID (INVPCID types 2/3 and 1). */
  private allEpoch = 0;
  private readonly pcidEpoch = new Map<number, number>();
  /** The epochs the last runUser saw, per hardware PCID. */
  private readonly seenAll = new Map<number, number>();
  private readonly seenPcid = new Map<number, number>();
  /** runUser calls that found the current context's hardware TLB flushed, and the pages they walked again. */
  readonly userRefills = { gaps: 0, pages: 0 };

  /**
   * GuestCpu.runUser: `cycles` of user code touching `pages` pages; if the
   * hardware context of the current address space (its hardware PCID) was
   * flushed since the last call for it, each page costs a hardware walk of
   * the shadow tables (rootLevel references of hwWalkRef).
   */
  runUser(cycles: number, pages: number): void {
    this.work(cycles);
    const key = this.hwPcid();
    const all = this.allEpoch, own = this.pcidEpoch.get(key) ?? 0;
    if (this.seenAll.get(key) === all && this.seenPcid.get(key) === own) return;
    this.seenAll.set(key, all);
    this.seenPcid.set(key, own);
    this.userRefills.gaps++;
    this.userRefills.pages += pages;
    this.cycles += pages * this.rootLevel() * this.costs.hwWalkRef;
  }

  flushHardwareAll(): void {
    this.hwInvpcid(2, 0);
    this.hwPcids.clear();
    this.hwPcids.add(this.hwPcid());
    this.mmu.stats.localFlushes++;
  }

  /** Flushes the hardware context of the current guest address space. */
  private flushHardwareCurrent(): void {
    if (!this.policy.mapGuestPcids) { this.flushHardwareAll(); this.charge(this.costs.localFlush); return; }
    this.hwInvpcid(1, this.hwPcid());
    this.mmu.stats.localFlushes++;
    this.charge(this.costs.localFlush);
  }

  /** Flushes `va` from every hardware context (INVVPID individual-address: all PCIDs). */
  private flushHardwareAddr(va: bigint): void {
    for (const p of this.hwPcids) this.hwInvpcid(0, p, va);
    this.mmu.stats.addrFlushes++;
    this.charge(this.costs.addrFlush);
  }

  // ---- roots ---------------------------------------------------------------------

  private rootRole(): number {
    if (this.nonpaging()) return roleAt(this.roleBase(), 4, ACC_ALL, true);
    return roleAt(this.roleBase(), this.rootLevel(), ACC_ALL, false);
  }

  private usable(slot: RootSlot | undefined, pgd: bigint): boolean {
    return slot !== undefined && slot.pgd === pgd && slot.sp.valid && slot.sp.role === this.rootRole();
  }

  /** Allocates (or finds in the hash) the root for `pgd` as the current root. */
  private allocRoot(pgd: bigint): void {
    const gfn = this.nonpaging() ? 0n : (pgd & ADDR) >> 12n;
    const pcid = this.policy.pcidTaggedSps ? this.guestPcid() : -1;
    this.charge(this.costs.rootReload + this.costs.hashLookup);
    const { sp, created, flush } = this.mmu.getPage(gfn, this.rootRole(), pcid, this);
    if (flush) this.mmu.flushRemote(this);
    sp.rootCount++;
    if (created) this.mmu.stats.rootsBuilt++; else this.mmu.stats.rootsReused++;
    this.root = { pgd, sp, needSync: false };
  }

  private freeSlot(slot: RootSlot | undefined): void {
    if (!slot) return;
    slot.sp.rootCount--;
    this.mmu.stats.rootsFreed++;
    if (slot.sp.rootCount === 0 && !slot.sp.valid) this.mmu.free(slot.sp);
  }

  /**
   * kvm_mmu_new_pgd: makes the root for `pgd` current. With the root cache
   * (P3) it rotates current and previous roots as cached_root_find_and_keep_current
   * does and frees the LRU root on a miss; before the series the current root
   * is always freed. Returns true on a root-cache hit.
   */
  private switchRoot(pgd: bigint): boolean {
    if (this.policy.pcidTaggedSps) {
      this.locked(() => { this.freeSlot(this.root); this.allocRoot(pgd); });
      return true;
    }
    if (this.policy.prevRoots) {
      this.charge(this.costs.rootCacheLookup);
      if (this.usable(this.root, pgd)) return true;
      let cur = this.root;
      for (let i = 0; i < NUM_PREV_ROOTS; i++) {
        const t = this.prev[i];
        this.prev[i] = cur;
        cur = t;
        if (this.usable(cur, pgd)) {
          this.root = cur;
          this.mmu.stats.rootsReused++;
          return true;
        }
      }
      this.locked(() => { this.freeSlot(cur); this.allocRoot(pgd); });
      return false;
    }
    this.locked(() => { this.freeSlot(this.root); this.allocRoot(pgd); });
    return false;
  }

  /**
   * kvm_invalidate_pcid (x86.c, KVM commit 21823fbda552): the guest flushed
   * PCID `pcid` (a flushing MOV CR3, INVPCID type 1): cached roots of that
   * PCID are freed (shahid2018) or marked need-sync (lai2021). With
   * CR4.PCIDE = 0 none is touched: every MOV CR3 then flushes, and a switch
   * to a cached root syncs it. (The series as merged in v4.19 freed none
   * even with PCIDE = 1, which let a NOFLUSH switch to another address space
   * of a flushed PCID see stale SPTEs; the model follows the fixed KVM.)
   */
  private invalidatePrevRootsOfPcid(pcid: number): void {
    if ((this.guest().cr4 & CR4.PCIDE) === 0n) return;
    this.locked(() => this.invalidatePrevRootsOfPcidLocked(pcid));
  }

  private invalidatePrevRootsOfPcidLocked(pcid: number): void {
    for (let i = 0; i < NUM_PREV_ROOTS; i++) {
      const s = this.prev[i];
      if (!s || Number(s.pgd & CR3_PCID_MASK) !== pcid) continue;
      if (this.policy.keepUnsyncRoots) s.needSync = true;
      else { this.freeSlot(s); this.prev[i] = undefined; }
    }
  }

  private invalidateAllPrevRoots(): void {
    if (!this.policy.keepUnsyncRoots) { this.freeRoots(ROOTS_ALL & ~ROOT_CURRENT); return; }
    for (const s of this.prev) if (s) s.needSync = true;
  }

  /**
   * kvm_mmu_free_roots: drops the roots selected by `flags` (ROOT_CURRENT,
   * ROOT_PREVIOUS(i), ROOTS_ALL). A shadow page stays in the hash for reuse
   * unless it was zapped and this was its last root reference. Freeing the
   * current root leaves the vCPU without one until the next CR3 load or
   * entry (which rebuilds it).
   */
  freeRoots(flags: number): void {
    this.locked(() => this.freeRootsLocked(flags));
  }

  private freeRootsLocked(flags: number): void {
    for (let i = 0; i < NUM_PREV_ROOTS; i++) {
      if ((flags & ROOT_PREVIOUS(i)) === 0 || !this.prev[i]) continue;
      this.freeSlot(this.prev[i]);
      this.prev[i] = undefined;
    }
    if ((flags & ROOT_CURRENT) !== 0 && this.root) {
      this.freeSlot(this.root);
      this.root = undefined;
    }
  }

  // ---- shadow page fault ----------------------------------------------------------

  /**
   * A hardware #PF exit. Walks the guest tables (setting guest A/D as the CPU
   * would); a guest fault is injected; otherwise the SPTEs for `va` are built
   * (FNAME(fetch)). Returns the guest exception, "emulate" when the access is
   * a write to a write-protected page table that cannot go unsync, or "retry".
   */
  private pageFault(va: bigint, access: X86Access, user: boolean): GuestException | "emulate" | "retry" {
    this.exit("pf");
    const { result, levels } = this.walker.walkRecorded(va, access, user, true);
    this.mmu.stats.guestWalks++;
    this.mmu.stats.guestWalkRefs += levels.length;
    this.charge(this.costs.swWalkLevel * levels.length);
    if ("fault" in result) {
      if (result.fault.kind === "general-protection") return GP;
      this.injected++;
      this.flushHardwareAddr(va);
      return { cr2: va, errorCode: result.fault.errorCode };
    }
    return this.locked(() => levels.length === 0 ? this.fetchDirect(va, result.pa, access) : this.fetch(va, levels, access, user));
  }

  /**
   * Guest paging off: direct shadow pages map va → pa = va (4 KiB SPTEs, full
   * rights; page tables still write-protected, so a write to one that cannot
   * go unsync is emulated: RET_PF_EMULATE).
   */
  private fetchDirect(va: bigint, pa: bigint, access: X86Access): "retry" | "emulate" {
    const charge = this.chargeFn;
    const base = this.roleBase();
    let sp = this.root!.sp;
    let flush = false;
    const gfn = pa >> 12n;
    for (let l = sp.level; l > 1; l--) {
      const idx = indexAt(va, l);
      const covered = BigInt(12 + 9 * (l - 1));
      const baseGfn = ((gfn << 12n) & ~((1n << covered) - 1n)) >> 12n;
      const role = roleAt(base, l - 1, ACC_ALL, true);
      const have = sp.children.get(idx);
      if (have && have.valid && have.gfn === baseGfn && have.role === role) { sp = have; continue; }
      const got = this.mmu.getPage(baseGfn, role, -1, this);
      flush = got.flush || flush;
      this.mmu.link(sp, idx, got.sp);
      sp = got.sp;
    }
    let spte = (gfn << 12n) | PTE.P | PTE.US;
    if (!this.mmu.isWriteProtected(gfn) || this.mmu.tryUnsync(gfn)) spte |= PTE.RW;
    flush = this.mmu.setLeaf(sp, indexAt(va, 1), gfn, spte) || flush;
    charge(this.costs.spteInstall);
    if (flush) this.mmu.flushRemote(this);
    return access === "write" && (spte & PTE.RW) === 0n ? "emulate" : "retry";
  }

  private fetch(va: bigint, levels: { level: number; gpa: bigint; pte: bigint }[], access: X86Access, user: boolean): "emulate" | "retry" {
    const charge = this.chargeFn;
    const base = this.roleBase();
    const pcid = this.policy.pcidTaggedSps ? this.guestPcid() : -1;
    let sp = this.root!.sp;
    let acc = ACC_ALL;
    // make_mmu_pages_available before descending: a reclaim in the middle of
    // the walk could free the very page about to get a child.
    let flush = this.mmu.ensureFree(8, charge);
    // A shadow page found again with unsync children (after an unlink) must be
    // synced: KVM requests KVM_REQ_MMU_SYNC when it finds one.
    let relinked = false;
    const leaf = levels[levels.length - 1]!;
    // 1. Indirect shadow pages for each guest table below the root.
    for (let i = 0; i < levels.length - 1; i++) {
      const e = levels[i]!;
      acc &= gpteAcc(e.pte);
      const idx = indexAt(va, e.level);
      const gfn = (e.pte & ADDR) >> 12n;
      const role = roleAt(base, e.level - 1, acc, false);
      const have = sp.children.get(idx);
      if (have && have.valid && have.gfn === gfn && have.role === role) { sp = have; continue; }
      const got = this.mmu.getPage(gfn, role, pcid, this);
      flush = got.flush || flush;
      if (!got.created && got.sp.unsyncChildren.size > 0) relinked = true;
      this.mmu.link(sp, idx, got.sp);
      charge(this.costs.spteInstall);
      sp = got.sp;
    }
    acc &= gpteAcc(leaf.pte);
    // CR0.WP = 0: a supervisor write to a read-only page is allowed, so the
    // walk's access becomes writable and supervisor-only (and not executable
    // under SMEP) before it picks direct pages by role (KVM paging_tmpl.h
    // FNAME(page_fault)): a direct page's SPTE rights are shared by every
    // mapping with its role.
    const wp = (this.guest().cr0 & CR0.WP) !== 0n;
    if (!wp && !user && access === "write" && (acc & ACC_WRITE) === 0) {
      acc = (acc | ACC_WRITE) & ~ACC_USER;
      if ((this.guest().cr4 & CR4.SMEP) !== 0n) acc &= ~ACC_EXEC;
    }
    // A clean guest large page is shadowed read-only (its direct pages are
    // shared by every mapping with the same role), so the first write faults
    // and the guest's D bit gets set.
    if (leaf.level > 1 && (leaf.pte & PTE.D) === 0n && access !== "write") acc &= ~ACC_WRITE;
    // 2. A guest large page is shadowed by direct pages of 4 KiB SPTEs: the
    //    direct page under SPTE idx(va, l) covers 2^(12 + 9(l − 1)) bytes.
    const shift = BigInt(12 + 9 * (leaf.level - 1));
    const pageMask = (1n << shift) - 1n;
    const gfn = (((leaf.pte & ADDR & ~pageMask) | (va & pageMask)) & ~0xfffn) >> 12n;
    for (let l = leaf.level; l > 1; l--) {
      const idx = indexAt(va, l);
      const covered = BigInt(12 + 9 * (l - 1));
      const baseGfn = ((gfn << 12n) & ~((1n << covered) - 1n)) >> 12n;
      const role = roleAt(base, l - 1, acc, true);
      const have = sp.children.get(idx);
      if (have && have.valid && have.gfn === baseGfn && have.role === role) { sp = have; continue; }
      const got = this.mmu.getPage(baseGfn, role, pcid, this);
      flush = got.flush || flush;
      this.mmu.link(sp, idx, got.sp);
      charge(this.costs.spteInstall);
      sp = got.sp;
    }
    // 3. The leaf SPTE: rights of the whole walk; W only once the gpte is dirty and the gfn unprotected.
    let spte = (gfn << 12n) | PTE.P;
    const wantWrite = (acc & ACC_WRITE) !== 0;
    if ((acc & ACC_USER) !== 0) spte |= PTE.US;
    if ((acc & ACC_EXEC) === 0) spte |= PTE.XD;
    const dirty = (leaf.pte & PTE.D) !== 0n || access === "write";
    let result: "emulate" | "retry" = "retry";
    if (wantWrite && dirty) {
      if (!this.mmu.isWriteProtected(gfn)) spte |= PTE.RW;
      else if (access === "write") {
        if (this.mmu.tryUnsync(gfn)) spte |= PTE.RW;
        else result = "emulate";
      }
    }
    flush = this.mmu.setLeaf(sp, indexAt(va, 1), gfn, spte) || flush;
    charge(this.costs.spteInstall);
    if (flush) this.mmu.flushRemote(this);
    if (relinked && this.mmu.syncTree(this.root!.sp, this) > 0) this.mmu.flushLocal(this);
    return result;
  }

  // ---- memory accesses ---------------------------------------------------------------

  /**
   * KVM_REQ_MMU_FREE_OBSOLETE_ROOTS + kvm_mmu_load before entering the guest:
   * a root zapped while in use (write flooding of the guest's PML4), or freed
   * by freeRoots(ROOT_CURRENT), is rebuilt, synced and flushed.
   */
  private reloadIfObsolete(): void {
    if (this.root?.sp.valid) return;
    const pgd = this.root?.pgd ?? (this.guest().cr3 & ~CR3_NOFLUSH);
    this.locked(() => {
      this.freeSlot(this.root);
      this.allocRoot(pgd);
      this.mmu.syncTree(this.root!.sp, this);
    });
    this.loadHardware();
    this.flushHardwareCurrent();
  }

  access(va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    this.resume();
    this.accesses++;
    for (let tries = 0; tries < 8; tries++) {
      this.reloadIfObsolete();
      this.resume();
      this.meter.mark();
      const hpa = this.hw.translatePa(va, access, user);
      this.cycles += this.meter.single(this.costs);
      if (hpa !== undefined) return hpa;
      const fault = this.hw.lastFault();
      if (fault.kind === "general-protection") return GP;
      if (fault.kind === "abort") throw new Error(`vmmu: shadow walk aborted at hpa ${fault.gpa} (shadow MMU bug)`);
      const f = this.pageFault(va, access, user);
      if (f === "retry") continue;
      if (f === "emulate") {
        this.exit("emulate");
        const pa = this.translateGuest(va, access, user);
        if (typeof pa !== "bigint") return pa;
        this.charge(this.costs.emulate);
        this.mmu.stats.emulatedWrites++;
        this.locked(() => this.mmu.trackWrite(pa & ~7n, 8, this));
        return pa;
      }
      return f;
    }
    throw new Error(`vmmu: shadow MMU did not converge on ${access} of 0x${va.toString(16)} (bug)`);
  }

  /**
   * The batch form of access(): runs the hardware over the batch area until
   * the first access that faults, handles that one as access() does (exits,
   * shadow faults, emulation), and continues; stops at the first exception
   * the guest must see. TLB hits and hardware walks are charged from the
   * counters, once per run.
   */
  accessMany(va: BigUint64Array, kinds: Uint8Array, n: number, user: boolean): { done: number; exception?: GuestException } {
    this.resume();
    return accessManyOnHardware(this.hw, va, kinds, n, (i, m) => {
      this.reloadIfObsolete();
      this.resume();
      this.meter.mark();
      const stop = this.hw.translateUntilFault(i, m, user);
      this.cycles += this.meter.run(this.costs);
      this.accesses += stop - i;
      return stop;
    }, (a, k) => this.access(a, k, user));
  }

  /** The guest-physical address of `va` by a software walk of the guest tables (the emulator's view). */
  private translateGuest(va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    const r = this.walker.walk(va, access, user, { setAD: true });
    if (!("fault" in r)) return r.pa;
    if (r.fault.kind === "general-protection") return GP;
    return { cr2: va, errorCode: r.fault.errorCode };
  }

  store64(va: bigint, value: bigint): GuestException | null {
    this.resume();
    for (let tries = 0; tries < 8; tries++) {
      this.reloadIfObsolete();
      this.resume();
      this.meter.mark();
      const hpa = this.hw.translatePa(va, "write", false);
      this.cycles += this.meter.single(this.costs);
      if (hpa !== undefined) {
        this.mmu.memory.write64(hpa, value);
        return null;
      }
      if (this.hw.lastFault().kind === "general-protection") return GP;
      const f = this.pageFault(va, "write", false);
      if (f === "retry") continue;
      if (f === "emulate") {
        this.exit("emulate");
        const pa = this.translateGuest(va, "write", false);
        if (typeof pa !== "bigint") return pa;
        this.charge(this.costs.emulate);
        this.mmu.stats.emulatedWrites++;
        this.mmu.memory.write64(pa, value);
        this.locked(() => this.mmu.trackWrite(pa, 8, this));
        return null;
      }
      return f;
    }
    throw new Error(`vmmu: shadow MMU did not converge on a store to 0x${va.toString(16)} (bug)`);
  }

  zeroPage(va: bigint): GuestException | null {
    this.resume();
    const page = va & ~0xfffn;
    for (let tries = 0; tries < 8; tries++) {
      this.reloadIfObsolete();
      this.resume();
      const hpa = this.hw.translatePa(page, "write", false);
      if (hpa !== undefined) {
        this.mmu.memory.fill(hpa, 4096, 0);
        this.charge(512);
        return null;
      }
      if (this.hw.lastFault().kind === "general-protection") return GP;
      const f = this.pageFault(page, "write", false);
      if (f === "retry") continue;
      if (f === "emulate") {
        this.exit("emulate");
        const pa = this.translateGuest(page, "write", false);
        if (typeof pa !== "bigint") return pa;
        this.charge(this.costs.emulate);
        this.mmu.stats.emulatedWrites++;
        this.mmu.memory.fill(pa, 4096, 0);
        this.locked(() => this.mmu.trackWrite(pa, 4096, this));
        return null;
      }
      return f;
    }
    throw new Error(`vmmu: shadow MMU did not converge on zeroing 0x${va.toString(16)} (bug)`);
  }

  readPhys64(gpa: bigint): bigint {
    return this.mmu.memory.read64(gpa);
  }

  // ---- intercepted instructions ----------------------------------------------------

  /**
   * MOV to CR3 under shadow paging (kvm_set_cr3 + kvm_mmu_new_pgd +
   * kvm_invalidate_pcid), per policy:
   * 1. Bit 63 is NOFLUSH with CR4.PCIDE; without PCIDE it is reserved (P4) or
   *    silently dropped (before P4).
   * 2. Switch roots (cache hit, or free + hash lookup).
   * 3. Unless a NOFLUSH switch hit the cache under P10/P8: resync the root's
   *    unsync pages, and flush the hardware context (all of it without P6).
   *    A flushing load also invalidates cached roots of the same PCID.
   */
  writeCr3(value: bigint): GuestException | null {
    this.resume();
    this.exit("cr3");
    const g = this.guest();
    const pcide = (g.cr4 & CR4.PCIDE) !== 0n;
    let v = BigInt.asUintN(64, value);
    if (!pcide && (v & CR3_NOFLUSH) !== 0n) {
      if (this.policy.noflushOnlyWithPcide) return GP;
      v &= ~CR3_NOFLUSH;
    }
    const noflush = pcide && (v & CR3_NOFLUSH) !== 0n;
    v &= ~CR3_NOFLUSH;
    const fault = this.walker.writeCr3(v | (noflush ? CR3_NOFLUSH : 0n));
    if (fault) return GP;
    this.g.cr3 = v;
    const pcid = pcide ? Number(v & CR3_PCID_MASK) : 0;
    const hit = this.switchRoot(v);
    const slot = this.root!;
    let sync = true, flush = true;
    let addrs: bigint[] | undefined;
    if (this.policy.pcidTaggedSps) {
      sync = flush = !noflush || this.pending[pcid] !== 0;
      const list = this.deferred.get(pcid);
      if (noflush && this.pending[pcid] === 2 && list) {
        for (const a of list) this.syncAddress(slot.sp, a);
        addrs = list;
        sync = flush = false;
      }
      this.pending[pcid] = 0;
      this.deferred.delete(pcid);
    } else if (hit && noflush) {
      if (this.policy.skipSyncOnNoflush) sync = false;
      if (this.policy.skipFlushOnNoflush && this.policy.mapGuestPcids) flush = false;
    }
    if (slot.needSync) { sync = flush = true; slot.needSync = false; this.mmu.stats.rootsNeedSyncReused++; }
    if (!noflush && this.policy.prevRoots) this.invalidatePrevRootsOfPcid(pcid);
    const synced = sync ? this.locked(() => this.mmu.syncTree(slot.sp, this)) : 0;
    this.loadHardware();
    if (flush || !this.policy.mapGuestPcids) this.flushHardwareCurrent();
    else if (synced > 0) this.mmu.flushLocal(this);
    else if (addrs) for (const a of addrs) { this.hwInvpcid(0, this.hwPcid(), a); this.charge(this.costs.addrFlush); }
    return null;
  }

  /**
   * kvm_mmu_invlpg: resync the SPTE for `va` in unsync pages of the current
   * root (every cached root with P9; without it the previous roots are
   * dropped), then flush the address (P11) or the whole hardware TLB.
   */
  invlpg(va: bigint): void {
    this.resume();
    this.exit("invlpg");
    const canonical = BigInt.asIntN(this.rootLevel() === 5 ? 57 : 48, va) === BigInt.asIntN(64, va);
    if (!canonical) return;
    this.syncAddress(this.root!.sp, va);
    if (this.policy.prevRoots) {
      if (this.policy.invlpgAllRoots) { for (const s of this.prev) if (s) this.syncAddress(s.sp, va); }
      else this.invalidateAllPrevRoots();
    }
    if (this.policy.pcidTaggedSps && this.mapsGlobal(va)) this.deferToOtherPcids(va);
    if (this.policy.flushOnlyAffected) this.flushHardwareAddr(va);
    else { this.flushHardwareAll(); this.charge(this.costs.localFlush); }
  }

  /**
   * alon2018: whether INVLPG of `va` must reach other PCIDs — SDM Vol.3A
   * §4.10.4.1: INVLPG invalidates the current PCID's translations for the
   * page and global ones of every PCID. The hypervisor reads the guest's
   * mapping of `va` (a software walk, charged): a global leaf under CR4.PGE
   * reaches the other PCIDs; so does no mapping at all (another address
   * space may map the page globally); a non-global one stays in its PCID.
   */
  private mapsGlobal(va: bigint): boolean {
    if ((this.guest().cr4 & CR4.PGE) === 0n) return false;
    const { result, levels } = this.walker.walkRecorded(va, "read", false, false);
    this.charge(this.costs.swWalkLevel * levels.length);
    if ("fault" in result || levels.length === 0) return true;
    return (levels[levels.length - 1]!.pte & PTE.G) !== 0n;
  }

  /** alon2018: an address flush owed to every other PCID (global mappings live in their own trees). */
  private deferToOtherPcids(va: bigint, only?: number): void {
    const cur = this.guestPcid();
    for (const p of only !== undefined ? [only] : this.mmu.taggedPcids()) {
      if (p === cur) continue;
      if (this.policy.deferredInvlpg > 0) {
        let l = this.deferred.get(p);
        if (!l) this.deferred.set(p, (l = []));
        if (l.length < this.policy.deferredInvlpg && this.pending[p] !== 1) { l.push(va); this.pending[p] = 2; continue; }
      }
      this.pending[p] = 1;
      this.deferred.delete(p);
    }
  }

  /** kvm_sync_spte along the shadow path of `va` under `root`: re-derives the one SPTE of any unsync leaf page on the way. */
  private syncAddress(root: ShadowPage, va: bigint): void {
    this.locked(() => this.syncAddressLocked(root, va));
  }

  private syncAddressLocked(root: ShadowPage, va: bigint): void {
    let sp: ShadowPage | undefined = root;
    let flush = false;
    const charge = this.chargeFn;
    while (sp) {
      this.charge(this.costs.syncVisit);
      const idx = indexAt(va, sp.level);
      if (sp.level === 1) {
        if (sp.unsync && sp.leafGfns.has(idx)) {
          charge(this.costs.syncSpte);
          flush = this.mmu.syncSpte(sp, idx) || flush;
        }
        break;
      }
      const child: ShadowPage | undefined = sp.children.get(idx);
      if (!child || !(child.unsync || child.unsyncChildren.size > 0)) break;
      sp = child;
    }
    if (flush) this.mmu.flushRemote(this);
  }

  /**
   * INVPCID under shadow paging (P7; kvm_handle_invpcid): type 0 resyncs the
   * address in the roots of that PCID, type 1 is kvm_invalidate_pcid, types
   * 2 and 3 resync every root and flush everything.
   */
  invpcid(type: number, pcid: number, va: bigint = 0n): GuestException | null {
    this.resume();
    if (!this.policy.invpcid) return GP;
    this.exit("invpcid");
    const arch = this.walker.invpcid(type, pcid, va);
    if (arch) return GP;
    const cur = this.guestPcid();
    const roots = [this.root, ...this.prev].filter((s): s is RootSlot => !!s && Number(s.pgd & CR3_PCID_MASK) === pcid);
    if (type === 0) {
      if (this.policy.pcidTaggedSps && pcid !== cur) { this.deferToOtherPcids(va, pcid); return null; }
      for (const s of roots) this.syncAddress(s.sp, va);
      if (this.policy.mapGuestPcids) { this.hwInvpcid(0, pcid, va); this.charge(this.costs.addrFlush); }
      else { this.flushHardwareAll(); this.charge(this.costs.localFlush); }
    } else if (type === 1) {
      if (this.policy.pcidTaggedSps && pcid !== cur) { this.pending[pcid] = 1; return null; }
      if (pcid === cur) this.locked(() => this.mmu.syncTree(this.root!.sp, this));
      if (this.policy.prevRoots) this.invalidatePrevRootsOfPcid(pcid);
      if (this.policy.mapGuestPcids) { this.hwInvpcid(1, pcid); this.charge(this.costs.localFlush); }
      else { this.flushHardwareAll(); this.charge(this.costs.localFlush); }
    } else {
      this.locked(() => this.mmu.syncTree(this.root!.sp, this));
      if (this.policy.prevRoots) this.invalidateAllPrevRoots();
      if (this.policy.pcidTaggedSps) this.pending.fill(1);
      this.flushHardwareAll();
      this.charge(this.costs.localFlush);
    }
    return null;
  }

  /** MOV to CR4 / CR0: role-relevant changes unload every root (kvm_mmu_reset_context); flushes as the SDM requires. */
  writeCr4(value: bigint): GuestException | null {
    this.resume();
    this.exit("cr4");
    if (this.walker.writeCr4(value)) return GP;
    this.syncGuest();
    this.resetContext();
    return null;
  }

  /**
   * MOV to CR0 (kvm_set_cr0): a change of TS alone is guest-owned (no exit);
   * otherwise an exit, and an MMU reset only when PG or WP changed (update_bits).
   */
  writeCr0(value: bigint): GuestException | null {
    this.resume();
    const changed = (this.guest().cr0 ^ BigInt.asUintN(64, value)) & ~(1n << 4n);
    if ((changed & ~(1n << 3n)) === 0n) {
      this.charge(this.costs.nativeCr3);
      if (this.walker.writeCr0(value)) return GP;
      this.syncGuest();
      return null;
    }
    this.exit("cr0");
    if (this.walker.writeCr0(value)) return GP;
    this.syncGuest();
    if ((changed & (CR0.PG | CR0.WP)) !== 0n) this.resetContext();
    return null;
  }

  /**
   * kvm_mmu_reset_context: kvm_init_mmu, then every root unloaded and the one
   * for the new role loaded (hash lookup), synced and flushed.
   */
  private resetContext(): void {
    this.charge(this.costs.mmuReinit);
    if (this.policy.pcidTaggedSps) this.pending.fill(1);
    this.freeRoots(ROOTS_ALL);
    this.locked(() => {
      this.allocRoot(this.guest().cr3);
      this.mmu.syncTree(this.root!.sp, this);
    });
    this.loadHardware();
    this.flushHardwareAll();
    this.charge(this.costs.localFlush);
  }

  sendIpi(_target: number): void {
    this.resume();
    this.exit("ipi");
  }

  /** An intercepted exception vector (INTERCEPTED_VECTORS) exits and is reinjected; others are delivered without KVM. */
  exception(vector: number): void {
    this.resume();
    if (INTERCEPTED_VECTORS.has(vector)) this.exit("exception");
  }

  /** Whether the vCPU is in SMM. */
  get inSmm(): boolean {
    return this.smm;
  }

  /**
   * An SMI (KVM enter_smm + kvm_smm_changed): the control state saved to SMRAM,
   * CR0.PE/EM/TS/PG, CR4 and EFER cleared (SDM Vol.3C §32.5.1), role.smm set,
   * the MMU reset. Throws if already in SMM (SMIs are blocked there).
   */
  smi(): void {
    this.resume();
    if (this.smm) throw new Error("vmmu: SMI while in SMM (SMIs are blocked in SMM)");
    this.exit("smi");
    this.charge(this.costs.smmStateSave);
    const c = this.walker.control();
    this.smramState = { cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer };
    this.smm = true;
    this.walker.setControl({ cr0: c.cr0 & ~(CR0.PE | 4n | 8n | CR0.PG), cr4: 0n, efer: 0n });
    this.syncGuest();
    this.resetContext();
  }

  /** RSM (emulated): the saved state back, role.smm clear, the MMU reset. Throws outside SMM (RSM raises #UD there). */
  rsm(): void {
    this.resume();
    if (!this.smm) throw new Error("vmmu: RSM outside SMM (#UD)");
    this.exit("rsm");
    this.charge(this.costs.smmStateSave);
    this.smm = false;
    this.walker.setControl(this.smramState!);
    this.smramState = undefined;
    this.syncGuest();
    this.resetContext();
  }

  /** Roots: current and previous (pgd, shadow page), for tests and reports. */
  roots(): { pgd: bigint; hpa: bigint; needSync: boolean }[] {
    return [this.root, ...this.prev].filter((s): s is RootSlot => !!s).map((s) => ({ pgd: s.pgd, hpa: s.sp.hpa, needSync: s.needSync }));
  }
}
