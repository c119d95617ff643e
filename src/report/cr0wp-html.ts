// The seed-002 section of the report page (src/report/kpti-html.ts assembles
// the page): `vmmu run cr0wp` (src/experiments/run-cr0wp.ts) on every MMU under
// every CR0.WP policy — per MMU a table with the columns of formatCr0Wp
// (src/cli/run-cr0wp.ts), the seed's table (Mathias Krause's `ssdd 10 50000`
// on v5.10.177 / v5.15.106 / v6.1.23, CR0WP_SEED), and a bar chart of the
// speed-up baseline → krause2023 per MMU beside the seed's v5.10 figure.
// Pure string output; HTML Living Standard, inline SVG from src/report/svg.ts.

import { barChart, escapeXml } from "./svg.js";
import { CR0WP_SEED, lockShare, type Cr0WpMmu, type Cr0WpResult } from "../experiments/run-cr0wp.js";
import type { Cr0WpSettings } from "../cli/run-cr0wp.js";

/** The cr0wp runs of one report (`cr0wp` in the page's JSON). */
export interface Cr0WpReportData {
  /** As `vmmu run cr0wp --json` records them in `_meta.settings`. */
  settings: Cr0WpSettings;
  /** By MMU, then by policy, as runCr0Wp returns them. */
  results: Record<string, Record<string, Cr0WpResult>>;
  /** Host wall time of every cr0wp run, ms. */
  wallMs: number;
  /** Column legend of the MMU tables: [column, meaning] (CR0WP_LEGEND). */
  legend: readonly (readonly [string, string])[];
  /** Simulated clock of the "sim. s" column, Hz (SIM_HZ). */
  simHz: number;
}

/** The seed's kernel whose speed-ups the chart draws: the one with the TDP pathology. */
export const CR0WP_CHART_KERNEL = "v5.10.177";

const e = escapeXml;
const int = (n: number) => Math.round(n).toLocaleString("en");
const MMU_TITLE: Record<Cr0WpMmu, string> = { legacy: "legacy direct MMU (EPT)", tdp: "TDP MMU (EPT)", shadow: "shadow paging" };
const HOST_PAGE: Record<number, string> = { 1: "4 KiB", 2: "2 MiB", 3: "1 GiB" };
const mmuLabel = (m: string) => (m === "tdp" ? "TDP" : m);

/** Seed steps over ours: the factor formatCr0Wp scales "sim. s" by. */
const stepScale = (s: Cr0WpSettings) => (10 * 50_000) / (s.pairs * s.iterations);

/** baseline cycles ÷ krause2023 cycles of `mmu`, or null when either was not run. */
export function cr0WpSpeedup(results: Cr0WpReportData["results"], mmu: string): number | null {
  const b = results[mmu]?.baseline, k = results[mmu]?.krause2023;
  return b && k ? b.cycles / k.cycles : null;
}

/** The seed's speed-up without → with the series on `kernel` for `mmu`. */
function seedSpeedup(mmu: Cr0WpMmu, kernel = CR0WP_CHART_KERNEL): number {
  const [without, withSeries] = CR0WP_SEED[kernel as keyof typeof CR0WP_SEED][mmu];
  return without / withSeries;
}

