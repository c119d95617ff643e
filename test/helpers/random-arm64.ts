// Random VMSAv8-64 translation tables (4 KiB granule) for differential tests,
// Arm ARM DDI 0487 D8.3 (descriptor formats), D8.4–D8.5 (attributes and
// permissions), D8.2 (stage 2, concatenated start tables) as pinned down in
// docs/arm64-walk-contract.md: stage-1 trees for TTBR0 and TTBR1 with any
// T0SZ/T1SZ (partial top tables included), random leaf and table attributes,
// invalid descriptors of every kind, blocks at L1/L2 (and 01 at L0/L3),
// outputs beyond IPS, pointers outside RAM, self-references and shared
// tables; and, for about half the sets, stage-2 tables (KVM's layout from
// kvmVtcr or hand-picked SL0/T0SZ) that map the stage-1 tables' IPAs onto
// RAM with holes, permission gaps, Device memory, AF = 0 and DBM leaves.
// Every descriptor is written word by word into guest memory and recorded,
// so a test can mirror them into a reference memory and compare every word.

import {
  Arm64Stage1Builder, Arm64Stage2Builder, kvmVtcr, s1StartLevel,
  type Arm64BlockSize, type GuestMemory,
} from "../../src/index.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";
import type { RefArm64State } from "../../src/ref/arm64-walk.js";
import { bits, hx, storeWord } from "./random-tables.js";
import type { Rng } from "./rng.js";

const PAGE = 4096n;
const GiB = 1n << 30n;
const MiB2 = 1n << 21n;
const VALID = 1n << 0n;
const TYPE = 1n << 1n;
const AF = 1n << 10n;
const ADDR = bits(47, 12);

/** Bits resolved below level `level` (39, 30, 21, 12 for levels 0..3). */
export function levelShift(level: number): number {
  return 12 + 9 * (3 - level);
}

/** Where a table set lives: the RAM memslot. */
export interface ArmSpace {
  ramBase: bigint;
  ramBytes: bigint;
}

/** Stage-2 layout of a table set. */
export interface Stage2Shape {
  ipaBits: number;
  startLevel: number;
  /** PA of the (possibly concatenated) start table. */
  root: bigint;
  /** VTCR_EL2 fields of the layout: T0SZ, SL0 (and KVM's other bits when `kvm`). */
  vtcr: bigint;
  /** IPA at which stage 2 was laid out to map the first RAM byte (the rest of RAM follows linearly). */
  ipaBase: bigint;
  kvm: boolean;
}

/** One stage-1 region (TTBR0 or TTBR1). */
export interface Stage1Region {
  tsz: number;
  /** Address of the top table as TTBR holds it: an IPA (a PA when the set has no stage 2). */
  root: bigint;
}

/** A generated set of translation tables, as written into guest memory. */
export interface ArmTables {
  readonly space: ArmSpace;
  /** TTBR0's and TTBR1's regions. */
  readonly s1: readonly [Stage1Region, Stage1Region];
  readonly s2?: Stage2Shape;
  /** Every word written (zeros included), pa → value. All other RAM words are zero. */
  readonly words: Map<bigint, bigint>;
  /** Which stage each written word was created for. */
  readonly stageOf: Map<bigint, 1 | 2>;
  /** Virtual addresses whose walks were laid out while building (both regions, and IPAs for stage 1 off). */
  readonly targets: bigint[];
  readonly flavour: "random" | "builder";
}

/** The registers a case runs with: the reference walker's state plus MAIR_EL1. */
export type ArmRegs = RefArm64State & { mair: bigint };

/** Start level and start-table index bits of stage 1 for TnSZ `tsz`. */
function s1Geometry(tsz: number): { start: number; topBits: number } {
  const start = s1StartLevel(tsz);
  return { start, topBits: 64 - tsz - levelShift(start) };
}

/** Start levels a stage-2 IPA size may use: 1..16 concatenated start tables. */
export function stage2StartLevels(ipaBits: number): number[] {
  return [0, 1, 2].filter((l) => ipaBits - levelShift(l) >= 1 && ipaBits - levelShift(l) <= 13);
}

function vtcrFor(ipaBits: number, startLevel: number): bigint {
  return BigInt(64 - ipaBits) | (BigInt(2 - startLevel) << 6n);
}

/** TnSZ as a walk uses it: clamped to 16..39 (docs/arm64-walk-contract.md, "Registers"). */
function effectiveTsz(tsz: number): number {
  return Math.min(39, Math.max(16, tsz));
}

/**
 * A TnSZ field for a region laid out for `tsz`: mostly `tsz`; sometimes another in-range value; and
 * the values a PE accepts but the tables were not laid out with: one below 16 or above 39, and (for
 * `tsz` 16 or 39) an out-of-range value the walk clamps back to `tsz`.
 */
function randomTsz(rng: Rng, tsz: number): number {
  const r = rng.u32() / 0x1_0000_0000;
  if (r < 0.9) return tsz;
  if (r < 0.94) return 16 + rng.int(24);
  const below = tsz === 16 || (tsz !== 39 && rng.chance(0.5));
  return below ? rng.int(16) : 40 + rng.int(24);
}

/** A random stage-1 VA of a region: `low` placed below bit vaBits, the bits above all equal to the region bit. */
function regionVa(upper: boolean, tsz: number, low: bigint): bigint {
  const vaBits = BigInt(64 - tsz);
  const mask = (1n << vaBits) - 1n;
  return upper ? BigInt.asUintN(64, ~mask) | (low & mask) : low & mask;
}

function invalidDesc(rng: Rng): bigint {
  return rng.chance(0.5) ? 0n : rng.u64() & ~VALID;
}

/** Guest RAM plus the words written so far, frames in use and the tables of each stage. */
class Writer {
  readonly words = new Map<bigint, bigint>();
  readonly stageOf = new Map<bigint, 1 | 2>();
  private readonly used = new Set<bigint>();
  readonly frames: bigint;
  readonly s1Tables: bigint[] = [];
  readonly s2Tables: bigint[] = [];

