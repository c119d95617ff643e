// Random x86-64 paging structures for differential tests (Intel SDM Vol.3A
// §4.5 Tables 4-15…4-20): every level gets random attribute bits, ignored
// bits, protection keys and XD; some entries get a reserved bit; trees mix
// 4 KiB, 2 MiB and 1 GiB leaves, self-references, shared subtrees and table
// pointers outside guest RAM. Entries are written word by word into guest
// memory and recorded, so a test can mirror them into a reference memory and
// compare every word afterwards.

import { X86PageTableBuilder, type GuestMemory, type X86Control, type X86LeafFlags, type X86PageSize } from "../../src/index.js";
import type { RefMemory, RefX86State } from "../../src/ref/x86-walk.js";
import type { Rng } from "./rng.js";

const P = 1n << 0n;
const PS = 1n << 7n;
const XD = 1n << 63n;
const PAGE = 4096n;

/** Bits hi..lo inclusive; 0n when hi < lo. */
export function bits(hi: number, lo: number): bigint {
  return hi < lo ? 0n : ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

/** `0x…` hex of a bigint. */
export const hx = (v: bigint): string => "0x" + v.toString(16);

/** Where a random tree lives: paging depth, MAXPHYADDR and the RAM memslot. */
export interface TreeSpace {
  levels: 4 | 5;
  maxPhysAddrBits: number;
  ramBase: bigint;
  ramBytes: bigint;
}

/** A generated set of paging structures, as written into guest memory. */
export interface RandomTree {
  readonly space: TreeSpace;
  /** gpa of the root table (CR3 address bits); rarely outside RAM. */
  readonly root: bigint;
  /** Every non-zero word written, gpa → value. All other RAM words are zero. */
  readonly words: Map<bigint, bigint>;
  /** Linear addresses whose walks were laid out while building (canonical for `space.levels`). */
  readonly targets: bigint[];
  /** How the tree was made. */
  readonly flavour: "random" | "builder";
}

/**
 * Sparse copy of guest RAM [base, base + size) for the reference walker: reads
 * outside it are undefined (abort), as `refMemoryOf` reports for guest memory.
 */
export class RamMirror implements RefMemory {
  readonly words = new Map<bigint, bigint>();
  constructor(readonly base: bigint, readonly size: bigint, from?: Map<bigint, bigint>) {
    if (from) for (const [g, v] of from) this.words.set(g, v);
  }
  private inRam(gpa: bigint): boolean {
    return gpa >= this.base && gpa + 8n <= this.base + this.size;
  }
  /** When set, every read64 appends its gpa here. */
  reads?: bigint[];
  read64(gpa: bigint): bigint | undefined {
    this.reads?.push(gpa);
    return this.inRam(gpa) ? (this.words.get(gpa) ?? 0n) : undefined;
  }
  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    if (!this.inRam(gpa)) throw new Error(`reference walker wrote outside RAM at ${hx(gpa)}`);
    if ((this.words.get(gpa) ?? 0n) !== expected) return false;
    this.words.set(gpa, BigInt.asUintN(64, desired));
    return true;
  }
}

/** Stores one table word (kept as a seam: the fuzzer's only store into guest RAM). */
export function storeWord(mem: GuestMemory, gpa: bigint, value: bigint): void {
  mem.write64(gpa, value);
}

function inRam(space: TreeSpace, gpa: bigint): boolean {
  return gpa >= space.ramBase && gpa < space.ramBase + space.ramBytes;
}

function randomBitIn(rng: Rng, hi: number, lo: number): bigint {
  return 1n << BigInt(lo + rng.int(hi - lo + 1));
}

/** Random attribute, ignored and key bits of a present entry (P set, PS clear, no address). */
function randomAttributes(rng: Rng, leaf: boolean, level: number): bigint {
  let e = P;
  if (rng.chance(leaf ? 0.8 : 0.9)) e |= 1n << 1n;
  if (rng.chance(leaf ? 0.75 : 0.9)) e |= 1n << 2n;
  if (rng.chance(0.3)) e |= 1n << 3n;
  if (rng.chance(0.3)) e |= 1n << 4n;
  if (rng.chance(0.5)) e |= 1n << 5n;
  if (rng.chance(0.5)) e |= 1n << 6n;
  if (rng.chance(0.3)) e |= 1n << 8n;
  if (rng.chance(0.4)) e |= BigInt(rng.int(8)) << 9n;
  if (rng.chance(0.4)) e |= BigInt(rng.int(128)) << 52n;
  if (rng.chance(0.6)) e |= BigInt(rng.int(16)) << 59n;
  if (rng.chance(0.08)) e |= XD;
  if (leaf && level === 1 && rng.chance(0.3)) e |= PS;
  if (leaf && level > 1 && rng.chance(0.3)) e |= 1n << 12n;
  return e;
}

