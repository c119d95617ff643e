// Random EPT paging structures with random guest x86-64 paging structures
// behind them, for the differential test of the two-dimensional walk. EPT
// entries follow Intel SDM Vol.3C §29.3.2 (entry formats: R/W/X, UX with
// mode-based execute control, memory type, IPAT, 2 MiB / 1 GiB pages, A/D),
// and are made to hit §29.3.3.1 (misconfigurations: write without read,
// reserved bits, memory types 2, 3, 7) and §29.3.3.2 (violations: not-present
// entries, missing rights) at every level; table pointers are sometimes shared,
// stray or outside host RAM. The guest tables are random-tables.ts's (SDM
// Vol.3A §4.5), placed at guest-physical addresses that EPT maps to host
// frames — mostly read/write, sometimes read-only or not at all, so the guest
// walk's loads and A/D updates violate. Every word is written into machine
// memory (host-physical memory under EPT) and recorded by host address, so a
// test can mirror them into the reference walker's memory and compare every
// word afterwards.

import { X86EptBuilder, type EptLeafFlags, type EptPageSize, type GuestMemory } from "../../src/index.js";
import type { Rng } from "./rng.js";
import {
  DEFAULT_SHAPE, TreeWriter, bits, hx, nextTarget, selfMap, storeWord, type RandomTree, type TreeShape, type TreeSpace,
} from "./random-tables.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";

const PAGE = 4096n;
const GP = 1n << 0n;
const GPS = 1n << 7n;

// EPT entry bits (SDM Vol.3C §29.3.2) and EPTP fields.
const R = 1n << 0n;
const W = 1n << 1n;
const X = 1n << 2n;
const RWX = R | W | X;
const IPAT = 1n << 6n;
const PS = 1n << 7n;
const A = 1n << 8n;
const D = 1n << 9n;
const UX = 1n << 10n;
const PRESENT = RWX | UX;
const EPTP_AD = 1n << 6n;

/** The machine's RAM memslot in host-physical space, and MAXPHYADDR (host and guest alike). */
export interface HostSpace {
  maxPhysAddrBits: number;
  ramBase: bigint;
  ramBytes: bigint;
}

/** Knobs of the random EPT generator. */
export interface EptShape {
  /** Chance that a new entry has R = W = X = 0 (present only through UX under MBEC, if at all). */
  notPresent: number;
  /** Chance that a new PDPTE / PDE (not forced by a guest table) is a 1 GiB / 2 MiB leaf. */
  leaf1G: number;
  leaf2M: number;
  /** Chance that a new present entry carries one reserved bit. */
  reserved: number;
  /** Chance that a new leaf has memory type 2, 3 or 7. */
  badMemType: number;
  /** Chance that a new non-leaf entry has random rights instead of R|W|X. */
  narrow: number;
  /** Chance that a new table pointer targets an existing EPT table (an ancestor or any). */
  shared: number;
  /** Chance that a new table pointer lies outside host RAM. */
  outside: number;
  /** Chance that a new table pointer targets a random unused (empty) host frame. */
  stray: number;
}

export const DEFAULT_EPT_SHAPE: EptShape = {
  notPresent: 0.025, leaf1G: 0.15, leaf2M: 0.25, reserved: 0.008, badMemType: 0.012, narrow: 0.03,
  shared: 0.03, outside: 0.008, stray: 0.01,
};

/** Guest tables behind EPT: fewer not-present and outside pointers than a 1D tree (EPT adds its own faults). */
export const GUEST_SHAPE_2D: TreeShape = { ...DEFAULT_SHAPE, notPresent: 0.04, outside: 0.015, reserved: 0.02 };

function inHostRam(h: HostSpace, hpa: bigint): boolean {
  return hpa >= h.ramBase && hpa < h.ramBase + h.ramBytes;
}

function levelShift(level: number): number {
  return 12 + 9 * (level - 1);
}

function eptIndex(gpa: bigint, level: number): bigint {
  return (gpa >> BigInt(levelShift(level))) & 511n;
}

/** Whether an EPT entry is read as a leaf: a PTE, or a PDE / PDPTE with bit 7 (structurally, whatever its other bits). */
function eptLeaf(level: number, e: bigint): boolean {
  return level === 1 || ((level === 2 || level === 3) && (e & PS) !== 0n);
}

function randomBitIn(rng: Rng, hi: number, lo: number): bigint {
  return 1n << BigInt(lo + rng.int(hi - lo + 1));
}