  constructor(readonly rng: Rng, readonly space: ArmSpace, readonly mem: GuestMemory) {
    this.frames = space.ramBytes / PAGE;
  }

  write(pa: bigint, v: bigint, stage: 1 | 2): void {
    storeWord(this.mem, pa, v);
    this.words.set(pa, v);
    this.stageOf.set(pa, stage);
  }

  isDecided(pa: bigint): boolean {
    return this.words.has(pa);
  }

  value(pa: bigint): bigint {
    return this.words.get(pa) ?? 0n;
  }

  inRam(pa: bigint): boolean {
    return pa >= this.space.ramBase && pa + 8n <= this.space.ramBase + this.space.ramBytes;
  }

  randomRamFrame(): bigint {
    return this.space.ramBase + (this.rng.u64() % this.frames) * PAGE;
  }

  /** An unused RAM frame (now used); the first or last frame of RAM now and then. */
  freeFrame(): bigint {
    for (;;) {
      const f = this.rng.chance(0.03)
        ? this.space.ramBase + (this.rng.chance(0.5) ? 0n : this.space.ramBytes - PAGE)
        : this.randomRamFrame();
      if (this.used.has(f)) continue;
      this.used.add(f);
      return f;
    }
  }

  /** `pages` unused contiguous frames aligned to `pages` × 4 KiB (now used). */
  freeRun(pages: number, alignPages = pages): bigint {
    const n = BigInt(pages), align = BigInt(alignPages) * PAGE;
    const slots = (this.space.ramBytes - n * PAGE) / align + 1n;
    for (;;) {
      const start = this.space.ramBase + (this.rng.u64() % slots) * align;
      let free = true;
      for (let i = 0n; i < n && free; i++) free = !this.used.has(start + i * PAGE);
      if (!free) continue;
      for (let i = 0n; i < n; i++) this.used.add(start + i * PAGE);
      return start;
    }
  }

  /** A page-aligned PA below 4 GiB outside RAM. */
  outsideFrame(): bigint {
    const { ramBase, ramBytes } = this.space;
    const end = ramBase + ramBytes;
    if (ramBase > 0n && this.rng.chance(0.5)) return (this.rng.u64() % (ramBase / PAGE)) * PAGE;
    if (this.rng.chance(0.3)) return end + BigInt(this.rng.int(4)) * PAGE;
    return end + (this.rng.u64() % (((1n << 32n) - end) / PAGE)) * PAGE;
  }
}

/** Stage-2 tables laid out lazily: each IPA a stage-1 walk needs gets its path when first needed. */
class Stage2Writer {
  private readonly rng: Rng;
  readonly topBits: number;
  private readonly delta: bigint;

  constructor(readonly w: Writer, readonly shape: Stage2Shape) {
    this.rng = w.rng;
    this.topBits = shape.ipaBits - levelShift(shape.startLevel);
    this.delta = shape.ipaBase - w.space.ramBase;
  }

  ipaOf(pa: bigint): bigint {
    return pa + this.delta;
  }

  private inWindow(ipa: bigint): boolean {
    return ipa >= this.shape.ipaBase && ipa < this.shape.ipaBase + this.w.space.ramBytes;
  }

  private overlapsWindow(base: bigint, size: bigint): boolean {
    return base < this.shape.ipaBase + this.w.space.ramBytes && base + size > this.shape.ipaBase;
  }

  /** The PA `ipa` maps to per the words written (types only, no checks), or undefined. */
  resolve(ipa: bigint): bigint | undefined {
    if (ipa >> BigInt(this.shape.ipaBits) !== 0n) return undefined;
    let table = this.shape.root;
    let idxBits = this.topBits;
    for (let level = this.shape.startLevel; level <= 3; level++) {
      const shift = BigInt(levelShift(level));
      const pa = table + ((ipa >> shift) & ((1n << BigInt(idxBits)) - 1n)) * 8n;
      if (!this.w.inRam(pa)) return undefined;
      const d = this.w.value(pa);
      if ((d & VALID) === 0n) return undefined;
      const isTable = (d & TYPE) !== 0n;
      if (level === 0 && !isTable) return undefined;
      if (level === 3 && !isTable) return undefined;
      if (level < 3 && isTable) {
        table = d & ADDR;
        idxBits = 9;
        continue;
      }
      return (d & bits(47, Number(shift))) | (ipa & ((1n << shift) - 1n));
    }
    return undefined;
  }

  /**
   * Lays out the stage-2 path of `ipa`: 'table' for an IPA holding a stage-1 table (rare
   * holes), 'data' for a stage-1 output, 'outside' for an IPA meant to map outside RAM.
   * IPAs of the RAM window map linearly onto RAM.
   */
  layOut(ipa: bigint, role: "table" | "data" | "outside"): void {
    const { w, shape } = this;
    if (ipa < 0n || ipa >> BigInt(shape.ipaBits) !== 0n) return;
    let table = shape.root;
    let idxBits = this.topBits;
    for (let level = shape.startLevel; level <= 3; level++) {
      if (!w.inRam(table)) return;
      const shift = BigInt(levelShift(level));
      const pa = table + ((ipa >> shift) & ((1n << BigInt(idxBits)) - 1n)) * 8n;
      if (!w.isDecided(pa)) w.write(pa, this.newEntry(level, ipa, role), 2);
      const d = w.value(pa);
      if ((d & VALID) === 0n || level === 3 || (d & TYPE) === 0n) return;
      table = d & ADDR;
      idxBits = 9;
    }
  }

