// Before/after in one process: the hot-path scenarios of x86-translate and
// arm64-translate (x86-scenarios.ts, arm64-scenarios.ts) built and run on the
// previous core — a build of git rev ab130d2 (main before issue 8), made by
// scripts/bench-baseline.mjs into bench/.baseline/ — and on this tree's core,
// both through the public API (createMachine, the table builders,
// vcpu.batch().run), interleaved round by round so the two see the same load.
//
// Per case: both machines are built, warmed up (TLB filled, A set in every
// walked entry, code tiered up), checked for the steady state and for equal
// answers (a checksum of every batch result as each core's decodeStatus reads
// it: pa, level, page size, or the fault), then measured for
// ROUNDS rounds; each round runs one tinybench per case with the old and the
// new task in alternating order. Reported: median ns per translation over
// the rounds, the median of the per-round new/old ratios and its range, and
// each side's tlbStats() deltas per translation (walks, ptRefs), which must
// agree: same work, different code.
//
// Run: npm run bench -- before-after [--quick | --smoke] [--baseline=REV] [--only=WORD,…] [--rounds=N]
// (--only: just the cases whose name contains one of the words, e.g. --only=x86,s12walk)
// (the baseline is built on first use, ~10 s; `node scripts/bench-baseline.mjs REV` builds it by hand).

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Bench } from "tinybench";
import { coreHash, type Arm64Access, type X86Access } from "../src/index.js";
import { addCounted, fmt, machineInfo, mix, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT, Rounds, samples } from "./common.js";
import * as x86 from "./x86-scenarios.js";
import * as arm from "./arm64-scenarios.js";

const argv = process.argv.slice(2);
const smoke = argv.includes("--smoke");
const args = smoke ? { ...parseArgs(["--quick", "--time=60"]), warmupTime: 10 } : parseArgs(argv);
const roundsArg = argv.find((a) => a.startsWith("--rounds="));
const ROUNDS = roundsArg ? Number(roundsArg.slice(9)) : smoke ? 2 : args.quick ? 3 : 7;
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new RangeError(`bench: bad ${roundsArg}`);
const TIER_UP_MS = smoke ? 30 : args.quick ? 200 : 600;
const REV = argv.find((a) => a.startsWith("--baseline="))?.slice(11) ?? "ab130d2";
const ONLY = argv.find((a) => a.startsWith("--only="))?.slice(7).split(",").filter((w) => w !== "");

type Lib = x86.X86Lib & arm.Arm64Lib & { coreHash: string };
type PerOp = { hits: number; misses: number; walks: number; ptRefs: number; adWrites: number };

/** One scenario on one core, as the measured tasks drive it. */
interface Side {
  /** Runs one measured batch call; returns the translations it made. */
  batch(): number;
  /** One single-call translate() loop (hit cases only); returns the translations it made. */
  single?: () => number;
  counters(): PerOp;
  /** Checksum of the batch results over the whole address list, decoded by the core's own decodeStatus. */
  answers: number;
  dispose(): void;
}

interface Case {
  name: string;
  label: string;
  /** Translations per batch call, per single-call loop. */
  chunk: number;
  singleChunk: number;
  expectedPtRefs: number;
  make(lib: Lib): Promise<Side>;
}

function loadBaseline(): { lib: Promise<Lib>; meta: { commit: string; coreHash: string } } {
  const file = path.join(ROOT, `bench/.baseline/vmmu-${REV}.mjs`), metaFile = path.join(ROOT, `bench/.baseline/vmmu-${REV}.json`);
  if (!existsSync(file) || !existsSync(metaFile)) {
    const r = spawnSync(process.execPath, [path.join(ROOT, "scripts/bench-baseline.mjs"), REV], { stdio: "inherit", cwd: ROOT });
    if (r.status !== 0) throw new Error(`bench: could not build the baseline core of ${REV} (scripts/bench-baseline.mjs exited ${r.status ?? r.signal})`);
  }
  const meta = JSON.parse(readFileSync(metaFile, "utf8")) as { commit: string; coreHash: string };
  return { lib: import(pathToFileURL(file).href) as Promise<Lib>, meta };
}

const statsOf = (v: { tlbStats(): PerOp }): PerOp => {
  const t = v.tlbStats();
  return { hits: t.hits, misses: t.misses, walks: t.walks, ptRefs: t.ptRefs, adWrites: t.adWrites };
};

