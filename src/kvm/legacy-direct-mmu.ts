// The legacy direct MMU: KVM's EPT MMU before the TDP MMU (arch/x86/kvm/mmu/mmu.c
// as of v5.10 with tdp_mmu=0: mmu_alloc_direct_roots, mmu_alloc_root,
// kvm_mmu_get_page with role.direct, __direct_map, link_shadow_page,
// drop_large_spte, mmu_set_spte, mmu_free_root_page, kvm_mmu_prepare_zap_page,
// kvm_mmu_commit_zap_page, kvm_unmap_rmapp, kvm_mmu_zap_all_fast,
// kvm_zap_obsolete_pages, make_mmu_pages_available,
// kvm_mmu_zap_oldest_mmu_pages). It is the shadow MMU's machinery with direct
// roles: every EPT table is a ShadowPage hashed by (base gfn, role word), the
// root is simply the page at gfn 0 with level = the EPT walk length.
//
// Consequence the CR0.WP/SMM experiment measures: a root whose last reference
// drops stays hashed with its whole tree, so acquiring the root of a role seen
// before (the other CR0.WP value, SMM and back) finds it again with every
// mapping intact. Only an invalid (zapped) root is freed on release.
//
// Tables are real EPT paging structures (SDM Vol.3C §29.3.2) in the host-table
// pool, in the encodings of src/kvm/ept-spte.ts; guest RAM is identity-mapped
// (the leaf for gfn maps host-physical gfn << 12).
//
// Page keys, as kvm_mmu_get_page forms them for a direct page:
//
//   level L page covers gfns [base, base + 512^L), base = gfn & ~(512^L − 1)
//   key = (base, role word with level = L, direct = 1, access = ACC_ALL, other
//          bits — cr0_wp, efer_nx, smm, guest_mode … — from the root's role)
//
// so two roots whose role words differ (cr0_wp 0/1, smm) never share a table.
//
// mmu_valid_gen is not kept: kvm_mmu_zap_all_fast bumps it so that pages not
// yet zapped are skipped while kvm_zap_obsolete_pages yields the lock to
// faulting vCPUs; here that zap runs to completion inside invalidateAllRoots,
// so an obsolete page is exactly a zapped one (role.invalid, ShadowPage.valid
// false) and no second flag could ever disagree with it.
//
// The NX huge page mitigation (opts.nxHugePages; nx_huge_pages, b8e8c8303ff2
// "kvm: mmu: ITLB_MULTIHIT mitigation", v5.4), as direct_map applies it: a
// huge leaf is made without X (make_spte); an instruction fetch maps at 4 KiB
// (kvm_mmu_hugepage_adjust, fault->huge_page_disallowed), dropping a huge leaf
// in its way (drop_large_spte) and marking each page it links
// nx_huge_page_disallowed (account_nx_huge_page; tracked as a possible NX
// huge page when req_level reaches the linking level); a later fault whose
// goal level holds a page so marked goes one level down
// (disallowed_hugepage_adjust, with the flag check of 76901e56fb51, v6.1).
// The recovery thread is not modelled.

import { hex } from "../addr.js";
import { bigintArg, boolArg, intArg, optionsObject, own, show } from "../validate.js";
import type { HostPool } from "./host-pool.js";
import { ACC_ALL, ShadowPage, roleAt, roleLevel } from "./shadow-mmu.js";
import { isLastSpte, isShadowPresent, levelBytes, makeLeafSpte, makeNonLeafSpte, SPTE_ADDR_MASK } from "./ept-spte.js";
import type { DirectFaultResult, DirectMmu, DirectMmuStats, RoleWord } from "./direct-mmu.js";

/** role.invalid (bit 11 of kvm_mmu_page_role): never part of a lookup key, refused in acquireRoot. */
const ROLE_INVALID = 1 << 11;

/** make_mmu_pages_available: reclaim when fewer pages than this are free (KVM_MIN_FREE_MMU_PAGES). */
const MIN_FREE_PAGES = 5;
/** make_mmu_pages_available: reclaim up to this many free pages (KVM_REFILL_PAGES). */
const REFILL_PAGES = 25;

