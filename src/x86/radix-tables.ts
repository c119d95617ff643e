// The radix-table walk both x86 builders share: IA-32e paging (SDM Vol.3A
// §4.5) and EPT (Vol.3C §29.3.2) index 9 address bits per level above bit 12,
// map a large page by bit 7 at levels 2 and 3, and hold table addresses in
// bits 51:12. What differs — when an entry is present, which addresses a tree
// can map, the words of an error — is the subclass's.

import type { GuestMemory } from "../memory.js";
import { intArg } from "../validate.js";

const PS = 1n << 7n;
const ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** Address of the entry for `addr` at `level` (1 = the 4 KiB level) in the table at `table`. */
export function radixEntryOf(table: bigint, addr: bigint, level: number): bigint {
  return table + (((addr >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n);
}

export abstract class X86RadixTables {
  /** Address of the root table (the CR3 address bits / the EPTP's). */
  readonly root: bigint;
  private next: bigint;

  /**
   * Tables go to [base, limit) of `mem` (validated by the subclass); every
   * non-leaf entry it creates is the child table | `tableFlags`.
   */
  protected constructor(protected readonly mem: GuestMemory, readonly levels: 4 | 5, base: bigint,
    private readonly limit: bigint, protected readonly tableFlags: bigint) {
    this.next = base;
    this.root = this.allocTable();
  }

  /** Whether entry `e` is present (x86: P; EPT: any of R, W, X, UX). */
  protected abstract present(e: bigint): boolean;
  /** Throws unless `addr` is an address this tree maps. */
  protected abstract checkAddr(addr: bigint, name?: string): void;
  /** The error for a table area that is full. */
  protected abstract exhausted(limit: bigint): Error;
  /** The error for a large page in the way of `addr` at `level`. */
  protected abstract largePageInTheWay(addr: bigint, level: number): Error;

  /** Allocates and zeroes one table page. */
  allocTable(): bigint {
    if (this.next + 4096n > this.limit) throw this.exhausted(this.limit);
    const t = this.next;
    this.next += 4096n;
    this.mem.write(t, new Uint8Array(4096));
    return t;
  }

  /** Table pages allocated so far, the root included. */
  get tablesAllocated(): number {
    return Number((this.next - this.root) >> 12n);
  }

  /**
   * Walks from the root to the table that holds `addr`'s entry at `level`,
   * creating missing tables. Throws if a large page is in the way.
   */
  tableFor(addr: bigint, level: number): bigint {
    this.checkAddr(addr);
    intArg(level, "level", 1, this.levels);
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const at = radixEntryOf(table, addr, l);
      const e = this.mem.read64(at);
      if (!this.present(e)) {
        const t = this.allocTable();
        this.mem.write64(at, t | this.tableFlags);
        table = t;
      } else {
        if (l <= 3 && (e & PS) !== 0n) throw this.largePageInTheWay(addr, l);
        table = e & ADDR_MASK;
      }
    }
    return table;
  }

  /** Address of the entry for `addr` at `level` if the path to it exists (the entry itself may be not present). */
  entryAt(addr: bigint, level: number): bigint | undefined {
    this.checkAddr(addr);
    intArg(level, "level", 1, this.levels);
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const e = this.mem.read64(radixEntryOf(table, addr, l));
      if (!this.present(e) || (l <= 3 && (e & PS) !== 0n)) return undefined;
      table = e & ADDR_MASK;
    }
    return radixEntryOf(table, addr, level);
  }

  /** Address of the present leaf entry that maps `addr`, or undefined. */
  protected leafAt(addr: bigint): bigint | undefined {
    this.checkAddr(addr);
    let table = this.root;
    for (let l: number = this.levels; l >= 1; l--) {
      const at = radixEntryOf(table, addr, l);
      const e = this.mem.read64(at);
      if (!this.present(e)) return undefined;
      if (l === 1 || (l <= 3 && (e & PS) !== 0n)) return at;
      table = e & ADDR_MASK;
    }
    return undefined;
  }

  /** Writes leaf `entry` for `addr` at `level`, creating tables on the way; returns the entry's address. */
  protected writeLeaf(addr: bigint, level: number, entry: bigint): bigint {
    const at = radixEntryOf(this.tableFor(addr, level), addr, level);
    this.mem.write64(at, entry);
    return at;
  }
}
