// arm64 translation cost: the TLB-hit run (armBatchHits), a stage-1-only
// 4-level walk and the combined stage-1 + stage-2 walk (40-bit IPA: 3
// stage-2 levels; 48-bit: 4), batch API and single calls, wasm core vs
// native C vs plain TS over the same tables, TLB bytes and address lists (see
// arm64-scenarios.ts, ts-baseline-arm64.ts, native/arm64.c). Arm ARM DDI 0487
// D8 (AArch64.S1Translate, AArch64.S2Translate).
//
// A measured batch call translates the whole 16384-address list (hits) or the
// next 2048-address slice of it (walks), a measured single-call loop the next
// 2048 addresses (see arm64-scenarios.ts): the same slices, copied into the
// batch area the same way, for wasm, TS and C.
//
// Targets checked (printed PASS/MISS, never failing the run):
//   - TLB hits through the batch API: >= 250 M translations/s;
//   - wasm within 1.3x of native C on the hit batch and on every walk batch.
//
// Run: npm run bench -- arm64 [--quick] (bundled by scripts/bench.mjs).

import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Bench } from "tinybench";
import type { Arm64Access } from "../src/index.js";
import {
  addCounted, fmt, machineInfo, mix, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT, Rounds, samples, verdict,
} from "./common.js";
import { compileNative, runNativeArm64, type NativeResult } from "./native.js";
import { TsArm64Mmu, COUNTER, type Arm64Snapshot } from "./ts-baseline-arm64.js";
import { BATCH, SINGLE_CHUNK, hitScenario, kindOf, loadBatch, snapshot, walkScenario, type Arm64Scenario } from "./arm64-scenarios.js";

const HIT_TARGET_MOPS = 250;
const RATIO_TARGET = 1.3;

type PerOp = { hits: number; misses: number; walks: number; ptRefs: number; adWrites: number };

interface Prepared {
  s: Arm64Scenario;
  ts: TsArm64Mmu;
  snap: Arm64Snapshot;
  /** Native results of every round. */
  native: { batch: NativeResult; single: NativeResult }[];
  checksum: { wasmBatch: number; tsBatch: number; wasmSingle: number; tsSingle: number };
}

/** The raw export, on the vCPU's stage-1 context record `c`. */
type CoreTranslate = { armTranslate(c: number, va: bigint, access: number, el0: number): number };
const ctx0 = (s: { vcpu: { base: number }; machine: { layout: { VCPU_MMU: number } } }) => s.vcpu.base + s.machine.layout.VCPU_MMU;

const args = parseArgs();
const ROUNDS = args.quick ? 2 : 5;
const info = machineInfo();
const loadAvg = () => os.loadavg().map((v) => v.toFixed(1)).join(" / ");
printMachineInfo("arm64 translation: wasm core vs native C vs plain TS", info, args);
console.log(`Load average (1 / 5 / 15 min) at start: ${loadAvg()}`);
console.log(`${ROUNDS} rounds; in each, per case: native C, then the tinybench tasks (${Math.round(args.time / ROUNDS)} ms each).`);
console.log("Figures are medians over the rounds of each round's median; ratios are medians of the per-round ratios.\n");

const compiled = compileNative("arm64");
if ("skipped" in compiled) console.log(`Native C rows skipped: ${compiled.skipped}\n`);

function wasmBatchChecksum(s: Arm64Scenario): number {
  const b = s.vcpu.batch();
  const pa = new Uint32Array(b.pa.buffer, b.pa.byteOffset, BATCH * 2);
  let h = 0;
  for (let i = 0; i < BATCH; i++) h = mix(mix(mix(h, pa[2 * i]!), pa[2 * i + 1]!), b.status[i]!);
  return h;
}

const STATUS_ARM_FAULT = 4;

function wasmSingleChecksum(s: Arm64Scenario): number {
  let h = 0;
  for (let i = 0; i < BATCH; i++) {
    const r = s.vcpu.translate(s.va[i]!, kindOf(s.access[i]!), s.el0);
    if ("fault" in r) { h = mix(mix(mix(h, 0), 0), (STATUS_ARM_FAULT << 16) | (r.fault.level << 8)); continue; }
    h = mix(mix(mix(h, Number(r.pa & 0xffff_ffffn)), Number(r.pa >> 32n)), (r.level << 8) | Math.log2(r.pageSize));
  }
  return h;
}

