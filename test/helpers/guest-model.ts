/**
 * A small random x86-64 guest kernel that drives shadow-paging vCPUs only
 * through the guest CPU interface (src/guest/cpu.ts), and the architectural
 * oracle every result is judged against. Intel SDM Vol.3A §4.5 (4-level
 * paging), §4.6 (rights), §4.7 (#PF error code), §4.8 (A/D), §4.10.2–4.10.4
 * (TLBs, PCIDs, global pages, INVLPG, INVPCID, MOV CR3); KVM arch/x86/kvm/mmu/mmu.c
 * (shadow pages, unsync, resync).
 *
 * The guest: one init address space (PCID 0) holding only kernel mappings,
 * and up to `maxProcs` processes, each with a kernel PML4 (PCID 2s+1) and, for
 * half of them, a KPTI user PML4 (PCID 2s+2) that shares the user half. Every
 * page-table page after boot comes from a small frame allocator, is zeroed
 * and written only through the direct map (`cpu.zeroPage`, `cpu.store64`), and
 * is freed and reused, as data or as a table of any level. User memory is
 * mapped on demand from the #PF handler; mappings are edited, converted
 * between 4 KiB / 2 MiB / 1 GiB and torn down, with or without invalidation
 * (INVLPG, INVPCID, MOV CR3), on 1–4 vCPUs with shootdowns.
 *
 * The oracle, per vCPU: an access may return the fresh walk of the guest's
 * tables in memory (the reference walker, src/ref/x86-walk.ts), a translation
 * that vCPU legally cached (produced by an earlier access in that PCID, or in
 * the global context for a G = 1 leaf, not covered by any invalidation since,
 * granting this access; a write needs D = 1), or — the one relaxation shadow
 * paging needs — the value a 4 KiB PTE had just before the guest rewrote it,
 * in any address space whose tables reached that PTE, until the observing
 * vCPU invalidates that page in that context (shadow pages of a page table
 * are shared by every root that reaches it, and KVM lets leaf page tables go
 * out of sync until the guest flushes: KVM mmu.c mmu_try_to_unsync_pages). A fault
 * must be exactly the fresh walk's. A successful access that only the fresh
 * walk explains must leave A = 1, and for a write D = 1, in the guest's leaf.
 * Every store64/zeroPage is checked to have reached guest memory.
 *
 * A failure names the seed and prints the last operations (GM_TRAIL=n for
 * more than 40).
 */
import { CR0, CR3_NOFLUSH, CR4, LONG_MODE, PTE, X86PageTableBuilder, type GuestMemory, type X86Access } from "../../src/index.js";
import type { GuestCpu, GuestException } from "../../src/guest/cpu.js";
import { createShadowVm, type ShadowVm } from "../../src/kvm/shadow-vm.js";
import { createTdpVm, type TdpVm } from "../../src/kvm/tdp-vm.js";
import { cr0WpPolicyByName } from "../../src/kvm/cr0wp-policy.js";
import { refTranslateX86, type RefMemory, type RefResult } from "../../src/ref/x86-walk.js";
import { Rng } from "./rng.js";
import { disposeAfterAll } from "./machine.js";

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;
const SIZES = [K4, M2, G1] as const;
const ADDR = 0x000f_ffff_ffff_f000n;
const MAXPHY = 52;

/** Guest RAM. */
export const GUEST_RAM = 32 << 20;
/** The kernel's direct map of all guest RAM (2 MiB global pages), through which it writes its page tables. */
export const DIRECT = 0xffff_8880_0000_0000n;
/** Kernel "vmalloc" area: one shared page table of 4 KiB pages plus a 2 MiB slot, edited at run time. */
export const KV = 0xffff_c900_0000_0000n;
/** Boot-time kernel tables (never freed). */
const BOOT = 0x10_0000n;
/** Kernel data frames mapped in the KV area. */
const KDATA = 0x20_0000n;
/** First frame of the allocator (page tables and 4 KiB user data). */
const FRAME_BASE = 0x40_0000n;
/** Four 2 MiB frames for 2 MiB user pages. */
const HUGE_BASE = 0x100_0000n;

export const directMapVa = (gpa: bigint): bigint => DIRECT + gpa;

const UPPER_USER = PTE.P | PTE.RW | PTE.US;
const UPPER_KERNEL = PTE.P | PTE.RW;

const span = (level: number): bigint => 1n << BigInt(12 + 9 * (level - 1));
const indexAt = (va: bigint, level: number): number => Number((va >> BigInt(3 + 9 * level)) & 511n);
const entryGpa = (table: bigint, va: bigint, level: number): bigint => table + BigInt(indexAt(va, level)) * 8n;
const hex = (v: bigint): string => "0x" + v.toString(16);

/** The user address-space layout every process shares (4 KiB pages, 2 MiB slots, a 1 GiB slot, a stack). */
export const USER = {
  small: 0x40_0000n,
  small2: 0x60_0000n,
  huge2m: 0x4000_0000n,
  huge1g: 0x80_0000_0000n,
  stack: 0x7fff_ffff_c000n,
} as const;

/** Every 4 KiB user page the guest maps or probes (the same in every process). */
export const USER_PAGES: readonly bigint[] = [
  ...Array.from({ length: 32 }, (_, i) => USER.small + BigInt(i) * K4),
  ...Array.from({ length: 12 }, (_, i) => USER.small2 + BigInt(i) * K4),
  ...[0n, 1n, 2n, 3n].flatMap((j) => [0n, 1n, 2n, 511n].map((k) => USER.huge2m + j * M2 + k * K4)),
  ...[0n, K4, 0x1f_f000n, M2, M2 + 5n * K4, 2n * M2, 2n * M2 + K4, 0x1000_0000n].map((o) => USER.huge1g + o),
  ...Array.from({ length: 4 }, (_, i) => USER.stack + BigInt(i) * K4),
];

/** Every 4 KiB kernel page in the KV area the guest maps or probes. */
export const KV_PAGES: readonly bigint[] = [
  ...Array.from({ length: 16 }, (_, i) => KV + BigInt(i) * K4),
  ...[0n, 1n, 511n].map((k) => KV + M2 + k * K4),
];

/** One translation as a TLB entry would hold it. */
export interface Translation {
  base: bigint;
  size: bigint;
  /** Physical address of the page base. */
  pa: bigint;
  w: boolean;
  u: boolean;
  xd: boolean;
  g: boolean;
  a: boolean;
  d: boolean;
  /** gpa of the leaf entry. */
  leaf: bigint;
  level: number;
}

/** The walk of `va` from PML4 `pml4` straight from memory (no rights checks); undefined if not present or reserved. */
export function walkInfo(mem: GuestMemory, pml4: bigint, va: bigint): Translation | undefined {
  let table = pml4 & ADDR;
  let w = true, u = true, xd = false;
  for (let level = 4; level >= 1; level--) {
    const gpa = entryGpa(table, va, level);
    if (!mem.contains(gpa)) return undefined;
    const e = mem.read64(gpa);
    if ((e & PTE.P) === 0n) return undefined;
    w &&= (e & PTE.RW) !== 0n;
    u &&= (e & PTE.US) !== 0n;
    xd ||= (e & PTE.XD) !== 0n;
    const large = level <= 3 && level >= 2 && (e & PTE.PS) !== 0n;
    if (level === 4 && (e & PTE.PS) !== 0n) return undefined;
    if (level === 1 || large) {
      const size = span(level);
      if (large && (e & (size - 1n) & ~0x1fffn) !== 0n) return undefined;
      return {
        base: va & ~(size - 1n), size, pa: e & ADDR & ~(size - 1n), w, u, xd,
        g: (e & PTE.G) !== 0n, a: (e & PTE.A) !== 0n, d: (e & PTE.D) !== 0n, leaf: gpa, level,
      };
    }
    table = e & ADDR;
  }
  return undefined;
}

