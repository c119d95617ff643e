/**
 * Random TLB-maintenance sequences on a 2-vCPU arm64 machine: after every
 * step, every translation a vCPU returns is one the Arm ARM allows, every
 * entry an invalidation covers is gone, and every entry the TLB certainly
 * holds (nothing evicted, no tag rollover) still hits. Arm ARM C5.5 (TLBI)
 * and the VMSAv8-64 TLB maintenance rules (Arm ARM chapter D8): what
 * each TLBI covers, operands, TTL hints, range TG,
 * the Linux and KVM sequences (arch/arm64/include/asm/tlbflush.h
 * __flush_tlb_range_op; arch/arm64/kvm/hyp/vhe/tlb.c __kvm_tlb_flush_vmid_range).
 *
 * The model: per vCPU, the translations it may legally hold —
 *  - combined entries: (VMID, ASID or global, VA page), invalidated as their
 *    stage-1 block, with the stage-1 leaf level and the accesses they allow;
 *  - stage-2-only entries: (VMID, IPA page), invalidated as their stage-2 block.
 * An access may be answered by a TLB hit on a legal combined entry that
 * grants it, or by a walk: stage 1 from memory (stage-1 tables live at IPAs
 * whose stage-2 mapping never changes) and, for the output IPA, a fresh
 * stage-2 walk or a legal stage-2-only entry that grants the access. A fault
 * is always the fresh walk's. The fresh walk is the reference walker over a
 * read-only view of guest RAM; the TLB hit counter tells hits from walks.
 * Invalidations remove what they must and leave what they may: IPAS2E1IS and
 * RIPAS2E1IS leave combined entries (the Arm ARM does not require them to
 * go), a TTL hint naming another level, a granule that is not 4K or an
 * UNPREDICTABLE range leave entries as "maybe gone". What an entry allows
 * is what its descriptors allowed as they were after the walk that filled it
 * (so with hardware AF/dirty a clean DBM page is cached read-only), at EL0,
 * EL1 and EL1 with PSTATE.PAN, which changes without maintenance.
 *
 * Descriptors are edited with plain stores and the test invalidates only at
 * random, so stale translations abound.
 */
import { assert, describe, expect, it } from "vitest";
import {
  Arm64Stage1Builder, Arm64Stage2Builder, DESC, HCR, SCTLR, TCR, TLBI_OPS, VTCR, createMachine, encodeTlbiRange,
  encodeTlbiVa, kvmTlbFlushVmidRange, kvmVtcr, linuxFlushTlbRange, s1StartLevel,
  type Arm64Access, type Arm64Fault, type Arm64TranslateResult, type Arm64Vcpu, type GuestMemory, type TlbiCall, type TlbiOp,
} from "../../src/index.js";
import { refTranslateArm64, type RefArm64Result, type RefArm64State } from "../../src/ref/arm64-walk.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../helpers/rng.js";
import { verbose } from "../helpers/note.js";

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const ADDR = 0x0000_ffff_ffff_f000n;
/** The TLB's page-number width: VA[56:12] (so both halves stay apart), IPA[56:12]. */
const VPN_MASK = (1n << 45n) - 1n;

const PRIV = 0x0000_0010_0000_0000n;
const SHARED = 0x0000_7f00_0000_0000n;
const KERN = 0xffff_ff80_0000_0000n;

/** Stage-1 tables: PA = IPA in [TABLES, TABLES + 4 MiB); both VMs map it so and never change that mapping. */
const TABLES = 0x40_0000n;
const D4 = 0x1000_0000n; //   IPAs mapped by 4 KiB stage-2 pages
const D2 = 0x4000_0000n; //   by 2 MiB stage-2 blocks
const D1 = 0x40_8000_0000n; // by 1 GiB stage-2 blocks
const HOLE = 0x2000_0000n; //  inside the IPA space, never mapped
const BEYOND = 1n << 40n; //   outside the 40-bit IPA space
const VM_OUT = [0x10_0000_0000n, 0x20_0000_0000n] as const;

const ASIDS = [1, 2, 3, 0x42, 0x1ff, 0x2301] as const;
/** ASID kept for probing stage-2-only entries: flushed before each use, never in ASIDS (even as 8 bits). */
const PROBE_ASID = 0xfe;
const ACCESSES: readonly Arm64Access[] = ["read", "read", "write", "fetch"];
/**
 * With hardware dirty state a write in a batch may clear AP[2] and so change
 * the rights later entries of the same batch see, while their fresh walks were
 * taken before the batch: such batches do not write. (Setting AF changes no
 * outcome: the read-only reference walk already assumes it.)
 */
const BATCH_ACCESSES_HAFDBS: readonly Arm64Access[] = ["read", "read", "fetch"];
const ACC_CODE: Record<Arm64Access, number> = { read: 0, write: 1, fetch: 2 };
const ALLOW_ALL = 0x1ff;
/** Allow-mask bit of an access at EL0, at EL1, or at EL1 with PSTATE.PAN. */
const bitOf = (access: Arm64Access, el0: boolean, pan: boolean): number => 1 << (ACC_CODE[access] * 3 + (el0 ? 1 : pan ? 2 : 0));
/** (access, EL0, PAN) for every allow-mask bit. */
const MASK_BITS = (["read", "write", "fetch"] as const).flatMap((a) => [[a, false, false], [a, true, false], [a, false, true]] as const);

const VTCR40 = kvmVtcr(40).vtcr & ~VTCR.HA;

type Regs = RefArm64State;
/** A TLB context: an ASID, "G" for global (nG = 0) stage-1 entries, "S2" for stage-2-only entries. */
type Ctx = number | "G" | "S2";

/** The access that put an entry in the TLB, and the context it ran in. */
interface Origin {
  va: bigint;
  access: Arm64Access;
  el0: boolean;
  ttbr0: bigint;
  vttbr: bigint;
}

/** One translation a vCPU may legally hold. */
interface Entry extends Origin {
  cpu: number;
  vmid: number;
  ctx: Ctx;
  /** Page the entry is looked up by: VA page (combined) or IPA page (stage 2). */
  vpn: bigint;
  /** Invalidation extent in pages: the stage-1 block (combined) or stage-2 block. */
  first: bigint;
  pages: bigint;
  level: number;
  pa4k: bigint;
  /** Size a hit reports (combined), or the stage-2 block size. */
  pageSize: number;
  /** Allow mask (bitOf). */
  allow: number;
  /** The vCPU's eviction/rollover count when filled; `sure` only while unchanged. */
  gen: number;
  /** Certainly in the TLB (not merely allowed to be). */
  sure: boolean;
}

interface Outcome {
  pa: bigint;
  pageSize: number;
  level: number;
}

/** The legally cached translations of both vCPUs. */
class Legal {
  private readonly map = new Map<string, Entry[]>();

  private static key(cpu: number, vmid: number, ctx: Ctx, vpn: bigint): string {
    return `${cpu}/${vmid}/${ctx}/${vpn}`;
  }

  get count(): number {
    let n = 0;
    for (const l of this.map.values()) n += l.length;
    return n;
  }

  at(cpu: number, vmid: number, ctx: Ctx, vpn: bigint): Entry[] {
    return this.map.get(Legal.key(cpu, vmid, ctx, vpn)) ?? [];
  }

  /** Adds `e`, or merges it into an entry of the same key that translates and allows the same. */
  add(e: Entry): void {
    const k = Legal.key(e.cpu, e.vmid, e.ctx, e.vpn);
    const l = this.map.get(k);
    const same = l?.find((x) => x.pa4k === e.pa4k && x.pageSize === e.pageSize && x.level === e.level && x.allow === e.allow
      && x.first === e.first && x.pages === e.pages);
    if (same) {
      if (e.sure) { same.sure = true; same.gen = e.gen; }
    } else if (l) {
      l.push(e);
    } else {
      this.map.set(k, [e]);
    }
  }

  clear(cpu: number, vmid: number, ctx: Ctx, vpn: bigint): void {
    this.map.delete(Legal.key(cpu, vmid, ctx, vpn));
  }

  *all(): IterableIterator<Entry> {
    for (const l of this.map.values()) yield* l;
  }

  /** Removes and returns the entries `pred` says must go. */
  removeWhere(pred: (e: Entry) => boolean): Entry[] {
    const out: Entry[] = [];
    for (const [k, l] of this.map) {
      const keep = l.filter((e) => !pred(e));
      if (keep.length === l.length) continue;
      out.push(...l.filter((e) => !keep.includes(e)));
      if (keep.length === 0) this.map.delete(k); else this.map.set(k, keep);
    }
    return out;
  }
}

// ---- TLBI decoding, written from Arm ARM C5.5 independently of src/arm64/tlbi.ts ----

