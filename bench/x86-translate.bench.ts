// x86-64 translation cost: the TLB-hit path and full 4/5-level walks, batch
// API and single calls, wasm core vs native C vs plain TS over the same page
// tables, TLB bytes and address lists (see x86-scenarios.ts, ts-baseline.ts,
// native/x86.c). Intel SDM Vol.3A §4.5, §4.10.
//
// Targets checked (printed PASS/MISS, never failing the run):
//   - TLB hits through the batch API: >= 250 M translations/s;
//   - wasm within 1.3x of native C on the hit batch and on both walk batches.
//
// Run: npm run bench [-- --quick] (bundled by scripts/bench.mjs).

import { writeFileSync } from "node:fs";
import path from "node:path";
import { Bench } from "tinybench";
import type { X86Access } from "../src/index.js";
import { fmt, machineInfo, mix, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT, samples } from "./common.js";
import { compileNative, runNative, type NativeResult } from "./native.js";
import { TsX86Mmu, COUNTER, type MmuSnapshot } from "./ts-baseline.js";
import { BATCH, hitScenario, kindOf, loadBatch, snapshot, walkScenario, type X86Scenario } from "./x86-scenarios.js";

const HIT_TARGET_MOPS = 250;
const RATIO_TARGET = 1.3;

interface PerOp { hits: number; misses: number; walks: number; ptRefs: number; adWrites: number }

interface Prepared {
  s: X86Scenario;
  ts: TsX86Mmu;
  snap: MmuSnapshot;
  /** Native results of every round. */
  native: { batch: NativeResult; single: NativeResult }[];
  checksum: { wasmBatch: number; tsBatch: number; wasmSingle: number; tsSingle: number };
}

/** The raw export, on the vCPU's guest-paging context record `c`. */
type CoreTranslate = { x86Translate(c: number, va: bigint, access: number, user: number): number };

const args = parseArgs();
const ROUNDS = args.quick ? 2 : 5;
const info = machineInfo();
printMachineInfo("x86-64 translation: wasm core vs native C vs plain TS", info, args);
console.log(`${ROUNDS} rounds; in each, per case: native C, then the tinybench tasks (${Math.round(args.time / ROUNDS)} ms each).`);
console.log("Figures are medians over the rounds of each round's median; ratios are medians of the per-round ratios.\n");

const compiled = compileNative();
if ("skipped" in compiled) console.log(`Native C rows skipped: ${compiled.skipped}\n`);

function wasmBatchChecksum(s: X86Scenario): number {
  const b = s.vcpu.batch();
  const pa = new Uint32Array(b.pa.buffer, b.pa.byteOffset, BATCH * 2);
  let h = 0;
  for (let i = 0; i < BATCH; i++) h = mix(mix(mix(h, pa[2 * i]!), pa[2 * i + 1]!), b.status[i]!);
  return h;
}

function wasmSingleChecksum(s: X86Scenario): number {
  let h = 0;
  for (let i = 0; i < BATCH; i++) {
    const r = s.vcpu.translate(s.va[i]!, kindOf(s.access[i]!), s.user);
    if ("fault" in r) { h = mix(mix(mix(h, 0), 0), (1 << 16) | (r.fault.level << 8)); continue; }
    h = mix(mix(mix(h, Number(r.pa & 0xffff_ffffn)), Number(r.pa >> 32n)), (r.level << 8) | Math.log2(r.pageSize));
  }
  return h;
}

function tsChecksums(ts: TsX86Mmu, s: X86Scenario): { batch: number; single: number } {
  const user = s.user ? 1 : 0;
  ts.translateBatch(BATCH, user);
  let batch = 0;
  for (let i = 0; i < BATCH; i++) batch = mix(mix(mix(batch, ts.pa[2 * i]!), ts.pa[2 * i + 1]!), ts.status[i]!);
  let single = 0;
  for (let i = 0; i < BATCH; i++) {
    const st = ts.translate(ts.va[2 * i]!, ts.va[2 * i + 1]!, ts.access[i]!, user);
    single = mix(mix(mix(single, ts.result[0]!), ts.result[1]!), (st << 16) | (ts.result[6]! << 8) | ts.result[7]!);
  }
  return { batch, single };
}

