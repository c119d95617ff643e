// The direct MMUs of issue 10 on the host: the TDP MMU (src/kvm/tdp-mmu.ts,
// KVM arch/x86/kvm/mmu/tdp_mmu.c) and the legacy direct MMU
// (src/kvm/legacy-direct-mmu.ts, KVM arch/x86/kvm/mmu/mmu.c with tdp_mmu=0),
// and the seed-002 run over them (src/experiments/run-cr0wp.ts). Three
// measurements, one run, medians over rounds, counters beside every time:
//
//   1. EPT-violation throughput per MMU and host level (1 = 4 KiB leaves,
//      2 = 2 MiB): (a) MMU only, pageFault over 1024 fresh gpas of a 1 TiB
//      guest RAM per sample, dense and sparse (bench/tdp-scenarios.ts); (b) end
//      to end, a TdpVcpu with guest paging off reading fresh pages (hardware
//      EPT walk → EPT violation → pageFault → walk again). Every sample starts
//      from an empty root (invalidateAllRoots + release, untimed), so every
//      fault installs.
//   2. Zap of a large root populated with 4 KiB leaves (1 GiB = 262 144 leaves;
//      --quick 64 MiB): v5.10 TDP releaseRoot to refcount 0, zapGfnRange over
//      everything, invalidateAllRoots (v6.4 preserveRoots) + release; the same
//      on the legacy MMU. ns per SPTE zapped and per page freed.
//   3. Host wall time of runCr0Wp (ssdd in a KERNEXEC guest) on each MMU under
//      each CR0.WP policy, rounds rotating the order; simulated cycles must be
//      identical in every round (the run is deterministic; asserted).
//
// There is no native C counterpart: these are TypeScript control-plane paths
// (KVM policy code) over the shared memory; only the hardware walk they
// trigger is wasm.
//
// Run: npm run bench -- tdp [--quick] [--rounds=N] [--time=ms]
// (bundled by scripts/bench.mjs; not run in CI).

import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { runCr0Wp, CR0WP_MMUS, CR0WP_VCPUS, type Cr0WpMmu, type Cr0WpResult } from "../src/experiments/run-cr0wp.js";
import type { SsddInterleave } from "../src/guest/ssdd.js";
import { CR0WP_POLICIES } from "../src/kvm/cr0wp-policy.js";
import type { DirectMmu, DirectMmuStats } from "../src/kvm/direct-mmu.js";
import type { TdpMmuStats } from "../src/kvm/tdp-mmu.js";
import type { DirectMmuKind } from "../src/kvm/tdp-vm.js";
import { machineInfo, median, parseArgs, printMachineInfo, printTable, ROOT } from "./common.js";
import {
  directMmu, e2eGuest, emptyMmu, faultGpas, faultSpan, invalidateE2e, poolMachine, populate, ROOT_ROLE, touch, unitBytes,
  type E2eGuest, type FaultPattern, type HostLevel,
} from "./tdp-scenarios.js";

function intArg(name: string, dflt: number): number {
  const a = process.argv.slice(2).find((x) => x.startsWith(`--${name}=`));
  if (!a) return dflt;
  const n = Number(a.slice(name.length + 3));
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`bench: bad ${a}`);
  return n;
}

const args = parseArgs();
const ROUNDS = intArg("rounds", args.quick ? 1 : 5);
const FAULTS = 1024;
const MMU_RAM = 1n << 40n;
const ZAP_BYTES = args.quick ? 64n << 20n : 1n << 30n;
const ZAP_LEAVES = Number(ZAP_BYTES >> 12n);
const SEED = { vcpus: CR0WP_VCPUS, pairs: 10, iterations: args.quick ? 200 : 1000 };
const KINDS: DirectMmuKind[] = ["tdp", "legacy"];
const LEVELS: HostLevel[] = [1, 2];
const info = machineInfo();
const tStart = performance.now();
const loadavg = () => os.loadavg().map((x) => x.toFixed(2)).join(" ");
const loadAtStart = loadavg();

printMachineInfo("Direct MMUs (issue 10): EPT-violation throughput, zap of a large root, the seed-002 run", info, args);
console.log(`- load average at start ${loadAtStart}; ${ROUNDS} round(s), order rotated per round`);
console.log(`- faults: ${FAULTS} per sample, MMU-only guest RAM ${MMU_RAM >> 30n} GiB; zap: ${ZAP_BYTES >> 20n} MiB of 4 KiB leaves (${ZAP_LEAVES}); `
  + `seed run: ${SEED.vcpus} vCPUs, ssdd ${SEED.pairs} pairs × ${SEED.iterations} iterations\n`);