type Kind = "va" | "asid" | "vmall" | "vmalls12" | "ipa" | "all";
const FAMILY: Record<TlbiOp, { kind: Kind; byAsid: boolean; range: boolean }> = {
  VAE1IS: { kind: "va", byAsid: true, range: false }, VALE1IS: { kind: "va", byAsid: true, range: false },
  VAAE1IS: { kind: "va", byAsid: false, range: false }, VAALE1IS: { kind: "va", byAsid: false, range: false },
  ASIDE1IS: { kind: "asid", byAsid: true, range: false }, VMALLE1IS: { kind: "vmall", byAsid: false, range: false },
  VMALLS12E1IS: { kind: "vmalls12", byAsid: false, range: false }, IPAS2E1IS: { kind: "ipa", byAsid: false, range: false },
  IPAS2LE1IS: { kind: "ipa", byAsid: false, range: false }, ALLE1IS: { kind: "all", byAsid: false, range: false },
  RVAE1IS: { kind: "va", byAsid: true, range: true }, RVALE1IS: { kind: "va", byAsid: true, range: true },
  RVAAE1IS: { kind: "va", byAsid: false, range: true }, RVAALE1IS: { kind: "va", byAsid: false, range: true },
  RIPAS2E1IS: { kind: "ipa", byAsid: false, range: true }, RIPAS2LE1IS: { kind: "ipa", byAsid: false, range: true },
};

/**
 * What an op requires of the entries its address range overlaps: "all" must
 * go; a level: entries at that level must go, others may; "none": all may
 * (granule ≠ 4K in TTL, TTL level 0, an UNPREDICTABLE range hint).
 */
type Hint = "all" | "none" | number;

interface ModelOp {
  kind: Kind;
  broadcast: boolean;
  asid?: number;
  startVpn: bigint;
  pages: bigint;
  hint: Hint;
  ignored: boolean;
}

function modelDecode(name: string, x: bigint, as16: boolean): ModelOp {
  const broadcast = name.endsWith("IS");
  const f = FAMILY[(broadcast ? name : name + "IS") as TlbiOp];
  const op: ModelOp = { kind: f.kind, broadcast, startVpn: 0n, pages: 0n, hint: "all", ignored: false };
  if (f.byAsid) op.asid = Number((x >> 48n) & (as16 ? 0xffffn : 0xffn));
  if (f.kind !== "va" && f.kind !== "ipa") return op;
  if (!f.range) {
    op.startVpn = f.kind === "va" ? BigInt.asUintN(64, BigInt.asIntN(44, x & ((1n << 44n) - 1n))) & VPN_MASK : x & ((1n << 36n) - 1n);
    op.pages = 1n;
    const ttl = Number((x >> 44n) & 0xfn);
    op.hint = ttl === 0 ? "all" : ttl >> 2 === 1 && (ttl & 3) !== 0 ? ttl & 3 : "none";
    return op;
  }
  const base = x & ((1n << 37n) - 1n);
  const ttl = Number((x >> 37n) & 3n);
  const num = Number((x >> 39n) & 31n);
  const scale = Number((x >> 44n) & 3n);
  op.pages = BigInt(num + 1) << BigInt(5 * scale + 1);
  op.startVpn = f.kind === "va" ? BigInt.asUintN(64, BigInt.asIntN(37, base)) & VPN_MASK : base;
  op.ignored = ((x >> 46n) & 3n) !== 1n;
  const unpredictable = (ttl === 1 && (base & 0x3ffffn) !== 0n) || (ttl === 2 && (base & 0x1ffn) !== 0n);
  op.hint = ttl === 0 ? "all" : unpredictable ? "none" : ttl;
  return op;
}

// ---- the world ----

interface Slot {
  gpa: bigint;
  stage: 1 | 2;
  level: 0 | 1 | 2 | 3;
  /** Tables this entry may point to (splitting a block, or restoring a table). */
  pointers: bigint[];
  kernel: boolean;
  /** Stage 2: where this VM's outputs go. */
  outBase: bigint;
}

interface World {
  mem: GuestMemory;
  vcpus: Arm64Vcpu[];
  roots: bigint[];
  kernRoot: bigint;
  vttbrs: bigint[];
  slots: Slot[];
  probes: bigint[];
  ipaProbes: bigint[];
}

interface RunOptions {
  seed: number;
  note: string;
  steps: number;
  tlbEntries: number;
  stage2: boolean;
  /** TCR_EL1.AS: 16-bit ASIDs. */
  as16: boolean;
  /** VTCR_EL2.VS: 16-bit VMIDs (else VMID 0x101 aliases VMID 1). */
  vs16: boolean;
  /** TCR_EL1.T1SZ: 16 (start level 0) or 25 (start level 1). */
  t1sz: 16 | 25;
  /** Force a TLB tag rollover with a burst of ASIDE1. */
  burst: boolean;
  /** TCR_EL1.HA/HD and VTCR_EL2.HA/HD: hardware Access flag and dirty state (DBM) in both stages. */
  hafdbs: boolean;
  /** TCR_EL1.TBI0/TBI1: accesses may carry a tag in VA[63:56]. */
  tbi: boolean;
}

interface RunStats {
  steps: number;
  accesses: number;
  hits: number;
  staleUses: number;
  staleS2Uses: number;
  faults: number;
  tlbis: number;
  ignored: number;
  sequences: number;
  removed: number;
  coveredChecked: number;
  coveredMustWalk: number;
  s2Probed: number;
  /** Certain entries outside every invalidation's scope re-issued by sweep (each must hit). */
  stayChecked: number;
  evictions: number;
  rollovers: number;
  adWrites: number;
  maxLegal: number;
}

function pickIpaPage(rng: Rng): bigint {
  const r = rng.int(100);
  if (r < 45) return D4 + BigInt(rng.int(16)) * K4;
  if (r < 65) return D2 + BigInt(rng.int(8)) * M2 + BigInt(rng.pick([0, 1, 0xff, 0x1ff, rng.int(512)])) * K4;
  if (r < 82) return D1 + BigInt(rng.int(2)) * G1 + BigInt(rng.int(4)) * M2 + BigInt(rng.pick([0, 1, 0x1ff, rng.int(512)])) * K4;
  if (r < 90) return HOLE + BigInt(rng.int(4)) * K4;
  if (r < 94) return BEYOND + BigInt(rng.int(4)) * K4;
  return TABLES + BigInt(rng.int(1024)) * K4;
}

function pickIpa2M(rng: Rng): bigint {
  const r = rng.int(100);
  if (r < 20) return D4;
  if (r < 60) return D2 + BigInt(rng.int(8)) * M2;
  if (r < 90) return D1 + BigInt(rng.int(2)) * G1 + BigInt(rng.int(4)) * M2;
  return HOLE;
}

function pickIpa1G(rng: Rng): bigint {
  return rng.pick([0n, D2, D1, D1 + G1, 0x80_0000_0000n]);
}

function s1Flags(rng: Rng, kernel: boolean) {
  return {
    el0: rng.chance(kernel ? 0.2 : 0.65), readOnly: rng.chance(0.3), uxn: rng.chance(0.2), pxn: rng.chance(0.25),
    nG: rng.chance(kernel ? 0.2 : 0.75), af: rng.chance(0.95), dbm: rng.chance(0.3),
  };
}

function randomS1Leaf(rng: Rng, level: 1 | 2 | 3, kernel: boolean): bigint {
  const size = level === 3 ? "4K" : level === 2 ? "2M" : "1G";
  const out = level === 3 ? pickIpaPage(rng) : level === 2 ? pickIpa2M(rng) : pickIpa1G(rng);
  return Arm64Stage1Builder.leaf(out, size, s1Flags(rng, kernel));
}

function randomS2Leaf(rng: Rng, level: 1 | 2 | 3, outBase: bigint): bigint {
  const size = level === 3 ? "4K" : level === 2 ? "2M" : "1G";
  const bytes = level === 3 ? K4 : level === 2 ? M2 : G1;
  const out = outBase + (BigInt(rng.int(1 << 20)) * bytes) % (64n * G1);
  return Arm64Stage2Builder.leaf(out, size, {
    read: rng.chance(0.9), write: rng.chance(0.7), xn: rng.chance(0.75) ? 0 : (rng.int(4) as 0 | 1 | 2 | 3), af: rng.chance(0.94),
    dbm: rng.chance(0.3),
  });
}

const s1Pointer = (rng: Rng, table: bigint): bigint => table | 3n | (rng.chance(0.15) ? BigInt(rng.int(16)) << 59n : 0n);

