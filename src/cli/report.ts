// `vmmu report [--out DIR] [--quick]`: runs every seed reproduction that
// exists — seed 001, the KPTI kernel compile on the shadow MMU
// (src/experiments/run-kpti.ts) at 1 and 4 vCPUs, the counts the seed reports,
// under every policy, at the sizes `vmmu run kpti` defaults to; seed 002, ssdd's
// CR0.WP toggles (src/experiments/run-cr0wp.ts) on the legacy, TDP and shadow
// MMUs under every CR0.WP policy, at the sizes `vmmu run cr0wp` defaults to —
// and writes DIR/index.html (src/report/kpti-html.ts, src/report/cr0wp-html.ts):
// the tables beside the seeds' figures, SVG plots, settings, cost model, code
// version and host. Progress on stderr.

import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as os from "node:os";
import { runKpti, KPTI_MEMORY_BYTES, type KptiPolicyResult } from "../experiments/run-kpti.js";
import { runCr0Wp, CR0WP_MMUS, CR0WP_MEMORY_BYTES } from "../experiments/run-cr0wp.js";
import { CR0WP_POLICIES } from "../kvm/cr0wp-policy.js";
import { KERNEXEC_DEFAULTS } from "../guest/ssdd.js";
import { POLICIES } from "../kvm/policy.js";
import { DEFAULT_COSTS } from "../kvm/cost-model.js";
import { kptiReportHtml, type KptiReportData, type KptiReportRun } from "../report/kpti-html.js";
import type { Cr0WpReportData } from "../report/cr0wp-html.js";
import { KPTI_LEGEND, RUN_DEFAULTS } from "./run.js";
import { CR0WP_DEFAULTS, CR0WP_LEGEND, SIM_HZ, type Cr0WpSettings } from "./run-cr0wp.js";
import { codeVersion } from "./version.js";

/** Sizes of `--quick`: run kpti's jobs and accesses, run cr0wp's ssdd pairs and iterations. */
export const QUICK = { jobs: 4, accesses: 5000, pairs: 10, iterations: 200 } as const;

/** The vCPU counts the seed reports. */
export const REPORT_VCPUS = [1, 4] as const;

const USAGE = `usage: vmmu report [--out DIR] [--quick]

  Runs the seed reproductions — seed 001, the KPTI kernel compile on the shadow
  MMU (vmmu run kpti) at 1 and 4 vCPUs, every policy, at run kpti's default
  sizes; seed 002, ssdd's CR0.WP toggles (vmmu run cr0wp) on the legacy, TDP
  and shadow MMUs, every CR0.WP policy, at run cr0wp's defaults (${CR0WP_DEFAULTS.pairs} pairs ×
  ${CR0WP_DEFAULTS.iterations} iterations, ${CR0WP_DEFAULTS.vcpus} vCPUs); about 70 s on two cores — and writes
  DIR/index.html (default DIR: vmmu-report): one self-contained page with
  every table beside the seeds' figures, SVG plots of the ratio to baseline
  per policy and over vCPUs (ours and the seed's) and of the CR0.WP speed-up
  per MMU (ours and the seed's v5.10 figure), the settings, the cost model,
  the code version (package, git commit, wasm core hash) and the host.
  Progress goes to stderr.
  --quick: small runs (${QUICK.jobs} jobs, ${QUICK.accesses} accesses per process; ssdd ${QUICK.pairs} × ${QUICK.iterations}), for a look at the page.
  Exit status: 0; 1 if a run failed; 2 on a usage error or an unwritable DIR.
`;

/** Options of one report. */
export interface ReportOptions {
  /** Directory for index.html (created). */
  out: string;
  quick?: boolean;
  /**
   * Called as each run ends with a progress line (no newline), the runs done
   * and the runs in all (kpti and cr0wp together), and whether it ends a group
   * (a vCPU count of run kpti, an MMU of run cr0wp).
   */
  onProgress?: (line: string, done: number, total: number, groupEnd: boolean) => void;
}

/**
 * Runs every kpti policy at each of REPORT_VCPUS, then every CR0.WP policy on
 * each of CR0WP_MMUS, and writes `out`/index.html; resolves to its path and the
 * data shown.
 */