export interface LegacyDirectMmuOptions {
  /** Guest RAM bytes, [0, ramBytes) identity-mapped; a positive multiple of 4 KiB. */
  ramBytes: bigint;
  /** EPT walk length (default 4). */
  levels?: 4 | 5;
  /** EPT A/D bits (EPTP bit 6; KVM enable_ept_ad_bits): leaves pre-set A and D (default true). */
  adEnabled?: boolean;
  /**
   * The largest page the host backs guest RAM with (1 = 4 KiB, 2 = 2 MiB THP,
   * 3 = 1 GiB hugetlbfs; default 2). An assumption about the host, the bound
   * kvm_mmu_hugepage_adjust reads from the host page tables (host_pfn_mapping_level).
   */
  hostLevel?: 1 | 2 | 3;
  /** KVM's nx_huge_pages (the iTLB multihit mitigation; header): huge leaves non-executable, instruction fetches mapped at 4 KiB (default false). */
  nxHugePages?: boolean;
}

/** DirectMmuStats plus the mitigation's count. */
export interface LegacyDirectMmuStats extends DirectMmuStats {
  /**
   * Pages a fault linked where, but for the NX huge page mitigation, it would
   * have mapped a huge page (account_nx_huge_page with nx_huge_page_possible).
   * KVM's kvm->stat.nx_lpage_splits counts the same pages but as a gauge:
   * possibleNxHugePages().
   */
  nxLpageSplits: number;
}

function zeroStats(): LegacyDirectMmuStats {
  return {
    rootsBuilt: 0, rootsFreed: 0, rootsReused: 0, faults: 0, spurious: 0, spteInstalled: 0,
    spteZapped: 0, spAllocated: 0, spFreed: 0, splits: 0, remoteFlushes: 0, nxLpageSplits: 0,
  };
}

export class LegacyDirectMmu implements DirectMmu {
  readonly kind = "legacy" as const;
  readonly stats: LegacyDirectMmuStats = zeroStats();
  readonly levels: 4 | 5;
  readonly adEnabled: boolean;
  readonly ramBytes: bigint;
  readonly nxHugePages: boolean;
  private host: 1 | 2 | 3;
  /** Pages with sp->nx_huge_page_disallowed → whether tracked as a possible NX huge page. */
  private readonly nxDisallowed = new Map<ShadowPage, boolean>();
  /** mmu_page_hash: base gfn (as a number) → the valid pages of that gfn, every level and role. */
  private readonly hash = new Map<number, ShadowPage[]>();
  /** Every page this MMU holds by hpa, hashed or not (invalid roots still referenced). */
  private readonly pages = new Map<bigint, ShadowPage>();
  /** active_mmu_pages: allocation order, oldest first (kvm_mmu_zap_oldest_mmu_pages, kvm_zap_obsolete_pages). */
  private readonly active = new Set<ShadowPage>();
  /**
   * rmap per leaf level (index 1..3, as gfn_to_rmap(gfn, level)): base gfn of
   * the leaf (as a number) → the leaf SPTEs mapping it, by pool entry number.
   */
  private readonly rmaps: Map<number, Map<number, ShadowPage>>[] = [new Map(), new Map(), new Map(), new Map()];