  private newEntry(level: number, ipa: bigint, role: "table" | "data" | "outside"): bigint {
    const { rng } = this.w;
    if (rng.chance(role === "table" ? 0.02 : 0.06)) return invalidDesc(rng);
    if (level === 0) return rng.chance(0.03) ? (rng.u64() & ~TYPE) | VALID : this.tablePointer();
    const shift = levelShift(level);
    const size = 1n << BigInt(shift);
    const blockIpa = ipa & ~(size - 1n);
    const linear = role !== "outside" && this.inWindow(ipa);
    if (level === 3) {
      if (rng.chance(0.03)) return (rng.u64() & ~TYPE) | VALID;
      return this.leaf(3, linear ? blockIpa - this.delta : this.randomOutput(role, shift), role);
    }
    let leafChance = 0;
    if (linear) {
      if (this.delta % size === 0n) leafChance = level === 1 ? 0.3 : 0.45;
    } else if (role === "data" && !this.overlapsWindow(blockIpa, size)) {
      leafChance = level === 1 ? 0.25 : 0.4;
    }
    if (rng.chance(leafChance)) return this.leaf(level, linear ? blockIpa - this.delta : this.randomOutput(role, shift), role);
    return this.tablePointer();
  }

  private randomOutput(role: "table" | "data" | "outside", shift: number): bigint {
    const { rng, w } = this;
    const align = ~((1n << BigInt(shift)) - 1n);
    if (role === "outside") return w.outsideFrame() & align;
    const r = rng.u32() / 0x1_0000_0000;
    if (r < 0.3) return w.randomRamFrame() & align;
    if (r < 0.7) return rng.u64() & bits(31, shift);
    return rng.u64() & bits(47, shift);
  }

  private leaf(level: number, out: bigint, role: "table" | "data" | "outside"): bigint {
    const { rng } = this.w;
    const shift = levelShift(level);
    let d = (out & bits(47, shift)) | VALID | (level === 3 ? TYPE : 0n);
    const r = rng.u32() / 0x1_0000_0000;
    const memAttr = r < 0.08 ? BigInt(rng.int(4)) : r < 0.2 ? BigInt(rng.int(16)) : 0xfn;
    d |= memAttr << 2n;
    if (rng.chance(role === "table" ? 0.95 : 0.88)) d |= 1n << 6n;
    if (rng.chance(role === "table" ? 0.6 : 0.65)) d |= 1n << 7n;
    if (rng.chance(0.5)) d |= BigInt(rng.int(4)) << 8n;
    if (rng.chance(0.85)) d |= AF;
    if (rng.chance(0.4)) d |= BigInt(1 + rng.int(3)) << 53n;
    if (rng.chance(0.4)) d |= 1n << 51n;
    if (rng.chance(0.1)) d |= 1n << 52n;
    if (rng.chance(0.1)) d |= rng.u64() & bits(50, 48);
    if (rng.chance(0.3)) d |= rng.u64() & bits(58, 55);
    if (rng.chance(0.15)) d |= rng.u64() & bits(63, 59);
    if (level < 3 && rng.chance(0.08)) d |= rng.u64() & bits(shift - 1, 12);
    return d;
  }

  private tablePointer(): bigint {
    const { rng, w } = this;
    const r = rng.u32() / 0x1_0000_0000;
    let next: bigint;
    if (r < 0.03) next = w.outsideFrame();
    else if (r < 0.06) next = w.randomRamFrame() | (1n << BigInt(32 + rng.int(16)));
    else if (r < 0.1 && w.s2Tables.length > 0) next = rng.pick(w.s2Tables);
    else {
      next = w.freeFrame();
      w.s2Tables.push(next);
    }
    let d = next | VALID | TYPE;
    if (rng.chance(0.2)) d |= rng.u64() & (bits(11, 2) | bits(63, 52));
    return d;
  }
}

/** Stage-1 tables of one region, laid out lazily per target VA. */
class Stage1Writer {
  private readonly rng: Rng;
  readonly start: number;
  readonly topBits: number;
  readonly rootPa: bigint;

  constructor(readonly w: Writer, readonly s2: Stage2Writer | undefined, readonly tsz: number, readonly upper: boolean) {
    this.rng = w.rng;
    ({ start: this.start, topBits: this.topBits } = s1Geometry(tsz));
    if (w.rng.chance(0.01)) {
      this.rootPa = w.outsideFrame();
      return;
    }
    const frame = this.allocTable();
    const bytes = 1n << BigInt(this.topBits + 3);
    this.rootPa = bytes >= PAGE ? frame : frame + BigInt(w.rng.int(Number(PAGE / bytes))) * bytes;
  }

  ipaOf(pa: bigint): bigint {
    return this.s2 ? this.s2.ipaOf(pa) : pa;
  }

  /** The PA behind stage-1 table address `ipa`, if it is in RAM. */
  paOf(ipa: bigint): bigint | undefined {
    const pa = this.s2 ? this.s2.resolve(ipa) : ipa;
    return pa !== undefined && this.w.inRam(pa) ? pa : undefined;
  }

  get root(): bigint {
    return this.ipaOf(this.rootPa);
  }

  allocTable(): bigint {
    const pa = this.w.freeFrame();
    this.w.s1Tables.push(pa);
    this.s2?.layOut(this.ipaOf(pa), "table");
    return pa;
  }

  private tablePointer(path: bigint[]): bigint {
    const { rng, w } = this;
    const r = rng.u32() / 0x1_0000_0000;
    if (r < 0.04) {
      if (!this.s2) return w.outsideFrame();
      const ipa = rng.u64() & bits(Math.min(this.s2.shape.ipaBits, 32) - 1, 12);
      if (rng.chance(0.7)) this.s2.layOut(ipa, "outside");
      return ipa;
    }
    if (r < 0.08) return this.ipaOf(this.allocTable()) | (1n << BigInt(32 + rng.int(16)));
    if (r < 0.12) {
      const f = w.randomRamFrame();
      this.s2?.layOut(this.ipaOf(f), "table");
      return this.ipaOf(f);
    }
    if (r < 0.19) return this.ipaOf(rng.chance(0.5) ? rng.pick(path) : rng.pick(w.s1Tables));
    return this.ipaOf(this.allocTable());
  }

