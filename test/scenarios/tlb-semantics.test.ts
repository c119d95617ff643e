/**
 * Random instruction sequences: after every step, every translation a vCPU
 * returns is one the architecture allows. Intel SDM Vol.3A §4.10.2 (what a TLB
 * may cache and use), §4.10.4.1 (what INVLPG, INVPCID, MOV CR3, MOV CR4 and
 * MOV CR0 invalidate), §4.6 (rights, applied at access time), §4.8 (a write
 * through an entry with D = 0 goes to memory).
 *
 * The model: for (PCID context, address) a vCPU may answer with a fresh walk
 * of the tables in memory, or with any translation it legally cached: one a
 * successful translation produced earlier, under that PCID (or in the global
 * context if its leaf had G = 1 while CR4.PGE = 1), for the page containing the
 * address whatever its size, that no invalidation since has covered, and whose
 * rights grant the access under the current CR0/CR4/RFLAGS. A fault is always
 * the fresh walk's fault. The fresh walk is the independent reference walker
 * over a read-only view of guest RAM.
 *
 * Page tables are edited with plain stores and never invalidated by the test
 * itself, so stale translations abound; the vCPU may use them until the guest
 * invalidates them, and never after.
 */
import { assert, describe, expect, it } from "vitest";
import {
  CR0, CR3_NOFLUSH, CR4, LONG_MODE, PTE, RFLAGS, X86PageTableBuilder, createMachine,
  type GuestMemory, type X86Access, type X86TranslateResult, type X86Vcpu,
} from "../../src/index.js";
import { refTranslateX86, type RefMemory, type RefResult } from "../../src/ref/x86-walk.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../helpers/rng.js";
import { verbose } from "../helpers/note.js";

const MAXPHY = 46;
const ADDR = ((1n << BigInt(MAXPHY)) - 1n) & ~0xfffn;
const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const SIZES = [K4, M2, G1] as const;
const PCIDS = [0, 1, 2, 3, 0x7ff, 0xfff] as const;
const ACCESSES: readonly X86Access[] = ["read", "read", "write", "fetch"];
const ACCESS_CODE: Record<X86Access, number> = { read: 0, write: 1, fetch: 2 };
const RSVD_4K = 1n << 51n;
const RSVD_LARGE = 1n << 13n;

const PRIV = 0x0000_0010_0000_0000n;
const SHARED = 0x0000_7f00_0000_0000n;
const KERN = 0xffff_8000_0000_0000n;

/** "G" is the global context: usable under every PCID. */
type Ctx = number | "G";

/** One translation the vCPU may legally still use, and the access that produced it. */
interface Legal {
  ctx: Ctx;
  base: bigint;
  size: bigint;
  pa: bigint;
  level: number;
  w: boolean;
  u: boolean;
  xd: boolean;
  dirty: boolean;
  pkey: number;
  va: bigint;
  access: X86Access;
  user: boolean;
}

interface Regs {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  rflags: bigint;
  pkru: bigint;
}

/** The set of legally cached translations, keyed by context and page. */
class LegalTlb {
  private readonly pages = new Map<string, Map<string, Legal>>();

  private static key(ctx: Ctx, size: bigint, base: bigint): string {
    return `${ctx}/${size}/${base}`;
  }

  get count(): number {
    let n = 0;
    for (const m of this.pages.values()) n += m.size;
    return n;
  }

  add(t: Legal): void {
    const k = LegalTlb.key(t.ctx, t.size, t.base);
    let m = this.pages.get(k);
    if (!m) this.pages.set(k, (m = new Map()));
    m.set(`${t.pa}/${t.level}/${t.w}/${t.u}/${t.xd}/${t.dirty}/${t.pkey}/${t.va}/${t.access}/${t.user}`, t);
  }

  /** Translations usable for `va` in context `ctx`: its own and the global ones, every page size. */
  candidates(ctx: number, va: bigint): Legal[] {
    const out: Legal[] = [];
    for (const c of [ctx, "G"] as const) {
      for (const size of SIZES) {
        const m = this.pages.get(LegalTlb.key(c, size, va & ~(size - 1n)));
        if (m) out.push(...m.values());
      }
    }
    return out;
  }

  /** Removes the translations of contexts `ctxs` for the page containing `va`, whatever its size. */
  invalidatePage(ctxs: readonly Ctx[], va: bigint): Legal[] {
    const out: Legal[] = [];
    for (const c of ctxs) {
      for (const size of SIZES) {
        const k = LegalTlb.key(c, size, va & ~(size - 1n));
        const m = this.pages.get(k);
        if (m) { out.push(...m.values()); this.pages.delete(k); }
      }
    }
    return out;
  }

