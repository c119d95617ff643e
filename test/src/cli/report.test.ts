// `vmmu report --quick` through the bundled CLI (dist/cli.mjs): the page it
// writes holds, for 1 and 4 vCPUs, the seed's figures beside ours, a table row
// and one bar per policy, the curves over vCPUs (ours and the seed's), the
// settings, the cost model, the code version and the host, with no external
// asset; progress and the path written go to stderr.

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

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const policies = Object.keys(POLICIES);

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
    expect(stderr).toMatch(new RegExp(`^vmmu report: ${policies.length}/${2 * policies.length} 1 vCPU `, "m"));
    expect(stderr.trimEnd().split("\n").at(-1)).toBe(`vmmu report: wrote ${join(dir, "index.html")} (${2 * policies.length} runs, ${(data.wallMs / 1000).toFixed(1)} s)`);
  });

  it("is one self-contained page: inline CSS and SVG, no external asset", () => {
    expect(html).toMatch(/^<!doctype html>\n<html lang="en">/);
    expect(html).toContain("<style>");
    expect(html).not.toMatch(/<link\b|<img\b|<script\b[^>]*\bsrc=|<iframe\b|@import|url\(/);
    expect(html).not.toMatch(/(?:href|src)="(?:https?:)?\/\//);
    expect(tags(html, "div", "chart ratio")).toHaveLength(2);
    expect(html.split("<svg ").length - 1).toBe(5);
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
});
