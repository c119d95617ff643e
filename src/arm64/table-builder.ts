// Builds real VMSAv8-64 translation tables (4 KiB granule) in guest memory:
// stage 1 (for TTBR0_EL1/TTBR1_EL1) and stage 2 (for VTTBR_EL2, with the
// concatenated start tables KVM uses). Encodings per Arm ARM D8.3
// (stage 1 D8.3.1, stage 2 D8.3.2, attributes D8.4–D8.5); what this writes, the wasm walker
// and a real MMU read.
//
// Table pages come from a caller-given physical range, bump-allocated and
// zeroed. The builder writes descriptors with plain stores and never does
// TLB maintenance: that is the guest's (or hypervisor's) job.

import { GuestMemory } from "../memory.js";
import { hex } from "../addr.js";
import { bigintRangeArg, enumArg, intArg, optBoolArg, optionsObject, show, u64Arg } from "../validate.js";
import { DESC, DESC_ADDR_MASK, MEMATTR_SHIFT, S2_MEMATTR, S2_XN_SHIFT, s1StartLevel } from "./regs.js";

export type Arm64BlockSize = "4K" | "2M" | "1G";
const SIZE_LEVEL: Record<Arm64BlockSize, number> = { "4K": 3, "2M": 2, "1G": 1 };
const SIZE_BYTES: Record<Arm64BlockSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };

/** Stage-1 leaf attributes. */
export interface Arm64S1Flags {
  /** AP[1]: EL0 may access. */
  el0?: boolean;
  /** AP[2]: read-only. */
  readOnly?: boolean;
  uxn?: boolean; pxn?: boolean;
  /** nG: tagged with the ASID (default false: global). */
  nG?: boolean;
  /** AF (default true). */
  af?: boolean;
  dbm?: boolean;
  attrIndx?: number;
  raw?: bigint;
}

/** Stage-1 table-descriptor attributes (APTable, XNTable). */
export interface Arm64S1TableFlags {
  apTable?: 0 | 1 | 2 | 3; uxnTable?: boolean; pxnTable?: boolean;
}

/** Stage-2 leaf attributes. */
export interface Arm64S2Flags {
  read?: boolean; write?: boolean;
  /** XN[54:53] (FEAT_XNX): 0 exec everywhere, 1 not at EL1, 2 never, 3 not at EL0. */
  xn?: 0 | 1 | 2 | 3;
  af?: boolean; dbm?: boolean;
  device?: boolean;
  raw?: bigint;
}

interface BuilderBase {
  /** First pa the builder may use for table pages (4 KiB aligned). */
  tableBase: bigint;
  /** End of that range (exclusive). */
  tableLimit: bigint;
  /**
   * For stage-1 tables of a guest under stage 2: table descriptors (and the
   * TTBR) hold `pa − tableOffset`, the IPA at which stage 2 maps the table
   * page at `pa`. Default 0 (tables addressed by their PA).
   */
  tableOffset?: bigint;
}

abstract class Arm64Tables {
  /** Physical address of the start table (the TTBR/VTTBR BADDR). */
  readonly root: bigint;
  protected next: bigint;
  protected readonly limit: bigint;
  /** Table addresses in descriptors are pa − tableOffset. */
  readonly tableOffset: bigint;

  protected constructor(protected readonly mem: GuestMemory, opts: BuilderBase, readonly startLevel: number,
    readonly startIndexBits: number, rootPages: number) {
    const base = opts.tableBase;
    if ((base & 0xfffn) !== 0n) throw new RangeError(`vmmu: tableBase ${hex(base)} is not 4 KiB aligned`);
    const align = BigInt(rootPages) * 4096n;
    this.next = (base + align - 1n) / align * align;
    this.limit = opts.tableLimit;
    this.tableOffset = opts.tableOffset ?? 0n;
    this.root = this.allocPages(rootPages);
  }

  private allocPages(n: number): bigint {
    const bytes = BigInt(n) * 4096n;
    if (this.next + bytes > this.limit) throw new RangeError(`vmmu: table area [.., ${hex(this.limit)}) exhausted`);
    const t = this.next;
    this.next += bytes;
    this.mem.write(t, new Uint8Array(Number(bytes)));
    return t;
  }

  /** Allocates and zeroes one table page. */
  allocTable(): bigint {
    return this.allocPages(1);
  }

  /** Address of the start table as the TTBR/VTTBR holds it (root − tableOffset). */
  get rootAddress(): bigint {
    return this.root - this.tableOffset;
  }

