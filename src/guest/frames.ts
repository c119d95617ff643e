// The guest kernel's physical page allocator: Linux's buddy allocator cut
// down to the two orders this guest asks for (0: one page; 1: the 8 KiB
// KPTI PGD pair and kernel stacks), with a hot list of freed single pages in
// front (the per-CPU page list: freed pages are not merged at once, and the
// page freed last is handed out first; past PCP_HIGH pages the coldest
// PCP_BATCH go back to the buddy lists, merging). So page-table pages come
// back as data pages and data pages as page tables, whatever they held,
// which is what a shadow MMU must notice (a recycled frame may still be
// write-protected as a guest table). Not modelled: zones, one list per CPU
// (allocations are not attributed to CPUs), higher orders, reclaim.

/** What a frame is used for; `lastUse` keeps the use before its last free. */
export const FRAME = {
  FREE: 0, RESERVED: 1, KERNEL: 2, PAGETABLE: 3, ANON: 4, PAGECACHE: 5, ZERO: 6,
} as const;
export type FrameUse = (typeof FRAME)[keyof typeof FRAME];

const USE_NAMES = ["free", "reserved", "kernel", "pagetable", "anon", "pagecache", "zero"] as const;
/** pcp->high and pcp->batch (assumptions of the order Linux computes for a few hundred MiB zone). */
export const PCP_HIGH = 186;
export const PCP_BATCH = 31;

/** Counters of a FrameAllocator. */
export interface FrameStats {
  allocated: number;
  freed: number;
  /** Frames allocated as a page table whose previous use was data (anon or page cache). */
  tableFromData: number;
  /** Frames allocated as data (anon or page cache) whose previous use was a page table. */
  dataFromTable: number;
}

/**
 * Frames [firstPfn, firstPfn + count). Frame numbers are plain numbers
 * (pfn = gpa >> 12). Throws on exhaustion (the guest has no reclaim).
 */
export class FrameAllocator {
  /** Current use of each frame, indexed by pfn - firstPfn. */
  readonly use: Uint8Array;
  /** Use before the last free (FRAME.FREE if never freed). */
  readonly lastUse: Uint8Array;
  readonly stats: FrameStats = { allocated: 0, freed: 0, tableFromData: 0, dataFromTable: 0 };
  private readonly free0: Int32Array;
  private readonly pos0: Int32Array;
  private n0 = 0;
  private readonly free1: Int32Array;
  private readonly pos1: Int32Array;
  private n1 = 0;
  private readonly pcp = new Int32Array(PCP_HIGH + 1);
  private npcp = 0;

  constructor(readonly firstPfn: number, readonly count: number) {
    if ((firstPfn & 1) !== 0 || (count & 1) !== 0) throw new RangeError("vmmu: frame range must be 8 KiB aligned");
    this.use = new Uint8Array(count).fill(FRAME.RESERVED);
    this.lastUse = new Uint8Array(count);
    this.free0 = new Int32Array(count);
    this.pos0 = new Int32Array(count).fill(-1);
    this.free1 = new Int32Array(count >> 1);
    this.pos1 = new Int32Array(count >> 1).fill(-1);
  }

  /** Marks reserved frames [pfn, pfn + n) free, lowest handed out first. Boot only. */
  release(pfn: number, n: number): void {
    for (let p = pfn + n - 1; p >= pfn; p--) {
      if (this.use[p - this.firstPfn] !== FRAME.RESERVED) throw new Error(`vmmu: frame ${p} released twice`);
      this.use[p - this.firstPfn] = FRAME.FREE;
      this.lastUse[p - this.firstPfn] = FRAME.FREE;
      this.put(p);
    }
  }

  /** Free frames. */
  get freeCount(): number {
    return this.npcp + this.n0 + 2 * this.n1;
  }

  /** One frame for `use`, the most recently freed first. */
  alloc(use: FrameUse): number {
    let pfn: number;
    if (this.npcp > 0) {
      pfn = this.pcp[--this.npcp]!;
    } else if (this.n0 > 0) {
      pfn = this.free0[--this.n0]!;
      this.pos0[pfn - this.firstPfn] = -1;
    } else if (this.n1 > 0) {
      const pair = this.free1[--this.n1]!;
      this.pos1[pair] = -1;
      pfn = this.firstPfn + pair * 2;
      this.push0(pfn + 1);
    } else {
      throw new Error("vmmu: guest out of memory (no free frames)");
    }
    this.take(pfn, use);
    return pfn;
  }

  /** Two frames, 8 KiB aligned (order 1), for `use`; returns the even pfn. */
  allocPair(use: FrameUse): number {
    if (this.n1 === 0) this.drain(this.npcp);
    if (this.n1 === 0) throw new Error("vmmu: guest out of memory (no free 8 KiB block)");
    const pair = this.free1[--this.n1]!;
    this.pos1[pair] = -1;
    const pfn = this.firstPfn + pair * 2;
    this.take(pfn, use);
    this.take(pfn + 1, use);
    return pfn;
  }

  /** Returns a frame to the hot list (draining its coldest part to the buddy lists when full). */
  free(pfn: number): void {
    const i = pfn - this.firstPfn;
    const u = this.use[i]!;
    if (u === FRAME.FREE || u === FRAME.RESERVED) throw new Error(`vmmu: guest frees frame ${pfn} which is ${USE_NAMES[u]}`);
    this.lastUse[i] = u;
    this.use[i] = FRAME.FREE;
    this.stats.freed++;
    this.pcp[this.npcp++] = pfn;
    if (this.npcp > PCP_HIGH) this.drain(PCP_BATCH);
  }

  /** free_pcppages_bulk: the `n` coldest hot-list pages go to the buddy lists. */
  private drain(n: number): void {
    for (let k = 0; k < n; k++) this.put(this.pcp[k]!);
    this.pcp.copyWithin(0, n, this.npcp);
    this.npcp -= n;
  }

  /** Name of frame `pfn`'s current use. */
  useOf(pfn: number): string {
    return USE_NAMES[this.use[pfn - this.firstPfn]!]!;
  }

  private take(pfn: number, use: FrameUse): void {
    const i = pfn - this.firstPfn;
    const last = this.lastUse[i]!;
    const data = (u: number) => u === FRAME.ANON || u === FRAME.PAGECACHE;
    if (use === FRAME.PAGETABLE && data(last)) this.stats.tableFromData++;
    if (data(use) && last === FRAME.PAGETABLE) this.stats.dataFromTable++;
    this.use[i] = use;
    this.stats.allocated++;
  }

  private put(pfn: number): void {
    const buddy = pfn ^ 1;
    const bi = buddy - this.firstPfn;
    if (this.pos0[bi]! >= 0) {
      const at = this.pos0[bi]!;
      const last = this.free0[--this.n0]!;
      this.free0[at] = last;
      this.pos0[last - this.firstPfn] = at;
      this.pos0[bi] = -1;
      const pair = (pfn - this.firstPfn) >> 1;
      this.pos1[pair] = this.n1;
      this.free1[this.n1++] = pair;
    } else {
      this.push0(pfn);
    }
  }

  private push0(pfn: number): void {
    this.pos0[pfn - this.firstPfn] = this.n0;
    this.free0[this.n0++] = pfn;
  }
}
