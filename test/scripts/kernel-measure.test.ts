// scripts/measure/summarize.mjs on a tiny synthetic set of logs (test/fixtures/kernel-measure/),
// written in the formats scripts/measure/kernel-compile.sh produces: env.txt, `/usr/bin/time -v`,
// gcc -time=FILE lines, `strace -f -C -s 0` (trace + -c table) and
// `strace -f -ttt -e trace=process` (process tree, wait4 rusage, SIGCHLD). Every expected
// count below is counted by hand from those files, so the parser is tested without a kernel build.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const FIXTURE = path.join(root, "test/fixtures/kernel-measure");

let j: any; // the JSON summarize.mjs writes
let csv: string[];
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "vmmu-kmeasure-"));
  const out = path.join(dir, "out.json"), csvFile = path.join(dir, "cc1.csv");
  const r = spawnSync(process.execPath, ["scripts/measure/summarize.mjs", "--results", FIXTURE, "--out", out, "--cc1-csv", csvFile],
    { cwd: root, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  j = JSON.parse(readFileSync(out, "utf8"));
  csv = readFileSync(csvFile, "utf8").trim().split("\n");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("summarize.mjs (kernel-compile measurement parser)", () => {
  it("reads versions, machine and wall times from env.txt and time -v", () => {
    expect(j.kernel.version).toBe("6.1.999");
    expect(j.machine.cores).toBe(2);
    expect(j.wallS).toMatchObject({ runA_time: 62.5, runA: 10.5, runB_strace_c: 30.25, runC_strace_process: 12, runC_traceSpan: 1.6 });
  });

  it("rebuilds the process tree: processes, threads folded, programs, execs, forks by call", () => {
    const p = j.processes;
    expect(p.total).toBe(15); // pids 100..115 but 111, a CLONE_THREAD of as (110)
    expect(p.execs).toBe(14);
    expect(p.failedExecs).toBe(1); // /usr/local/bin/gcc: ENOENT
    expect(p.forksByCall).toEqual({ vfork: 12, clone: 2, clone3: 1 });
    const count = (prog: string) => p.byProgram[prog]?.processes;
    expect([count("make"), count("sh"), count("gcc"), count("cc1"), count("as"), count("fixdep"), count("sh (no exec)")])
      .toEqual([1, 3, 2, 2, 2, 1, 1]);
    // the cc-option-style compile of /dev/null (pids 113-115) is a probe, not a compiled file
    expect([count("gcc (probe)"), count("cc1 (probe)"), count("as (probe)")]).toEqual([1, 1, 1]);
    expect(j.filesCompiled).toEqual({ total: 2, inLib: 2, objects: 2, hostPrograms: 0, bySourceSuffix: { ".c": 1, ".S": 1 },
      cc1OfCompiledFiles: 1, cc1Probes: 1, cc1Preprocess: 1 });
    expect(p.execsPerCompiledFile).toBe(7);
    expect(p.perCompiledFile).toBe(7.5);
    // SIGCHLD si_utime/si_stime (ticks of 10 ms) of cc1 103 and gcc 102
    expect(p.byProgram.cc1).toMatchObject({ siUserMs: 1400, siSystemMs: 250, siCovered: 1 });
    expect(p.byProgram.gcc).toMatchObject({ siUserMs: 0, siSystemMs: 10, siCovered: 1 });
  });

  it("takes each cc1's rusage from the gcc driver's wait4 (compile cc1 only, not cc1 -E)", () => {
    const c = j.perCc1;
    expect(c.n).toBe(1); // not cc1 -E (109), not the probe (114)
    expect(c.withRusage).toBe(1);
    expect(c.userMs.mean).toBe(1400);
    expect(c.systemMs.mean).toBe(250);
    expect(c.minorFaults.sum).toBe(8000);
    expect(c.majorFaults.sum).toBe(1);
    expect(c.voluntaryCtxSw.mean).toBe(6);
    expect(c.involuntaryCtxSw.mean).toBe(40);
    expect(c.maxRssKb.max).toBe(90000);
    expect(c.wallMs.mean).toBeCloseTo(1500.4, 1);
    expect(j.perAs.n).toBe(2); // not the probe's as (115)
    expect(j.perAs.minorFaults.sum).toBe(800);
    expect(j.perAs.userMs.sum).toBe(40);
  });

  it("counts syscalls per process and program from the -C trace (resumed lines not twice) and keeps strace's -c table", () => {
    const s = j.syscalls;
    expect(s.total).toBe(39);
    expect(s.processes).toBe(8);
    expect(s.byKind).toEqual({ exit_group: 8, execve: 7, openat: 6, vfork: 6, read: 3, wait4: 3, newfstatat: 2, brk: 1, clone: 1, close: 1, mmap: 1 });
    expect(s.perProcess).toBe(4.9);
    // cc1 203 opens lib/a.c: a compiled file; cc1 206 opens only /dev/null: a probe, and so its gcc (205)
    expect(j.processes.byProgram.cc1).toMatchObject({ processesRunB: 1, syscalls: 7 });
    expect(j.processes.byProgram["cc1 (probe)"]).toMatchObject({ processesRunB: 1, syscalls: 3 });
    expect(j.processes.byProgram["gcc (probe)"]).toMatchObject({ processesRunB: 1, syscalls: 3 });
    expect(j.processes.byProgram.as).toMatchObject({ processesRunB: 1, syscalls: 3 });
    expect(j.processes.byProgram.gcc).toMatchObject({ processesRunB: 1, syscalls: 6 });
    expect(j.processes.byProgram.cc1.syscallsPerProcessByKind).toEqual({ openat: 2, read: 2, execve: 1, exit_group: 1, mmap: 1 });
    expect(j.processes.byProgram.make.syscalls).toBe(8);
    expect(j.processes.byProgram["sh (no exec)"].syscalls).toBe(2);
    expect(s.countTable.total).toEqual({ calls: 70, errors: 2, seconds: 0.001 });
    expect(s.countTable.byKind.newfstatat).toEqual({ calls: 10, errors: 2, seconds: 0.0003 });
    expect(j.perCc1.syscalls).toBe(7);
  });

  it("reads time -v totals and gcc -time lines (malformed lines counted, not fatal)", () => {
    expect(j.totals).toMatchObject({ userS: 2, systemS: 0.5, minorFaults: 11000, majorFaults: 3, voluntaryCtxSw: 440, involuntaryCtxSw: 110 });
    expect(j.totals.perProcess.minorFaults).toBe(733.3); // 11000 / 15 processes
    expect(j.perCc1RunA.n).toBe(2);
    expect(j.perCc1RunA.userMs.sum).toBe(1750);
    expect(j.perCc1RunA.byProgram).toEqual({
      cc1: { count: 2, userMs: 1750, systemMs: 375 },
      as: { count: 2, userMs: 40, systemMs: 10 },
      "cc1 -E": { count: 1, userMs: 20, systemMs: 10 },
      "cc1 (probe)": { count: 1, userMs: 4, systemMs: 4 }, // compiled stdin: not a file of lib/
    });
    expect(j.perCc1RunA.malformedLines).toBe(1);
  });

  it("derives the densities the workload model needs", () => {
    const w = j.densities.wholeBuild;
    expect(w.syscallsPerProcess).toBe(2.6); // 39 syscalls (run b) / 15 processes (run c)
    expect(w.minorFaultsPerUserMs).toBe(5.5); // 11000 faults / 2000 ms
    expect(w.voluntaryCtxSwPerUserMs).toBe(0.22);
    expect(w.syscallsPerUserMs).toBe(0.0195); // 39 / 2000
    expect(w.execsPerProcess).toBe(0.933);
    const c = j.densities.cc1;
    expect(c.syscallsPerUserMs).toBe(0.005); // 7 / 1400
    expect(c.minorFaultsPerUserMs).toBe(5.714); // 8000 / 1400
    expect(c.shareOfBuildUserCpu).toBe(0.7); // 1400 / 2000
    expect(c.shareOfBuildSyscalls).toBe(0.179); // 7 / 39
    // everything but the one cc1 of a compiled file: 14 processes; 2000 - 1750 user ms (run a),
    // 11000 - 8000 faults (run a minus run c's cc1), 39 - 7 syscalls (run b)
    expect(j.densities.restOfBuild).toEqual({ processes: 14, userMsPerProcess: 17.857, minorFaultsPerProcess: 214.3,
      syscallsPerProcess: 2.3, execsPerProcess: 0.929, syscallsPerUserMs: 0.128, minorFaultsPerUserMs: 12 });
    expect(Object.keys(j.method)).toEqual(expect.arrayContaining(["totals", "processes", "syscalls", "perCc1", "densities", "caveats"]));
  });

  it("writes one CSV row per cc1 with run a's -time numbers matched by source", () => {
    expect(csv[0]).toMatch(/^source,user_ms,system_ms,minor_faults/);
    expect(csv.slice(1)).toEqual(["lib/a.c,1400,250,8000,1,6,40,90000,1500.4,1500,250"]);
  });

  it("reads gzipped logs (NAME.gz) the same as plain ones", () => {
    const gz = path.join(dir, "gz");
    rmSync(gz, { recursive: true, force: true });
    mkdirSync(gz);
    for (const f of readdirSync(FIXTURE)) {
      if (f === "strace-process.txt" || f === "gcc-time-a.txt") writeFileSync(path.join(gz, `${f}.gz`), gzipSync(readFileSync(path.join(FIXTURE, f))));
      else copyFileSync(path.join(FIXTURE, f), path.join(gz, f));
    }
    const out = path.join(dir, "gz.json");
    const r = spawnSync(process.execPath, ["scripts/measure/summarize.mjs", "--results", gz, "--out", out], { cwd: root, encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(out, "utf8"))).toEqual(j);
  });
});