  /** Removes every translation whose context satisfies `pred`. */
  invalidateWhere(pred: (ctx: Ctx) => boolean): Legal[] {
    const out: Legal[] = [];
    for (const [k, m] of this.pages) {
      const first = m.values().next().value as Legal;
      if (pred(first.ctx)) { out.push(...m.values()); this.pages.delete(k); }
    }
    return out;
  }
}

/** Whether translation `t` grants the access under `r` (SDM §4.6.1, §4.6.2; NXE = 1); D = 1 is needed for a write. */
function grants(t: Legal, access: X86Access, user: boolean, r: Regs): boolean {
  if (access === "write" && !t.dirty) return false;
  if ((r.cr4 & CR4.PKE) !== 0n && access !== "fetch" && t.u) {
    const ad = (r.pkru >> BigInt(2 * t.pkey)) & 1n, wd = (r.pkru >> BigInt(2 * t.pkey + 1)) & 1n;
    if (ad !== 0n) return false;
    if (access === "write" && wd !== 0n && (user || (r.cr0 & CR0.WP) !== 0n)) return false;
  }
  if (user) return t.u && (access !== "write" || t.w) && (access !== "fetch" || !t.xd);
  const smap = (r.cr4 & CR4.SMAP) !== 0n && (r.rflags & RFLAGS.AC) === 0n;
  if (access === "fetch") return !t.xd && !(t.u && (r.cr4 & CR4.SMEP) !== 0n);
  if (t.u && smap) return false;
  return access !== "write" || t.w || (r.cr0 & CR0.WP) === 0n;
}

/** Effective rights, G, D and protection key of the leaf mapping `va`, read straight from the tables. */
function leafInfo(mem: GuestMemory, cr3: bigint, va: bigint): { w: boolean; u: boolean; xd: boolean; g: boolean; d: boolean; pkey: number } {
  let table = cr3 & ADDR;
  let w = true, u = true, xd = false;
  for (let level = 4; level >= 1; level--) {
    const e = mem.read64(table + (((va >> BigInt(12 + 9 * (level - 1))) & 511n) << 3n));
    w &&= (e & PTE.RW) !== 0n;
    u &&= (e & PTE.US) !== 0n;
    xd ||= (e & PTE.XD) !== 0n;
    if (level === 1 || (level <= 3 && (e & PTE.PS) !== 0n)) {
      return { w, u, xd, g: (e & PTE.G) !== 0n, d: (e & PTE.D) !== 0n, pkey: Number((e >> 59n) & 15n) };
    }
    table = e & ADDR;
  }
  throw new Error("unreachable");
}

function readOnly(mem: GuestMemory): RefMemory {
  return {
    read64: (gpa) => (mem.contains(gpa) && mem.contains(gpa + 7n) ? mem.read64(gpa) : undefined),
    cmpxchg64: (gpa, expected) => mem.read64(gpa) === expected,
  };
}

function isCanonical48(va: bigint): boolean {
  return BigInt.asIntN(48, va) === BigInt.asIntN(64, va);
}

const hex = (v: bigint): string => "0x" + v.toString(16);
const show = (r: X86TranslateResult | RefResult): string =>
  "fault" in r ? `#${r.fault.kind}(err=${r.fault.errorCode},lvl=${r.fault.level})`
  : "ok" in r && !r.ok ? `#${r.kind}(err=${r.errorCode},lvl=${r.level})`
  : `${hex((r as { pa: bigint }).pa)}/${(r as { pageSize: number }).pageSize}`;

/** An editable paging-structure entry: a leaf slot (may become a pointer) or a non-leaf entry whose flags flip. */
interface Slot {
  gpa: bigint;
  level: 1 | 2 | 3;
  pointers: bigint[];
  table: boolean;
}

interface World {
  mem: GuestMemory;
  vcpu: X86Vcpu;
  roots: bigint[];
  slots: Slot[];
  probes: bigint[];
}

interface RunOptions {
  seed: number;
  /** Tells a failure how to replay it. */
  note: string;
  steps: number;
  tlbEntries: number;
  pcide: boolean;
  smep: boolean;
  smap: boolean;
  pke: boolean;
}

interface RunStats {
  steps: number;
  accesses: number;
  hits: number;
  staleUses: number;
  faults: number;
  invalidations: number;
  gps: number;
  swept: number;
  sweptMustWalk: number;
  evictions: number;
  rollovers: number;
  maxLegal: number;
}

function randomLeaf(rng: Rng, level: 1 | 2 | 3): bigint {
  const size = level === 1 ? "4K" : level === 2 ? "2M" : "1G";
  const frame = level === 1
    ? (rng.chance(0.05) ? 0x10_0000_0000n : 0x100_0000n) + BigInt(rng.int(0x3000)) * K4
    : level === 2 ? 0x100_0000n + BigInt(rng.int(24)) * M2 : BigInt(rng.int(4)) * G1;
  let e = X86PageTableBuilder.leaf(frame, size, {
    write: rng.chance(0.75), user: rng.chance(0.7), nx: rng.chance(0.15), global: rng.chance(0.35),
    accessed: rng.chance(0.5), dirty: rng.chance(0.4), pkey: rng.chance(0.5) ? 0 : rng.int(16),
  });
  if (rng.chance(0.03)) e |= level === 1 ? RSVD_4K : rng.pick([RSVD_4K, RSVD_LARGE]);
  return e;
}

