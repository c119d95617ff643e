// Shared benchmark plumbing: command-line options, the machine record printed
// with every run, a small seeded PRNG, tinybench result helpers and markdown
// tables. Nothing here measures anything.

import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { Bench, Task } from "tinybench";
import { coreHash } from "../src/index.js";

/** Options shared by every bench file: `--quick` shortens every time budget. */
export interface BenchArgs {
  quick: boolean;
  /** Time budget per tinybench task, ms. */
  time: number;
  warmupTime: number;
  /** Time budget per native kernel, ms (split in 10 repetitions). */
  nativeMs: number;
}

export function parseArgs(argv: string[] = process.argv.slice(2)): BenchArgs {
  const quick = argv.includes("--quick");
  const timeArg = argv.find((a) => a.startsWith("--time="));
  const time = timeArg ? Number(timeArg.slice(7)) : quick ? 100 : 500;
  if (!Number.isFinite(time) || time <= 0) throw new RangeError(`bench: bad ${timeArg}`);
  return { quick, time, warmupTime: quick ? 50 : 200, nativeMs: time };
}

/** The repository root (bench files run bundled from bench/.out/). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function firstLine(cmd: string, args: string[]): string | undefined {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: ROOT });
  if (r.status !== 0 || typeof r.stdout !== "string") return undefined;
  return r.stdout.split("\n")[0]?.trim() || undefined;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  cc: string;
  coreHash: string;
  commit: string;
  date: string;
}

/** CPU model, cores, Node, cc, wasm core hash and git commit of this run. */
export function machineInfo(): MachineInfo {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1]) cpu = m[1].trim();
  } catch { /* not Linux */ }
  let commit = firstLine("git", ["rev-parse", "--short=12", "HEAD"]) ?? "unknown";
  try {
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: ROOT, encoding: "utf8" }).trim() !== "";
    if (dirty) commit += " (+ uncommitted changes)";
  } catch { /* no git */ }
  return {
    cpu,
    cores: os.availableParallelism?.() ?? os.cpus().length,
    node: process.version,
    cc: firstLine("cc", ["--version"]) ?? "absent",
    coreHash,
    commit,
    date: new Date().toISOString(),
  };
}

export function printMachineInfo(title: string, info: MachineInfo, args: BenchArgs): void {
  console.log(`# ${title}\n`);
  console.log(`- CPU: ${info.cpu}, ${info.cores} cores (os.availableParallelism)`);
  console.log(`- Node ${info.node}; cc: ${info.cc}`);
  console.log(`- wasm core ${info.coreHash}; git ${info.commit}`);
  console.log(`- ${info.date}; ${args.quick ? "--quick, " : ""}${args.time} ms per task (medians; the machine is shared and noisy)\n`);
}

/** xorshift32: deterministic address lists, so every run measures the same work. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    this.s = x;
    return x;
  }
  /** Uniform in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = xs[i]!;
      xs[i] = xs[j]!;
      xs[j] = t;
    }
    return xs;
  }
}

/** Median latency of a finished tinybench task, in ns per operation (`opsPerCall` operations per call). */
export function nsPerOp(task: Task | undefined, opsPerCall: number): number {
  const r = task?.result;
  if (!r || (r.state !== "completed" && r.state !== "aborted-with-statistics")) {
    const why = r && r.state === "errored" ? `: ${r.error.message}` : "";
    throw new Error(`bench: task ${task?.name ?? "?"} did not complete${why}`);
  }
  return (r.latency.p50 * 1e6) / opsPerCall;
}

/** Samples behind a task's median. */
export function samples(task: Task | undefined): number {
  const r = task?.result;
  return r && (r.state === "completed" || r.state === "aborted-with-statistics") ? r.latency.samplesCount : 0;
}

/** Mixes a u32 into a running checksum (same formula as bench/native/x86.c). */
export function mix(h: number, x: number): number {
  return (Math.imul(h, 31) + (x >>> 0)) >>> 0;
}