const range = (xs: number[], digits = 0) => (xs.length ? `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}` : "—");
const big = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)} k` : String(n));
/** Wall and process CPU (user + system, all threads) clocks, ms. The machine is shared: CPU time is the figure less moved by other processes. */
const clock = () => { const c = process.cpuUsage(); return { wall: performance.now(), cpu: (c.user + c.system) / 1000 }; };
const since = (c0: { wall: number; cpu: number }) => { const c = clock(); return { ms: c.wall - c0.wall, cpuMs: c.cpu - c0.cpu }; };
const ms4 = (ms: number) => (ms < 1 ? ms.toFixed(4) : ms.toFixed(2));
const per = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1));

// ---- 1. EPT-violation throughput -----------------------------------------------------

interface FaultCase {
  name: string;
  kind: DirectMmuKind;
  level: HostLevel;
  pattern: FaultPattern;
  path: "mmu" | "e2e";
  /** Runs one sample from an empty root; returns its elapsed ms and the counters it moved. */
  sample(): { ms: number; cpuMs: number; faults: number; installed: number; allocated: number; inUse: number; exits: number; walks: number; simCycles: number };
}

/** Per-sample ns/fault of every case, by round, and the counters of the last sample (identical every sample: same work). */
const faultRuns = new Map<string, { wall: number[]; cpu: number[] }[]>();
const faultCounters = new Map<string, ReturnType<FaultCase["sample"]>>();

const mmuPool = await poolMachine(32 << 20);
const e2eGuests: E2eGuest[] = [];
const faultCases: FaultCase[] = [];
for (const kind of KINDS) {
  for (const level of LEVELS) {
    for (const pattern of ["dense", "sparse"] as FaultPattern[]) {
      if (faultSpan(pattern, level, FAULTS) > MMU_RAM) throw new Error("bench: fault span exceeds the MMU-only guest RAM");
      const mmu = directMmu(kind, mmuPool.pool, MMU_RAM, level);
      const gpas = faultGpas(pattern, level, FAULTS);
      faultCases.push({
        name: `${kind} L${level} ${pattern} mmu`, kind, level, pattern, path: "mmu",
        sample() {
          const { hpa: root } = mmu.acquireRoot(ROOT_ROLE);
          const s0 = { ...mmu.stats };
          const t0 = clock();
          for (const gpa of gpas) mmu.pageFault(root, gpa, false, false);
          const { ms, cpuMs } = since(t0);
          const s = mmu.stats, inUse = mmu.pagesInUse();
          emptyMmu(mmu, root);
          return {
            ms, cpuMs, faults: s.faults - s0.faults, installed: s.spteInstalled - s0.spteInstalled, allocated: s.spAllocated - s0.spAllocated, inUse,
            exits: 0, walks: 0, simCycles: 0,
          };
        },
      });
    }
    const g = await e2eGuest(kind, level);
    e2eGuests.push(g);
    const n = Math.min(FAULTS, Number(g.ramBytes / unitBytes(level)));
    const gpas = faultGpas("dense", level, n);
    const v = g.vm.vcpus[0]!, mmu = g.vm.mmu;
    faultCases.push({
      name: `${kind} L${level} dense e2e`, kind, level, pattern: "dense", path: "e2e",
      sample() {
        invalidateE2e(g);
        const s0 = { ...mmu.stats }, x0 = v.exits["ept-violation"], w0 = v.hw.tlbStats().walks, c0 = v.cycles;
        const t0 = clock();
        touch(g, gpas);
        const { ms, cpuMs } = since(t0);
        const s = mmu.stats;
        return {
          ms, cpuMs, faults: s.faults - s0.faults, installed: s.spteInstalled - s0.spteInstalled, allocated: s.spAllocated - s0.spAllocated,
          inUse: mmu.pagesInUse(), exits: v.exits["ept-violation"] - x0, walks: v.hw.tlbStats().walks - w0, simCycles: v.cycles - c0,
        };
      },
    });
  }
}

console.error(`[tdp] faults: warm-up`);
for (const c of faultCases) for (let i = 0; i < 5; i++) c.sample();
for (let round = 0; round < ROUNDS; round++) {
  const t0 = performance.now();
  const order = faultCases.map((_, i) => faultCases[(i + round * 3) % faultCases.length]!);
  for (const c of order) {
    const xs = { wall: [] as number[], cpu: [] as number[] };
    let spent = 0;
    while (spent < args.time || xs.wall.length < 5) {
      const r = c.sample();
      if (r.faults !== r.exits && c.path === "e2e") throw new Error(`bench: ${c.name}: ${r.exits} EPT violations for ${r.faults} faults`);
      xs.wall.push((r.ms * 1e6) / r.faults);
      xs.cpu.push((r.cpuMs * 1e6) / r.faults);
      spent += r.ms;
      faultCounters.set(c.name, r);
    }
    const rs = faultRuns.get(c.name) ?? [];
    rs.push(xs);
    faultRuns.set(c.name, rs);
  }
  console.error(`[tdp] faults: round ${round + 1}/${ROUNDS}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