  /**
   * `pool`: the host-table pool the tables are built in (shared with nothing
   * that expects its pages back). Throws a TypeError or RangeError naming the
   * option on bad input.
   */
  constructor(readonly pool: HostPool, opts: LegacyDirectMmuOptions) {
    const o = optionsObject(opts, "opts");
    const ram = bigintArg(own(o, "ramBytes"), "opts.ramBytes");
    if (ram <= 0n || (ram & 0xfffn) !== 0n || ram > 1n << 52n) {
      throw new RangeError(`vmmu: opts.ramBytes must be a positive multiple of 4096 up to 2^52, got ${show(ram)}`);
    }
    const levels = own(o, "levels");
    if (levels !== undefined && levels !== 4 && levels !== 5) throw new RangeError(`vmmu: opts.levels must be 4 or 5, got ${show(levels)}`);
    const ad = own(o, "adEnabled");
    this.ramBytes = ram;
    this.levels = (levels ?? 4) as 4 | 5;
    this.adEnabled = ad === undefined ? true : boolArg(ad, "opts.adEnabled");
    this.host = intArg(own(o, "hostLevel") ?? 2, "opts.hostLevel", 1, 3) as 1 | 2 | 3;
    const nx = own(o, "nxHugePages");
    this.nxHugePages = nx === undefined ? false : boolArg(nx, "opts.nxHugePages");
  }

  /**
   * The host's largest backing page now (opts.hostLevel). Settable: the host
   * splitting or collapsing its huge pages (or dirty logging forbidding them)
   * changes the level later faults map at, which is when __direct_map meets
   * a huge SPTE above its goal (drop_large_spte) or a table at it.
   */
  get hostLevel(): 1 | 2 | 3 {
    return this.host;
  }

  set hostLevel(level: 1 | 2 | 3) {
    this.host = intArg(level, "hostLevel", 1, 3) as 1 | 2 | 3;
  }

  // ---- roots ----------------------------------------------------------------------

  /**
   * mmu_alloc_direct_roots → mmu_alloc_root → kvm_mmu_get_page(gfn 0, role):
   * the valid root hashed under `role` gets one more reference (rootsReused),
   * or an empty one is allocated (rootsBuilt). `role` must carry level =
   * `levels` and not role.invalid; its direct and access bits are set as
   * kvm_mmu_get_page sets them (direct = 1, access = ACC_ALL). `flush` is true
   * when making room zapped present SPTEs (kvm_mmu_commit_zap_page flushed).
   * Throws when the pool is full even after zapping the oldest pages.
   */
  acquireRoot(role: RoleWord): { hpa: bigint; built: boolean; flush: boolean } {
    const key = this.rootRole(role);
    const flush = this.makePagesAvailable();
    const { sp, created } = this.getPage(0n, key);
    sp.rootCount++;
    if (created) this.stats.rootsBuilt++;
    else this.stats.rootsReused++;
    return { hpa: sp.hpa, built: created, flush };
  }

  /**
   * mmu_free_root_page: drops one reference to root `hpa`. At zero an invalid
   * (zapped) root is freed (rootsFreed); a valid one stays hashed with its
   * whole tree for the next acquireRoot of its role. Throws if `hpa` is not a
   * root with a reference.
   */
  releaseRoot(hpa: bigint): number {
    const sp = this.heldRoot(hpa, "hpa");
    sp.rootCount--;
    if (sp.rootCount > 0) return 0;
    if (!sp.valid) this.free(sp);
    return 0;
  }

  /** True iff `hpa` is a root page not zapped (obsolete roots are zapped: what a vCPU may keep using). */
  isValidRoot(hpa: bigint): boolean {
    const sp = typeof hpa === "bigint" ? this.pages.get(hpa) : undefined;
    return sp !== undefined && sp.level === this.levels && sp.valid;
  }

  /** Pool pages this MMU holds now: hashed pages (roots, tables, orphaned tables) and invalid roots still referenced. */
  pagesInUse(): number {
    return this.pages.size;
  }

  /** Pages tracked as possible NX huge pages now (KVM's kvm->stat.nx_lpage_splits); 0 without nxHugePages. */
  possibleNxHugePages(): number {
    let n = 0;
    for (const tracked of this.nxDisallowed.values()) if (tracked) n++;
    return n;
  }

  // ---- the EPT-violation handler --------------------------------------------------

