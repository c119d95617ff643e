// The arm64 workloads the translation benchmarks measure, built with real
// VMSAv8-64 tables (4 KiB granule) in guest RAM (Arm64Stage1Builder,
// Arm64Stage2Builder), and the snapshot that hands the very same bytes
// (tables, TLB array, registers, context tags, addresses) to the plain-TS and
// native-C baselines. Arm ARM DDI 0487 D8; KVM's stage-2 geometry (kvmVtcr).
//
//   hit        stage 1 only, TCR = LINUX_TCR (48-bit VA, 4 levels), 2048 EL0
//              pages (nG, ASID 5) in one aligned 8 MiB range: with the
//              default 4096-entry direct-mapped TLB every page has its own
//              slot, so after one warm-up pass every translation is a hit.
//   s1walk     stage 1 only, TLB off (setTlbEnabled(false)), 16384 distinct
//              4 KiB pages spread over 2 L0 × 4 L1 × 32 L2 × 64 L3 entries
//              (256 level-3 tables), visited in a shuffled order: every
//              translation is a full 4-level walk.
//   s12walk40  the same stage-1 tables, now addressed by IPA, under stage 2
//   s12walk48  (HCR_EL2.VM): kvmVtcr(40) — 3 stage-2 levels from 2
//              concatenated start tables — or kvmVtcr(48) — 4 levels. TLB off,
//              so each of the 4 stage-1 descriptor reads and the final IPA
//              take a full stage-2 walk: 4 + 5·3 = 19 or 4 + 5·4 = 24
//              descriptor reads per translation.
//
// A measured batch call translates `chunk` addresses: the whole list for the
// hit case (16384 hits, ~40 µs), the next 2048-address slice of it for the
// walks (0.1–0.4 ms instead of 0.7–3 ms); a measured single-call loop covers
// the next 2048 addresses (SINGLE_CHUNK). On this shared, oversubscribed
// machine most samples then fit in one scheduler time slice, and the median
// stays a measure of the code, not of preemption.
//
// Every leaf is EL0 read/write/execute with AF set (stage 1 and stage 2) and
// no DBM, so the measured passes are the steady state: no hardware updates.
// Guest RAM starts at 0x4000_0000 (as on QEMU virt); under stage 2 IPA x maps
// to PA 0x4000_0000 + x with 4 KiB stage-2 pages.

import * as vmmu from "../src/index.js";
import type { Arm64Access, Arm64Stage1Builder, Arm64Vcpu, Machine } from "../src/index.js";
import type { Arm64Snapshot } from "./ts-baseline-arm64.js";
import { Prng } from "./common.js";

/**
 * The part of the public API the scenarios are built with: this tree's by
 * default, or a previous build's (bench/before-after.bench.ts runs the same
 * scenarios on both cores).
 */
export type Arm64Lib = Pick<typeof vmmu,
  "createMachine" | "Arm64Stage1Builder" | "Arm64Stage2Builder" | "LINUX_TCR" | "SCTLR" | "HCR" | "kvmVtcr">;

export const BATCH = 16384;
/** Translations per measured call of the walk cases (a slice of the address list). */
export const WALK_CHUNK = 2048;
/** Translations per measured single-call loop, every case. */
export const SINGLE_CHUNK = 2048;
export const RAM_BASE = 0x4000_0000n;
const RAM = 96n << 20n;
const S2_TABLES = RAM_BASE + 0x10_0000n;
const S1_TABLES = RAM_BASE + 0x20_0000n;
const S1_LIMIT = RAM_BASE + 0x40_0000n;
/** An empty TTBR1 (kernel) root table: LINUX_TCR has A1, so the ASID in force is TTBR1's. */
const S1_KERNEL_ROOT = S1_LIMIT - 0x1000n;
/** IPA (and RAM offset) of the data pages the leaves point at: [16 MiB, 80 MiB). */
const DATA = 0x100_0000n;
export const ASID = 5;
export const VMID = 1;

export type Arm64ScenarioName = "hit" | "s1walk" | "s12walk40" | "s12walk48";

export interface Arm64Scenario {
  name: Arm64ScenarioName;
  label: string;
  machine: Machine<Arm64Vcpu>;
  vcpu: Arm64Vcpu;
  /** The address list: BATCH addresses and their access kinds (0 read, 1 write, 2 fetch), all at EL0. */
  va: BigUint64Array;
  access: Uint8Array;
  el0: boolean;
  tlbOn: boolean;
  /** Descriptor reads a walk takes (0 for the hit case). */
  expectedPtRefs: number;
  /** Translations per measured call: BATCH, or a WALK_CHUNK slice of the list (the next one each call). */
  chunk: number;
}