interface FaultRow {
  name: string; kind: string; level: number; pattern: string; path: string;
  /** Median over rounds of each round's median ns/fault, CPU time and wall time, and the round medians. */
  cpuNs: number; cpuRounds: number[]; wallNs: number; wallRounds: number[]; samples: number; c: ReturnType<FaultCase["sample"]>;
}
const faultRows: FaultRow[] = faultCases.map((c) => {
  const rs = faultRuns.get(c.name)!;
  const cpuRounds = rs.map((xs) => median(xs.cpu)!), wallRounds = rs.map((xs) => median(xs.wall)!);
  return {
    name: c.name, kind: c.kind, level: c.level, pattern: c.pattern, path: c.path, cpuNs: median(cpuRounds)!, cpuRounds, wallNs: median(wallRounds)!, wallRounds,
    samples: rs.reduce((n, xs) => n + xs.wall.length, 0), c: faultCounters.get(c.name)!,
  };
});
faultRows.sort((a, b) => a.level - b.level || a.path.localeCompare(b.path) || a.pattern.localeCompare(b.pattern) || a.kind.localeCompare(b.kind));

console.log("## 1. EPT-violation throughput\n");
printTable(
  ["MMU", "host level", "path", "gpas", "CPU ns/fault", "round medians", "k faults/CPU-s", "wall ns/fault", "round medians", "k faults/s (wall)", "SPTEs installed/fault", "pages allocated/fault", "pool pages in use after", "EPT violations/fault", "hw walks/fault", "sim cycles/fault", "samples"],
  faultRows.map((r) => [
    r.kind, r.level === 1 ? "1 (4 KiB)" : "2 (2 MiB)", r.path === "mmu" ? "MMU only" : "end to end", `${r.pattern}, ${r.c.faults}`,
    r.cpuNs.toFixed(0), range(r.cpuRounds), (1e6 / r.cpuNs).toFixed(0), r.wallNs.toFixed(0), range(r.wallRounds), (1e6 / r.wallNs).toFixed(0),
    per(r.c.installed / r.c.faults), per(r.c.allocated / r.c.faults), String(r.c.inUse),
    r.path === "e2e" ? per(r.c.exits / r.c.faults) : "—", r.path === "e2e" ? per(r.c.walks / r.c.faults) : "—", r.path === "e2e" ? per(r.c.simCycles / r.c.faults) : "—",
    String(r.samples),
  ]), 4,
);
console.log(`CPU ns/fault is the process's user + system time over the sample (all threads, GC included) per fault; wall ns/fault the elapsed time. `
  + `Medians of the samples in each round, then the median over rounds; "round medians" is their min–max. Each sample starts from an empty root and faults every gpa once (${FAULTS} per MMU-only sample; end to end, as many 4 KiB pages / 2 MiB units as fit in the `
  + `guest's ${(e2eGuests[0]!.ramBytes >> 20n).toString()} MiB). "dense": consecutive leaves; "sparse": one leaf per table page (every fault links a new table). `
  + `SPTEs installed counts leaves and links; the root page of each sample is in pages allocated. End to end includes the vCPU's root reload after the untimed invalidation `
  + `(one per sample), the hardware EPT walks before and after the fault, the exit bookkeeping and the cost-model charges.\n`);

// ---- 2. zap of a large root ----------------------------------------------------------

