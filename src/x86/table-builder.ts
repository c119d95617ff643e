// Builds real x86-64 paging structures (4- or 5-level) in guest memory, for
// tests, examples and workloads. Entries are the SDM encodings (Vol.3A
// Tables 4-15…4-20): what this writes, the wasm walker and any real CPU read.
//
// Table pages come from a caller-given gpa range, bump-allocated and zeroed.
// Non-leaf entries are written P|RW|US (rights are then decided by the leaf)
// unless `tableFlags` says otherwise.

import { GuestMemory } from "../memory.js";
import { X86RadixTables, radixEntryOf } from "./radix-tables.js";
import { hex } from "../addr.js";
import { PTE, PTE_ADDR_MASK, PTE_PKEY_SHIFT } from "./regs.js";
import { bigintArg, bigintRangeArg, enumArg, intArg, optBoolArg, optionsObject, show, u64Arg } from "../validate.js";

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

export class X86PageTableBuilder extends X86RadixTables {
  /**
   * Tables go to [opts.tableBase, opts.tableLimit) of `mem`. Throws a
   * TypeError or RangeError naming the option on bad input (levels other than
   * 4 or 5, an unaligned or inverted table range, table flags beyond 64 bits).
   */
  constructor(mem: GuestMemory, opts: X86BuilderOptions) {
    if (!(mem instanceof GuestMemory)) throw new TypeError(`vmmu: memory must be a machine's GuestMemory, got ${show(mem)}`);
    const o = optionsObject(opts, "options");
    const levels = o.levels === undefined ? 4 : o.levels;
    if (typeof levels !== "number") throw new TypeError(`vmmu: levels must be 4 or 5, got ${show(levels)}`);
    if (levels !== 4 && levels !== 5) throw new RangeError(`vmmu: levels must be 4 or 5 (32-bit and PAE paging are not modelled), got ${show(levels)}`);
    const base = u64Arg(o.tableBase, "tableBase");
    if ((base & 0xfffn) !== 0n) throw new RangeError(`vmmu: tableBase ${hex(base)} is not 4 KiB aligned`);
    const limit = bigintRangeArg(o.tableLimit, "tableLimit", base + 4096n, PTE_ADDR_MASK + 0x1000n, `above tableBase + 4096 (${hex(base + 4096n)}) and at most 2^52`);
    const tableFlags = o.tableFlags === undefined ? PTE.P | PTE.RW | PTE.US : u64Arg(o.tableFlags, "tableFlags");
    super(mem, levels, base, limit, tableFlags);
  }

  protected present(e: bigint): boolean {
    return (e & PTE.P) !== 0n;
  }

  protected exhausted(limit: bigint): Error {
    return new RangeError(`vmmu: page-table area [.., ${hex(limit)}) exhausted`);
  }

  protected largePageInTheWay(va: bigint, level: number): Error {
    return new Error(`vmmu: ${hex(va)} is inside a large page at level ${level}`);
  }

  /** gpa of the entry for `va` at `level` in the table at `table`. */
  static entryGpa(table: bigint, va: bigint, level: number): bigint {
    if (typeof table !== "bigint" || typeof va !== "bigint" || !(level >= 1 && level <= 5) || !Number.isInteger(level)) {
      u64Arg(table, "table");
      bigintArg(va, "va");
      intArg(level, "level", 1, 5);
    }
    return entryGpaOf(table, va, level);
  }

  /** Encodes a leaf entry for `pa` at page size `size`. */
  static leaf(pa: bigint, size: X86PageSize, f: X86LeafFlags = {}): bigint {
    bigintRangeArg(pa, "pa", 0n, PTE_ADDR_MASK | 0xfffn, "a physical address below 2^52 (MAXPHYADDR ≤ 52)");
    const level = SIZE_LEVEL[enumArg(size, "size", SIZE_LEVEL)];
    if ((pa & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: pa ${hex(pa)} is not ${size} aligned`);
    optionsObject(f, "flags");
    for (const k of LEAF_BOOLS) optBoolArg(f[k], `flags.${k}`, false);
    if (f.pkey !== undefined) intArg(f.pkey, "flags.pkey", 0, 15);
    if (f.raw !== undefined) u64Arg(f.raw, "flags.raw");
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
    if (f.pkey !== undefined) e |= BigInt(f.pkey) << PTE_PKEY_SHIFT;
    if (f.raw !== undefined) e |= f.raw;
    return e;
  }

  /** Maps `va` → `pa` with a page of `size` and `flags`. Returns the leaf entry's gpa. */
  map(va: bigint, pa: bigint, size: X86PageSize = "4K", flags: X86LeafFlags = {}): bigint {
    this.checkAddr(va);
    const entry = X86PageTableBuilder.leaf(pa, size, flags);
    if ((va & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: va ${hex(va)} is not ${size} aligned`);
    return this.writeLeaf(va, SIZE_LEVEL[size], entry);
  }

  /** Maps `count` consecutive pages of `size` starting at va → pa. */
  mapRange(va: bigint, pa: bigint, count: number, size: X86PageSize = "4K", flags: X86LeafFlags = {}): void {
    this.checkAddr(va);
    X86PageTableBuilder.leaf(pa, size, flags);
    intArg(count, "count", 0, 2 ** 36);
    const end = va + BigInt(count) * SIZE_BYTES[enumArg(size, "size", SIZE_BYTES)];
    if (count > 0) this.checkAddr(end - 1n, "va + count pages");
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
    return this.leafAt(va);
  }

  /** Throws unless `va` is a canonical linear address for this builder's paging depth (SDM Vol.3A §3.3.7.1). */
  protected checkAddr(va: bigint, name = "va"): void {
    u64Arg(va, name);
    const bits = this.levels === 5 ? 57 : 48;
    if (BigInt.asUintN(64, BigInt.asIntN(bits, va)) !== va) {
      throw new RangeError(`vmmu: ${name} ${hex(va)} is not canonical for ${this.levels}-level paging (bits 63:${bits - 1} must be equal)`);
    }
  }
}

const entryGpaOf = radixEntryOf;

const LEAF_BOOLS = ["write", "user", "nx", "global", "pwt", "pcd", "pat", "accessed", "dirty"] as const;