type Decoded = { pa: bigint; pageSize: number; level: number } | { fault: object };

/** Checksum of a fault record's fields (bigints as decimal). */
function faultSum(f: object): number {
  const text = JSON.stringify(f, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  let h = 0;
  for (let i = 0; i < text.length; i++) h = mix(h, text.charCodeAt(i));
  return h;
}

/** Checksum of the first `n` batch results, each decoded by `decode` (the vCPU's decodeStatus). */
function answers(b: { pa: BigUint64Array; status: Uint32Array }, n: number, decode: (status: number, pa: bigint) => Decoded): number {
  let h = 0;
  for (let i = 0; i < n; i++) {
    const r = decode(b.status[i]!, b.pa[i]!);
    if ("fault" in r) h = mix(mix(mix(h, 0), 0), faultSum(r.fault));
    else h = mix(mix(mix(h, Number(r.pa & 0xffff_ffffn)), Number(r.pa >> 32n)), (r.level << 8) | Math.log2(r.pageSize));
  }
  return h;
}

/** Runs `fn` for `ms` (V8 tiers hot wasm up from Liftoff in a background thread). */
function tierUp(fn: () => void, ms: number): void {
  for (const until = performance.now() + ms; performance.now() < until;) fn();
}

function checkSteady(name: string, faults: number, st: PerOp, n: number, tlbOn: boolean, ptRefs: number): void {
  if (faults !== 0) throw new Error(`bench: ${name}: ${faults} faults in the steady state`);
  if (tlbOn && (st.hits !== n || st.misses !== 0)) throw new Error(`bench: ${name}: expected ${n} hits, got ${st.hits} hits / ${st.misses} misses`);
  if (!tlbOn && (st.ptRefs !== n * ptRefs || st.adWrites !== 0)) {
    throw new Error(`bench: ${name}: expected ${ptRefs} entry reads per walk and no A/D writes, got ${st.ptRefs / n} / ${st.adWrites}`);
  }
}

/**
 * A fresh copy of `f` (which must use only its parameters). Closures made
 * from one piece of source share V8's type feedback and optimized code, so a
 * loop that drove both cores' vCPU classes would run polymorphic on both and
 * measure the harness; each side's hot loops are its own copies.
 */
function ownCopy<F extends (...a: never[]) => unknown>(f: F): F {
  return new Function(`return (${f.toString()});`)() as F;
}

type BatchLike = { va: BigUint64Array; access: Uint8Array; run(n: number, priv: boolean): number };
type TranslateLike = { translate(va: bigint, access: never, priv: boolean): unknown };

/** One batch call over `n` addresses, after loading `va`/`acc` into the batch area when given. */
const batchLoop = (bt: BatchLike, va: BigUint64Array | undefined, acc: Uint8Array | undefined, n: number, priv: boolean): number => {
  if (va && acc) {
    bt.va.set(va);
    bt.access.set(acc);
  }
  bt.run(n, priv);
  return n;
};

/** translate() over addresses [off, off + n) of the list. */
const singleLoop = (vcpu: TranslateLike, va: bigint[], kinds: never[], priv: boolean, off: number, n: number): number => {
  for (let i = off; i < off + n; i++) vcpu.translate(va[i]!, kinds[i]!, priv);
  return n;
};

const X86_KINDS: readonly X86Access[] = ["read", "write", "fetch"];
const ARM_KINDS: readonly Arm64Access[] = ["read", "write", "fetch"];

function x86Case(name: "hit" | "walk4" | "walk5", label: string, expectedPtRefs: number): Case {
  const build = (lib: Lib) => (name === "hit" ? x86.hitScenario(1, lib) : x86.walkScenario(name === "walk5" ? 5 : 4, 2, lib));
  return {
    name: `x86 ${name}`, label: `x86 ${label}`, chunk: x86.BATCH, singleChunk: x86.BATCH, expectedPtRefs,
    async make(lib) {
      const s = await build(lib);
      x86.loadBatch(s);
      const bt = s.vcpu.batch(), user = s.user, n = x86.BATCH;
      const kinds = Array.from(s.access, (c) => X86_KINDS[c]!) as never[], va = Array.from(s.va);
      const runBatch = ownCopy(batchLoop), runSingle = ownCopy(singleLoop), vcpu = s.vcpu as unknown as TranslateLike;
      const batch = () => runBatch(bt, undefined, undefined, n, user);
      const single = () => runSingle(vcpu, va, kinds, user, 0, n);
      batch();
      tierUp(() => { batch(); if (s.tlbOn) single(); }, TIER_UP_MS);
      s.vcpu.resetStats();
      checkSteady(`${lib.coreHash} ${s.name}`, bt.run(n, user), statsOf(s.vcpu), n, s.tlbOn, expectedPtRefs);
      const sum = answers(bt, n, (st, pa) => s.vcpu.decodeStatus(st, pa));
      return { batch, single: s.tlbOn ? single : undefined, counters: () => statsOf(s.vcpu), answers: sum, dispose: () => s.machine.dispose() };
    },
  };
}

function armCase(ipaBits: 0 | 40 | 48 | "hit"): Case {
  const hit = ipaBits === "hit";
  const expectedPtRefs = hit ? 0 : ipaBits === 0 ? 4 : ipaBits === 40 ? 19 : 24;
  const name = hit ? "hit" : ipaBits === 0 ? "s1walk" : `s12walk${ipaBits}`;
  const label = hit ? "TLB hit" : ipaBits === 0 ? "stage-1 walk (4 levels)" : `S1+S2 walk, IPA ${ipaBits}`;
  return {
    name: `arm64 ${name}`, label: `arm64 ${label}`, chunk: hit ? arm.BATCH : arm.WALK_CHUNK, singleChunk: arm.SINGLE_CHUNK, expectedPtRefs,
    async make(lib) {
      const s = hit ? await arm.hitScenario(1, lib) : await arm.walkScenario(ipaBits, 2, lib);
      arm.loadBatch(s);
      const bt = s.vcpu.batch(), el0 = s.el0, n = arm.BATCH, chunk = s.chunk, slices = n / chunk;
      const vaSlices = Array.from({ length: slices }, (_, k) => s.va.subarray(k * chunk, (k + 1) * chunk));
      const accSlices = Array.from({ length: slices }, (_, k) => s.access.subarray(k * chunk, (k + 1) * chunk));
      const kinds = Array.from(s.access, (c) => ARM_KINDS[c]!) as never[], va = Array.from(s.va);
      const runBatch = ownCopy(batchLoop), runSingle = ownCopy(singleLoop), vcpu = s.vcpu as unknown as TranslateLike;
      let k = 0, kSingle = 0;
      const batch = () => {
        const j = k++ % slices;
        return slices > 1 ? runBatch(bt, vaSlices[j], accSlices[j], chunk, el0) : runBatch(bt, undefined, undefined, chunk, el0);
      };
      const one = arm.SINGLE_CHUNK;
      const single = () => runSingle(vcpu, va, kinds, el0, (kSingle++ % (n / one)) * one, one);
      bt.run(n, el0);
      tierUp(() => { batch(); if (hit) single(); }, TIER_UP_MS);
      arm.loadBatch(s);
      s.vcpu.resetStats();
      checkSteady(`${lib.coreHash} ${s.name}`, bt.run(n, el0), statsOf(s.vcpu), n, s.tlbOn, expectedPtRefs);
      const sum = answers(bt, n, (st, pa) => s.vcpu.decodeStatus(st, pa));
      return { batch, single: hit ? single : undefined, counters: () => statsOf(s.vcpu), answers: sum, dispose: () => s.machine.dispose() };
    },
  };
}

const cases: Case[] = [
  x86Case("hit", "TLB hit", 0), x86Case("walk4", "4-level walk, TLB off", 4), x86Case("walk5", "5-level walk, TLB off", 5),
  armCase("hit"), armCase(0), armCase(40), armCase(48),
].filter((c) => !ONLY || ONLY.some((w) => c.name.includes(w)));
if (cases.length === 0) throw new Error(`bench: --only=${ONLY?.join(",")} selects no case (names: x86 hit, x86 walk4, x86 walk5, arm64 hit, arm64 s1walk, arm64 s12walk40, arm64 s12walk48)`);

// ---- run ---------------------------------------------------------------------

const info = machineInfo();
const baseline = loadBaseline();
const oldLib = await baseline.lib;
const newLib = await import("../src/index.js") as unknown as Lib;
const loadAvg = () => os.loadavg().map((v) => v.toFixed(1)).join(" / ");
printMachineInfo("Before/after: the previous core and this tree's, same scenarios, one process", info, args);
console.log(`- old: git ${REV} (${baseline.meta.commit.slice(0, 12)}), wasm core ${oldLib.coreHash}`);
console.log(`- new: this tree, wasm core ${coreHash}${oldLib.coreHash === coreHash ? " — the same wasm as the old one (no core change in this tree yet)" : ""}`);
console.log(`- load average (1 / 5 / 15 min) at start: ${loadAvg()}`);
console.log(`- ${ROUNDS} rounds per case, old and new tasks alternating first; ${Math.round(args.time / ROUNDS)} ms per task per round${smoke ? " (--smoke: figures are not meaningful)" : ""}\n`);

const rounds = new Rounds();
const perOp = new Map<string, PerOp>();
const samplesOf = new Map<string, number>();
const checks: { c: Case; old: Side; neu: Side }[] = [];

for (const c of cases) {
  const old = await c.make(oldLib);
  const neu = await c.make(newLib);
  checks.push({ c, old, neu });
  for (let round = 0; round < ROUNDS; round++) {
    const bench = new Bench({ name: `${c.name} round ${round}`, time: args.time / ROUNDS, iterations: 8, warmupTime: round === 0 ? args.warmupTime : 10 });
    const sides: [string, Side][] = round % 2 === 0 ? [["old", old], ["new", neu]] : [["new", neu], ["old", old]];
    for (const [tag, side] of sides) {
      addCounted(bench, `${c.name} batch ${tag}`, c.chunk, side.batch, side.counters, perOp);
      if (side.single) addCounted(bench, `${c.name} single ${tag}`, c.singleChunk, side.single, side.counters, perOp);
    }
    bench.runSync();
    for (const t of bench.tasks) {
      rounds.record(t.name, nsPerOp(t, t.name.includes(" single ") ? c.singleChunk : c.chunk));
      samplesOf.set(t.name, (samplesOf.get(t.name) ?? 0) + samples(t));
    }
  }
  old.dispose();
  neu.dispose();
}

// ---- report --------------------------------------------------------------------

interface Row { case: string; path: string; old?: number; new?: number; ratio?: number; range: string; oldPt?: number; newPt?: number; same: boolean }
const rows: Row[] = [];
for (const { c, old, neu } of checks) {
  const same = old.answers === neu.answers;
  for (const kind of ["batch", "single"] as const) {
    const o = `${c.name} ${kind} old`, n = `${c.name} ${kind} new`;
    if (rounds.ns(o) === undefined) continue;
    rows.push({
      case: c.label, path: kind === "batch" ? `batch, ${c.chunk}/run` : `translate() API, ${c.singleChunk}/sample`,
      old: rounds.ns(o), new: rounds.ns(n), ratio: rounds.ratio(n, o), range: rounds.spread(n, o),
      oldPt: perOp.get(o)?.ptRefs, newPt: perOp.get(n)?.ptRefs, same,
    });
  }
}

console.log("## Time per translation: old core vs new core (median)\n");
printTable(
  ["case", "path", "old ns/op", "new ns/op", "new/old", "(rounds)", "old ptRefs/op", "new ptRefs/op", "same answers"],
  rows.map((r) => [r.case, r.path, fmt.ns(r.old), fmt.ns(r.new), fmt.ratio(r.new, r.old), r.range, fmt.per(r.oldPt), fmt.per(r.newPt), r.same ? "yes" : "NO"]),
  2,
);
console.log("new/old is the median of the per-round ratios (below 1: the new core is faster); the range is over rounds.");
console.log("ptRefs/op: each side's tlbStats() delta per translation over its measured phase (0 on TLB hits).");
console.log("same answers: equal checksums of every batch result over the whole address list, as each core's decodeStatus reads it.\n");
const diff = checks.filter(({ old, neu }) => old.answers !== neu.answers);
if (diff.length) console.log(`Different answers: ${diff.map(({ c }) => c.name).join(", ")}\n`);
console.log(`Load average (1 / 5 / 15 min) at the end: ${loadAvg()}`);

const out = path.join(ROOT, "bench/.out/before-after.json");
writeFileSync(out, JSON.stringify({
  info, args, rounds: ROUNDS, baseline: { rev: REV, ...baseline.meta }, newCore: coreHash, rows, perRound: rounds.toJSON(),
}, null, 2));
console.log(`(results also in ${path.relative(ROOT, out)})`);