/** Every non-zero word written into host memory (guest and EPT entries), by host-physical address. */
export class HostWords {
  readonly words = new Map<bigint, bigint>();
  readonly decided = new Set<bigint>();
  constructor(readonly mem: GuestMemory) {}
  write(hpa: bigint, value: bigint): void {
    this.decided.add(hpa);
    if (value === 0n) return;
    this.words.set(hpa, value);
    storeWord(this.mem, hpa, value);
  }
  value(hpa: bigint): bigint {
    return this.words.get(hpa) ?? 0n;
  }
}

/** Host frames handed out to tables (EPT, guest, stray), so two kinds never share a frame by accident. */
class HostFrames {
  readonly used = new Set<bigint>();
  private readonly count: number;
  constructor(readonly rng: Rng, readonly host: HostSpace) {
    this.count = Number(host.ramBytes / PAGE);
  }
  random(): bigint {
    return this.host.ramBase + BigInt(this.rng.int(this.count)) * PAGE;
  }
  /** An unused frame (sometimes the first or last of RAM), now used. */
  fresh(): bigint {
    for (;;) {
      const edge = this.rng.chance(0.03);
      const f = edge ? this.host.ramBase + (this.rng.chance(0.5) ? 0n : this.host.ramBytes - PAGE) : this.random();
      if (this.used.has(f)) continue;
      this.used.add(f);
      return f;
    }
  }
  /** A page-aligned host address below 2^M outside RAM, or -1n if RAM fills the space. */
  outside(): bigint {
    const { ramBase, ramBytes, maxPhysAddrBits: m } = this.host;
    const top = 1n << BigInt(m);
    const end = ramBase + ramBytes;
    const below = ramBase > 0n && (end >= top || this.rng.chance(0.5));
    if (below) return (this.rng.u64() % (ramBase / PAGE)) * PAGE;
    if (end >= top) return -1n;
    if (this.rng.chance(0.3)) return end + BigInt(this.rng.int(4)) * PAGE;
    return end + (this.rng.u64() % ((top - end) / PAGE)) * PAGE;
  }
}

/** A guest-physical range an EPT leaf maps onto host RAM: guest tables can be placed inside it. */
interface Region {
  gpa: bigint;
  hpa: bigint;
  size: bigint;
}

/** What a guest table placement asks of the EPT: `gpa` should map to host `hpa` with a leaf at `level` or below. */
interface Want {
  hpa: bigint;
  level: number;
}

/** The EPT side of a two-dimensional tree: its EPTP, and placements of guest tables and data pages. */
abstract class EptSide {
  readonly tableFrames = new Set<bigint>();
  readonly regions: Region[] = [];
  abstract readonly eptp: bigint;
  abstract readonly levels: 4 | 5;
  abstract readonly root: bigint;
  abstract readonly flavour: "random" | "builder";

  constructor(readonly rng: Rng, readonly host: HostSpace, readonly frames: HostFrames, readonly store: HostWords) {}

  /** A new guest-physical address for a guest table, mapped (as EPT entries allow) to a fresh host frame. */
  abstract mapTable(): bigint;
  /** Lays out an EPT path for the data page at guest-physical `gpa`. */
  abstract mapData(gpa: bigint): void;
  /** Turns the finished tree into its final words (the builder flavour roughens its entries here). */
  finish(): void {}

  /**
   * The host address a guest-physical address reaches following EPT address bits only (no rights,
   * reserved or memory-type checks; present = any of bits 2:0, 10), if it lies in host RAM.
   */
  resolve(gpa: bigint): bigint | undefined {
    const mask = bits(this.host.maxPhysAddrBits - 1, 12);
    let table = this.root;
    for (let level: number = this.levels; level >= 1; level--) {
      if (!inHostRam(this.host, table)) return undefined;
      const e = this.store.mem.read64(table + eptIndex(gpa, level) * 8n);
      if ((e & PRESENT) === 0n) return undefined;
      if (eptLeaf(level, e)) {
        const shift = levelShift(level);
        const hpa = (e & bits(this.host.maxPhysAddrBits - 1, shift)) | (gpa & bits(shift - 1, 0));
        return inHostRam(this.host, hpa) ? hpa : undefined;
      }
      table = e & mask;
    }
    return undefined;
  }

  /** Guest-physical addresses placed so far: new ones cluster around them, as a guest's RAM does. */
  readonly anchors: bigint[] = [];