/** Warm-up (fills the TLB, sets A in the non-leaf entries), checks the steady state, snapshots for the baselines. */
function prepare(s: X86Scenario): Prepared {
  loadBatch(s);
  const bt = s.vcpu.batch();
  const user = s.user;
  bt.run(BATCH, user);
  bt.run(BATCH, user);
  s.vcpu.resetStats();
  const faults = bt.run(BATCH, user);
  const st = s.vcpu.tlbStats();
  if (faults !== 0) throw new Error(`bench: ${s.name}: ${faults} faults in the steady state`);
  if (s.tlbOn && (st.hits !== BATCH || st.misses !== 0)) throw new Error(`bench: ${s.name}: expected ${BATCH} hits, got ${st.hits} hits / ${st.misses} misses`);
  if (!s.tlbOn && (st.walks !== BATCH || st.adWrites !== 0)) throw new Error(`bench: ${s.name}: expected ${BATCH} walks without A/D writes, got ${st.walks} / ${st.adWrites}`);
  const wasmBatch = wasmBatchChecksum(s);
  const wasmSingle = wasmSingleChecksum(s);

  const snap = snapshot(s);
  const ts = new TsX86Mmu(snap);
  ts.va.set(new Uint32Array(s.va.buffer, s.va.byteOffset, BATCH * 2));
  ts.access.set(s.access);
  const tsSums = tsChecksums(ts, s);
  return { s, ts, snap, native: [], checksum: { wasmBatch, tsBatch: tsSums.batch, wasmSingle, tsSingle: tsSums.single } };
}

const scenarios = [await hitScenario(), await walkScenario(4), await walkScenario(5)];
const prepared = scenarios.map(prepare);

// ---- rounds: native C, then tinybench over wasm and TS -----------------------

const perOp = new Map<string, PerOp>();
/** ns/op of every round, per task name. */
const perRound = new Map<string, number[]>();
const samplesOf = new Map<string, number>();
let sink = 0;

function wasmCounters(s: X86Scenario): PerOp {
  const t = s.vcpu.tlbStats();
  return { hits: t.hits, misses: t.misses, walks: t.walks, ptRefs: t.ptRefs, adWrites: t.adWrites };
}
function tsCounters(ts: TsX86Mmu): PerOp {
  const c = ts.counters;
  return { hits: c[COUNTER.hits]!, misses: c[COUNTER.misses]!, walks: c[COUNTER.walks]!, ptRefs: c[COUNTER.ptRefs]!, adWrites: c[COUNTER.adWrites]! };
}

/** Adds a task whose counters (read by `counters`) are recorded per operation over the measured phase. */
function add(bench: Bench, name: string, opsPerCall: number, fn: () => void, counters: () => PerOp): void {
  let calls = 0;
  let before: PerOp | undefined;
  bench.add(name, () => { fn(); calls++; }, {
    beforeAll(mode) { if (mode === "run") { calls = 0; before = counters(); } },
    afterAll(mode) {
      if (mode !== "run" || !before) return;
      const after = counters(), ops = calls * opsPerCall, b = before;
      perOp.set(name, {
        hits: (after.hits - b.hits) / ops, misses: (after.misses - b.misses) / ops, walks: (after.walks - b.walks) / ops,
        ptRefs: (after.ptRefs - b.ptRefs) / ops, adWrites: (after.adWrites - b.adWrites) / ops,
      });
    },
  });
}