/** Whether cached translation `t` grants the access (CR0.WP = 1, no SMEP/SMAP/PKE); a write needs D = 1 (SDM §4.8). */
/** Whether cached translation `t` grants the access; CR0.WP is applied at access time (SDM §4.6: supervisor writes ignore R/W when WP = 0). */
function grants(t: Translation, access: X86Access, user: boolean, wp = true): boolean {
  if (access === "write" && !t.d) return false;
  if (user && !t.u) return false;
  if (access === "write" && !t.w && (user || wp)) return false;
  if (access === "fetch" && t.xd) return false;
  return true;
}

const trKey = (t: Translation): string => `${t.base}/${t.size}/${t.pa}/${t.w}/${t.u}/${t.xd}/${t.g}/${t.d}`;

type Ctx = number | "G";

/** Per-vCPU record of what it may legally have cached, and when each context/page was last invalidated. */
class VcpuTlbModel {
  private readonly entries = new Map<string, Map<string, Translation>>();
  private readonly lastCtx = new Map<number, number>();
  private readonly lastPage = new Map<string, number>();
  private lastNonGlobal = 0;
  private lastAll = 0;

  private static key(ctx: Ctx, size: bigint, base: bigint): string {
    return `${ctx}/${size}/${base}`;
  }

  add(ctx: Ctx, t: Translation): void {
    const k = VcpuTlbModel.key(ctx, t.size, t.base);
    let m = this.entries.get(k);
    if (!m) this.entries.set(k, (m = new Map()));
    m.set(trKey(t), t);
  }

  candidates(ctx: number, va: bigint): Translation[] {
    const out: Translation[] = [];
    for (const c of [ctx, "G"] as const) {
      for (const size of SIZES) {
        const m = this.entries.get(VcpuTlbModel.key(c, size, va & ~(size - 1n)));
        if (m) out.push(...m.values());
      }
    }
    return out;
  }

  /** INVLPG / INVPCID 0: the page containing `va` (any size) in contexts `ctxs`. */
  invalidatePage(ctxs: readonly Ctx[], va: bigint, now: number): void {
    for (const c of ctxs) {
      for (const size of SIZES) {
        const k = VcpuTlbModel.key(c, size, va & ~(size - 1n));
        this.entries.delete(k);
        this.lastPage.set(k, now);
      }
    }
  }

  /** MOV CR3 without NOFLUSH / INVPCID 1: the non-global translations of one PCID. */
  invalidateContext(pcid: number, now: number): void {
    for (const k of [...this.entries.keys()]) if (k.startsWith(`${pcid}/`)) this.entries.delete(k);
    this.lastCtx.set(pcid, now);
  }

  /** INVPCID 3: every non-global translation. */
  invalidateNonGlobal(now: number): void {
    for (const k of [...this.entries.keys()]) if (!k.startsWith("G/")) this.entries.delete(k);
    this.lastNonGlobal = now;
  }

  /** INVPCID 2, CR4.PGE toggle: everything. */
  invalidateAll(now: number): void {
    this.entries.clear();
    this.lastAll = now;
  }

  /** When the translation of `base`/`size` in `ctx` (or the global context) was last invalidated on this vCPU. */
  invalidatedAt(ctx: number, global: boolean, size: bigint, base: bigint): number {
    if (global) return Math.max(this.lastAll, this.lastPage.get(VcpuTlbModel.key("G", size, base)) ?? 0);
    return Math.max(this.lastAll, this.lastNonGlobal, this.lastCtx.get(ctx) ?? 0, this.lastPage.get(VcpuTlbModel.key(ctx, size, base)) ?? 0);
  }

  get count(): number {
    let n = 0;
    for (const m of this.entries.values()) n += m.size;
    return n;
  }
}

/** A guest PML4 and the PCID it runs under. */
interface Root {
  id: number;
  pml4: bigint;
  pcid: number;
  proc: Proc | undefined;
  user: boolean;
}

interface Proc {
  id: number;
  slot: number;
  kroot: Root;
  uroot: Root | undefined;
  /** User-half table frames (PDPT, PD, PT), not the PML4s. */
  tables: Set<bigint>;
  /** 4 KiB data frames from the allocator. */
  data: Set<bigint>;
  /** Recently mapped user pages. */
  hot: bigint[];
}

/** Where a table frame sits: the level of its entries, the VA its first entry maps, and who reaches it. */
interface TableInfo {
  level: number;
  vaBase: bigint;
  owner: Proc | "kernel";
}

type FrameUse = "data" | "L1" | "L2" | "L3" | "L4";

export interface GuestModelOptions {
  seed: number;
  vcpus: number;
  policy: string;
  /** Prefix for failure messages (how to replay). */
  note: string;
  /** Shadow-page pool (default 8 MiB). */
  poolBytes?: number;
  /** Hardware TLB entries per vCPU (default 4096). */
  tlbEntries?: number;
  /** Allocator frames (default 320). */
  frames?: number;
  /** Live processes at most (default 5). */
  maxProcs?: number;
  /** Probability that the guest skips the invalidation an edit needs (default 0.2). */
  sloppy?: number;
  /** Skip the D-bit check for writes through 2 MiB / 1 GiB guest pages (open bug fetch-large-dirty, test/src/kvm/shadow-vcpu.test.ts). */
  skipLargePageDirtyCheck?: boolean;
  /** Called with the VM before its vCPUs start (shadow paging only). */
  onVm?: (vm: ShadowVm) => void;
  /** The hypervisor MMU: shadow paging (default), or EPT on the TDP MMU or the legacy direct MMU. */
  mmu?: "shadow" | "tdp" | "legacy";
  /**
   * A CR0.WP policy (src/kvm/cr0wp-policy.ts): the guest then also toggles CR0.WP
   * and enters/leaves SMM (kernel accesses with WP = 0, SMM accesses with
   * paging off). With shadow paging, `policy` is the shadow policy it rides on
   * (no CR0.WP policy reaches the shadow MMU).
   */
  cr0wp?: string;
  /** Largest host page for a direct MMU (default 2). */
  hostLevel?: 1 | 2 | 3;
}

/** A guest CPU the model can start and (with `cr0wp`) send into SMM. */
type ModelCpu = GuestCpu & { start(c: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint }): void; smi(): void; rsm(): void };