  /** A random gpa below 2^M, mostly sharing its bits above 21, 30 or 39 with an earlier one (so EPT walks share tables). */
  randomGpa(): bigint {
    const { rng } = this;
    const m = this.host.maxPhysAddrBits;
    if (this.anchors.length === 0 || !rng.chance(0.7)) return rng.u64() & bits(m - 1, 0);
    const keep = rng.pick([21, 30, 30, 39]);
    return ((rng.pick(this.anchors) & ~bits(keep - 1, 0)) | (rng.u64() & bits(keep - 1, 0))) & bits(m - 1, 0);
  }

  /** A guest-physical address congruent to `hpa` modulo a leaf of `level`, below 2^M. */
  protected gpaFor(hpa: bigint, level: number): bigint {
    const shift = levelShift(level);
    return (this.randomGpa() & bits(this.host.maxPhysAddrBits - 1, shift)) | (hpa & bits(shift - 1, 12));
  }

  /** A table placement: inside a region already mapped to RAM, or a new leaf of random size to a fresh frame. */
  protected placeTable(): { gpa: bigint; want?: Want } {
    const { rng } = this;
    if (this.regions.length > 0 && rng.chance(0.35)) {
      const r = rng.pick(this.regions);
      for (let i = 0; i < 6; i++) {
        const h = r.hpa + BigInt(rng.int(Number(r.size / PAGE))) * PAGE;
        if (inHostRam(this.host, h) && !this.frames.used.has(h)) {
          this.frames.used.add(h);
          return { gpa: r.gpa + (h - r.hpa) };
        }
      }
    }
    const hpa = this.frames.fresh();
    const x = rng.u32() / 0x1_0000_0000;
    const level = x < 0.6 ? 1 : x < 0.85 ? 2 : 3;
    let gpa = this.gpaFor(hpa, level);
    for (let i = 0; i < 8 && !this.open(gpa); i++) gpa = this.gpaFor(hpa, level);
    return { gpa, want: { hpa, level } };
  }

  /** Whether the EPT walk of `gpa` meets an undecided (zero, never written) entry before anything else stops it. */
  open(gpa: bigint): boolean {
    const mask = bits(this.host.maxPhysAddrBits - 1, 12);
    let table = this.root;
    for (let level: number = this.levels; level >= 1; level--) {
      if (!inHostRam(this.host, table)) return false;
      const hpa = table + eptIndex(gpa, level) * 8n;
      const e = this.store.mem.read64(hpa);
      if (e === 0n && !this.store.decided.has(hpa)) return true;
      if ((e & PRESENT) === 0n || eptLeaf(level, e)) return false;
      table = e & mask;
    }
    return false;
  }
}

/** EPT rights of a new entry: R|W|X, read-only, execute-only, else random (W without R, none, …). */
function randomRights(rng: Rng, full: number, readOnly: number, execOnly = 0): bigint {
  const x = rng.u32() / 0x1_0000_0000;
  if (x < full) return RWX;
  if (x < full + readOnly) return rng.chance(0.5) ? R : R | X;
  if (x < full + readOnly + execOnly) return X;
  return BigInt(rng.int(8));
}

/** EPT trees written entry by entry, as random-tables.ts writes guest trees. */
class RandomEpt extends EptSide {
  readonly levels: 4 | 5;
  readonly root: bigint;
  readonly eptp: bigint;
  readonly flavour = "random";
  private readonly tables: bigint[] = [];

  constructor(rng: Rng, host: HostSpace, frames: HostFrames, store: HostWords, readonly shape: EptShape) {
    super(rng, host, frames, store);
    this.levels = rng.chance(0.5) ? 4 : 5;
    let root = -1n;
    if (rng.chance(0.01)) root = frames.outside();
    if (root < 0n) {
      root = frames.fresh();
      this.tables.push(root);
      this.tableFrames.add(root);
    }
    this.root = root;
    this.eptp = root | (BigInt(this.levels - 1) << 3n) | (rng.chance(0.5) ? 6n : 0n) | (rng.chance(0.5) ? EPTP_AD : 0n);
  }

  mapTable(): bigint {
    const { gpa, want } = this.placeTable();
    this.layOut(gpa, want);
    return gpa;
  }

  mapData(gpa: bigint): void {
    this.layOut(gpa);
  }