  /**
   * __direct_map for `gpa` under root `rootHpa` (held and valid; a vCPU holding
   * an invalid root reloads instead, KVM_REQ_MMU_RELOAD). `write` changes
   * nothing: guest RAM is mapped RWX whatever the access (ACC_ALL), and with
   * A/D on the leaf is pre-set accessed and dirty (make_spte sets the dirty
   * bit on every SPTE whose pte_access has ACC_WRITE_MASK). `exec` matters
   * only under nxHugePages (huge leaves are then made without X).
   *
   * 1. make_mmu_pages_available (zap the oldest unreferenced pages if fewer
   *    than 5 pool pages are free).
   * 2. req_level: the largest level ≤ hostLevel whose aligned range around
   *    gpa lies in [0, ramBytes) (kvm_mmu_hugepage_adjust); the goal level is
   *    req_level, or 4 KiB for an `exec` fault under nxHugePages.
   * 3. Walk from the root down to the goal level; at each SPTE:
   *    a. under nxHugePages, at the goal level a link to a page marked
   *       nx_huge_page_disallowed lowers the goal by one (disallowed_hugepage_adjust);
   *    b. a huge leaf above the goal → drop it (drop_large_spte: zap it, flush the range);
   *    c. not present → kvm_mmu_get_page(base gfn of the child range, child
   *       role), found in the hash or allocated, and link_shadow_page; an
   *       `exec` fault under nxHugePages marks it nx_huge_page_disallowed
   *       (account_nx_huge_page; nxLpageSplits when req_level ≥ this level);
   *    d. descend.
   * 4. At the goal SPTE: a present table → unlink it (drop_parent_pte: the
   *    table stays hashed, an orphan; flush); the leaf (make_spte) replaces
   *    whatever is there; an identical SPTE → spurious, nothing written.
   *
   * Throws a RangeError for a gpa outside guest RAM, an Error for a root that
   * is unknown, not held or invalid, or when the pool is full even after
   * zapping the oldest pages.
   */
  pageFault(rootHpa: bigint, gpa: bigint, write: boolean, exec: boolean): DirectFaultResult {
    const root = this.heldRoot(rootHpa, "rootHpa");
    if (!root.valid) throw new Error(`vmmu: rootHpa ${hex(rootHpa)} is an invalid root (the vCPU must reload it: KVM_REQ_MMU_RELOAD)`);
    bigintArg(gpa, "gpa");
    if (gpa < 0n || gpa >= this.ramBytes) throw new RangeError(`vmmu: gpa must lie in guest RAM [0, ${hex(this.ramBytes)}) (MMIO is not modelled), got ${hex(gpa)}`);
    boolArg(write, "write");
    boolArg(exec, "exec");
    this.stats.faults++;
    const out: DirectFaultResult = { spurious: false, spteInstalled: 0, spAllocated: 0, split: false, level: 0, flush: false };
    const reclaimed = this.makePagesAvailable();
    let flush = false;
    const nx = this.nxHugePages;
    const reqLevel = this.goalLevel(gpa);
    const disallowed = exec && nx;
    let goal = disallowed ? 1 : reqLevel;
    const gfn = gpa >> 12n;
    let sp: ShadowPage = root;
    for (let level = this.levels; ; level--) {
      const index = this.indexOf(gfn, level);
      if (nx && level === goal && goal > 1) {
        const below = sp.children.get(index);
        if (below !== undefined && this.nxDisallowed.has(below)) goal--;
      }
      if (level === goal) break;
      const spte = this.pool.entry(sp.entryBase + index);
      if (isShadowPresent(spte) && isLastSpte(spte, level)) {
        this.clearLeaf(sp, index);
        flush = true;
      }
      let child = sp.children.get(index);
      if (child === undefined) {
        const got = this.getPage(this.baseGfn(gfn, level), roleAt(root.role, level - 1, ACC_ALL, true));
        child = got.sp;
        if (got.created) out.spAllocated++;
        this.link(sp, index, child);
        out.spteInstalled++;
        if (disallowed) this.accountNxHugePage(child, reqLevel >= level);
      }
      sp = child;
    }
    out.level = goal;
    const index = this.indexOf(gfn, goal);
    const n = sp.entryBase + index;
    const table = sp.children.get(index);
    if (table) {
      this.unlink(sp, index, table);
      flush = true;
    }
    const old = this.pool.entry(n);
    const base = this.baseGfn(gfn, goal);
    const spte = makeLeafSpte(base << 12n, goal, { write: true, exec: !(nx && goal > 1), ad: this.adEnabled });
    if (old === spte) {
      out.spurious = true;
      this.stats.spurious++;
    } else {
      this.setLeaf(sp, index, base, goal, spte);
      out.spteInstalled++;
    }
    this.stats.spteInstalled += out.spteInstalled;
    if (flush) this.stats.remoteFlushes++;
    out.flush = flush || reclaimed;
    return out;
  }

