// Builds real EPT paging structures (4- or 5-level) in machine memory, for
// tests, examples and workloads. Entries are the SDM encodings (Vol.3C §29.3.2,
// "EPT Translation Mechanism", and its entry-format tables; the EPTP per §25.6.11
// "Extended-Page-Table Pointer (EPTP)"; §28.2.2 and §24.6.11 in older editions):
// what this writes, the wasm walker, the reference walker (src/ref/ept-walk.ts)
// and any real CPU read.
//
// Addresses in the tables are host-physical: under EPT a machine's GuestMemory
// is host-physical memory. Table pages come from a caller-given range of it,
// bump-allocated and zeroed. Non-leaf entries are written R|W|X (rights are
// then decided by the leaf) unless `tableFlags` says otherwise. An entry counts
// as present when any of R, W, X or UX (bits 2:0, 10) is set.

import { GuestMemory } from "../memory.js";
import { X86RadixTables } from "./radix-tables.js";
import { hex } from "../addr.js";
import { bigintRangeArg, enumArg, intArg, optBoolArg, optionsObject, show, u64Arg } from "../validate.js";

export type EptPageSize = "4K" | "2M" | "1G";
const SIZE_LEVEL: Record<EptPageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };
const SIZE_BYTES: Record<EptPageSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };

// EPT entry bits (SDM Vol.3C §29.3.2 entry-format tables) and EPTP fields (§25.6.11).
const EPT_R = 1n << 0n;
const EPT_W = 1n << 1n;
const EPT_X = 1n << 2n;
const EPT_MT_SHIFT = 3n;
const EPT_IPAT = 1n << 6n;
const EPT_PS = 1n << 7n;
const EPT_A = 1n << 8n;
const EPT_D = 1n << 9n;
const EPT_UX = 1n << 10n;
const EPT_PRESENT = EPT_R | EPT_W | EPT_X | EPT_UX;
/** Bits 51:12: the next-table / frame address field (bits above MAXPHYADDR are reserved, not dropped). */
const EPT_ADDR_MASK = 0x000f_ffff_ffff_f000n;
const EPTP_PWL_SHIFT = 3n;
const EPTP_AD = 1n << 6n;
const MT_WB = 6;

/** Leaf attributes; booleans map to the bit of the same name. */
export interface EptLeafFlags {
  /** Bits 0, 1, 2 (default true each). With MBEC, `exec` is supervisor-mode execute. */
  read?: boolean; write?: boolean; exec?: boolean;
  /** Bit 10: user-mode execute under mode-based execute control (default false; ignored without MBEC). */
  userExec?: boolean;
  /** Bits 5:3, 0..7 (default 6, WB). 2, 3 and 7 are misconfigurations, accepted for tests. */
  memType?: number;
  /** Bit 6: ignore the guest PAT memory type. */
  ipat?: boolean;
  /** Bits 8 and 9 (meaningful with EPTP.AD). */
  accessed?: boolean; dirty?: boolean;
  /** Extra raw bits ORed into the entry (e.g. ignored bits, or reserved bits in tests). */
  raw?: bigint;
}

export interface EptBuilderOptions {
  /** EPT page-walk length: 4 (default, gpa bits 47:0) or 5 (bits 56:0). */
  levels?: 4 | 5;
  /** First hpa the builder may use for table pages (4 KiB aligned). */
  tableBase: bigint;
  /** End of that range (exclusive). */
  tableLimit: bigint;
  /**
   * Bits of every non-leaf entry it creates (default R|W|X, 7n): at least one
   * of bits 2:0 or 10, none of the address field 51:12. Under MBEC the UX bit
   * is ANDed over the walk too, so user-mode fetches need 0x407n here.
   */
  tableFlags?: bigint;
  /** EPTP bit 6: the processor sets the A and D bits of the entries (default false). */
  accessedDirty?: boolean;
  /** EPTP bits 2:0, the memory type of the paging structures: 0 (UC) or 6 (WB, default). */
  memType?: 0 | 6;
}