export interface GuestModelStats {
  steps: number;
  accesses: number;
  faults: number;
  /** CR0.WP toggles, SMM round trips, and accesses made in SMM. */
  wpToggles: number;
  smm: number;
  smmAccesses: number;
  demandMaps: number;
  staleUses: number;
  /** Stale uses that only a PTE's pre-edit value explains (not this vCPU's own earlier accesses in that context). */
  sharedStaleUses: number;
  adChecks: number;
  edits: number;
  uninvalidatedEdits: number;
  cr3Flush: number;
  cr3Noflush: number;
  invlpg: number;
  invpcid: number;
  procsCreated: number;
  procsDestroyed: number;
  tablesFreed: number;
  /** Allocations of a frame last used differently (data ↔ table, or a table of another level). */
  crossReuse: number;
  maxLegal: number;
}

/** Thrown for a result the architecture forbids; carries the recent history. */
export class ArchViolation extends Error {}

export class GuestModel {
  readonly rng: Rng;
  /** The shadow-paging VM (mmu "shadow"). */
  vm!: ShadowVm;
  /** The EPT VM (mmu "tdp" or "legacy"). */
  tdp: TdpVm | undefined;
  mem!: GuestMemory;
  private ro!: RefMemory;
  private cpus!: ModelCpu[];
  /** CR0.WP per vCPU. */
  private wp!: boolean[];
  private tlb!: VcpuTlbModel[];
  private cur!: Root[];
  private cr4 = LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE;
  private now = 1;
  private nextId = 1;
  private init!: Root;
  private readonly procs: (Proc | undefined)[];
  private readonly tables = new Map<bigint, TableInfo>();
  private readonly freeFrames: bigint[] = [];
  private readonly lastUse = new Map<bigint, FrameUse>();
  /** Phantoms: the value a 4 KiB PTE had before an edit, by root id ("K" for the shared kernel area) and page. */
  private readonly phantoms = new Map<string, Map<bigint, Map<string, { t: Translation; at: number }>>>();
  /** The guest's own bookkeeping: PCIDs a vCPU must flush before using again, and who last used a PCID there. */
  private stale!: Set<number>[];
  private owner!: Map<number, number>[];
  private readonly trail: string[] = [];
  readonly stats: GuestModelStats = {
    steps: 0, accesses: 0, faults: 0, wpToggles: 0, smm: 0, smmAccesses: 0, demandMaps: 0, staleUses: 0, sharedStaleUses: 0, adChecks: 0, edits: 0,
    uninvalidatedEdits: 0, cr3Flush: 0, cr3Noflush: 0, invlpg: 0, invpcid: 0, procsCreated: 0, procsDestroyed: 0,
    tablesFreed: 0, crossReuse: 0, maxLegal: 0,
  };
  private v = 0;
  /** Recently used KV pages. */
  private readonly khot: bigint[] = [];
  /** Recently invalidated pages (INVLPG, INVPCID 0), revisited after CR3 switches. */
  private readonly recentInv: bigint[] = [];

  constructor(readonly opts: GuestModelOptions) {
    this.rng = new Rng(opts.seed);
    this.procs = new Array(opts.maxProcs ?? 5).fill(undefined);
  }

  /** Creates the VM, writes the boot tables and starts every vCPU on the init address space. */
  async boot(): Promise<this> {
    const o = this.opts;
    const kind = o.mmu ?? "shadow";
    if (kind === "shadow") {
      if (o.cr0wp !== undefined) cr0WpPolicyByName(o.cr0wp);
      this.vm = await createShadowVm({ vcpus: o.vcpus, memoryBytes: GUEST_RAM, policy: o.policy, poolBytes: o.poolBytes ?? 8 << 20, tlbEntries: o.tlbEntries ?? 4096 });
      disposeAfterAll(this.vm.machine);
      o.onVm?.(this.vm);
      this.mem = this.vm.machine.memory;
      this.cpus = this.vm.vcpus;
    } else {
      this.tdp = await createTdpVm({
        vcpus: o.vcpus, mmu: kind, memoryBytes: GUEST_RAM, policy: o.cr0wp ?? "baseline", poolBytes: o.poolBytes ?? 8 << 20,
        tlbEntries: o.tlbEntries ?? 4096, hostLevel: o.hostLevel ?? 2,
      });
      disposeAfterAll(this.tdp.machine);
      this.mem = this.tdp.machine.memory;
      this.cpus = this.tdp.vcpus;
    }
    this.wp = new Array(o.vcpus).fill(true);
    const mem = this.mem;
    this.ro = { read64: (g) => (mem.contains(g) && mem.contains(g + 7n) ? mem.read64(g) : undefined), cmpxchg64: (g, e) => mem.read64(g) === e };
    for (let i = 0; i < (o.frames ?? 320); i++) this.freeFrames.push(FRAME_BASE + BigInt(i) * K4);
    const pml4 = BOOT, dPdpt = BOOT + K4, dPd = BOOT + 2n * K4, kPdpt = BOOT + 3n * K4, kPd = BOOT + 4n * K4, kPt = BOOT + 5n * K4;
    for (let i = 0n; i < BigInt(GUEST_RAM) / M2; i++) {
      mem.write64(dPd + i * 8n, X86PageTableBuilder.leaf(i * M2, "2M", { write: true, nx: true, global: true, accessed: true, dirty: true }));
    }
    mem.write64(dPdpt + BigInt(indexAt(DIRECT, 3)) * 8n, dPd | UPPER_KERNEL);
    mem.write64(entryGpa(pml4, DIRECT, 4), dPdpt | UPPER_KERNEL);
    mem.write64(entryGpa(pml4, KV, 4), kPdpt | UPPER_KERNEL);
    mem.write64(entryGpa(kPdpt, KV, 3), kPd | UPPER_KERNEL);
    mem.write64(entryGpa(kPd, KV, 2), kPt | UPPER_KERNEL);
    for (let i = 0n; i < 16n; i++) {
      if (this.rng.chance(0.6)) mem.write64(kPt + i * 8n, this.kernelLeaf());
    }
    this.tables.set(kPt, { level: 1, vaBase: KV, owner: "kernel" });
    this.tables.set(kPd, { level: 2, vaBase: KV, owner: "kernel" });
    this.init = { id: 0, pml4, pcid: 0, proc: undefined, user: false };
    this.tlb = this.cpus.map(() => new VcpuTlbModel());
    this.cur = this.cpus.map(() => this.init);
    this.stale = this.cpus.map(() => new Set<number>());
    this.owner = this.cpus.map(() => new Map<number, number>());
    for (const c of this.cpus) c.start({ cr0: LONG_MODE.cr0, cr3: pml4, cr4: this.cr4, efer: LONG_MODE.efer });
    return this;
  }

  private kernelLeaf(): bigint {
    return X86PageTableBuilder.leaf(KDATA + BigInt(this.rng.int(256)) * K4, "4K", {
      write: this.rng.chance(0.7), nx: this.rng.chance(0.5), global: this.rng.chance(0.6), accessed: this.rng.chance(0.5), dirty: this.rng.chance(0.5),
    });
  }

  // ---- failure reporting ------------------------------------------------------------

  private log(s: string): void {
    this.trail.push(`${this.stats.steps} v${this.v}: ${s}`);
    if (this.trail.length > (Number(process.env.GM_TRAIL) || 40)) this.trail.shift();
  }

  private fail(msg: string): never {
    throw new ArchViolation(`${this.opts.note} policy ${this.opts.policy}, step ${this.stats.steps}, vCPU ${this.v}: ${msg}\nlast operations:\n  ${this.trail.join("\n  ")}`);
  }