  // ---- zapping ----------------------------------------------------------------------

  /**
   * kvm_unmap_gfn_range → kvm_unmap_rmapp on every leaf level: every leaf SPTE
   * whose range meets gfns [start, end) is zapped, a huge one whole; tables stay
   * (they are freed only by reclaim or invalidation). `flush` iff anything was
   * zapped (the caller flushes every vCPU's TLB). Throws a RangeError unless
   * 0 ≤ start ≤ end.
   */
  zapGfnRange(start: bigint, end: bigint): { zapped: number; flush: boolean } {
    bigintArg(start, "start");
    bigintArg(end, "end");
    if (start < 0n || end < start) throw new RangeError(`vmmu: zapGfnRange needs 0 ≤ start ≤ end, got start ${hex(start)}, end ${hex(end)}`);
    const last = this.ramBytes >> 12n;
    const hi = end < last ? end : last;
    let zapped = 0;
    for (let level = 1; level <= 3; level++) {
      const rmap = this.rmaps[level]!;
      if (rmap.size === 0 || start >= hi) continue;
      const span = 1n << BigInt(9 * (level - 1));
      const first = start & ~(span - 1n);
      const steps = (hi - first + span - 1n) / span;
      if (steps <= BigInt(rmap.size)) {
        for (let g = first; g < hi; g += span) zapped += this.zapRmap(rmap, Number(g));
      } else {
        const lo = Number(first), top = Number(hi);
        for (const g of [...rmap.keys()]) if (g >= lo && g < top) zapped += this.zapRmap(rmap, g);
      }
    }
    if (zapped > 0) this.stats.remoteFlushes++;
    return { zapped, flush: zapped > 0 };
  }

  /**
   * kvm_mmu_zap_all_fast: every page becomes obsolete (never found by
   * kvm_mmu_get_page again, every root invalid for isValidRoot) and
   * kvm_zap_obsolete_pages zaps them all: unreferenced pages are freed now,
   * referenced roots (emptied) when their last holder releases them.
   * One remote flush if a present SPTE went away (kvm_mmu_commit_zap_page).
   */
  invalidateAllRoots(): void {
    let flush = false;
    for (const sp of [...this.active]) {
      if (!sp.valid) continue;
      flush = this.zapPage(sp) || flush;
      if (sp.rootCount === 0) this.free(sp);
    }
    if (flush) this.stats.remoteFlushes++;
  }

  // ---- audit ------------------------------------------------------------------------