interface ZapCase { name: string; kind: DirectMmuKind; preserveRoots: boolean; op: "release" | "zapGfnRange" | "invalidate+release" }
const zapCases: ZapCase[] = [
  { name: "TDP v5.10: releaseRoot to refcount 0 (whole tree zapped and freed)", kind: "tdp", preserveRoots: false, op: "release" },
  { name: "TDP: zapGfnRange(0, all) (leaves only, tables stay)", kind: "tdp", preserveRoots: false, op: "zapGfnRange" },
  { name: "TDP v6.4: invalidateAllRoots (preserveRoots) + releaseRoot", kind: "tdp", preserveRoots: true, op: "invalidate+release" },
  { name: "legacy: releaseRoot to refcount 0 (root stays hashed, nothing zapped)", kind: "legacy", preserveRoots: false, op: "release" },
  { name: "legacy: zapGfnRange(0, all) (rmap walk, tables stay)", kind: "legacy", preserveRoots: false, op: "zapGfnRange" },
  { name: "legacy: invalidateAllRoots + releaseRoot (kvm_mmu_zap_all_fast)", kind: "legacy", preserveRoots: false, op: "invalidate+release" },
];
interface ZapSample { ms: number; cpuMs: number; zapped: number; freed: number; yields: number; populateNsPerFault: number; pagesBefore: number }
const zapRuns = new Map<string, ZapSample[]>();
const zapPool = await poolMachine(8 << 20);
const pool0 = zapPool.pool.inUse;

function zapOnce(c: ZapCase): ZapSample {
  const mmu: DirectMmu = directMmu(c.kind, zapPool.pool, ZAP_BYTES, 1, c.preserveRoots);
  const { hpa: root } = mmu.acquireRoot(ROOT_ROLE);
  const p0 = performance.now();
  populate(mmu, root, ZAP_LEAVES);
  const populateNsPerFault = ((performance.now() - p0) * 1e6) / ZAP_LEAVES;
  const pagesBefore = mmu.pagesInUse();
  const s0: DirectMmuStats = { ...mmu.stats };
  const y0 = (mmu.stats as Partial<TdpMmuStats>).yields ?? 0;
  const t0 = clock();
  if (c.op === "release") mmu.releaseRoot(root);
  else if (c.op === "zapGfnRange") mmu.zapGfnRange(0n, ZAP_BYTES >> 12n);
  else { mmu.invalidateAllRoots(); mmu.releaseRoot(root); }
  const { ms, cpuMs } = since(t0);
  const s = mmu.stats;
  const out = { ms, cpuMs, zapped: s.spteZapped - s0.spteZapped, freed: s.spFreed - s0.spFreed, yields: ((s as Partial<TdpMmuStats>).yields ?? 0) - y0, populateNsPerFault, pagesBefore };
  // Untimed clean-up back to an empty pool.
  if (c.op === "zapGfnRange") emptyMmu(mmu, root);
  else if (c.kind === "legacy" && c.op === "release") { mmu.invalidateAllRoots(); }
  if (mmu.pagesInUse() !== 0 || zapPool.pool.inUse !== pool0) throw new Error(`bench: ${c.name} left ${mmu.pagesInUse()} pages`);
  return out;
}