  private tableAttributes(): bigint {
    const { rng } = this.w;
    let d = 0n;
    if (rng.chance(0.25)) d |= BigInt(1 + rng.int(3)) << 61n;
    if (rng.chance(0.15)) d |= 1n << 60n;
    if (rng.chance(0.15)) d |= 1n << 59n;
    if (rng.chance(0.3)) d |= rng.u64() & bits(11, 2);
    if (rng.chance(0.2)) d |= rng.u64() & bits(58, 52);
    if (rng.chance(0.1)) d |= rng.u64() & bits(51, 48);
    if (rng.chance(0.15)) d |= 1n << 63n;
    return d;
  }

  private leafAttributes(level: number): bigint {
    const { rng } = this.w;
    let d = BigInt(rng.int(8)) << 2n;
    if (rng.chance(0.2)) d |= 1n << 5n;
    d |= BigInt(rng.int(4)) << 6n;
    d |= BigInt(rng.int(4)) << 8n;
    if (rng.chance(0.8)) d |= AF;
    if (rng.chance(0.5)) d |= 1n << 11n;
    if (rng.chance(0.3)) d |= 1n << 51n;
    if (rng.chance(0.15)) d |= 1n << 52n;
    if (rng.chance(0.2)) d |= 1n << 53n;
    if (rng.chance(0.3)) d |= 1n << 54n;
    if (rng.chance(0.3)) d |= rng.u64() & bits(58, 55);
    if (rng.chance(0.15)) d |= rng.u64() & bits(62, 59);
    if (rng.chance(0.1)) d |= 1n << 63n;
    if (rng.chance(0.1)) d |= rng.u64() & bits(50, 48);
    if (level < 3 && rng.chance(0.08)) d |= rng.u64() & bits(levelShift(level) - 1, 12);
    return d;
  }

  /** A stage-1 output IPA for a block of `shift`: mostly RAM (through stage 2's window), else anywhere. */
  private output(shift: number): bigint {
    const { rng, w } = this;
    const r = rng.u32() / 0x1_0000_0000;
    if (r < 0.55) return this.ipaOf(w.randomRamFrame()) & bits(47, shift);
    if (r < 0.8) return rng.u64() & bits(31, shift);
    return rng.u64() & bits(47, shift);
  }

  private newEntry(level: number, path: bigint[]): bigint {
    const { rng } = this.w;
    if (rng.chance(level === this.start ? 0.05 : 0.1)) return invalidDesc(rng);
    if (level === 0) {
      if (rng.chance(0.04)) return (rng.u64() & ~TYPE) | VALID;
      return this.tablePointer(path) | VALID | TYPE | this.tableAttributes();
    }
    if (level === 3) {
      const type = rng.chance(0.05) ? VALID : VALID | TYPE;
      return this.output(12) | type | this.leafAttributes(3);
    }
    if (rng.chance(level === 1 ? 0.25 : 0.35)) {
      const shift = levelShift(level);
      return this.output(shift) | VALID | this.leafAttributes(level);
    }
    return this.tablePointer(path) | VALID | TYPE | this.tableAttributes();
  }

  private index(va: bigint, level: number): bigint {
    const width = level === this.start ? this.topBits : 9;
    return (va >> BigInt(levelShift(level))) & ((1n << BigInt(width)) - 1n);
  }

  /** Decides the L3 descriptors next to `pa` too, so accesses to neighbouring pages find entries. */
  private fillNeighbours(pa: bigint, path: bigint[]): void {
    const table = pa & ~(PAGE - 1n);
    for (let d = -4n; d <= 4n; d++) {
      const g = pa + d * 8n;
      if (g < table || g >= table + PAGE || this.w.isDecided(g) || !this.w.rng.chance(0.7)) continue;
      this.w.write(g, this.newEntry(3, path), 1);
    }
  }

  /** Lays out (or follows) the walk of `va`, creating descriptors where none were decided. */
  layOut(va: bigint): void {
    const { w } = this;
    const path: bigint[] = [];
    let table: bigint | undefined = this.rootPa;
    for (let level = this.start; level <= 3; level++) {
      if (table === undefined || !w.inRam(table)) return;
      path.push(table & ~(PAGE - 1n));
      const pa = table + this.index(va, level) * 8n;
      if (!w.isDecided(pa)) w.write(pa, this.newEntry(level, path), 1);
      if (level === 3) this.fillNeighbours(pa, path);
      const d = w.value(pa);
      if ((d & VALID) === 0n || (level === 0 && (d & TYPE) === 0n) || (level === 3 && (d & TYPE) === 0n)) return;
      if (level === 3 || (d & TYPE) === 0n) {
        const shift = BigInt(levelShift(level));
        this.s2?.layOut((d & bits(47, Number(shift))) | (va & ((1n << shift) - 1n)), "data");
        return;
      }
      table = this.paOf(d & ADDR);
    }
  }

  /**
   * A recursive slot: top[i] points at the top table's own frame. Returns VAs whose top
   * 1..n indices are all i, so one descriptor serves several levels of a walk.
   */
  selfMap(): bigint[] {
    const { rng, w } = this;
    if (!w.inRam(this.rootPa)) return [];
    const i = BigInt(rng.int(2 ** Math.min(this.topBits, 9)));
    const pa = this.rootPa + i * 8n;
    if (!w.isDecided(pa)) w.write(pa, this.ipaOf(this.rootPa & ~(PAGE - 1n)) | VALID | TYPE | this.tableAttributes(), 1);
    const out: bigint[] = [];
    for (let k = 1; k <= 4 - this.start; k++) {
      let va = rng.u64();
      for (let level = this.start; level < this.start + k; level++) {
        const shift = BigInt(levelShift(level));
        va = (va & ~(511n << shift)) | (i << shift);
      }
      out.push(regionVa(this.upper, this.tsz, va));
    }
    return out;
  }
}