  // ---- the oracle -------------------------------------------------------------------------

  private cr3Of(r: Root): bigint {
    return r.pml4 | BigInt(r.pcid);
  }

  private fresh(v: number, va: bigint, access: X86Access, user: boolean): RefResult {
    return refTranslateX86(this.ro, {
      cr0: this.wp[v] ? LONG_MODE.cr0 : LONG_MODE.cr0 & ~CR0.WP, cr3: this.cr3Of(this.cur[v]!), cr4: this.cr4, efer: LONG_MODE.efer, pkru: 0n, rflags: 0n, maxPhysAddrBits: MAXPHY,
    }, va, access, user);
  }

  private phantomKey(root: Root, va: bigint): string | undefined {
    if (va >= KV && va < KV + G1) return "K";
    if (va < 0x8000_0000_0000n) return String(root.id);
    return undefined;
  }

  private addPhantom(key: string, page: bigint, t: Translation): void {
    let byPage = this.phantoms.get(key);
    if (!byPage) this.phantoms.set(key, (byPage = new Map()));
    let m = byPage.get(page);
    if (!m) byPage.set(page, (m = new Map()));
    m.set(trKey(t), { t, at: this.now++ });
  }

  /** Judges one access's result on vCPU `v`; returns it. */
  private judge(v: number, va: bigint, access: X86Access, user: boolean, got: bigint | GuestException): bigint | GuestException {
    const s = this.stats;
    s.accesses++;
    const root = this.cur[v]!;
    const ctx = root.pcid;
    const want = this.fresh(v, va, access, user);
    const what = `${access}${user ? "/user" : ""} ${hex(va)} under root ${root.id} (cr3 ${hex(this.cr3Of(root))})`;
    const showWant = want.ok ? `${hex(want.pa)}` : `#${want.kind}(err=${want.errorCode})`;
    if (typeof got !== "bigint") {
      s.faults++;
      if ("gp" in got) {
        if (want.ok || want.kind !== "general-protection") this.fail(`${what}: #GP, fresh walk gives ${showWant}`);
      } else if (want.ok || want.kind !== "page-fault" || want.errorCode !== got.errorCode || got.cr2 !== va) {
        this.fail(`${what}: #PF(err=${got.errorCode}, cr2=${hex(got.cr2)}), fresh walk gives ${showWant}`);
      }
      return got;
    }
    const isFresh = want.ok && want.pa === got;
    const fits = (t: Translation) => t.pa + (va & (t.size - 1n)) === got && grants(t, access, user, this.wp[v]);
    const cached = this.tlb[v]!.candidates(ctx, va).filter(fits);
    const key = this.phantomKey(root, va);
    const page = va & ~0xfffn;
    const ph = key === undefined ? [] : [...(this.phantoms.get(key)?.get(page)?.values() ?? [])].filter(
      (p) => fits(p.t) && p.at > this.tlb[v]!.invalidatedAt(ctx, p.t.g && (this.cr4 & CR4.PGE) !== 0n, p.t.size, p.t.base));
    if (!isFresh && cached.length === 0 && ph.length === 0) {
      const all = this.tlb[v]!.candidates(ctx, va).map((t) => `${hex(t.pa)}/${t.size}${t.w ? "w" : ""}${t.u ? "u" : ""}${t.xd ? "x" : ""}${t.d ? "d" : ""}${t.g ? "g" : ""}`);
      const phs = [...(this.phantoms.get(key ?? "")?.get(page)?.values() ?? [])].map((p) => `${hex(p.t.pa)}@${p.at}(inv ${this.tlb[v]!.invalidatedAt(ctx, p.t.g, p.t.size, p.t.base)})`);
      this.fail(`${what}: got ${hex(got)}; fresh walk gives ${showWant}; legally cached [${all.join(", ")}]; shared-stale [${phs.join(", ")}]`);
    }
    if (!isFresh) {
      s.staleUses++;
      if (cached.length === 0) s.sharedStaleUses++;
    }
    if (isFresh) {
      const info = walkInfo(this.mem, root.pml4, va)!;
      if (cached.length === 0 && ph.length === 0) {
        s.adChecks++;
        if (!info.a) this.fail(`${what}: succeeded (${hex(got)}) through the fresh walk but the guest leaf at ${hex(info.leaf)} has A = 0 (${hex(this.mem.read64(info.leaf))})`);
        if (access === "write" && !info.d && !(info.level > 1 && this.opts.skipLargePageDirtyCheck)) this.fail(`${what}: write succeeded (${hex(got)}) through the fresh walk but the guest leaf at ${hex(info.leaf)} has D = 0 (${hex(this.mem.read64(info.leaf))})`);
      }
      this.tlb[v]!.add(info.g && (this.cr4 & CR4.PGE) !== 0n ? "G" : ctx, info);
    }
    return got;
  }

  // ---- guest CPU operations, mirrored into the oracle --------------------------------------------