const KINDS: readonly Arm64Access[] = ["read", "write", "fetch"];
export const kindOf = (code: number): Arm64Access => KINDS[code] ?? "read";

const LEAF = { el0: true, nG: true } as const;

async function newMachine(lib: Arm64Lib): Promise<Machine<Arm64Vcpu>> {
  return lib.createMachine({ arch: "arm64", memoryBytes: RAM, ramBase: RAM_BASE });
}

/** TTBR0 (user tables) and TTBR1 (the empty kernel root), both with ASID 5, tables at IPA = PA − `offset`. */
function ttbrs(s1: Arm64Stage1Builder, offset: bigint): { ttbr0: bigint; ttbr1: bigint } {
  return { ttbr0: s1.ttbr(ASID), ttbr1: (BigInt(ASID) << 48n) | (S1_KERNEL_ROOT - offset) };
}

/** TLB-hit workload: random addresses (random offsets, mixed access kinds) over 2048 pages. */
export async function hitScenario(seed = 1, lib: Arm64Lib = vmmu): Promise<Arm64Scenario> {
  const machine = await newMachine(lib);
  const s1 = new lib.Arm64Stage1Builder(machine.memory, { tableBase: S1_TABLES, tableLimit: S1_KERNEL_ROOT });
  const pages = 2048;
  const vbase = 0x4000_0000n; // vpn 0x40000: 4096-aligned, so the pages take distinct TLB slots
  for (let i = 0; i < pages; i++) s1.map(vbase + BigInt(i) * 4096n, RAM_BASE + DATA + BigInt((i * 7) % 8192) * 4096n, "4K", LEAF);
  const vcpu = machine.vcpu(0);
  vcpu.setSystemRegisters({ tcr: lib.LINUX_TCR, sctlr: lib.SCTLR.M, ...ttbrs(s1, 0n), vttbr: BigInt(VMID) << 48n });
  const rng = new Prng(seed);
  const va = new BigUint64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    va[i] = vbase + BigInt(rng.int(pages)) * 4096n + BigInt(rng.int(4096));
    access[i] = rng.int(3);
  }
  checkContext(vcpu);
  return { name: "hit", label: "TLB hit", machine, vcpu, va, access, el0: true, tlbOn: true, expectedPtRefs: 0, chunk: BATCH };
}

/** The 16384 walk addresses (one per distinct page) in shuffled order, and their access kinds. */
function walkAddresses(seed: number): { pages: bigint[]; va: BigUint64Array; access: Uint8Array } {
  const pages: bigint[] = [];
  for (let i = 0; i < BATCH; i++) {
    const l0 = 1 + (i & 1), l1 = (i >> 1) & 3, l2 = (i >> 3) & 31, l3 = (i >> 8) & 63;
    pages.push((BigInt(l0) << 39n) | (BigInt(l1) << 30n) | (BigInt(l2) << 21n) | (BigInt(l3) << 12n));
  }
  const rng = new Prng(seed);
  const order = rng.shuffle(pages.map((_, i) => i));
  const va = new BigUint64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let k = 0; k < BATCH; k++) {
    va[k] = pages[order[k]!]! + BigInt(rng.int(4096));
    access[k] = rng.int(3);
  }
  return { pages, va, access };
}

/**
 * Walk workload: TLB off, 16384 distinct pages. `ipaBits` 0: stage 1 only
 * (tables and leaves addressed by PA); 40 or 48: under stage 2 with KVM's
 * layout for that IPA size (tables and leaves addressed by IPA).
 */