  /** Lays out (or follows) the EPT walk of `gpa`, deciding the entries it meets undecided. */
  private layOut(gpa: bigint, want?: Want): void {
    const m = this.host.maxPhysAddrBits;
    const path: bigint[] = [];
    let table = this.root;
    for (let level: number = this.levels; level >= 1; level--) {
      if (!inHostRam(this.host, table)) return;
      path.push(table);
      const hpa = table + eptIndex(gpa, level) * 8n;
      if (!this.store.decided.has(hpa)) this.store.write(hpa, this.newEntry(level, path, want));
      const e = this.store.value(hpa);
      if ((e & PRESENT) === 0n) return;
      if (eptLeaf(level, e)) {
        const shift = levelShift(level);
        const frame = e & bits(m - 1, shift);
        const size = 1n << BigInt(shift);
        if (frame < this.host.ramBase + this.host.ramBytes && frame + size > this.host.ramBase) {
          this.regions.push({ gpa: gpa & ~(size - 1n) & bits(m - 1, 0), hpa: frame, size });
        }
        return;
      }
      table = e & bits(m - 1, 12);
    }
  }

  /** A new entry; on the path of a guest table (`want`) its faults are rarer, since a broken guest table spoils many walks. */
  private newEntry(level: number, path: bigint[], want?: Want): bigint {
    const { rng, shape } = this;
    const m = this.host.maxPhysAddrBits;
    const k = want ? 0.3 : 1;
    if (rng.chance(k * (level === 1 ? shape.notPresent * 0.7 : shape.notPresent))) {
      return rng.chance(0.5) ? 0n : rng.u64() & ~RWX;
    }
    const leaf = want ? level <= want.level : level === 1 || (level === 3 && rng.chance(shape.leaf1G)) || (level === 2 && rng.chance(shape.leaf2M));
    let e: bigint;
    if (leaf) {
      e = want ? randomRights(rng, 0.9, 0.06) : randomRights(rng, 0.66, 0.1, 0.08);
      const type = rng.chance(k * shape.badMemType) ? rng.pick([2, 3, 7]) : rng.pick([6, 6, 6, 0, 1, 4, 5]);
      e |= BigInt(type) << 3n;
      if (rng.chance(0.3)) e |= IPAT;
      if (level > 1) e |= PS;
      else if (rng.chance(0.2)) e |= PS;
      if (rng.chance(0.4)) e |= D;
      const shift = levelShift(level);
      let frame: bigint;
      if (want) frame = want.hpa;
      else if (rng.chance(0.1)) frame = this.frames.random();
      else frame = rng.u64();
      e |= frame & bits(m - 1, shift);
    } else {
      e = rng.chance(k * shape.narrow) ? BigInt(rng.int(8)) : RWX;
      if (rng.chance(0.2)) e |= D;
      e |= this.tablePointer(path, k);
    }
    if (rng.chance(0.75)) e |= UX;
    if (rng.chance(0.4)) e |= A;
    if (rng.chance(0.2)) e |= 1n << 11n;
    if (rng.chance(0.3)) e |= BigInt(rng.int(4096)) << 52n;
    if (rng.chance(k * shape.reserved)) e |= this.reservedBit(level, leaf);
    return e;
  }

  /** One reserved bit of a present entry at `level` (SDM §29.3.2): 51:M, 7:3 (PML5E/PML4E), 6:3 (non-leaf), 29:12 / 20:12 (large leaf). */
  private reservedBit(level: number, leaf: boolean): bigint {
    const { rng } = this;
    const m = this.host.maxPhysAddrBits;
    const options: bigint[] = [];
    if (m < 52) options.push(randomBitIn(rng, 51, m));
    if (level >= 4) options.push(randomBitIn(rng, 7, 3));
    else if (!leaf) options.push(randomBitIn(rng, 6, 3));
    else if (level === 3) options.push(randomBitIn(rng, 29, 12));
    else if (level === 2) options.push(randomBitIn(rng, 20, 12));
    return options.length > 0 ? rng.pick(options) : 0n;
  }

  /** A table pointer: fresh, shared, stray or outside; `k` scales the chances of the last two. */
  private tablePointer(path: bigint[], k: number): bigint {
    const { rng } = this;
    const shape = { ...this.shape, outside: k * this.shape.outside, stray: k * this.shape.stray };
    const x = rng.u32() / 0x1_0000_0000;
    if (x < shape.outside) {
      const f = this.frames.outside();
      if (f >= 0n) return f;
    }
    if (x < shape.outside + shape.stray) {
      const f = this.frames.random();
      this.frames.used.add(f);
      this.tableFrames.add(f);
      return f;
    }
    if (x < shape.outside + shape.stray + shape.shared) return rng.chance(0.5) ? rng.pick(path) : rng.pick(this.tables);
    const t = this.frames.fresh();
    this.tables.push(t);
    this.tableFrames.add(t);
    return t;
  }
}

