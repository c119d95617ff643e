// The seed-reproduction report as one self-contained HTML page (HTML Living
// Standard; inline CSS, inline SVG from src/report/svg.ts, no external
// assets): per vCPU count, the KPTI kernel-compile table of every policy
// beside the seed's figures (Junaid Shahid's 2018 cover letter, SEED_RESULTS
// in src/experiments/run-kpti.ts), bar charts of the ratio to baseline and of
// simulated time per policy, the ratio over vCPUs (ours and the seed's), and
// the settings, cost model, code version and host that produced it; then the
// seed-002 section (CR0.WP toggles under ssdd on every MMU,
// src/report/cr0wp-html.ts). The data is also embedded as JSON
// (`script#vmmu-report-data`). Pure string output.

import { barChart, lineChart, escapeXml, formatNumber } from "./svg.js";
import { SEED_RESULTS, type KptiPolicyResult } from "../experiments/run-kpti.js";
import type { CostModel } from "../kvm/cost-model.js";
import { cr0WpSection, type Cr0WpReportData } from "./cr0wp-html.js";

/** One `run kpti` at one vCPU count, every policy. */
export interface KptiReportRun {
  vcpus: number;
  results: Record<string, KptiPolicyResult>;
  /** Host wall time of this run's policies, ms. */
  wallMs: number;
}

/** Everything the page shows. */
export interface KptiReportData {
  /** ISO 8601 time the report was written. */
  generated: string;
  settings: {
    vcpus: number[]; policies: string[]; jobs: number; accesses: number; seed: number; memoryBytes: number;
    costs: CostModel;
    /** Smaller than the defaults (`vmmu report --quick`). */
    quick: boolean;
  };
  core: { version: string; wasm: string; commit?: string; dirty?: boolean };
  host: { node: string; platform: string; arch: string; release: string; cpu: string; cpus: number; memoryBytes: number };
  runs: KptiReportRun[];
  /** Host wall time of the whole report, ms. */
  wallMs: number;
  /** Column legend of the policy table: [column, meaning]. */
  legend: readonly (readonly [string, string])[];
  /** The seed-002 reproduction (`vmmu run cr0wp`), when the report ran it. */
  cr0wp?: Cr0WpReportData;
}

/** Policies whose ratio is drawn over vCPUs beside the seed's (the seed's own, then the later designs). */
const OVER_VCPUS = ["shahid2018", "lai2021", "alon2018", "alon2018-invlpg"];

const e = escapeXml;
const int = (n: number) => Math.round(n).toLocaleString("en");
const seedOf = (vcpus: number) => (vcpus === 1 || vcpus === 4 ? SEED_RESULTS[vcpus] : undefined);