  /**
   * The MMU's bookkeeping checked against the SPTEs in the pool (the checks
   * of KVM's former arch/x86/kvm/mmu/mmu_audit.c, CONFIG_KVM_MMU_AUDIT:
   * audit_mappings, audit_sptes_have_rmaps, for direct pages). Returns one
   * line per inconsistency; empty when:
   *
   * 1. every valid page is hashed once under its gfn and role, every page
   *    held is in the active list, an invalid one is a referenced root with
   *    no SPTE left;
   * 2. every link SPTE is make_nonleaf_spte of a held, valid child one level
   *    down whose key is (base gfn of that SPTE, the parent's role at that
   *    level), and the child lists the parent SPTE among its parents (and
   *    only SPTEs that link it);
   * 3. every leaf SPTE maps its own base gfn, at its page's level, and has
   *    its rmap entry (and every rmap entry such a leaf);
   * 4. no present SPTE is unaccounted for.
   */
  audit(): string[] {
    const out: string[] = [];
    const name = (sp: ShadowPage) => `page ${hex(sp.hpa)} (gfn ${hex(sp.gfn)}, level ${sp.level})`;
    for (const sp of this.pages.values()) {
      const hashed = (this.hash.get(sp.gfnKey) ?? []).filter((x) => x === sp).length;
      if (sp.valid && hashed !== 1) out.push(`${name(sp)} is hashed ${hashed} times`);
      if (!sp.valid && (hashed !== 0 || sp.rootCount === 0 || sp.level !== this.levels)) out.push(`${name(sp)} is invalid but hashed, unreferenced or not a root`);
      if (!this.active.has(sp)) out.push(`${name(sp)} is not on the active list`);
      for (const p of sp.parents) {
        if (this.pages.get(p.sp.hpa) !== p.sp || !p.sp.valid || p.sp.children.get(p.index) !== sp) out.push(`${name(sp)} lists a parent SPTE ${hex(p.sp.hpa)}[${p.index}] that does not link it`);
      }
      for (let index = 0; index < 512; index++) {
        const spte = this.pool.entry(sp.entryBase + index);
        const child = sp.children.get(index);
        const gfn = sp.leafGfns.get(index);
        const base = sp.gfn + (BigInt(index) << BigInt(9 * (sp.level - 1)));
        if (child) {
          if (spte !== makeNonLeafSpte(child.hpa, this.adEnabled)) out.push(`${name(sp)}[${index}] does not link its child ${hex(child.hpa)}`);
          if (this.pages.get(child.hpa) !== child || !child.valid) out.push(`${name(sp)}[${index}] links a page not held or invalid`);
          if (child.gfn !== base || child.role !== roleAt(sp.role, sp.level - 1, ACC_ALL, true)) out.push(`${name(sp)}[${index}] links ${name(child)} whose key is not (${hex(base)}, the child role)`);
          let listed = false;
          for (const p of child.parents) if (p.sp === sp && p.index === index) listed = true;
          if (!listed) out.push(`${name(child)} does not list its parent SPTE ${hex(sp.hpa)}[${index}]`);
        } else if (gfn !== undefined) {
          const leaf = this.rmaps[sp.level]?.get(Number(gfn))?.get(sp.entryBase + index);
          if (gfn !== base || !isShadowPresent(spte) || !isLastSpte(spte, sp.level) || (spte & SPTE_ADDR_MASK) !== base << 12n) out.push(`${name(sp)}[${index}] leaf ${hex(spte)} does not map gfn ${hex(base)}`);
          if (leaf !== sp) out.push(`${name(sp)}[${index}] leaf has no rmap entry`);
        } else if (spte !== 0n) {
          out.push(`${name(sp)}[${index}] holds ${hex(spte)} the MMU does not account for`);
        }
      }
    }
    for (let level = 1; level < this.rmaps.length; level++) {
      for (const [g, m] of this.rmaps[level]!) {
        for (const [n, sp] of m) {
          if (this.pages.get(sp.hpa) !== sp || sp.level !== level || sp.leafGfns.get(n - sp.entryBase) !== BigInt(g)) out.push(`rmap entry (level ${level}, gfn ${hex(g)}) → ${hex(sp.hpa)}[${n - sp.entryBase}] is no leaf of a held page`);
        }
      }
    }
    for (const sp of this.active) if (this.pages.get(sp.hpa) !== sp) out.push(`${name(sp)} is on the active list but not held`);
    for (const sp of this.nxDisallowed.keys()) if (this.pages.get(sp.hpa) !== sp || !sp.valid) out.push(`${name(sp)} is marked nx_huge_page_disallowed but not held or zapped`);
    return out;
  }

  // ---- internals ---------------------------------------------------------------------