function tasksFor(bench: Bench, p: Prepared): void {
  const { s, ts } = p;
  const bt = s.vcpu.batch();
  const user = s.user, u = user ? 1 : 0;
  const vaBig = Array.from(s.va);
  const kinds: X86Access[] = Array.from(s.access, kindOf);
  const core = (s.vcpu as unknown as { ex: CoreTranslate }).ex;
  const c0 = s.vcpu.base + s.machine.layout.VCPU_MMU;
  const tsVa = ts.va, tsAcc = ts.access;
  add(bench, `${s.name} batch wasm`, BATCH, () => { sink += bt.run(BATCH, user) + bt.status[sink & (BATCH - 1)]!; }, () => wasmCounters(s));
  add(bench, `${s.name} batch ts`, BATCH, () => { sink += ts.translateBatch(BATCH, u) + ts.status[sink & (BATCH - 1)]!; }, () => tsCounters(ts));
  add(bench, `${s.name} single wasm api`, BATCH, () => {
    let acc = 0;
    for (let i = 0; i < BATCH; i++) {
      const r = s.vcpu.translate(vaBig[i]!, kinds[i]!, user);
      acc += "fault" in r ? 1 : r.level;
    }
    sink += acc;
  }, () => wasmCounters(s));
  add(bench, `${s.name} single wasm export`, BATCH, () => {
    let acc = 0;
    for (let i = 0; i < BATCH; i++) acc += core.x86Translate(c0, vaBig[i]!, s.access[i]!, u);
    sink += acc;
  }, () => wasmCounters(s));
  add(bench, `${s.name} single ts`, BATCH, () => {
    let acc = 0;
    for (let i = 0; i < BATCH; i++) acc += ts.translate(tsVa[2 * i]!, tsVa[2 * i + 1]!, tsAcc[i]!, u) + ts.result[6]!;
    sink += acc;
  }, () => tsCounters(ts));
}

const record = (name: string, v: number) => { const a = perRound.get(name) ?? []; a.push(v); perRound.set(name, a); };

for (let round = 0; round < ROUNDS; round++) {
  for (const p of prepared) {
    if ("binary" in compiled) {
      const rs = runNative(compiled.binary, p.snap, p.s.va, p.s.access, p.s.user, args.nativeMs / ROUNDS);
      const batch = rs.find((r) => r.kernel === "batch");
      const single = rs.find((r) => r.kernel === "single");
      if (batch && single) {
        p.native.push({ batch, single });
        record(`${p.s.name} batch c`, batch.nsPerOp);
        record(`${p.s.name} single c`, single.nsPerOp);
      }
    }
    const bench = new Bench({
      name: `x86 translate ${p.s.name} round ${round}`, time: args.time / ROUNDS, iterations: 8,
      warmupTime: round === 0 ? args.warmupTime : Math.min(args.warmupTime, 20),
    });
    tasksFor(bench, p);
    bench.runSync();
    for (const t of bench.tasks) {
      record(t.name, nsPerOp(t, BATCH));
      samplesOf.set(t.name, (samplesOf.get(t.name) ?? 0) + samples(t));
    }
  }
}

// ---- report ----------------------------------------------------------------

const median = (xs: number[] | undefined): number | undefined => {
  if (!xs || xs.length === 0) return undefined;
  const a = [...xs].sort((x, y) => x - y), m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
};
const ns = (name: string) => median(perRound.get(name));
/** Median over rounds of the per-round ratio a/b. */
const ratio = (a: string, b: string): number | undefined => {
  const xs = perRound.get(a), ys = perRound.get(b);
  if (!xs || !ys || xs.length !== ys.length) return undefined;
  return median(xs.map((x, i) => x / ys[i]!));
};
const spread = (a: string, b: string): string => {
  const xs = perRound.get(a), ys = perRound.get(b);
  if (!xs || !ys || xs.length !== ys.length) return "—";
  const r = xs.map((x, i) => x / ys[i]!);
  return `${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}`;
};