function tsChecksums(ts: TsArm64Mmu, s: Arm64Scenario): { batch: number; single: number } {
  const el0 = s.el0 ? 1 : 0;
  ts.translateBatch(BATCH, el0);
  let batch = 0;
  for (let i = 0; i < BATCH; i++) batch = mix(mix(mix(batch, ts.pa[2 * i]!), ts.pa[2 * i + 1]!), ts.status[i]!);
  let single = 0;
  for (let i = 0; i < BATCH; i++) {
    const st = ts.translate(ts.va[2 * i]!, ts.va[2 * i + 1]!, ts.access[i]!, el0);
    single = mix(mix(mix(single, ts.result[0]!), ts.result[1]!), (st << 16) | (ts.result[5]! << 8) | ts.result[6]!);
  }
  return { batch, single };
}

/**
 * Runs the batch and the single-call export for `ms`: long enough for V8 to
 * tier the hot wasm functions up from Liftoff to TurboFan (in a background
 * thread, which on a loaded 2-core machine can lag the first samples).
 */
function tierUp(s: Arm64Scenario, ms: number): void {
  const bt = s.vcpu.batch();
  const core = (s.vcpu as unknown as { ex: CoreTranslate }).ex;
  const c0 = ctx0(s);
  const e = s.el0 ? 1 : 0;
  for (const until = performance.now() + ms; performance.now() < until;) {
    bt.run(BATCH, s.el0);
    for (let i = 0; i < 1024; i++) core.armTranslate(c0, s.va[i]!, s.access[i]!, e);
  }
}

/** Warm-up (fills the TLB, tiers the code up), checks the steady state, snapshots for the baselines. */
function prepare(s: Arm64Scenario): Prepared {
  loadBatch(s);
  const bt = s.vcpu.batch();
  bt.run(BATCH, s.el0);
  tierUp(s, args.quick ? 300 : 1000);
  s.vcpu.resetStats();
  const faults = bt.run(BATCH, s.el0);
  const st = s.vcpu.tlbStats();
  if (faults !== 0) throw new Error(`bench: ${s.name}: ${faults} faults in the steady state`);
  if (s.tlbOn && (st.hits !== BATCH || st.misses !== 0)) throw new Error(`bench: ${s.name}: expected ${BATCH} hits, got ${st.hits} hits / ${st.misses} misses`);
  if (!s.tlbOn && (st.ptRefs !== BATCH * s.expectedPtRefs || st.adWrites !== 0)) {
    throw new Error(`bench: ${s.name}: expected ${s.expectedPtRefs} descriptor reads per walk and no updates, got ${st.ptRefs / BATCH} / ${st.adWrites}`);
  }
  const wasmBatch = wasmBatchChecksum(s);
  const wasmSingle = wasmSingleChecksum(s);
  const snap = snapshot(s);
  const ts = new TsArm64Mmu(snap);
  ts.va.set(new Uint32Array(s.va.buffer, s.va.byteOffset, BATCH * 2));
  ts.access.set(s.access);
  const tsSums = tsChecksums(ts, s);
  return { s, ts, snap, native: [], checksum: { wasmBatch, tsBatch: tsSums.batch, wasmSingle, tsSingle: tsSums.single } };
}

const scenarios = [await hitScenario(), await walkScenario(0), await walkScenario(40), await walkScenario(48)];
const prepared = scenarios.map(prepare);

// ---- rounds: native C, then tinybench over wasm and TS -----------------------

const perOp = new Map<string, PerOp>();
const rounds = new Rounds();
const samplesOf = new Map<string, number>();
let sink = 0;

function wasmCounters(s: Arm64Scenario): PerOp {
  const t = s.vcpu.tlbStats();
  return { hits: t.hits, misses: t.misses, walks: t.walks, ptRefs: t.ptRefs, adWrites: t.adWrites };
}
function tsCounters(ts: TsArm64Mmu): PerOp {
  const c = ts.counters;
  return { hits: c[COUNTER.hits]!, misses: c[COUNTER.misses]!, walks: c[COUNTER.walks]!, ptRefs: c[COUNTER.ptRefs]!, adWrites: c[COUNTER.adWrites]! };
}

/**
 * The tasks of one scenario; a batch call translates `s.chunk` addresses
 * (the whole list, or the next slice of it, copied into the batch area first
 * as the C kernel does too), a single-call loop the next SINGLE_CHUNK.
 */
