/**
 * Random VMX sequences: after every step, every translation the vCPU returns
 * is one the architecture allows, under several VPIDs, PCIDs and EPT trees.
 * Intel SDM Vol.3C §29.4 "Caching Translation Information" (§28.3 in older
 * editions): §29.4.1 linear, guest-physical and combined mappings and their
 * tags, §29.4.2 which of them a translation may use, §29.4.3.1 what INVLPG,
 * INVPCID and MOV CR3 invalidate inside a VPID, and the INVEPT and INVVPID
 * instruction pages of Vol.3C chapter 31 (their VMfail conditions). Beneath
 * them Vol.3A §4.10 as in ./tlb-semantics.test.ts.
 *
 * The model. Linear mappings (no EPT; here VPID 0, root operation) are tagged
 * (VPID, PCID or global); combined mappings (EPT on) (VPID, PCID or global,
 * EP4TA = EPTP bits 51:12); guest-physical mappings (EP4TA). A translation may
 * answer with
 *  - a legally cached linear or combined mapping of its tags that no covering
 *    invalidation has removed and whose rights grant the access, or
 *  - a walk, where under EPT each guest-physical access (every guest
 *    paging-structure load, and the final gpa) is translated either by the
 *    EPT in memory now or by a legally cached guest-physical mapping of the
 *    current EP4TA that grants it. Every such combination is enumerated; the
 *    one that uses no cached mapping must equal src/ref/ept-walk.ts
 *    refTranslateX86Ept (a check of the model itself).
 * A fault must be one such walk's fault. A mapping is legally cached once a
 * walk could have produced it (the vCPU's own answers, and every EPT
 * translation valid at some step), until an invalidation covering it:
 * MOV CR3, INVLPG, INVPCID drop linear and combined mappings of the current
 * VPID only (combined ones of every EP4TA); INVVPID drops linear and combined
 * mappings (every EP4TA) of its VPIDs; INVEPT drops guest-physical and combined
 * mappings of its EP4TAs (every VPID and PCID). After each invalidation the
 * accesses that produced the removed mappings are re-issued in their own
 * context, so a mapping kept too long shows as a translation no rule allows;
 * and every hundred steps each live TLB entry (tlbEntries()) must be a piece
 * of a legal linear or combined mapping of its VPID and PCID.
 *
 * Guest tables and EPT entries are edited with plain stores; the test
 * invalidates only when the random sequence says so, so stale translations
 * abound. A refused INVEPT or INVVPID (VMfail, VM-instruction error 28) must
 * leave the TLB exactly as it was.
 */
import { assert, describe, expect, it } from "vitest";
import {
  CR3_NOFLUSH, CR4, LONG_MODE, PTE, X86EptBuilder, X86PageTableBuilder, createMachine,
  type GuestMemory, type X86Access, type X86TranslateResult, type X86Vcpu, type X86VmFail,
} from "../../src/index.js";
import {
  pageFault, refTranslateX86, reservedMask, violatesRights, type RefMemory, type RefResult, type RefX86State,
} from "../../src/ref/x86-walk.js";
import {
  refDecodeEptp, refTranslateX86Ept, refWalkEpt, type RefEptAccess, type RefEptOptions, type RefEptResult, type RefX86EptResult,
} from "../../src/ref/ept-walk.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../helpers/rng.js";
import { verbose } from "../helpers/note.js";
import { DATA, KVA, SPARE, VA, vmxWorld, type VmxFault, type VmxWorld } from "../helpers/vmx.js";

const MAXPHY = 46;
const ADDR = ((1n << BigInt(MAXPHY)) - 1n) & ~0xfffn;
const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const SIZES = [K4, M2, G1] as const;
const RAM = 64 << 20;
const PCIDS = [0, 1, 2, 0xfff] as const;
const VPIDS = [0, 1, 2, 0xffff] as const;
const ACCESSES: readonly X86Access[] = ["read", "read", "write", "fetch"];
const ACCESS_CODE: Record<X86Access, number> = { read: 0, write: 1, fetch: 2 };
const EPT_OPTS: RefEptOptions = { maxPhysAddrBits: MAXPHY, executeOnly: true, mbec: false, adSupported: true, fiveLevel: true };

/** Guest-physical layout: guest page tables (identity-mapped by every EPT tree), guest data. */
const GUEST_TABLES = 0x10_0000n;
const ALT_TABLES = 0x60_0000n;
const EPT_TABLES = 0x80_0000n;
const DATA_GPA = 0x100_0000n;
const DATA_BYTES = 0x80_0000n;
/** Host copy of DATA_GPA for EPT tree k: DATA_GPA + k * DATA_BYTES. */
const hostData = (k: number): bigint => DATA_GPA + BigInt(k) * DATA_BYTES;

const EPT_R = 1n, EPT_W = 2n, EPT_X = 4n, EPT_PS = 1n << 7n, EPT_A = 1n << 8n, EPT_D = 1n << 9n;
const EPT_RWX = 7n;

const PRIV = 0x0000_0010_0000_0000n;
const SHARED = 0x0000_7f00_0000_0000n;
const KERN = 0xffff_8000_0000_0000n;

type Ctx = number | "G";

/** Where a mapping came from: the context and the access that produced it. */
interface Origin {
  eptp: bigint | null;
  vpid: number;
  cr3: bigint;
  va: bigint;
  access: X86Access;
  user: boolean;
}

/**
 * A legally cached linear ("lin") or combined ("comb") mapping: the guest page
 * [base, base + size), cached as the piece [pieceBase, pieceBase + pieceSize)
 * (a combined mapping is cached at most at the smaller of the guest and EPT
 * page sizes), with the rights and dirty state it was filled with.
 */
interface Legal {
  kind: "lin" | "comb";
  vpid: number;
  ep4ta: bigint;
  ctx: Ctx;
  base: bigint;
  size: bigint;
  pieceBase: bigint;
  pieceSize: bigint;
  pa: bigint;
  gpa: bigint;
  level: number;
  w: boolean;
  u: boolean;
  xd: boolean;
  gDirty: boolean;
  eptRwx: number;
  eptDirty: boolean;
  origin: Origin;
}

/** A legally cached guest-physical mapping [base, base + size) → hbase of one EP4TA. */
interface LegalGp {
  ep4ta: bigint;
  base: bigint;
  size: bigint;
  hbase: bigint;
  rwx: number;
  level: number;
  dirty: boolean;
  origin: Origin;
}

/** Legal linear and combined mappings, indexed by guest page. */
class LegalTlb {
  private readonly pages = new Map<string, Legal[]>();

  get count(): number {
    let n = 0;
    for (const l of this.pages.values()) n += l.length;
    return n;
  }

  add(t: Legal): void {
    const k = `${t.size}/${t.base}`;
    const l = this.pages.get(k);
    if (!l) { this.pages.set(k, [t]); return; }
    const same = (x: Legal) => x.kind === t.kind && x.vpid === t.vpid && x.ep4ta === t.ep4ta && x.ctx === t.ctx && x.pieceBase === t.pieceBase
      && x.pieceSize === t.pieceSize && x.pa === t.pa && x.gpa === t.gpa && x.level === t.level && x.w === t.w && x.u === t.u && x.xd === t.xd
      && x.gDirty === t.gDirty && x.eptRwx === t.eptRwx && x.eptDirty === t.eptDirty;
    if (!l.some(same)) l.push(t);
  }

  /** Mappings for the page containing `va` (any size) that `tag` accepts and whose piece holds `va`. */
  candidates(va: bigint, tag: (t: Legal) => boolean): Legal[] {
    const out: Legal[] = [];
    for (const size of SIZES) {
      const l = this.pages.get(`${size}/${va & ~(size - 1n)}`);
      if (l) for (const t of l) if (tag(t) && va >= t.pieceBase && va < t.pieceBase + t.pieceSize) out.push(t);
    }
    return out;
  }

  /** Removes the mappings of the page containing `va` (any size, every piece) that `pred` selects. */
  invalidatePage(va: bigint, pred: (t: Legal) => boolean): Legal[] {
    const out: Legal[] = [];
    for (const size of SIZES) {
      const k = `${size}/${va & ~(size - 1n)}`;
      const l = this.pages.get(k);
      if (!l) continue;
      const keep = l.filter((t) => !pred(t));
      out.push(...l.filter(pred));
      if (keep.length) this.pages.set(k, keep); else this.pages.delete(k);
    }
    return out;
  }

  /** Removes every mapping `pred` selects. */
  invalidateWhere(pred: (t: Legal) => boolean): Legal[] {
    const out: Legal[] = [];
    for (const [k, l] of this.pages) {
      const keep = l.filter((t) => !pred(t));
      if (keep.length === l.length) continue;
      out.push(...l.filter(pred));
      if (keep.length) this.pages.set(k, keep); else this.pages.delete(k);
    }
    return out;
  }
}

/** Legal guest-physical mappings, indexed by guest-physical page. */
class LegalGpTlb {
  private readonly pages = new Map<string, LegalGp[]>();

  get count(): number {
    let n = 0;
    for (const l of this.pages.values()) n += l.length;
    return n;
  }

  add(t: LegalGp): void {
    const k = `${t.size}/${t.base}`;
    const l = this.pages.get(k);
    if (!l) { this.pages.set(k, [t]); return; }
    if (!l.some((x) => x.ep4ta === t.ep4ta && x.hbase === t.hbase && x.rwx === t.rwx && x.level === t.level && x.dirty === t.dirty)) l.push(t);
  }