export class X86EptBuilder extends X86RadixTables {
  private readonly accessedDirty: boolean;
  private readonly memType: number;

  /**
   * Tables go to [opts.tableBase, opts.tableLimit) of `mem`. Throws a
   * TypeError or RangeError naming the option on bad input (levels other than
   * 4 or 5, an unaligned or inverted table range, table flags beyond 64 bits,
   * without a right or inside the address field, an EPTP memory type other
   * than 0 or 6).
   */
  constructor(mem: GuestMemory, opts: EptBuilderOptions) {
    if (!(mem instanceof GuestMemory)) throw new TypeError(`vmmu: memory must be a machine's GuestMemory, got ${show(mem)}`);
    const o = optionsObject(opts, "options");
    const levels = o.levels === undefined ? 4 : o.levels;
    if (typeof levels !== "number") throw new TypeError(`vmmu: levels must be 4 or 5, got ${show(levels)}`);
    if (levels !== 4 && levels !== 5) throw new RangeError(`vmmu: levels must be 4 or 5 (the EPT page-walk lengths), got ${show(levels)}`);
    const base = u64Arg(o.tableBase, "tableBase");
    if ((base & 0xfffn) !== 0n) throw new RangeError(`vmmu: tableBase ${hex(base)} is not 4 KiB aligned`);
    const limit = bigintRangeArg(o.tableLimit, "tableLimit", base + 4096n, EPT_ADDR_MASK + 0x1000n, `above tableBase + 4096 (${hex(base + 4096n)}) and at most 2^52`);
    const tableFlags = o.tableFlags === undefined ? EPT_R | EPT_W | EPT_X : u64Arg(o.tableFlags, "tableFlags");
    if ((tableFlags & EPT_PRESENT) === 0n) throw new RangeError(`vmmu: tableFlags must set R, W, X or UX (bits 2:0, 10), else the tables it links are not present, got ${show(tableFlags)}`);
    if ((tableFlags & EPT_ADDR_MASK) !== 0n) throw new RangeError(`vmmu: tableFlags must leave the address field (bits 51:12) clear, got ${show(tableFlags)}`);
    const accessedDirty = optBoolArg(o.accessedDirty, "accessedDirty", false);
    const memType = o.memType === undefined ? MT_WB : intArg(o.memType, "memType", 0, 7);
    if (memType !== 0 && memType !== MT_WB) throw new RangeError(`vmmu: memType must be 0 (UC) or 6 (WB), the EPTP memory types VM entry accepts, got ${show(memType)}`);
    super(mem, levels, base, limit, tableFlags);
    this.accessedDirty = accessedDirty;
    this.memType = memType;
  }

  protected present(e: bigint): boolean {
    return (e & EPT_PRESENT) !== 0n;
  }

  protected exhausted(limit: bigint): Error {
    return new RangeError(`vmmu: EPT table area [.., ${hex(limit)}) exhausted`);
  }

  protected largePageInTheWay(gpa: bigint, level: number): Error {
    return new Error(`vmmu: gpa ${hex(gpa)} is inside a large page at EPT level ${level}`);
  }

  /** The EPTP for these tables: root | (levels − 1) << 3 | memType | accessedDirty << 6. */
  get eptp(): bigint {
    return this.root | (BigInt(this.levels - 1) << EPTP_PWL_SHIFT) | BigInt(this.memType) | (this.accessedDirty ? EPTP_AD : 0n);
  }