interface Row {
  scenario: string; path: string; wasm: number; c?: number; ts: number; wasmOverC?: number; tsOverWasm?: number;
  wasmOverCRange: string; counters?: PerOp; samples: number;
}
const rows: Row[] = [];
for (const p of prepared) {
  const n = p.s.name;
  const row = (path: string, wasm: string, c: string, ts: string): Row => ({
    scenario: p.s.label, path, wasm: ns(wasm)!, c: ns(c), ts: ns(ts)!, wasmOverC: ratio(wasm, c), tsOverWasm: ratio(ts, wasm),
    wasmOverCRange: spread(wasm, c), counters: perOp.get(wasm), samples: samplesOf.get(wasm) ?? 0,
  });
  rows.push(row("batch, 16384/run", `${n} batch wasm`, `${n} batch c`, `${n} batch ts`));
  rows.push(row("single, translate() API", `${n} single wasm api`, `${n} single c`, `${n} single ts`));
  rows.push(row("single, core export", `${n} single wasm export`, `${n} single c`, `${n} single ts`));
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
console.log("Counters are the wasm vCPU's tlbStats() deltas over the measured phase, per translation. The C and TS rows of the");
console.log("single-call paths are the same figures in both lines: the baselines have no API boundary to cross.\n");

console.log("## Same work, same answers: checksums and baseline counters\n");
printTable(
  ["case", "path", "wasm checksum", "TS checksum", "C checksum", "match", "TS hits/walks/ptRefs per op", "C hits/walks/ptRefs per op"],
  prepared.flatMap((p) => {
    const n = p.s.name;
    const tsb = perOp.get(`${n} batch ts`), tss = perOp.get(`${n} single ts`);
    const c3 = (c?: { hits: number; walks: number; ptRefs: number }) => (c ? `${fmt.per(c.hits)} / ${fmt.per(c.walks)} / ${fmt.per(c.ptRefs)}` : "—");
    const line = (path: string, w: number, t: number, c: number | undefined, tc?: PerOp, cc?: NativeResult) => [
      p.s.label, path, fmt.hex(w), fmt.hex(t), c === undefined ? "—" : fmt.hex(c), w === t && (c === undefined || c === w) ? "yes" : "NO", c3(tc), c3(cc),
    ];
    return [
      line("batch", p.checksum.wasmBatch, p.checksum.tsBatch, p.native[0]?.batch.checksum, tsb, p.native[0]?.batch),
      line("single", p.checksum.wasmSingle, p.checksum.tsSingle, p.native[0]?.single.checksum, tss, p.native[0]?.single),
    ];
  }),
  2,
);

console.log("## Targets\n");
const hit = rows[0]!, w4 = rows[3]!, w5 = rows[6]!;
const verdict = (ok: boolean | undefined) => (ok === undefined ? "n/a (no native C)" : ok ? "PASS" : "MISS");
const hitMops = (xs: number[] | undefined) => (xs ?? []).map((v) => 1e3 / v);
const hitRange = hitMops(perRound.get("hit batch wasm"));
const ratioTarget = (r: Row) => verdict(r.wasmOverC === undefined ? undefined : r.wasmOverC <= RATIO_TARGET);
const targets: [string, string, string, string][] = [
  [`TLB-hit batch >= ${HIT_TARGET_MOPS} M translations/s`, `${fmt.mops(hit.wasm)} M/s`, `${Math.min(...hitRange).toFixed(0)}–${Math.max(...hitRange).toFixed(0)} M/s`, verdict(1e3 / hit.wasm >= HIT_TARGET_MOPS)],
  [`TLB-hit batch: wasm <= ${RATIO_TARGET}× native C`, x(hit.wasmOverC), hit.wasmOverCRange, ratioTarget(hit)],
  [`4-level walk batch: wasm <= ${RATIO_TARGET}× native C`, x(w4.wasmOverC), w4.wasmOverCRange, ratioTarget(w4)],
  [`5-level walk batch: wasm <= ${RATIO_TARGET}× native C`, x(w5.wasmOverC), w5.wasmOverCRange, ratioTarget(w5)],
];
printTable(["target", "median", "range over rounds", "verdict"], targets.map((t) => [...t]), 1);
console.log(`(sink ${sink >>> 0}; native sinks ${prepared.map((p) => p.native.map((n) => `${n.batch.sink}/${n.single.sink}`).join(" ") || "—").join(", ")})`);

const out = path.join(ROOT, "bench/.out/x86-translate.json");
writeFileSync(out, JSON.stringify({ info, args, rounds: ROUNDS, rows, targets, perRound: Object.fromEntries(perRound), checksums: prepared.map((p) => ({ name: p.s.name, ...p.checksum })) }, null, 2));
for (const s of scenarios) s.machine.dispose();
console.log(`(results also in ${path.relative(ROOT, out)})`);