const SIZES: readonly EptPageSize[] = ["4K", "4K", "4K", "2M", "1G"];
const SIZE_LEVEL: Record<EptPageSize, number> = { "4K": 1, "2M": 2, "1G": 3 };

/** EPT trees made by X86EptBuilder (random leaves and flags), then roughened bit by bit in memory. */
class BuilderEpt extends EptSide {
  readonly levels: 4 | 5;
  readonly eptp: bigint;
  readonly root: bigint;
  readonly flavour = "builder";
  private readonly b: X86EptBuilder;
  private readonly tableBase: bigint;

  constructor(rng: Rng, host: HostSpace, frames: HostFrames, store: HostWords) {
    super(rng, host, frames, store);
    const pages = 64n;
    this.tableBase = host.ramBase + BigInt(rng.int(Number(host.ramBytes / PAGE - pages))) * PAGE;
    for (let i = 0n; i < pages; i++) {
      frames.used.add(this.tableBase + i * PAGE);
      this.tableFrames.add(this.tableBase + i * PAGE);
    }
    this.levels = rng.chance(0.5) ? 4 : 5;
    this.b = new X86EptBuilder(store.mem, {
      levels: this.levels, tableBase: this.tableBase, tableLimit: this.tableBase + pages * PAGE,
      tableFlags: rng.chance(0.9) ? rng.pick([RWX, RWX | UX]) : BigInt(1 + rng.int(7)) | (rng.chance(0.5) ? UX : 0n),
      accessedDirty: rng.chance(0.5), memType: rng.chance(0.5) ? 6 : 0,
    });
    this.root = this.b.root;
    this.eptp = this.b.eptp;
  }

  private flags(table: boolean): EptLeafFlags {
    const { rng } = this;
    const rights = table ? randomRights(rng, 0.9, 0.06) : randomRights(rng, 0.66, 0.1, 0.08);
    return {
      read: (rights & R) !== 0n, write: (rights & W) !== 0n, exec: (rights & X) !== 0n, userExec: rng.chance(0.7),
      memType: rng.chance(0.02) ? rng.pick([2, 3, 7]) : rng.pick([6, 6, 0, 1, 4, 5]), ipat: rng.chance(0.3),
      accessed: rng.chance(0.4), dirty: rng.chance(0.4),
    };
  }

  /** Maps the page of `size` holding `gpa` to the one holding `hpa`, unless its entry is taken or a large page is in the way. */
  private map(gpa: bigint, hpa: bigint, size: EptPageSize, table: boolean): void {
    const mask = (1n << BigInt(levelShift(SIZE_LEVEL[size]))) - 1n;
    const reach = bits(this.levels === 5 ? 56 : 47, 0);
    try {
      const at = this.b.entryAt(gpa & reach, SIZE_LEVEL[size]);
      if (at !== undefined && this.store.mem.read64(at) !== 0n) return;
      this.b.map(gpa & reach & ~mask, hpa & bits(this.host.maxPhysAddrBits - 1, 0) & ~mask, size, this.flags(table));
      if (table) this.regions.push({ gpa: gpa & reach & ~mask, hpa: hpa & ~mask, size: mask + 1n });
    } catch {
      // a large page is in the way, or the table area is full: the gpa keeps the mapping it has
    }
  }

  mapTable(): bigint {
    const { gpa, want } = this.placeTable();
    const reach = bits(this.levels === 5 ? 56 : 47, 0);
    if (want) this.map(gpa, want.hpa, (["4K", "2M", "1G"] as const)[want.level - 1]!, true);
    return gpa & reach;
  }

  mapData(gpa: bigint): void {
    if (!this.rng.chance(0.9)) return;
    this.map(gpa, this.rng.chance(0.1) ? this.frames.random() : this.rng.u64(), this.rng.pick(SIZES), false);
  }

  /** Collects the builder's words and flips random rights, type, size, A/D, ignored and reserved bits of some. */
  finish(): void {
    const { rng, store } = this;
    const m = this.host.maxPhysAddrBits;
    const flips = [R, W, X, UX, 1n << 3n, 1n << 4n, 1n << 5n, IPAT, PS, A, D, 1n << 11n, bits(62, 52)];
    for (let t = this.tableBase; t < this.tableBase + BigInt(this.b.tablesAllocated) * PAGE; t += PAGE) {
      const page = store.mem.read(t, 4096);
      const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
      for (let i = 0; i < 512; i++) {
        const hpa = t + BigInt(i) * 8n;
        let v = dv.getBigUint64(i * 8, true);
        if (v === 0n) continue;
        if (rng.chance(0.04)) {
          v ^= rng.pick(flips);
          if (rng.chance(0.2) && m < 52) v |= randomBitIn(rng, 51, m);
          if (v === 0n) storeWord(store.mem, hpa, 0n);
        }
        store.write(hpa, v);
      }
    }
  }
}