  /** Table pages allocated so far (the start tables included). */
  get tablesAllocated(): number {
    return Number((this.next - this.root) >> 12n);
  }

  /** pa of the descriptor for `addr` at `level` in the table at `table`. */
  protected entryPa(table: bigint, addr: bigint, level: number): bigint {
    const shift = BigInt(12 + 9 * (3 - level));
    const bits = level === this.startLevel ? BigInt(this.startIndexBits) : 9n;
    return table + (((addr >> shift) & ((1n << bits) - 1n)) << 3n);
  }

  /** Bits written into every table descriptor this builder creates. */
  protected tableDescBits(_f: Arm64S1TableFlags): bigint {
    return DESC.VALID | DESC.TABLE;
  }

  /** Walks to the table holding `addr`'s descriptor at `level`, creating tables. */
  tableFor(addr: bigint, level: number, tf: Arm64S1TableFlags = {}): bigint {
    u64Arg(addr, "addr");
    intArg(level, "level", this.startLevel, 3);
    let table = this.root;
    for (let l = this.startLevel; l < level; l++) {
      const g = this.entryPa(table, addr, l);
      const d = this.mem.read64(g);
      if ((d & DESC.VALID) === 0n) {
        const t = this.allocTable();
        this.mem.write64(g, (t - this.tableOffset) | this.tableDescBits(tf));
        table = t;
      } else {
        if ((d & DESC.TABLE) === 0n) throw new Error(`vmmu: ${hex(addr)} is inside a block at level ${l}`);
        table = (d & DESC_ADDR_MASK) + this.tableOffset;
      }
    }
    return table;
  }

  /** pa of the valid leaf descriptor mapping `addr`, or undefined. */
  leafPa(addr: bigint): bigint | undefined {
    u64Arg(addr, "addr");
    let table = this.root;
    for (let l = this.startLevel; l <= 3; l++) {
      const g = this.entryPa(table, addr, l);
      const d = this.mem.read64(g);
      if ((d & DESC.VALID) === 0n) return undefined;
      if (l === 3 || (d & DESC.TABLE) === 0n) return g;
      table = (d & DESC_ADDR_MASK) + this.tableOffset;
    }
    return undefined;
  }

  /** Invalidates the leaf that maps `addr`; returns its pa (no TLB maintenance). */
  unmap(addr: bigint): bigint | undefined {
    const g = this.leafPa(addr);
    if (g !== undefined) this.mem.write64(g, 0n);
    return g;
  }

  protected writeLeaf(addr: bigint, out: bigint, size: Arm64BlockSize, attrs: bigint, tf: Arm64S1TableFlags = {}): bigint {
    checkTableFlags(tf);
    const bytes = SIZE_BYTES[size];
    if ((addr & (bytes - 1n)) !== 0n || (out & (bytes - 1n)) !== 0n) throw new RangeError(`vmmu: ${hex(addr)} → ${hex(out)} is not ${size} aligned`);
    const level = SIZE_LEVEL[size];
    if (level < this.startLevel) throw new RangeError(`vmmu: a ${size} block needs level ${level}, above the start level ${this.startLevel}`);
    const g = this.entryPa(this.tableFor(addr, level, tf), addr, level);
    const type = level === 3 ? DESC.VALID | DESC.TABLE : DESC.VALID;
    this.mem.write64(g, (out & DESC_ADDR_MASK) | type | attrs);
    return g;
  }
}

/** Stage-1 tables for one TTBR region; `tsz` is TCR.T0SZ/T1SZ (16..39). */
export class Arm64Stage1Builder extends Arm64Tables {
  /** Throws a TypeError or RangeError naming the option on bad input (tsz outside 16..39, an unaligned table range). */
  constructor(mem: GuestMemory, opts: BuilderBase & { tsz?: number }) {
    checkBuilderOptions(mem, opts);
    const tsz = opts.tsz === undefined ? 16 : opts.tsz;
    intArg(tsz, "tsz", 16, 39);
    const start = s1StartLevel(tsz);
    super(mem, opts, start, 64 - tsz - (12 + 9 * (3 - start)), 1);
  }

