// `vmmu run kpti`: the seed-reproduction run. One table — per policy,
// simulated time, ratio to baseline, exits, syncs, flushes, shadow pages — beside
// the seed's kernel-compile times, and Liran Alon's trade-off (shadow pages
// against flushes, alon2018 against shahid2018). `--json` prints one object
// keyed by policy name instead, with the run's settings, seed and code version
// under the reserved key `_meta`.

import { runKpti, runKptiSensitivity, KPTI_MEMORY_BYTES, KPTI_SENSITIVITY_FACTORS, SEED_RESULTS, type KptiPolicyResult, type KptiSensitivityRow } from "../experiments/run-kpti.js";
import { LINUX_WORK_COSTS, type LinuxWorkCosts } from "../guest/linux.js";
import { POLICIES } from "../kvm/policy.js";
import { DEFAULT_COSTS, MAX_COST, withOverrides, type CostModel } from "../kvm/cost-model.js";
import { LackeyParser, collectTrace, type AccessTrace } from "../guest/lackey.js";
import { closeSync, openSync, readSync } from "node:fs";
import { codeVersion, type CodeVersion } from "./version.js";
import { runCr0WpCli } from "./run-cr0wp.js";
import { lockShare } from "../experiments/run-cr0wp.js";
import { UsageError, costFlag, intFlag, progress } from "./args.js";

/** Defaults of `vmmu run kpti` (also the sizes `vmmu report` runs at). */
export const RUN_DEFAULTS = {
  vcpus: 4, policies: ["baseline", "shahid2018", "lai2021", "alon2018"], jobs: 24, accesses: 100_000, seed: 1,
} as const;

const USAGE = `usage: vmmu run kpti [--vcpus N] [--policy NAME[,NAME…]|all] [--jobs N] [--accesses N]
                    [--seed N] [--trace LACKEY_FILE] [--user-time measured|simulated] [--max-shadow-pages N]
                    [--pcid-flush lazy|eager]
                    [--cost name=value …] [--no-sensitivity] [--json]

  Runs a KPTI guest compiling a kernel (make -jN of short-lived compiler
  processes) on the shadow MMU under each policy. Policies:
${Object.values(POLICIES).map((p) => `    ${p.name.padEnd(16)} ${p.title}`).join("\n")}
  Costs (cycles; defaults from src/kvm/cost-model.ts):
${Object.entries(DEFAULT_COSTS).map(([k, v]) => `    ${k}=${v}`).join("  ")}
  Guest work costs (--cost guest.NAME=value; defaults from src/guest/linux.ts):
${Object.entries(LINUX_WORK_COSTS).map(([k, v]) => `    guest.${k}=${v}`).join("  ")}
  --user-time: the user time a process runs between two kernel events (a
  syscall or a #PF): "measured" (default) charges what a real build runs
  (bench/data/kernel-compile-lib.json: 27 µs for cc1, 2.4 µs for the rest)
  besides the simulated accesses; "simulated" charges the simulated accesses
  only.
  --pcid-flush: how the guest flushes a user PCID: "lazy" (default, Linux's
  deferred flush at the next return to user) or "eager" (INVPCID type 1 at
  once, then NOFLUSH returns; only under policies that expose INVPCID).
  --max-shadow-pages N: KVM's n_max_mmu_pages; the oldest unused shadow pages
  are zapped when the pool runs low (default: a 64 MiB pool, no pressure).
  After the table, a sensitivity table: the speed-up baseline → shahid2018
  with each cost the shadow MMU and the guest charge halved and doubled
  (two more runs per row; --no-sensitivity skips it).
  Defaults: --vcpus ${RUN_DEFAULTS.vcpus} --policy ${RUN_DEFAULTS.policies.join(",")} --jobs ${RUN_DEFAULTS.jobs}
  --accesses ${RUN_DEFAULTS.accesses} (per compiler process) --seed ${RUN_DEFAULTS.seed}.
  --json: one object keyed by policy name, plus "_meta": { settings (every
  parameter, costs included), seed, core: { version, wasm, commit? }, wallMs }
  and "_sensitivity": [{ cost, factor, value, speedup }, …].
  Exit status: 0, 2 on a usage or input error (a bad flag, an unreadable trace).

  The other workload: vmmu run cr0wp (seed 002, ssdd in a CR0.WP-toggling guest
  on the legacy, TDP and shadow MMUs); vmmu run cr0wp --help.
`;