/** A new value for `slot`: a fresh leaf, a pointer to a prepared table, not present, or one flag flipped. */
function editValue(rng: Rng, mem: GuestMemory, slot: Slot): bigint {
  const cur = mem.read64(slot.gpa);
  if (slot.table || ((cur & PTE.P) !== 0n && rng.chance(0.4))) {
    return cur ^ rng.pick([PTE.RW, PTE.US, PTE.XD, PTE.G, PTE.RW, PTE.US, PTE.P, PTE.G]);
  }
  const r = rng.int(100);
  if (r < 8) return 0n;
  if (slot.pointers.length > 0 && r < 40) {
    return rng.pick(slot.pointers) | PTE.P | (rng.chance(0.85) ? PTE.RW : 0n) | (rng.chance(0.85) ? PTE.US : 0n) | (rng.chance(0.1) ? PTE.XD : 0n);
  }
  return randomLeaf(rng, slot.level);
}

/**
 * Four address spaces over one machine: a private region each (4 KiB pages
 * and a 2 MiB slot that can become a page table), and two regions whose
 * tables all spaces share (user-ish 4 KiB pages, a 2 MiB slot, a 1 GiB slot
 * that can become a page directory; kernel pages, mostly global).
 */
async function buildWorld(rng: Rng, tlbEntries: number): Promise<World> {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20, tlbEntries, maxPhysAddrBits: MAXPHY });
  const mem = machine.memory;
  const slots: Slot[] = [];
  const probes: bigint[] = [];
  const leaf = (gpa: bigint, level: 1 | 2 | 3, pointers: bigint[] = []) => slots.push({ gpa, level, pointers, table: false });
  const builders = [0, 1, 2, 3].map((i) => new X86PageTableBuilder(mem, { tableBase: 0x10_0000n + BigInt(i) * 0x10_0000n, tableLimit: 0x20_0000n + BigInt(i) * 0x10_0000n }));
  const flags = () => ({ write: rng.chance(0.7), user: rng.chance(0.6), nx: rng.chance(0.2), global: rng.chance(0.3), dirty: rng.chance(0.5) });
  /** A prepared page table with leaves at `indexes`, every one an editable slot. */
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
    for (let k = 0n; k < 4n; k++) leaf(b.map(PRIV + k * K4, 0x100_0000n + BigInt(rng.int(0x3000)) * K4, "4K", flags()), 1);
    leaf(b.map(PRIV + 2n * M2, 0x100_0000n + BigInt(rng.int(24)) * M2, "2M", flags()), 2, [table(b, 1, [0, 1, 0x1ff])]);
    slots.push({ gpa: b.entryAt(PRIV, 2)!, level: 2, pointers: [], table: true });
  }
  const b0 = builders[0]!;
  for (let k = 0n; k < 4n; k++) leaf(b0.map(SHARED + (0x40n + k) * K4, 0x100_0000n + BigInt(rng.int(0x3000)) * K4, "4K", flags()), 1);
  leaf(b0.map(SHARED + M2, 0x100_0000n + BigInt(rng.int(24)) * M2, "2M", flags()), 2, [table(b0, 1, [0, 7, 0x100, 0x1ff])]);
  leaf(b0.map(SHARED + G1, G1, "1G", flags()), 3, [(() => {
    const pd = b0.allocTable();
    mem.write64(pd, randomLeaf(rng, 2));
    leaf(pd, 2, [table(b0, 1, [0, 3])]);
    mem.write64(pd + 3n * 8n, table(b0, 1, [2, 0x1ff]) | PTE.P | PTE.RW | PTE.US);
    slots.push({ gpa: pd + 3n * 8n, level: 2, pointers: [], table: true });
    return pd;
  })()]);
  slots.push({ gpa: b0.entryAt(SHARED, 2)!, level: 2, pointers: [], table: true });
  slots.push({ gpa: b0.entryAt(SHARED, 3)!, level: 3, pointers: [], table: true });
  for (let k = 0n; k < 4n; k++) leaf(b0.map(KERN + (0x80n + k) * K4, 0x100_0000n + BigInt(rng.int(0x3000)) * K4, "4K", { ...flags(), global: rng.chance(0.8) }), 1);
  leaf(b0.map(KERN + M2, 0x100_0000n + BigInt(rng.int(24)) * M2, "2M", { ...flags(), global: true }), 2, [table(b0, 1, [1])]);

  for (const b of builders.slice(1)) {
    for (const va of [SHARED, KERN]) {
      const g = X86PageTableBuilder.entryGpa(b.root, va, 4);
      mem.write64(g, mem.read64(X86PageTableBuilder.entryGpa(b0.root, va, 4)));
      slots.push({ gpa: g, level: 3, pointers: [], table: true });
    }
  }
  slots.push({ gpa: X86PageTableBuilder.entryGpa(b0.root, SHARED, 4), level: 3, pointers: [], table: true });

  for (let k = 0n; k < 4n; k++) probes.push(PRIV + k * K4 + 0x10n * k, SHARED + (0x40n + k) * K4 + 0x8n, KERN + (0x80n + k) * K4 + 0xff8n);
  for (const o of [0n, K4 + 0x40n, 0x1f_f123n, 0x10_0000n]) probes.push(PRIV + 2n * M2 + o);
  for (const o of [0n, 7n * K4 + 0x10n, 0x10_0000n, 0x1f_f000n]) probes.push(SHARED + M2 + o);
  for (const o of [0x123n, 3n * K4, 0x60_2008n, 0x7f_f000n, 0x3fff_f000n, 0x1000_0000n]) probes.push(SHARED + G1 + o);
  for (const o of [0n, K4, 0x1f_f000n]) probes.push(KERN + M2 + o);

  return { mem, vcpu: machine.vcpu(0), roots: builders.map((b) => b.root), slots, probes };
}