  /** Encodes a leaf entry for host-physical `hpa` at page size `size` (bit 7 set for 2M and 1G). */
  static leaf(hpa: bigint, size: EptPageSize, f: EptLeafFlags = {}): bigint {
    bigintRangeArg(hpa, "hpa", 0n, EPT_ADDR_MASK | 0xfffn, "a host-physical address below 2^52 (MAXPHYADDR ≤ 52)");
    const level = SIZE_LEVEL[enumArg(size, "size", SIZE_LEVEL)];
    if ((hpa & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: hpa ${hex(hpa)} is not ${size} aligned`);
    optionsObject(f, "flags");
    const read = optBoolArg(f.read, "flags.read", true);
    const write = optBoolArg(f.write, "flags.write", true);
    const exec = optBoolArg(f.exec, "flags.exec", true);
    for (const k of LEAF_BOOLS) optBoolArg(f[k], `flags.${k}`, false);
    const memType = f.memType === undefined ? MT_WB : intArg(f.memType, "flags.memType", 0, 7);
    if (f.raw !== undefined) u64Arg(f.raw, "flags.raw");
    let e = (hpa & EPT_ADDR_MASK) | (BigInt(memType) << EPT_MT_SHIFT);
    if (read) e |= EPT_R;
    if (write) e |= EPT_W;
    if (exec) e |= EPT_X;
    if (f.userExec) e |= EPT_UX;
    if (f.ipat) e |= EPT_IPAT;
    if (level > 1) e |= EPT_PS;
    if (f.accessed) e |= EPT_A;
    if (f.dirty) e |= EPT_D;
    if (f.raw !== undefined) e |= f.raw;
    return e;
  }

  /** Maps `gpa` → `hpa` with a page of `size` and `flags`. Returns the leaf entry's hpa. */
  map(gpa: bigint, hpa: bigint, size: EptPageSize = "4K", flags: EptLeafFlags = {}): bigint {
    this.checkAddr(gpa);
    const entry = X86EptBuilder.leaf(hpa, size, flags);
    if ((gpa & (SIZE_BYTES[size] - 1n)) !== 0n) throw new RangeError(`vmmu: gpa ${hex(gpa)} is not ${size} aligned`);
    return this.writeLeaf(gpa, SIZE_LEVEL[size], entry);
  }

  /** Maps `count` consecutive pages of `size` starting at gpa → hpa. */
  mapRange(gpa: bigint, hpa: bigint, count: number, size: EptPageSize = "4K", flags: EptLeafFlags = {}): void {
    this.checkAddr(gpa);
    X86EptBuilder.leaf(hpa, size, flags);
    intArg(count, "count", 0, 2 ** 36);
    const bytes = BigInt(count) * SIZE_BYTES[size];
    if (count > 0) {
      this.checkAddr(gpa + bytes - 1n, "gpa + count pages");
      bigintRangeArg(hpa + bytes - 1n, "hpa + count pages", 0n, EPT_ADDR_MASK | 0xfffn, "below 2^52 (MAXPHYADDR ≤ 52)");
    }
    for (let i = 0n; i < BigInt(count); i++) this.map(gpa + i * SIZE_BYTES[size], hpa + i * SIZE_BYTES[size], size, flags);
  }

  /**
   * Clears the leaf that maps `gpa` (whatever its size). Returns the cleared
   * entry's old value, or undefined if `gpa` was not mapped. Does not
   * invalidate any TLB: that is the hypervisor's job (INVEPT).
   */
  unmap(gpa: bigint): bigint | undefined {
    const h = this.leafHpa(gpa);
    if (h === undefined) return undefined;
    const old = this.mem.read64(h);
    this.mem.write64(h, 0n);
    return old;
  }

  /** hpa of the present leaf entry that maps `gpa`, or undefined. */
  leafHpa(gpa: bigint): bigint | undefined {
    return this.leafAt(gpa);
  }

  /** Throws unless `gpa` is within the walk's reach: bits 47:0 (4-level) or 56:0 (5-level). Higher bits would alias. */
  protected checkAddr(gpa: bigint, name = "gpa"): void {
    const bits = this.levels === 5 ? 57 : 48;
    bigintRangeArg(gpa, name, 0n, (1n << BigInt(bits)) - 1n, `a guest-physical address below 2^${bits} (${this.levels}-level EPT)`);
  }
}



const LEAF_BOOLS = ["userExec", "ipat", "accessed", "dirty"] as const;