/**
 * One reserved bit that applies to a present entry at `level` (SDM §4.5):
 * 51:M anywhere, PS in a PML5E/PML4E, 20:13 in a 2 MiB leaf, 29:13 in a
 * 1 GiB leaf. Bit 63 is covered separately (XD with EFER.NXE = 0).
 */
function randomReservedBit(rng: Rng, level: number, largeLeaf: boolean, m: number): bigint {
  const options: bigint[] = [];
  if (m < 52) options.push(randomBitIn(rng, 51, m));
  if (level >= 4) options.push(PS);
  if (largeLeaf && level === 2) options.push(randomBitIn(rng, 20, 13));
  if (largeLeaf && level === 3) options.push(randomBitIn(rng, 29, 13));
  return options.length ? rng.pick(options) : 0n;
}

/** A not-present entry: zero, or P = 0 with arbitrary other bits (all ignored). */
function notPresentEntry(rng: Rng): bigint {
  return rng.chance(0.5) ? 0n : rng.u64() & ~P;
}

/** Knobs of the random generator; the defaults give a mix of deep successes and faults at every level. */
export interface TreeShape {
  /** Chance that a new entry is not present. */
  notPresent: number;
  /** Chance that a new PDPTE / PDE is a 1 GiB / 2 MiB leaf. */
  leaf1G: number;
  leaf2M: number;
  /** Chance that a new present entry carries one reserved bit. */
  reserved: number;
  /** Chance that a new table pointer targets an existing table (itself, an ancestor, any other). */
  shared: number;
  /** Chance that a new table pointer lies outside RAM. */
  outside: number;
  /** Chance that a new table pointer targets a random (usually empty) RAM frame. */
  stray: number;
}

export const DEFAULT_SHAPE: TreeShape = {
  notPresent: 0.05, leaf1G: 0.15, leaf2M: 0.25, reserved: 0.025, shared: 0.1, outside: 0.025, stray: 0.02,
};

/** Writes a random tree entry by entry; subclasses place the tables elsewhere (e.g. behind EPT). */
export class TreeWriter {
  readonly words = new Map<bigint, bigint>();
  readonly tables: bigint[] = [];
  private readonly tableSet = new Set<bigint>();
  private readonly decided = new Set<bigint>();
  private readonly frames: bigint;

  constructor(readonly rng: Rng, readonly space: TreeSpace, readonly mem: GuestMemory, readonly shape: TreeShape) {
    this.frames = space.ramBytes / PAGE;
  }

  write(gpa: bigint, value: bigint): void {
    this.decided.add(gpa);
    if (value === 0n) return;
    this.words.set(gpa, value);
    storeWord(this.mem, gpa, value);
  }

  isDecided(gpa: bigint): boolean {
    return this.decided.has(gpa);
  }

  value(gpa: bigint): bigint {
    return this.words.get(gpa) ?? 0n;
  }

  randomRamFrame(): bigint {
    return this.space.ramBase + BigInt(Math.floor(this.rng.u32() / 0x1_0000_0000 * Number(this.frames))) * PAGE;
  }

  allocTable(): bigint {
    for (;;) {
      const edge = this.rng.chance(0.03);
      const t = edge ? this.space.ramBase + (this.rng.chance(0.5) ? 0n : this.space.ramBytes - PAGE) : this.randomRamFrame();
      if (this.tableSet.has(t)) continue;
      this.tableSet.add(t);
      this.tables.push(t);
      return t;
    }
  }

  /** A page-aligned gpa below 2^M outside RAM (below the memslot or above it). */
  outsideFrame(): bigint {
    const { ramBase, ramBytes, maxPhysAddrBits: m } = this.space;
    const top = 1n << BigInt(m);
    const end = ramBase + ramBytes;
    const below = ramBase > 0n && (end >= top || this.rng.chance(0.5));
    if (below) return (this.rng.u64() % (ramBase / PAGE)) * PAGE;
    if (end >= top) return -1n;
    if (this.rng.chance(0.3)) return end + BigInt(this.rng.int(4)) * PAGE;
    return end + (this.rng.u64() % ((top - end) / PAGE)) * PAGE;
  }