  /** Encodes a stage-1 leaf (block or page) for `pa`. */
  static leaf(pa: bigint, size: Arm64BlockSize, f: Arm64S1Flags = {}): bigint {
    checkOutput(pa, "pa");
    const level = SIZE_LEVEL[enumArg(size, "size", SIZE_LEVEL)];
    optionsObject(f, "flags");
    for (const k of S1_BOOLS) optBoolArg(f[k], `flags.${k}`, false);
    if (f.attrIndx !== undefined) intArg(f.attrIndx, "flags.attrIndx", 0, 7);
    if (f.raw !== undefined) u64Arg(f.raw, "flags.raw");
    let d = (pa & DESC_ADDR_MASK) | DESC.VALID | (level === 3 ? DESC.TABLE : 0n) | DESC.SH_INNER;
    if (f.af !== false) d |= DESC.AF;
    if (f.el0) d |= DESC.AP1;
    if (f.readOnly) d |= DESC.AP2;
    if (f.uxn) d |= DESC.UXN;
    if (f.pxn) d |= DESC.PXN;
    if (f.nG) d |= DESC.NG;
    if (f.dbm) d |= DESC.DBM;
    d |= BigInt((f.attrIndx ?? 0) & 7) << 2n;
    if (f.raw !== undefined) d |= f.raw;
    return d;
  }

  protected tableDescBits(tf: Arm64S1TableFlags): bigint {
    let d = DESC.VALID | DESC.TABLE;
    if (tf.apTable) d |= BigInt(tf.apTable) << 61n;
    if (tf.uxnTable) d |= DESC.UXNTABLE;
    if (tf.pxnTable) d |= DESC.PXNTABLE;
    return d;
  }

  /** Maps va → pa with a page or block of `size`; new tables get `tableFlags`. Returns the leaf's pa. */
  map(va: bigint, pa: bigint, size: Arm64BlockSize = "4K", flags: Arm64S1Flags = {}, tableFlags: Arm64S1TableFlags = {}): bigint {
    this.checkVa(va);
    const attrs = Arm64Stage1Builder.leaf(pa, size, flags) & ~(DESC_ADDR_MASK | DESC.VALID | DESC.TABLE);
    return this.writeLeaf(va & 0x00ff_ffff_ffff_ffffn & ((1n << 56n) - 1n), pa, size, attrs, tableFlags);
  }

  /** Maps `count` consecutive pages/blocks. */
  mapRange(va: bigint, pa: bigint, count: number, size: Arm64BlockSize = "4K", flags: Arm64S1Flags = {}): void {
    this.checkVa(va);
    Arm64Stage1Builder.leaf(pa, size, flags);
    intArg(count, "count", 0, 2 ** 36);
    for (let i = 0n; i < BigInt(count); i++) this.map(va + i * SIZE_BYTES[size], pa + i * SIZE_BYTES[size], size, flags);
  }

  /**
   * Throws unless `va` lies in a TTBR0 or TTBR1 region of this table's size:
   * VA[55:64−TnSZ] all zeros or all ones (the top byte is ignored, as TBI
   * would); any other VA would alias an entry of the region.
   */
  private checkVa(va: bigint): void {
    u64Arg(va, "va");
    const regionBits = BigInt(12 + 9 * (3 - this.startLevel) + this.startIndexBits);
    const upper = (va & ((1n << 56n) - 1n)) >> regionBits;
    if (upper !== 0n && upper !== (1n << (56n - regionBits)) - 1n) {
      throw new RangeError(`vmmu: va ${hex(va)} is outside both TTBR regions of a ${regionBits}-bit table (VA[55:${regionBits}] must be all zeros or all ones)`);
    }
  }

  /** TTBRn value for this table with `asid`. */
  ttbr(asid = 0): bigint {
    intArg(asid, "asid", 0, 0xffff);
    return (BigInt(asid) << 48n) | this.rootAddress;
  }
}

/**
 * Stage-2 tables for an IPA size as KVM lays them out: start level and
 * concatenated start tables from kvmVtcr(ipaBits), or explicit.
 */
export class Arm64Stage2Builder extends Arm64Tables {
  /** Throws a TypeError or RangeError naming the option on bad input. */
  constructor(mem: GuestMemory, opts: BuilderBase & { ipaBits: number; startLevel: number }) {
    checkBuilderOptions(mem, opts);
    intArg(opts.ipaBits, "ipaBits", 25, 48);
    intArg(opts.startLevel, "startLevel", 0, 3);
    const shift = 12 + 9 * (3 - opts.startLevel);
    const indexBits = opts.ipaBits - shift;
    if (indexBits < 1 || indexBits > 13) throw new RangeError("vmmu: stage-2 start level needs 1..16 concatenated tables");
    const pages = Math.max(1, 2 ** (indexBits - 9));
    super(mem, opts, opts.startLevel, indexBits, pages);
  }