/** Guest paging structures whose tables sit at guest-physical addresses translated by `ept`. */
class GuestBehindEpt extends TreeWriter {
  /** Every guest-physical address used as a guest table. */
  readonly tableGpas: bigint[] = [];
  /** Guest-physical addresses of data pages laid out in EPT (targets with guest paging off). */
  readonly dataGpas: bigint[] = [];

  constructor(rng: Rng, space: TreeSpace, mem: GuestMemory, shape: TreeShape, readonly ept: EptSide, readonly store: HostWords) {
    super(rng, space, mem, shape);
  }

  reachable(gpa: bigint): boolean {
    return this.ept.resolve(gpa) !== undefined;
  }

  write(gpa: bigint, value: bigint): void {
    const h = this.ept.resolve(gpa);
    if (h !== undefined) this.store.write(h, value);
  }

  isDecided(gpa: bigint): boolean {
    const h = this.ept.resolve(gpa);
    return h === undefined || this.store.decided.has(h);
  }

  value(gpa: bigint): bigint {
    const h = this.ept.resolve(gpa);
    return h === undefined ? 0n : this.store.value(h);
  }

  /** A stray guest table: a random page of a region EPT maps to RAM, or a random gpa given a random EPT path. */
  randomRamFrame(): bigint {
    const { rng, ept } = this;
    let gpa: bigint;
    if (ept.regions.length > 0 && rng.chance(0.5)) {
      const r = rng.pick(ept.regions);
      gpa = r.gpa + BigInt(rng.int(Number(r.size / PAGE))) * PAGE;
    } else {
      gpa = ept.randomGpa() & ~(PAGE - 1n);
      ept.mapData(gpa);
    }
    this.tableGpas.push(gpa);
    return gpa;
  }

  allocTable(): bigint {
    const gpa = this.ept.mapTable();
    this.ept.anchors.push(gpa);
    this.tables.push(gpa);
    this.tableGpas.push(gpa);
    return gpa;
  }

  /** A guest table EPT does not map to RAM (usually): a random gpa with a random EPT path. */
  outsideFrame(): bigint {
    const gpa = this.rng.u64() & bits(this.space.maxPhysAddrBits - 1, 12);
    this.ept.mapData(gpa);
    this.tableGpas.push(gpa);
    return gpa;
  }

  /** The generator's entry; a leaf mostly gets a frame near earlier gpas, and mostly an EPT path for it. */
  newEntry(level: number, path: bigint[]): bigint {
    let e = super.newEntry(level, path);
    const leaf = (e & GP) !== 0n && (level === 1 || ((level === 2 || level === 3) && (e & GPS) !== 0n));
    if (!leaf) return e;
    const frameBits = bits(this.space.maxPhysAddrBits - 1, levelShift(level));
    if (this.rng.chance(0.6)) e = (e & ~frameBits) | (this.ept.randomGpa() & frameBits);
    if (this.rng.chance(0.7)) this.mapData(e & frameBits);
    return e;
  }

  mapData(gpa: bigint): void {
    this.ept.mapData(gpa);
    this.ept.anchors.push(gpa);
    this.dataGpas.push(gpa);
  }

  /** The gpa the guest walk of `va` ends at, following address bits only (through EPT), if it gets there. */
  leafGpa(root: bigint, va: bigint): bigint | undefined {
    const m = this.space.maxPhysAddrBits;
    let table = root;
    for (let level: number = this.space.levels; level >= 1; level--) {
      const e = this.value(table + ((va >> BigInt(levelShift(level))) & 511n) * 8n);
      if ((e & GP) === 0n || !this.reachable(table)) return undefined;
      if (level === 1 || ((level === 2 || level === 3) && (e & GPS) !== 0n)) {
        const shift = levelShift(level);
        return (e & bits(m - 1, shift)) | (va & bits(shift - 1, 0));
      }
      table = e & bits(m - 1, 12);
    }
    return undefined;
  }
}

