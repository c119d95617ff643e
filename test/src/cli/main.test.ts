// The command line as a whole, through the bundled CLI (dist/cli.mjs, built by
// npm ci): --version, usage on stdout for --help and on stderr for a mistake,
// every subcommand's --help, the demo's arguments, the exit-status contract
// (0; 1 a run failed; 2 a usage or input error) and the kpti table's legend.

import { describe, it, expect } from "vitest";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { coreHash } from "../../../src/index.js";
import { formatKpti, formatKptiLegend, KPTI_LEGEND } from "../../../src/cli/run.js";
import type { KptiPolicyResult } from "../../../src/experiments/run-kpti.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const vmmu = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000 });
const VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;

describe("vmmu --version", () => {
  it("prints the package version and the wasm core hash, with -V too, and exits 0", () => {
    for (const flag of ["--version", "-V"]) {
      const r = vmmu(flag);
      expect(r.status, flag).toBe(0);
      expect(r.stderr, flag).toBe("");
      expect(r.stdout, flag).toMatch(new RegExp(`^vmmu ${VERSION.replace(/\./g, "\\.")} \\(wasm core ${coreHash}(, commit [0-9a-f]{12}\\+?)?\\)\\n$`));
    }
  });
});

describe("top-level usage", () => {
  it("bare vmmu prints the usage to stderr and exits 2", () => {
    const r = vmmu();
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^usage:\n {2}vmmu demo/);
  });

  it("--help prints it to stdout and exits 0", () => {
    for (const flag of ["--help", "-h", "help"]) {
      const r = vmmu(flag);
      expect(r.status, flag).toBe(0);
      expect(r.stderr, flag).toBe("");
      expect(r.stdout, flag).toMatch(/^usage:\n/);
    }
  });

  it("documents --max-phys-bits, report and --version", () => {
    const u = vmmu("--help").stdout;
    expect(u).toMatch(/--max-phys-bits N \(x86_64 translate and mappings\): the guest's MAXPHYADDR, 36\.\.52/);
    expect(u).toContain("vmmu report [--out DIR] [--quick]");
    expect(u).toContain("vmmu --version");
    expect(u).toContain("Exit status: 0; 1 if a run failed; 2 on a usage or input error.");
  });

  it("an unknown command is one vmmu: line on stderr, exit 2", () => {
    const r = vmmu("frobnicate");
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^vmmu: unknown command 'frobnicate' \(one of: demo, run, report, translate, mappings, conformance; vmmu --help\)\n$/);
  });
});

describe("every subcommand's --help", () => {
  const cases: [string[], RegExp][] = [
    [["demo", "--help"], /^usage: vmmu demo\n/],
    [["demo", "-h"], /^usage: vmmu demo\n/],
    [["run", "--help"], /^usage: vmmu run kpti /],
    [["run", "kpti", "--help"], /^usage: vmmu run kpti /],
    [["run", "kpti", "--vcpus", "2", "-h"], /^usage: vmmu run kpti /],
    [["report", "--help"], /^usage: vmmu report \[--out DIR\] \[--quick\]\n/],
    [["translate", "--help"], /^usage: vmmu translate /],
    [["mappings", "--help"], /^usage: vmmu mappings /],
    [["conformance", "--help"], /^usage: vmmu conformance /],
  ];
  for (const [args, want] of cases) {
    it(`vmmu ${args.join(" ")} prints its usage to stdout and exits 0 without running`, () => {
      const r = vmmu(...args);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe("");
      expect(r.stdout).toMatch(want);
    });
  }
});