/** A new value for a stage-1 slot: a table's attributes flipped, a block split or merged, a fresh leaf, one flag flipped, or invalid. */
function editS1(rng: Rng, mem: GuestMemory, slot: Slot): bigint {
  const cur = mem.read64(slot.gpa);
  const isTable = slot.level < 3 && (cur & 3n) === 3n;
  if (slot.level === 0 || isTable) {
    if (slot.pointers.length > 0 && rng.chance(0.3)) return s1Pointer(rng, rng.pick(slot.pointers));
    if (slot.level !== 0 && rng.chance(0.4)) return randomS1Leaf(rng, slot.level, slot.kernel);
    return cur ^ rng.pick([DESC.APTABLE0, DESC.APTABLE1, DESC.UXNTABLE, DESC.PXNTABLE, DESC.VALID]);
  }
  const r = rng.int(100);
  if (r < 8) return 0n;
  if (slot.pointers.length > 0 && r < 35) return s1Pointer(rng, rng.pick(slot.pointers));
  if ((cur & DESC.VALID) !== 0n && r < 65) return cur ^ rng.pick([DESC.AP1, DESC.AP2, DESC.UXN, DESC.PXN, DESC.NG, DESC.AF, DESC.NG, DESC.AP1]);
  return randomS1Leaf(rng, slot.level, slot.kernel);
}

/** A new value for a stage-2 slot: a block split or merged, a fresh leaf, one permission flipped, or invalid. */
function editS2(rng: Rng, mem: GuestMemory, slot: Slot): bigint {
  const level = slot.level as 1 | 2 | 3;
  const cur = mem.read64(slot.gpa);
  if (level < 3 && (cur & 3n) === 3n) {
    if (rng.chance(0.6)) return randomS2Leaf(rng, level, slot.outBase);
    return rng.chance(0.5) && slot.pointers.length > 0 ? rng.pick(slot.pointers) | 3n : cur ^ DESC.VALID;
  }
  const r = rng.int(100);
  if (r < 8) return 0n;
  if (slot.pointers.length > 0 && r < 35) return rng.pick(slot.pointers) | 3n;
  if ((cur & DESC.VALID) !== 0n && r < 65) return cur ^ rng.pick([DESC.S2AP_R, DESC.S2AP_W, 1n << 53n, 1n << 54n, DESC.AF]);
  return randomS2Leaf(rng, level, slot.outBase);
}

/**
 * Two VMs' stage 2 (4 KiB pages, 2 MiB and 1 GiB blocks, each splittable),
 * four user address spaces (a private region each; a shared region whose
 * tables all four use: pages, a 2 MiB and a 1 GiB block) and a kernel half
 * (pages, a 2 MiB and a 1 GiB block, mostly global). Regions are placed so
 * that no two pages one context caches share the low 20 bits of their page
 * number: a direct-mapped TLB of 2^20 entries then evicts only when two
 * contexts' salted indexes meet.
 */
async function buildWorld(rng: Rng, opts: RunOptions): Promise<World> {
  const machine = await createMachine({ arch: "arm64", memoryBytes: 16 << 20, vcpus: 2, tlbEntries: opts.tlbEntries });
  const mem = machine.memory;
  const slots: Slot[] = [];
  const { startLevel } = kvmVtcr(40);
  const vms = [0, 1].map((i) => new Arm64Stage2Builder(mem, {
    ipaBits: 40, startLevel, tableBase: 0x10_0000n * BigInt(i + 1), tableLimit: 0x10_0000n * BigInt(i + 2),
  }));
  vms[0]!.mapRange(TABLES, TABLES, 2, "2M");
  vms[1]!.mapRange(TABLES, TABLES, 1024, "4K");
  const entryIn = (table: bigint, addr: bigint, level: number): bigint =>
    table + (((addr >> BigInt(12 + 9 * (3 - level))) & (level === startLevel ? 1023n : 511n)) << 3n);
  vms.forEach((vm, i) => {
    const outBase = VM_OUT[i]!;
    const slot = (gpa: bigint, level: 1 | 2 | 3, pointers: bigint[] = []) => slots.push({ gpa, stage: 2, level, pointers, kernel: false, outBase });
    const table = (level: 1 | 2 | 3, indexes: number[]): bigint => {
      const t = vm.allocTable();
      for (const x of indexes) {
        mem.write64(t + BigInt(x) * 8n, randomS2Leaf(rng, level, outBase));
        slot(t + BigInt(x) * 8n, level);
      }
      return t;
    };
    const flags = () => ({ write: rng.chance(0.8), xn: (rng.chance(0.8) ? 0 : rng.int(4)) as 0 | 1 | 2 | 3 });
    for (let k = 0n; k < 16n; k++) slot(vm.map(D4 + k * K4, outBase + BigInt(rng.int(1 << 16)) * K4, "4K", flags()), 3);
    slot(entryIn(vm.tableFor(D4, 2), D4, 2), 2, [vm.tableFor(D4, 3)]);
    for (let j = 0n; j < 8n; j++) slot(vm.map(D2 + j * M2, outBase + BigInt(rng.int(1 << 12)) * M2, "2M", flags()), 2, j === 0n ? [table(3, [0, 1, 0xff, 0x1ff])] : []);
    slot(entryIn(vm.root, D2, 1), 1, [vm.tableFor(D2, 2)]);
    const pd = vm.allocTable();
    for (const x of [0, 1]) { mem.write64(pd + BigInt(x) * 8n, randomS2Leaf(rng, 2, outBase)); slot(pd + BigInt(x) * 8n, 2); }
    const pt = table(3, [0, 0x1ff]);
    mem.write64(pd + 16n, pt | 3n);
    slot(pd + 16n, 2, [pt]);
    for (let g = 0n; g < 2n; g++) slot(vm.map(D1 + g * G1, outBase + BigInt(rng.int(64)) * G1, "1G", flags()), 1, g === 0n ? [pd] : []);
  });

  const users = [0, 1, 2, 3].map((i) => new Arm64Stage1Builder(mem, { tableBase: TABLES + BigInt(i) * 0x8_0000n, tableLimit: TABLES + BigInt(i + 1) * 0x8_0000n }));
  const kern = new Arm64Stage1Builder(mem, { tableBase: 0x60_0000n, tableLimit: 0x70_0000n, tsz: opts.t1sz });
  const s1slot = (gpa: bigint, level: 0 | 1 | 2 | 3, kernel: boolean, pointers: bigint[] = []) =>
    slots.push({ gpa, stage: 1, level, pointers, kernel, outBase: 0n });
  const s1table = (b: Arm64Stage1Builder, level: 1 | 2 | 3, indexes: number[], kernel: boolean): bigint => {
    const t = b.allocTable();
    for (const x of indexes) {
      mem.write64(t + BigInt(x) * 8n, randomS1Leaf(rng, level, kernel));
      s1slot(t + BigInt(x) * 8n, level, kernel);
    }
    return t;
  };
  const s1entry = (table: bigint, va: bigint, level: number): bigint => table + (((va >> BigInt(12 + 9 * (3 - level))) & 511n) << 3n);
  /** The table entry for `va` at `level` as a slot that may become a block and back. */
  const tableSlot = (b: Arm64Stage1Builder, va: bigint, level: 1 | 2, kernel: boolean) => {
    const g = s1entry(b.tableFor(va, level), va, level);
    s1slot(g, level, kernel, [mem.read64(g) & ADDR]);
  };
  for (const b of users) {
    for (let k = 0n; k < 4n; k++) s1slot(b.map(PRIV + k * K4, pickIpaPage(rng), "4K", s1Flags(rng, false)), 3, false);
    tableSlot(b, PRIV, 2, false);
    s1slot(b.map(PRIV + 2n * M2, pickIpa2M(rng), "2M", s1Flags(rng, false)), 2, false, [s1table(b, 3, [0, 1, 0x1ff], false)]);
  }
  const u0 = users[0]!;
  for (let k = 0n; k < 4n; k++) s1slot(u0.map(SHARED + (0x40n + k) * K4, pickIpaPage(rng), "4K", s1Flags(rng, false)), 3, false);
  s1slot(u0.map(SHARED + M2, pickIpa2M(rng), "2M", s1Flags(rng, false)), 2, false, [s1table(u0, 3, [0, 7, 0x100, 0x1ff], false)]);
  tableSlot(u0, SHARED, 2, false);
  const pd = u0.allocTable();
  mem.write64(pd, randomS1Leaf(rng, 2, false));
  s1slot(pd, 2, false, [s1table(u0, 3, [0, 3], false)]);
  const pt = s1table(u0, 3, [2, 0x1ff], false);
  mem.write64(pd + 24n, pt | 3n);
  s1slot(pd + 24n, 2, false, [pt]);
  s1slot(u0.map(SHARED + G1, pickIpa1G(rng), "1G", s1Flags(rng, false)), 1, false, [pd]);
  const sharedL0 = s1entry(u0.root, SHARED, 0);
  for (const b of users) {
    const g = s1entry(b.root, SHARED, 0);
    mem.write64(g, mem.read64(sharedL0));
    s1slot(g, 0, false, [mem.read64(sharedL0) & ADDR]);
  }
  for (let k = 0n; k < 4n; k++) s1slot(kern.map(KERN + (0x80n + k) * K4, pickIpaPage(rng), "4K", s1Flags(rng, true)), 3, true);
  s1slot(kern.map(KERN + 3n * M2, pickIpa2M(rng), "2M", { ...s1Flags(rng, true), nG: false }), 2, true, [s1table(kern, 3, [1], true)]);
  tableSlot(kern, KERN, 2, true);
  s1slot(kern.map(KERN + 2n * G1, pickIpa1G(rng), "1G", { ...s1Flags(rng, true), nG: rng.chance(0.1) }), 1, true);

  const probes: bigint[] = [];
  for (let k = 0n; k < 4n; k++) probes.push(PRIV + k * K4 + 0x10n * k, SHARED + (0x40n + k) * K4 + 8n, KERN + (0x80n + k) * K4 + 0xff8n);
  for (const o of [0x10_0000n, 2n * M2, 2n * M2 + K4 + 0x40n, 2n * M2 + 0x1f_f123n, 2n * M2 + 0x10_0000n]) probes.push(PRIV + o);
  for (const o of [0n, 7n * K4 + 0x10n, 0x10_0000n, 0x1f_f000n]) probes.push(SHARED + M2 + o);
  for (const o of [0x123n, 3n * K4, 0x60_2008n, 0x7f_f000n, 0x3fff_f000n, 0x1000_0000n]) probes.push(SHARED + G1 + o);
  for (const o of [0n, K4, 0x1f_f000n]) probes.push(KERN + 3n * M2 + o);
  for (const o of [0n, 3n * M2 + 0x10n, 0x3fe0_0000n, 0x1234_5678n]) probes.push(KERN + 2n * G1 + o);
  const ipaProbes: bigint[] = [TABLES, TABLES + 0x21_0000n, HOLE];
  for (let k = 0n; k < 16n; k++) ipaProbes.push(D4 + k * K4);
  for (let j = 0n; j < 8n; j++) ipaProbes.push(D2 + j * M2, D2 + j * M2 + 0x1f_f000n);
  for (const o of [0n, K4, 0x1ff_000n, M2 + 0x3000n, 2n * M2, G1 + 3n * M2]) ipaProbes.push(D1 + o);
  return {
    mem, vcpus: [machine.vcpu(0), machine.vcpu(1)], roots: users.map((b) => b.root), kernRoot: kern.root,
    vttbrs: [vms[0]!.vttbr(1), vms[1]!.vttbr(2), vms[1]!.vttbr(0x101)], slots, probes, ipaProbes,
  };
}

