// `vmmu report --quick` through the bundled CLI (dist/cli.mjs): the page it
// writes holds, for 1 and 4 vCPUs, the seed's figures beside ours, a table row
// and one bar per policy, the curves over vCPUs (ours and the seed's), the
// settings, the cost model, the code version and the host, with no external
// asset; progress and the path written go to stderr. Then seed 002: per MMU a
// table row per CR0.WP policy, the seed's table, the speed-up chart (ours and
// the seed's v5.10 figure per MMU) and the cr0wp runs in the embedded JSON.

import { beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { coreHash } from "../../../src/index.js";
import { POLICIES } from "../../../src/kvm/policy.js";
import { DEFAULT_COSTS } from "../../../src/kvm/cost-model.js";
import { SEED_RESULTS } from "../../../src/experiments/run-kpti.js";
import { KPTI_LEGEND } from "../../../src/cli/run.js";
import { QUICK } from "../../../src/cli/report.js";
import type { KptiReportData } from "../../../src/report/kpti-html.js";
import { CR0WP_POLICIES } from "../../../src/kvm/cr0wp-policy.js";
import { CR0WP_SEED, type Cr0WpResult } from "../../../src/experiments/run-cr0wp.js";
import { CR0WP_DEFAULTS, CR0WP_LEGEND, SIM_HZ } from "../../../src/cli/run-cr0wp.js";
import { cr0WpSection, type Cr0WpReportData } from "../../../src/report/cr0wp-html.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const policies = Object.keys(POLICIES);
const cr0wpPolicies = Object.keys(CR0WP_POLICIES);
const MMUS = ["legacy", "tdp", "shadow"] as const;
/** Every run of the report: kpti's at 1 and 4 vCPUs, then cr0wp's. */
const total = 2 * policies.length + MMUS.length * cr0wpPolicies.length;
const int = (n: number) => Math.round(n).toLocaleString("en");

/** The elements `<tag …class="cls"…>` of `html`, as their opening tags. */
const tags = (html: string, tag: string, cls: string) => [...html.matchAll(new RegExp(`<${tag} class="${cls}"[^>]*>`, "g"))].map((m) => m[0]);
const attr = (t: string, name: string) => new RegExp(`\\s${name}="([^"]*)"`).exec(t)?.[1];
/** The section of the page for `vcpus`. */
const section = (html: string, vcpus: number) => html.slice(html.indexOf(`<section class="run" id="vcpus-${vcpus}">`), html.indexOf("</section>", html.indexOf(`id="vcpus-${vcpus}"`)));

describe("vmmu report --quick", () => {
  let dir: string, html: string, data: KptiReportData, status: number | null, stderr: string, stdout: string;

  beforeAll(() => {
    dir = join(mkdtempSync(join(tmpdir(), "vmmu-report-")), "out");
    const r = spawnSync(process.execPath, [CLI, "report", "--out", dir, "--quick"], { encoding: "utf8", timeout: 120_000 });
    ({ status, stderr, stdout } = r);
    html = readFileSync(join(dir, "index.html"), "utf8");
    data = JSON.parse(/<script type="application\/json" id="vmmu-report-data">(.*?)<\/script>/s.exec(html)![1]!);
  }, 120_000);

  it("exits 0, writes only DIR/index.html, prints progress and the path on stderr and nothing on stdout", () => {
    expect(status, stderr).toBe(0);
    expect(stdout).toBe("");
    expect(readdirSync(dir)).toEqual(["index.html"]);
    expect(stderr).toMatch(new RegExp(`^vmmu report: ${policies.length}/${total} 1 vCPU `, "m"));
    MMUS.forEach((m, i) => expect(stderr).toMatch(new RegExp(`^vmmu report: ${2 * policies.length + (i + 1) * cr0wpPolicies.length}/${total} cr0wp ${m} krause2023 `, "m")));
    expect(stderr.trimEnd().split("\n").at(-1)).toBe(
      `vmmu report: wrote ${join(dir, "index.html")} (${2 * policies.length} kpti + ${MMUS.length * cr0wpPolicies.length} cr0wp runs, ${(data.wallMs / 1000).toFixed(1)} s)`);
  });

  it("is one self-contained page: inline CSS and SVG, no external asset", () => {
    expect(html).toMatch(/^<!doctype html>\n<html lang="en">/);
    expect(html).toContain("<style>");
    expect(html).not.toMatch(/<link\b|<img\b|<script\b[^>]*\bsrc=|<iframe\b|@import|url\(/);
    expect(html).not.toMatch(/(?:href|src)="(?:https?:)?\/\//);
    expect(tags(html, "div", "chart ratio")).toHaveLength(2);
    expect(html.split("<svg ").length - 1).toBe(6);
  });

  for (const vcpus of [1, 4] as const) {
    describe(`${vcpus} vCPU${vcpus > 1 ? "s" : ""}`, () => {
      it("puts the seed's figures beside ours", () => {
        const s = section(html, vcpus), seed = SEED_RESULTS[vcpus];
        const t = s.slice(s.indexOf(`<table class="seed" data-vcpus="${vcpus}">`), s.indexOf("</table>", s.indexOf('class="seed"')));
        const res = data.runs.find((r) => r.vcpus === vcpus)!.results;
        expect(t).toContain(`<td>baseline</td><td>${seed.baseline}</td><td>1.000</td><td>${Math.round(res.baseline!.cycles).toLocaleString("en")}</td><td>1.000</td>`);
        expect(t).toContain(`<td>shahid2018</td><td>${seed.shahid2018}</td><td>${(1 / seed.speedup).toFixed(3)}</td>`);
        expect(t).toContain(`<td>${seed.speedup.toFixed(2)}×</td>`);
        expect(t).toContain(`<td>${(res.baseline!.cycles / res.shahid2018!.cycles).toFixed(2)}×</td>`);
      });

      it("has a table row and one bar per policy in each chart, with the seed's ratio as a reference line", () => {
        const s = section(html, vcpus);
        const table = s.slice(s.indexOf('<table class="policies"'), s.indexOf("</table>", s.indexOf('<table class="policies"')));
        expect([...table.matchAll(/<tr><td><span title="[^"]*">([^<]+)<\/span>/g)].map((m) => m[1])).toEqual(policies);
        const res = data.runs.find((r) => r.vcpus === vcpus)!.results;
        const ratio = s.slice(s.indexOf('<div class="chart ratio"'), s.indexOf('<div class="chart cycles"'));
        const bars = tags(ratio, "rect", "bar");
        expect(bars.map((b) => attr(b, "data-category"))).toEqual(policies);
        expect(bars.map((b) => Number(attr(b, "data-value")))).toEqual(policies.map((p) => res[p]!.ratioToBaseline));
        expect(tags(ratio, "line", "reference").map((l) => Number(attr(l, "data-value")))).toEqual([1 / SEED_RESULTS[vcpus].speedup]);
        const cycles = tags(s.slice(s.indexOf('<div class="chart cycles"')), "rect", "bar");
        expect(cycles.map((b) => [attr(b, "data-category"), Number(attr(b, "data-value"))])).toEqual(policies.map((p) => [p, res[p]!.cycles]));
      });
    });
  }

  it("draws the ratio over vCPUs, ours and the seed's", () => {
    const over = html.slice(html.indexOf('<section id="over-vcpus">'));
    const lines = tags(over, "polyline", "line").map((l) => attr(l, "data-series"));
    expect(lines).toContain("shahid2018 (here)");
    expect(lines).toContain("shahid2018 (seed)");
    expect(over).toContain(`<td>4</td><td>${(1 / SEED_RESULTS[4].speedup).toFixed(3)}</td>`);
    expect(over).toContain(`<td>1</td><td>${(1 / SEED_RESULTS[1].speedup).toFixed(3)}</td>`);
  });

  it("records the settings, the cost model, the code version and the host", () => {
    expect(data.settings).toMatchObject({ vcpus: [1, 4], policies, jobs: QUICK.jobs, accesses: QUICK.accesses, seed: 1, quick: true, costs: DEFAULT_COSTS });
    expect(data.core.wasm).toBe(coreHash);
    expect(html).toContain(`<code>${coreHash}</code>`);
    expect(html).toContain(`<td>jobs</td><td>${QUICK.jobs}</td>`);
    expect(html).toContain(`<td>seed</td><td>1</td>`);
    for (const [k, v] of Object.entries(DEFAULT_COSTS)) expect(html).toContain(`<td>${k}</td><td>${v}</td>`);
    expect(html).toContain(`<td>package version</td><td>${data.core.version}</td>`);
    expect(html).toContain(`<td>Node.js</td><td>${process.version}</td>`);
    expect(data.wallMs).toBeGreaterThan(0);
    for (const [c] of KPTI_LEGEND) expect(html).toContain(`<dt>${c.replace("&", "&amp;")}</dt>`);
  });
  describe("seed 002 (run cr0wp)", () => {
    const cr0wp = () => html.slice(html.indexOf('<section class="cr0wp" id="cr0wp">'), html.indexOf("</section>", html.indexOf('id="cr0wp"')));
    const speedup = (m: string) => data.cr0wp!.results[m]!.baseline!.cycles / data.cr0wp!.results[m]!.krause2023!.cycles;

    it("records the cr0wp runs and their settings in the JSON, at run cr0wp's defaults but --quick's sizes", () => {
      expect(Object.keys(data)).toEqual(["generated", "settings", "core", "host", "runs", "wallMs", "legend", "cr0wp"]);
      expect(data.cr0wp!.settings).toMatchObject({
        workload: "cr0wp", mmus: [...MMUS], policies: cr0wpPolicies, vcpus: CR0WP_DEFAULTS.vcpus, pairs: QUICK.pairs, iterations: QUICK.iterations,
        seed: CR0WP_DEFAULTS.seed, hostLevel: CR0WP_DEFAULTS.hostLevel, nxHugePages: CR0WP_DEFAULTS.nxHugePages, interleave: CR0WP_DEFAULTS.interleave, costs: DEFAULT_COSTS,
      });
      expect(Object.keys(data.cr0wp!.results)).toEqual([...MMUS]);
      for (const m of MMUS) expect(Object.keys(data.cr0wp!.results[m]!)).toEqual(cr0wpPolicies);
      expect(data.cr0wp!.wallMs).toBeGreaterThan(0);
      expect(data.cr0wp!.wallMs).toBeLessThan(data.wallMs);
    });

    for (const m of MMUS) {
      it(`has the ${m} table: a row per policy with the cycles, seconds and counters of the JSON`, () => {
        const s = cr0wp();
        const t = s.slice(s.indexOf(`<table class="cr0wp" data-mmu="${m}">`), s.indexOf("</table>", s.indexOf(`data-mmu="${m}"`)));
        const rows = [...t.matchAll(/<tr><td><span title="[^"]*">([^<]+)<\/span><\/td>((?:<td>[^<]*<\/td>)+)<\/tr>/g)];
        expect(rows.map((r) => r[1])).toEqual(cr0wpPolicies);
        const scale = (10 * 50_000) / (QUICK.pairs * QUICK.iterations);
        rows.forEach((row, i) => {
          const r: Cr0WpResult = data.cr0wp!.results[m]![cr0wpPolicies[i]!]!;
          const cells = [...row[2]!.matchAll(/<td>([^<]*)<\/td>/g)].map((c) => c[1]);
          const cr0 = r.exits.cr0 ?? 0, fault = m === "shadow" ? (r.exits.pf ?? 0) : r.eptViolations;
          expect(cells).toEqual([
            int(r.cycles), (r.cycles * scale / SIM_HZ).toFixed(2), r.ratioToBaseline!.toFixed(3),
            `${int(cr0)} / ${int(fault)} / ${int(r.exitsTotal - cr0 - fault)}`, `${int(r.roots.built)} / ${int(r.roots.freed)} / ${int(r.roots.reused)}`,
            `${int(r.sptes.installed)} / ${int(r.sptes.zapped)}`, `${int(r.flushes.local)} / ${int(r.flushes.remote)}`,
            `${(100 * r.mmuLockWait / r.cyclesPerVcpu.reduce((a, b) => a + b, 0)).toFixed(1)}%`,
          ]);
        });
        expect(rows[0]![2]).toMatch(/^<td>[^<]+<\/td><td>[^<]+<\/td><td>1\.000<\/td>/);
      });
    }

    it("puts the seed's table beside ours, with the column legend", () => {
      const s = cr0wp();
      const t = s.slice(s.indexOf('<table class="cr0wp-seed">'), s.indexOf("</table>", s.indexOf('class="cr0wp-seed"')));
      for (const [k, v] of Object.entries(CR0WP_SEED)) {
        expect(t).toContain(`<tr><td>${k}</td><td>${v.legacy[0]}</td><td>${v.legacy[1]}</td><td>${v.tdp[0]}</td><td>${v.tdp[1]}</td><td>${v.shadow[0]}</td><td>${v.shadow[1]}</td></tr>`);
      }
      expect(t).toContain("<td>v5.10.177</td><td>10.37</td><td>4.88</td><td>88.7</td><td>4.92</td><td>69.7</td><td>70.1</td>");
      for (const [c] of CR0WP_LEGEND) expect(s).toContain(`<dt>${c}</dt>`);
    });

    it("draws the speed-up baseline → krause2023 per MMU, ours from the run beside the seed's v5.10 figure", () => {
      const s = cr0wp();
      const chart = s.slice(s.indexOf('<div class="chart cr0wp">'));
      expect(chart.split("<svg ").length - 1).toBe(1);
      const bars = tags(chart, "rect", "bar").map((b) => [attr(b, "data-series"), attr(b, "data-category"), Number(attr(b, "data-value"))]);
      expect(bars).toEqual([
        ["here", "legacy", speedup("legacy")], ["here", "TDP", speedup("tdp")], ["here", "shadow", speedup("shadow")],
        ["seed (v5.10.177)", "legacy", 10.37 / 4.88], ["seed (v5.10.177)", "TDP", 88.7 / 4.92], ["seed (v5.10.177)", "shadow", 69.7 / 70.1],
      ]);
    });

    it("says, with the run's numbers, whether the size of the TDP pathology is reproduced, and points to docs/mmu.md §7b", () => {
      const s = cr0wp();
      const tdp = speedup("tdp");
      const over = data.cr0wp!.results.tdp!.baseline!.cycles / data.cr0wp!.results.legacy!.baseline!.cycles;
      expect(s).toContain(`${tdp * 2 >= 88.7 / 4.92 ? "reproduced to within a factor of 2" : "not reproduced"} at these settings: `
        + `the TDP MMU speeds up ${tdp.toFixed(2)}× here against the seed's 18.03×; TDP baseline ÷ legacy baseline ${over.toFixed(2)}× against the seed's 8.55×.`);
      expect(s).toContain("docs/mmu.md §7b");
      expect(s).toContain(`Speed-up baseline → krause2023 here: legacy ${speedup("legacy").toFixed(2)}×, TDP ${tdp.toFixed(2)}×, shadow ${speedup("shadow").toFixed(2)}×`);
    });
  });
});

describe("the seed-002 section (cr0WpSection)", () => {
  /** A result with `cycles` and zero counters. */
  const result = (mmu: "legacy" | "tdp" | "shadow", policy: string, cycles: number): Cr0WpResult => ({
    mmu, policy, title: policy, cycles, cyclesPerVcpu: [cycles], exits: {}, exitsTotal: 0, roots: { built: 0, freed: 0, reused: 0 }, eptViolations: 0,
    sptes: { installed: 0, zapped: 0 }, nxLpageSplits: 0, pages: { allocated: 0, freed: 0 }, flushes: { local: 0, remote: 0 }, mmuLockWait: 0, flushIpis: { waited: 0, skipped: 0 }, resets: 0, reinitOnly: 0,
    guest: { steps: 0, cr0Writes: 0, syscalls: 0, contextSwitches: 0, debugExceptions: 0 }, tlbHits: 0, hwWalks: 0, ptRefs: 0, accesses: 0, wallMs: 1,
  });
  const section = (tdpBaseline: number): string => {
    const results: Cr0WpReportData["results"] = {};
    for (const [m, base] of [["legacy", 200], ["tdp", tdpBaseline], ["shadow", 100]] as const) {
      results[m] = { baseline: { ...result(m, "baseline", base), ratioToBaseline: 1 }, krause2023: { ...result(m, "krause2023", 10), ratioToBaseline: 10 / base } };
    }
    const settings = {
      workload: "cr0wp" as const, mmus: [...MMUS], policies: ["baseline", "krause2023"], vcpus: 2, pairs: 10, iterations: 2000, seed: 1,
      kernexec: false as const, hostLevel: 2, nxHugePages: false, interleave: "fine" as const, memoryBytes: 1 << 28, costs: DEFAULT_COSTS,
    };
    return cr0WpSection({ settings, results, wallMs: 1, legend: CR0WP_LEGEND, simHz: SIM_HZ });
  };

  it("calls the TDP pathology reproduced when our speed-up is within a factor of 2 of the seed's 18.03×, and not otherwise", () => {
    expect(section(170)).toContain("is reproduced to within a factor of 2 at these settings: the TDP MMU speeds up 17.00× here against the seed's 18.03×; TDP baseline ÷ legacy baseline 0.85×");
    expect(section(50)).toContain("is not reproduced at these settings: the TDP MMU speeds up 5.00× here against the seed's 18.03×");
  });

  it("leaves a missing policy's bar out and shows – for its speed-up", () => {
    const results: Cr0WpReportData["results"] = { legacy: { baseline: { ...result("legacy", "baseline", 100), ratioToBaseline: 1 } } };
    const html = cr0WpSection({
      settings: { workload: "cr0wp", mmus: ["legacy"], policies: ["baseline"], vcpus: 2, pairs: 10, iterations: 2000, seed: 1, kernexec: false, hostLevel: 2, nxHugePages: false, interleave: "fine", memoryBytes: 1 << 28, costs: DEFAULT_COSTS },
      results, wallMs: 1, legend: CR0WP_LEGEND, simHz: SIM_HZ,
    });
    expect(tags(html, "rect", "bar").map((b) => attr(b, "data-series"))).toEqual(["seed (v5.10.177)"]);
    expect(html).toContain("here: legacy –;");
    expect(html).not.toContain("cr0wp-verdict");
  });
});