interface RunArgs {
  vcpus: number; policies: string[]; jobs: number; accesses: number; seed: number;
  trace?: string; pcidFlush: "lazy" | "eager"; maxShadowPages?: number; userTime: "measured" | "simulated"; costs: Record<string, number>; work: Record<string, number>; json: boolean; sensitivity: boolean;
}

function parse(args: string[]): RunArgs {
  const a: RunArgs = { ...RUN_DEFAULTS, policies: [...RUN_DEFAULTS.policies], pcidFlush: "lazy", userTime: "measured", costs: {}, work: {}, json: false, sensitivity: true };
  const num = intFlag;
  for (let i = 0; i < args.length; i++) {
    const f = args[i]!;
    const [flag, inline] = f.includes("=") && f.startsWith("--") && !f.startsWith("--cost=") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, undefined];
    const val = () => inline ?? args[++i];
    switch (flag) {
      case "--vcpus": a.vcpus = num(flag, val(), 1, 64); break;
      case "--jobs": a.jobs = num(flag, val(), 1, 100_000); break;
      case "--accesses": a.accesses = num(flag, val(), 1, 1e9); break;
      case "--seed": a.seed = num(flag, val(), 0, 2 ** 32 - 1); break;
      case "--trace": a.trace = val(); if (!a.trace) throw new UsageError("--trace needs a file"); break;
      case "--json": a.json = true; break;
      case "--no-sensitivity": a.sensitivity = false; break;
      case "--pcid-flush": {
        const v = val();
        if (v !== "lazy" && v !== "eager") throw new UsageError(`--pcid-flush needs lazy or eager${v === undefined ? "" : `, got '${v}'`}`);
        a.pcidFlush = v;
        break;
      }
      case "--max-shadow-pages": a.maxShadowPages = num(flag, val(), 64, 1 << 20); break;
      case "--user-time": {
        const v = val();
        if (v !== "measured" && v !== "simulated") throw new UsageError(`--user-time needs measured or simulated${v === undefined ? "" : `, got '${v}'`}`);
        a.userTime = v;
        break;
      }
      case "--policy": {
        const v = val();
        if (!v) throw new UsageError("--policy needs a name");
        a.policies = v === "all" ? Object.keys(POLICIES) : v.split(",").map((s) => s.trim()).filter(Boolean);
        if (a.policies.length === 0) throw new UsageError("--policy needs a name");
        for (const p of a.policies) if (!Object.hasOwn(POLICIES, p)) throw new UsageError(`unknown policy '${p}' (one of: ${Object.keys(POLICIES).join(", ")})`);
        break;
      }
      case "--cost": case "--cost=": {
        costFlag(f.startsWith("--cost=") ? f.slice(7) : args[++i], a.costs, a.work);
        break;
      }
      default: throw new UsageError(`unknown option '${f}'`);
    }
  }
  return a;
}

/**
 * The first 5 M accesses of lackey trace `path`; a UsageError if the file
 * cannot be read or holds no I/L/S/M record (empty, or not a lackey trace).
 */
function readTrace(path: string): AccessTrace {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new UsageError(`--trace ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const p = new LackeyParser();
  const chunks = [];
  try {
    const block = new Uint8Array(1 << 20);
    let total = 0;
    for (let got; total < 5_000_000 && (got = readSync(fd, block, 0, block.length, null)) > 0;) {
      for (const c of p.push(block.subarray(0, got))) { chunks.push(c); total += c.length; }
    }
    chunks.push(...p.end());
  } catch (e) {
    throw new UsageError(`--trace ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  } finally {
    closeSync(fd);
  }
  const trace = collectTrace(chunks, 5_000_000);
  if (trace.length === 0) {
    const c = p.counts;
    throw new UsageError(`--trace ${path} is not a lackey trace: no I/L/S/M records with a user address in ${c.lines} line${c.lines === 1 ? "" : "s"}` +
      (c.dropped ? ` (${c.dropped} above 2^47 dropped)` : "") + " (valgrind --tool=lackey --trace-mem=yes writes one)");
  }
  return trace;
}

const fmt = (n: number) => n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e4 ? `${(n / 1e3).toFixed(0)} k` : String(n);

