// The x86-64 workloads the translation benchmarks measure, built with real
// SDM page tables in guest RAM (X86PageTableBuilder), and the snapshot that
// hands the very same bytes (tables, TLB array, control state, addresses) to
// the plain-TS and native-C baselines.
//
//   hit    4-level, 2048 4 KiB pages in one aligned 8 MiB range: with the
//          default 4096-entry direct-mapped TLB every page has its own slot,
//          so after one warm-up pass every translation is a hit.
//   walk4  4-level, TLB off, 16384 distinct 4 KiB pages spread over 2 PML4
//   walk5  5-level   entries × 4 PDPTEs × 32 PDEs × 64 PTEs (256 page tables),
//          visited in a shuffled order: every translation is a full walk.
//
// Leaves are mapped user, writable, executable, with A and D set, and the
// warm-up pass sets A in every non-leaf entry (compare-exchange), so the
// measured passes are the steady state: no A/D writes.

import * as vmmu from "../src/index.js";
import type { Machine, X86PageTableBuilder, X86Vcpu } from "../src/index.js";
import type { MmuSnapshot } from "./ts-baseline.js";
import { Prng } from "./common.js";

/**
 * The part of the public API the scenarios are built with: this tree's by
 * default, or a previous build's (bench/before-after.bench.ts runs the same
 * scenarios on both cores).
 */
export type X86Lib = Pick<typeof vmmu, "createMachine" | "X86PageTableBuilder" | "LONG_MODE" | "CR4">;

export const BATCH = 16384;
const TABLE_BASE = 0x10_0000n;
const TABLE_LIMIT = 0x100_0000n;
const RAM = 64n << 20n;

export interface X86Scenario {
  name: "hit" | "walk4" | "walk5";
  label: string;
  machine: Machine<X86Vcpu>;
  vcpu: X86Vcpu;
  builder: X86PageTableBuilder;
  /** The address list: BATCH addresses and their access kinds (0 read, 1 write, 2 fetch). */
  va: BigUint64Array;
  access: Uint8Array;
  user: boolean;
  tlbOn: boolean;
}

const KINDS = ["read", "write", "fetch"] as const;
export const kindOf = (code: number) => KINDS[code] ?? "read";

async function machineWith(levels: 4 | 5, lib: X86Lib): Promise<{ machine: Machine<X86Vcpu>; builder: X86PageTableBuilder }> {
  const machine = await lib.createMachine({ arch: "x86_64", memoryBytes: RAM });
  const builder = new lib.X86PageTableBuilder(machine.memory, { levels, tableBase: TABLE_BASE, tableLimit: TABLE_LIMIT });
  return { machine, builder };
}

const LEAF = { user: true, write: true, accessed: true, dirty: true } as const;

/** TLB-hit workload: random addresses (random offsets, mixed access kinds) over 2048 pages. */
export async function hitScenario(seed = 1, lib: X86Lib = vmmu): Promise<X86Scenario> {
  const { machine, builder } = await machineWith(4, lib);
  const pages = 2048;
  const vbase = 0x4000_0000n; // vpn 0x40000: 4096-aligned, so the pages take distinct TLB slots
  for (let i = 0; i < pages; i++) builder.map(vbase + BigInt(i) * 4096n, 0x100_0000n + BigInt((i * 7) % 8192) * 4096n, "4K", LEAF);
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...lib.LONG_MODE, cr3: builder.root });
  const rng = new Prng(seed);
  const va = new BigUint64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    va[i] = vbase + BigInt(rng.int(pages)) * 4096n + BigInt(rng.int(4096));
    access[i] = rng.int(3);
  }
  return { name: "hit", label: "TLB hit", machine, vcpu, builder, va, access, user: true, tlbOn: true };
}

/** Walk workload: TLB off, 16384 distinct pages in shuffled order, one address each. */
export async function walkScenario(levels: 4 | 5, seed = 2, lib: X86Lib = vmmu): Promise<X86Scenario> {
  const { machine, builder } = await machineWith(levels, lib);
  const vas: bigint[] = [];
  for (let i = 0; i < BATCH; i++) {
    const l4 = 1 + (i & 1), l3 = (i >> 1) & 3, l2 = (i >> 3) & 31, l1 = (i >> 8) & 63;
    const l5 = levels === 5 ? 1n << 48n : 0n;
    const v = l5 | (BigInt(l4) << 39n) | (BigInt(l3) << 30n) | (BigInt(l2) << 21n) | (BigInt(l1) << 12n);
    builder.map(v, BigInt(i % 16384) * 4096n, "4K", LEAF);
    vas.push(v);
  }
  const rng = new Prng(seed);
  rng.shuffle(vas);
  const va = new BigUint64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    va[i] = vas[i]! + BigInt(rng.int(4096));
    access[i] = rng.int(3);
  }
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...lib.LONG_MODE, cr4: lib.LONG_MODE.cr4 | (levels === 5 ? lib.CR4.LA57 : 0n), cr3: builder.root });
  vcpu.setTlbEnabled(false);
  return {
    name: levels === 5 ? "walk5" : "walk4", label: `${levels}-level walk`, machine, vcpu, builder, va, access, user: true, tlbOn: false,
  };
}

/** Loads the scenario's addresses into the vCPU's batch area. */
export function loadBatch(s: X86Scenario): void {
  const b = s.vcpu.batch();
  b.va.set(s.va);
  b.access.set(s.access);
}

/**
 * The bytes and state the baselines need: the guest RAM range the tables live
 * in, the TLB array, the control registers and the live context tags, read
 * from the machine's shared memory as the wasm core left them.
 */
export function snapshot(s: X86Scenario): MmuSnapshot {
  const L = s.machine.layout;
  const mem = s.machine.memory;
  const dv = new DataView(mem.wasmMemory.buffer);
  const base = s.vcpu.base;
  const epoch = dv.getUint32(base + L.T_EPOCH, true);
  const ctxField = (slot: number, field: number) => {
    const c = base + L.VCPU_CTX + slot * L.CTX_STRIDE;
    return dv.getUint32(c + L.CTX_EPOCH, true) === epoch ? dv.getUint32(c + field, true) : 0;
  };
  const entries = dv.getUint32(L.MACHINE_BASE + L.M_TLB_ENTRIES, true);
  // The TLB slots the guest-paging record (ctx 0) last used for its PCID and its global entries.
  const rec = (field: number) => dv.getUint32(base + L.VCPU_MMU + L.MMU_ROOT * L.MMU_STRIDE + field, true);
  const curCtx = rec(L.MC_SLOT), globCtx = rec(L.MC_GSLOT);
  const tlb = new Uint8Array(entries * L.TLB_ENTRY);
  tlb.set(new Uint8Array(mem.wasmMemory.buffer, base + L.VCPU_TLB, entries * L.TLB_ENTRY));
  return {
    control: s.vcpu.control(),
    maxPhysAddrBits: s.vcpu.maxPhysAddrBits,
    tlbOn: dv.getUint32(base + L.S_TLB_ON, true) !== 0,
    curCtx,
    curTag: ctxField(curCtx, L.CTX_TAG),
    globTag: globCtx < L.CTX_SLOTS ? ctxField(globCtx, L.CTX_TAG) : 0,
    globLive: globCtx < L.CTX_SLOTS && ctxField(globCtx, L.CTX_LIVE) !== 0,
    imageBase: TABLE_BASE,
    image: mem.read(TABLE_BASE, Number(TABLE_LIMIT - TABLE_BASE)),
    tlb,
    tlbEntries: entries,
  };
}