  private rootRole(role: unknown): number {
    if (typeof role !== "number") throw new TypeError(`vmmu: role must be a role word (a u32 number), got ${show(role)}`);
    if (!Number.isInteger(role) || role < 0 || role > 0xffff_ffff) throw new RangeError(`vmmu: role must be a role word (a u32 number), got ${show(role)}`);
    if (roleLevel(role) !== this.levels) throw new RangeError(`vmmu: role must have level ${this.levels} (the EPT walk length), got level ${roleLevel(role)} in ${hex(role)}`);
    if ((role & ROLE_INVALID) !== 0) throw new RangeError(`vmmu: role must not have role.invalid (bit 11) set, got ${hex(role)}`);
    return roleAt(role, this.levels, ACC_ALL, true) >>> 0;
  }

  /** The root page at `hpa` with a reference, or an Error naming `name`. */
  private heldRoot(hpa: unknown, name: string): ShadowPage {
    bigintArg(hpa, name);
    const sp = this.pages.get(hpa as bigint);
    if (!sp || sp.level !== this.levels || sp.rootCount === 0) throw new Error(`vmmu: ${name} ${hex(hpa as bigint)} is not a root this MMU holds a reference to (acquireRoot first)`);
    return sp;
  }

  /** kvm_mmu_hugepage_adjust with the host's level and guest RAM as the only bounds. */
  private goalLevel(gpa: bigint): number {
    for (let level = Math.min(this.host, this.levels - 1); level > 1; level--) {
      const size = levelBytes(level);
      if ((gpa & ~(size - 1n)) + size <= this.ramBytes) return level;
    }
    return 1;
  }

  private indexOf(gfn: bigint, level: number): number {
    return Number((gfn >> BigInt(9 * (level - 1))) & 511n);
  }

  /** First gfn of the range one SPTE at `level` maps (the key of the level − 1 page that covers it). */
  private baseGfn(gfn: bigint, level: number): bigint {
    return gfn & ~((1n << BigInt(9 * (level - 1))) - 1n);
  }

  /**
   * kvm_mmu_get_page for a direct role: the valid page hashed under
   * (gfn, role), or a new zeroed pool page. Throws when the pool is full.
   */
  private getPage(gfn: bigint, role: number): { sp: ShadowPage; created: boolean } {
    const k = Number(gfn);
    const list = this.hash.get(k);
    if (list) for (const sp of list) if (sp.role === role && sp.valid) return { sp, created: false };
    const hpa = this.pool.alloc();
    if (hpa === undefined) {
      throw new Error(`vmmu: host-table pool exhausted: ${this.pool.pages} pages, ${this.pages.size} held by the legacy direct MMU after zapping the oldest unreferenced ones (raise poolBytes)`);
    }
    const sp = new ShadowPage(gfn, role, -1, hpa, this.pool.entryBase(hpa));
    if (list) list.push(sp);
    else this.hash.set(k, [sp]);
    this.pages.set(hpa, sp);
    this.active.add(sp);
    this.stats.spAllocated++;
    return { sp, created: true };
  }

  /** link_shadow_page: SPTE `index` of `parent` points at `child` (make_nonleaf_spte). */
  private link(parent: ShadowPage, index: number, child: ShadowPage): void {
    parent.children.set(index, child);
    child.parents.add({ sp: parent, index });
    this.pool.setEntry(parent.entryBase + index, makeNonLeafSpte(child.hpa, this.adEnabled));
  }

  /** drop_parent_pte: clears the link at SPTE `index` of `parent`; `child` stays hashed. */
  private unlink(parent: ShadowPage, index: number, child: ShadowPage): void {
    for (const p of child.parents) if (p.sp === parent && p.index === index) child.parents.delete(p);
    parent.children.delete(index);
    this.pool.setEntry(parent.entryBase + index, 0n);
    this.stats.spteZapped++;
  }

  /** mmu_set_spte + rmap_add: leaf SPTE `index` of `sp` maps base gfn `gfn` at `level`. */
  private setLeaf(sp: ShadowPage, index: number, gfn: bigint, level: number, spte: bigint): void {
    const n = sp.entryBase + index;
    if (!sp.leafGfns.has(index)) {
      sp.leafGfns.set(index, gfn);
      const k = Number(gfn), rmap = this.rmaps[level]!;
      let m = rmap.get(k);
      if (!m) rmap.set(k, (m = new Map()));
      m.set(n, sp);
    }
    this.pool.setEntry(n, spte);
  }