export async function walkScenario(ipaBits: 0 | 40 | 48, seed = 2, lib: Arm64Lib = vmmu): Promise<Arm64Scenario> {
  const machine = await newMachine(lib);
  const nested = ipaBits !== 0;
  const offset = nested ? RAM_BASE : 0n;
  const s1 = new lib.Arm64Stage1Builder(machine.memory, { tableBase: S1_TABLES, tableLimit: S1_KERNEL_ROOT, tableOffset: offset });
  const { pages, va, access } = walkAddresses(seed);
  const out = (i: number) => (nested ? 0n : RAM_BASE) + DATA + BigInt(i) * 4096n;
  pages.forEach((p, i) => s1.map(p, out(i), "4K", LEAF));
  const vcpu = machine.vcpu(0);
  const regs = { tcr: lib.LINUX_TCR, sctlr: lib.SCTLR.M, ...ttbrs(s1, offset), vttbr: BigInt(VMID) << 48n };
  let label = "stage-1 walk (4 levels)";
  let expectedPtRefs = 4;
  if (nested) {
    const k = lib.kvmVtcr(ipaBits);
    const s2 = new lib.Arm64Stage2Builder(machine.memory, { ipaBits, startLevel: k.startLevel, tableBase: S2_TABLES, tableLimit: S1_TABLES });
    const tableIpa = S1_TABLES - RAM_BASE;
    s2.mapRange(tableIpa, S1_TABLES, Number((S1_LIMIT - S1_TABLES) >> 12n), "4K");
    s2.mapRange(DATA, RAM_BASE + DATA, BATCH, "4K");
    const s2Levels = 4 - k.startLevel;
    expectedPtRefs = 4 + 5 * s2Levels;
    label = `S1+S2 walk, IPA ${ipaBits} (4 × ${s2Levels} levels)`;
    vcpu.setSystemRegisters({ ...regs, hcr: lib.HCR.VM, vtcr: k.vtcr, vttbr: s2.vttbr(VMID) });
  } else {
    vcpu.setSystemRegisters(regs);
  }
  vcpu.setTlbEnabled(false);
  checkContext(vcpu);
  const name: Arm64ScenarioName = ipaBits === 0 ? "s1walk" : ipaBits === 40 ? "s12walk40" : "s12walk48";
  return { name, label, machine, vcpu, va, access, el0: true, tlbOn: false, expectedPtRefs, chunk: WALK_CHUNK };
}

/** Throws unless the vCPU runs with ASID 5 in VMID 1 (the contexts the snapshot reads). */
function checkContext(vcpu: Arm64Vcpu): void {
  if (vcpu.asid() !== ASID || vcpu.vmid() !== VMID) throw new Error(`bench: ASID ${vcpu.asid()}, VMID ${vcpu.vmid()} in force`);
}

/** Loads the scenario's addresses into the vCPU's batch area. */
export function loadBatch(s: Arm64Scenario): void {
  const b = s.vcpu.batch();
  b.va.set(s.va);
  b.access.set(s.access);
}

/** The vCPU's TLB context slots, kept private by Arm64Vcpu (read here for the snapshot only). */

/**
 * The bytes and state the baselines need: the guest RAM range the tables
 * live in ([RAM + 1 MiB, RAM + 4 MiB): both stages' tables), the TLB array,
 * the registers and the live context tags, as the wasm core left them.
 */
export function snapshot(s: Arm64Scenario): Arm64Snapshot {
  const L = s.machine.layout;
  const mem = s.machine.memory;
  const dv = new DataView(mem.wasmMemory.buffer);
  const base = s.vcpu.base;
  const epoch = dv.getUint32(base + L.T_EPOCH, true);
  const ctxField = (slot: number | undefined, field: number) => {
    if (slot === undefined) return 0;
    const c = base + L.VCPU_CTX + slot * L.CTX_STRIDE;
    return dv.getUint32(c + L.CTX_EPOCH, true) === epoch ? dv.getUint32(c + field, true) : 0;
  };
  // The TLB slots the MMU context records (stage 1: ctx 0, stage 2: ctx 1) last used.
  const rec = (i: number, field: number) => dv.getUint32(base + L.VCPU_MMU + i * L.MMU_STRIDE + field, true);
  const slotOrNone = (v: number) => (v < L.CTX_SLOTS ? v : undefined);
  const cur = slotOrNone(rec(L.MMU_ROOT, L.MC_SLOT)), glob = slotOrNone(rec(L.MMU_ROOT, L.MC_GSLOT)), s2 = slotOrNone(rec(L.MMU_STAGE2, L.MC_SLOT));
  const entries = dv.getUint32(L.MACHINE_BASE + L.M_TLB_ENTRIES, true);
  const tlb = new Uint8Array(entries * L.TLB_ENTRY);
  tlb.set(new Uint8Array(mem.wasmMemory.buffer, base + L.VCPU_TLB, entries * L.TLB_ENTRY));
  const r = s.vcpu.systemRegisters();
  return {
    regs: { ttbr0: r.ttbr0, ttbr1: r.ttbr1, tcr: r.tcr, sctlr: r.sctlr, vttbr: r.vttbr, vtcr: r.vtcr, hcr: r.hcr, pan: r.pan === true },
    tlbOn: dv.getUint32(base + L.S_TLB_ON, true) !== 0,
    curTag: ctxField(cur, L.CTX_TAG),
    globTag: ctxField(glob, L.CTX_TAG),
    globLive: ctxField(glob, L.CTX_LIVE) !== 0,
    s2Tag: ctxField(s2, L.CTX_TAG),
    imageBase: S2_TABLES,
    image: mem.read(S2_TABLES, Number(S1_LIMIT - S2_TABLES)),
    tlb,
    tlbEntries: entries,
  };
}