  candidates(ep4ta: bigint, gpa: bigint): LegalGp[] {
    const out: LegalGp[] = [];
    for (const size of SIZES) {
      const l = this.pages.get(`${size}/${gpa & ~(size - 1n)}`);
      if (l) for (const t of l) if (t.ep4ta === ep4ta) out.push(t);
    }
    return out;
  }

  invalidateWhere(pred: (t: LegalGp) => boolean): LegalGp[] {
    const out: LegalGp[] = [];
    for (const [k, l] of this.pages) {
      const keep = l.filter((t) => !pred(t));
      if (keep.length === l.length) continue;
      out.push(...l.filter(pred));
      if (keep.length) this.pages.set(k, keep); else this.pages.delete(k);
    }
    return out;
  }
}

type FaultShape = VmxFault;

/** One way a walk can end in success: the answer and what a TLB may cache from it. */
interface WalkOk {
  pa: bigint;
  gpa: bigint;
  pageSize: number;
  level: number;
  w: boolean;
  u: boolean;
  xd: boolean;
  g: boolean;
  gDirty: boolean;
  eptRwx: number;
  eptDirty: boolean;
  piece: bigint;
  fresh: boolean;
}

/** Every answer a walk may give now: the successes and the faults, each marked fresh if it used no cached mapping. */
interface Outcomes {
  ok: WalkOk[];
  faults: (FaultShape & { fresh: boolean })[];
}

type GpOption =
  | { hpa: bigint; rwx: number; level: number; size: bigint; dirty: boolean; fresh: boolean }
  | { fault: FaultShape; fresh: true };

function readOnly(mem: GuestMemory): RefMemory {
  return {
    read64: (a) => (mem.contains(a) && mem.contains(a + 7n) ? mem.read64(a) : undefined),
    cmpxchg64: (a, expected) => mem.read64(a) === expected,
  };
}

function isCanonical48(va: bigint): boolean {
  return BigInt.asIntN(48, va) === BigInt.asIntN(64, va);
}

function isCanonical57(va: bigint): boolean {
  return BigInt.asIntN(57, va) === BigInt.asIntN(64, va);
}

const hex = (v: bigint): string => "0x" + v.toString(16);

function showFault(f: FaultShape): string {
  const extra = [
    f.qualification !== undefined ? `q=0x${f.qualification.toString(16)}` : "",
    f.gpa !== undefined ? `gpa=${hex(f.gpa)}` : "",
    f.gva !== undefined ? `gva=${hex(f.gva)}` : "",
    f.stage !== undefined ? `stage=${f.stage}` : "",
    f.hpa !== undefined ? `hpa=${hex(f.hpa)}` : "",
  ].filter(Boolean).join(",");
  return `#${f.kind}(err=${f.errorCode},lvl=${f.level}${extra ? "," + extra : ""})`;
}

function showResult(r: X86TranslateResult): string {
  if ("fault" in r) return showFault(r.fault);
  return `${hex(r.pa)}${r.gpa !== undefined ? ` (gpa ${hex(r.gpa)})` : ""}/${r.pageSize}/L${r.level}`;
}

function eptFaultShape(r: Exclude<RefEptResult, { ok: true }> | Exclude<RefX86EptResult, { ok: true }>): FaultShape {
  switch (r.kind) {
    case "ept-violation": return { kind: r.kind, vector: -1, errorCode: 0, qualification: r.qualification, gpa: r.gpa, gva: r.gva, level: r.level };
    case "ept-misconfig": return { kind: r.kind, vector: -1, errorCode: 0, gpa: r.gpa, level: r.level };
    case "abort": return { kind: r.kind, vector: -1, errorCode: 0, level: r.level, gpa: r.gpa, stage: r.stage, hpa: r.hpa };
    default: return { kind: r.kind, vector: r.vector, errorCode: r.errorCode, level: r.level };
  }
}

/** Whether the vCPU's fault `got` is `want` (with `loose`, fields the vCPU left out are not compared: batch status words). */
function sameFault(want: FaultShape, got: FaultShape, loose: boolean): boolean {
  if (want.kind !== got.kind || want.vector !== got.vector || want.errorCode !== got.errorCode || want.level !== got.level) return false;
  const eq = <T>(a: T | undefined, b: T | undefined) => (loose && b === undefined) || a === b;
  if (want.kind === "ept-violation") return eq(want.qualification, got.qualification) && eq(want.gpa, got.gpa) && eq(want.gva, got.gva);
  if (want.kind === "ept-misconfig") return eq(want.gpa, got.gpa);
  if (want.kind === "abort") return eq(want.gpa, got.gpa) && eq(want.stage, got.stage) && eq(want.hpa, got.hpa);
  return true;
}

/** Whether cached mapping `t` grants the access (SDM §4.6 with CR0.WP = 1, NXE = 1, no SMEP/SMAP/PKE; EPT R/W/X); D = 1 is needed for a write. */
function grants(t: Legal, access: X86Access, user: boolean): boolean {
  if (access === "write" && (!t.gDirty || !t.eptDirty)) return false;
  const ept = access === "read" ? 1 : access === "write" ? 2 : 4;
  if ((t.eptRwx & ept) === 0) return false;
  if (user && !t.u) return false;
  if (access === "write") return t.w;
  if (access === "fetch") return !t.xd;
  return true;
}

/** An editable guest paging-structure entry: a leaf slot (may become a pointer) or a non-leaf entry whose flags flip. */
interface Slot {
  gpa: bigint;
  /** The value the world was built with (an edit may restore it). */
  orig: bigint;
  level: 1 | 2 | 3;
  pointers: bigint[];
  table: boolean;
}

/** An editable EPT entry. "data" and "table" leaves may be remapped to `frames`; "upper" entries only change rights. */
interface EptSlot {
  hpa: bigint;
  orig: bigint;
  level: number;
  kind: "data" | "table" | "upper";
  frames: bigint[];
  pointers: bigint[];
  tree: number;
}

interface EptTree {
  eptp: bigint;
  ad: boolean;
  levels: 4 | 5;
}

interface World {
  mem: GuestMemory;
  vcpu: X86Vcpu;
  roots: bigint[];
  slots: Slot[];
  eptSlots: EptSlot[];
  trees: EptTree[];
  /** Valid EPTPs to switch to: every tree's, and tree 0's root with memory type UC (same EP4TA). */
  eptps: bigint[];
  probes: bigint[];
}

function randomLeaf(rng: Rng, level: 1 | 2 | 3): bigint {
  const size = level === 1 ? "4K" : level === 2 ? "2M" : "1G";
  const frame = level === 1
    ? (rng.chance(0.02) ? 0x10_0000_0000n : DATA_GPA) + BigInt(rng.int(0x800)) * K4
    : level === 2 ? DATA_GPA + BigInt(rng.int(4)) * M2 : rng.chance(0.1) ? G1 : 0n;
  return X86PageTableBuilder.leaf(frame, size, {
    write: rng.chance(0.75), user: rng.chance(0.8), nx: rng.chance(0.1), global: rng.chance(0.35),
    accessed: rng.chance(0.5), dirty: rng.chance(0.4),
  }) | (rng.chance(0.02) ? 1n << 51n : 0n);
}

function editValue(rng: Rng, mem: GuestMemory, slot: Slot): bigint {
  const cur = mem.read64(slot.gpa);
  if (cur !== slot.orig && rng.chance(0.2)) return slot.orig;
  if (slot.table || ((cur & PTE.P) !== 0n && rng.chance(0.4))) {
    return cur ^ rng.pick([PTE.RW, PTE.US, PTE.XD, PTE.G, PTE.RW, PTE.US, PTE.P, PTE.G, PTE.A]);
  }
  const r = rng.int(100);
  if (r < 8) return 0n;
  if (slot.pointers.length > 0 && r < 40) {
    return rng.pick(slot.pointers) | PTE.P | (rng.chance(0.85) ? PTE.RW : 0n) | (rng.chance(0.85) ? PTE.US : 0n) | (rng.chance(0.1) ? PTE.XD : 0n);
  }
  return randomLeaf(rng, slot.level);
}

/** EPT permission bits, weighted: mostly valid, some execute-only, some write-without-read (misconfigured), some not present. */
function randomRights(rng: Rng): bigint {
  return rng.pick([7n, 7n, 7n, 7n, 7n, 5n, 3n, 1n, 4n, 2n, 0n]);
}

/**
 * A new value for an EPT slot: its original value back, other rights, a remap,
 * a pointer to a prepared table, or a misconfiguration (memory type 2, 3 or 7;
 * a reserved bit).
 */