  /** drop_spte: clears leaf SPTE `index` of `sp` and its rmap entry. */
  private clearLeaf(sp: ShadowPage, index: number): void {
    const gfn = sp.leafGfns.get(index);
    const n = sp.entryBase + index;
    if (gfn !== undefined) {
      const rmap = this.rmaps[sp.level]!, k = Number(gfn);
      const m = rmap.get(k);
      if (m) {
        m.delete(n);
        if (m.size === 0) rmap.delete(k);
      }
      sp.leafGfns.delete(index);
    }
    this.pool.setEntry(n, 0n);
    this.stats.spteZapped++;
  }

  /** kvm_zap_rmapp: zaps every leaf SPTE in `rmap` for base gfn `k`; returns how many. */
  private zapRmap(rmap: Map<number, Map<number, ShadowPage>>, k: number): number {
    const m = rmap.get(k);
    if (!m) return 0;
    let zapped = 0;
    for (const [n, sp] of [...m]) {
      this.clearLeaf(sp, n - sp.entryBase);
      zapped++;
    }
    return zapped;
  }

  /**
   * kvm_mmu_prepare_zap_page for a direct page: unlinks it from its parent
   * and its children (the children stay hashed, orphans), zaps its leaves,
   * marks it invalid and drops it from the hash. The caller frees it if no
   * root reference holds it. Returns true if a present SPTE went away.
   */
  private zapPage(sp: ShadowPage): boolean {
    if (!sp.valid) return false;
    let flush = sp.parents.size > 0;
    for (const p of [...sp.parents]) this.unlink(p.sp, p.index, sp);
    for (const [index, child] of [...sp.children]) {
      this.unlink(sp, index, child);
      flush = true;
    }
    for (const index of [...sp.leafGfns.keys()]) {
      this.clearLeaf(sp, index);
      flush = true;
    }
    sp.valid = false;
    this.nxDisallowed.delete(sp);
    const list = this.hash.get(sp.gfnKey);
    if (list) {
      const i = list.indexOf(sp);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.hash.delete(sp.gfnKey);
    }
    return flush;
  }

  /**
   * account_nx_huge_page: marks `sp` nx_huge_page_disallowed; `possible`
   * (req_level ≥ the level of the SPTE linking it) tracks it as a possible NX
   * huge page. A page already marked stays as it is.
   */
  private accountNxHugePage(sp: ShadowPage, possible: boolean): void {
    if (this.nxDisallowed.has(sp)) return;
    this.nxDisallowed.set(sp, possible);
    if (possible) this.stats.nxLpageSplits++;
  }

  /** kvm_mmu_free_page: returns a zapped, unreferenced page to the pool. */
  private free(sp: ShadowPage): void {
    if (!this.pages.delete(sp.hpa)) return;
    this.active.delete(sp);
    this.pool.release(sp.hpa);
    this.stats.spFreed++;
    if (sp.level === this.levels) this.stats.rootsFreed++;
  }

  /**
   * make_mmu_pages_available → kvm_mmu_zap_oldest_mmu_pages: with fewer than
   * 5 pool pages free, zaps the oldest pages no root references (root pages
   * of no vCPU included: their role is rebuilt on the next acquire) until 25
   * are free or none is left. Returns true if a present SPTE went away.
   */
  private makePagesAvailable(): boolean {
    const free = () => this.pool.pages - this.pool.inUse;
    if (free() >= MIN_FREE_PAGES) return false;
    let flush = false;
    for (const sp of [...this.active]) {
      if (free() >= REFILL_PAGES) break;
      if (sp.rootCount > 0) continue;
      flush = this.zapPage(sp) || flush;
      this.free(sp);
    }
    if (flush) this.stats.remoteFlushes++;
    return flush;
  }
}