  /** Encodes a stage-2 leaf for `pa`. */
  static leaf(pa: bigint, size: Arm64BlockSize, f: Arm64S2Flags = {}): bigint {
    checkOutput(pa, "pa");
    const level = SIZE_LEVEL[enumArg(size, "size", SIZE_LEVEL)];
    optionsObject(f, "flags");
    for (const k of S2_BOOLS) optBoolArg(f[k], `flags.${k}`, false);
    if (f.xn !== undefined) intArg(f.xn, "flags.xn", 0, 3);
    if (f.raw !== undefined) u64Arg(f.raw, "flags.raw");
    let d = (pa & DESC_ADDR_MASK) | DESC.VALID | (level === 3 ? DESC.TABLE : 0n) | DESC.SH_INNER;
    if (f.af !== false) d |= DESC.AF;
    if (f.read !== false) d |= DESC.S2AP_R;
    if (f.write !== false) d |= DESC.S2AP_W;
    if (f.xn) d |= BigInt(f.xn) << S2_XN_SHIFT;
    if (f.dbm) d |= DESC.DBM;
    d |= (f.device ? S2_MEMATTR.DEVICE_NGNRE : S2_MEMATTR.NORMAL) << MEMATTR_SHIFT;
    if (f.raw !== undefined) d |= f.raw;
    return d;
  }

  /** Maps ipa → pa; returns the leaf's pa. */
  map(ipa: bigint, pa: bigint, size: Arm64BlockSize = "4K", flags: Arm64S2Flags = {}): bigint {
    this.checkIpa(ipa);
    const attrs = Arm64Stage2Builder.leaf(pa, size, flags) & ~(DESC_ADDR_MASK | DESC.VALID | DESC.TABLE);
    return this.writeLeaf(ipa, pa, size, attrs);
  }

  /** Maps `count` consecutive pages/blocks. */
  mapRange(ipa: bigint, pa: bigint, count: number, size: Arm64BlockSize = "4K", flags: Arm64S2Flags = {}): void {
    this.checkIpa(ipa);
    Arm64Stage2Builder.leaf(pa, size, flags);
    intArg(count, "count", 0, 2 ** 36);
    for (let i = 0n; i < BigInt(count); i++) this.map(ipa + i * SIZE_BYTES[size], pa + i * SIZE_BYTES[size], size, flags);
  }

  /** Throws unless `ipa` is inside this table's IPA space (it would alias an entry otherwise). */
  private checkIpa(ipa: bigint): void {
    const bits = 12 + 9 * (3 - this.startLevel) + this.startIndexBits;
    bigintRangeArg(ipa, "ipa", 0n, (1n << BigInt(bits)) - 1n, `an IPA below 2^${bits} (the table's IPA size)`);
  }

  /** VTTBR_EL2 value for this table with `vmid`. */
  vttbr(vmid = 1): bigint {
    intArg(vmid, "vmid", 0, 0xffff);
    return (BigInt(vmid) << 48n) | this.rootAddress;
  }
}

const S1_BOOLS = ["el0", "readOnly", "uxn", "pxn", "nG", "af", "dbm"] as const;
const S2_BOOLS = ["read", "write", "af", "dbm", "device"] as const;

/** An output address (PA, or IPA for stage 2): a bigint below 2^48, the descriptors' address field (no FEAT_LPA). */
function checkOutput(v: unknown, name: string): void {
  bigintRangeArg(v, name, 0n, DESC_ADDR_MASK | 0xfffn, "an address below 2^48 (no FEAT_LPA)");
}

function checkBuilderOptions(mem: unknown, opts: BuilderBase): void {
  if (!(mem instanceof GuestMemory)) throw new TypeError(`vmmu: memory must be a machine's GuestMemory, got ${show(mem)}`);
  optionsObject(opts, "options");
  const base = u64Arg(opts.tableBase, "tableBase");
  bigintRangeArg(opts.tableLimit, "tableLimit", base + 4096n, 1n << 64n, `above tableBase + 4096 (${hex(base + 4096n)})`);
  if (opts.tableOffset !== undefined) u64Arg(opts.tableOffset, "tableOffset");
}

function checkTableFlags(tf: Arm64S1TableFlags): void {
  optionsObject(tf, "tableFlags");
  if (tf.apTable !== undefined) intArg(tf.apTable, "tableFlags.apTable", 0, 3);
  optBoolArg(tf.uxnTable, "tableFlags.uxnTable", false);
  optBoolArg(tf.pxnTable, "tableFlags.pxnTable", false);
}
