// Shared benchmark plumbing: command-line options, the machine record printed
// with every run, a small seeded PRNG, tinybench result helpers and markdown
// tables. Nothing here measures anything.

import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { Task } from "tinybench";
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