/** A random stage-2 layout: KVM's (kvmVtcr) or a hand-picked valid SL0/T0SZ, and a RAM window. */
function randomStage2(rng: Rng, w: Writer, identity: boolean): Stage2Shape {
  const kvm = rng.chance(0.5);
  let ipaBits: number, startLevel: number, vtcr: bigint;
  if (kvm) {
    ipaBits = 32 + rng.int(17);
    const k = kvmVtcr(ipaBits);
    startLevel = k.startLevel;
    vtcr = k.vtcr;
  } else {
    ipaBits = rng.chance(0.15) ? 25 + rng.int(7) : 32 + rng.int(17);
    startLevel = rng.pick(stage2StartLevels(ipaBits));
    vtcr = vtcrFor(ipaBits, startLevel);
  }
  const topBits = ipaBits - levelShift(startLevel);
  const bytes = 1n << BigInt(topBits + 3);
  let root: bigint;
  if (bytes >= PAGE) {
    root = w.freeRun(Number(bytes / PAGE));
  } else {
    root = w.freeFrame() + BigInt(rng.int(Number(PAGE / bytes))) * bytes;
  }
  const { ramBase, ramBytes } = w.space;
  let ipaBase = ramBase;
  if (!identity || ramBase + ramBytes > 1n << BigInt(ipaBits)) {
    const align = rng.pick([GiB, GiB, GiB, MiB2, MiB2, PAGE]);
    const top = rng.chance(0.6) ? 1n << BigInt(Math.min(ipaBits, 32)) : 1n << BigInt(ipaBits);
    const room = top - ramBytes;
    ipaBase = room >= align ? (rng.u64() % (room / align + 1n)) * align : 0n;
  }
  return { ipaBits, startLevel, root, vtcr, ipaBase, kvm };
}

function nextTarget(rng: Rng, targets: bigint[], upper: boolean, tsz: number, start: number): bigint {
  const mine = targets.filter((t) => ((t >> 55n) & 1n) === (upper ? 1n : 0n));
  if (mine.length === 0 || rng.chance(0.35)) return regionVa(upper, tsz, rng.u64());
  const base = rng.pick(mine);
  const keep = 1 + rng.int(4 - start);
  const low = levelShift(start + keep - 1);
  return regionVa(upper, tsz, (base & ~bits(low - 1, 0)) | (rng.u64() & bits(low - 1, 0)));
}

/**
 * Random translation tables written word by word into `mem`: TTBR0 and TTBR1 regions with
 * random T0SZ/T1SZ, stage 2 for about half the sets. Targets share prefixes with earlier
 * targets so walks branch inside common tables.
 */
export function randomArmTables(rng: Rng, space: ArmSpace, mem: GuestMemory): ArmTables {
  const w = new Writer(rng, space, mem);
  const s2 = rng.chance(0.55) ? new Stage2Writer(w, randomStage2(rng, w, rng.chance(0.35))) : undefined;
  const regions = [false, true].map((upper) => new Stage1Writer(w, s2, 16 + rng.int(24), upper));
  const targets: bigint[] = [];
  for (const r of regions) {
    if (rng.chance(0.2)) targets.push(...r.selfMap());
    const n = 3 + rng.int(8);
    for (let i = 0; i < n; i++) {
      const va = nextTarget(rng, targets, r.upper, r.tsz, r.start);
      targets.push(va);
      r.layOut(va);
    }
  }
  if (s2) {
    for (let i = 0; i < 2; i++) {
      const ipa = s2.shape.ipaBase + (rng.u64() % space.ramBytes);
      s2.layOut(ipa, "data");
      if (ipa >> 48n === 0n) targets.push(ipa);
    }
  }
  return {
    space, s1: [regions[0]!, regions[1]!].map((r) => ({ tsz: r.tsz, root: r.root })) as [Stage1Region, Stage1Region],
    ...(s2 ? { s2: s2.shape } : {}), words: w.words, stageOf: w.stageOf, targets, flavour: "random",
  };
}

const SIZES: readonly Arm64BlockSize[] = ["4K", "4K", "2M", "1G"];
const SIZE_BYTES: Record<Arm64BlockSize, bigint> = { "4K": PAGE, "2M": MiB2, "1G": GiB };

/** Reads the non-zero words of `pages` table pages at `base` into `words`. */
function scanPages(mem: GuestMemory, base: bigint, pages: number, stage: 1 | 2, words: Map<bigint, bigint>, stageOf: Map<bigint, 1 | 2>): void {
  for (let t = base; t < base + BigInt(pages) * PAGE; t += PAGE) {
    const page = mem.read(t, 4096);
    const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
    for (let i = 0; i < 512; i++) {
      const v = dv.getBigUint64(i * 8, true);
      if (v === 0n) continue;
      words.set(t + BigInt(i) * 8n, v);
      stageOf.set(t + BigInt(i) * 8n, stage);
    }
  }
}

const S1_FLIPS = [0n, 1n, 6n, 7n, 10n, 11n, 51n, 52n, 53n, 54n, 59n, 60n, 61n, 62n].map((b) => 1n << b);
const S2_FLIPS = [0n, 1n, 3n, 5n, 6n, 7n, 10n, 51n, 53n, 54n].map((b) => 1n << b);

/**
 * Tables made by Arm64Stage1Builder / Arm64Stage2Builder (random pages and blocks with random
 * flags and table flags; stage 2 mapping RAM at IPA = PA), then roughened: random descriptors
 * get AP, AF, DBM, XN, nG, APTable, type or valid bits, or an address bit above 2^32, flipped
 * directly in memory.
 */
