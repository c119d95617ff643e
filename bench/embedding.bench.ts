// The embedding hot path: what one translation costs an interpreter that calls
// the core per guest access (issue: a Number fast path at most 1.5x the raw
// wasm export), on the TLB-hit path, x86-64 and arm64 — the raw export (BigInt
// in, result record out), translateFast (Numbers only), translatePa, the
// translate() object — and an embedder's own page cache on top (an Int32Array
// keyed by page, valid while invalidationEpoch() holds, as v86 keeps one).
// Counters (hits, walks) are printed so a figure can be explained: every task
// runs on a warm TLB, so each call is one lookup and one hit.
//
// Run: npm run bench -- embedding [--quick]

import { Bench } from "tinybench";
import {
  Arm64Stage1Builder, CR4, LINUX_TCR, LONG_MODE, RIGHTS, SCTLR, TLBI_CODE, X86PageTableBuilder, createMachine,
  type Arm64Vcpu, type X86Vcpu,
} from "../src/index.js";
import { fmt, machineInfo, nsPerOp, parseArgs, printMachineInfo, printTable, Rounds } from "./common.js";

const N = 1024;
const TARGET = 1.5;
const args = parseArgs();
const ROUNDS = args.quick ? 2 : 5;
printMachineInfo("Embedding hot path: single translations from JS", machineInfo(), args);

/** The raw exports, on a vCPU's first MMU context record (its own regime). */
type Raw = { x86Translate(c: number, va: bigint, a: number, u: number): number; armTranslate(c: number, va: bigint, a: number, e: number): number };
const raw = (v: X86Vcpu | Arm64Vcpu) => (v as unknown as { ex: Raw }).ex;

async function x86(): Promise<{ v: X86Vcpu; vas: bigint[]; dispose: () => void }> {
  const m = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20 });
  const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x80_0000n });
  const base = 0x40_0000_0000n;
  for (let i = 0; i < N; i++) pt.map(base + BigInt(i) * 0x1000n, 0x100_0000n + BigInt(i) * 0x1000n, "4K", { user: true, write: true, accessed: true, dirty: true });
  const v = m.vcpu(0);
  v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE, cr3: pt.root });
  const vas = Array.from({ length: N }, (_, i) => base + BigInt(i) * 0x1000n + BigInt((i * 8) & 0xfff));
  for (const va of vas) v.translate(va, "read", true);
  return { v, vas, dispose: () => m.dispose() };
}

async function arm64(): Promise<{ v: Arm64Vcpu; vas: bigint[]; dispose: () => void }> {
  const m = await createMachine({ arch: "arm64", memoryBytes: 64 << 20 });
  const pt = new Arm64Stage1Builder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x80_0000n });
  const base = 0x40_0000_0000n;
  for (let i = 0; i < N; i++) pt.map(base + BigInt(i) * 0x1000n, 0x100_0000n + BigInt(i) * 0x1000n, "4K", { el0: true, nG: true });
  const v = m.vcpu(0);
  v.setSystemRegisters({ tcr: LINUX_TCR, ttbr0: pt.root | (1n << 48n), sctlr: SCTLR.M });
  const vas = Array.from({ length: N }, (_, i) => base + BigInt(i) * 0x1000n + BigInt((i * 8) & 0xfff));
  for (const va of vas) v.translate(va, "read", true);
  return { v, vas, dispose: () => m.dispose() };
}

/** An embedder's page cache: page → pa page, valid under one epoch (v86's tlb_data, plus the epoch check). */
class PageCache {
  readonly tag = new Float64Array(4096).fill(-1);
  readonly pa = new Float64Array(4096);
  epoch = -1;
  constructor(private readonly v: X86Vcpu) {}
  read(lo: number, hi: number): number {
    const page = hi * 1048576 + (lo >>> 12);
    const i = page & 4095;
    const e = this.v.invalidationEpoch();
    if (e !== this.epoch) { this.tag.fill(-1); this.epoch = e; }
    if (this.tag[i] === page) return this.pa[i]! + (lo & 0xfff);
    const pa = this.v.translateFast(lo, hi, 0, 1);
    if (pa >= 0 && (this.v.lastRights() & RIGHTS.CACHED) !== 0 && (this.v.lastRights() & RIGHTS.RU) !== 0) {
      this.tag[i] = page;
      this.pa[i] = pa - (lo & 0xfff);
      this.epoch = this.v.invalidationEpoch();
    }
    return pa;
  }
}