/** One line per column of formatKpti's table: what its abbreviation counts. */
export const KPTI_LEGEND: readonly (readonly [string, string])[] = [
  ["sim. cycles", "simulated time: cycles of the slowest vCPU under the cost model (src/kvm/cost-model.ts)"],
  ["vs baseline", "that time divided by the baseline policy's (below 1: faster)"],
  ["exits", "VM exits, every reason"],
  ["syncs", "unsync shadow pages resynced from their guest page table (kvm_sync_page)"],
  ["flushes L/R/addr", "hardware TLB flushes: Local context, Remote (all vCPUs, an IPI each), single address"],
  ["SP peak", "shadow pages live at the peak"],
  ["roots built/reused", "shadow roots built on a CR3 load / found in the root cache or hash"],
  ["guest #PF", "page faults injected into the guest (its own demand paging)"],
  ["lock wait", "share of the vCPUs' simulated time spent spinning on mmu_lock (src/kvm/sim-lock.ts)"],
];

/** KPTI_LEGEND as text lines. */
export function formatKptiLegend(): string[] {
  const w = Math.max(...KPTI_LEGEND.map(([k]) => k.length));
  return ["columns:", ...KPTI_LEGEND.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`)];
}

/** Everything a `run kpti` result depends on, as `--json` and `vmmu report` record it. */
export interface KptiSettings {
  workload: "kpti";
  vcpus: number;
  policies: string[];
  jobs: number;
  /** User accesses per compiler process. */
  accesses: number;
  seed: number;
  memoryBytes: number;
  /** The lackey trace replayed, if any. */
  trace: string | null;
  /** The guest's user-PCID flush. */
  pcidFlush: "lazy" | "eager";
  /** KVM's n_max_mmu_pages, or null for the default pool. */
  maxShadowPages: number | null;
  /** User time between kernel events: a real build's, or the simulated accesses' only. */
  userTime: "measured" | "simulated";
  costs: CostModel;
  /** Guest work costs (LINUX_WORK_COSTS with the overrides). */
  work: LinuxWorkCosts;
}

/** The `_meta` key of `run kpti --json`: never a policy name (policy names do not start with `_`). */
export interface KptiMeta {
  settings: KptiSettings;
  seed: number;
  core: CodeVersion;
  /** Host wall time of all the runs, ms. */
  wallMs: number;
}

/** The report as lines of text. */
export function formatKpti(vcpus: number, results: Record<string, KptiPolicyResult>): string[] {
  const rows = Object.values(results);
  const head = ["policy", "sim. cycles", "vs baseline", "exits", "syncs", "flushes L/R/addr", "SP peak", "roots built/reused", "guest #PF", "lock wait"];
  const body = rows.map((r) => [
    r.policy, fmt(r.cycles), r.ratioToBaseline !== undefined ? `${r.ratioToBaseline.toFixed(3)}×` : "–", fmt(r.exitsTotal),
    fmt(r.syncs), `${fmt(r.flushes.local)}/${fmt(r.flushes.remote)}/${fmt(r.flushes.address)}`, String(r.shadowPages.peak),
    `${fmt(r.roots.built)}/${fmt(r.roots.reused)}`, fmt(r.guestFaults),
    lockShare(r),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  const out = [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)];
  const seed = SEED_RESULTS[vcpus as 1 | 4];
  const base = results.baseline, shahid = results.shahid2018;
  out.push("");
  if (seed) {
    const ours = base && shahid ? `${(base.cycles / shahid.cycles).toFixed(2)}× (baseline → shahid2018, simulated)` : "run baseline and shahid2018 to compare";
    out.push(`seed (Junaid Shahid, ${vcpus} vCPU${vcpus > 1 ? "s" : ""} kernel compile): ${seed.baseline} → ${seed.shahid2018} = ${seed.speedup.toFixed(2)}× faster; here: ${ours}`);
  } else {
    out.push("seed figures exist for 1 and 4 vCPUs (25m5s → 14m50s, 16m12s → 4m44s)");
  }
  const alon = results.alon2018;
  if (alon && shahid) {
    out.push(`Liran Alon's trade-off: alon2018 used ${alon.shadowPages.peak} shadow pages at peak (${alon.shadowPages.allocated} allocated) `
      + `vs shahid2018's ${shahid.shadowPages.peak} (${shahid.shadowPages.allocated}); flushes local+remote ${alon.flushes.local + alon.flushes.remote} vs ${shahid.flushes.local + shahid.flushes.remote}; `
      + `simulated time ${(alon.cycles / shahid.cycles).toFixed(3)}× shahid2018's.`);
  }
  const wall = rows.reduce((s, r) => s + r.wallMs, 0);
  out.push(`host: ${(wall / 1000).toFixed(1)} s wall for ${rows.length} run${rows.length > 1 ? "s" : ""}; ${fmt(rows.reduce((s, r) => s + r.accesses, 0))} guest accesses through the hardware model.`);
  return out;
}

