// `vmmu run cr0wp`: the seed-002 reproduction. One table per MMU — per CR0.WP
// policy, simulated time, ratio to baseline, exits by reason, roots built /
// freed / reused, EPT violations, SPTEs installed and zapped, TLB flushes —
// beside the seed's table (Mathias Krause's `ssdd 10 50000`, seconds).
// `--json` prints one object `{ "<mmu>": { "<policy>": { "cycles": …, … } } }`
// plus the reserved key `_meta` (settings, costs, code version).

import { runCr0Wp, runCr0WpSensitivity, lockShare, CR0WP_VCPUS, CR0WP_NX_HUGE_PAGES, cr0WpVariants, type Cr0WpSensitivityRow, CR0WP_MMUS, CR0WP_SEED, CR0WP_MEMORY_BYTES, type Cr0WpMmu, type Cr0WpResult } from "../experiments/run-cr0wp.js";
import { CR0WP_POLICIES } from "../kvm/cr0wp-policy.js";
import { DEFAULT_COSTS, withOverrides, type CostModel } from "../kvm/cost-model.js";
import { KERNEXEC_DEFAULTS, SSDD_INTERLEAVES, type KernexecOptions, type SsddInterleave } from "../guest/ssdd.js";
import { UsageError, costFlag, intFlag, progress } from "./args.js";
import { codeVersion, type CodeVersion } from "./version.js";

/** Defaults of `vmmu run cr0wp`. */
export const CR0WP_DEFAULTS = {
  mmus: ["legacy", "tdp", "shadow"] as Cr0WpMmu[], policies: ["baseline", "krause2023"], vcpus: CR0WP_VCPUS, pairs: 10, iterations: 2000, seed: 1,
  hostLevel: 2 as 1 | 2 | 3, nxHugePages: CR0WP_NX_HUGE_PAGES as boolean, interleave: "fine" as SsddInterleave,
} as const;

/** Simulated clock for the "seconds" column: an assumption (a 3 GHz host). */
export const SIM_HZ = 3e9;

const USAGE = `usage: vmmu run cr0wp [--mmu legacy|tdp|shadow[,…]|all] [--policy NAME[,NAME…]|all]
                     [--pairs N] [--iterations N] [--vcpus N] [--seed N]
                     [--kernexec off|SYSCALL,EXCEPTION,SWITCH] [--host-level 1|2|3]
                     [--nx-huge-pages on|off] [--interleave fine|block]
                     [--cost name=value …] [--sensitivity] [--json]

  Runs rt-tests' ssdd (N tracer/tracee pairs, M PTRACE_SINGLESTEPs each) in a
  grsecurity guest whose KERNEXEC toggles CR0.WP around writes to read-only
  kernel data, on each MMU under each CR0.WP policy (seed 002). MMUs:
    legacy   EPT on the legacy direct MMU (hashed direct shadow pages)
    tdp      EPT on the TDP MMU (roots by role, refcounted)
    shadow   shadow paging (Junaid Shahid's 2018 series; no CR0.WP policy reaches it)
  Policies:
${Object.values(CR0WP_POLICIES).map((p) => `    ${p.name.padEnd(16)} ${p.title}`).join("\n")}
  --kernexec: pax_open_kernel/pax_close_kernel pairs per syscall, per exception
  and per context switch (default ${KERNEXEC_DEFAULTS.perSyscall},${KERNEXEC_DEFAULTS.perException},${KERNEXEC_DEFAULTS.perSwitch}: an assumption, see src/guest/ssdd.ts), or off (a stock kernel).
  --host-level: the largest page the host backs guest RAM with (2 = THP, default).
  --nx-huge-pages: KVM's nx_huge_pages (the iTLB multihit mitigation, on by default
  on affected Intel hosts) in the direct MMUs: huge EPT leaves non-executable,
  instruction fetches mapped with 4 KiB pages (default ${CR0WP_DEFAULTS.nxHugePages ? "on" : "off"}: an Intel host, see
  src/experiments/run-cr0wp.ts; shadow paging unaffected). Bare --nx-huge-pages is on.
  --interleave: fine (default) runs the vCPUs' MMU events (CR0 writes, EPT violations,
  lock requests) in simulated-time order, so CR0.WP windows of two vCPUs overlap
  when their timing says so; block runs a vCPU until its task blocks (windows never
  overlap; the coarser model).
  Defaults: --mmu ${CR0WP_DEFAULTS.mmus.join(",")} --policy ${CR0WP_DEFAULTS.policies.join(",")} --pairs ${CR0WP_DEFAULTS.pairs}
  --iterations ${CR0WP_DEFAULTS.iterations} (the seed ran 50000) --vcpus ${CR0WP_DEFAULTS.vcpus} --seed ${CR0WP_DEFAULTS.seed}.
  Costs (cycles; defaults from src/kvm/cost-model.ts):
${Object.entries(DEFAULT_COSTS).map(([k, v]) => `    ${k}=${v}`).join("  ")}
  --sensitivity: instead, runs baseline and krause2023 with each assumption moved
  on its own (KERNEXEC counts, host page size, NX huge pages, vCPUs, interleaving, exit and fault costs) and
  prints the speed-up per MMU for each.
  --json: { "<mmu>": { "<policy>": { cycles, ratioToBaseline, exits, roots, eptViolations, sptes, flushes, … } },
  "_meta": { settings, core, wallMs } }.
  Exit status: 0, 2 on a usage error.
`;