function table(head: string[], rows: string[][], attrs: string): string {
  return `<table${attrs}><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead>`
    + `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

function mmuTable(mmu: string, byPolicy: Record<string, Cr0WpResult>, d: Cr0WpReportData): string {
  const scale = stepScale(d.settings);
  const rows = Object.values(byPolicy).map((r) => {
    const cr0 = r.exits.cr0 ?? 0, ept = mmu === "shadow" ? (r.exits.pf ?? 0) : r.eptViolations;
    return [
      `<span title="${e(r.title)}">${e(r.policy)}</span>`, int(r.cycles), (r.cycles * scale / d.simHz).toFixed(2),
      r.ratioToBaseline !== undefined ? r.ratioToBaseline.toFixed(3) : "–",
      `${int(cr0)} / ${int(ept)} / ${int(r.exitsTotal - cr0 - ept)}`, `${int(r.roots.built)} / ${int(r.roots.freed)} / ${int(r.roots.reused)}`,
      `${int(r.sptes.installed)} / ${int(r.sptes.zapped)}`, `${int(r.flushes.local)} / ${int(r.flushes.remote)}`, lockShare(r),
    ];
  });
  return `<h3>${e(MMU_TITLE[mmu as Cr0WpMmu] ?? mmu)}</h3>`
    + table(["policy", "sim. cycles", "sim. s", "vs baseline", "exits cr0/ept/other", "roots b/f/r", "SPTEs inst/zap", "flush L/R", "lock wait"],
      rows, ` class="cr0wp" data-mmu="${e(mmu)}"`);
}

function seedTable(): string {
  const pair = (x: readonly number[]) => [String(x[0]), String(x[1])];
  const rows = Object.entries(CR0WP_SEED).map(([k, v]) => [e(k), ...pair(v.legacy), ...pair(v.tdp), ...pair(v.shadow)]);
  return table(["kernel", "legacy", "legacy + series", "TDP", "TDP + series", "shadow", "shadow + series"], rows, ` class="cr0wp-seed"`);
}

/**
 * The section: settings line, one table per MMU, the seed's table, the
 * speed-up chart and what the run says about the seed's TDP pathology.
 */
export function cr0WpSection(d: Cr0WpReportData): string {
  const s = d.settings;
  const mmus = Object.keys(d.results);
  const here = mmus.map((m) => cr0WpSpeedup(d.results, m));
  const seed = mmus.map((m) => seedSpeedup(m as Cr0WpMmu));
  const chart = barChart({
    title: `Speed-up baseline → krause2023 per MMU (here; the seed on ${CR0WP_CHART_KERNEL})`, categories: mmus.map(mmuLabel),
    series: [{ name: "here", values: here }, { name: `seed (${CR0WP_CHART_KERNEL})`, values: seed }],
    yLabel: "baseline ÷ krause2023", yFormat: (v) => `${v.toFixed(2)}×`, valueLabels: true, width: 720, height: 400,
    references: [{ value: 1, label: "no change" }],
  });
  const fx = (v: number | null) => (v === null ? "–" : `${v.toFixed(2)}×`);
  const tdpHere = cr0WpSpeedup(d.results, "tdp"), tdpSeed = seedSpeedup("tdp");
  const legacyBase = d.results.legacy?.baseline, tdpBase = d.results.tdp?.baseline;
  const [seedTdp, seedLegacy] = [CR0WP_SEED[CR0WP_CHART_KERNEL].tdp[0], CR0WP_SEED[CR0WP_CHART_KERNEL].legacy[0]];
  const overLegacy = legacyBase && tdpBase ? `; TDP baseline ÷ legacy baseline ${(tdpBase.cycles / legacyBase.cycles).toFixed(2)}× against the seed's ${(seedTdp / seedLegacy).toFixed(2)}×` : "";
  const verdict = tdpHere === null ? ""
    : `<p class="cr0wp-verdict">The size of the v5.10 TDP pathology is ${tdpHere * 2 >= tdpSeed ? "reproduced to within a factor of 2" : "not reproduced"} at these settings: `
      + `the TDP MMU speeds up ${fx(tdpHere)} here against the seed's ${fx(tdpSeed)}${overLegacy}. `
      + `docs/mmu.md §7b ("Results next to the seed's") names the assumptions that move it (<code>vmmu run cr0wp --sensitivity</code>) and what v5.10 did beyond the model.</p>`;
  const legend = `<dl class="legend">${d.legend.map(([k, v]) => `<dt>${e(k)}</dt><dd>${e(v)}</dd>`).join("")}</dl>`;
  const rows = mmus.flatMap((m) => Object.values(d.results[m]!));
  return `<section class="cr0wp" id="cr0wp"><h2>CR0.WP toggles under ssdd (seed 002)</h2>`
    + `<p>rt-tests' ssdd (${s.pairs} pairs × ${int(s.iterations)} PTRACE_SINGLESTEPs; the seed ran 10 × 50,000) in a grsecurity guest whose KERNEXEC toggles CR0.WP, `
    + `${s.vcpus} vCPUs, seed ${s.seed}, ${s.memoryBytes / 2 ** 20} MiB guest RAM, host pages ${HOST_PAGE[s.hostLevel] ?? `level ${s.hostLevel}`}, `
    + `NX huge pages ${s.nxHugePages ? "on" : "off"}, ${s.interleave === "block" ? "vCPUs interleaved at blocking points" : "vCPUs' MMU events in simulated-time order"}, KERNEXEC ${s.kernexec === false ? "off" : `${s.kernexec.perSyscall} per syscall, ${s.kernexec.perException} per exception, ${s.kernexec.perSwitch} per switch`}, `
    + `on each MMU under each CR0.WP policy (<code>vmmu run cr0wp</code>); `
    + `${rows.length} runs, ${(d.wallMs / 1000).toFixed(1)} s host wall time. "sim. s" is cycles at ${d.simHz / 1e9} GHz scaled to the seed's steps.</p>`
    + mmus.map((m) => mmuTable(m, d.results[m]!, d)).join("")
    + `<h3>The seed (Mathias Krause, ssdd 10 50000, seconds; without / with the backported series)</h3>${seedTable()}`
    + `<p class="cr0wp-speedups">Speed-up baseline → krause2023 here: ${mmus.map((m, i) => `${e(mmuLabel(m))} ${fx(here[i]!)}`).join(", ")}; `
    + `the seed on ${CR0WP_CHART_KERNEL}: ${mmus.map((m, i) => `${e(mmuLabel(m))} ${fx(seed[i]!)}`).join(", ")}.</p>`
    + `<div class="chart cr0wp">${chart}</div>${verdict}`
    + `<h3>Columns</h3>${legend}</section>`;
}