function readOnly(mem: GuestMemory): RefMemory {
  return {
    read64: (gpa) => (mem.contains(gpa) && mem.contains(gpa + 7n) ? mem.read64(gpa) : undefined),
    cmpxchg64: (gpa, expected) => mem.read64(gpa) === expected,
  };
}

const hex = (v: bigint): string => "0x" + v.toString(16);
const showOut = (o: Outcome): string => `${hex(o.pa)}/${o.pageSize >= 1 << 30 ? "1G" : o.pageSize >= 1 << 21 ? "2M" : "4K"}/L${o.level}`;
const showFault = (f: { stage: number; kind: string; level: number; s1ptw: boolean; ipa?: bigint }): string =>
  `#S${f.stage} ${f.kind} L${f.level}${f.s1ptw ? " s1ptw" : ""}${f.ipa !== undefined ? ` ipa ${hex(f.ipa)}` : ""}`;
const show = (r: Arm64TranslateResult | RefArm64Result): string =>
  "fault" in r ? showFault(r.fault) : "ok" in r && !r.ok ? showFault(r) : showOut(r as Outcome);
/** `va` with its top byte replaced by copies of bit 55: the address a TBI regime translates. */
const untag = (va: bigint): bigint => BigInt.asUintN(64, BigInt.asIntN(56, va));
const sameOutcome = (a: Outcome, b: Outcome): boolean => a.pa === b.pa && a.pageSize === b.pageSize && a.level === b.level;
const sameFault = (f: Arm64Fault, w: RefArm64Result): boolean =>
  !w.ok && f.stage === w.stage && f.fsc === w.fsc && f.level === w.level && f.kind === w.kind && f.s1ptw === w.s1ptw
  && f.write === w.write && f.ipa === (w.stage === 2 ? w.ipa : undefined);