interface Cr0WpArgs {
  mmus: Cr0WpMmu[]; policies: string[]; vcpus: number; pairs: number; iterations: number; seed: number;
  kernexec: KernexecOptions | false; hostLevel: 1 | 2 | 3; nxHugePages: boolean; interleave: SsddInterleave; costs: Record<string, number>; json: boolean; sensitivity: boolean;
}

function list<T extends string>(flag: string, v: string | undefined, all: readonly T[]): T[] {
  if (!v) throw new UsageError(`${flag} needs a name`);
  const names = v === "all" ? [...all] : v.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new UsageError(`${flag} needs a name`);
  for (const n of names) if (!all.includes(n as T)) throw new UsageError(`unknown ${flag.slice(2)} '${n}' (one of: ${all.join(", ")})`);
  return names as T[];
}

function parse(args: string[]): Cr0WpArgs {
  const a: Cr0WpArgs = {
    mmus: [...CR0WP_DEFAULTS.mmus], policies: [...CR0WP_DEFAULTS.policies], vcpus: CR0WP_DEFAULTS.vcpus, pairs: CR0WP_DEFAULTS.pairs,
    iterations: CR0WP_DEFAULTS.iterations, seed: CR0WP_DEFAULTS.seed, kernexec: { ...KERNEXEC_DEFAULTS }, hostLevel: CR0WP_DEFAULTS.hostLevel,
    nxHugePages: CR0WP_DEFAULTS.nxHugePages, interleave: CR0WP_DEFAULTS.interleave, costs: {}, json: false, sensitivity: false,
  };
  for (let i = 0; i < args.length; i++) {
    const f = args[i]!;
    const [flag, inline] = f.startsWith("--") && f.includes("=") && !f.startsWith("--cost") ? [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] : [f, undefined];
    const val = () => inline ?? args[++i];
    switch (flag) {
      case "--mmu": a.mmus = list("--mmu", val(), CR0WP_MMUS); break;
      case "--policy": a.policies = list("--policy", val(), Object.keys(CR0WP_POLICIES)); break;
      case "--vcpus": a.vcpus = intFlag(flag, val(), 1, 16); break;
      case "--pairs": a.pairs = intFlag(flag, val(), 1, 4096); break;
      case "--iterations": a.iterations = intFlag(flag, val(), 1, 10_000_000); break;
      case "--seed": a.seed = intFlag(flag, val(), 0, 2 ** 32 - 1); break;
      case "--host-level": a.hostLevel = intFlag(flag, val(), 1, 3) as 1 | 2 | 3; break;
      case "--kernexec": {
        const v = val();
        if (v === "off") { a.kernexec = false; break; }
        const parts = (v ?? "").split(",");
        if (parts.length !== 3) throw new UsageError(`--kernexec needs off or SYSCALL,EXCEPTION,SWITCH counts${v === undefined ? "" : `, got '${v}'`}`);
        const [perSyscall, perException, perSwitch] = parts.map((p) => intFlag("--kernexec", p, 0, 64));
        a.kernexec = { perSyscall: perSyscall!, perException: perException!, perSwitch: perSwitch! };
        break;
      }
      case "--nx-huge-pages": {
        const v = inline ?? (args[i + 1] === "on" || args[i + 1] === "off" ? args[++i] : "on");
        if (v !== "on" && v !== "off") throw new UsageError(`--nx-huge-pages takes on or off, got '${v}'`);
        a.nxHugePages = v === "on";
        break;
      }
      case "--interleave": {
        const v = val();
        if (!SSDD_INTERLEAVES.includes(v as SsddInterleave)) throw new UsageError(`--interleave takes ${SSDD_INTERLEAVES.join(" or ")}${v === undefined ? "" : `, got '${v}'`}`);
        a.interleave = v as SsddInterleave;
        break;
      }
      case "--json": a.json = true; break;
      case "--sensitivity": a.sensitivity = true; break;
      case "--cost": case "--cost=": costFlag(f.startsWith("--cost=") ? f.slice(7) : args[++i], a.costs); break;
      default: throw new UsageError(`unknown option '${f}'`);
    }
  }
  return a;
}