const X = await x86();
const A = await arm64();
/** Offset of a vCPU's first MMU context record in its block (assembly/layout.ts VCPU_MMU), from the layout the vCPU read. */
const VCPU_MMU = (X.v as unknown as { L: { VCPU_MMU: number } }).L.VCPU_MMU;
const xLo = Int32Array.from(X.vas, (va) => Number(va & 0xffff_ffffn)), xHi = Int32Array.from(X.vas, (va) => Number(va >> 32n));
const aLo = Int32Array.from(A.vas, (va) => Number(va & 0xffff_ffffn)), aHi = Int32Array.from(A.vas, (va) => Number(va >> 32n));
const cache = new PageCache(X.v);
let sink = 0;

const tasks: [string, () => void][] = [
  ["x86 raw export x86Translate (BigInt in)", () => { const ex = raw(X.v), c = X.v.base + VCPU_MMU; for (let i = 0; i < N; i++) sink += ex.x86Translate(c, X.vas[i]!, 0, 1); }],
  ["x86 translateFast (Numbers)", () => { const v = X.v; for (let i = 0; i < N; i++) sink += v.translateFast(xLo[i]!, xHi[i]!, 0, 1); }],
  ["x86 translatePa (BigInt in and out)", () => { const v = X.v; for (let i = 0; i < N; i++) sink += v.translatePa(X.vas[i]!, "read", true) === undefined ? 1 : 0; }],
  ["x86 translate() (object out)", () => { const v = X.v; for (let i = 0; i < N; i++) sink += v.translate(X.vas[i]!, "read", true) ? 1 : 0; }],
  ["x86 embedder page cache over translateFast", () => { for (let i = 0; i < N; i++) sink += cache.read(xLo[i]!, xHi[i]!); }],
  ["arm64 raw export armTranslate (BigInt in)", () => { const ex = raw(A.v), c = A.v.base + VCPU_MMU; for (let i = 0; i < N; i++) sink += ex.armTranslate(c, A.vas[i]!, 0, 1); }],
  ["arm64 translateFast (Numbers)", () => { const v = A.v; for (let i = 0; i < N; i++) sink += v.translateFast(aLo[i]!, aHi[i]!, 0, 1); }],
  ["arm64 translate() (object out)", () => { const v = A.v; for (let i = 0; i < N; i++) sink += v.translate(A.vas[i]!, "read", true) ? 1 : 0; }],
];

// arm64 TLB maintenance: VAE1IS by name with a BigInt operand vs tlbiFast with
// Numbers, on machines of 1 and 4 vCPUs (an IS op reaches every vCPU on the
// thread), on a warm TLB; the same page is invalidated and refilled in turn so
// each op drops one entry.
const tlbiMachines = await Promise.all([1, 4].map(async (n) => {
  const m = await createMachine({ arch: "arm64", memoryBytes: 16 << 20, vcpus: n });
  const pt = new Arm64Stage1Builder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
  pt.map(0x40_0000_0000n, 0x100_0000n, "4K", { el0: true, nG: true });
  for (let i = 0; i < n; i++) m.vcpu(i).setSystemRegisters({ tcr: LINUX_TCR, ttbr0: pt.root, ttbr1: 3n << 48n, sctlr: SCTLR.M });
  return { m, v: m.vcpu(0), n };
}));
const tlbiOp = (3n << 48n) | (0x40_0000_0000n >> 12n);
const tlbiLo = Number(tlbiOp & 0xffff_ffffn), tlbiHi = Number(tlbiOp >> 32n);
const TLBI_N = 256;
for (const { v, n } of tlbiMachines) {
  tasks.push([`arm64 tlbi("VAE1IS", bigint), ${n} vCPU${n > 1 ? "s" : ""}`, () => { for (let i = 0; i < TLBI_N; i++) v.tlbi("VAE1IS", tlbiOp); }]);
  tasks.push([`arm64 tlbiFast(TLBI_CODE.VAE1IS, lo, hi), ${n} vCPU${n > 1 ? "s" : ""}`, () => { for (let i = 0; i < TLBI_N; i++) v.tlbiFast(TLBI_CODE.VAE1IS, tlbiLo, tlbiHi); }]);
}
const opsOf = (name: string) => (name.includes("tlbi") ? TLBI_N : N);

