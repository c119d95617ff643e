// Hand-built radix page tables for the reference-walker rule tests: 512-entry
// tables of 8-byte entries, one level per 9 address bits above bit 12, each new
// table in the next free 4 KiB frame after the root. Entries are written
// verbatim: the tests spell every bit of a leaf, and a table entry is the child
// frame ORed with the bits given for its level (or the format's default).

import type { MapMemory } from "../../src/ref/x86-walk.js";

export interface HandTableOptions {
  /** Tables are addressed by `addr` but stored at `addr + hostOffset` (guest tables placed behind EPT). */
  hostOffset?: bigint;
  /** Called with the address of every table allocated after the root. */
  onNewTable?: (addr: bigint) => void;
}

export class HandTables {
  private nextFree: bigint;
  private readonly children = new Map<bigint, bigint>();
  private readonly offset: bigint;

  constructor(
    readonly mem: MapMemory,
    readonly root: bigint,
    readonly levels: number,
    private readonly tableBits: bigint,
    private readonly opts: HandTableOptions = {},
  ) {
    this.nextFree = root + 0x1000n;
    this.offset = opts.hostOffset ?? 0n;
  }

  /**
   * Writes `leaf` verbatim at `leafLevel` for `addr`; table entries on the way
   * are the child table | upper[level] (default the constructor's tableBits).
   * Returns each entry's address by level (without the host offset).
   */
  map(addr: bigint, leafLevel: number, leaf: bigint, upper: Record<number, bigint> = {}): Map<number, bigint> {
    const at = new Map<number, bigint>();
    let table = this.root;
    for (let level = this.levels; level >= leafLevel; level--) {
      const entry = table + ((addr >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
      at.set(level, entry);
      if (level === leafLevel) {
        this.mem.write64(entry + this.offset, leaf);
        break;
      }
      let child = this.children.get(entry);
      if (child === undefined) {
        child = this.nextFree;
        this.nextFree += 0x1000n;
        this.children.set(entry, child);
        this.opts.onNewTable?.(child);
      }
      this.mem.write64(entry + this.offset, child | (upper[level] ?? this.tableBits));
      table = child;
    }
    return at;
  }

  /** The entry at `level` of a map() result, as memory holds it now. */
  entry(at: Map<number, bigint>, level: number): bigint {
    return this.mem.read64(at.get(level)! + this.offset)!;
  }
}