  /** A new entry for a table at `level`, reached through `path` (the tables from the root down to it). */
  newEntry(level: number, path: bigint[]): bigint {
    const { rng, shape, space } = this;
    const m = space.maxPhysAddrBits;
    if (rng.chance(level === 1 ? shape.notPresent * 0.7 : shape.notPresent)) return notPresentEntry(rng);
    const leaf = level === 1 || (level === 3 && rng.chance(shape.leaf1G)) || (level === 2 && rng.chance(shape.leaf2M));
    let e = randomAttributes(rng, leaf, level);
    if (leaf) {
      const shift = 12 + 9 * (level - 1);
      e |= rng.u64() & bits(m - 1, shift);
      if (level > 1) e |= PS;
    } else {
      e |= this.tablePointer(path);
    }
    if (rng.chance(shape.reserved)) e |= randomReservedBit(rng, level, leaf && level > 1, m);
    return e;
  }

  tablePointer(path: bigint[]): bigint {
    const { rng, shape } = this;
    const r = rng.u32() / 0x1_0000_0000;
    if (r < shape.outside) {
      const f = this.outsideFrame();
      if (f >= 0n) return f;
    }
    if (r < shape.outside + shape.stray) return this.randomRamFrame();
    if (r < shape.outside + shape.stray + shape.shared && this.tables.length > 0) {
      return rng.chance(0.5) ? rng.pick(path) : rng.pick(this.tables);
    }
    return this.allocTable();
  }

  /** Decides the PTEs next to `gpa` too, so accesses to neighbouring pages find entries. */
  fillNeighbours(gpa: bigint, path: bigint[]): void {
    const table = gpa & ~(PAGE - 1n);
    for (let d = -4n; d <= 4n; d++) {
      const g = gpa + d * 8n;
      if (g < table || g >= table + PAGE || this.isDecided(g) || !this.rng.chance(0.7)) continue;
      this.write(g, this.newEntry(1, path));
    }
  }

  /** Whether entries of a table at `gpa` can be written and read by a walk (it lies in RAM). */
  reachable(gpa: bigint): boolean {
    return inRam(this.space, gpa);
  }