const fmt = (n: number) => n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e4 ? `${(n / 1e3).toFixed(0)} k` : String(Math.round(n));

/** One line per column of formatCr0Wp's tables. */
export const CR0WP_LEGEND: readonly (readonly [string, string])[] = [
  ["sim. cycles", "simulated time: cycles of the slowest vCPU under the cost model (src/kvm/cost-model.ts)"],
  ["sim. s", `those cycles at ${SIM_HZ / 1e9} GHz, scaled to the seed's 10 × 50000 steps (assumptions: a 3 GHz host, time linear in steps)`],
  ["vs baseline", "that time divided by this MMU's baseline policy (below 1: faster)"],
  ["exits cr0/ept/other", "VM exits: MOV CR0, EPT violations (shadow: #PF), everything else"],
  ["roots b/f/r", "roots built / freed (direct MMUs: the tree zapped and freed; shadow: a root reference dropped, the page stays hashed) / reused (found by role)"],
  ["SPTEs inst/zap", "SPTEs installed and zapped"],
  ["flush L/R", "TLB flushes: local (kvm_mmu_load, root switches), remote (all vCPUs)"],
  ["lock wait", "share of the vCPUs' simulated time spent spinning on mmu_lock (a spinlock in v5.10, src/kvm/sim-lock.ts)"],
];


/** The report as lines of text: one table per MMU, then the seed's table. */
export function formatCr0Wp(results: Record<string, Record<string, Cr0WpResult>>, pairs: number, iterations: number): string[] {
  const out: string[] = [];
  const scale = (10 * 50_000) / (pairs * iterations);
  for (const [mmu, byPolicy] of Object.entries(results)) {
    const rows = Object.values(byPolicy);
    const head = ["policy", "sim. cycles", "sim. s", "vs baseline", "exits cr0/ept/other", "roots b/f/r", "SPTEs inst/zap", "flush L/R", "lock wait"];
    const body = rows.map((r) => {
      const cr0 = r.exits.cr0 ?? 0, ept = mmu === "shadow" ? (r.exits.pf ?? 0) : r.eptViolations;
      return [
        r.policy, fmt(r.cycles), (r.cycles * scale / SIM_HZ).toFixed(2), r.ratioToBaseline !== undefined ? `${r.ratioToBaseline.toFixed(3)}×` : "–",
        `${fmt(cr0)}/${fmt(ept)}/${fmt(r.exitsTotal - cr0 - ept)}`, `${fmt(r.roots.built)}/${fmt(r.roots.freed)}/${fmt(r.roots.reused)}`,
        `${fmt(r.sptes.installed)}/${fmt(r.sptes.zapped)}`, `${fmt(r.flushes.local)}/${fmt(r.flushes.remote)}`, lockShare(r),
      ];
    });
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
    out.push(`${mmu === "tdp" ? "TDP MMU (EPT)" : mmu === "legacy" ? "legacy direct MMU (EPT)" : "shadow paging"}:`);
    out.push(line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line), "");
  }
  out.push("seed (Mathias Krause, ssdd 10 50000, seconds; without / with the backported series):");
  out.push("  kernel      legacy          TDP             shadow");
  for (const [k, v] of Object.entries(CR0WP_SEED)) {
    const c = (x: readonly number[]) => `${x[0]} / ${x[1]}`.padEnd(16);
    out.push(`  ${k.padEnd(10)}  ${c(v.legacy)}${c(v.tdp)}${c(v.shadow)}`);
  }
  const ratio = (mmu: string) => {
    const b = results[mmu]?.baseline, k = results[mmu]?.krause2023;
    return b && k ? `${(b.cycles / k.cycles).toFixed(2)}×` : "–";
  };
  out.push(`seed speed-ups from the series on v5.10: legacy ${(10.37 / 4.88).toFixed(2)}×, TDP ${(88.7 / 4.92).toFixed(2)}×, shadow ${(69.7 / 70.1).toFixed(2)}×; `
    + `here (baseline → krause2023): legacy ${ratio("legacy")}, TDP ${ratio("tdp")}, shadow ${ratio("shadow")}`);
  const rows = Object.values(results).flatMap((m) => Object.values(m));
  const wall = rows.reduce((s, r) => s + r.wallMs, 0);
  out.push(`host: ${(wall / 1000).toFixed(1)} s wall for ${rows.length} run${rows.length > 1 ? "s" : ""}; ${fmt(rows.reduce((s, r) => s + r.accesses, 0))} guest accesses through the hardware model.`);
  return out;
}

