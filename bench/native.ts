// Builds and drives the native C baseline (bench/native/x86.c): compiled at
// bench time with the system `cc -O2`, fed one scenario per run through a
// temp file (the input format is documented at the top of x86.c), timed in
// its own process with clock_gettime.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MmuSnapshot } from "./ts-baseline.js";
import { ROOT } from "./common.js";

/** One kernel's figures as printed by x86-native. */
export interface NativeResult {
  kernel: "batch" | "single";
  nsPerOp: number;
  minNsPerOp: number;
  reps: number;
  opsPerRep: number;
  hits: number;
  misses: number;
  walks: number;
  ptRefs: number;
  adWrites: number;
  checksum: number;
  sink: number;
}

/** Compiles x86.c into bench/.out; returns the binary path, or a reason it cannot. */
export function compileNative(): { binary: string } | { skipped: string } {
  const src = path.join(ROOT, "bench/native/x86.c");
  const outDir = path.join(ROOT, "bench/.out");
  mkdirSync(outDir, { recursive: true });
  const binary = path.join(outDir, "x86-native");
  const r = spawnSync("cc", ["-O2", "-o", binary, src], { encoding: "utf8" });
  if (r.error) return { skipped: `cc not available (${r.error.message})` };
  if (r.status !== 0) return { skipped: `cc -O2 failed:\n${r.stderr}` };
  return { binary };
}

function u32s(...xs: number[]): Buffer {
  const b = Buffer.alloc(4 * xs.length);
  xs.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
}

function u64s(...xs: bigint[]): Buffer {
  const b = Buffer.alloc(8 * xs.length);
  xs.forEach((x, i) => b.writeBigUInt64LE(BigInt.asUintN(64, x), 8 * i));
  return b;
}

/** Runs both native kernels over `snap` and the address list; `ms` is the budget per kernel. */
export function runNative(binary: string, snap: MmuSnapshot, va: BigUint64Array, access: Uint8Array, user: boolean, ms: number): NativeResult[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vmmu-bench-"));
  const file = path.join(dir, "scenario.bin");
  try {
    const c = snap.control;
    writeFileSync(file, Buffer.concat([
      u32s(0x31424d56, 1),
      u64s(c.cr0, c.cr3, c.cr4, c.efer, c.pkru, c.rflags),
      u32s(snap.maxPhysAddrBits, snap.tlbOn ? 1 : 0, snap.curCtx, snap.curTag, snap.globTag, snap.globLive ? 1 : 0,
        user ? 1 : 0, va.length, snap.tlbEntries, 0),
      u64s(snap.imageBase, BigInt(snap.image.length)),
      Buffer.from(snap.image.buffer, snap.image.byteOffset, snap.image.byteLength),
      Buffer.from(snap.tlb.buffer, snap.tlb.byteOffset, snap.tlb.byteLength),
      Buffer.from(va.buffer, va.byteOffset, va.byteLength),
      Buffer.from(access.buffer, access.byteOffset, access.byteLength),
    ]));
    const r = spawnSync(binary, [file, String(ms)], { encoding: "utf8", timeout: 120_000 });
    if (r.status !== 0) throw new Error(`x86-native failed (${r.status ?? r.signal}): ${r.stderr}`);
    return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as NativeResult);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
