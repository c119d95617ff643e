// The browser demo's scenario, without the DOM: the page renders it, and the
// browser test replays it in Node to check the numbers the page shows. Page
// tables are x86-64 4-level paging (Intel SDM Vol.3A §4.5, Tables 4-14…4-20);
// the TLB steps follow the invalidations of §4.10.4.1 (INVLPG, MOV CR3).

import { createMachine, X86PageTableBuilder, LONG_MODE, CR4, CR3_NOFLUSH, PTE, isCanonical, hex } from "../src/index.js";
import type { Machine, X86Vcpu, X86Access, X86LeafFlags, X86PageSize, X86TlbEntry, TlbStats, X86TranslateResult } from "../src/index.js";

export const KERNEL = 0xffff_ffff_8100_0000n;
export const DIRECT = 0xffff_8880_0000_0000n;
export const USER_TEXT = 0x40_0000n;
export const USER_STACK = 0x7fff_f000_0000n;
/** The PCID the demo's process runs under (CR4.PCIDE = 1). */
export const PCID = 1n;

export interface Mapping {
  label: string; va: bigint; pa: bigint; count: number; size: X86PageSize; flags: X86LeafFlags;
}

/** What the demo maps: a Linux-like layout (kernel text, direct map, user text and stack). */
export const MAPPINGS: readonly Mapping[] = [
  { label: "kernel text", va: KERNEL, pa: 0x100_0000n, count: 2, size: "2M", flags: { global: true } },
  { label: "direct map", va: DIRECT, pa: 0n, count: 1, size: "1G", flags: { write: true, nx: true, global: true } },
  { label: "user text", va: USER_TEXT, pa: 0x200_0000n, count: 8, size: "4K", flags: { user: true } },
  { label: "user stack", va: USER_STACK, pa: 0x300_0000n, count: 8, size: "4K", flags: { user: true, write: true, nx: true, pkey: 1 } },
];

/** Addresses the walk form offers; the first is walked on load. */
export const WALK_PRESETS: readonly { label: string; va: bigint; access: X86Access; user: boolean }[] = [
  { label: "user stack", va: USER_STACK + 0x2ff8n, access: "write", user: true },
  { label: "kernel text (2 MiB)", va: KERNEL + 0x20_1234n, access: "fetch", user: false },
  { label: "direct map (1 GiB)", va: DIRECT + 0x1234_5678n, access: "read", user: false },
  { label: "user text", va: USER_TEXT + 0x123n, access: "fetch", user: true },
  { label: "unmapped", va: 0x1234_5000n, access: "read", user: true },
  { label: "non-canonical", va: 0x0000_8000_0000_0000n, access: "read", user: false },
];

export interface Demo {
  machine: Machine<X86Vcpu>;
  builder: X86PageTableBuilder;
  vcpu: X86Vcpu;
}

/** Builds the machine (64 MiB, 2 vCPUs), the tables, and loads vCPU 0 and 1 with them (PGE, PCIDE, SMEP, SMAP, PKE). */
export async function createDemo(): Promise<Demo> {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20, vcpus: 2 });
  const builder = new X86PageTableBuilder(machine.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
  for (const m of MAPPINGS) builder.mapRange(m.va, m.pa, m.count, m.size, m.flags);
  const control = { ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE | CR4.SMEP | CR4.SMAP | CR4.PKE, cr3: builder.root | PCID };
  for (let i = 0; i < 2; i++) machine.vcpu(i).setControl(control);
  return { machine, builder, vcpu: machine.vcpu(0) };
}

// ---- one entry, bit by bit -------------------------------------------------