/** The sensitivity table as lines: one row per moved assumption, the speed-up baseline → krause2023 per MMU. */
export function formatSensitivity(rows: Cr0WpSensitivityRow[], mmus: readonly Cr0WpMmu[]): string[] {
  const head = ["assumption moved", ...mmus.map((m) => `${m} ×`), ...(mmus.includes("tdp") && mmus.includes("legacy") ? ["TDP/legacy (baseline)"] : [])];
  const body = rows.map((r) => [r.variant, ...mmus.map((m) => `${r.speedup[m]!.toFixed(2)}×`), ...(r.tdpOverLegacy !== undefined ? [`${r.tdpOverLegacy.toFixed(2)}×`] : [])]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [
    "speed-up from Krause's series (baseline → krause2023) as each assumption moves; the seed: legacy 2.13×, TDP 18.03×, shadow 0.99× (v5.10)",
    line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line),
  ];
}

/** Everything a `run cr0wp` result depends on, as `--json` records it. */
export interface Cr0WpSettings {
  workload: "cr0wp";
  mmus: Cr0WpMmu[];
  policies: string[];
  vcpus: number;
  pairs: number;
  iterations: number;
  seed: number;
  kernexec: KernexecOptions | false;
  hostLevel: number;
  nxHugePages: boolean;
  interleave: SsddInterleave;
  memoryBytes: number;
  costs: CostModel;
}

export interface Cr0WpMeta {
  settings: Cr0WpSettings;
  core: CodeVersion;
  wallMs: number;
}

export async function runCr0WpCli(args: string[]): Promise<number> {
  if (args.some((f) => f === "-h" || f === "--help")) { process.stdout.write(USAGE); return 0; }
  let a: Cr0WpArgs;
  try {
    a = parse(args);
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`vmmu: ${e.message}\n`); return 2; }
    throw e;
  }
  const costs = withOverrides(DEFAULT_COSTS, a.costs);
  if (a.sensitivity) {
    const variants = cr0WpVariants(costs).map((v) => v.name);
    const rows = await runCr0WpSensitivity({
      mmus: a.mmus, policies: [], vcpus: a.vcpus, pairs: a.pairs, iterations: a.iterations, seed: a.seed,
      kernexec: a.kernexec, hostLevel: a.hostLevel, nxHugePages: a.nxHugePages, interleave: a.interleave, costs, onProgress: progress(variants.length, variants),
    });
    if (a.json) process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
    else process.stdout.write(formatSensitivity(rows, a.mmus).join("\n") + "\n");
    return 0;
  }
  const names = a.mmus.flatMap((m) => a.policies.map((p) => `${m}/${p}`));
  const t0 = performance.now();
  const results = await runCr0Wp({
    mmus: a.mmus, policies: a.policies, vcpus: a.vcpus, pairs: a.pairs, iterations: a.iterations, seed: a.seed,
    kernexec: a.kernexec, hostLevel: a.hostLevel, nxHugePages: a.nxHugePages, interleave: a.interleave, costs, onProgress: progress(names.length, names),
  });
  if (a.json) {
    const settings: Cr0WpSettings = {
      workload: "cr0wp", mmus: a.mmus, policies: a.policies, vcpus: a.vcpus, pairs: a.pairs, iterations: a.iterations, seed: a.seed,
      kernexec: a.kernexec, hostLevel: a.hostLevel, nxHugePages: a.nxHugePages, interleave: a.interleave, memoryBytes: CR0WP_MEMORY_BYTES, costs,
    };
    const _meta: Cr0WpMeta = { settings, core: codeVersion(), wallMs: performance.now() - t0 };
    process.stdout.write(JSON.stringify({ ...results, _meta }, null, 2) + "\n");
  } else {
    const w = Math.max(...CR0WP_LEGEND.map(([k]) => k.length));
    const nx = a.nxHugePages
      ? [`NX huge pages on (direct MMUs): tables linked where a huge page was disallowed (nx_lpage_splits) — ${
        a.mmus.filter((m) => m !== "shadow").flatMap((m) => a.policies.map((p) => `${m}/${p} ${results[m]![p]!.nxLpageSplits}`)).join(", ")}`]
      : [];
    process.stdout.write([...formatCr0Wp(results, a.pairs, a.iterations), ...nx, "columns:", ...CR0WP_LEGEND.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`)].join("\n") + "\n");
  }
  return 0;
}