export function builderArmTables(rng: Rng, space: ArmSpace, mem: GuestMemory): ArmTables {
  const w = new Writer(rng, space, mem);
  const words = new Map<bigint, bigint>();
  const stageOf = new Map<bigint, 1 | 2>();
  const areaPages = 32;
  let s2: Stage2Shape | undefined;
  if (rng.chance(0.5)) {
    const kvm = rng.chance(0.6);
    const ipaBits = 32 + rng.int(17);
    const startLevel = kvm ? kvmVtcr(ipaBits).startLevel : rng.pick(stage2StartLevels(ipaBits));
    const tableBase = w.freeRun(16 + areaPages, 16);
    const b = new Arm64Stage2Builder(mem, { tableBase, tableLimit: tableBase + BigInt(16 + areaPages) * PAGE, ipaBits, startLevel });
    const gigaWindow = startLevel <= 1 && rng.chance(0.3);
    try {
      if (gigaWindow) {
        b.map(space.ramBase & ~(GiB - 1n), space.ramBase & ~(GiB - 1n), "1G", {});
      } else {
        for (let ipa = space.ramBase; ipa < space.ramBase + space.ramBytes; ipa += MiB2) {
          if (rng.chance(0.05)) continue;
          b.map(ipa, ipa, "2M", {
            read: rng.chance(0.95), write: rng.chance(0.85), af: rng.chance(0.9), dbm: rng.chance(0.3),
            device: rng.chance(0.05), xn: rng.pick([0, 0, 1, 2, 3] as const),
          });
        }
      }
      for (let i = 0; i < 3; i++) {
        const size = rng.pick(SIZES);
        const ipa = rng.u64() & bits(ipaBits - 1, 0) & ~(SIZE_BYTES[size] - 1n);
        if (ipa < space.ramBase + space.ramBytes + GiB && ipa + GiB > space.ramBase) continue;
        b.map(ipa, rng.u64() & bits(rng.chance(0.7) ? 31 : 47, 0) & ~(SIZE_BYTES[size] - 1n), size, {
          read: rng.chance(0.8), write: rng.chance(0.6), af: rng.chance(0.8), xn: rng.pick([0, 1, 2, 3] as const),
        });
      }
    } catch {
      // the table area ran out or a block covers the range: keep what was built
    }
    scanPages(mem, b.root, b.tablesAllocated, 2, words, stageOf);
    const vtcr = kvm ? kvmVtcr(ipaBits).vtcr : vtcrFor(ipaBits, startLevel);
    s2 = { ipaBits, startLevel, root: b.root, vtcr, ipaBase: space.ramBase, kvm };
  }
  const targets: bigint[] = [];
  const regions: Stage1Region[] = [];
  for (const upper of [false, true]) {
    const tsz = 16 + rng.int(24);
    const tableBase = w.freeRun(areaPages, 1);
    const b = new Arm64Stage1Builder(mem, { tableBase, tableLimit: tableBase + BigInt(areaPages) * PAGE, tsz });
    const start = s1StartLevel(tsz);
    const n = 2 + rng.int(6);
    for (let i = 0; i < n; i++) {
      const size = rng.pick(SIZES);
      const va = nextTarget(rng, targets, upper, tsz, start) & ~(SIZE_BYTES[size] - 1n);
      const pa = (rng.chance(0.6) ? w.randomRamFrame() : rng.u64() & bits(rng.chance(0.7) ? 31 : 47, 0)) & ~(SIZE_BYTES[size] - 1n);
      const flags = {
        el0: rng.chance(0.5), readOnly: rng.chance(0.3), uxn: rng.chance(0.3), pxn: rng.chance(0.3), nG: rng.chance(0.5),
        af: rng.chance(0.85), dbm: rng.chance(0.3), attrIndx: rng.int(8),
      };
      const tableFlags = { apTable: rng.chance(0.2) ? rng.pick([1, 2, 3] as const) : 0 as const, uxnTable: rng.chance(0.1), pxnTable: rng.chance(0.1) };
      try {
        const count = 1 + rng.int(3);
        for (let k = 0n; k < BigInt(count); k++) b.map(va + k * SIZE_BYTES[size], pa + k * SIZE_BYTES[size], size, flags, tableFlags);
        targets.push(va);
      } catch {
        // a block above the start level, a block over a table, or the area ran out: skip this mapping
      }
    }
    scanPages(mem, b.root, b.tablesAllocated, 1, words, stageOf);
    regions.push({ tsz, root: b.root });
  }
  for (const [g, v] of [...words]) {
    if (!rng.chance(0.12)) continue;
    const stage = stageOf.get(g)!;
    let nv = v ^ rng.pick(stage === 1 ? S1_FLIPS : S2_FLIPS);
    if (rng.chance(0.15)) nv |= 1n << BigInt(32 + rng.int(16));
    storeWord(mem, g, nv);
    words.set(g, nv);
  }
  return { space, s1: [regions[0]!, regions[1]!], ...(s2 ? { s2 } : {}), words, stageOf, targets, flavour: "builder" };
}

/**
 * A virtual address to translate: mostly inside (or next to) a target's page, sometimes with a
 * random tag in the top byte; else a random in-range VA of either region, an out-of-range VA
 * (one bit between the region size and bit 55 flipped), or fully random.
 */
export function randomArmVa(rng: Rng, tables: ArmTables): bigint {
  const r = rng.u32() / 0x1_0000_0000;
  let va: bigint;
  if (r < 0.86 && tables.targets.length > 0) {
    const t = rng.pick(tables.targets);
    const near = rng.u32() / 0x1_0000_0000;
    if (near < 0.65) va = (t & ~0xfffn) | BigInt(rng.int(4096));
    else if (near < 0.85) va = BigInt.asUintN(64, (t & ~0xfffn) + BigInt(rng.int(9) - 4) * PAGE + BigInt(rng.int(4096)));
    else {
      const low = Math.min(rng.pick([21, 30]), 64 - tables.s1[Number((t >> 55n) & 1n)]!.tsz);
      va = (t & ~bits(low - 1, 0)) | (rng.u64() & bits(low - 1, 0));
    }
  } else if (r < 0.92) {
    const upper = rng.chance(0.5);
    va = regionVa(upper, tables.s1[upper ? 1 : 0].tsz, rng.u64());
  } else if (r < 0.97) {
    const t = tables.targets.length > 0 ? rng.pick(tables.targets) : rng.u64();
    const tsz = tables.s1[Number((t >> 55n) & 1n)]!.tsz;
    va = t ^ (1n << BigInt(64 - tsz + rng.int(tsz - 8)));
  } else {
    return rng.u64();
  }
  if (rng.chance(0.1)) va = (va & bits(55, 0)) | (BigInt(rng.int(256)) << 56n);
  return va;
}