export const LEVEL_NAMES: Record<number, string> = { 4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE" };

/** One field of an entry: bits hi..lo, its value, and whether the walk uses it at this level. */
export interface EntryField { name: string; hi: number; lo: number; value: bigint; meaning: string; used: boolean }

/**
 * The fields of a 4-level paging entry at `level` (1 = PTE … 4 = PML4E) under
 * MAXPHYADDR `maxPhys`, from bit 63 down to bit 0 (SDM Tables 4-15…4-20).
 * `leaf` is true for a PTE and for a PDPTE/PDE with PS = 1.
 */
export function entryFields(raw: bigint, level: number, leaf: boolean, maxPhys: number): EntryField[] {
  const bits = (hi: number, lo: number) => (raw >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n);
  const f = (name: string, hi: number, lo: number, meaning: string, used = true): EntryField => ({ name, hi, lo, value: bits(hi, lo), meaning, used });
  const large = leaf && level > 1;
  const addrLo = large ? (level === 2 ? 21 : 30) : 12;
  const out: EntryField[] = [
    f("XD", 63, 63, "execute-disable (with EFER.NXE)"),
    f("PKEY", 62, 59, "protection key (with CR4.PKE, user pages)", leaf),
    f("ign", 58, 52, "ignored", false),
    f("rsvd", 51, maxPhys, `reserved above MAXPHYADDR ${maxPhys}: must be 0`, false),
    f("addr", maxPhys - 1, addrLo, leaf ? `page frame: pa bits ${maxPhys - 1}:${addrLo}` : `next table: gpa bits ${maxPhys - 1}:12`),
  ];
  if (large) {
    if (addrLo > 13) out.push(f("rsvd", addrLo - 1, 13, "reserved: must be 0", false));
    out.push(f("PAT", 12, 12, "page attribute table index bit 2"));
  }
  out.push(
    f("R", 11, 11, "ignored (HLAT restart)", false),
    f("avl", 10, 9, "ignored (software)", false),
    leaf ? f("G", 8, 8, "global: survives MOV CR3 (with CR4.PGE)") : f("ign", 8, 8, "ignored", false),
    level === 1 ? f("PAT", 7, 7, "page attribute table index bit 2")
      : level === 4 ? f("PS", 7, 7, "reserved in a PML4E: must be 0", false)
        : f("PS", 7, 7, "page size: 1 maps a page, 0 points to a table"),
    leaf ? f("D", 6, 6, "dirty: set on the first write") : f("ign", 6, 6, "ignored", false),
    f("A", 5, 5, "accessed: set by the walk"),
    f("PCD", 4, 4, "page-level cache disable"),
    f("PWT", 3, 3, "page-level write-through"),
    f("US", 2, 2, "user/supervisor: 1 lets CPL 3 access"),
    f("RW", 1, 1, "read/write: 0 refuses writes (with CR0.WP for CPL 0)"),
    f("P", 0, 0, "present"),
  );
  return out;
}

export interface WalkLevel {
  level: number; name: string; index: number; gpa: bigint; raw: bigint; leaf: boolean; fields: EntryField[];
}

export interface WalkView {
  va: bigint;
  levels: WalkLevel[];
  /** The translation the entries give (present and PS bits only, as QEMU's gva2gpa), or why there is none. */
  pa?: bigint; pageSize?: number; stop?: string;
}

/**
 * Reads the walk for `va` from guest memory as the hardware would, level by
 * level from CR3 (present and page-size bits only: rights are the vCPU's walk).
 */
export function readWalk(demo: Demo, va: bigint): WalkView {
  const { machine, vcpu } = demo;
  const c = vcpu.control();
  if (!isCanonical(va, (c.cr4 & CR4.LA57) !== 0n)) return { va, levels: [], stop: "non-canonical: #GP(0), no walk" };
  const maxPhys = vcpu.maxPhysAddrBits;
  const addrMask = ((1n << BigInt(maxPhys)) - 1n) & ~0xfffn;
  let table = c.cr3 & addrMask;
  const levels: WalkLevel[] = [];
  for (let level = 4; level >= 1; level--) {
    const index = Number((va >> BigInt(12 + 9 * (level - 1))) & 511n);
    const gpa = table + BigInt(index) * 8n;
    const raw = machine.memory.read64(gpa);
    const present = (raw & PTE.P) !== 0n;
    const leaf = present && (level === 1 || ((level === 2 || level === 3) && (raw & PTE.PS) !== 0n));
    levels.push({ level, name: LEVEL_NAMES[level]!, index, gpa, raw, leaf, fields: entryFields(raw, level, leaf, maxPhys) });
    if (!present) return { va, levels, stop: `not present at level ${level} (${LEVEL_NAMES[level]}): #PF` };
    if (leaf) {
      const pageSize = 2 ** (12 + 9 * (level - 1));
      const off = BigInt(pageSize) - 1n;
      return { va, levels, pa: (raw & addrMask & ~off) | (va & off), pageSize };
    }
    table = raw & addrMask;
  }
  return { va, levels, stop: "unreachable" };
}

// ---- the TLB and invalidations ---------------------------------------------

export interface Access { label: string; va: bigint; access: X86Access; user: boolean }

/**
 * The accesses that fill the TLB, in order. The last two: a hit, and a write
 * to read-only text that faults; a #PF also invalidates the TLB entries for
 * the faulting page in the current PCID (SDM §4.10.4.1), so that page leaves the TLB.
 */
export const TLB_WORKLOAD: readonly Access[] = [
  { label: "kernel text fetch", va: KERNEL + 0x1234n, access: "fetch", user: false },
  { label: "kernel text, second 2 MiB page", va: KERNEL + 0x20_5000n, access: "read", user: false },
  { label: "direct map write", va: DIRECT + 0x1234_5678n, access: "write", user: false },
  { label: "user text fetch", va: USER_TEXT + 0x123n, access: "fetch", user: true },
  { label: "user text read", va: USER_TEXT + 0x1000n, access: "read", user: true },
  { label: "user text read", va: USER_TEXT + 0x2000n, access: "read", user: true },
  { label: "user stack write", va: USER_STACK + 0xff8n, access: "write", user: true },
  { label: "user stack write", va: USER_STACK + 0x1ff8n, access: "write", user: true },
  { label: "user text fetch again (TLB hit)", va: USER_TEXT + 0x123n, access: "fetch", user: true },
  { label: "user writes its read-only text: #PF, which also drops that page's entry", va: USER_TEXT + 0x123n, access: "write", user: true },
];

export interface Snapshot { entries: X86TlbEntry[]; stats: TlbStats }

export interface Step {
  title: string;
  detail: string;
  before: Snapshot;
  after: Snapshot;
  /** A translation made after the step, showing its effect. */
  probe?: { va: bigint; result: X86TranslateResult };
}

export interface TlbStory {
  accesses: { access: Access; result: X86TranslateResult }[];
  filled: Snapshot;
  steps: Step[];
}

const snap = (v: X86Vcpu): Snapshot => ({ entries: v.tlbEntries(), stats: v.tlbStats() });

/**
 * Runs the TLB workload on vCPU 0, then three steps: a PTE edit with no
 * invalidation (the stale entry still serves), INVLPG (the page's entry goes,
 * the next access walks and sees the edit), MOV CR3 without NOFLUSH (the
 * PCID's entries go, global ones stay).
 */
export function runTlbStory(demo: Demo): TlbStory {
  const { vcpu: v, machine, builder } = demo;
  v.resetStats();
  const accesses = TLB_WORKLOAD.map((a) => ({ access: a, result: v.translate(a.va, a.access, a.user) }));
  const filled = snap(v);
  const steps: Step[] = [];
  const page = USER_TEXT + 0x1000n;
  const leaf = builder.leafGpa(page)!;
  const moved = 0x500_0000n;

  let before = snap(v);
  machine.memory.write64(leaf, X86PageTableBuilder.leaf(moved, "4K", { user: true }));
  steps.push({
    title: "Edit a PTE, no invalidation",
    detail: `PTE at ${hex(leaf)} now maps ${hex(page)} to ${hex(moved)}; the TLB still holds the old translation and serves it`,
    before, after: snap(v), probe: { va: page + 0x123n, result: v.translate(page + 0x123n, "read", true) },
  });

  before = snap(v);
  v.invlpg(page);
  const afterInvlpg = snap(v);
  steps.push({
    title: `INVLPG ${hex(page)}`,
    detail: "drops the current PCID's and global entries for that page; the next access walks and sees the new PTE",
    before, after: afterInvlpg, probe: { va: page + 0x123n, result: v.translate(page + 0x123n, "read", true) },
  });

  before = snap(v);
  v.writeCr3(builder.root | PCID);
  steps.push({
    title: `MOV CR3 ← ${hex(builder.root | PCID)} (PCID ${PCID}, bit 63 clear)`,
    detail: `flushes PCID ${PCID}'s non-global entries; global entries (G with CR4.PGE) survive`,
    before, after: snap(v),
  });
  // Back to the NOFLUSH form the page uses afterwards.
  v.writeCr3(builder.root | PCID | CR3_NOFLUSH);
  return { accesses, filled, steps };
}

// ---- the worker and the seed reproduction ----------------------------------

/** Addresses the worker translates on vCPU 1 (user reads: every one maps). */
export const WORKER_VAS: readonly bigint[] = [
  USER_TEXT + 0x3000n, USER_TEXT + 0x7abcn, USER_STACK + 0x5ff0n, USER_STACK + 0x6008n,
];

/** The seed reproduction the page runs: the KPTI kernel compile at a small size. */
export const KPTI_RUN = {
  vcpus: 1, policies: ["baseline", "shahid2018", "lai2021", "alon2018"], jobs: 8, accessesPerProcess: 50_000, seed: 1,
  memoryBytes: 64 << 20,
} as const;