export const fmt = {
  ns: (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "—" : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)),
  mops: (ns: number | undefined) => (ns === undefined || !Number.isFinite(ns) || ns <= 0 ? "—" : (1e3 / ns).toFixed(ns < 10 ? 0 : 1)),
  ratio: (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || !(b > 0) ? "—" : `${(a / b).toFixed(2)}×`),
  per: (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "—" : Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1)),
  hex: (v: number) => `0x${(v >>> 0).toString(16).padStart(8, "0")}`,
};

/** Prints a markdown table with padded columns (right-aligned except the first `left` columns). */
export function printTable(headers: string[], rows: string[][], left = 1): void {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const cell = (s: string, i: number) => (i < left ? s.padEnd(w[i]!) : s.padStart(w[i]!));
  console.log(`| ${headers.map(cell).join(" | ")} |`);
  console.log(`|${w.map((n, i) => (i < left ? ` ${"-".repeat(n)} ` : ` ${"-".repeat(n - 1)}: `)).join("|")}|`);
  for (const r of rows) console.log(`| ${headers.map((_, i) => cell(r[i] ?? "", i)).join(" | ")} |`);
  console.log("");
}

/** Median of a list (undefined when empty). */
export function median(xs: readonly number[] | undefined): number | undefined {
  if (!xs || xs.length === 0) return undefined;
  const a = [...xs].sort((x, y) => x - y), m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}

/**
 * Per-round figures of a multi-round bench: every task (wasm, TS) and native
 * kernel records one ns/op value per round; reports take the median over
 * rounds, and ratios as the median of the round-by-round ratios (the machine's
 * load changes minute to minute, so only same-round figures are compared).
 */
export class Rounds {
  readonly values = new Map<string, number[]>();
  record(name: string, v: number): void {
    const a = this.values.get(name) ?? [];
    a.push(v);
    this.values.set(name, a);
  }
  ns(name: string): number | undefined {
    return median(this.values.get(name));
  }
  private pairs(a: string, b: string): number[] | undefined {
    const xs = this.values.get(a), ys = this.values.get(b);
    if (!xs || !ys || xs.length !== ys.length) return undefined;
    return xs.map((x, i) => x / ys[i]!);
  }
  /** Median over rounds of the per-round ratio a/b. */
  ratio(a: string, b: string): number | undefined {
    return median(this.pairs(a, b));
  }
  /** "min–max" of the per-round ratios a/b. */
  spread(a: string, b: string): string {
    const r = this.pairs(a, b);
    return r ? `${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}` : "—";
  }
  /** "min–max" of 1000/ns (M ops/s) over the rounds of `name`. */
  mopsRange(name: string): string {
    const xs = (this.values.get(name) ?? []).map((v) => 1e3 / v);
    return xs.length ? `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)} M/s` : "—";
  }
  toJSON(): Record<string, number[]> {
    return Object.fromEntries(this.values);
  }
}

/**
 * Adds tinybench task `name` and records, over its measured phase, the delta
 * of every counter `counters()` returns, per operation, into `perOp`.
 */
export function addCounted<C extends Record<string, number>>(bench: Bench, name: string, opsPerCall: number, fn: () => void,
  counters: () => C, perOp: Map<string, C>): void {
  let calls = 0;
  let before: C | undefined;
  bench.add(name, () => { fn(); calls++; }, {
    beforeAll(mode) { if (mode === "run") { calls = 0; before = counters(); } },
    afterAll(mode) {
      if (mode !== "run" || !before) return;
      const after = counters(), ops = calls * opsPerCall, b = before;
      perOp.set(name, Object.fromEntries(Object.keys(after).map((k) => [k, (after[k]! - b[k]!) / ops])) as C);
    },
  });
}

/** PASS / MISS for a target check; undefined (no native C to compare with) prints as n/a. */
export const verdict = (ok: boolean | undefined): string => (ok === undefined ? "n/a (no native C)" : ok ? "PASS" : "MISS");

/** Median cost of an empty performance.now() pair, in ms (subtracted from single-operation timings). */
export function calibrateTimer(): number {
  const d: number[] = [];
  for (let i = 0; i < 20001; i++) {
    const t0 = performance.now();
    d.push(performance.now() - t0);
  }
  d.sort((a, b) => a - b);
  return d[10000]!;
}
