// Builds real x86-64 paging structures (4- or 5-level) in guest memory, for
// tests, examples and workloads. Entries are the SDM encodings (Vol.3A
// Tables 4-15…4-20): what this writes, the wasm walker and any real CPU read.
//
// Table pages come from a caller-given gpa range, bump-allocated and zeroed.
// Non-leaf entries are written P|RW|US (rights are then decided by the leaf)
// unless `tableFlags` says otherwise.

import type { GuestMemory } from "../memory.js";
import { hex } from "../addr.js";
import { PTE, PTE_ADDR_MASK, PTE_PKEY_SHIFT } from "./regs.js";

export type X86PageSize = "4K" | "2M" | "1G";
const SIZE_LEVEL: Record<X86PageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };
const SIZE_BYTES: Record<X86PageSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };

/** Leaf attributes; booleans map to the bit of the same name. */
export interface X86LeafFlags {
  write?: boolean; user?: boolean; nx?: boolean; global?: boolean;
  pwt?: boolean; pcd?: boolean; pat?: boolean; accessed?: boolean; dirty?: boolean;
  /** Protection key, 0..15 (bits 62:59). */
  pkey?: number;
  /** Extra raw bits ORed into the entry (e.g. software bits, or reserved bits in tests). */
  raw?: bigint;
}

export interface X86BuilderOptions {
  /** 4 (default) or 5 (LA57). */
  levels?: 4 | 5;
  /** First gpa the builder may use for table pages (4 KiB aligned). */
  tableBase: bigint;
  /** End of that range (exclusive). */
  tableLimit: bigint;
  /** Bits of every non-leaf entry it creates (default P|RW|US). */
  tableFlags?: bigint;
}

export class X86PageTableBuilder {
  readonly levels: 4 | 5;
  /** Guest-physical address of the root table (PML4 or PML5): the CR3 address bits. */
  readonly root: bigint;
  private next: bigint;
  private readonly limit: bigint;
  private readonly tableFlags: bigint;

  constructor(private readonly mem: GuestMemory, opts: X86BuilderOptions) {
    this.levels = opts.levels ?? 4;
    if ((opts.tableBase & 0xfffn) !== 0n) throw new RangeError(`vmmu: tableBase ${hex(opts.tableBase)} is not 4 KiB aligned`);
    this.next = opts.tableBase;
    this.limit = opts.tableLimit;
    this.tableFlags = opts.tableFlags ?? (PTE.P | PTE.RW | PTE.US);
    this.root = this.allocTable();
  }

  /** Allocates and zeroes one table page. */
  allocTable(): bigint {
    if (this.next + 4096n > this.limit) throw new RangeError(`vmmu: page-table area [.., ${hex(this.limit)}) exhausted`);
    const t = this.next;
    this.next += 4096n;
    this.mem.write(t, new Uint8Array(4096));
    return t;
  }

  /** Table pages allocated so far, the root included. */
  get tablesAllocated(): number {
    return Number((this.next - this.root) >> 12n);
  }

  /** gpa of the entry for `va` at `level` in the table at `table`. */
  static entryGpa(table: bigint, va: bigint, level: number): bigint {
    return table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n);
  }

  /** Encodes a leaf entry for `pa` at page size `size`. */
  static leaf(pa: bigint, size: X86PageSize, f: X86LeafFlags = {}): bigint {
    const level = SIZE_LEVEL[size];
    if ((pa & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: pa ${hex(pa)} is not ${size} aligned`);
    let e = (pa & PTE_ADDR_MASK) | PTE.P;
    if (level > 1) e |= PTE.PS;
    if (f.write) e |= PTE.RW;
    if (f.user) e |= PTE.US;
    if (f.pwt) e |= PTE.PWT;
    if (f.pcd) e |= PTE.PCD;
    if (f.accessed) e |= PTE.A;
    if (f.dirty) e |= PTE.D;
    if (f.global) e |= PTE.G;
    if (f.pat) e |= level > 1 ? PTE.PAT_LARGE : PTE.PAT;
    if (f.nx) e |= PTE.XD;
    if (f.pkey !== undefined) {
      if (!Number.isInteger(f.pkey) || f.pkey < 0 || f.pkey > 15) throw new RangeError("vmmu: pkey must be 0..15");
      e |= BigInt(f.pkey) << PTE_PKEY_SHIFT;
    }
    if (f.raw !== undefined) e |= f.raw;
    return e;
  }

  /**
   * Walks from the root to the table that holds `va`'s entry at `level`,
   * creating missing tables. Throws if a large page is in the way.
   */
  tableFor(va: bigint, level: number): bigint {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const g = X86PageTableBuilder.entryGpa(table, va, l);
      const e = this.mem.read64(g);
      if ((e & PTE.P) === 0n) {
        const t = this.allocTable();
        this.mem.write64(g, t | this.tableFlags);
        table = t;
      } else {
        if (l <= 3 && (e & PTE.PS) !== 0n) throw new Error(`vmmu: ${hex(va)} is inside a large page at level ${l}`);
        table = e & PTE_ADDR_MASK;
      }
    }
    return table;
  }

  /** Maps `va` → `pa` with a page of `size` and `flags`. Returns the leaf entry's gpa. */
  map(va: bigint, pa: bigint, size: X86PageSize = "4K", flags: X86LeafFlags = {}): bigint {
    if ((va & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: va ${hex(va)} is not ${size} aligned`);
    const level = SIZE_LEVEL[size];
    const g = X86PageTableBuilder.entryGpa(this.tableFor(va, level), va, level);
    this.mem.write64(g, X86PageTableBuilder.leaf(pa, size, flags));
    return g;
  }

  /** Maps `count` consecutive pages of `size` starting at va → pa. */
  mapRange(va: bigint, pa: bigint, count: number, size: X86PageSize = "4K", flags: X86LeafFlags = {}): void {
    for (let i = 0n; i < BigInt(count); i++) this.map(va + i * SIZE_BYTES[size], pa + i * SIZE_BYTES[size], size, flags);
  }

  /**
   * Clears the leaf that maps `va` (whatever its size). Returns the cleared
   * entry's gpa, or undefined if `va` was not mapped. Does not invalidate any
   * TLB: that is the guest's job (INVLPG).
   */
  unmap(va: bigint): bigint | undefined {
    const g = this.leafGpa(va);
    if (g !== undefined) this.mem.write64(g, 0n);
    return g;
  }

  /** gpa of the present leaf entry that maps `va`, or undefined. */
  leafGpa(va: bigint): bigint | undefined {
    let table = this.root;
    for (let l: number = this.levels; l >= 1; l--) {
      const g = X86PageTableBuilder.entryGpa(table, va, l);
      const e = this.mem.read64(g);
      if ((e & PTE.P) === 0n) return undefined;
      if (l === 1 || (l <= 3 && (e & PTE.PS) !== 0n)) return g;
      table = e & PTE_ADDR_MASK;
    }
    return undefined;
  }

  /** gpa of the entry for `va` at `level` if the path to it exists. */
  entryAt(va: bigint, level: number): bigint | undefined {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const e = this.mem.read64(X86PageTableBuilder.entryGpa(table, va, l));
      if ((e & PTE.P) === 0n || (l <= 3 && (e & PTE.PS) !== 0n)) return undefined;
      table = e & PTE_ADDR_MASK;
    }
    return X86PageTableBuilder.entryGpa(table, va, level);
  }
}