/** A guest tree behind an EPT tree, as written into host memory. */
export interface EptTree {
  readonly host: HostSpace;
  /** The EPTP (always one VM entry accepts; its root may lie outside RAM). */
  readonly eptp: bigint;
  readonly eptLevels: 4 | 5;
  readonly eptAd: boolean;
  /** The guest tree as random-tables.ts describes one (root and targets; its `words` are empty: see `words`). */
  readonly guest: RandomTree;
  /** Every non-zero word written, guest and EPT, host-physical address → value. All other RAM words are zero. */
  readonly words: Map<bigint, bigint>;
  /** Guest-physical addresses with an EPT path laid out (accesses with guest paging off). */
  readonly gpaTargets: bigint[];
  /** How the EPT tree was made. */
  readonly flavour: "random" | "builder";
}

/**
 * A random two-dimensional tree in `mem`: an EPT tree (random or builder-made, 4 or 5 levels,
 * EPTP A/D on or off) and a guest tree of `guestLevels` levels whose tables EPT maps to host
 * frames. Trees where a guest table would share a host frame with an EPT table are redrawn (a
 * guest A/D write there would change an EPT entry behind a TLB's back, which the SDM leaves to
 * software: such a tree has no single right answer for a warm TLB).
 */
export function randomEptTree(rng: Rng, host: HostSpace, mem: GuestMemory, guestLevels: 4 | 5): EptTree {
  for (;;) {
    const t = tryEptTree(rng, host, mem, guestLevels);
    if (t.ok) return t.tree;
    clearWords(mem, t.words);
  }
}

/** Writes zero over every word of `words` (so the next tree starts from zeroed RAM). */
export function clearWords(mem: GuestMemory, words: Iterable<bigint> | Map<bigint, bigint>): void {
  for (const k of words instanceof Map ? words.keys() : words) mem.write64(k, 0n);
}

function tryEptTree(rng: Rng, host: HostSpace, mem: GuestMemory, guestLevels: 4 | 5):
  { ok: true; tree: EptTree } | { ok: false; words: Map<bigint, bigint> } {
  const frames = new HostFrames(rng, host);
  const store = new HostWords(mem);
  const ept: EptSide = rng.chance(0.2) ? new BuilderEpt(rng, host, frames, store) : new RandomEpt(rng, host, frames, store, DEFAULT_EPT_SHAPE);
  const space: TreeSpace = { levels: guestLevels, maxPhysAddrBits: host.maxPhysAddrBits, ramBase: 0n, ramBytes: 1n << BigInt(host.maxPhysAddrBits) };
  const g = new GuestBehindEpt(rng, space, mem, GUEST_SHAPE_2D, ept, store);
  const root = rng.chance(0.01) ? g.outsideFrame() : g.allocTable();
  const targets: bigint[] = [];
  if (rng.chance(0.2) && g.reachable(root)) {
    targets.push(...selfMap(g, root));
    g.tableGpas.push(root);
  }
  const n = 3 + rng.int(10);
  for (let i = 0; i < n; i++) {
    const va = nextTarget(rng, targets, guestLevels);
    targets.push(va);
    g.layOut(root, va);
    const gpa = g.leafGpa(root, va);
    if (gpa !== undefined && rng.chance(0.9)) g.mapData(gpa & ~(PAGE - 1n));
  }
  for (let i = 0; i < 3; i++) g.mapData(rng.u64() & bits(host.maxPhysAddrBits - 1, 12));
  ept.finish();

  const eptFrames = ept.tableFrames;
  for (const gpa of g.tableGpas) {
    const h = ept.resolve(gpa);
    if (h !== undefined && eptFrames.has(h & ~(PAGE - 1n))) return { ok: false, words: store.words };
  }
  // A guest table written into a frame the EPT builder later allocated (zeroing
  // it) is gone from memory while the record still has it; the re-resolution
  // above misses it when finish() roughened the EPT path. Memory and record must agree.
  for (const [h, v] of store.words) if (mem.read64(h) !== v) return { ok: false, words: store.words };
  const guest: RandomTree = { space, root, words: new Map(), targets, flavour: "random" };
  return {
    ok: true,
    tree: {
      host, eptp: ept.eptp, eptLevels: ept.levels, eptAd: (ept.eptp & EPTP_AD) !== 0n, guest, words: store.words,
      gpaTargets: g.dataGpas, flavour: ept.flavour,
    },
  };
}

/** A guest-physical address to access with guest paging off: mostly in a laid-out data page, else random. */
export function randomAccessGpa(rng: Rng, tree: EptTree): bigint {
  const x = rng.u32() / 0x1_0000_0000;
  if (x < 0.8 && tree.gpaTargets.length > 0) return rng.pick(tree.gpaTargets) | BigInt(rng.int(4096));
  if (x < 0.95) return rng.u64() & bits(tree.host.maxPhysAddrBits - 1, 0);
  return rng.u64();
}