  private access(v: number, va: bigint, access: X86Access, user: boolean): bigint | GuestException {
    const got = this.cpus[v]!.access(va, access, user);
    this.log(`${access}${user ? "/user" : ""} ${hex(va)} -> ${typeof got === "bigint" ? hex(got) : "gp" in got ? "#GP" : `#PF ${got.errorCode}`}`);
    return this.judge(v, va, access, user, got);
  }

  private writeCr3(v: number, root: Root, noflush: boolean): void {
    const value = this.cr3Of(root) | (noflush ? CR3_NOFLUSH : 0n);
    this.log(`MOV CR3 ${hex(value)} (root ${root.id}${root.proc ? ` proc ${root.proc.id}${root.user ? " user" : ""}` : " init"})`);
    const r = this.cpus[v]!.writeCr3(value);
    if (r) this.fail(`MOV CR3 ${hex(value)} raised ${JSON.stringify(r)}`);
    this.cur[v] = root;
    if (noflush) this.stats.cr3Noflush++;
    else {
      this.stats.cr3Flush++;
      this.tlb[v]!.invalidateContext(root.pcid, this.now++);
      this.stale[v]!.delete(root.pcid);
    }
    if (root.proc) this.owner[v]!.set(root.pcid, root.proc.id);
  }

  /** Switches vCPU `v` to `root` the way a careful kernel would (flush if the PCID may hold stale entries), sometimes not. */
  private switchTo(v: number, root: Root): void {
    const stale = this.stale[v]!.has(root.pcid) || (root.proc !== undefined && this.owner[v]!.get(root.pcid) !== root.proc.id);
    const flush = this.rng.chance(this.opts.sloppy ?? 0.2) ? this.rng.chance(0.5) : stale;
    this.writeCr3(v, root, !flush);
    const r = this.rng;
    for (let i = r.int(3); i > 0; i--) {
      const p = root.proc;
      const access: X86Access = r.pick(["read", "read", "write", "fetch"]);
      const k = r.int(10);
      const va = k < 4 && this.recentInv.length > 0 ? r.pick(this.recentInv)
        : k < 7 && p && p.hot.length > 0 ? r.pick(p.hot)
        : this.khot.length > 0 ? r.pick(this.khot) : KV;
      this.access(v, va + BigInt(r.int(512)) * 8n, access, va < KV && r.chance(0.7));
    }
  }

  private noteInvalidated(va: bigint): void {
    this.recentInv.push(va & ~0xfffn);
    if (this.recentInv.length > 8) this.recentInv.shift();
  }

  private invlpg(v: number, va: bigint): void {
    this.noteInvalidated(va);
    this.log(`INVLPG ${hex(va)}`);
    this.cpus[v]!.invlpg(va);
    this.stats.invlpg++;
    this.tlb[v]!.invalidatePage([this.cur[v]!.pcid, "G"], va, this.now++);
  }

  private invpcid(v: number, type: number, pcid: number, va: bigint): void {
    if (type === 0) this.noteInvalidated(va);
    this.log(`INVPCID ${type} pcid ${pcid} ${hex(va)}`);
    const r = this.cpus[v]!.invpcid(type, pcid, va);
    if (r) this.fail(`INVPCID ${type} pcid ${pcid} raised ${JSON.stringify(r)}`);
    this.stats.invpcid++;
    const t = this.tlb[v]!, now = this.now++;
    if (type === 0) t.invalidatePage([pcid], va, now);
    else if (type === 1) { t.invalidateContext(pcid, now); this.stale[v]!.delete(pcid); }
    else if (type === 2) { t.invalidateAll(now); this.stale[v]!.clear(); }
    else { t.invalidateNonGlobal(now); this.stale[v]!.clear(); }
  }

  /** A page-table store through the direct map; records the PTE's old value as shared-stale for every root that reaches it. */
  private store(v: number, gpa: bigint, value: bigint): void {
    const info = this.tables.get(gpa & ~0xfffn);
    if (info && info.level === 1) {
      const va = info.vaBase + BigInt(Number((gpa & 0xfffn) >> 3n)) * K4;
      const roots = info.owner === "kernel" ? [this.init] : [info.owner.kroot, ...(info.owner.uroot ? [info.owner.uroot] : [])];
      for (const r of roots) {
        const t = walkInfo(this.mem, r.pml4, va);
        if (t && t.leaf === gpa) this.addPhantom(info.owner === "kernel" ? "K" : String(r.id), va, t);
      }
    }
    this.log(`store ${hex(value)} at ${hex(gpa)}${info ? ` (L${info.level} table)` : ""}`);
    const before = this.fresh(v, directMapVa(gpa), "write", false);
    const r = this.cpus[v]!.store64(directMapVa(gpa), value);
    if (r) this.fail(`store64 to the direct map at ${hex(gpa)} raised ${JSON.stringify(r)}`);
    this.noteFill(v, directMapVa(gpa), before);
    if (this.mem.read64(gpa) !== value) this.fail(`store64 of ${hex(value)} to ${hex(gpa)} left ${hex(this.mem.read64(gpa))}`);
  }

  /**
   * A kernel store through the direct map fills the TLB like any access (with
   * CR4.PGE in hardware, as under EPT, its global entry outlives CR3 switches):
   * the translation its fresh walk gave before the store becomes legally cached.
   */
  private noteFill(v: number, va: bigint, before: RefResult): void {
    if (!before.ok) return;
    const info = walkInfo(this.mem, this.cur[v]!.pml4, va);
    if (info) this.tlb[v]!.add(info.g && (this.cr4 & CR4.PGE) !== 0n ? "G" : this.cur[v]!.pcid, info);
  }

  private zero(v: number, frame: bigint): void {
    this.log(`zeroPage ${hex(frame)}`);
    const before = this.fresh(v, directMapVa(frame), "write", false);
    const r = this.cpus[v]!.zeroPage(directMapVa(frame));
    if (r) this.fail(`zeroPage of ${hex(frame)} raised ${JSON.stringify(r)}`);
    this.noteFill(v, directMapVa(frame), before);
    for (const off of [0n, 8n, 0x7f8n, 0xff8n]) if (this.mem.read64(frame + off) !== 0n) this.fail(`zeroPage left ${hex(frame + off)} non-zero`);
  }

  // ---- frames ---------------------------------------------------------------------------

  private allocFrame(v: number, use: FrameUse): bigint | undefined {
    if (this.freeFrames.length === 0) return undefined;
    const i = this.rng.int(this.freeFrames.length);
    const f = this.freeFrames[i]!;
    this.freeFrames[i] = this.freeFrames[this.freeFrames.length - 1]!;
    this.freeFrames.pop();
    const last = this.lastUse.get(f);
    if (last !== undefined && last !== use) this.stats.crossReuse++;
    this.lastUse.set(f, use);
    this.zero(v, f);
    return f;
  }

  private releaseFrame(f: bigint): void {
    this.freeFrames.push(f);
  }

  // ---- the kernel's table management ------------------------------------------------------

  /** The process whose kernel root `v` runs, making sure `v` is in kernel mode (a kernel root). */
  private enterKernel(v: number): void {
    const r = this.cur[v]!;
    if (r.user) this.writeCr3(v, r.proc!.kroot, true);
  }

  private newTable(v: number, p: Proc, level: number, vaBase: bigint): bigint | undefined {
    const f = this.allocFrame(v, `L${level}` as FrameUse);
    if (f === undefined) return undefined;
    this.tables.set(f, { level, vaBase, owner: p });
    p.tables.add(f);
    return f;
  }

  /** Writes a user-half PML4 entry of `p` (both PML4s under KPTI). */
  private storePml4(v: number, p: Proc, va: bigint, value: bigint): void {
    this.store(v, entryGpa(p.kroot.pml4, va, 4), value);
    if (p.uroot) this.store(v, entryGpa(p.uroot.pml4, va, 4), value);
  }

  /** The gpa of `p`'s table of `level` entries for `va`, created (and any large page in the way replaced) as needed. */
  private tableFor(v: number, p: Proc, va: bigint, level: number): bigint | undefined {
    let table = p.kroot.pml4;
    for (let l = 4; l > level; l--) {
      const g = entryGpa(table, va, l);
      const e = this.mem.read64(g);
      if ((e & PTE.P) !== 0n && (l === 4 || (e & PTE.PS) === 0n)) { table = e & ADDR; continue; }
      const t = this.newTable(v, p, l - 1, va & ~(span(l) - 1n));
      if (t === undefined) return undefined;
      const value = t | UPPER_USER;
      if (l === 4) this.storePml4(v, p, va, value); else this.store(v, g, value);
      table = t;
    }
    return table;
  }

  /** Frees table `t` (entries of `level`) and everything below it that `p` owns. */
  private freeTable(p: Proc, t: bigint, level: number): void {
    for (let i = 0n; i < 512n; i++) {
      const e = this.mem.read64(t + i * 8n);
      if ((e & PTE.P) === 0n) continue;
      const child = e & ADDR;
      if (level > 1 && (e & PTE.PS) === 0n) {
        if (p.tables.has(child)) this.freeTable(p, child, level - 1);
      } else if (level === 1 && p.data.has(child)) {
        p.data.delete(child);
        this.releaseFrame(child);
      }
    }
    p.tables.delete(t);
    this.tables.delete(t);
    this.releaseFrame(t);
    this.stats.tablesFreed++;
  }

  /** Frees what entry value `old` (of `level`) pointed to, if `p` owns it. */
  private dropTarget(p: Proc, old: bigint, level: number): void {
    if ((old & PTE.P) === 0n) return;
    const target = old & ADDR;
    if (level > 1 && (level === 4 || (old & PTE.PS) === 0n)) {
      if (p.tables.has(target)) this.freeTable(p, target, level - 1);
    } else if (level === 1 && p.data.has(target)) {
      p.data.delete(target);
      this.releaseFrame(target);
    }
  }

  /** A random user leaf for `va` at `level` (4 KiB from the allocator, 2 MiB from the huge frames, 1 GiB at 0 or 1 GiB). */
  private userLeaf(v: number, p: Proc, level: number): bigint | undefined {
    const r = this.rng;
    const flags = { user: r.chance(0.9), write: r.chance(0.8), nx: r.chance(0.2), global: r.chance(0.05), accessed: r.chance(0.5), dirty: r.chance(0.4) };
    if (level === 1) {
      const f = this.allocFrame(v, "data");
      if (f === undefined) return undefined;
      p.data.add(f);
      return X86PageTableBuilder.leaf(f, "4K", flags);
    }
    if (level === 2) return X86PageTableBuilder.leaf(HUGE_BASE + BigInt(r.int(4)) * M2, "2M", flags);
    return X86PageTableBuilder.leaf(BigInt(r.int(2)) * G1, "1G", flags);
  }

  /** The level at which a fresh mapping of `va` is made: 4 KiB pages, except in the 2 MiB slots and the 1 GiB slot. */
  private mappingLevel(va: bigint): number {
    const r = this.rng;
    if (va >= USER.huge2m && va < USER.huge2m + G1) return r.chance(0.5) ? 2 : 1;
    if (va >= USER.huge1g && va < USER.huge1g + G1) return r.pick([1, 1, 2, 2, 3]);
    return 1;
  }

  private touch(p: Proc, va: bigint): void {
    const page = va & ~0xfffn;
    const i = p.hot.indexOf(page);
    if (i >= 0) p.hot.splice(i, 1);
    p.hot.push(page);
    if (p.hot.length > 12) p.hot.shift();
  }

  private touchKernel(va: bigint): void {
    const page = va & ~0xfffn;
    const i = this.khot.indexOf(page);
    if (i >= 0) this.khot.splice(i, 1);
    this.khot.push(page);
    if (this.khot.length > 6) this.khot.shift();
  }

  /** Maps `va` in `p` at `level` with a fresh leaf; returns false if out of frames. */
  private mapPage(v: number, p: Proc, va: bigint, level: number): boolean {
    const t = this.tableFor(v, p, va, level);
    if (t === undefined) return false;
    const leaf = this.userLeaf(v, p, level);
    if (leaf === undefined) return false;
    const g = entryGpa(t, va, level);
    const old = this.mem.read64(g);
    this.store(v, g, leaf);
    this.dropTarget(p, old, level);
    this.touch(p, va);
    return true;
  }

  // ---- processes -----------------------------------------------------------------------

  private createProc(v: number): void {
    const slot = this.procs.findIndex((p) => p === undefined);
    if (slot < 0) return;
    this.enterKernel(v);
    const kpml4 = this.allocFrame(v, "L4");
    if (kpml4 === undefined) return;
    const id = this.nextId++;
    const p: Proc = { id, slot, kroot: undefined!, uroot: undefined, tables: new Set(), data: new Set(), hot: [] };
    p.kroot = { id: this.nextId++, pml4: kpml4, pcid: 2 * slot + 1, proc: p, user: false };
    this.tables.set(kpml4, { level: 4, vaBase: 0n, owner: p });
    for (const va of [DIRECT, KV]) this.store(v, entryGpa(kpml4, va, 4), this.mem.read64(entryGpa(this.init.pml4, va, 4)));
    if (this.rng.chance(0.5)) {
      const upml4 = this.allocFrame(v, "L4");
      if (upml4 !== undefined) {
        p.uroot = { id: this.nextId++, pml4: upml4, pcid: 2 * slot + 2, proc: p, user: true };
        this.tables.set(upml4, { level: 4, vaBase: 0n, owner: p });
        this.store(v, entryGpa(upml4, KV, 4), this.mem.read64(entryGpa(this.init.pml4, KV, 4)));
      }
    }
    this.procs[slot] = p;
    this.stats.procsCreated++;
    this.log(`created proc ${id} in slot ${slot} (roots ${p.kroot.id}${p.uroot ? `, ${p.uroot.id}` : ""})`);
    this.switchTo(v, p.uroot && this.rng.chance(0.5) ? p.uroot : p.kroot);
  }

  private destroyProc(v: number, p: Proc): void {
    this.log(`destroying proc ${p.id}`);
    for (let w = 0; w < this.cpus.length; w++) {
      if (this.cur[w]!.proc === p) { this.v = w; this.switchTo(w, this.init); }
    }
    this.v = v;
    this.enterKernel(v);
    if (this.rng.chance(0.5)) {
      for (const va of [USER.small, USER.huge1g, USER.stack]) {
        const g = entryGpa(p.kroot.pml4, va, 4);
        if ((this.mem.read64(g) & PTE.P) !== 0n) this.storePml4(v, p, va, 0n);
      }
    }
    for (const t of [...p.tables]) if (this.tables.get(t)?.level === 3) this.freeTable(p, t, 3);
    for (const t of [...p.tables]) if (p.tables.has(t)) this.freeTable(p, t, this.tables.get(t)!.level);
    for (const f of p.data) this.releaseFrame(f);
    for (const r of [p.kroot, p.uroot]) {
      if (!r) continue;
      this.tables.delete(r.pml4);
      this.releaseFrame(r.pml4);
      this.phantoms.delete(String(r.id));
    }
    this.procs[p.slot] = undefined;
    this.stats.procsDestroyed++;
  }

  // ---- invalidation after an edit ---------------------------------------------------------

  /**
   * The invalidation an edit of `p`'s mapping of `va` (a page, or a whole range
   * when `range`) needs, done as a kernel would: locally INVLPG or a flushing
   * MOV CR3, INVPCID or a deferred flush for the other PCID of the process,
   * IPIs to vCPUs running it, deferred flushes everywhere else. Sometimes skipped.
   */
  private invalidateAfterEdit(v: number, p: Proc | "kernel", va: bigint, range: boolean): void {
    if (this.rng.chance(this.opts.sloppy ?? 0.2)) { this.stats.uninvalidatedEdits++; this.log("(no invalidation)"); return; }
    const pcids = p === "kernel" ? this.allPcids() : [p.kroot.pcid, ...(p.uroot ? [p.uroot.pcid] : [])];
    for (let w = 0; w < this.cpus.length; w++) {
      const running = this.cur[w]!;
      if (p !== "kernel" && !pcids.includes(running.pcid)) {
        for (const pc of pcids) this.stale[w]!.add(pc);
        continue;
      }
      if (w !== v) this.cpus[v]!.sendIpi(w);
      this.v = w;
      if (range && this.cpus[w]!.hasInvpcid && this.rng.chance(0.4)) {
        if (p === "kernel") this.invpcid(w, 2, 0, 0n);
        else for (const pc of pcids) this.invpcid(w, 1, pc, 0n);
      } else if (range) {
        this.writeCr3(w, running, false);
        if (p === "kernel") this.invlpg(w, va);
        for (const pc of pcids) if (pc !== running.pcid) this.stale[w]!.add(pc);
      } else {
        this.invlpg(w, va);
        if (p === "kernel" && this.rng.chance(0.5)) continue;
        for (const pc of pcids) {
          if (pc === running.pcid) continue;
          if (this.cpus[w]!.hasInvpcid && this.rng.chance(0.5)) this.invpcid(w, 0, pc, va);
          else this.stale[w]!.add(pc);
        }
      }
    }
    this.v = v;
  }

  /** Right after an edit: vCPUs running an address space that maps `va` access it (a stale answer is legal only if nothing invalidated it). */
  private probe(v: number, p: Proc | "kernel", va: bigint): void {
    const r = this.rng;
    for (let w = 0; w < this.cpus.length; w++) {
      const root = this.cur[w]!;
      if (p !== "kernel" && root.proc !== p) continue;
      if (!r.chance(w === v ? 0.7 : 0.4)) continue;
      this.v = w;
      const access: X86Access = r.pick(["read", "write", "write", "fetch"]);
      this.access(w, (va & ~0xfffn) + BigInt(r.int(512)) * 8n, access, p !== "kernel" && r.chance(0.7));
    }
    this.v = v;
  }

  private allPcids(): number[] {
    const out = [0];
    for (const p of this.procs) if (p) out.push(p.kroot.pcid, ...(p.uroot ? [p.uroot.pcid] : []));
    return out;
  }

  // ---- edits -------------------------------------------------------------------------------

  /** Edits one user mapping of `p` (the current process, or another one). */
  private editUser(v: number, p: Proc): void {
    const r = this.rng;
    const va = r.chance(0.7) && p.hot.length > 0 ? r.pick(p.hot) : r.pick(USER_PAGES);
    const t = walkInfo(this.mem, p.kroot.pml4, va);
    this.stats.edits++;
    this.touch(p, va);
    if (!t || r.chance(0.15)) {
      const level = this.mappingLevel(va);
      if (this.mapPage(v, p, va, level)) this.invalidateAfterEdit(v, p, va, level > 1 || t !== undefined && t.level > 1);
      this.probe(v, p, va);
      return;
    }
    const cur = this.mem.read64(t.leaf);
    const k = r.int(100);
    if (k < 50) {
      const flip = r.pick([PTE.RW, PTE.US, PTE.XD, PTE.D, PTE.A, PTE.G, PTE.P, PTE.RW, PTE.D]);
      this.store(v, t.leaf, cur ^ flip);
      if (flip === PTE.P && t.level === 1 && p.data.has(cur & ADDR) && r.chance(0.3)) {
        p.data.delete(cur & ADDR);
        this.releaseFrame(cur & ADDR);
      }
      this.invalidateAfterEdit(v, p, va, t.level > 1);
    } else if (k < 70) {
      if (this.mapPage(v, p, va, t.level)) this.invalidateAfterEdit(v, p, va, t.level > 1);
    } else if (k < 85 && t.level < 3) {
      // The page table or 2 MiB page holding `va` disappears: its parent entry becomes a larger page or not present.
      const parentLevel = t.level + 1;
      const parent = this.parentEntry(p, va, parentLevel);
      if (parent === undefined) return;
      const old = this.mem.read64(parent);
      const next = r.chance(0.5) && (parentLevel === 2 ? va >= USER.huge2m : va >= USER.huge1g) ? this.userLeaf(v, p, parentLevel) : 0n;
      if (next === undefined) return;
      if (parentLevel === 4) this.storePml4(v, p, va, next); else this.store(v, parent, next);
      this.dropTarget(p, old, parentLevel);
      this.invalidateAfterEdit(v, p, va, true);
    } else {
      // A non-leaf entry on the path changes rights.
      const level = t.level + 1 + r.int(4 - t.level);
      const g = this.parentEntry(p, va, level);
      if (g === undefined) return;
      const e = this.mem.read64(g);
      const flip = r.pick([PTE.RW, PTE.US, PTE.XD]);
      if (level === 4) this.storePml4(v, p, va, e ^ flip); else this.store(v, g, e ^ flip);
      this.invalidateAfterEdit(v, p, va, true);
    }
    this.probe(v, p, va);
  }

  /** gpa of `p`'s entry of `level` for `va`, if the walk reaches that level. */
  private parentEntry(p: Proc, va: bigint, level: number): bigint | undefined {
    let table = p.kroot.pml4;
    for (let l = 4; l > level; l--) {
      const e = this.mem.read64(entryGpa(table, va, l));
      if ((e & PTE.P) === 0n || (l < 4 && (e & PTE.PS) !== 0n)) return undefined;
      table = e & ADDR;
    }
    return entryGpa(table, va, level);
  }

  /** Edits a kernel KV mapping (shared by every address space). */
  private editKernel(v: number): void {
    const r = this.rng;
    this.stats.edits++;
    const kPd = BOOT + 4n * K4, kPt = BOOT + 5n * K4;
    if (r.chance(0.2)) {
      const g = entryGpa(kPd, KV + M2, 2);
      const cur = this.mem.read64(g);
      this.store(v, g, (cur & PTE.P) !== 0n ? 0n : X86PageTableBuilder.leaf(HUGE_BASE + BigInt(r.int(4)) * M2, "2M", { write: r.chance(0.5), global: r.chance(0.7), accessed: true, dirty: r.chance(0.5) }));
      this.invalidateAfterEdit(v, "kernel", KV + M2, true);
      this.probe(v, "kernel", KV + M2 + BigInt(r.int(2)) * K4);
      return;
    }
    const hot = this.khot.filter((va) => va < KV + M2);
    const i = r.chance(0.6) && hot.length > 0 ? (r.pick(hot) - KV) / K4 : BigInt(r.int(16));
    this.touchKernel(KV + i * K4);
    const g = kPt + i * 8n;
    const cur = this.mem.read64(g);
    this.store(v, g, r.chance(0.5) || (cur & PTE.P) === 0n ? (r.chance(0.15) ? 0n : this.kernelLeaf()) : cur ^ r.pick([PTE.RW, PTE.G, PTE.XD, PTE.D]));
    this.invalidateAfterEdit(v, "kernel", KV + i * K4, false);
    this.probe(v, "kernel", KV + i * K4);
  }

  // ---- one step -------------------------------------------------------------------------------

  private liveProcs(): Proc[] {
    return this.procs.filter((p): p is Proc => p !== undefined);
  }

  private randomAccess(v: number): void {
    const r = this.rng;
    const root = this.cur[v]!;
    const p = root.proc;
    const access: X86Access = r.pick(["read", "read", "write", "write", "fetch"]);
    const k = r.int(100);
    let va: bigint, user: boolean;
    if (p && k < 70) {
      va = (r.chance(0.8) && p.hot.length > 0 ? r.pick(p.hot) : r.pick(USER_PAGES)) + BigInt(r.int(512)) * 8n;
      user = r.chance(0.75);
    } else if (k < 85) {
      va = (r.chance(0.7) && this.khot.length > 0 ? r.pick(this.khot) : r.pick(KV_PAGES)) + BigInt(r.int(512)) * 8n;
      this.touchKernel(va);
      user = r.chance(0.1);
    } else if (k < 95) {
      va = directMapVa(r.chance(0.8) ? FRAME_BASE + BigInt(r.int(this.opts.frames ?? 320)) * K4 : BOOT + BigInt(r.int(6)) * K4) + BigInt(r.int(512)) * 8n;
      user = r.chance(0.1);
    } else {
      va = r.pick([0x1000n, 0x7000_0000_0000n, 0xffff_f000_0000_0000n, USER.huge1g + 0x3000_0000n]) + BigInt(r.int(16)) * K4;
      user = r.chance(0.5);
    }
    const got = this.access(v, va, access, user);
    if (typeof got === "bigint" || "gp" in got || !p || va >= 0x8000_0000_0000n || !USER_PAGES.includes(va & ~0xfffn)) return;
    if (!r.chance(0.85)) return;
    // The #PF handler maps the page (not present) or grants the missing right, then the access is retried.
    this.enterKernel(v);
    const t = walkInfo(this.mem, p.kroot.pml4, va);
    if (!t) {
      if (!this.mapPage(v, p, va & ~0xfffn, this.mappingLevel(va))) return;
      this.stats.demandMaps++;
    } else {
      const e = this.mem.read64(t.leaf);
      let fix = e | PTE.A;
      if (access === "write") fix |= PTE.RW | PTE.D;
      if (user) fix |= PTE.US;
      if (access === "fetch") fix &= ~PTE.XD;
      if (fix !== e) this.store(v, t.leaf, fix);
      for (let l = t.level + 1; l <= 4; l++) {
        const g = this.parentEntry(p, va, l)!;
        const pe = this.mem.read64(g);
        const pf = (pe | PTE.RW | PTE.US) & ~PTE.XD;
        if (pf !== pe) { if (l === 4) this.storePml4(v, p, va, pf); else this.store(v, g, pf); }
      }
    }
    if (root.user) this.writeCr3(v, root, !this.stale[v]!.has(root.pcid));
    this.access(v, va, access, user);
  }

  /** Toggles CR0.WP on vCPU `v` (a KERNEXEC-style open/close); the TLB keeps its entries, WP applies at access time. */
  private toggleWp(v: number): void {
    this.wp[v] = !this.wp[v];
    const value = this.wp[v] ? LONG_MODE.cr0 : LONG_MODE.cr0 & ~CR0.WP;
    this.log(`MOV CR0 WP=${this.wp[v] ? 1 : 0}`);
    const r = this.cpus[v]!.writeCr0(value);
    if (r) this.fail(`MOV CR0 ${hex(value)} raised ${JSON.stringify(r)}`);
    this.stats.wpToggles++;
  }

  /**
   * An SMI on vCPU `v`, a few accesses with paging off (the identity: pa = va
   * inside guest RAM), RSM. The oracle assumes no invalidation at either
   * transition (SMI and RSM are not MOV CR0/CR3): translations cached before
   * the SMI stay legal after RSM. vmmu's hypervisors happen to flush more.
   */
  private smmRoundTrip(v: number): void {
    const r = this.rng;
    this.log("SMI");
    this.cpus[v]!.smi();
    this.stats.smm++;
    for (let i = 1 + r.int(4); i > 0; i--) {
      const va = BigInt(r.int(GUEST_RAM / 8)) * 8n;
      const access: X86Access = r.pick(["read", "write", "fetch"]);
      const got = this.cpus[v]!.access(va, access, false);
      this.log(`SMM ${access} ${hex(va)} -> ${typeof got === "bigint" ? hex(got) : JSON.stringify(got)}`);
      if (got !== va) this.fail(`SMM ${access} of ${hex(va)} with paging off gave ${typeof got === "bigint" ? hex(got) : JSON.stringify(got)}, not ${hex(va)}`);
      this.stats.smmAccesses++;
    }
    this.log("RSM");
    this.cpus[v]!.rsm();
  }

  step(): void {
    const r = this.rng;
    const s = this.stats;
    if (r.chance(0.3)) this.v = r.int(this.cpus.length);
    const v = this.v;
    if (this.opts.cr0wp !== undefined && r.chance(0.06)) {
      if (r.chance(0.8)) this.toggleWp(v);
      else this.smmRoundTrip(v);
      return;
    }
    const k = r.int(1000);
    const live = this.liveProcs();
    if (k < 600) {
      this.randomAccess(v);
    } else if (k < 780) {
      const cur = this.cur[v]!.proc;
      if (cur && r.chance(0.85)) { this.enterKernel(v); this.editUser(v, cur); }
      else if (live.length > 0 && r.chance(0.5)) { this.enterKernel(v); this.editUser(v, r.pick(live)); }
      else { this.enterKernel(v); this.editKernel(v); }
    } else if (k < 900) {
      const cur = this.cur[v]!;
      if (cur.proc?.uroot && r.chance(0.4)) this.switchTo(v, cur.user ? cur.proc.kroot : cur.proc.uroot);
      else if (live.length > 0 && r.chance(0.9)) {
        const p = r.pick(live);
        this.switchTo(v, p.uroot && r.chance(0.5) ? p.uroot : p.kroot);
      } else this.switchTo(v, this.init);
    } else if (k < 925) {
      const p = this.cur[v]!.proc;
      this.invlpg(v, r.chance(0.5) && p ? r.pick(USER_PAGES) : r.pick(KV_PAGES));
    } else if (k < 950) {
      if (!this.cpus[v]!.hasInvpcid) return;
      const type = r.pick([0, 0, 1, 1, 2, 3]);
      const pcid = r.pick(this.allPcids());
      this.invpcid(v, type, pcid, r.chance(0.7) ? r.pick(USER_PAGES) : r.pick(KV_PAGES));
    } else if (k < 970) {
      if (live.length < this.procs.length) this.createProc(v);
    } else if (k < 980) {
      if (live.length > 0) this.destroyProc(v, r.pick(live));
    } else if (k < 998) {
      // The kernel writes to a free frame through the direct map (it may have been a page table).
      this.enterKernel(v);
      const f = FRAME_BASE + BigInt(r.int(this.opts.frames ?? 320)) * K4;
      if (this.freeFrames.includes(f)) this.store(v, f + BigInt(r.int(512)) * 8n, r.u64());
    } else {
      const value = this.cr4 ^ CR4.PGE;
      this.log(`MOV CR4 PGE=${(value & CR4.PGE) !== 0n ? 1 : 0}`);
      for (let w = 0; w < this.cpus.length; w++) {
        if (this.cpus[w]!.writeCr4(value)) this.fail("MOV CR4 raised #GP");
        this.tlb[w]!.invalidateAll(this.now++);
      }
      this.cr4 = value;
    }
    s.maxLegal = Math.max(s.maxLegal, ...this.tlb.map((t) => t.count));
  }

  /** Runs `n` steps; throws ArchViolation on the first forbidden result. */
  run(n: number): GuestModelStats {
    for (let i = 0; i < n; i++) {
      try {
        this.step();
      } catch (e) {
        if (e instanceof ArchViolation) throw e;
        this.fail(`the hypervisor threw: ${(e as Error).message}`);
      }
      this.stats.steps++;
    }
    return this.stats;
  }
}