  /** Lays out (or follows) the walk of `va` from `root`, creating entries where none were decided. */
  layOut(root: bigint, va: bigint): void {
    const { space } = this;
    const addrMask = bits(space.maxPhysAddrBits - 1, 12);
    const path: bigint[] = [];
    let table = root;
    for (let level: number = space.levels; level >= 1; level--) {
      if (!this.reachable(table)) return;
      path.push(table);
      const gpa = table + ((va >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n;
      if (!this.isDecided(gpa)) this.write(gpa, this.newEntry(level, path));
      if (level === 1) this.fillNeighbours(gpa, path);
      const e = this.value(gpa);
      if ((e & P) === 0n || level === 1 || ((level === 2 || level === 3) && (e & PS) !== 0n)) return;
      table = e & addrMask;
    }
  }
}

function canonicalize(va: bigint, levels: 4 | 5): bigint {
  return BigInt.asUintN(64, BigInt.asIntN(levels === 5 ? 57 : 48, va));
}

/** A random canonical linear address for `levels`-level paging. */
export function randomCanonicalVa(rng: Rng, levels: 4 | 5): bigint {
  return canonicalize(rng.u64(), levels);
}

/** A target sharing a prefix of 1..levels indices with an earlier one, or a fresh random one. */
export function nextTarget(rng: Rng, targets: bigint[], levels: 4 | 5): bigint {
  if (targets.length === 0 || rng.chance(0.35)) return randomCanonicalVa(rng, levels);
  const base = rng.pick(targets);
  const keep = 1 + rng.int(levels);
  const lowBits = 12 + 9 * (levels - keep);
  return canonicalize((base & ~bits(lowBits - 1, 0)) | (rng.u64() & bits(lowBits - 1, 0)), levels);
}

/**
 * A recursive slot (the self-map of Windows and of Linux's early x86-64 code): root[i] points
 * at the root itself. Returns addresses whose top 1..levels indices are all i, so one word is
 * used as an entry of several levels in a single walk, finally possibly as the leaf.
 */
export function selfMap(w: TreeWriter, root: bigint): bigint[] {
  const { rng, space } = w;
  const i = BigInt(rng.int(512));
  const gpa = root + i * 8n;
  if (!w.isDecided(gpa)) w.write(gpa, root | (randomAttributes(rng, false, space.levels) & ~PS));
  const out: bigint[] = [];
  for (let k = 1; k <= space.levels; k++) {
    let va = rng.u64();
    for (let level: number = space.levels; level > space.levels - k; level--) {
      const shift = BigInt(12 + 9 * (level - 1));
      va = (va & ~(511n << shift)) | (i << shift);
    }
    out.push(canonicalize(va, space.levels));
  }
  return out;
}

/**
 * Random paging structures written word by word into `mem`. Targets share
 * prefixes with earlier targets so walks branch inside common tables.
 */
export function randomTree(rng: Rng, space: TreeSpace, mem: GuestMemory, shape: TreeShape = DEFAULT_SHAPE): RandomTree {
  const w = new TreeWriter(rng, space, mem, shape);
  let root: bigint;
  if (rng.chance(0.01)) {
    const f = w.outsideFrame();
    root = f >= 0n ? f : w.allocTable();
  } else {
    root = w.allocTable();
  }
  const targets: bigint[] = [];
  if (rng.chance(0.2) && inRam(space, root)) targets.push(...selfMap(w, root));
  const n = 3 + rng.int(10);
  for (let i = 0; i < n; i++) {
    const va = nextTarget(rng, targets, space.levels);
    targets.push(va);
    w.layOut(root, va);
  }
  return { space, root, words: w.words, targets, flavour: "random" };
}

const SIZES: readonly X86PageSize[] = ["4K", "2M", "1G"];
const SIZE_BYTES: Record<X86PageSize, bigint> = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n };

/**
 * Paging structures made by X86PageTableBuilder (random leaves of every size
 * with random X86LeafFlags), then roughened: random words of its tables get
 * random attribute, ignored or reserved bits flipped directly in memory.
 */
export function builderTree(rng: Rng, space: TreeSpace, mem: GuestMemory): RandomTree {
  const m = space.maxPhysAddrBits;
  const tablePages = 64n;
  const frames = space.ramBytes / PAGE - tablePages;
  const tableBase = space.ramBase + (rng.u64() % frames) * PAGE;
  const b = new X86PageTableBuilder(mem, { levels: space.levels, tableBase, tableLimit: tableBase + tablePages * PAGE });
  const targets: bigint[] = [];
  const n = 2 + rng.int(6);
  for (let i = 0; i < n; i++) {
    const size = rng.pick(SIZES);
    const va = nextTarget(rng, targets, space.levels) & ~(SIZE_BYTES[size] - 1n);
    const pa = rng.u64() & bits(m - 1, 0) & ~(SIZE_BYTES[size] - 1n);
    const flags: X86LeafFlags = {
      write: rng.chance(0.8), user: rng.chance(0.7), nx: rng.chance(0.2), global: rng.chance(0.3),
      pwt: rng.chance(0.2), pcd: rng.chance(0.2), pat: rng.chance(0.2), accessed: rng.chance(0.5),
      dirty: rng.chance(0.5), pkey: rng.int(16),
    };
    try {
      b.mapRange(va, pa, 1 + rng.int(3), size, flags);
      targets.push(va);
    } catch {
      // a large page already covers part of this range: keep the tree as it is
    }
  }
  const words = new Map<bigint, bigint>();
  for (let t = tableBase; t < tableBase + BigInt(b.tablesAllocated) * PAGE; t += PAGE) {
    const page = mem.read(t, 4096);
    const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
    for (let i = 0; i < 512; i++) {
      const v = dv.getBigUint64(i * 8, true);
      if (v !== 0n) words.set(t + BigInt(i) * 8n, v);
    }
  }
  const flips = [1n << 1n, 1n << 2n, 1n << 5n, 1n << 6n, 1n << 8n, 1n << 63n, bits(58, 52), bits(11, 9)];
  for (const [g, v] of [...words]) {
    if (!rng.chance(0.15)) continue;
    let nv = v ^ rng.pick(flips);
    if (rng.chance(0.3)) nv |= m < 52 ? randomBitIn(rng, 51, m) : PS;
    if (rng.chance(0.05)) nv &= ~P;
    storeWord(mem, g, nv);
    if (nv === 0n) words.delete(g); else words.set(g, nv);
  }
  return { space, root: b.root, words, targets, flavour: "builder" };
}

/**
 * A linear address to translate: mostly inside a target's page or its larger
 * neighbourhood (so walks go deep), else random canonical, non-canonical in
 * one high bit, or fully random.
 */
export function randomAccessVa(rng: Rng, tree: RandomTree, la57: boolean): bigint {
  const levels = tree.space.levels;
  const r = rng.u32() / 0x1_0000_0000;
  if (r < 0.81 && tree.targets.length > 0) {
    const t = rng.pick(tree.targets);
    const near = rng.u32() / 0x1_0000_0000;
    if (near < 0.7) return (t & ~0xfffn) | BigInt(rng.int(4096));
    if (near < 0.9) return BigInt.asUintN(64, (t & ~0xfffn) + BigInt(rng.int(9) - 4) * PAGE + BigInt(rng.int(4096)));
    const low = rng.pick([21, 30]);
    return (t & ~bits(low - 1, 0)) | (rng.u64() & bits(low - 1, 0));
  }
  if (r < 0.87) return randomCanonicalVa(rng, levels);
  if (r < 0.95) {
    const t = tree.targets.length > 0 && rng.chance(0.7) ? rng.pick(tree.targets) : randomCanonicalVa(rng, levels);
    const top = la57 ? 56 : 47;
    return t ^ (1n << BigInt(top + 1 + rng.int(63 - top)));
  }
  return rng.u64();
}

/** Control registers and PKRU with every MMU-relevant bit random; CR3 points at `root` with random low bits. */
export function randomControl(rng: Rng, root: bigint, levels: 4 | 5): X86Control {
  const cr0 = 1n | (rng.chance(0.5) ? 1n << 16n : 0n) | (rng.chance(0.985) ? 1n << 31n : 0n);
  const la57 = (levels === 5) !== rng.chance(0.03);
  const cr4 = (1n << 5n)
    | (la57 ? 1n << 12n : 0n)
    | (rng.chance(0.5) ? 1n << 7n : 0n)
    | (rng.chance(0.3) ? 1n << 17n : 0n)
    | (rng.chance(0.4) ? 1n << 20n : 0n)
    | (rng.chance(0.4) ? 1n << 21n : 0n)
    | (rng.chance(0.5) ? 1n << 22n : 0n);
  const efer = (1n << 8n) | (rng.chance(0.75) ? 1n << 11n : 0n);
  const rflags = 2n | (rng.chance(0.4) ? 1n << 18n : 0n);
  const pkru = rng.chance(0.3) ? 0n : BigInt((rng.u32() & rng.u32()) >>> 0);
  const cr3 = root | BigInt(rng.int(4096));
  return { cr0, cr3, cr4, efer, pkru, rflags };
}

/** The reference walker's state for control `c` (EFER.LMA derived as the vCPU derives it). */
export function refState(c: X86Control, maxPhysAddrBits: number): RefX86State {
  const lma = (c.efer & (1n << 8n)) !== 0n && (c.cr0 & (1n << 31n)) !== 0n;
  return { ...c, efer: lma ? c.efer | (1n << 10n) : c.efer & ~(1n << 10n), maxPhysAddrBits };
}

/** The entries a walk of `va` reads from `mem` (architectural interpretation, no checks), one line per level. */
export function describeWalk(mem: RefMemory, s: RefX86State, va: bigint): string {
  const levels = (s.cr4 & (1n << 12n)) !== 0n ? 5 : 4;
  const addrMask = bits(s.maxPhysAddrBits - 1, 12);
  const lines: string[] = [];
  let table = s.cr3 & addrMask;
  for (let level = levels; level >= 1; level--) {
    const gpa = table + ((va >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n;
    const e = mem.read64(gpa);
    lines.push(`    L${level} [${hx(gpa)}] = ${e === undefined ? "outside RAM" : hx(e)}`);
    if (e === undefined || (e & P) === 0n || level === 1 || ((level === 2 || level === 3) && (e & PS) !== 0n)) break;
    table = e & addrMask;
  }
  return lines.join("\n");
}