/** Runs `opts.steps` random steps, checking every translation and every invalidation against the model. */
async function run(opts: RunOptions): Promise<RunStats> {
  const rng = new Rng(opts.seed);
  const w = await buildWorld(rng, opts);
  const { mem, vcpus } = w;
  const ro = readOnly(mem);
  const s2on = opts.stage2;
  const tcr = 16n | (BigInt(opts.t1sz) << 16n) | TCR.TG1_4K | (5n << 32n) | (opts.as16 ? TCR.AS : 0n) | (opts.hafdbs ? TCR.HA | TCR.HD : 0n)
    | (opts.tbi ? TCR.TBI0 | TCR.TBI1 : 0n);
  const vtcr = (opts.vs16 ? VTCR40 : VTCR40 & ~VTCR.VS) | (opts.hafdbs ? VTCR.HA | VTCR.HD : 0n);
  const regs: Regs[] = [0, 1].map((cpu) => ({
    ttbr0: w.roots[cpu]! | (BigInt(ASIDS[cpu]!) << 48n), ttbr1: w.kernRoot, tcr, sctlr: SCTLR.M,
    vttbr: w.vttbrs[0]!, vtcr, hcr: s2on ? HCR.VM : 0n, pan: false,
  }));
  vcpus.forEach((v, cpu) => v.setSystemRegisters(regs[cpu]!));
  const legal = new Legal();
  const stats: RunStats = {
    steps: 0, accesses: 0, hits: 0, staleUses: 0, staleS2Uses: 0, faults: 0, tlbis: 0, ignored: 0, sequences: 0, removed: 0,
    coveredChecked: 0, coveredMustWalk: 0, s2Probed: 0, stayChecked: 0, evictions: 0, rollovers: 0, adWrites: 0, maxLegal: 0,
  };
  const trail: string[] = [];
  const log = (s: string) => { trail.push(`${stats.steps}: ${s}`); if (trail.length > 24) trail.shift(); };
  const fail = (msg: string): never => assert.fail(`${opts.note} step ${stats.steps}: ${msg}\nlast steps:\n  ${trail.join("\n  ")}`);

  const vmidOf = (r: Regs): number => Number((r.vttbr >> 48n) & ((r.vtcr & VTCR.VS) !== 0n ? 0xffffn : 0xffn));
  const asidOf = (r: Regs): number => Number((r.ttbr0 >> 48n) & (opts.as16 ? 0xffffn : 0xffn));
  const gen = (cpu: number): number => {
    const t = vcpus[cpu]!.tlbStats();
    return t.evictions + t.rollovers + vcpus[cpu]!.tlbiStats().contextEvictions;
  };
  const ref = (r: Regs, va: bigint, access: Arm64Access, el0: boolean): RefArm64Result => refTranslateArm64(ro, r, va, access, el0);
  /** Stage 1 alone (stage-1 tables read the same with stage 2 off: their IPAs are their PAs). */
  const stage1 = (r: Regs, va: bigint, access: Arm64Access, el0: boolean): RefArm64Result =>
    s2on ? ref({ ...r, hcr: 0n }, va, access, el0) : ref(r, va, access, el0);
  /**
   * Accesses the stage-1 leaf of `va` grants as it now is in memory: with
   * hardware AF/dirty off, so an AF = 0 leaf grants nothing and a clean DBM
   * leaf no write (a TLB entry must re-walk to set them). PAN does not affect
   * fetches.
   */
  const stage1Mask = (r: Regs, va: bigint): number => {
    const s = { ...r, hcr: 0n, tcr: r.tcr & ~(TCR.HA | TCR.HD) };
    let m = 0;
    for (const [a, el0, pan] of MASK_BITS) {
      if (a === "fetch" && pan) { if ((m & bitOf(a, false, false)) !== 0) m |= bitOf(a, false, true); continue; }
      if (ref({ ...s, pan }, va, a, el0).ok) m |= bitOf(a, el0, pan);
    }
    return m;
  };
  /** Fresh stage-2 translation of `ipa` (as it now is, like stage1Mask): its 4K piece, block size, level and allow mask. */
  const stage2Info = (r: Regs, ipa: bigint) => {
    const s = { ...r, sctlr: 0n, vtcr: r.vtcr & ~(VTCR.HA | VTCR.HD) };
    let m = 0;
    let found: Extract<RefArm64Result, { ok: true }> | undefined;
    for (const [a, el0, also] of [["read", false, [true]], ["write", false, [true]], ["fetch", false, []], ["fetch", true, []]] as const) {
      const res = ref(s, ipa, a, el0);
      if (!res.ok) continue;
      found ??= res;
      m |= bitOf(a, el0, false);
      if (!el0) m |= bitOf(a, false, true);
      for (const e of also) m |= bitOf(a, e, false);
    }
    return found ? { pa4k: found.pa & ~0xfffn, size: found.pageSize, level: found.level, mask: m } : undefined;
  };
  /** Whether `va` lies in the range its TTBR region translates (VA[63:64−TnSZ] all equal to VA[55]; no TBI). */
  const inRange = (r: Regs, va: bigint): boolean => {
    const upper = ((va >> 55n) & 1n) === 1n;
    const vaBits = 64n - (upper ? (r.tcr >> 16n) & 63n : r.tcr & 63n);
    const top = (opts.tbi ? untag(va) : va) >> vaBits;
    return top === (upper ? (1n << (64n - vaBits)) - 1n : 0n);
  };
  /** The stage-1 walk of `va` (in range): the table pages it reads and the last descriptor. */
  const stage1Tables = (r: Regs, va: bigint): { tables: bigint[]; last: bigint } => {
    const upper = ((va >> 55n) & 1n) === 1n;
    let level = s1StartLevel(Number(upper ? (r.tcr >> 16n) & 63n : r.tcr & 63n));
    let table = (upper ? r.ttbr1 : r.ttbr0) & ADDR;
    const tables: bigint[] = [];
    for (;;) {
      tables.push(table);
      const d = mem.read64(table + (((va >> BigInt(12 + 9 * (3 - level))) & 511n) << 3n));
      if (level < 3 && (d & 3n) === 3n) { table = d & ADDR; level++; continue; }
      return { tables, last: d };
    }
  };
  /**
   * The stage-2 translations a walk of `va` may have cached for the stage-1
   * table pages it read: legal (as fresh walks), never certain (a hit on an
   * older one is as likely). They matter when the VMID is shared by two VMs
   * whose stage 2 maps the table region with different block sizes.
   */
  const addTableEntries = (cpu: number, r: Regs, va: bigint, origin: Origin): void => {
    const vmid = vmidOf(r);
    for (const t of stage1Tables(r, va).tables) {
      const info = stage2Info(r, t);
      if (!info) continue;
      const vpn = (t >> 12n) & VPN_MASK;
      if (legal.at(cpu, vmid, "S2", vpn).some((e) => e.pa4k === info.pa4k && e.pageSize === info.size && e.allow === info.mask)) continue;
      const size = BigInt(info.size);
      legal.add({
        ...origin, cpu, vmid, ctx: "S2", vpn, first: ((t & ~(size - 1n)) >> 12n) & VPN_MASK, pages: size >> 12n,
        level: info.level, pa4k: info.pa4k, pageSize: info.size, allow: info.mask, gen: 0, sure: false,
      });
    }
  };

  type Source = "hit" | "walk" | "either";

  /**
   * Judges one translation on vCPU `cpu` and updates the model.
   * - A fault must be the fresh walk's and cannot be a hit.
   * - A hit must be a legal combined entry that grants the access; a walk must
   *   be the fresh walk, or stage 1 from memory with a legal stage-2-only entry
   *   for the output IPA ("either" for batches, which do not say).
   * - A walk by a single translate may not miss a combined entry the model
   *   holds as certain, nor pass over such a stage-2-only entry (unless the
   *   access itself evicted something, which may have been that entry).
   * - After a walk the page's entries in the current ASID are gone (the vCPU
   *   dropped or never had them; a tagged VA is looked up under its untagged
   *   page when TBI applies), its fill replaces the entry of its key, and a fresh stage-2
   *   walk's result is legal too.
   * `g0` is the vCPU's eviction count before the access: fills are certain
   * only if the access itself evicted nothing. Returns whether a hit could
   * have given the answer.
   */
  const judge = (cpu: number, va: bigint, access: Arm64Access, el0: boolean, source: Source, want: RefArm64Result,
    s1: RefArm64Result, got: Arm64TranslateResult, g0: number | null): boolean => {
    stats.accesses++;
    const r = regs[cpu]!;
    const vmid = vmidOf(r), asid = asidOf(r);
    const vpn = (untag(va) >> 12n) & VPN_MASK;
    const bit = bitOf(access, el0, r.pan);
    const g = gen(cpu);
    const what = `vCPU ${cpu} ${access}${el0 ? "/EL0" : ""} ${hex(va)} (VMID ${vmid} ASID ${asid}, ${source})`;
    const cur = legal.at(cpu, vmid, asid, vpn), glob = legal.at(cpu, vmid, "G", vpn);
    /**
     * The vCPU looks a tagged VA up under its untagged page when TBI applies (this
     * regime sets TBI0/TBI1 and no TBID, so for every access); without TBI a
     * tagged VA faults before any lookup and drops nothing.
     */
    const lookedUp = untag(va) === va || opts.tbi;
    const hitOuts = [...cur, ...glob].filter((e) => (e.allow & bit) !== 0)
      .map((e) => ({ pa: e.pa4k | (va & 0xfffn), pageSize: e.pageSize, level: e.level }));
    const ipa = s1.ok ? s1.pa : -1n;
    const ipaVpn = (ipa >> 12n) & VPN_MASK;
    const s2c = s2on && s1.ok ? legal.at(cpu, vmid, "S2", ipaVpn).filter((e) => (e.allow & bit) !== 0) : [];
    const viaS2 = (e: Entry): Outcome => ({ pa: e.pa4k | (ipa & 0xfffn), pageSize: Math.min(s1.ok ? s1.pageSize : 0, e.pageSize), level: s1.ok ? s1.level : 0 });
    const sure = (e: Entry) => e.sure && e.gen === (g0 ?? g);
    const describe = () => {
      const c = [...cur, ...glob].map((e) => `${e.ctx}:${hex(e.pa4k)}/${e.pageSize}/L${e.level}/a${e.allow.toString(2)}${e.sure ? "!" : ""}`);
      const s = (s1.ok ? legal.at(cpu, vmid, "S2", ipaVpn) : []).map((e) => `S2:${hex(e.pa4k)}/${e.pageSize}/a${e.allow.toString(2)}${e.sure ? "!" : ""}`);
      return `fresh walk gives ${show(want)}, stage 1 ${show(s1)}; legally cached: [${[...c, ...s].join(", ")}]`;
    };
    const strict = () => {
      if (source !== "walk" || untag(va) !== va) return;
      const c = cur.find((e) => sure(e) && (e.allow & bit) !== 0) ?? (cur.length === 0 ? glob.find((e) => sure(e) && (e.allow & bit) !== 0) : undefined);
      if (c) fail(`${what}: missed an entry the TLB certainly holds (${c.ctx}:${hex(c.pa4k)}, filled by ${c.access} ${hex(c.va)}); got ${show(got)}; ${describe()}`);
      const s = g0 === g ? s2c.find(sure) : undefined;
      if (s && ("fault" in got || !sameOutcome(viaS2(s), got))) {
        fail(`${what}: a stage-2 entry the TLB certainly holds (${hex(s.pa4k)}) was not used; got ${show(got)}; ${describe()}`);
      }
    };

    if ("fault" in got) {
      stats.faults++;
      if (!sameFault(got.fault, want)) fail(`${what}: faulted ${show(got)}; ${describe()}`);
      if (source === "hit") fail(`${what}: a fault counted as a TLB hit`);
      strict();
      if (lookedUp) legal.clear(cpu, vmid, asid, vpn); else for (const e of cur) e.sure = false;
      for (const e of glob) e.sure = false;
      if (s2on && s1.ok && !want.ok && want.stage === 2 && !want.s1ptw) legal.clear(cpu, vmid, "S2", ipaVpn);
      if (s2on && want.ok === false && want.stage === 1 && inRange(r, va)) addTableEntries(cpu, r, va, { va, access, el0, ttbr0: r.ttbr0, vttbr: r.vttbr });
      if (s2on && s1.ok) addTableEntries(cpu, r, va, { va, access, el0, ttbr0: r.ttbr0, vttbr: r.vttbr });
      return false;
    }
    const freshOut = want.ok ? { pa: want.pa, pageSize: want.pageSize, level: want.level } : undefined;
    const isFresh = freshOut !== undefined && sameOutcome(freshOut, got);
    const staleS2 = s2c.filter((e) => sameOutcome(viaS2(e), got));
    const byHit = hitOuts.some((o) => sameOutcome(o, got));
    const byWalk = isFresh || staleS2.length > 0;
    if (source === "hit" ? !byHit : source === "walk" ? !byWalk : !byHit && !byWalk) fail(`${what}: gave ${show(got)}; ${describe()}`);
    strict();
    if (!isFresh) stats.staleUses++;
    const mode = source !== "either" ? source : byHit && byWalk ? "ambiguous" : byHit ? "hit" : "walk";
    if (mode === "hit") { stats.hits++; return true; }
    if (!isFresh && mode === "walk") stats.staleS2Uses++;
    if (!s1.ok) return fail(`${what}: a walk succeeded but stage 1 alone gives ${show(s1)}`);

    const precise = mode === "walk";
    const certain = precise && g0 !== null && g0 === g;
    if (precise && lookedUp) legal.clear(cpu, vmid, asid, vpn); else for (const e of cur) e.sure = false;
    for (const e of glob) e.sure = false;
    const origin: Origin = { va, access, el0, ttbr0: r.ttbr0, vttbr: r.vttbr };
    if (s2on) addTableEntries(cpu, r, va, origin);
    const s2Masks: number[] = [];
    if (!s2on) {
      s2Masks.push(ALLOW_ALL);
    } else {
      const info = isFresh ? stage2Info(r, ipa) : undefined;
      // With hardware AF a walk leaves stage 2's AF set; an ambiguous batch
      // answer whose stage 2 still has AF = 0 was the hit, and filled nothing.
      if (isFresh && !info && staleS2.length === 0 && precise) return fail(`${what}: the fresh walk succeeded but stage 2 of ${hex(ipa)} alone does not`);
      if (info) {
        const only = precise && staleS2.length === 0;
        if (only) legal.clear(cpu, vmid, "S2", ipaVpn); else for (const e of legal.at(cpu, vmid, "S2", ipaVpn)) e.sure = false;
        const size = BigInt(info.size);
        legal.add({
          ...origin, cpu, vmid, ctx: "S2", vpn: ipaVpn, first: ((ipa & ~(size - 1n)) >> 12n) & VPN_MASK, pages: size >> 12n,
          level: info.level, pa4k: info.pa4k, pageSize: info.size, allow: info.mask, gen: g, sure: only && certain,
        });
        s2Masks.push(info.mask);
      }
      for (const e of staleS2) s2Masks.push(e.allow);
    }
    const ctx: Ctx = (stage1Tables(r, va).last & DESC.NG) !== 0n ? asid : "G";
    if (precise) legal.clear(cpu, vmid, ctx, vpn);
    const m1 = stage1Mask(r, va);
    const masks = [...new Set(s2Masks.map((m) => m & m1))];
    const size = BigInt(s1.pageSize);
    for (const allow of masks) {
      legal.add({
        ...origin, cpu, vmid, ctx, vpn, first: ((untag(va) & ~(size - 1n)) >> 12n) & VPN_MASK, pages: size >> 12n, level: s1.level,
        pa4k: got.pa & ~0xfffn, pageSize: got.pageSize, allow, gen: g, sure: certain && masks.length === 1,
      });
    }
    return byHit;
  };

  const translate = (cpu: number, va: bigint, access: Arm64Access, el0: boolean): boolean => {
    const v = vcpus[cpu]!, r = regs[cpu]!;
    const want = ref(r, va, access, el0);
    const s1 = s2on ? stage1(r, va, access, el0) : want;
    const g0 = gen(cpu);
    const h = v.tlbStats().hits;
    const got = v.translate(va, access, el0);
    const hit = v.tlbStats().hits > h;
    judge(cpu, va, access, el0, hit ? "hit" : "walk", want, s1, got, g0);
    return hit;
  };

  let hot: bigint[] = [];
  const pickProbe = (): bigint => (rng.chance(0.8) ? rng.pick(hot) : rng.pick(w.probes));
  /** With TBI, sometimes a random tag in VA[63:56]. */
  const tag = (va: bigint): bigint => (opts.tbi && rng.chance(0.3) ? (va & ((1n << 56n) - 1n)) | (BigInt(rng.int(256)) << 56n) : va);

  const batch = (): void => {
    const cpu = rng.int(2), v = vcpus[cpu]!, r = regs[cpu]!;
    const n = 1 + rng.int(24);
    const el0 = rng.chance(0.4);
    const vas = new BigUint64Array(n);
    const acc = new Uint8Array(n);
    const kinds: Arm64Access[] = [];
    for (let i = 0; i < n; i++) {
      vas[i] = tag(pickProbe());
      kinds.push(rng.pick(opts.hafdbs ? BATCH_ACCESSES_HAFDBS : ACCESSES));
      acc[i] = ACC_CODE[kinds[i]!];
    }
    const wants = kinds.map((k, i) => ref(r, vas[i]!, k, el0));
    const s1s = kinds.map((k, i) => (s2on ? stage1(r, vas[i]!, k, el0) : wants[i]!));
    const h = v.tlbStats().hits;
    let pas: BigUint64Array, sts: Uint32Array, faults: number;
    if (rng.chance(0.5)) {
      const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
      faults = v.translateBatch(vas, acc, el0, out);
      pas = out.pa; sts = out.status;
    } else {
      const bt = v.batch();
      bt.va.set(vas);
      bt.access.set(acc);
      faults = bt.run(n, el0);
      pas = bt.pa.slice(0, n); sts = bt.status.slice(0, n);
    }
    const hits = v.tlbStats().hits - h;
    log(`vCPU ${cpu} batch of ${n}${el0 ? " EL0" : ""}: ${[...vas].map((va, i) => `${kinds[i]} ${hex(va)}`).join(", ")}`);
    let explainable = 0, faulted = 0;
    for (let i = 0; i < n; i++) {
      const got = v.decodeStatus(sts[i]!, pas[i]!);
      if ("fault" in got) faulted++;
      if (judge(cpu, vas[i]!, kinds[i]!, el0, "either", wants[i]!, s1s[i]!, got, null)) explainable++;
    }
    if (faulted !== faults) fail(`batch returned ${faults} faults but ${faulted} status words are faults`);
    if (hits > explainable) fail(`batch reported ${hits} TLB hits but only ${explainable} answers were legally cached`);
  };

  /** Runs `fn` with vCPU `cpu` switched (no TLB maintenance) to TTBR0 `ttbr0` and VTTBR `vttbr`. */
  const visit = <T>(cpu: number, ttbr0: bigint, vttbr: bigint, fn: () => T): T => {
    const saved = regs[cpu]!;
    const change = ttbr0 !== saved.ttbr0 || vttbr !== saved.vttbr;
    if (change) { regs[cpu] = { ...saved, ttbr0, vttbr }; vcpus[cpu]!.setSystemRegisters({ ttbr0, vttbr }); }
    try {
      return fn();
    } finally {
      if (change) { regs[cpu] = saved; vcpus[cpu]!.setSystemRegisters({ ttbr0: saved.ttbr0, vttbr: saved.vttbr }); }
    }
  };

  // ---- invalidation ----

  /** Applies a decoded op to the model: removes what must go, marks what may go as uncertain. Returns the removed entries. */
  const applyModel = (op: ModelOp, issuer: number): Entry[] => {
    if (op.ignored) return [];
    const vmid = vmidOf(regs[issuer]!);
    const targets = op.broadcast ? [0, 1] : [issuer];
    const covers = (e: Entry): boolean => {
      if (!(e.first < op.startVpn + op.pages && op.startVpn < e.first + e.pages)) return false;
      if (op.hint === "all" || op.hint === e.level) return true;
      e.sure = false;
      return false;
    };
    return legal.removeWhere((e) => {
      if (!targets.includes(e.cpu)) return false;
      if (op.kind === "all") return true;
      if (e.vmid !== vmid) return false;
      switch (op.kind) {
        case "vmalls12": return true;
        case "vmall": return e.ctx !== "S2";
        case "asid": return e.ctx === op.asid;
        case "va": return e.ctx !== "S2" && (op.asid === undefined || e.ctx === "G" || e.ctx === op.asid) && covers(e);
        case "ipa": return e.ctx === "S2" && covers(e);
        default: return false;
      }
    });
  };

  /** Executes one TLBI on vCPU `cpu`, checks its decoding and counters, applies it to the model. */
  const tlbi = (cpu: number, name: string, operand: bigint): Entry[] => {
    const op = modelDecode(name, operand, opts.as16);
    const ignoredBefore = vcpus.map((v) => v.tlbiStats().ignored);
    const d = vcpus[cpu]!.tlbi(name, operand);
    log(`vCPU ${cpu} TLBI ${name} ${hex(operand)}${op.ignored ? " (ignored)" : ""}`);
    stats.tlbis++;
    const decoded = { ignored: d.ignored !== null, broadcast: d.broadcast, asid: d.asid, startVpn: (d.startVa >> 12n) & VPN_MASK, pages: d.pages };
    const expected = { ignored: op.ignored, broadcast: op.broadcast, asid: op.asid, startVpn: op.startVpn, pages: op.pages };
    if (JSON.stringify(decoded, (_k, x) => (typeof x === "bigint" ? hex(x) : x)) !== JSON.stringify(expected, (_k, x) => (typeof x === "bigint" ? hex(x) : x))) {
      fail(`TLBI ${name} ${hex(operand)} decoded as ${JSON.stringify(decoded, (_k, x) => (typeof x === "bigint" ? hex(x) : x))}, expected ${JSON.stringify(expected, (_k, x) => (typeof x === "bigint" ? hex(x) : x))}`);
    }
    if (op.ignored) {
      stats.ignored++;
      vcpus.forEach((v, i) => {
        const want = ignoredBefore[i]! + (op.broadcast || i === cpu ? 1 : 0);
        if (v.tlbiStats().ignored !== want) fail(`vCPU ${i} counts ${v.tlbiStats().ignored} ignored ops after ${name}, expected ${want}`);
      });
    }
    const removed = applyModel(op, cpu);
    stats.removed += removed.length;
    return removed;
  };

  /**
   * Re-issues `e`'s access under PROBE_ASID (flushed first), so the combined
   * lookup misses and the walk must choose between stage 2 in memory and the
   * legal stage-2-only entries.
   */
  const probeStage2 = (e: Entry): void => {
    const ttbr0 = (e.ttbr0 & ADDR) | (BigInt(PROBE_ASID) << 48n);
    visit(e.cpu, ttbr0, e.vttbr, () => {
      tlbi(e.cpu, "ASIDE1", BigInt(PROBE_ASID) << 48n);
      stats.s2Probed++;
      translate(e.cpu, e.va, e.access, e.el0);
    });
  };

  const sample = <T>(xs: T[], n: number): T[] => {
    const out = xs.slice();
    for (let i = out.length - 1; i > 0; i--) { const j = rng.int(i + 1); [out[i], out[j]] = [out[j]!, out[i]!]; }
    return out.slice(0, n);
  };

  /**
   * Whether the model still holds `e` as certain: `e` itself is still listed
   * under its key (an earlier access may have legally dropped and replaced
   * it), it was filled by a precise walk, and its vCPU has evicted nothing,
   * rolled over no tags and recycled no context since.
   */
  const stillCertain = (e: Entry): boolean => e.sure && e.gen === gen(e.cpu) && legal.at(e.cpu, e.vmid, e.ctx, e.vpn).includes(e);

  /**
   * After invalidations: every removed combined entry's access, re-issued in
   * its own context, is judged without it (a hit on it would be illegal);
   * removed stage-2-only entries are probed through a fresh ASID; and a
   * sample of entries the model holds as certain must still hit.
   */
  const sweep = (removed: Entry[]): void => {
    const seen = new Set<string>();
    const comb = removed.filter((e) => e.ctx !== "S2" && !seen.has(`${e.cpu}/${e.vmid}/${e.ctx}/${e.vpn}`) && seen.add(`${e.cpu}/${e.vmid}/${e.ctx}/${e.vpn}`));
    for (const e of sample(comb, 64)) {
      visit(e.cpu, e.ctx === "G" ? regs[e.cpu]!.ttbr0 : e.ttbr0, e.vttbr, () => {
        const r = regs[e.cpu]!, vmid = vmidOf(r);
        const bit = bitOf(e.access, e.el0, r.pan);
        if (![...legal.at(e.cpu, vmid, asidOf(r), e.vpn), ...legal.at(e.cpu, vmid, "G", e.vpn)].some((x) => (x.allow & bit) !== 0)) stats.coveredMustWalk++;
        stats.coveredChecked++;
        translate(e.cpu, e.va, e.access, e.el0);
      });
    }
    if (s2on) for (const e of sample(removed.filter((x) => x.ctx === "S2"), 3)) probeStage2(e);
    const gens = [gen(0), gen(1)];
    const certain = [...legal.all()].filter((e) => e.sure && e.gen === gens[e.cpu]);
    for (const e of sample(certain.filter((x) => x.ctx !== "S2"), 6)) {
      visit(e.cpu, e.ctx === "G" ? regs[e.cpu]!.ttbr0 : e.ttbr0, e.vttbr, () => {
        // The sample is a snapshot: an earlier check may have displaced `e`, and
        // switching context may have recycled a slot, so `e` is judged only if
        // it is still certain right before its access. Then no eviction or
        // rollover can explain a miss (they clear certainty), nor can any
        // other legal drop (the model follows those), so every miss fails:
        // the bound is 0 in every configuration.
        if (!stillCertain(e)) return;
        const r = regs[e.cpu]!;
        const mustHit = (e.allow & bitOf(e.access, e.el0, r.pan)) !== 0
          && !(e.ctx === "G" && legal.at(e.cpu, e.vmid, asidOf(r), e.vpn).length > 0);
        const hit = translate(e.cpu, untag(e.va), e.access, e.el0);
        if (mustHit && !hit) fail(`vCPU ${e.cpu} ${e.access}${e.el0 ? "/EL0" : ""} ${hex(e.va)}: missed a certain ${e.ctx} entry outside every invalidation's scope`);
        if (mustHit) stats.stayChecked++;
      });
    }
    if (s2on) for (const e of sample(certain.filter((x) => x.ctx === "S2"), 2)) if (stillCertain(e)) probeStage2(e);
  };

  // ---- random operands ----

  const pickEntry = (pred: (e: Entry) => boolean): Entry | undefined => {
    let chosen: Entry | undefined, n = 0;
    for (const e of legal.all()) if (pred(e) && rng.int(++n) === 0) chosen = e;
    return chosen;
  };
  const pickVa = (): bigint => {
    const r = rng.int(100);
    if (r < 40) { const e = pickEntry((x) => x.ctx !== "S2"); if (e) return e.va; }
    if (r < 80) return pickProbe();
    const base = rng.pick([PRIV, PRIV + 2n * M2, SHARED + M2, SHARED + G1, KERN + 3n * M2, KERN + 2n * G1]);
    return base + BigInt(rng.int(0x4_0000)) * K4 % rng.pick([M2, G1]);
  };
  const pickIpa = (): bigint => {
    if (rng.chance(0.5)) { const e = pickEntry((x) => x.ctx === "S2"); if (e) return (e.vpn << 12n) | BigInt(rng.int(4096)); }
    return rng.pick(w.ipaProbes);
  };
  const pickAsid = (cpu: number): number => {
    const r = rng.int(100);
    if (r < 60) return Number(regs[cpu]!.ttbr0 >> 48n);
    if (r < 85) return rng.pick(ASIDS);
    return rng.int(0x1_0000);
  };

  const operandFor = (fam: TlbiOp, cpu: number): bigint => {
    const f = FAMILY[fam];
    if (f.kind === "vmall" || f.kind === "vmalls12" || f.kind === "all") return rng.chance(0.8) ? 0n : rng.u64();
    const asid = f.byAsid ? pickAsid(cpu) : 0;
    if (f.kind === "asid") return (BigInt(asid) << 48n) | (rng.chance(0.2) ? rng.u64() & ((1n << 48n) - 1n) : 0n);
    if (rng.chance(0.04)) return rng.u64();
    const target = f.kind === "ipa" ? pickIpa() : pickVa();
    if (!f.range) {
      let x = encodeTlbiVa(target, asid, rng.chance(0.25) ? 1 + rng.int(3) : 0);
      if (rng.chance(0.08)) x = (x & ~(0xfn << 44n)) | (BigInt(rng.int(16)) << 44n);
      return x;
    }
    const base = rng.chance(0.3) ? target & ~(M2 - 1n) : target & ~0xfffn;
    const scale = rng.pick([0, 0, 0, 1, 1, 2, 3]);
    const num = rng.chance(0.3) ? rng.int(32) : rng.int(4);
    let x = encodeTlbiRange({ baseVa: base, asid, scale, num, ttl: rng.chance(0.75) ? 0 : 1 + rng.int(3) });
    if (rng.chance(0.08)) x = (x & ~(3n << 46n)) | (BigInt(rng.pick([0, 2, 3])) << 46n);
    return x;
  };

  const OP_WEIGHTS: readonly TlbiOp[] = ([
    ...TLBI_OPS, "VAE1IS", "VAE1IS", "VALE1IS", "VAAE1IS", "RVAE1IS", "RVAE1IS", "RVAAE1IS", "ASIDE1IS",
    ...(s2on ? ["IPAS2E1IS", "RIPAS2E1IS", "RIPAS2E1IS", "IPAS2LE1IS"] : []),
  ] as TlbiOp[]).filter((op) => op !== "ALLE1IS" || rng.chance(0.5));

  const runCalls = (cpu: number, calls: TlbiCall[], what: string): void => {
    log(`${what}: ${calls.length} ops`);
    stats.sequences++;
    const removed: Entry[] = [];
    for (const c of calls) removed.push(...tlbi(cpu, c.op, c.operand));
    sweep(removed);
  };

  const step = (): void => {
    const r = rng.int(100);
    if (r < 36) {
      const cpu = rng.int(2), va = tag(pickProbe()), access = rng.pick(ACCESSES), el0 = rng.chance(0.4);
      log(`vCPU ${cpu} translate ${access}${el0 ? "/EL0" : ""} ${hex(va)}`);
      translate(cpu, va, access, el0);
    } else if (r < 44) {
      batch();
    } else if (r < 62) {
      const stage = s2on && rng.chance(0.35) ? 2 : 1;
      const pool = w.slots.filter((s) => s.stage === stage);
      const slot = rng.pick(pool);
      const v = stage === 1 ? editS1(rng, mem, slot) : editS2(rng, mem, slot);
      log(`store ${hex(v)} at ${hex(slot.gpa)} (stage ${stage} level ${slot.level})`);
      mem.write64(slot.gpa, v);
    } else if (r < 82) {
      const cpu = rng.int(2);
      const fam = rng.pick(OP_WEIGHTS);
      const name = rng.chance(0.25) ? fam.slice(0, -2) : fam;
      sweep(tlbi(cpu, name, operandFor(fam, cpu)));
    } else if (r < 87) {
      const cpu = rng.int(2);
      const stage2 = s2on && rng.chance(0.2);
      const q = rng.int(100);
      const pages = q < 60 ? BigInt(1 + rng.int(40)) : q < 88 ? BigInt(100 + rng.int(1000)) : rng.pick([512n, 513n, 1n << 18n, (1n << 21n) - 1n, 1n << 21n]);
      const o = {
        start: stage2 ? pickIpa() : pickVa(), pages, stride: rng.chance(0.2) ? M2 : K4, asid: asidOf(regs[cpu]!),
        lastLevel: rng.chance(0.5), tlbLevel: rng.chance(0.6) ? 0 : 1 + rng.int(3), tlbRange: rng.chance(0.7),
        variant: rng.pick(["v6.6", "v6.9"] as const), kpti: rng.chance(0.2), stage2,
      };
      runCalls(cpu, linuxFlushTlbRange(o), `vCPU ${cpu} flush_tlb_range(${hex(o.start)}, ${pages} pages, stride ${o.stride}, level ${o.tlbLevel}, ${o.variant}${o.tlbRange ? "" : " no-range"}${o.kpti ? " kpti" : ""}${stage2 ? " stage 2" : ""})`);
    } else if (r < 90 && s2on) {
      const cpu = rng.int(2);
      const q = rng.int(100);
      const pages = q < 60 ? BigInt(1 + rng.int(64)) : q < 85 ? BigInt(100 + rng.int(1000)) : rng.pick([512n, 1n << 18n, 1n << 21n, (1n << 21n) + 3n]);
      const start = pickIpa() & ~0xfffn;
      const variant = rng.pick(["v6.6", "v6.9"] as const), tlbRange = rng.chance(0.8);
      runCalls(cpu, kvmTlbFlushVmidRange({ start, size: pages << 12n, tlbRange, variant }), `vCPU ${cpu} kvm_tlb_flush_vmid_range(${hex(start)}, ${pages} pages, ${variant}${tlbRange ? "" : " no-range"})`);
    } else if (r < 96) {
      const cpu = rng.int(2);
      let asid: number = rng.pick(ASIDS);
      if (!opts.as16 && rng.chance(0.3)) asid = (asid & 0xff) | (rng.int(256) << 8);
      const ttbr0 = rng.pick(w.roots) | (BigInt(asid) << 48n);
      regs[cpu] = { ...regs[cpu]!, ttbr0 };
      vcpus[cpu]!.setSystemRegisters({ ttbr0 });
      log(`vCPU ${cpu} TTBR0 ${hex(ttbr0)}`);
      if (vcpus[cpu]!.asid() !== asidOf(regs[cpu]!)) fail(`vCPU ${cpu} reports ASID ${vcpus[cpu]!.asid()}, TTBR0 ${hex(ttbr0)} gives ${asidOf(regs[cpu]!)}`);
    } else if (r < 98) {
      const cpu = rng.int(2);
      const pan = !regs[cpu]!.pan;
      regs[cpu] = { ...regs[cpu]!, pan };
      vcpus[cpu]!.setSystemRegisters({ pan });
      log(`vCPU ${cpu} PSTATE.PAN=${pan ? 1 : 0}`);
    } else if (s2on) {
      const cpu = rng.int(2);
      const vttbr = rng.pick(w.vttbrs);
      regs[cpu] = { ...regs[cpu]!, vttbr };
      vcpus[cpu]!.setSystemRegisters({ vttbr });
      log(`vCPU ${cpu} VTTBR ${hex(vttbr)}`);
      if (vcpus[cpu]!.vmid() !== vmidOf(regs[cpu]!)) fail(`vCPU ${cpu} reports VMID ${vcpus[cpu]!.vmid()}, expected ${vmidOf(regs[cpu]!)}`);
    }
  };

  /** Flushes vCPU 0's current ASID `n` times locally: each takes a fresh tag, so the tag space rolls over. */
  const burst = (n: number): void => {
    const operand = BigInt(asidOf(regs[0]!)) << 48n;
    for (let i = 0; i < n; i++) vcpus[0]!.tlbi("ASIDE1", operand);
    log(`${n} × vCPU 0 TLBI ASIDE1 ${hex(operand)}`);
    sweep(applyModel(modelDecode("ASIDE1", operand, opts.as16), 0));
  };

  for (stats.steps = 0; stats.steps < opts.steps; stats.steps++) {
    if (stats.steps % 150 === 0) hot = Array.from({ length: 8 }, () => rng.pick(w.probes));
    if (opts.burst && stats.steps === Math.floor(opts.steps / 2)) { burst(70_000); continue; }
    step();
    if (stats.steps % 64 === 0) stats.maxLegal = Math.max(stats.maxLegal, legal.count);
  }
  for (const v of vcpus) {
    const t = v.tlbStats();
    stats.evictions += t.evictions;
    stats.rollovers += t.rollovers;
    stats.adWrites += t.adWrites;
    expect(t.live, opts.note).toBeLessThanOrEqual(opts.tlbEntries);
  }
  return stats;
}