/** Runs `opts.steps` random steps, checking every translation against the model; returns what happened. */
async function run(opts: RunOptions): Promise<RunStats> {
  const rng = new Rng(opts.seed);
  const { mem, vcpu, roots, slots, probes } = await buildWorld(rng, opts.tlbEntries);
  const ro = readOnly(mem);
  const regs: Regs = {
    cr0: LONG_MODE.cr0,
    cr3: roots[0]!,
    cr4: LONG_MODE.cr4 | CR4.PGE | (opts.pcide ? CR4.PCIDE : 0n) | (opts.smep ? CR4.SMEP : 0n) | (opts.smap ? CR4.SMAP : 0n) | (opts.pke ? CR4.PKE : 0n),
    rflags: 0n,
    pkru: 0n,
  };
  const leafSlots = slots.filter((s) => !s.table);
  const slotByGpa = new Map(slots.map((s) => [s.gpa, s]));
  let hot: bigint[] = [];
  const pickProbe = () => (rng.chance(0.8) ? rng.pick(hot) : rng.pick(probes));
  /** gpa of the entry that ends the walk for `va` (its leaf, or the first non-present entry). */
  const leafGpaOf = (va: bigint): bigint => {
    let table = regs.cr3 & ADDR;
    for (let level = 4; ; level--) {
      const g = X86PageTableBuilder.entryGpa(table, va, level);
      const e = mem.read64(g);
      if (level === 1 || (e & PTE.P) === 0n || (level <= 3 && (e & PTE.PS) !== 0n)) return g;
      table = e & ADDR;
    }
  };
  const legal = new LegalTlb();
  vcpu.setControl({ ...regs, efer: LONG_MODE.efer });
  const stats: RunStats = { steps: 0, accesses: 0, hits: 0, staleUses: 0, faults: 0, invalidations: 0, gps: 0, swept: 0, sweptMustWalk: 0, evictions: 0, rollovers: 0, maxLegal: 0 };
  const trail: string[] = [];
  const log = (s: string) => { trail.push(`${stats.steps}: ${s}`); if (trail.length > 16) trail.shift(); };
  const fail = (msg: string): never => assert.fail(`${opts.note} step ${stats.steps}: ${msg}\nlast steps:\n  ${trail.join("\n  ")}`);

  const pcide = () => (regs.cr4 & CR4.PCIDE) !== 0n;
  const curCtx = () => (pcide() ? Number(regs.cr3 & 0xfffn) : 0);
  const paging = () => (regs.cr0 & CR0.PG) !== 0n;
  const fresh = (va: bigint, access: X86Access, user: boolean): RefResult =>
    refTranslateX86(ro, { ...regs, efer: LONG_MODE.efer, maxPhysAddrBits: MAXPHY }, va, access, user);

  const checkRegs = (what: string) => {
    const c = vcpu.control();
    if (c.cr0 !== regs.cr0 || c.cr3 !== regs.cr3 || c.cr4 !== regs.cr4) {
      fail(`after ${what}: control cr0=${hex(c.cr0)} cr3=${hex(c.cr3)} cr4=${hex(c.cr4)}, expected cr0=${hex(regs.cr0)} cr3=${hex(regs.cr3)} cr4=${hex(regs.cr4)}`);
    }
  };

  /**
   * Judges one translation: a fault must be the fresh walk's; a success must be
   * the fresh walk or a legally cached translation that grants the access (only
   * the latter if the vCPU reported a hit, only the former if it walked).
   * A walk's result becomes legally cached. Returns whether a TLB hit could
   * have given this answer.
   */
  const judge = (va: bigint, access: X86Access, user: boolean, want: RefResult, got: X86TranslateResult, source: "hit" | "walk" | "either"): boolean => {
    stats.accesses++;
    const what = `${access}${user ? "/user" : ""} ${hex(va)} in ctx ${curCtx()} (${source})`;
    if ("fault" in got) {
      stats.faults++;
      if (want.ok || got.fault.vector !== want.vector || got.fault.errorCode !== want.errorCode || got.fault.level !== want.level || got.fault.kind !== want.kind) {
        fail(`${what}: vCPU faulted ${show(got)}, fresh walk gives ${show(want)}`);
      }
      return false;
    }
    if (!paging()) {
      if (got.pa !== va) fail(`${what}: paging off but pa ${hex(got.pa)}`);
      return false;
    }
    const isFresh = want.ok && want.pa === got.pa && want.pageSize === got.pageSize && want.level === got.level;
    const cached = legal.candidates(curCtx(), va).filter((t) =>
      BigInt(got.pageSize) === t.size && got.level === t.level && got.pa === t.pa + (va & (t.size - 1n)) && grants(t, access, user, regs));
    const allowed = source === "hit" ? cached.length > 0 : source === "walk" ? isFresh : isFresh || cached.length > 0;
    if (!allowed) {
      const all = legal.candidates(curCtx(), va).map((t) => `${t.ctx}:${hex(t.pa)}/${t.size}${t.w ? "w" : ""}${t.u ? "u" : ""}${t.xd ? "x" : ""}${t.dirty ? "d" : ""}`);
      fail(`${what}: vCPU gave ${show(got)}; fresh walk gives ${show(want)}; legally cached: [${[...new Set(all)].join(", ")}]`);
    }
    if (source === "hit") stats.hits++;
    if (!isFresh) stats.staleUses++;
    if (source !== "hit" && isFresh) {
      const info = leafInfo(mem, regs.cr3, va);
      const size = BigInt(got.pageSize);
      legal.add({
        ctx: info.g && (regs.cr4 & CR4.PGE) !== 0n ? "G" : curCtx(), base: va & ~(size - 1n), size,
        pa: got.pa - (va & (size - 1n)), level: got.level, w: info.w, u: info.u, xd: info.xd, dirty: info.d, pkey: info.pkey,
        va, access, user,
      });
    }
    return cached.length > 0;
  };

  const translate = (va: bigint, access: X86Access, user: boolean): void => {
    const want = fresh(va, access, user);
    const h = vcpu.tlbStats().hits;
    const got = vcpu.translate(va, access, user);
    judge(va, access, user, want, got, vcpu.tlbStats().hits > h ? "hit" : "walk");
  };

  const batch = (): void => {
    const n = 1 + rng.int(24);
    const user = rng.chance(0.4);
    const vas = new BigUint64Array(n);
    const acc = new Uint8Array(n);
    const kinds: X86Access[] = [];
    for (let i = 0; i < n; i++) {
      vas[i] = pickProbe();
      kinds.push(rng.pick(ACCESSES));
      acc[i] = ACCESS_CODE[kinds[i]!];
    }
    const wants = kinds.map((k, i) => fresh(vas[i]!, k, user));
    let pas: BigUint64Array, sts: Uint32Array, faults: number;
    const h = vcpu.tlbStats().hits;
    if (rng.chance(0.5)) {
      const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
      faults = vcpu.translateBatch(vas, acc, user, out);
      pas = out.pa; sts = out.status;
    } else {
      const bt = vcpu.batch();
      bt.va.set(vas);
      bt.access.set(acc);
      faults = bt.run(n, user);
      pas = bt.pa.slice(0, n); sts = bt.status.slice(0, n);
    }
    const hits = vcpu.tlbStats().hits - h;
    log(`batch of ${n} ${user ? "user" : "supervisor"}: ${[...vas].map((v, i) => `${kinds[i]} ${hex(v)}`).join(", ")}`);
    let explainable = 0, faulted = 0;
    for (let i = 0; i < n; i++) {
      const got = vcpu.decodeStatus(sts[i]!, pas[i]!);
      if ("fault" in got) faulted++;
      if (judge(vas[i]!, kinds[i]!, user, wants[i]!, got, "either")) explainable++;
    }
    if (faulted !== faults) fail(`batch returned ${faults} faults but ${faulted} status words are faults`);
    if (hits > explainable) fail(`batch reported ${hits} TLB hits but only ${explainable} answers were legally cached`);
  };

  /**
   * After an invalidation: re-issues the access that produced every removed
   * translation, in its own context (visited with MOV CR3 bit 63, which
   * invalidates nothing), and judges it with the removed ones gone.
   */
  const sweep = (removed: Legal[]): void => {
    if (removed.length === 0 || !paging()) return;
    stats.invalidations++;
    const reissue = (list: Legal[]) => {
      const seen = new Set<string>();
      for (const t of list) {
        const k = `${t.va}/${t.access}/${t.user}`;
        if (seen.has(k)) continue;
        seen.add(k);
        stats.swept++;
        if (!legal.candidates(curCtx(), t.va).some((c) => grants(c, t.access, t.user, regs))) stats.sweptMustWalk++;
        translate(t.va, t.access, t.user);
      }
    };
    reissue(removed.filter((t) => t.ctx === "G" || t.ctx === curCtx()));
    if (!pcide()) return;
    const others = [...new Set(removed.map((t) => t.ctx).filter((c): c is number => c !== "G" && c !== curCtx()))];
    for (const pcid of others.slice(0, 2)) {
      const saved = regs.cr3;
      mov3((saved & ADDR) | BigInt(pcid) | CR3_NOFLUSH, "visit");
      reissue(removed.filter((t) => t.ctx === pcid));
      mov3(saved | CR3_NOFLUSH, "back");
    }
  };

  const mov3 = (value: bigint, why: string): Legal[] => {
    const noflush = pcide() && (value & CR3_NOFLUSH) !== 0n;
    const v = pcide() ? value & ~CR3_NOFLUSH : value;
    const gp = v >> BigInt(MAXPHY) !== 0n;
    const r = vcpu.writeCr3(value);
    log(`${why} MOV CR3 ${hex(value)}${gp ? " (#GP)" : ""}`);
    if ((r !== null) !== gp) fail(`MOV CR3 ${hex(value)}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(r)}`);
    if (gp) { stats.gps++; checkRegs("a faulting MOV CR3"); return []; }
    regs.cr3 = v;
    checkRegs("MOV CR3");
    if (noflush) return [];
    const ctx = curCtx();
    return legal.invalidateWhere((c) => c === ctx);
  };

  const probeOrNear = (): bigint => {
    const r = rng.int(100);
    if (r < 5) return 0x0000_8000_0000_0000n | rng.u64() & 0xffff_ffffn;
    if (r < 20) return rng.pick([SHARED + M2, SHARED + G1, PRIV + 2n * M2, KERN + M2]) + BigInt(rng.int(0x4000_0000)) % rng.pick([M2, G1]);
    return rng.pick(probes) ^ BigInt(rng.int(0x1000));
  };

  const step = (): void => {
    const r = rng.int(1015);
    if (r < 450) {
      const va = pickProbe(), access = rng.pick(ACCESSES), user = rng.chance(0.4);
      log(`translate ${access}${user ? "/user" : ""} ${hex(va)}`);
      translate(va, access, user);
    } else if (r < 540) {
      batch();
    } else if (r < 700) {
      const target = rng.chance(0.6) ? leafGpaOf(rng.pick(hot)) : undefined;
      const slot = (target !== undefined ? slotByGpa.get(target) : undefined) ?? (rng.chance(0.8) ? rng.pick(leafSlots) : rng.pick(slots));
      const v = editValue(rng, mem, slot);
      log(`store ${hex(v)} at ${hex(slot.gpa)} (level ${slot.level}${slot.table ? " table" : ""})`);
      mem.write64(slot.gpa, v);
    } else if (r < 750) {
      const va = probeOrNear();
      vcpu.invlpg(va);
      log(`INVLPG ${hex(va)}`);
      sweep(isCanonical48(va) ? legal.invalidatePage([curCtx(), "G"], va) : []);
    } else if (r < 790) {
      const type = rng.chance(0.05) ? 4 + rng.int(3) : rng.int(4);
      const pcid = rng.chance(0.05) ? 0x1000 + rng.int(0x1000) : pcide() ? rng.pick(PCIDS) : rng.chance(0.8) ? 0 : rng.pick(PCIDS);
      const va = probeOrNear();
      const gp = type > 3 || pcid > 0xfff || ((type === 0 || type === 1) && pcid !== 0 && !pcide()) || (type === 0 && !isCanonical48(va));
      const res = vcpu.invpcid(type, pcid, va);
      log(`INVPCID type ${type} pcid ${pcid} ${hex(va)}${gp ? " (#GP)" : ""}`);
      if ((res !== null) !== gp) fail(`INVPCID ${type}/${pcid}/${hex(va)}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(res)}`);
      if (gp) { stats.gps++; return; }
      sweep(type === 0 ? legal.invalidatePage([pcid], va)
        : type === 1 ? legal.invalidateWhere((c) => c === pcid)
        : type === 2 ? legal.invalidateWhere(() => true)
        : legal.invalidateWhere((c) => c !== "G"));
    } else if (r < 870) {
      const root = rng.pick(roots);
      let v: bigint;
      if (rng.chance(0.03)) v = root | (1n << BigInt(MAXPHY + rng.int(64 - MAXPHY)));
      else if (pcide()) v = root | BigInt(rng.pick(PCIDS)) | (rng.chance(0.5) ? CR3_NOFLUSH : 0n);
      else v = root | (rng.chance(0.6) ? 0n : rng.pick([0x8n, 0x10n, 0x18n]));
      sweep(mov3(v, "guest"));
    } else if (r < 882) {
      const v = regs.cr4 ^ CR4.PGE;
      log(`MOV CR4 PGE=${(v & CR4.PGE) !== 0n ? 1 : 0}`);
      if (vcpu.writeCr4(v) !== null) fail("toggling CR4.PGE raised #GP");
      regs.cr4 = v;
      checkRegs("MOV CR4");
      sweep(legal.invalidateWhere(() => true));
    } else if (r < 905) {
      const v = regs.cr4 ^ CR4.PCIDE;
      const on = (v & CR4.PCIDE) !== 0n;
      const gp = on && (regs.cr3 & 0xfffn) !== 0n;
      const res = vcpu.writeCr4(v);
      log(`MOV CR4 PCIDE=${on ? 1 : 0}${gp ? " (#GP)" : ""}`);
      if ((res !== null) !== gp) fail(`MOV CR4 PCIDE=${on ? 1 : 0} with CR3 ${hex(regs.cr3)}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(res)}`);
      if (gp) { stats.gps++; checkRegs("a faulting MOV CR4"); return; }
      regs.cr4 = v;
      checkRegs("MOV CR4");
      if (!on) sweep(legal.invalidateWhere(() => true));
    } else if (r < 935) {
      const v = regs.cr0 ^ CR0.WP;
      log(`MOV CR0 WP=${(v & CR0.WP) !== 0n ? 1 : 0}`);
      if (vcpu.writeCr0(v) !== null) fail("toggling CR0.WP raised #GP");
      regs.cr0 = v;
      checkRegs("MOV CR0");
    } else if (r < 995) {
      if (rng.chance(0.5)) {
        regs.rflags ^= RFLAGS.AC;
        log(`RFLAGS.AC=${(regs.rflags & RFLAGS.AC) !== 0n ? 1 : 0}`);
        vcpu.setControl({ rflags: regs.rflags });
      } else {
        regs.pkru = BigInt(rng.u32() & rng.u32() & rng.u32());
        log(`WRPKRU ${hex(regs.pkru)}`);
        vcpu.setControl({ pkru: regs.pkru });
      }
    } else if (r < 1010) {
      const bit = rng.pick([CR4.SMEP, CR4.SMAP]);
      const v = regs.cr4 ^ bit;
      const smepOn = bit === CR4.SMEP && (v & CR4.SMEP) !== 0n;
      log(`MOV CR4 ${bit === CR4.SMEP ? "SMEP" : "SMAP"}=${(v & bit) !== 0n ? 1 : 0}`);
      if (vcpu.writeCr4(v) !== null) fail("toggling CR4.SMEP/SMAP raised #GP");
      regs.cr4 = v;
      checkRegs("MOV CR4");
      if (smepOn) {
        const ctx = curCtx();
        sweep(legal.invalidateWhere((c) => c === ctx));
      }
    } else {
      const off = regs.cr0 & ~CR0.PG;
      const gp = pcide();
      const res = vcpu.writeCr0(off);
      log(`MOV CR0 PG=0${gp ? " (#GP)" : ""}`);
      if ((res !== null) !== gp) fail(`clearing CR0.PG with PCIDE=${gp ? 1 : 0}: expected ${gp ? "#GP" : "success"}, got ${JSON.stringify(res)}`);
      if (gp) { stats.gps++; checkRegs("a faulting MOV CR0"); return; }
      regs.cr0 = off;
      checkRegs("MOV CR0");
      const removed = legal.invalidateWhere(() => true);
      translate(rng.pick(probes), "read", false);
      if (vcpu.writeCr0(regs.cr0 | CR0.PG) !== null) fail("setting CR0.PG raised #GP");
      regs.cr0 |= CR0.PG;
      checkRegs("MOV CR0");
      log("MOV CR0 PG=1");
      sweep(removed);
    }
  };

  /**
   * Many MOV CR3 loads of the current CR3 without bit 63 in a row: each flushes
   * the current PCID and takes a fresh tag, so the tag space rolls over.
   */
  const burst = (n: number): void => {
    const v = regs.cr3;
    for (let i = 0; i < n; i++) if (vcpu.writeCr3(v) !== null) fail(`MOV CR3 ${hex(v)} raised #GP`);
    log(`${n} × MOV CR3 ${hex(v)}`);
    checkRegs("MOV CR3");
    const ctx = curCtx();
    sweep(legal.invalidateWhere((c) => c === ctx));
  };

  for (stats.steps = 0; stats.steps < opts.steps; stats.steps++) {
    if (stats.steps % 150 === 0) hot = Array.from({ length: 8 }, () => rng.pick(probes));
    if (stats.steps % 1000 === 500 && paging()) { burst(40_000); continue; }
    step();
    stats.maxLegal = Math.max(stats.maxLegal, legal.count);
  }
  const t = vcpu.tlbStats();
  stats.evictions = t.evictions;
  stats.rollovers = t.rollovers;
  expect(t.live, opts.note).toBeLessThanOrEqual(opts.tlbEntries);
  return stats;
}