const TCR_BITS = {
  A1: 22n, AS: 36n, TBI0: 37n, TBI1: 38n, HA: 39n, HD: 40n, HPD0: 41n, HPD1: 42n, TBID0: 51n, TBID1: 52n,
  E0PD0: 55n, E0PD1: 56n, EPD0: 7n, EPD1: 23n,
} as const;

/**
 * Registers for one case over `tables`: TCR_EL1 with every modelled field random (T0SZ/T1SZ
 * mostly those the tables were laid out for, sometimes outside 16..39; TG0/TG1 sometimes
 * reserved or another granule's), SCTLR_EL1.M (rarely off) and WXN, PSTATE.PAN, TTBRs with
 * random ASIDs and ignored low bits; for tables with stage 2: HCR_EL2.VM (rarely off) and PTW,
 * VTCR_EL2 of the layout (rarely another consistent one, one with T0SZ outside 16..39, SL0 = 3
 * or an SL0 inconsistent with T0SZ) with random TG0, PS, HA, HD, VS, VTTBR with a random VMID.
 * Without stage 2, VTCR/VTTBR are junk (HCR_EL2.VM = 0). Every value is one a PE accepts.
 */
export function randomArmRegisters(rng: Rng, tables: ArmTables): ArmRegs {
  const flag = (p: number, bit: bigint): bigint => (rng.chance(p) ? 1n << bit : 0n);
  const tsz = tables.s1.map((r) => randomTsz(rng, r.tsz));
  const ips = BigInt(rng.chance(0.5) ? 5 : rng.int(8));
  const tg0 = rng.chance(0.92) ? 0n : BigInt(1 + rng.int(3));
  const tg1 = rng.chance(0.92) ? 2n : rng.pick([0n, 1n, 3n]);
  const tcr = BigInt(tsz[0]!) | (BigInt(tsz[1]!) << 16n) | (tg0 << 14n) | (tg1 << 30n) | (ips << 32n)
    | (rng.chance(0.5) ? (rng.u64() & bits(13, 8)) | (rng.u64() & bits(29, 24)) : 0n)
    | flag(0.5, TCR_BITS.A1) | flag(0.5, TCR_BITS.AS) | flag(0.4, TCR_BITS.TBI0) | flag(0.4, TCR_BITS.TBI1)
    | flag(0.3, TCR_BITS.TBID0) | flag(0.3, TCR_BITS.TBID1) | flag(0.03, TCR_BITS.EPD0) | flag(0.03, TCR_BITS.EPD1)
    | flag(0.06, TCR_BITS.E0PD0) | flag(0.06, TCR_BITS.E0PD1) | flag(0.55, TCR_BITS.HA) | flag(0.5, TCR_BITS.HD)
    | flag(0.2, TCR_BITS.HPD0) | flag(0.2, TCR_BITS.HPD1);
  const ttbr = (i: 0 | 1): bigint => {
    const junk = rng.chance(0.3) ? rng.u64() & bits(s1Geometry(tables.s1[i].tsz).topBits + 2, 0) & bits(11, 0) : 0n;
    // A root laid out below the IPA window's start has a negative IPA: the register holds it modulo 2^64.
    return BigInt.asUintN(64, (rng.u64() & bits(63, 48)) | tables.s1[i].root | junk);
  };
  const sctlr = flag(0.97, 0n) | flag(0.2, 19n) | (rng.chance(0.5) ? 0x30d0_0800n : 0n) | (rng.chance(0.5) ? (1n << 2n) | (1n << 12n) : 0n);
  let hcr: bigint, vtcr: bigint, vttbr: bigint;
  const s2 = tables.s2;
  if (s2) {
    hcr = flag(0.92, 0n) | flag(0.3, 2n) | flag(0.3, 31n);
    let layout = s2.vtcr;
    const r = rng.u32() / 0x1_0000_0000;
    if (r < 0.04) {
      const ipaBits = 25 + rng.int(24);
      layout = vtcrFor(ipaBits, rng.pick(stage2StartLevels(ipaBits)));
    } else if (r < 0.07) {
      // T0SZ outside 16..39: the layout's own when it is walked as 16 or 39, else any.
      const t0sz = s2.ipaBits === 48 ? rng.int(16) : s2.ipaBits === 25 ? 40 + rng.int(24) : rng.chance(0.5) ? rng.int(16) : 40 + rng.int(24);
      layout = (layout & ~0x3fn) | BigInt(t0sz);
    } else if (r < 0.1) {
      // SL0 = 3 (reserved), or a start level the IPA size cannot use.
      const ipaBits = s2.ipaBits;
      const bad = [0, 1, 2].filter((l) => !stage2StartLevels(ipaBits).includes(l));
      const sl0 = bad.length === 0 || rng.chance(0.4) ? 3 : 2 - rng.pick(bad);
      layout = (layout & ~(3n << 6n)) | (BigInt(sl0) << 6n);
    }
    const ps = BigInt(rng.chance(0.5) ? 5 : rng.int(8));
    const vtg0 = rng.chance(0.9) ? 0n : BigInt(1 + rng.int(3));
    vtcr = (layout & ~(bits(18, 16) | (1n << 19n) | (1n << 21n) | (1n << 22n) | bits(15, 14))) | (ps << 16n) | (vtg0 << 14n) | (1n << 31n)
      | flag(0.5, 19n) | flag(0.6, 21n) | flag(0.6, 22n) | (rng.chance(0.3) ? rng.u64() & bits(13, 8) : 0n);
    const rootBytesLog2 = s2.ipaBits - levelShift(s2.startLevel) + 3;
    const junk = rng.chance(0.3) ? rng.u64() & bits(Math.min(rootBytesLog2, 16) - 1, 0) : 0n;
    vttbr = (BigInt(rng.chance(0.7) ? rng.int(4) : rng.int(65536)) << 48n) | s2.root | junk;
  } else {
    hcr = flag(0.05, 2n);
    vtcr = rng.u64();
    vttbr = rng.u64();
  }
  return { ttbr0: ttbr(0), ttbr1: ttbr(1), tcr, sctlr, vttbr, vtcr, hcr, pan: rng.chance(0.3), mair: rng.u64() };
}