function tasksFor(bench: Bench, p: Prepared): void {
  const { s, ts } = p;
  const bt = s.vcpu.batch();
  const el0 = s.el0, e = el0 ? 1 : 0;
  const chunk = s.chunk, slices = BATCH / chunk;
  const one = SINGLE_CHUNK, oneSlices = BATCH / one;
  const vaBig = Array.from(s.va);
  const kinds: Arm64Access[] = Array.from(s.access, kindOf);
  const core = (s.vcpu as unknown as { ex: CoreTranslate }).ex;
  const c0 = ctx0(s);
  const vaSlices = Array.from({ length: slices }, (_, k) => s.va.subarray(k * chunk, (k + 1) * chunk));
  const accSlices = Array.from({ length: slices }, (_, k) => s.access.subarray(k * chunk, (k + 1) * chunk));
  const va32 = new Uint32Array(s.va.buffer, s.va.byteOffset, BATCH * 2);
  const tsVaSlices = Array.from({ length: slices }, (_, k) => va32.subarray(2 * k * chunk, 2 * (k + 1) * chunk));
  const tsAcc = s.access;
  let kWasm = 0, kTs = 0, kApi = 0, kExport = 0, kSingle = 0;
  const wc = () => wasmCounters(s), tc = () => tsCounters(ts);
  addCounted(bench, `${s.name} batch wasm`, chunk, () => {
    if (slices > 1) {
      const k = kWasm++ % slices;
      bt.va.set(vaSlices[k]!);
      bt.access.set(accSlices[k]!);
    }
    sink += bt.run(chunk, el0) + bt.status[sink & (chunk - 1)]!;
  }, wc, perOp);
  addCounted(bench, `${s.name} batch ts`, chunk, () => {
    if (slices > 1) {
      const k = kTs++ % slices;
      ts.va.set(tsVaSlices[k]!);
      ts.access.set(accSlices[k]!);
    }
    sink += ts.translateBatch(chunk, e) + ts.status[sink & (chunk - 1)]!;
  }, tc, perOp);
  addCounted(bench, `${s.name} single wasm api`, one, () => {
    const off = (kApi++ % oneSlices) * one;
    let acc = 0;
    for (let i = off; i < off + one; i++) {
      const r = s.vcpu.translate(vaBig[i]!, kinds[i]!, el0);
      acc += "fault" in r ? 1 : r.level;
    }
    sink += acc;
  }, wc, perOp);
  addCounted(bench, `${s.name} single wasm export`, one, () => {
    const off = (kExport++ % oneSlices) * one;
    let acc = 0;
    for (let i = off; i < off + one; i++) acc += core.armTranslate(c0, vaBig[i]!, tsAcc[i]!, e);
    sink += acc;
  }, wc, perOp);
  addCounted(bench, `${s.name} single ts`, one, () => {
    const off = (kSingle++ % oneSlices) * one;
    let acc = 0;
    for (let i = off; i < off + one; i++) acc += ts.translate(va32[2 * i]!, va32[2 * i + 1]!, tsAcc[i]!, e) + ts.result[5]!;
    sink += acc;
  }, tc, perOp);
}

for (let round = 0; round < ROUNDS; round++) {
  for (const p of prepared) {
    if ("binary" in compiled) {
      const rs = runNativeArm64(compiled.binary, p.snap, p.s.va, p.s.access, p.s.el0, args.nativeMs / ROUNDS, p.s.chunk, SINGLE_CHUNK);
      const batch = rs.find((r) => r.kernel === "batch");
      const single = rs.find((r) => r.kernel === "single");
      if (batch && single) {
        p.native.push({ batch, single });
        rounds.record(`${p.s.name} batch c`, batch.nsPerOp);
        rounds.record(`${p.s.name} single c`, single.nsPerOp);
      }
    }
    const bench = new Bench({
      name: `arm64 translate ${p.s.name} round ${round}`, time: args.time / ROUNDS, iterations: 8,
      warmupTime: round === 0 ? args.warmupTime : Math.min(args.warmupTime, 20),
    });
    tasksFor(bench, p);
    bench.runSync();
    for (const t of bench.tasks) {
      rounds.record(t.name, nsPerOp(t, t.name.includes(" single ") ? SINGLE_CHUNK : p.s.chunk));
      samplesOf.set(t.name, (samplesOf.get(t.name) ?? 0) + samples(t));
    }
  }
}

// ---- report ----------------------------------------------------------------

interface Row {
  scenario: string; path: string; wasm: number; c?: number; ts: number; wasmOverC?: number; tsOverWasm?: number;
  wasmOverCRange: string; counters?: PerOp; samples: number;
}
const rows: Row[] = [];
const rowOf = new Map<string, Row>();
for (const p of prepared) {
  const n = p.s.name;
  const row = (kind: string, label: string, wasm: string, c: string, ts: string): Row => {
    const r: Row = {
      scenario: p.s.label, path: label, wasm: rounds.ns(wasm)!, c: rounds.ns(c), ts: rounds.ns(ts)!, wasmOverC: rounds.ratio(wasm, c),
      tsOverWasm: rounds.ratio(ts, wasm), wasmOverCRange: rounds.spread(wasm, c), counters: perOp.get(wasm), samples: samplesOf.get(wasm) ?? 0,
    };
    rowOf.set(`${n} ${kind}`, r);
    return r;
  };
  rows.push(row("batch", `batch, ${p.s.chunk}/run`, `${n} batch wasm`, `${n} batch c`, `${n} batch ts`));
  rows.push(row("api", `single, translate() API, ${SINGLE_CHUNK}/sample`, `${n} single wasm api`, `${n} single c`, `${n} single ts`));
  rows.push(row("export", `single, core export, ${SINGLE_CHUNK}/sample`, `${n} single wasm export`, `${n} single c`, `${n} single ts`));
}