const SEED = testSeed();
const STEPS = 4000;
const SEEDS_PER_CONFIG = [0, 1];
const CONFIGS: Omit<RunOptions, "seed" | "steps" | "note">[] = [
  { tlbEntries: 64, pcide: true, smep: false, smap: false, pke: true },
  { tlbEntries: 64, pcide: false, smep: true, smap: true, pke: false },
  { tlbEntries: 4096, pcide: true, smep: true, smap: true, pke: false },
  { tlbEntries: 4096, pcide: false, smep: false, smap: false, pke: true },
  { tlbEntries: 16, pcide: true, smep: false, smap: true, pke: false },
  { tlbEntries: 1 << 18, pcide: true, smep: true, smap: false, pke: true },
];

describe("random guest sequences never see a translation the SDM forbids", () => {
  CONFIGS.flatMap((c) => SEEDS_PER_CONFIG.map(() => c)).forEach((c, i) => {
    const seed = (SEED + i * 0x9e3779b9) >>> 0;
    const name = `run ${i}: tlbEntries=${c.tlbEntries}, PCIDE ${c.pcide ? "on" : "off"} at start, SMEP ${c.smep ? "on" : "off"}, SMAP ${c.smap ? "on" : "off"}, PKE ${c.pke ? "on" : "off"}`;
    const note = seedNote(SEED, `-t 'run ${i}:'`);
    it(name, async () => {
      const t0 = performance.now();
      const s = await run({ ...c, seed, note, steps: STEPS });
      verbose(`${note} run ${i} tlb ${c.tlbEntries}: ${s.steps} steps, ${s.accesses} accesses (${s.hits} hits, ${s.staleUses} stale but legal, ${s.faults} faults), `
        + `${s.invalidations} invalidations swept (${s.swept} re-issued, ${s.sweptMustWalk} with nothing left to hit), ${s.gps} #GP, ${s.evictions} evictions, ${s.rollovers} tag rollovers, `
        + `≤${s.maxLegal} legal translations, ${Math.round(performance.now() - t0)} ms`);
      fuzzCount("tlb", s.steps);
      expect(s.staleUses, `${note} the run never used a stale translation`).toBeGreaterThan(0);
      expect(s.sweptMustWalk, note).toBeGreaterThan(0);
      if (c.tlbEntries <= 64) expect(s.evictions, note).toBeGreaterThan(0);
      expect(s.rollovers, note).toBeGreaterThan(0);
    });
  });
});