const SEED = testSeed();
const STEPS = 3000;
const CONFIGS: Omit<RunOptions, "seed" | "steps" | "note">[] = [
  { tlbEntries: 1 << 20, stage2: true, as16: true, vs16: true, t1sz: 16, burst: false, hafdbs: false, tbi: false },
  { tlbEntries: 1 << 18, stage2: false, as16: false, vs16: true, t1sz: 25, burst: false, hafdbs: true, tbi: false },
  { tlbEntries: 1 << 16, stage2: true, as16: false, vs16: false, t1sz: 16, burst: false, hafdbs: true, tbi: true },
  { tlbEntries: 64, stage2: true, as16: false, vs16: false, t1sz: 25, burst: true, hafdbs: false, tbi: false },
  { tlbEntries: 16, stage2: true, as16: true, vs16: true, t1sz: 16, burst: false, hafdbs: true, tbi: false },
  { tlbEntries: 4096, stage2: false, as16: true, vs16: true, t1sz: 16, burst: true, hafdbs: false, tbi: true },
];

describe("random TLBI sequences never leave a translation the Arm ARM forbids, nor drop one it keeps", () => {
  CONFIGS.forEach((c, i) => {
    const seed = (SEED + i * 0x9e3779b9) >>> 0;
    const name = `run ${i}: tlbEntries=${c.tlbEntries}, stage 2 ${c.stage2 ? "on" : "off"}, ${c.as16 ? 16 : 8}-bit ASIDs, `
      + `${c.vs16 ? 16 : 8}-bit VMIDs, T1SZ=${c.t1sz}${c.hafdbs ? ", hardware AF/dirty" : ""}${c.tbi ? ", TBI" : ""}${c.burst ? ", tag rollover" : ""}`;
    const note = seedNote(SEED, `-t 'run ${i}:'`);
    it(name, async () => {
      const t0 = performance.now();
      const s = await run({ ...c, seed, note, steps: STEPS });
      verbose(`${note} run ${i} tlb ${c.tlbEntries}: ${s.steps} steps, ${s.accesses} accesses (${s.hits} hits, ${s.staleUses} stale but legal, `
        + `${s.staleS2Uses} through stale stage 2, ${s.faults} faults), ${s.tlbis} TLBIs (${s.ignored} ignored, ${s.sequences} Linux/KVM sequences, `
        + `${s.removed} entries removed), covered: ${s.coveredChecked} re-issued (${s.coveredMustWalk} with nothing left to hit), ${s.s2Probed} stage-2 probes, `
        + `outside: ${s.stayChecked} certain entries checked, ${s.adWrites} AF/dirty updates, ${s.evictions} evictions, ${s.rollovers} rollovers, `
        + `≤${s.maxLegal} legal entries, `
        + `${Math.round(performance.now() - t0)} ms`);
      fuzzCount("tlbi", s.steps);
      expect(s.staleUses, `${note} the run never used a stale translation`).toBeGreaterThan(0);
      expect(s.coveredMustWalk, note).toBeGreaterThan(0);
      expect(s.ignored, note).toBeGreaterThan(0);
      if (c.stage2 && c.tlbEntries >= 64) expect(s.staleS2Uses, `${note} no walk used a stale stage-2 entry`).toBeGreaterThan(0);
      if (c.tlbEntries >= 1 << 16) expect(s.stayChecked, note).toBeGreaterThan(0);
      if (c.tlbEntries <= 64) expect(s.evictions, note).toBeGreaterThan(0);
      if (c.burst) expect(s.rollovers, note).toBeGreaterThan(0);
      if (c.hafdbs) expect(s.adWrites, note).toBeGreaterThan(0);
    });
  });
});