/** The sensitivity table as lines: per cost, the speed-up baseline → shahid2018 with it halved and doubled. */
export function formatKptiSensitivity(rows: KptiSensitivityRow[]): string[] {
  const ref = rows.find((r) => r.cost === "defaults");
  const costs = [...new Set(rows.filter((r) => r.cost !== "defaults").map((r) => r.cost))];
  const head = ["cost moved", "default", ...KPTI_SENSITIVITY_FACTORS.map((f) => `×${f}`)];
  const body = costs.map((c) => {
    const of = (f: number) => rows.find((r) => r.cost === c && r.factor === f);
    const half = of(KPTI_SENSITIVITY_FACTORS[0]);
    const def = half ? half.value / half.factor : 0;
    return [c, String(def), ...KPTI_SENSITIVITY_FACTORS.map((f) => { const r = of(f); return r ? `${r.speedup.toFixed(2)}×` : "–"; })];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [
    `sensitivity: the speed-up baseline → shahid2018 (${ref ? `${ref.speedup.toFixed(2)}×` : "–"} at the costs above) with one cost moved:`,
    line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line),
  ];
}

export async function runRun(args: string[]): Promise<number> {
  const [what, ...rest] = args;
  if (what === "-h" || what === "--help" || (what === "kpti" && rest.some((f) => f === "-h" || f === "--help"))) { process.stdout.write(USAGE); return 0; }
  if (what === undefined) { process.stderr.write(`vmmu: run needs a workload (kpti, cr0wp)\n${USAGE}`); return 2; }
  if (what === "cr0wp") return runCr0WpCli(rest);
  if (what !== "kpti") { process.stderr.write(`vmmu: unknown run '${what}' (one of: kpti, cr0wp)\n`); return 2; }
  let a: RunArgs;
  try {
    a = parse(rest);
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`vmmu: ${e.message}\n`); return 2; }
    throw e;
  }
  let trace: AccessTrace | undefined;
  try {
    trace = a.trace ? readTrace(a.trace) : undefined;
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`vmmu: ${e.message}\n`); return 2; }
    throw e;
  }
  const costs = withOverrides(DEFAULT_COSTS, a.costs);
  const t0 = performance.now();
  const work = a.work as Partial<LinuxWorkCosts>;
  const common = { vcpus: a.vcpus, jobs: a.jobs, accessesPerProcess: a.accesses, seed: a.seed, trace, userTime: a.userTime, pcidFlush: a.pcidFlush, costs, work, ...(a.maxShadowPages !== undefined ? { maxShadowPages: a.maxShadowPages } : {}) };
  const results = await runKpti({ ...common, policies: a.policies, onProgress: progress(a.policies.length, a.policies) });
  let sensitivity: KptiSensitivityRow[] | undefined;
  if (a.sensitivity) {
    const bar = progress(1, ["sensitivity"]);
    sensitivity = await runKptiSensitivity(common, bar ? (done, total) => bar(0, done / total) : undefined);
    if (bar) process.stderr.write("\r" + " ".repeat(60) + "\r");
  }
  if (a.json) {
    const settings: KptiSettings = {
      workload: "kpti", vcpus: a.vcpus, policies: a.policies, jobs: a.jobs, accesses: a.accesses, seed: a.seed,
      memoryBytes: KPTI_MEMORY_BYTES, trace: a.trace ?? null, pcidFlush: a.pcidFlush, maxShadowPages: a.maxShadowPages ?? null, userTime: a.userTime, costs, work: { ...LINUX_WORK_COSTS, ...work },
    };
    const _meta: KptiMeta = { settings, seed: a.seed, core: codeVersion(), wallMs: performance.now() - t0 };
    process.stdout.write(JSON.stringify({ ...results, _meta, ...(sensitivity ? { _sensitivity: sensitivity } : {}) }, null, 2) + "\n");
  } else {
    const lines = [...formatKpti(a.vcpus, results), ...formatKptiLegend()];
    if (sensitivity) lines.push("", ...formatKptiSensitivity(sensitivity));
    process.stdout.write(lines.join("\n") + "\n");
  }
  return 0;
}