const rounds = new Rounds();
for (let r = 0; r < ROUNDS; r++) {
  const bench = new Bench({ time: args.time / ROUNDS, warmupTime: args.warmupTime });
  for (const [name, fn] of tasks) bench.add(name, fn);
  await bench.run();
  for (const [name] of tasks) rounds.record(name, nsPerOp(bench.tasks.find((t) => t.name === name), opsOf(name)));
}

const xs0 = X.v.tlbStats(), as0 = A.v.tlbStats();
for (let i = 0; i < N; i++) { X.v.translateFast(xLo[i]!, xHi[i]!, 0, 1); A.v.translateFast(aLo[i]!, aHi[i]!, 0, 1); }
const xs1 = X.v.tlbStats(), as1 = A.v.tlbStats();
const per = (a: number, b: number) => fmt.per((a - b) / N);

printTable(["task (per translation, TLB hit)", "ns (median)", "M/s", "vs raw export", "spread"], tasks.filter(([n]) => !n.includes("tlbi")).map(([name]) => {
  const rawName = name.startsWith("x86") ? tasks[0]![0] : tasks[5]![0];
  return [name, fmt.ns(rounds.ns(name)), fmt.mops(rounds.ns(name)), fmt.ratio(rounds.ns(name), rounds.ns(rawName)), rounds.spread(name, rawName)];
}));
console.log(`counters per translateFast call: x86 lookups ${per(xs1.lookups, xs0.lookups)}, hits ${per(xs1.hits, xs0.hits)}, walks ${per(xs1.walks, xs0.walks)}; ` +
  `arm64 lookups ${per(as1.lookups, as0.lookups)}, hits ${per(as1.hits, as0.hits)}, walks ${per(as1.walks, as0.walks)}`);
for (const [fast, rawName] of [[tasks[1]![0], tasks[0]![0]], [tasks[6]![0], tasks[5]![0]]] as const) {
  const r = rounds.ratio(fast, rawName);
  console.log(`${fast}: ${fmt.ratio(rounds.ns(fast), rounds.ns(rawName))} of the raw export (target ≤ ${TARGET}×): ${r !== undefined && r <= TARGET ? "PASS" : "MISS"}`);
}
printTable(["TLB maintenance (per op)", "ns (median)", "vs by name"], tasks.filter(([n]) => n.includes("tlbi")).map(([name]) => {
  const byName = name.replace(/tlbiFast\(TLBI_CODE\.VAE1IS, lo, hi\)/, 'tlbi("VAE1IS", bigint)');
  return [name, fmt.ns(rounds.ns(name)), fmt.ratio(rounds.ns(name), rounds.ns(byName))];
}));
const fast1 = rounds.ns(tasks.find(([n]) => n.startsWith("arm64 tlbiFast") && n.endsWith("1 vCPU"))![0]);
console.log(`arm64 tlbiFast with one vCPU: ${fmt.ns(fast1)} ns per op (target < 100 ns): ${fast1 !== undefined && fast1 < 100 ? "PASS" : "MISS"}`);
console.log(`(checksum ${sink % 997}; medians of ${ROUNDS} rounds, ratio = median of per-round ratios)`);
X.dispose();
A.dispose();
for (const { m } of tlbiMachines) m.dispose();