function editEpt(rng: Rng, mem: GuestMemory, slot: EptSlot, ad: boolean): bigint {
  const cur = mem.read64(slot.hpa);
  if (cur !== slot.orig && rng.chance(slot.kind === "data" ? 0.3 : 0.6)) return slot.orig;
  if (slot.kind === "upper") return (cur & ~EPT_RWX) | rng.pick([7n, 7n, 5n, 3n, 1n, 0n]);
  const r = rng.int(100);
  if (r < 35 && (cur & EPT_RWX) !== 0n) return (cur & ~EPT_RWX) | randomRights(rng);
  const leafSize = slot.level === 1 ? "4K" : slot.level === 2 ? "2M" : "1G";
  if (r < 40) {
    const leaf = X86EptBuilder.leaf(rng.pick(slot.frames), leafSize);
    return rng.pick([leaf & ~(7n << 3n) | (BigInt(rng.pick([2, 3, 7])) << 3n), leaf | (slot.level === 1 ? 1n << 50n : 1n << 13n)]);
  }
  if (slot.pointers.length > 0 && r < 60) return rng.pick(slot.pointers) | rng.pick([7n, 7n, 7n, 3n, 5n, 1n]);
  const leaf = X86EptBuilder.leaf(rng.pick(slot.frames), leafSize, {
    memType: rng.pick([6, 6, 0, 4]), accessed: ad && rng.chance(0.5), dirty: ad && rng.chance(0.4),
  });
  return (leaf & ~EPT_RWX) | (rng.chance(0.7) ? 7n : randomRights(rng));
}

async function buildWorld(rng: Rng, tlbEntries: number): Promise<World> {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: RAM, tlbEntries, maxPhysAddrBits: MAXPHY });
  const mem = machine.memory;
  const slots: Slot[] = [];
  const probes: bigint[] = [];
  const leaf = (gpa: bigint, level: 1 | 2 | 3, pointers: bigint[] = []) => slots.push({ gpa, orig: 0n, level, pointers, table: false });
  const builders = [0, 1, 2].map((i) => new X86PageTableBuilder(mem, { tableBase: GUEST_TABLES + BigInt(i) * 0x10_0000n, tableLimit: GUEST_TABLES + BigInt(i + 1) * 0x10_0000n }));
  const flags = () => ({ write: rng.chance(0.7), user: rng.chance(0.75), nx: rng.chance(0.1), global: rng.chance(0.3), dirty: rng.chance(0.5) });
  const frame4k = () => DATA_GPA + BigInt(rng.int(0x800)) * K4;
  const frame2m = () => DATA_GPA + BigInt(rng.int(4)) * M2;
  const table = (b: X86PageTableBuilder, level: 1 | 2, indexes: number[]): bigint => {
    const t = b.allocTable();
    for (const i of indexes) {
      const g = t + BigInt(i) * 8n;
      mem.write64(g, randomLeaf(rng, level));
      leaf(g, level, []);
    }
    return t;
  };

  for (const b of builders) {
    for (let k = 0n; k < 4n; k++) leaf(b.map(PRIV + k * K4, frame4k(), "4K", flags()), 1);
    leaf(b.map(PRIV + 2n * M2, frame2m(), "2M", flags()), 2, [table(b, 1, [0, 1, 0x1ff])]);
    slots.push({ orig: 0n, gpa: b.entryAt(PRIV, 2)!, level: 2, pointers: [], table: true });
  }
  const b0 = builders[0]!;
  for (let k = 0n; k < 4n; k++) leaf(b0.map(SHARED + (0x40n + k) * K4, frame4k(), "4K", flags()), 1);
  leaf(b0.map(SHARED + M2, frame2m(), "2M", flags()), 2, [table(b0, 1, [0, 7, 0x100, 0x1ff])]);
  leaf(b0.map(SHARED + G1, 0n, "1G", flags()), 3, [(() => {
    const pd = b0.allocTable();
    mem.write64(pd, randomLeaf(rng, 2));
    leaf(pd, 2, [table(b0, 1, [0, 3])]);
    mem.write64(pd + 3n * 8n, table(b0, 1, [2, 0x1ff]) | PTE.P | PTE.RW | PTE.US);
    slots.push({ orig: 0n, gpa: pd + 3n * 8n, level: 2, pointers: [], table: true });
    return pd;
  })()]);
  slots.push({ orig: 0n, gpa: b0.entryAt(SHARED, 2)!, level: 2, pointers: [], table: true });
  slots.push({ orig: 0n, gpa: b0.entryAt(SHARED, 3)!, level: 3, pointers: [], table: true });
  for (let k = 0n; k < 4n; k++) leaf(b0.map(KERN + (0x80n + k) * K4, frame4k(), "4K", { ...flags(), global: rng.chance(0.8) }), 1);
  leaf(b0.map(KERN + M2, frame2m(), "2M", { ...flags(), global: true }), 2, [table(b0, 1, [1])]);
  for (const b of builders.slice(1)) {
    for (const va of [SHARED, KERN]) {
      const g = X86PageTableBuilder.entryGpa(b.root, va, 4);
      mem.write64(g, mem.read64(X86PageTableBuilder.entryGpa(b0.root, va, 4)));
      slots.push({ orig: 0n, gpa: g, level: 3, pointers: [], table: true });
    }
  }

  // Host copies of some guest table pages, for EPT to remap those pages to (a guest
  // table seen through another EPT tree, or through a stale guest-physical mapping).
  const tablePages: bigint[] = [];
  for (const b of builders) for (let i = 0; i < b.tablesAllocated; i++) tablePages.push(b.root + BigInt(i) * K4);
  const alt = new Map<bigint, bigint>();
  tablePages.forEach((p, i) => {
    if (i % 2 !== 0) return;
    const copy = ALT_TABLES + BigInt(alt.size) * K4;
    mem.write(copy, mem.read(p, 4096));
    const e = copy + BigInt(rng.int(512)) * 8n;
    mem.write64(e, mem.read64(e) ^ rng.pick([PTE.RW, PTE.US, PTE.XD, PTE.P]));
    alt.set(p, copy);
  });

  // EPT trees: 0 four-level, 1 four-level with A/D, 2 five-level. Each maps the
  // guest tables identically (0..4 MiB by 4 KiB pages, 4..8 MiB by 2 MiB pages)
  // and DATA_GPA onto its own host copy (2 MiB pages, one 2 MiB by 4 KiB pages).
  const eptSlots: EptSlot[] = [];
  const trees: EptTree[] = [];
  for (let k = 0; k < 3; k++) {
    const levels = k === 2 ? 5 : 4;
    const ad = k === 1;
    const b = new X86EptBuilder(mem, { levels, tableBase: EPT_TABLES + BigInt(k) * 0x10_0000n, tableLimit: EPT_TABLES + BigInt(k + 1) * 0x10_0000n, accessedDirty: ad });
    for (let g = 0n; g < 4n * 0x10_0000n; g += K4) {
      const h = b.map(g, g, "4K", { accessed: ad && rng.chance(0.5) });
      if (tablePages.includes(g)) eptSlots.push({ orig: 0n, hpa: h, level: 1, kind: "table", frames: alt.has(g) ? [g, g, alt.get(g)!] : [g], pointers: [], tree: k });
    }
    for (const g of [4n * 0x10_0000n, 6n * 0x10_0000n]) {
      eptSlots.push({ orig: 0n, hpa: b.map(g, g, "2M"), level: 2, kind: "table", frames: [g], pointers: [], tree: k });
    }
    const split = rng.int(4);
    for (let j = 0; j < 4; j++) {
      const g = DATA_GPA + BigInt(j) * M2, h = hostData(k) + BigInt(j) * M2;
      const hostFrames2m = [h, hostData((k + 1) % 3) + BigInt(j) * M2, hostData(k) + BigInt((j + 1) % 4) * M2];
      const hostFrames4k = Array.from({ length: 6 }, () => hostData(rng.int(3)) + BigInt(rng.int(0x800)) * K4);
      // A prepared 4 KiB table for this 2 MiB, as a pointer the slot can take.
      const t = b.allocTable();
      for (let i = 0n; i < 512n; i++) mem.write64(t + i * 8n, X86EptBuilder.leaf(h + i * K4, "4K", { write: rng.chance(0.85), exec: rng.chance(0.9) }));
      for (const i of [0, 1, 7, 0x100, 0x1ff, rng.int(512)]) {
        eptSlots.push({ orig: 0n, hpa: t + BigInt(i) * 8n, level: 1, kind: "data", frames: [h + BigInt(i) * K4, ...hostFrames4k], pointers: [], tree: k });
      }
      if (j === split) {
        for (let i = 0n; i < 512n; i++) b.map(g + i * K4, h + i * K4, "4K", { write: rng.chance(0.85), exec: rng.chance(0.9) });
        for (const i of [0n, 1n, 0x1ffn, BigInt(rng.int(512))]) {
          eptSlots.push({ orig: 0n, hpa: b.entryAt(g + i * K4, 1)!, level: 1, kind: "data", frames: [h + i * K4, ...hostFrames4k], pointers: [], tree: k });
        }
        const pde = b.entryAt(g, 2)!;
        eptSlots.push({ orig: 0n, hpa: pde, level: 2, kind: "data", frames: hostFrames2m, pointers: [t, mem.read64(pde) & ADDR], tree: k });
      } else {
        const h2 = b.map(g, h, "2M", { write: rng.chance(0.85), exec: rng.chance(0.9) });
        eptSlots.push({ orig: 0n, hpa: h2, level: 2, kind: "data", frames: hostFrames2m, pointers: [t], tree: k });
      }
    }
    for (let level = levels; level >= 3; level--) {
      for (const g of [0n, DATA_GPA]) {
        const h = b.entryAt(g, level)!;
        if (!eptSlots.some((s) => s.hpa === h)) eptSlots.push({ orig: 0n, hpa: h, level, kind: "upper", frames: [], pointers: [], tree: k });
      }
    }
    trees.push({ eptp: b.eptp, ad, levels });
  }

  for (let k = 0n; k < 4n; k++) probes.push(PRIV + k * K4 + 0x10n * k, SHARED + (0x40n + k) * K4 + 0x8n, KERN + (0x80n + k) * K4 + 0xff8n);
  for (const o of [0n, K4 + 0x40n, 0x1f_f123n, 0x10_0000n]) probes.push(PRIV + 2n * M2 + o);
  for (const o of [0n, 7n * K4 + 0x10n, 0x10_0000n, 0x1f_f000n]) probes.push(SHARED + M2 + o);
  for (const o of [0x123n, 3n * K4, 0x60_2008n, DATA_GPA + 0x1234n, DATA_GPA + 0x30_0000n, 0x10_5000n]) probes.push(SHARED + G1 + o);
  for (const o of [0n, K4, 0x1f_f000n]) probes.push(KERN + M2 + o);

  for (const s of slots) s.orig = mem.read64(s.gpa);
  for (const s of eptSlots) s.orig = mem.read64(s.hpa);
  const eptps = [...trees.map((t) => t.eptp), trees[0]!.eptp & ~7n];
  return { mem, vcpu: machine.vcpu(0), roots: builders.map((b) => b.root), slots, eptSlots, trees, eptps, probes };
}