console.log("## Time per translation (median)\n");
const x = (v: number | undefined) => (v === undefined ? "—" : `${v.toFixed(2)}×`);
printTable(
  ["case", "path", "wasm ns/op", "C ns/op", "TS ns/op", "wasm Mops/s", "wasm/C", "(rounds)", "TS/wasm", "hits/op", "misses/op", "walks/op", "ptRefs/op", "wasm samples"],
  rows.map((r) => [
    r.scenario, r.path, fmt.ns(r.wasm), fmt.ns(r.c), fmt.ns(r.ts), fmt.mops(r.wasm), x(r.wasmOverC), r.wasmOverCRange, x(r.tsOverWasm),
    fmt.per(r.counters?.hits), fmt.per(r.counters?.misses), fmt.per(r.counters?.walks), fmt.per(r.counters?.ptRefs), String(r.samples),
  ]),
  2,
);
console.log("Counters are the wasm vCPU's tlbStats() deltas over the measured phase, per translation: walks counts the stage-1");
console.log("walk and every stage-2 walk; ptRefs every descriptor read of both stages. The C and TS rows of the single-call");
console.log("paths are the same figures in both lines: the baselines have no API boundary to cross.\n");

console.log("## Same work, same answers: checksums and baseline counters\n");
printTable(
  ["case", "path", "wasm checksum", "TS checksum", "C checksum", "match", "TS hits/walks/ptRefs per op", "C hits/walks/ptRefs per op"],
  prepared.flatMap((p) => {
    const n = p.s.name;
    const tsb = perOp.get(`${n} batch ts`), tss = perOp.get(`${n} single ts`);
    const c3 = (c?: { hits: number; walks: number; ptRefs: number }) => (c ? `${fmt.per(c.hits)} / ${fmt.per(c.walks)} / ${fmt.per(c.ptRefs)}` : "—");
    const line = (label: string, w: number, t: number, c: number | undefined, tc?: PerOp, cc?: NativeResult) => [
      p.s.label, label, fmt.hex(w), fmt.hex(t), c === undefined ? "—" : fmt.hex(c), w === t && (c === undefined || c === w) ? "yes" : "NO", c3(tc), c3(cc),
    ];
    return [
      line("batch", p.checksum.wasmBatch, p.checksum.tsBatch, p.native[0]?.batch.checksum, tsb, p.native[0]?.batch),
      line("single", p.checksum.wasmSingle, p.checksum.tsSingle, p.native[0]?.single.checksum, tss, p.native[0]?.single),
    ];
  }),
  2,
);

console.log("## Targets\n");
const hit = rowOf.get("hit batch")!;
const ratioTarget = (r: Row) => verdict(r.wasmOverC === undefined ? undefined : r.wasmOverC <= RATIO_TARGET);
const targets: [string, string, string, string][] = [
  [`TLB-hit batch >= ${HIT_TARGET_MOPS} M translations/s`, `${fmt.mops(hit.wasm)} M/s`, rounds.mopsRange("hit batch wasm"), verdict(1e3 / hit.wasm >= HIT_TARGET_MOPS)],
  ...prepared.map((p): [string, string, string, string] => {
    const r = rowOf.get(`${p.s.name} batch`)!;
    return [`${p.s.label} batch: wasm <= ${RATIO_TARGET}× native C`, x(r.wasmOverC), r.wasmOverCRange, ratioTarget(r)];
  }),
];
printTable(["target", "median", "range over rounds", "verdict"], targets.map((t) => [...t]), 1);
console.log(`(sink ${sink >>> 0}; native sinks ${prepared.map((p) => p.native.map((n) => `${n.batch.sink}/${n.single.sink}`).join(" ") || "—").join(", ")})`);

const out = path.join(ROOT, "bench/.out/arm64-translate.json");
writeFileSync(out, JSON.stringify({
  info, args, rounds: ROUNDS, rows, targets, perRound: rounds.toJSON(), checksums: prepared.map((p) => ({ name: p.s.name, ...p.checksum })),
}, null, 2));
for (const s of scenarios) s.machine.dispose();
console.log(`Load average (1 / 5 / 15 min) at the end: ${loadAvg()}`);
console.log(`(results also in ${path.relative(ROOT, out)})`);