export async function writeReport(o: ReportOptions): Promise<{ path: string; data: KptiReportData }> {
  const quick = o.quick ?? false;
  const jobs = quick ? QUICK.jobs : RUN_DEFAULTS.jobs, accesses = quick ? QUICK.accesses : RUN_DEFAULTS.accesses, seed = RUN_DEFAULTS.seed;
  const policies = Object.keys(POLICIES);
  const cr0wpSettings: Cr0WpSettings = {
    workload: "cr0wp", mmus: [...CR0WP_MMUS], policies: Object.keys(CR0WP_POLICIES), vcpus: CR0WP_DEFAULTS.vcpus,
    pairs: quick ? QUICK.pairs : CR0WP_DEFAULTS.pairs, iterations: quick ? QUICK.iterations : CR0WP_DEFAULTS.iterations, seed: CR0WP_DEFAULTS.seed,
    kernexec: { ...KERNEXEC_DEFAULTS }, hostLevel: CR0WP_DEFAULTS.hostLevel, nxHugePages: CR0WP_DEFAULTS.nxHugePages, interleave: CR0WP_DEFAULTS.interleave, memoryBytes: CR0WP_MEMORY_BYTES, costs: { ...DEFAULT_COSTS },
  };
  const cr0wpNames = cr0wpSettings.mmus.flatMap((m) => cr0wpSettings.policies.map((p) => [m, p] as const));
  const dir = resolve(o.out);
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const runs: KptiReportRun[] = [];
  const kptiTotal = REPORT_VCPUS.length * policies.length, total = kptiTotal + cr0wpNames.length;
  for (const [k, vcpus] of REPORT_VCPUS.entries()) {
    const r0 = performance.now();
    const results: Record<string, KptiPolicyResult> = await runKpti({
      vcpus, policies, jobs, accessesPerProcess: accesses, seed, memoryBytes: KPTI_MEMORY_BYTES, costs: DEFAULT_COSTS,
      onProgress: o.onProgress && ((p, f) => {
        if (f < 1) return;
        const done = k * policies.length + p + 1;
        o.onProgress!(`vmmu report: ${done}/${total} ${vcpus} vCPU${vcpus > 1 ? "s" : ""} ${policies[p]} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
          done, total, p === policies.length - 1);
      }),
    });
    runs.push({ vcpus, results, wallMs: performance.now() - r0 });
  }
  const c0 = performance.now();
  const cs = cr0wpSettings;
  const cr0wpResults = await runCr0Wp({
    mmus: cs.mmus, policies: cs.policies, vcpus: cs.vcpus, pairs: cs.pairs, iterations: cs.iterations, seed: cs.seed,
    kernexec: cs.kernexec, hostLevel: CR0WP_DEFAULTS.hostLevel, nxHugePages: cs.nxHugePages, interleave: cs.interleave, memoryBytes: cs.memoryBytes, costs: cs.costs,
    onProgress: o.onProgress && ((r, f) => {
      if (f < 1) return;
      const done = kptiTotal + r + 1, [mmu, policy] = cr0wpNames[r]!;
      o.onProgress!(`vmmu report: ${done}/${total} cr0wp ${mmu} ${policy} (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
        done, total, (r + 1) % cs.policies.length === 0);
    }),
  });
  const cr0wp: Cr0WpReportData = { settings: cs, results: cr0wpResults, wallMs: performance.now() - c0, legend: CR0WP_LEGEND, simHz: SIM_HZ };
  const cpus = os.cpus();
  const data: KptiReportData = {
    generated: new Date().toISOString(),
    settings: { vcpus: [...REPORT_VCPUS], policies, jobs, accesses, seed, memoryBytes: KPTI_MEMORY_BYTES, costs: { ...DEFAULT_COSTS }, quick },
    core: codeVersion(),
    host: {
      node: process.version, platform: os.platform(), arch: os.arch(), release: os.release(),
      cpu: cpus[0]?.model.trim() ?? "unknown", cpus: cpus.length, memoryBytes: os.totalmem(),
    },
    runs,
    wallMs: performance.now() - t0,
    legend: [...KPTI_LEGEND, ["host s", "host wall time of the policy's run, seconds (not simulated)"]],
    cr0wp,
  };
  const path = join(dir, "index.html");
  writeFileSync(path, kptiReportHtml(data));
  return { path, data };
}

class UsageError extends Error {}

function parse(args: string[]): { out: string; quick: boolean } {
  let out = "vmmu-report", quick = false;
  for (let i = 0; i < args.length; i++) {
    const f = args[i]!;
    const eq = f.startsWith("--") ? f.indexOf("=") : -1;
    const flag = eq > 0 ? f.slice(0, eq) : f;
    switch (flag) {
      case "--out": {
        const v = eq > 0 ? f.slice(eq + 1) : args[++i];
        if (v === undefined || v === "") throw new UsageError("--out needs a directory");
        out = v;
        break;
      }
      case "--quick": if (eq > 0) throw new UsageError("--quick takes no value"); quick = true; break;
      default: throw new UsageError(`${f.startsWith("-") ? "unknown option" : "unexpected argument"} '${f}' (vmmu report --help)`);
    }
  }
  return { out, quick };
}

/** Runs `vmmu report`: 0; 2 on a usage error or when DIR cannot be written (one vmmu: line). Off a terminal, one progress line per group of runs. */
export async function runReport(args: string[]): Promise<number> {
  if (args.some((a) => a === "-h" || a === "--help")) { process.stdout.write(USAGE); return 0; }
  let a: { out: string; quick: boolean };
  try {
    a = parse(args);
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`vmmu: ${e.message}\n`); return 2; }
    throw e;
  }
  try {
    mkdirSync(a.out, { recursive: true });
  } catch (e) {
    process.stderr.write(`vmmu: --out ${a.out}: cannot create it (${(e as NodeJS.ErrnoException).code ?? String(e)})\n`);
    return 2;
  }
  const tty = process.stderr.isTTY;
  let width = 0;
  const { path, data } = await writeReport({
    out: a.out, quick: a.quick,
    onProgress: (line, _done, _total, groupEnd) => {
      if (tty) { process.stderr.write(`\r${line.padEnd(width)}`); width = line.length; } else if (groupEnd) process.stderr.write(line + "\n");
    },
  });
  if (tty) process.stderr.write(`\r${" ".repeat(width)}\r`);
  const cr0wpRuns = Object.values(data.cr0wp?.results ?? {}).reduce((n, m) => n + Object.keys(m).length, 0);
  process.stderr.write(`vmmu report: wrote ${path} (${data.runs.length * data.settings.policies.length} kpti + ${cr0wpRuns} cr0wp runs, ${(data.wallMs / 1000).toFixed(1)} s)\n`);
  return 0;
}