describe("usage errors: exit 2, one vmmu: line on stderr, nothing on stdout", () => {
  const cases: [string[], RegExp][] = [
    [["demo", "--bogus"], /^vmmu: demo takes no option '--bogus' \(vmmu demo --help\)$/],
    [["demo", "extra"], /^vmmu: demo takes no argument 'extra'/],
    [["run"], /^vmmu: run needs a workload \(kpti, cr0wp\)$/],
    [["run", "other"], /^vmmu: unknown run 'other' \(one of: kpti, cr0wp\)$/],
    [["report", "--bogus"], /^vmmu: unknown option '--bogus' \(vmmu report --help\)$/],
    [["report", "--out"], /^vmmu: --out needs a directory$/],
    [["report", "--quick=1"], /^vmmu: --quick takes no value$/],
    [["report", "--out", "/dev/null/x", "--quick"], /^vmmu: --out \/dev\/null\/x: cannot create it \(ENOTDIR\)$/],
    [["conformance", "--arch", "mips"], /^vmmu: --arch must be x86_64 or arm64/],
    [["translate", "--bogus"], /^vmmu translate: unknown option '--bogus'/],
    [["mappings", "--bogus"], /^vmmu mappings: /],
  ];
  for (const [args, want] of cases) {
    it(`vmmu ${args.join(" ")}`, () => {
      const r = vmmu(...args);
      expect(r.status).toBe(2);
      expect(r.stdout).toBe("");
      // `run` with no workload adds its usage after the one line.
      const first = r.stderr.split("\n")[0]!;
      expect(first).toMatch(want);
      if (args.length > 1) expect(r.stderr.trim().split("\n")).toHaveLength(1);
    });
  }
});

describe("the kpti table's legend", () => {
  it("has one line per column of formatKpti's table, each column named as in its header", () => {
    const r = { policy: "baseline", cycles: 1, ratioToBaseline: 1, exitsTotal: 0, syncs: 0, flushes: { local: 0, remote: 0, address: 0 },
      shadowPages: { peak: 0, allocated: 0 }, roots: { built: 0, reused: 0 }, guestFaults: 0, wallMs: 0, accesses: 0, cyclesPerVcpu: [1], mmuLockWait: 0 } as unknown as KptiPolicyResult;
    const header = formatKpti(1, { baseline: r })[0]!;
    const columns = header.split(/ {2,}/).slice(1);
    expect(KPTI_LEGEND.map(([c]) => c)).toEqual(columns);
    const lines = formatKptiLegend();
    expect(lines[0]).toBe("columns:");
    expect(lines).toHaveLength(columns.length + 1);
    for (const [i, c] of columns.entries()) expect(lines[i + 1]).toMatch(new RegExp(`^ {2}${c.replace(/[.#/]/g, "\\$&")} +\\S`));
  });

  it("follows the table in vmmu run kpti's output", () => {
    const r = vmmu("run", "kpti", "--vcpus", "1", "--jobs", "1", "--accesses", "2000", "--policy", "baseline", "--no-sensitivity");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(formatKptiLegend().join("\n") + "\n");
  });

  it("follows the demo's tables, once", { timeout: 120_000 }, () => {
    const r = spawnSync(process.execPath, [CLI, "demo"], { encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const legend = formatKptiLegend().map((l) => "  " + l).join("\n");
    expect(r.stdout.split(legend)).toHaveLength(2);
    const cr0wp = r.stdout.indexOf("short form of `vmmu run cr0wp`");
    expect(cr0wp).toBeGreaterThan(0);
    expect(r.stdout.indexOf(legend)).toBeGreaterThan(r.stdout.lastIndexOf("guest accesses through the hardware model", cr0wp));
    expect(r.stdout.indexOf(legend)).toBeLessThan(cr0wp);
    // The CR0.WP part: one table per MMU, then the seed's table and both speed-ups.
    const tail = r.stdout.slice(cr0wp);
    for (const t of ["legacy direct MMU (EPT):", "TDP MMU (EPT):", "shadow paging:"]) expect(tail).toContain(t);
    expect(tail).toMatch(/v5\.10\.177 +10\.37 \/ 4\.88 +88\.7 \/ 4\.92 +69\.7 \/ 70\.1/);
    expect(tail).toMatch(/here \(baseline → krause2023\): legacy [0-9.]+×, TDP [0-9.]+×, shadow [0-9.]+×/);
    // The EPT part: a cold 4×4 2D walk loads 24 entries; a write to a page EPT made read-only is an EPT violation
    // whose qualification says data write, R and X allowed, linear address valid, final access (0x1aa); a page
    // EPT moved stays cached until INVEPT.
    expect(r.stdout).toContain("24 paging-structure loads (4 guest + 5 × 4 EPT), 6 walks");
    expect(r.stdout).toMatch(/write → EPT violation at gpa 0x400456, EPT level 1, qualification 0x1aa\n/);
    expect(r.stdout).toMatch(/the cached mapping stays +0x70000789 read +→ gpa 0x400789 → hpa 0x1400789/);
    expect(r.stdout).toMatch(/after INVEPT single-context +0x70000789 read +→ gpa 0x400789 → hpa 0x1800789/);
  });
});