describe("an invalidation's scope is exact in both directions", () => {
  it("INVLPG of one page leaves another page's stale translation in use, as a TLB hit", async () => {
    const machine = await createMachine({ arch: "x86_64", memoryBytes: 16 << 20, tlbEntries: 64 });
    const b = new X86PageTableBuilder(machine.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    const vcpu = machine.vcpu(0);
    vcpu.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE, cr3: b.root });
    const a = b.map(PRIV, 0x40_0000n, "4K", { write: true });
    const c = b.map(PRIV + K4, 0x40_1000n, "4K", { write: true });
    const g = b.map(KERN, 0x40_2000n, "4K", { global: true });
    for (const va of [PRIV, PRIV + K4, KERN]) vcpu.translate(va);
    machine.memory.write64(a, X86PageTableBuilder.leaf(0x50_0000n, "4K", { write: true }));
    machine.memory.write64(c, X86PageTableBuilder.leaf(0x50_1000n, "4K", { write: true }));
    machine.memory.write64(g, X86PageTableBuilder.leaf(0x50_2000n, "4K", { global: true }));
    vcpu.invlpg(PRIV);
    const before = vcpu.tlbStats();
    expect(vcpu.translate(PRIV + K4 + 4n)).toMatchObject({ pa: 0x40_1004n });
    expect(vcpu.translate(KERN + 4n)).toMatchObject({ pa: 0x40_2004n });
    expect(vcpu.tlbStats().hits - before.hits).toBe(2);
    expect(vcpu.translate(PRIV + 4n)).toMatchObject({ pa: 0x50_0004n });
    expect(vcpu.tlbStats().walks - before.walks).toBe(1);
  });
});