/** "16m12s" → 972 s. */
function seconds(t: string): number {
  const m = /^(\d+)m(\d+)s$/.exec(t);
  if (!m) throw new RangeError(`vmmu: seed time must be like 16m12s, got ${t}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

function table(head: string[], rows: string[][], attrs = ""): string {
  return `<table${attrs}><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead>`
    + `<tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

function seedTable(run: KptiReportRun): string {
  const seed = seedOf(run.vcpus);
  const base = run.results.baseline, shahid = run.results.shahid2018;
  if (!seed) return `<p>The seed reports no figures for ${run.vcpus} vCPUs (it has 1 and 4).</p>`;
  const sb = seconds(seed.baseline), ss = seconds(seed.shahid2018);
  const row = (name: string, seedTime: string, seedRatio: number, r: KptiPolicyResult | undefined) => [
    e(name), e(seedTime), seedRatio.toFixed(3), r ? int(r.cycles) : "–", r?.ratioToBaseline !== undefined ? r.ratioToBaseline.toFixed(3) : "–",
  ];
  const ours = base && shahid ? base.cycles / shahid.cycles : undefined;
  return table(
    ["policy", "seed: kernel compile", "seed: vs baseline", "here: simulated cycles", "here: vs baseline"],
    [
      row("baseline", seed.baseline, 1, base),
      row("shahid2018", seed.shahid2018, ss / sb, shahid),
      ["speedup", `${seed.speedup.toFixed(2)}×`, "", ours !== undefined ? `${ours.toFixed(2)}×` : "–", ""],
    ],
    ` class="seed" data-vcpus="${run.vcpus}"`,
  );
}

function policyTable(run: KptiReportRun): string {
  const rows = Object.values(run.results).map((r) => [
    `<span title="${e(r.title)}">${e(r.policy)}</span>`, int(r.cycles), r.ratioToBaseline !== undefined ? r.ratioToBaseline.toFixed(3) : "–",
    int(r.exitsTotal), int(r.syncs), `${int(r.flushes.local)} / ${int(r.flushes.remote)} / ${int(r.flushes.address)}`,
    int(r.shadowPages.peak), `${int(r.roots.built)} / ${int(r.roots.reused)}`, int(r.guestFaults), (r.wallMs / 1000).toFixed(2),
  ]);
  return table(["policy", "sim. cycles", "vs baseline", "exits", "syncs", "flushes L/R/addr", "SP peak", "roots built/reused", "guest #PF", "host s"],
    rows, ` class="policies" data-vcpus="${run.vcpus}"`);
}

function tradeOff(run: KptiReportRun): string {
  const alon = run.results.alon2018, shahid = run.results.shahid2018;
  if (!alon || !shahid) return "";
  return `<p class="tradeoff">Liran Alon's trade-off: alon2018 used ${alon.shadowPages.peak} shadow pages at peak (${alon.shadowPages.allocated} allocated) `
    + `against shahid2018's ${shahid.shadowPages.peak} (${shahid.shadowPages.allocated}); local + remote flushes ${int(alon.flushes.local + alon.flushes.remote)} `
    + `against ${int(shahid.flushes.local + shahid.flushes.remote)}; simulated time ${(alon.cycles / shahid.cycles).toFixed(3)}× shahid2018's.</p>`;
}

function runSection(run: KptiReportRun, d: KptiReportData): string {
  const rows = Object.values(run.results);
  const seed = seedOf(run.vcpus);
  const label = `${run.vcpus} vCPU${run.vcpus > 1 ? "s" : ""}`;
  const cats = rows.map((r) => r.policy);
  const ratio = barChart({
    title: `Simulated time ÷ baseline's, ${label}`, categories: cats,
    series: [{ name: "ratio to baseline", values: rows.map((r) => r.ratioToBaseline ?? null) }],
    yLabel: "ratio to baseline", yFormat: (v) => v.toFixed(2), width: 900, height: 400,
    references: seed ? [{ value: 1 / seed.speedup, label: `seed: shahid2018 ${seed.baseline} → ${seed.shahid2018} (${(1 / seed.speedup).toFixed(3)})` }] : [],
  });
  const cycles = barChart({
    title: `Simulated time per policy, ${label}`, categories: cats,
    series: [{ name: "simulated cycles", values: rows.map((r) => r.cycles) }], yLabel: "simulated cycles", width: 900, height: 400,
  });
  return `<section class="run" id="vcpus-${run.vcpus}"><h2>KPTI kernel compile, ${label}</h2>`
    + `<p>${d.settings.jobs} jobs, ${int(d.settings.accesses)} user accesses per compiler process, seed ${d.settings.seed}; `
    + `${(run.wallMs / 1000).toFixed(1)} s host wall time for ${rows.length} policies.</p>`
    + `<h3>Beside the seed</h3>${seedTable(run)}`
    + `<h3>Every policy</h3>${policyTable(run)}${tradeOff(run)}`
    + `<div class="chart ratio" data-vcpus="${run.vcpus}">${ratio}</div><div class="chart cycles" data-vcpus="${run.vcpus}">${cycles}</div></section>`;
}

function overVcpus(d: KptiReportData): string {
  const runs = [...d.runs].sort((a, b) => a.vcpus - b.vcpus);
  const seeded = runs.filter((r) => seedOf(r.vcpus));
  if (runs.length < 2) return "";
  const series = OVER_VCPUS.filter((p) => runs.every((r) => r.results[p]?.ratioToBaseline !== undefined)).map((p) => ({
    name: `${p} (here)`, points: runs.map((r) => [r.vcpus, r.results[p]!.ratioToBaseline!] as const),
  }));
  const seedSeries = { name: "shahid2018 (seed)", points: seeded.map((r) => [r.vcpus, 1 / seedOf(r.vcpus)!.speedup] as const), dashed: true, color: "#000000" };
  const chart = lineChart({
    title: "Simulated time ÷ baseline's over vCPUs", series: [...series, seedSeries], xLabel: "vCPUs", yLabel: "ratio to baseline",
    yFormat: (v) => v.toFixed(2), xFormat: (v) => String(v), yMin: 0, width: 720, height: 400,
  });
  const rows = runs.map((r) => {
    const s = seedOf(r.vcpus);
    return [String(r.vcpus), s ? (1 / s.speedup).toFixed(3) : "–", ...OVER_VCPUS.map((p) => r.results[p]?.ratioToBaseline?.toFixed(3) ?? "–")];
  });
  return `<section id="over-vcpus"><h2>Over vCPUs</h2><p>The seed gives the kernel compile at 1 and 4 vCPUs; its ratio shahid2018 ÷ baseline is the dashed curve.</p>`
    + table(["vCPUs", "seed: shahid2018", ...OVER_VCPUS.map((p) => `here: ${e(p)}`)], rows, ` class="over-vcpus"`)
    + `<div class="chart over-vcpus">${chart}</div></section>`;
}

function settingsSection(d: KptiReportData): string {
  const s = d.settings;
  const mib = (b: number) => `${formatNumber(b / 2 ** 20)} MiB`;
  const commit = d.core.commit ? `${d.core.commit}${d.core.dirty ? " (with uncommitted changes)" : ""}` : "not a git checkout";
  const kv = (rows: [string, string][], cls: string) => table(["", ""], rows.map(([k, v]) => [e(k), v]), ` class="${cls}"`);
  return `<section id="settings"><h2>Settings, code and host</h2>`
    + kv([
      ["workload", "KPTI guest compiling a kernel on the shadow MMU (vmmu run kpti)"],
      ["vCPUs", s.vcpus.join(", ")], ["jobs", String(s.jobs)], ["accesses per process", int(s.accesses)], ["seed", String(s.seed)],
      ["guest RAM", mib(s.memoryBytes)], ["policies", e(s.policies.join(", "))], ["sizes", s.quick ? "--quick (smaller than the defaults)" : "the defaults of vmmu run kpti"],
    ], "settings")
    + `<h3>Cost model (cycles; src/kvm/cost-model.ts)</h3>`
    + table(["cost", "cycles"], Object.entries(s.costs).map(([k, v]) => [e(k), String(v)]), ` class="costs"`)
    + `<h3>Code</h3>`
    + kv([["package version", e(d.core.version)], ["wasm core (coreHash)", `<code>${e(d.core.wasm)}</code>`], ["git commit", `<code>${e(commit)}</code>`]], "code")
    + `<h3>Host</h3>`
    + kv([
      ["Node.js", e(d.host.node)], ["OS", e(`${d.host.platform} ${d.host.release} ${d.host.arch}`)], ["CPU", e(`${d.host.cpu} × ${d.host.cpus}`)],
      ["memory", `${(d.host.memoryBytes / 2 ** 30).toFixed(1)} GiB`], ["wall time", `${(d.wallMs / 1000).toFixed(1)} s`], ["written", e(d.generated)],
    ], "host")
    + `</section>`;
}

const CSS = `body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1080px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #e5e5e5;text-align:right}
th:first-child,td:first-child{text-align:left}table.policies td{white-space:nowrap}thead th{border-bottom:2px solid #999}table.settings thead,table.code thead,table.host thead{display:none}
table.settings td,table.code td,table.host td{text-align:left}code{font-size:.95em}.chart{margin:1em 0}dl.legend dt{font-weight:bold;float:left;clear:left;width:11em}
dl.legend dd{margin-left:12em}p.note{color:#555}`;

/** The whole page. */
export function kptiReportHtml(d: KptiReportData): string {
  const json = JSON.stringify(d).replace(/</g, "\\u003c");
  const legend = `<dl class="legend">${d.legend.map(([k, v]) => `<dt>${e(k)}</dt><dd>${e(v)}</dd>`).join("")}</dl>`;
  const title = "vmmu: seed reproductions";
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${title}</title>`
    + `<meta name="viewport" content="width=device-width, initial-scale=1"><style>${CSS}</style></head><body>`
    + `<h1>${title}</h1>`
    + `<p>The KPTI kernel compile on vmmu's KVM-style shadow MMU (<code>vmmu run kpti</code>), every policy, at ${d.settings.vcpus.join(" and ")} vCPUs, `
    + `beside the figures of the seed (Junaid Shahid's 2018 series, kernel compile in a KPTI guest with shadow paging). `
    + (d.cr0wp ? `Then seed 002: CR0.WP toggles under ssdd on the legacy direct MMU, the TDP MMU and shadow paging, every CR0.WP policy, beside Mathias Krause's 2023 figures (<a href="#cr0wp">below</a>). ` : "")
    + `Times here are simulated cycles from the cost model, not host time; compare ratios. `
    + `vmmu ${e(d.core.version)}, wasm core <code>${e(d.core.wasm)}</code>${d.settings.quick ? "; <strong>--quick</strong>: smaller than the default sizes" : ""}.</p>`
    + d.runs.map((r) => runSection(r, d)).join("")
    + overVcpus(d)
    + `<section id="legend"><h2>Columns</h2>${legend}</section>`
    + (d.cr0wp ? cr0WpSection(d.cr0wp) : "")
    + settingsSection(d)
    + `<script type="application/json" id="vmmu-report-data">${json}</script>`
    + `</body></html>\n`;
}