interface RunOptions {
  seed: number;
  note: string;
  steps: number;
  tlbEntries: number;
}

interface RunStats {
  steps: number;
  accesses: number;
  eptAccesses: number;
  staleLinear: number;
  staleCombined: number;
  staleGuestPhysical: number;
  faults: number;
  eptFaults: number;
  invalidations: number;
  swept: number;
  sweptMustWalk: number;
  vmfails: number;
  switches: number;
  maxLegal: number;
  maxLegalGp: number;
  faultKinds: Record<string, number>;
  audited: number;
}

async function run(opts: RunOptions): Promise<RunStats> {
  const rng = new Rng(opts.seed);
  const w = await buildWorld(rng, opts.tlbEntries);
  const { mem, vcpu, roots, slots, eptSlots, trees, eptps, probes } = w;
  const ro = readOnly(mem);
  const regs = { cr0: LONG_MODE.cr0, cr3: roots[0]!, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE, efer: LONG_MODE.efer, pkru: 0n, rflags: 0n };
  const vm: { eptp: bigint | null; vpid: number } = { eptp: eptps[0]!, vpid: 1 };
  vcpu.setControl(regs);
  vcpu.setVmcs({ eptp: vm.eptp, vpid: vm.vpid });

  const legal = new LegalTlb();
  const legalGp = new LegalGpTlb();
  const leafSlots = slots.filter((s) => !s.table);
  const slotByGpa = new Map(slots.map((s) => [s.gpa, s]));
  const eptSlotByHpa = new Map(eptSlots.map((s) => [s.hpa, s]));
  const stats: RunStats = {
    steps: 0, accesses: 0, eptAccesses: 0, staleLinear: 0, staleCombined: 0, staleGuestPhysical: 0, faults: 0, eptFaults: 0,
    invalidations: 0, swept: 0, sweptMustWalk: 0, vmfails: 0, switches: 0, maxLegal: 0, maxLegalGp: 0, faultKinds: {}, audited: 0,
  };
  const trail: string[] = [];
  const log = (s: string) => { trail.push(`${stats.steps}: ${s}`); if (trail.length > 20) trail.shift(); };
  const fail = (msg: string): never => assert.fail(`${opts.note} step ${stats.steps}: ${msg}\nlast steps:\n  ${trail.join("\n  ")}`);
  let hot: bigint[] = [];
  const pickProbe = () => (rng.chance(0.8) ? rng.pick(hot) : rng.pick(probes));

  const pcid = () => Number(regs.cr3 & 0xfffn);
  const ep4ta = (eptp: bigint) => eptp & 0x000f_ffff_ffff_f000n;
  const tree = () => trees.find((t) => ep4ta(t.eptp) === ep4ta(vm.eptp!))!;
  const ad = () => vm.eptp !== null && (vm.eptp & (1n << 6n)) !== 0n;
  const guest = (): RefX86State => ({ ...regs, maxPhysAddrBits: MAXPHY });
  const where = () => `vpid ${vm.vpid} ${vm.eptp === null ? "no EPT" : `eptp ${hex(vm.eptp)}`} pcid ${pcid()}`;
  const origin = (va: bigint, access: X86Access, user: boolean): Origin => ({ eptp: vm.eptp, vpid: vm.vpid, cr3: regs.cr3, va, access, user });

  /** The tag check of a lookup in the current context (§29.4.2: no linear mapping under EPT, no combined one without). */
  const usable = (t: Legal): boolean =>
    t.vpid === vm.vpid && (t.ctx === "G" || t.ctx === pcid())
    && (vm.eptp === null ? t.kind === "lin" : t.kind === "comb" && t.ep4ta === ep4ta(vm.eptp));

  const checkState = (what: string) => {
    const v = vcpu.vmcs();
    if (v.eptp !== vm.eptp || v.vpid !== vm.vpid) fail(`after ${what}: vmcs() ${JSON.stringify({ eptp: v.eptp === null ? null : hex(v.eptp), vpid: v.vpid })}, expected eptp ${vm.eptp === null ? null : hex(vm.eptp)} vpid ${vm.vpid}`);
    if (vcpu.control().cr3 !== regs.cr3) fail(`after ${what}: cr3 ${hex(vcpu.control().cr3)}, expected ${hex(regs.cr3)}`);
  };

  /** gpa of the guest entry that ends the walk for `va` (its leaf, or the first non-present entry), tables read at their gpa. */
  const guestLeafGpaOf = (va: bigint): bigint => {
    let table = regs.cr3 & ADDR;
    for (let level = 4; ; level--) {
      const g = table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n);
      const e = mem.read64(g);
      if (level === 1 || (e & PTE.P) === 0n || (level <= 3 && (e & PTE.PS) !== 0n)) return g;
      table = e & ADDR;
      if (!mem.contains(table)) return g;
    }
  };

  /** hpa of the EPT entry that ends the current tree's walk for the final gpa of `va` (or of the gpa where its 2D walk stopped). */
  const eptEntryOf = (va: bigint): bigint => {
    const r = refTranslateX86Ept(ro, guest(), vm.eptp!, va, "read", false, EPT_OPTS);
    const gpa = r.ok ? r.gpa : "gpa" in r ? r.gpa : undefined;
    if (gpa === undefined) return -1n;
    const t = tree();
    let table = t.eptp & ADDR;
    for (let level: number = t.levels; ; level--) {
      const h = table + (((gpa >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n);
      const e = mem.read64(h);
      if (level === 1 || (e & EPT_RWX) === 0n || (level <= 3 && (e & EPT_PS) !== 0n)) return h;
      table = e & ADDR;
      if (!mem.contains(table)) return h;
    }
  };

  /** The D flag of the EPT leaf for `gpa` now (the walk to it is known to succeed). */
  const eptLeafDirty = (gpa: bigint): boolean => {
    const t = tree();
    let table = t.eptp & ADDR;
    for (let level: number = t.levels; level >= 1; level--) {
      const e = mem.read64(table + (((gpa >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n));
      if (level === 1 || (level <= 3 && (e & EPT_PS) !== 0n)) return (e & EPT_D) !== 0n;
      table = e & ADDR;
    }
    return false;
  };

  /**
   * The ways guest-physical `gpa` may be translated for `acc` now: the EPT in
   * memory (fresh; its success becomes a legal guest-physical mapping), then
   * each legally cached guest-physical mapping that grants the access.
   */
  const resolve = (gpa: bigint, acc: RefEptAccess, from: Origin): GpOption[] => {
    const e = ep4ta(vm.eptp!);
    const out: GpOption[] = [];
    const writes = acc.type === "write" || (acc.pagingStructure === true && ad());
    const r = refWalkEpt(ro, vm.eptp!, gpa, acc, EPT_OPTS);
    if (r.ok) {
      const size = BigInt(r.pageSize);
      const dirty = !ad() || writes || eptLeafDirty(gpa);
      out.push({ hpa: r.hpa, rwx: r.rwx, level: r.level, size, dirty, fresh: true });
      legalGp.add({ ep4ta: e, base: gpa & ~(size - 1n), size, hbase: r.hpa - (gpa & (size - 1n)), rwx: r.rwx, level: r.level, dirty, origin: from });
    } else {
      out.push({ fault: eptFaultShape(r), fresh: true });
    }
    for (const t of legalGp.candidates(e, gpa)) {
      const need = acc.pagingStructure === true && ad() ? 3 : acc.type === "read" ? 1 : acc.type === "write" ? 2 : 4;
      if ((t.rwx & need) !== need || (writes && ad() && !t.dirty)) continue;
      const hpa = t.hbase + (gpa - t.base);
      if (out.some((o) => "hpa" in o && o.hpa === hpa && o.rwx === t.rwx && o.level === t.level && o.dirty === t.dirty)) continue;
      out.push({ hpa, rwx: t.rwx, level: t.level, size: t.size, dirty: t.dirty, fresh: false });
    }
    return out;
  };

  /**
   * Every answer a 2D walk of `va` may give now (guest x86-64 4-level paging
   * under EPT, SDM §29.3.3.3 order, as src/ref/ept-walk.ts walk2dOnce), over
   * every choice resolve() offers at each guest-physical access.
   */
  const enumerate = (va: bigint, access: X86Access, user: boolean): Outcomes => {
    const res: Outcomes = { ok: [], faults: [] };
    const s = guest();
    const from = origin(va, access, user);
    const gctx = { mem: ro, s, va, access, user, rootLevel: 4 };
    if (!isCanonical48(va)) { res.faults.push({ kind: "general-protection", vector: 13, errorCode: 0, level: 0, fresh: true }); return res; }
    const pf = (cause: number, level: number, fresh: boolean) => {
      const f = pageFault(gctx, cause, level) as Extract<RefResult, { ok: false }>;
      res.faults.push({ kind: "page-fault", vector: 14, errorCode: f.errorCode, level, fresh });
    };
    /** The EPT check of a guest A/D update through the translation its load used (no second EPT walk). */
    const adRefused = (entryGpa: bigint, o: Extract<GpOption, { hpa: bigint }>, fresh: boolean): boolean => {
      if ((o.rwx & 2) !== 0) return false;
      res.faults.push({ kind: "ept-violation", vector: -1, errorCode: 0, qualification: 0x2 | ((o.rwx & 7) << 3) | 0x80, gpa: entryGpa, gva: va, level: o.level, fresh });
      return true;
    };
    const walk = (level: number, table: bigint, wr: boolean, us: boolean, xd: boolean, fresh: boolean): void => {
      const eg = table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n);
      for (const o of resolve(eg, { type: "read", pagingStructure: true, gva: va }, from)) {
        const f = fresh && o.fresh;
        if ("fault" in o) { res.faults.push({ ...o.fault, fresh: f }); continue; }
        const entry = ro.read64(o.hpa);
        if (entry === undefined) { res.faults.push({ kind: "abort", vector: -1, errorCode: 0, level, gpa: eg, stage: "guest", hpa: o.hpa, fresh: f }); continue; }
        if ((entry & PTE.P) === 0n) { pf(0, level, f); continue; }
        if ((entry & reservedMask(level, entry, MAXPHY, true)) !== 0n) { pf(1 | 8, level, f); continue; }
        const wr2 = wr && (entry & PTE.RW) !== 0n, us2 = us && (entry & PTE.US) !== 0n, xd2 = xd || (entry & PTE.XD) !== 0n;
        if (level > 1 && !(level <= 3 && (entry & PTE.PS) !== 0n)) {
          if ((entry & PTE.A) === 0n && adRefused(eg, o, f)) continue;
          walk(level - 1, entry & ADDR, wr2, us2, xd2, f);
          continue;
        }
        if (violatesRights(gctx, wr2, us2, xd2)) { pf(1, level, f); continue; }
        const bits = access === "write" ? PTE.A | PTE.D : PTE.A;
        if ((entry & bits) !== bits && adRefused(eg, o, f)) continue;
        const shift = BigInt(12 + 9 * (level - 1));
        const size = 1n << shift;
        const gpa = (entry & ADDR & ~(size - 1n)) | (va & (size - 1n));
        for (const d of resolve(gpa, { type: access, userLinear: us2, gva: va }, from)) {
          const f2 = f && d.fresh;
          if ("fault" in d) { res.faults.push({ ...d.fault, fresh: f2 }); continue; }
          res.ok.push({
            pa: d.hpa, gpa, pageSize: Number(size), level, w: wr2, u: us2, xd: xd2, g: (entry & PTE.G) !== 0n,
            gDirty: (entry & PTE.D) !== 0n || access === "write", eptRwx: d.rwx, eptDirty: d.dirty, piece: size < d.size ? size : d.size, fresh: f2,
          });
        }
      }
    };
    walk(4, regs.cr3 & ADDR, true, true, false, true);
    return res;
  };

  /** The model's fresh outcome must be the reference 2D walk's (a check of the model, not of the vCPU). */
  const checkModel = (va: bigint, access: X86Access, user: boolean, outs: Outcomes): void => {
    const ref = refTranslateX86Ept(ro, guest(), vm.eptp!, va, access, user, EPT_OPTS);
    const mine = [...outs.ok.filter((o) => o.fresh), ...outs.faults.filter((f) => f.fresh)];
    const same = mine.length === 1 && (ref.ok
      ? "pa" in mine[0]! && mine[0].pa === ref.pa && mine[0].gpa === ref.gpa && mine[0].pageSize === ref.pageSize && mine[0].level === ref.level
      : "kind" in mine[0]! && sameFault(eptFaultShape(ref), mine[0], false));
    if (!same) fail(`model error at ${access} ${hex(va)}: the test's fresh 2D walk gives ${JSON.stringify(mine, (_, v) => typeof v === "bigint" ? hex(v) : v)}, refTranslateX86Ept ${JSON.stringify(ref, (_, v) => typeof v === "bigint" ? hex(v) : v)}`);
  };

  /** Effective rights, G and D of the leaf mapping `va` without EPT (tables read at their gpa). */
  const leafInfo = (va: bigint) => {
    let table = regs.cr3 & ADDR;
    let wr = true, us = true, xd = false;
    for (let level = 4; level >= 1; level--) {
      const e = mem.read64(table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n));
      wr &&= (e & PTE.RW) !== 0n; us &&= (e & PTE.US) !== 0n; xd ||= (e & PTE.XD) !== 0n;
      if (level === 1 || (level <= 3 && (e & PTE.PS) !== 0n)) return { wr, us, xd, g: (e & PTE.G) !== 0n, d: (e & PTE.D) !== 0n };
      table = e & ADDR;
    }
    throw new Error("unreachable");
  };

  /**
   * Judges one answer. Without EPT: a fault must be the fresh walk's; a success
   * the fresh walk or a usable linear mapping (only the latter on a reported
   * TLB hit, only the former otherwise). Under EPT: a fault must be one of the
   * enumerated walks' faults; a success one of their successes or a usable
   * combined mapping. Walk answers become legal mappings. `loose`: batch status
   * words (fields the status cannot carry are not compared).
   */
  const judge = (va: bigint, access: X86Access, user: boolean, want: RefResult | Outcomes, got: X86TranslateResult, source: "hit" | "walk" | "either", loose: boolean): boolean => {
    stats.accesses++;
    if ("fault" in got) stats.faultKinds[got.fault.kind] = (stats.faultKinds[got.fault.kind] ?? 0) + 1;
    const what = `${access}${user ? "/user" : ""} ${hex(va)} in ${where()} (${source})`;
    const cached = "fault" in got ? [] : legal.candidates(va, usable).filter((t) =>
      BigInt(got.pageSize) === t.size && got.level === t.level && got.pa === t.pa + (va - t.pieceBase)
      && (got.gpa === undefined ? loose || t.kind === "lin" : got.gpa === t.gpa + (va - t.pieceBase)) && grants(t, access, user));
    const showLegal = () => [...new Set(legal.candidates(va, usable).map((t) => `${t.ctx}:${hex(t.pa)}(gpa ${hex(t.gpa)})/${t.size}/piece ${t.pieceSize}${t.w ? "w" : ""}${t.u ? "u" : ""}${t.xd ? "x" : ""}${t.gDirty ? "d" : ""} ept ${t.eptRwx}${t.eptDirty ? "d" : ""}`))].join(", ");
    if (!("faults" in want)) {
      if ("fault" in got) {
        stats.faults++;
        if (want.ok || !sameFault({ kind: want.kind, vector: want.vector, errorCode: want.errorCode, level: want.level }, got.fault, loose)) {
          fail(`${what}: vCPU faulted ${showFault(got.fault)}, fresh walk gives ${want.ok ? hex(want.pa) : `#${want.kind}(err=${want.errorCode},lvl=${want.level})`}`);
        }
        return false;
      }
      const isFresh = want.ok && want.pa === got.pa && want.pageSize === got.pageSize && want.level === got.level;
      const allowed = source === "hit" ? cached.length > 0 : source === "walk" ? isFresh : isFresh || cached.length > 0;
      if (!allowed) fail(`${what}: vCPU gave ${showResult(got)}; fresh walk gives ${want.ok ? `${hex(want.pa)}/${want.pageSize}` : `#${want.kind}`}; legally cached: [${showLegal()}]`);
      if (!isFresh) stats.staleLinear++;
      if (source !== "hit" && isFresh) {
        const i = leafInfo(va);
        const size = BigInt(got.pageSize);
        legal.add({
          kind: "lin", vpid: vm.vpid, ep4ta: -1n, ctx: i.g ? "G" : pcid(), base: va & ~(size - 1n), size, pieceBase: va & ~(size - 1n), pieceSize: size,
          pa: got.pa - (va & (size - 1n)), gpa: got.pa - (va & (size - 1n)), level: got.level, w: i.wr, u: i.us, xd: i.xd, gDirty: i.d, eptRwx: 7, eptDirty: true,
          origin: origin(va, access, user),
        });
      }
      return cached.length > 0;
    }
    stats.eptAccesses++;
    if ("fault" in got) {
      stats.faults++;
      if (got.fault.kind !== "page-fault" && got.fault.kind !== "general-protection") stats.eptFaults++;
      if (!want.faults.some((f) => sameFault(f, got.fault, loose))) {
        const fresh = want.faults.find((f) => f.fresh);
        const okFresh = want.ok.find((o) => o.fresh);
        fail(`${what}: vCPU faulted ${showFault(got.fault)}; fresh 2D walk gives ${fresh ? showFault(fresh) : okFresh ? `${hex(okFresh.pa)} (gpa ${hex(okFresh.gpa)})` : "?"}; `
          + `faults allowed with cached guest-physical mappings: [${[...new Set(want.faults.map(showFault))].join(", ")}]`);
      }
      return false;
    }
    if (!loose && got.gpa === undefined) fail(`${what}: a translation under EPT without gpa: ${showResult(got)}`);
    const walked = want.ok.filter((o) => o.pa === got.pa && o.pageSize === got.pageSize && o.level === got.level && (got.gpa === undefined || o.gpa === got.gpa));
    if (walked.length === 0 && cached.length === 0) {
      const fresh = want.ok.find((o) => o.fresh) ?? want.faults.find((f) => f.fresh);
      fail(`${what}: vCPU gave ${showResult(got)}; fresh 2D walk gives ${fresh === undefined ? "?" : "pa" in fresh ? `${hex(fresh.pa)} (gpa ${hex(fresh.gpa)})/${fresh.pageSize}` : showFault(fresh)}; `
        + `walks with cached guest-physical mappings give [${want.ok.filter((o) => !o.fresh).map((o) => `${hex(o.pa)} (gpa ${hex(o.gpa)})`).join(", ")}]; legally cached combined: [${showLegal()}]`);
    }
    if (!walked.some((o) => o.fresh)) {
      if (cached.length > 0) stats.staleCombined++; else stats.staleGuestPhysical++;
    }
    for (const o of walked) {
      const size = BigInt(o.pageSize);
      legal.add({
        kind: "comb", vpid: vm.vpid, ep4ta: ep4ta(vm.eptp!), ctx: o.g ? "G" : pcid(), base: va & ~(size - 1n), size,
        pieceBase: va & ~(o.piece - 1n), pieceSize: o.piece, pa: o.pa - (va & (o.piece - 1n)), gpa: o.gpa - (va & (o.piece - 1n)), level: o.level,
        w: o.w, u: o.u, xd: o.xd, gDirty: o.gDirty, eptRwx: o.eptRwx, eptDirty: o.eptDirty, origin: origin(va, access, user),
      });
    }
    return cached.length > 0;
  };

  const want = (va: bigint, access: X86Access, user: boolean): RefResult | Outcomes => {
    if (vm.eptp === null) return refTranslateX86(ro, guest(), va, access, user);
    const outs = enumerate(va, access, user);
    checkModel(va, access, user, outs);
    return outs;
  };

  const translate = (va: bigint, access: X86Access, user: boolean): void => {
    const wv = want(va, access, user);
    const h = vcpu.tlbStats().hits;
    const got = vcpu.translate(va, access, user);
    judge(va, access, user, wv, got, vm.eptp !== null ? "either" : vcpu.tlbStats().hits > h ? "hit" : "walk", false);
  };

  const batch = (): void => {
    const n = 1 + rng.int(16);
    const user = rng.chance(0.4);
    const vas = new BigUint64Array(n);
    const acc = new Uint8Array(n);
    const kinds: X86Access[] = [];
    for (let i = 0; i < n; i++) {
      vas[i] = pickProbe();
      kinds.push(rng.pick(ACCESSES));
      acc[i] = ACCESS_CODE[kinds[i]!];
    }
    const wants = kinds.map((k, i) => want(vas[i]!, k, user));
    const h = vcpu.tlbStats().hits;
    const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
    const faults = vcpu.translateBatch(vas, acc, user, out);
    const hits = vcpu.tlbStats().hits - h;
    log(`batch of ${n} ${user ? "user" : "supervisor"}: ${[...vas].map((v, i) => `${kinds[i]} ${hex(v)}`).join(", ")}`);
    let explainable = 0, faulted = 0;
    for (let i = 0; i < n; i++) {
      const got = vcpu.decodeStatus(out.status[i]!, out.pa[i]!, vas[i]!);
      if ("fault" in got) faulted++;
      if (judge(vas[i]!, kinds[i]!, user, wants[i]!, got, "either", true)) explainable++;
    }
    if (faulted !== faults) fail(`batch returned ${faults} faults but ${faulted} status words are faults`);
    if (vm.eptp === null && hits > explainable) fail(`batch reported ${hits} TLB hits but only ${explainable} answers were legally cached`);
  };

  /** Moves to another context without invalidating anything: VMCS fields (no implied flush) and MOV CR3 with bit 63. */
  const enter = (eptp: bigint | null, vpid: number, cr3: bigint, why: string): void => {
    if (eptp !== vm.eptp || vpid !== vm.vpid) {
      vcpu.setVmcs({ eptp, vpid });
      vm.eptp = eptp; vm.vpid = vpid;
    }
    if (cr3 !== regs.cr3) {
      const r = vcpu.writeCr3(cr3 | CR3_NOFLUSH);
      if (r !== null) fail(`${why}: MOV CR3 ${hex(cr3 | CR3_NOFLUSH)} raised ${JSON.stringify(r)}`);
      regs.cr3 = cr3;
    }
    checkState(why);
  };

  /**
   * After an invalidation: re-issues the accesses that produced the removed
   * mappings, each in its own context (at most three contexts), and judges them
   * with the removed mappings gone.
   */
  const sweep = (removed: Legal[], removedGp: LegalGp[] = []): void => {
    const origins = [...removed.map((t) => t.origin), ...removedGp.map((t) => t.origin)];
    if (origins.length === 0) return;
    stats.invalidations++;
    const key = (o: Origin) => `${o.eptp}/${o.vpid}/${o.cr3}`;
    const groups = new Map<string, Origin[]>();
    for (const o of origins) {
      const k = key(o);
      const g = groups.get(k);
      if (g) { if (g.length < 12 && !g.some((x) => x.va === o.va && x.access === o.access && x.user === o.user)) g.push(o); } else groups.set(k, [o]);
    }
    const here = { eptp: vm.eptp, vpid: vm.vpid, cr3: regs.cr3 };
    const hereKey = `${here.eptp}/${here.vpid}/${here.cr3}`;
    const order = [...groups.keys()].sort((a, b) => Number(b === hereKey) - Number(a === hereKey));
    for (const k of order.slice(0, 3)) {
      const list = groups.get(k)!;
      const o0 = list[0]!;
      enter(o0.eptp, o0.vpid, o0.cr3, "sweep visit");
      log(`sweep in ${where()}: ${list.length} accesses`);
      for (const o of list) {
        stats.swept++;
        if (!legal.candidates(o.va, usable).some((t) => grants(t, o.access, o.user))) stats.sweptMustWalk++;
        translate(o.va, o.access, o.user);
      }
    }
    enter(here.eptp, here.vpid, here.cr3, "sweep return");
  };

  // Invalidation scopes (§29.4.3.1 and the instruction pages).
  const curVpid = (t: Legal) => t.vpid === vm.vpid;
  const movCr3 = (value: bigint, why: string): void => {
    const noflush = (value & CR3_NOFLUSH) !== 0n;
    const v = value & ~CR3_NOFLUSH;
    const gp = v >> BigInt(MAXPHY) !== 0n;
    const r = vcpu.writeCr3(value);
    log(`${why} MOV CR3 ${hex(value)}${gp ? " (#GP)" : ""} in ${where()}`);
    if ((r !== null) !== gp) fail(`MOV CR3 ${hex(value)}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(r)}`);
    if (gp) return;
    regs.cr3 = v;
    checkState("MOV CR3");
    if (noflush) return;
    const p = pcid();
    sweep(legal.invalidateWhere((t) => curVpid(t) && t.ctx === p));
  };

  const probeOrNear = (): bigint => {
    const r = rng.int(100);
    if (r < 5) return 0x0000_8000_0000_0000n | (rng.u64() & 0xffff_ffffn);
    if (r < 20) return rng.pick([SHARED + M2, SHARED + G1, PRIV + 2n * M2, KERN + M2]) + BigInt(rng.int(0x4000_0000)) % rng.pick([M2, G1]);
    return rng.pick(probes) ^ BigInt(rng.int(0x1000));
  };

  /** TLB contents and counters that a refused instruction must leave as they were. */
  const tlbSnapshot = (): string => {
    const s = vcpu.tlbStats();
    return JSON.stringify({ entries: vcpu.tlbEntries(), live: s.live, flushAll: s.flushAll, flushNonGlobal: s.flushNonGlobal, flushCtx: s.flushCtx, flushPage: s.flushPage, dropped: s.dropped },
      (_, v) => (typeof v === "bigint" ? hex(v) : v));
  };

  const checkVmfail = (what: string, res: X86VmFail | null, expectFail: boolean, before: string | undefined): void => {
    if ((res !== null) !== expectFail) fail(`${what}: expected ${expectFail ? "VMfail(28)" : "success"}, got ${JSON.stringify(res)}`);
    if (res === null) return;
    stats.vmfails++;
    if (res.kind !== "vmfail" || res.vector !== -1 || res.errorCode !== 28 || res.level !== 0 || typeof res.reason !== "string" || res.reason === "") {
      fail(`${what}: VMfail ${JSON.stringify(res)} is not { kind: "vmfail", vector: -1, errorCode: 28, level: 0, reason }`);
    }
    const after = tlbSnapshot();
    if (before !== after) fail(`${what}: a refused instruction changed the TLB:\n before ${before}\n after  ${after}`);
  };

  const invept = (): void => {
    const r = rng.int(100);
    const type = r < 6 ? rng.pick([0, 3, 4, 7]) : r < 60 ? 1 : 2;
    const bad = rng.pick([
      eptps[0]! & ~7n | 1n, eptps[0]! & ~0x38n | (1n << 3n), eptps[0]! & ~0x38n | (5n << 3n), eptps[0]! | (1n << 7n), eptps[0]! | (1n << 11n),
      eptps[0]! | (1n << BigInt(MAXPHY)), eptps[0]! | (1n << 63n), eptps[0]! & ~7n | 7n,
    ]);
    const eptp = type === 1 ? (rng.chance(0.12) ? bad : rng.pick(eptps)) : rng.chance(0.3) ? rng.pick([bad, ...eptps]) : undefined;
    const expectFail = (type !== 1 && type !== 2) || (type === 1 && !refDecodeEptp(eptp!, EPT_OPTS).ok);
    const before = expectFail ? tlbSnapshot() : undefined;
    const res = vcpu.invept(type, eptp);
    log(`INVEPT type ${type}${eptp === undefined ? "" : ` eptp ${hex(eptp)}`}${expectFail ? " (VMfail)" : ""}`);
    checkVmfail(`INVEPT type ${type}${eptp === undefined ? "" : ` ${hex(eptp)}`}`, res, expectFail, before);
    if (expectFail) return;
    const e = type === 1 ? ep4ta(eptp!) : undefined;
    const pred = (x: bigint) => e === undefined || x === e;
    sweep(legal.invalidateWhere((t) => t.kind === "comb" && pred(t.ep4ta)), legalGp.invalidateWhere((t) => pred(t.ep4ta)));
  };

  const invvpid = (): void => {
    const r = rng.int(100);
    const type = r < 6 ? rng.pick([4, 5, 7]) : rng.int(4);
    const vpid = rng.chance(0.05) ? 0x1_0000 + rng.int(0x1_0000) : rng.chance(0.5) ? vm.vpid : rng.pick(VPIDS);
    let gva = probeOrNear();
    if (!isCanonical48(gva) && isCanonical57(gva)) gva = rng.pick([0x0100_0000_0000_0000n, 1n << 63n, 0x7fff_0000_0000_0000n]) | (gva & 0xffff_ffffn);
    if (rng.chance(0.04)) gva = 0x0080_0000_0000_0000n;
    const expectFail = type > 3 || vpid > 0xffff || ((type === 0 || type === 1 || type === 3) && vpid === 0) || (type === 0 && !isCanonical48(gva));
    const before = expectFail ? tlbSnapshot() : undefined;
    const res = type === 0 ? vcpu.invvpid(type, vpid, gva) : vcpu.invvpid(type, vpid);
    log(`INVVPID type ${type} vpid ${vpid}${type === 0 ? ` ${hex(gva)}` : ""}${expectFail ? " (VMfail)" : ""}`);
    checkVmfail(`INVVPID type ${type} vpid ${vpid}${type === 0 ? ` ${hex(gva)}` : ""}`, res, expectFail, before);
    if (expectFail) return;
    sweep(type === 0 ? legal.invalidatePage(gva, (t) => t.vpid === vpid)
      : type === 1 ? legal.invalidateWhere((t) => t.vpid === vpid)
      : type === 2 ? legal.invalidateWhere((t) => t.vpid !== 0)
      : legal.invalidateWhere((t) => t.vpid === vpid && t.ctx !== "G"));
  };

  const switchVmcs = (): void => {
    stats.switches++;
    if (rng.chance(0.04)) {
      const bad = rng.pick([eptps[1]! & ~7n | 3n, eptps[1]! | (1n << 9n), eptps[1]! | (1n << 50n), eptps[1]! & ~0x38n | (6n << 3n)]);
      let threw: unknown;
      try { vcpu.setVmcs({ eptp: bad }); } catch (e) { threw = e; }
      log(`setVmcs eptp ${hex(bad)} (invalid)`);
      if (!(threw instanceof RangeError) || !/^vmmu: invalid EPTP/.test(threw.message)) fail(`setVmcs({ eptp: ${hex(bad)} }): expected RangeError "vmmu: invalid EPTP ...", got ${String(threw)}`);
      checkState("a refused setVmcs");
      return;
    }
    if (vm.eptp !== null && rng.chance(0.25)) {
      const vpid = rng.pick(VPIDS);
      vcpu.setVmcs({ vpid });
      vm.vpid = vpid;
      log(`setVmcs vpid ${vpid}`);
    } else if (rng.chance(0.2)) {
      vcpu.setVmcs({ eptp: null, vpid: 0 });
      vm.eptp = null; vm.vpid = 0;
      log("setVmcs eptp null vpid 0 (no EPT)");
    } else {
      const eptp = rng.pick(eptps), vpid = rng.pick(VPIDS);
      vcpu.setVmcs({ eptp, vpid });
      vm.eptp = eptp; vm.vpid = vpid;
      log(`setVmcs eptp ${hex(eptp)} vpid ${vpid}`);
    }
    checkState("setVmcs");
  };

  /**
   * Every live linear and combined TLB entry (tlbEntries(): a 4 KiB piece, its
   * VPID, PCID or global, and for a combined one its gpa) must be a piece of a
   * legally cached mapping: one that was produced and not invalidated since.
   */
  const audit = (why: string): void => {
    const entries = vcpu.tlbEntries();
    stats.audited += entries.length;
    for (const e of entries) {
      const kind = e.gpa === undefined ? "lin" : "comb";
      const ok = legal.candidates(e.va, (t) => t.kind === kind && t.vpid === e.vpid && (e.global ? t.ctx === "G" : t.ctx === e.pcid)).some((t) =>
        BigInt(e.pageSize) === t.size && e.level === t.level && e.pa === t.pa + (e.va - t.pieceBase) && (e.gpa === undefined || e.gpa === t.gpa + (e.va - t.pieceBase)));
      if (!ok) {
        const near = legal.candidates(e.va, () => true).map((t) => `${t.kind} vpid ${t.vpid} ${t.ctx}: ${hex(t.pa)} (gpa ${hex(t.gpa)})/${t.size}`);
        fail(`${why}: the TLB holds ${kind === "lin" ? "a linear" : "a combined"} entry no rule allows: va ${hex(e.va)} → ${hex(e.pa)}${e.gpa === undefined ? "" : ` (gpa ${hex(e.gpa)})`}/${e.pageSize}/L${e.level} `
          + `vpid ${e.vpid} ${e.global ? "global" : `pcid ${e.pcid}`}; legal mappings of that page: [${near.join(", ")}]`);
      }
    }
  };

  const burst = (n: number): void => {
    const kind = vm.vpid !== 0 && rng.chance(0.3) ? "invvpid" : vm.eptp !== null && rng.chance(0.3) ? "invept" : "cr3";
    for (let i = 0; i < n; i++) {
      const r = kind === "cr3" ? vcpu.writeCr3(regs.cr3) : kind === "invvpid" ? vcpu.invvpid(1, vm.vpid) : vcpu.invept(1, vm.eptp!);
      if (r !== null) fail(`${kind} burst: ${JSON.stringify(r)}`);
    }
    log(`${n} × ${kind} in ${where()}`);
    checkState(kind);
    const p = pcid();
    if (kind === "cr3") sweep(legal.invalidateWhere((t) => curVpid(t) && t.ctx === p));
    else if (kind === "invvpid") sweep(legal.invalidateWhere(curVpid));
    else {
      const e = ep4ta(vm.eptp!);
      sweep(legal.invalidateWhere((t) => t.kind === "comb" && t.ep4ta === e), legalGp.invalidateWhere((t) => t.ep4ta === e));
    }
  };

  const step = (): void => {
    const r = rng.int(1000);
    if (r < 450) {
      const va = pickProbe(), access = rng.pick(ACCESSES), user = rng.chance(0.3);
      log(`translate ${access}${user ? "/user" : ""} ${hex(va)}`);
      translate(va, access, user);
    } else if (r < 510) {
      batch();
    } else if (r < 620) {
      const target = rng.chance(0.5) ? slotByGpa.get(guestLeafGpaOf(rng.pick(hot))) : undefined;
      const slot = target ?? (rng.chance(0.8) ? rng.pick(leafSlots) : rng.pick(slots));
      const v = editValue(rng, mem, slot);
      log(`guest store ${hex(v)} at ${hex(slot.gpa)} (level ${slot.level}${slot.table ? " table" : ""})`);
      mem.write64(slot.gpa, v);
    } else if (r < 710) {
      const target = vm.eptp !== null && rng.chance(0.5) ? eptSlotByHpa.get(eptEntryOf(rng.pick(hot))) : undefined;
      const mine = vm.eptp !== null && rng.chance(0.7) ? eptSlots.filter((s) => ep4ta(trees[s.tree]!.eptp) === ep4ta(vm.eptp!)) : eptSlots;
      const upper = rng.chance(0.05);
      const slot = target ?? rng.pick(mine.filter((s) => (s.kind === "upper") === upper));
      const v = editEpt(rng, mem, slot, trees[slot.tree]!.ad);
      log(`EPT store ${hex(v)} at ${hex(slot.hpa)} (tree ${slot.tree}, level ${slot.level} ${slot.kind})`);
      mem.write64(slot.hpa, v);
    } else if (r < 745) {
      const va = probeOrNear();
      vcpu.invlpg(va);
      log(`INVLPG ${hex(va)} in ${where()}`);
      const p = pcid();
      if (isCanonical48(va)) sweep(legal.invalidatePage(va, (t) => curVpid(t) && (t.ctx === p || t.ctx === "G")));
    } else if (r < 780) {
      const type = rng.chance(0.05) ? 4 + rng.int(3) : rng.int(4);
      const p = rng.chance(0.05) ? 0x1000 + rng.int(0x1000) : rng.pick(PCIDS);
      const va = probeOrNear();
      const gp = type > 3 || p > 0xfff || (type === 0 && !isCanonical48(va));
      const res = vcpu.invpcid(type, p, va);
      log(`INVPCID type ${type} pcid ${p} ${hex(va)}${gp ? " (#GP)" : ""} in ${where()}`);
      if ((res !== null) !== gp) fail(`INVPCID ${type}/${p}/${hex(va)}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(res)}`);
      if (gp) return;
      sweep(type === 0 ? legal.invalidatePage(va, (t) => curVpid(t) && t.ctx === p)
        : type === 1 ? legal.invalidateWhere((t) => curVpid(t) && t.ctx === p)
        : type === 2 ? legal.invalidateWhere(curVpid)
        : legal.invalidateWhere((t) => curVpid(t) && t.ctx !== "G"));
    } else if (r < 850) {
      const root = rng.pick(roots);
      const v = rng.chance(0.02) ? root | (1n << BigInt(MAXPHY + rng.int(63 - MAXPHY))) : root | BigInt(rng.pick(PCIDS)) | (rng.chance(0.5) ? CR3_NOFLUSH : 0n);
      movCr3(v, "guest");
    } else if (r < 910) {
      switchVmcs();
    } else if (r < 950) {
      invept();
    } else {
      invvpid();
    }
  };

  for (stats.steps = 0; stats.steps < opts.steps; stats.steps++) {
    if (stats.steps % 150 === 0) hot = Array.from({ length: 8 }, () => rng.pick(probes));
    if (stats.steps % 1000 === 500) { burst(20_000); continue; }
    step();
    if (stats.steps % 100 === 99) audit("audit");
    stats.maxLegal = Math.max(stats.maxLegal, legal.count);
    stats.maxLegalGp = Math.max(stats.maxLegalGp, legalGp.count);
  }
  audit("final audit");
  expect(vcpu.tlbStats().live, opts.note).toBeLessThanOrEqual(opts.tlbEntries);
  return stats;
}

const SEED = testSeed();
const STEPS = 4000;
const TLB_SIZES = [64, 4096, 16, 1 << 14];

describe("random VMX sequences never see a translation the SDM forbids", () => {
  TLB_SIZES.forEach((tlbEntries, i) => {
    const seed = (SEED + i * 0x9e3779b9) >>> 0;
    const note = seedNote(SEED, `-t 'run ${i}:'`);
    it(`run ${i}: tlbEntries=${tlbEntries}, 3 EPT trees (4-level, 4-level with A/D, 5-level), VPIDs ${VPIDS.join("/")}, PCIDs ${PCIDS.join("/")}`, async () => {
      const t0 = performance.now();
      const s = await run({ seed, note, steps: STEPS, tlbEntries });
      verbose(`${note} run ${i} tlb ${tlbEntries}: ${s.steps} steps, ${s.accesses} accesses (${s.eptAccesses} under EPT; stale but legal: ${s.staleLinear} linear, `
        + `${s.staleCombined} combined, ${s.staleGuestPhysical} through guest-physical mappings; ${s.faults} faults: ${JSON.stringify(s.faultKinds)}), ${s.switches} VMCS switches, `
        + `${s.invalidations} invalidations swept (${s.swept} re-issued, ${s.sweptMustWalk} with nothing left to hit), ${s.vmfails} VMfails, `
        + `${s.audited} TLB entries audited, ≤${s.maxLegal} legal linear/combined, ≤${s.maxLegalGp} legal guest-physical, ${Math.round(performance.now() - t0)} ms`);
      fuzzCount("tlb-vmx", s.steps);
      expect(s.staleCombined, `${note} the run never used a stale combined mapping`).toBeGreaterThan(0);
      expect(s.sweptMustWalk, note).toBeGreaterThan(0);
      expect(s.eptFaults, note).toBeGreaterThan(0);
      expect(s.vmfails, note).toBeGreaterThan(0);
    });
  });
});

/** A refused instruction and its accepted twin (the same instruction with a valid operand), each run on a filled TLB. */
interface VmfailCase {
  name: string;
  refused: (w: VmxWorld) => X86VmFail | null;
  accepted: (w: VmxWorld) => X86VmFail | null;
}

const eptp0 = (w: VmxWorld): bigint => w.epts[0]!.eptp;
const VMFAIL_CASES: VmfailCase[] = [
  ...[0, 3, 4, 7].map((type): VmfailCase => ({ name: `INVEPT type ${type} (not a supported type)`, refused: (w) => w.vcpu.invept(type, eptp0(w)), accepted: (w) => w.vcpu.invept(1, eptp0(w)) })),
  ...([
    ["memory type 1 (bits 2:0 must be 0 or 6)", (e: bigint) => (e & ~7n) | 1n],
    ["memory type 7", (e: bigint) => e | 7n],
    ["page-walk length 3 (bits 5:3 = 2)", (e: bigint) => (e & ~0x38n) | (2n << 3n)],
    ["page-walk length 6 (bits 5:3 = 5)", (e: bigint) => (e & ~0x38n) | (5n << 3n)],
    ["reserved bit 7", (e: bigint) => e | (1n << 7n)],
    ["reserved bit 11", (e: bigint) => e | (1n << 11n)],
    ["bit 46 = MAXPHYADDR set", (e: bigint) => e | (1n << 46n)],
    ["bit 63 set", (e: bigint) => e | (1n << 63n)],
  ] as const).map(([what, bad]): VmfailCase => ({
    name: `INVEPT single-context with an EPTP VM entry refuses: ${what}`, refused: (w) => w.vcpu.invept(1, bad(eptp0(w))), accepted: (w) => w.vcpu.invept(1, eptp0(w)),
  })),
  ...[4, 5, 7].map((type): VmfailCase => ({ name: `INVVPID type ${type} (not a supported type)`, refused: (w) => w.vcpu.invvpid(type, 1, VA), accepted: (w) => w.vcpu.invvpid(1, 1) })),
  ...[0, 1, 3].map((type): VmfailCase => ({ name: `INVVPID type ${type} with VPID 0`, refused: (w) => w.vcpu.invvpid(type, 0, VA), accepted: (w) => w.vcpu.invvpid(type, 1, VA) })),
  ...[0, 1, 2, 3].map((type): VmfailCase => ({
    name: `INVVPID type ${type} with VPID 0x10000 (descriptor bits 63:16 not 0)`, refused: (w) => w.vcpu.invvpid(type, 0x1_0000, VA), accepted: (w) => w.vcpu.invvpid(type, 1, VA),
  })),
  ...[1n << 63n, 0x0100_0000_0000_0000n, 0x8000_0000_0000_0000n | VA].map((gva): VmfailCase => ({
    name: `INVVPID individual-address with non-canonical ${"0x" + gva.toString(16)}`, refused: (w) => w.vcpu.invvpid(0, 1, gva), accepted: (w) => w.vcpu.invvpid(0, 1, VA),
  })),
];

describe("INVEPT and INVVPID refuse exactly what the SDM refuses (VMfail, VM-instruction error 28), and a refusal flushes nothing", () => {
  it.each(VMFAIL_CASES)("$name", async ({ refused, accepted }) => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: eptp0(w), vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    vcpu.translate(KVA);
    vcpu.setVmcs({ eptp: w.epts[1]!.eptp, vpid: 2 });
    vcpu.translate(VA);
    vcpu.setVmcs({ eptp: eptp0(w), vpid: 1 });
    w.remapGuest(VA, SPARE);
    const snapshot = () => {
      const s = vcpu.tlbStats();
      return JSON.stringify({ entries: vcpu.tlbEntries(), live: s.live, flushAll: s.flushAll, flushNonGlobal: s.flushNonGlobal, flushCtx: s.flushCtx, flushPage: s.flushPage, dropped: s.dropped },
        (_, v) => (typeof v === "bigint" ? v.toString(16) : v));
    };
    const before = snapshot();
    const res = refused(w);
    expect(res).toMatchObject({ kind: "vmfail", vector: -1, errorCode: 28, level: 0 });
    expect(typeof res?.reason === "string" && res.reason.length > 0, "a VMfail says why").toBe(true);
    expect(snapshot()).toBe(before);
    expect(vcpu.translate(VA), "the stale combined mapping is still in use").toMatchObject({ gpa: DATA });
    expect(accepted(w)).toBeNull();
    expect(vcpu.translate(VA), "the same instruction with a valid operand drops it").toMatchObject({ gpa: SPARE });
  });
});