/**
 * Which values a PE accepts but only a lenient core walks with, among the enabled stages of `s`:
 * "reserved TG" (TG0, TG1 or VTCR.TG0 not 4 KiB), "TnSZ out of range", "VTCR.T0SZ out of range",
 * "VTCR.SL0 invalid" (3, or inconsistent with T0SZ).
 */
export function lenientRegisterClasses(s: RefArm64State): string[] {
  const out: string[] = [];
  const outOfRange = (tsz: bigint) => tsz < 16n || tsz > 39n;
  if ((s.sctlr & 1n) !== 0n) {
    if (((s.tcr >> 14n) & 3n) !== 0n || ((s.tcr >> 30n) & 3n) !== 2n) out.push("reserved TG");
    if (outOfRange(s.tcr & 63n) || outOfRange((s.tcr >> 16n) & 63n)) out.push("TnSZ out of range");
  }
  if ((s.hcr & 1n) !== 0n) {
    if (((s.vtcr >> 14n) & 3n) !== 0n) out.push("reserved TG");
    if (outOfRange(s.vtcr & 63n)) out.push("VTCR.T0SZ out of range");
    const ipaBits = 64 - effectiveTsz(Number(s.vtcr & 63n));
    const sl0 = Number((s.vtcr >> 6n) & 3n);
    if (sl0 === 3 || !stage2StartLevels(ipaBits).includes(2 - sl0)) out.push("VTCR.SL0 invalid");
  }
  return [...new Set(out)];
}

/** The registers as one line. */
export function regsNote(s: ArmRegs): string {
  return `ttbr0=${hx(s.ttbr0)} ttbr1=${hx(s.ttbr1)} tcr=${hx(s.tcr)} sctlr=${hx(s.sctlr)} pan=${s.pan} hcr=${hx(s.hcr)} vtcr=${hx(s.vtcr)} vttbr=${hx(s.vttbr)}`;
}

/** Stage-2 descriptors read for `ipa` (no checks), and the PA it maps to if any. */
function stage2Chain(mem: RefMemory, s: RefArm64State, ipa: bigint): { lines: string[]; pa?: bigint } {
  const ipaBits = 64 - effectiveTsz(Number(s.vtcr & 63n));
  const startLevel = 2 - Number((s.vtcr >> 6n) & 3n);
  const lines: string[] = [];
  if (!stage2StartLevels(ipaBits).includes(startLevel)) return { lines: [`SL0 invalid for a ${ipaBits}-bit IPA: no stage-2 walk`] };
  if (ipa >> BigInt(ipaBits) !== 0n) return { lines: [`beyond the ${ipaBits}-bit IPA space`] };
  let idxBits = ipaBits - levelShift(startLevel);
  let table = s.vttbr & bits(47, Math.max(1, idxBits + 3));
  for (let level = startLevel; level <= 3; level++) {
    const shift = BigInt(levelShift(level));
    const pa = table + ((ipa >> shift) & ((1n << BigInt(idxBits)) - 1n)) * 8n;
    const d = mem.read64(pa);
    lines.push(`S2 L${level} [${hx(pa)}] = ${d === undefined ? "outside RAM" : hx(d)}`);
    if (d === undefined || (d & VALID) === 0n) return { lines };
    const isTable = (d & TYPE) !== 0n;
    if ((level === 0 || level === 3) && !isTable) return { lines };
    if (level < 3 && isTable) {
      table = d & ADDR;
      idxBits = 9;
      continue;
    }
    return { lines, pa: (d & bits(47, Number(shift))) | (ipa & ((1n << shift) - 1n)) };
  }
  return { lines };
}

/** The descriptors a walk of `va` reads from `mem` (architectural interpretation, no checks), one line each. */
export function describeArmWalk(mem: RefMemory, s: RefArm64State, va: bigint): string {
  const lines: string[] = [];
  const s2On = (s.hcr & 1n) !== 0n;
  const s2 = (ipa: bigint, what: string): bigint | undefined => {
    if (!s2On) return ipa;
    const c = stage2Chain(mem, s, ipa);
    lines.push(`    ${what} ${hx(ipa)}: ${c.lines.join(", ")}`);
    return c.pa;
  };
  if ((s.sctlr & 1n) === 0n) {
    s2(va, "stage 1 off, IPA");
    return lines.join("\n");
  }
  const upper = ((va >> 55n) & 1n) !== 0n;
  const tsz = effectiveTsz(Number((s.tcr >> (upper ? 16n : 0n)) & 63n));
  const { start, topBits } = s1Geometry(tsz);
  let idxBits = topBits;
  let table = (upper ? s.ttbr1 : s.ttbr0) & bits(47, Math.max(1, topBits + 3));
  for (let level = start; level <= 3; level++) {
    const shift = BigInt(levelShift(level));
    const ipa = table + ((va >> shift) & ((1n << BigInt(idxBits)) - 1n)) * 8n;
    const pa = s2(ipa, `S1 L${level} table entry at IPA`);
    if (pa === undefined) break;
    const d = mem.read64(pa);
    lines.push(`    S1 L${level} [${hx(ipa)}${s2On ? ` → ${hx(pa)}` : ""}] = ${d === undefined ? "outside RAM" : hx(d)}`);
    if (d === undefined || (d & VALID) === 0n) break;
    const isTable = (d & TYPE) !== 0n;
    if ((level === 0 || level === 3) && !isTable) break;
    if (level < 3 && isTable) {
      table = d & ADDR;
      idxBits = 9;
      continue;
    }
    s2((d & bits(47, Number(shift))) | (va & ((1n << shift) - 1n)), "output");
    break;
  }
  return lines.join("\n");
}