/** The EPT entries the walk of `gpa` reads (address bits only, no checks), one line per level. */
export function describeEptWalk(mem: RefMemory, tree: EptTree, gpa: bigint, indent = "      "): string {
  const m = tree.host.maxPhysAddrBits;
  const lines: string[] = [];
  let table = tree.eptp & bits(m - 1, 12);
  for (let level: number = tree.eptLevels; level >= 1; level--) {
    const hpa = table + eptIndex(gpa, level) * 8n;
    const e = mem.read64(hpa);
    lines.push(`${indent}EPT L${level} [${hx(hpa)}] = ${e === undefined ? "outside RAM" : hx(e)}`);
    if (e === undefined || (e & PRESENT) === 0n || eptLeaf(level, e)) break;
    table = e & bits(m - 1, 12);
  }
  return lines.join("\n");
}

/** The EPT entries the walk of `gpa` reads (address bits only, no checks), from the root down. */
export function eptPath(mem: RefMemory, tree: EptTree, gpa: bigint): { level: number; hpa: bigint; entry: bigint }[] {
  const m = tree.host.maxPhysAddrBits;
  const out: { level: number; hpa: bigint; entry: bigint }[] = [];
  let table = tree.eptp & bits(m - 1, 12);
  for (let level: number = tree.eptLevels; level >= 1; level--) {
    const hpa = table + eptIndex(gpa, level) * 8n;
    const entry = mem.read64(hpa);
    if (entry === undefined) break;
    out.push({ level, hpa, entry });
    if ((entry & PRESENT) === 0n || eptLeaf(level, entry)) break;
    table = entry & bits(m - 1, 12);
  }
  return out;
}

/** Where a guest-physical address lands following EPT address bits only, if in RAM (for descriptions). */
function resolveIn(mem: RefMemory, tree: EptTree, gpa: bigint): bigint | undefined {
  const m = tree.host.maxPhysAddrBits;
  let table = tree.eptp & bits(m - 1, 12);
  for (let level: number = tree.eptLevels; level >= 1; level--) {
    const e = mem.read64(table + eptIndex(gpa, level) * 8n);
    if (e === undefined || (e & PRESENT) === 0n) return undefined;
    if (eptLeaf(level, e)) {
      const shift = levelShift(level);
      return (e & bits(m - 1, shift)) | (gpa & bits(shift - 1, 0));
    }
    table = e & bits(m - 1, 12);
  }
  return undefined;
}

/**
 * The two-dimensional walk of `va` as memory holds it (address bits only, no checks): per guest
 * level, the EPT entries translating the guest entry's gpa, then the guest entry; then the EPT
 * walk of the final gpa. For failure messages.
 */
export function describeWalk2d(mem: RefMemory, tree: EptTree, cr3: bigint, la57: boolean, paging: boolean, va: bigint): string {
  const m = tree.host.maxPhysAddrBits;
  const lines = [`    EPTP ${hx(tree.eptp)} (${tree.eptLevels}-level, A/D ${tree.eptAd ? "on" : "off"}, ${tree.flavour} tree)`];
  if (!paging) {
    lines.push(`    guest paging off: gpa ${hx(va)}`, describeEptWalk(mem, tree, va));
    return lines.join("\n");
  }
  let table = cr3 & bits(m - 1, 12);
  for (let level = la57 ? 5 : 4; level >= 1; level--) {
    const gpa = table + ((va >> BigInt(levelShift(level))) & 511n) * 8n;
    lines.push(`    guest L${level} entry at gpa ${hx(gpa)}:`, describeEptWalk(mem, tree, gpa));
    const h = resolveIn(mem, tree, gpa);
    const e = h === undefined ? undefined : mem.read64(h);
    lines.push(`      guest L${level} [hpa ${h === undefined ? "none" : hx(h)}] = ${e === undefined ? "unreadable" : hx(e)}`);
    if (e === undefined || (e & GP) === 0n) break;
    if (level === 1 || ((level === 2 || level === 3) && (e & GPS) !== 0n)) {
      const shift = levelShift(level);
      const data = (e & bits(m - 1, shift)) | (va & bits(shift - 1, 0));
      lines.push(`    final gpa ${hx(data)}:`, describeEptWalk(mem, tree, data));
      break;
    }
    table = e & bits(m - 1, 12);
  }
  return lines.join("\n");
}
