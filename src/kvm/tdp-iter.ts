// The TDP MMU's page-table iterator (KVM arch/x86/kvm/mmu/tdp_iter.h struct
// tdp_iter, tdp_iter.c tdp_iter_start / tdp_iter_next / tdp_iter_restart,
// for_each_tdp_pte_min_level): a pre-order walk of one EPT tree in the
// host-table pool over the gfns [start, end), visiting every SPTE whose range
// meets the interval, stepping into present non-leaf SPTEs above `minLevel`.
//
// Positions are pool entry numbers (HostPool.entry); gfns are Numbers (exact:
// a 5-level tree spans 2^45 gfns). A step allocates nothing but the BigInt of
// the SPTE it reads.
//
//   ptPath[level − 1] = entry number of SPTE 0 of the table walked at `level`
//   sptep             = ptPath[level − 1] + index of gfn at level
//   gfn               = first gfn mapped by sptep (gfn rounded down to the level)

import type { HostPool } from "./host-pool.js";
import { isLastSpte, isShadowPresent, spteHpa } from "./ept-spte.js";

/** 512^(level − 1) for levels 1..6 (6: the span of a 5-level root; index 0 unused): a table load per iterator step instead of a power. */
const PAGES_PER_LEVEL = [0, 1, 512, 512 ** 2, 512 ** 3, 512 ** 4, 512 ** 5];

/** gfns mapped by one SPTE at `level`: 512^(level − 1) (KVM KVM_PAGES_PER_HPAGE). */
export function pagesPerLevel(level: number): number {
  return PAGES_PER_LEVEL[level]!;
}

/** gfn rounded down to the first gfn of its SPTE at `level` (KVM gfn_round_for_level). */
export function roundGfnForLevel(gfn: number, level: number): number {
  const n = pagesPerLevel(level);
  return gfn - (gfn % n);
}

/** Index of `gfn` in its table at `level` (KVM SPTE_INDEX). */
export function spteIndex(gfn: number, level: number): number {
  return Math.floor(gfn / pagesPerLevel(level)) % 512;
}

export class TdpIter {
  /** Pool entry number of the current SPTE. */
  sptep = 0;
  /** The current SPTE as last read. */
  oldSpte = 0n;
  level = 0;
  /** First gfn the current SPTE maps. */
  gfn = 0;
  /** Entry number of SPTE 0 of the table at each level (index level − 1). */
  readonly ptPath: number[] = [0, 0, 0, 0, 0];
  rootLevel = 0;
  minLevel = 0;
  /** The walk is past its last SPTE (KVM: !iter.valid). */
  valid = false;
  /** The walk yielded; the next step restarts from the root (tdp_iter_restart). */
  yielded = false;
  /** The gfn the walk resumes at after a yield: the start, then each gfn a sideways step reaches. */
  nextLastLevelGfn = 0;
  /** nextLastLevelGfn at the last (re)start: no second yield before it moves (forward progress). */
  yieldedGfn = 0;
  /** End of the range (exclusive). */
  end = 0;

  constructor(private readonly pool: HostPool) {}

  /**
   * tdp_iter_start: positions the walk on the root-level SPTE of `start` in the
   * tree whose root table is at pool entry `rootBase`. Visit with
   * `for (it.start(...); it.more(); it.next())`.
   */
  start(rootBase: number, rootLevel: number, minLevel: number, start: number, end: number): this {
    this.rootLevel = rootLevel;
    this.minLevel = minLevel;
    this.ptPath[rootLevel - 1] = rootBase;
    this.nextLastLevelGfn = start;
    this.end = end;
    this.restart();
    return this;
  }

  /** The current SPTE is one to visit: the walk is valid and its gfn is below the end. */
  more(): boolean {
    return this.valid && this.gfn < this.end;
  }

  /**
   * tdp_iter_next, in order:
   * 1. after a yield, restart from the root at nextLastLevelGfn;
   * 2. else step down into the child table of a present non-leaf SPTE above minLevel;
   * 3. else step sideways, stepping up out of each exhausted table first;
   * 4. past the root table's last SPTE the walk is done (valid = false).
   */
  next(): void {
    if (this.yielded) {
      this.restart();
      return;
    }
    if (this.stepDown()) return;
    do {
      if (this.stepSide()) return;
    } while (this.stepUp());
    this.valid = false;
  }

  /**
   * The yield point of tdp_mmu_iter_cond_resched once the caller decided to
   * yield: refused (false) while the walk has not moved since its last
   * (re)start, else marks the walk yielded so next() restarts from the root.
   */
  yieldNow(): boolean {
    if (this.nextLastLevelGfn === this.yieldedGfn) return false;
    this.yielded = true;
    return true;
  }

  /** Re-reads the current SPTE (after a failed compare-exchange: KVM refreshes iter->old_spte). */
  reread(): bigint {
    this.oldSpte = this.pool.entry(this.sptep);
    return this.oldSpte;
  }

  private restart(): void {
    this.yielded = false;
    this.yieldedGfn = this.nextLastLevelGfn;
    this.level = this.rootLevel;
    this.gfn = roundGfnForLevel(this.nextLastLevelGfn, this.level);
    this.refresh();
    this.valid = true;
  }

  private refresh(): void {
    this.sptep = this.ptPath[this.level - 1]! + spteIndex(this.gfn, this.level);
    this.oldSpte = this.pool.entry(this.sptep);
  }

  private stepDown(): boolean {
    if (this.level === this.minLevel) return false;
    const spte = this.pool.entry(this.sptep);
    this.oldSpte = spte;
    if (!isShadowPresent(spte) || isLastSpte(spte, this.level)) return false;
    this.level--;
    this.ptPath[this.level - 1] = this.pool.entryBase(spteHpa(spte));
    this.gfn = roundGfnForLevel(this.nextLastLevelGfn, this.level);
    this.refresh();
    return true;
  }

  private stepSide(): boolean {
    if (spteIndex(this.gfn, this.level) === 511) return false;
    this.gfn += pagesPerLevel(this.level);
    this.nextLastLevelGfn = this.gfn;
    this.sptep++;
    this.oldSpte = this.pool.entry(this.sptep);
    return true;
  }

  private stepUp(): boolean {
    if (this.level === this.rootLevel) return false;
    this.level++;
    this.gfn = roundGfnForLevel(this.gfn, this.level);
    this.refresh();
    return true;
  }
}