console.error(`[tdp] zap: warm-up`);
for (const c of zapCases) zapOnce(c);
for (let round = 0; round < ROUNDS; round++) {
  const t0 = performance.now();
  const order = zapCases.map((_, i) => zapCases[(i + round) % zapCases.length]!);
  for (const c of order) {
    const rs = zapRuns.get(c.name) ?? [];
    for (let k = 0; k < (args.quick ? 3 : 2); k++) rs.push(zapOnce(c));
    zapRuns.set(c.name, rs);
  }
  console.error(`[tdp] zap: round ${round + 1}/${ROUNDS}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

console.log(`## 2. Zap of a root holding ${ZAP_BYTES >> 20n} MiB of 4 KiB leaves (${ZAP_LEAVES} leaves)\n`);
const zapRows = zapCases.map((c) => {
  const rs = zapRuns.get(c.name)!;
  const ms = median(rs.map((r) => r.ms))!, cpuMs = median(rs.map((r) => r.cpuMs))!, r = rs[rs.length - 1]!;
  if (!rs.every((x) => x.zapped === r.zapped && x.freed === r.freed)) throw new Error(`bench: ${c.name}: counters differ between samples`);
  return { ...c, ms, cpuMs, msRange: range(rs.map((x) => x.ms), 2), cpuRange: range(rs.map((x) => x.cpuMs), 2), populate: median(rs.map((x) => x.populateNsPerFault))!, samples: rs.length, r };
});
printTable(
  ["operation", "CPU ms", "range", "wall ms", "range", "SPTEs zapped", "pages freed", "CPU ns/SPTE zapped", "CPU ns/page freed", "pages before", "yields", "populate wall ns/fault", "samples"],
  zapRows.map((z) => [
    z.name, ms4(z.cpuMs), z.cpuRange, ms4(z.ms), z.msRange, String(z.r.zapped), String(z.r.freed),
    z.r.zapped ? ((z.cpuMs * 1e6) / z.r.zapped).toFixed(1) : "—", z.r.freed ? ((z.cpuMs * 1e6) / z.r.freed).toFixed(0) : "—",
    String(z.r.pagesBefore), z.kind === "tdp" ? String(z.r.yields) : "—", z.populate.toFixed(0), String(z.samples),
  ]),
);
console.log("Medians over samples (CPU: process user + system time, all threads). ns per SPTE and per page are the whole operation's CPU time divided by each count (not a split of it). The root is populated before each sample "
  + "(pageFault per 4 KiB gpa, host level 1; its time is the populate column) and emptied after it, untimed.\n");

// ---- 3. the seed-002 run ------------------------------------------------------------------

const policies = Object.keys(CR0WP_POLICIES);
// Every MMU × policy with the vCPUs' CR0 writes in time order (the default),
// plus the legacy and shadow baselines interleaved at blocking points: their
// host-time ratio is the coroutine scheduler's overhead (their simulated
// results barely move: no root dies there).
type Combo = { mmu: Cr0WpMmu; policy: string; interleave: SsddInterleave };
const combos: Combo[] = [
  ...CR0WP_MMUS.flatMap((m) => policies.map((p) => ({ mmu: m, policy: p, interleave: "fine" as const }))),
  { mmu: "legacy", policy: "baseline", interleave: "block" }, { mmu: "shadow", policy: "baseline", interleave: "block" },
];
type SeedRun = Cr0WpResult & { cpuMs: number; setupCpuMs: number };
const seedRuns = new Map<string, SeedRun[]>();
const key = (m: Cr0WpMmu, p: string, i: SsddInterleave = "fine") => `${m}:${p}:${i}`;
/** Process CPU ms of one runCr0Wp call. */
async function cpuOf(mmu: Cr0WpMmu, policy: string, interleave: SsddInterleave, size: { pairs: number; iterations: number }): Promise<{ r: Cr0WpResult; cpuMs: number }> {
  const c0 = process.cpuUsage();
  const r = (await runCr0Wp({ mmus: [mmu], policies: [policy], vcpus: SEED.vcpus, interleave, ...size }))[mmu]![policy]!;
  const c = process.cpuUsage(c0);
  return { r, cpuMs: (c.user + c.system) / 1000 };
}
console.error(`[tdp] seed run: warm-up`);
await runCr0Wp({ mmus: [...CR0WP_MMUS], policies, vcpus: 1, pairs: 2, iterations: 50 });
for (let round = 0; round < ROUNDS; round++) {
  const t0 = performance.now();
  const order = combos.map((_, i) => combos[(i + round * policies.length) % combos.length]!);
  for (const { mmu, policy, interleave } of order) {
    // The same call at 1 pair × 1 iteration: VM creation, boot and teardown, subtracted from the measured call's CPU time.
    const setup = await cpuOf(mmu, policy, interleave, { pairs: 1, iterations: 1 });
    const { r, cpuMs } = await cpuOf(mmu, policy, interleave, SEED);
    const list = seedRuns.get(key(mmu, policy, interleave)) ?? [];
    list.push({ ...r, cpuMs, setupCpuMs: setup.cpuMs });
    seedRuns.set(key(mmu, policy, interleave), list);
  }
  console.error(`[tdp] seed run: round ${round + 1}/${ROUNDS}, ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

interface SeedRow {
  mmu: Cr0WpMmu; policy: string; interleave: SsddInterleave; r: Cr0WpResult; simRatio: number;
  wallMs: number; walls: number[]; wallRatio: number; wallRatioRange: string;
  /** CPU ms of the ssdd run: the call's less the 1 × 1 call's, per round. */
  cpuMs: number; cpus: number[]; cpuRatio: number; cpuRatioRange: string; setupCpuMs: number;
}
const seedRows: SeedRow[] = [];
for (const { mmu, policy, interleave } of combos) {
  const rs = seedRuns.get(key(mmu, policy, interleave))!;
  const r = rs[0]!;
  const same = rs.every((x) => x.cycles === r.cycles && x.exitsTotal === r.exitsTotal && x.accesses === r.accesses && x.guest.steps === r.guest.steps
    && x.sptes.installed === r.sptes.installed && x.roots.built === r.roots.built);
  if (!same) throw new Error(`bench: seed run ${mmu}/${policy} is not deterministic: cycles ${rs.map((x) => x.cycles).join(", ")}`);
  const base = seedRuns.get(key(mmu, "baseline"))!;
  const cpus = rs.map((x) => Math.max(0, x.cpuMs - x.setupCpuMs));
  const wallRatios = rs.map((x, i) => x.wallMs / base[i]!.wallMs);
  const cpuRatios = rs.map((x, i) => (x.cpuMs - x.setupCpuMs) / (base[i]!.cpuMs - base[i]!.setupCpuMs));
  seedRows.push({
    mmu, policy, interleave, r, simRatio: r.cycles / base[0]!.cycles,
    wallMs: median(rs.map((x) => x.wallMs))!, walls: rs.map((x) => x.wallMs), wallRatio: median(wallRatios)!, wallRatioRange: range(wallRatios, 2),
    cpuMs: median(cpus)!, cpus, cpuRatio: median(cpuRatios)!, cpuRatioRange: range(cpuRatios, 2), setupCpuMs: median(rs.map((x) => x.setupCpuMs))!,
  });
}

console.log(`## 3. The seed-002 run on the host: runCr0Wp, ${SEED.vcpus} vCPUs, ssdd ${SEED.pairs} × ${SEED.iterations}\n`);
printTable(
  ["MMU", "policy", "interleave", "CPU ms", "range", "CPU vs baseline", "(rounds)", "wall ms", "range", "wall vs baseline", "(rounds)", "guest k steps/CPU-s", "guest M acc/CPU-s",
    "sim. cycles", "sim. vs baseline", "same every round", "exits", "EPT viol.", "roots built/freed", "SPTEs installed/zapped", "pages alloc."],
  seedRows.map((s) => [
    s.mmu, s.policy, s.interleave, s.cpuMs.toFixed(0), range(s.cpus), `${s.cpuRatio.toFixed(2)}×`, s.cpuRatioRange, s.wallMs.toFixed(0), range(s.walls), `${s.wallRatio.toFixed(2)}×`, s.wallRatioRange,
    (s.r.guest.steps / s.cpuMs).toFixed(2), (s.r.accesses / s.cpuMs / 1e3).toFixed(2), big(s.r.cycles), `${s.simRatio.toFixed(3)}×`, "yes",
    big(s.r.exitsTotal), big(s.r.eptViolations), `${big(s.r.roots.built)}/${big(s.r.roots.freed)}`, `${big(s.r.sptes.installed)}/${big(s.r.sptes.zapped)}`, big(s.r.pages.allocated),
  ]), 2,
);
console.log(`CPU ms is the process's user + system time over the runCr0Wp call less that of the same call at 1 pair × 1 iteration (VM creation, guest boot and teardown: `
  + `median ${median(seedRows.map((s) => s.setupCpuMs))!.toFixed(0)} ms), so it is the ssdd run's; wall ms is runCr0Wp's own elapsed time of the ssdd run. `
  + `"vs baseline" is the median of the round-by-round ratios to the same MMU's baseline; guest steps and accesses per CPU second use the CPU ms. `
  + "Simulated cycles are the cost model's makespan, asserted identical in every round (with exits, accesses, guest steps, SPTEs installed and roots built).\n");

// ---- record ----------------------------------------------------------------------------------

const loadAtEnd = loadavg();
console.log(`- load average at end ${loadAtEnd}; bench ran ${((performance.now() - tStart) / 1000).toFixed(0)} s`);
const out = path.join(ROOT, "bench/.out/tdp.json");
writeFileSync(out, JSON.stringify({
  info, args, rounds: ROUNDS, faultsPerSample: FAULTS, zapBytes: Number(ZAP_BYTES), seed: SEED, loadAtStart, loadAtEnd,
  faults: faultRows.map((r) => ({ ...r, perRound: faultRuns.get(r.name) })),
  zap: zapRows.map((z) => ({ ...z, samples: zapRuns.get(z.name) })),
  seedRun: seedRows.map(({ r, ...s }) => ({ ...s, counters: r, cpuMsPerRound: seedRuns.get(key(s.mmu, s.policy))!.map((x) => x.cpuMs) })),
}, null, 2));
for (const g of e2eGuests) { g.vm.vcpus[0]!.destroy(); g.vm.machine.dispose(); }
mmuPool.machine.dispose();
zapPool.machine.dispose();
console.log(`(results also in ${path.relative(ROOT, out)})`);
