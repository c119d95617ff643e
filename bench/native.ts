// Builds and drives the native C baselines (bench/native/x86.c, arm64.c, x86-ept.c):
// compiled at bench time with the system `cc -O2`, fed one scenario per run
// through a temp file (each input format is documented at the top of its .c
// file), timed in its own process with clock_gettime.

import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MmuSnapshot } from "./ts-baseline.js";
import type { Arm64Snapshot } from "./ts-baseline-arm64.js";
import { ROOT } from "./common.js";

/** One kernel's figures as printed by x86-native and arm64-native. */
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

/** Compiles bench/native/<arch>.c into bench/.out/<arch>-native; returns the binary path, or a reason it cannot. */
export function compileNative(arch: "x86" | "arm64" | "x86-ept" = "x86"): { binary: string } | { skipped: string } {
  const src = path.join(ROOT, `bench/native/${arch}.c`);
  const outDir = path.join(ROOT, "bench/.out");
  mkdirSync(outDir, { recursive: true });
  const binary = path.join(outDir, `${arch}-native`);
  const r = spawnSync("cc", ["-O2", "-o", binary, src], { encoding: "utf8" });
  if (r.error) return { skipped: `cc not available (${r.error.message})` };
  if (r.status !== 0) return { skipped: `cc -O2 failed:\n${r.stderr}` };
  return { binary };
}

/** Little-endian u32 fields of a native input file. */
export function u32s(...xs: number[]): Buffer {
  const b = Buffer.alloc(4 * xs.length);
  xs.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
}

/** Little-endian u64 fields of a native input file. */
export function u64s(...xs: bigint[]): Buffer {
  const b = Buffer.alloc(8 * xs.length);
  xs.forEach((x, i) => b.writeBigUInt64LE(BigInt.asUintN(64, x), 8 * i));
  return b;
}

/** The bytes behind a typed array, without a copy. */
export const bytesOf = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/**
 * Writes `input` to a temp file, runs `binary INPUT MS ...extra` and parses
 * its stdout: one JSON NativeResult per line.
 */
export function runNativeInput(binary: string, input: Buffer[], ms: number, extra: string[] = []): NativeResult[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), "vmmu-bench-"));
  const file = path.join(dir, "scenario.bin");
  try {
    writeFileSync(file, Buffer.concat(input));
    const r = spawnSync(binary, [file, String(ms), ...extra], { encoding: "utf8", timeout: 120_000 });
    if (r.status !== 0) throw new Error(`${path.basename(binary)} failed (${r.status ?? r.signal}): ${r.stderr}`);
    return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as NativeResult);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs both native kernels over `snap` and the address list; `ms` is the budget per kernel. */
export function runNative(binary: string, snap: MmuSnapshot, va: BigUint64Array, access: Uint8Array, user: boolean, ms: number): NativeResult[] {
  const c = snap.control;
  return runNativeInput(binary, [
    u32s(0x31424d56, 1),
    u64s(c.cr0, c.cr3, c.cr4, c.efer, c.pkru, c.rflags),
    u32s(snap.maxPhysAddrBits, snap.tlbOn ? 1 : 0, snap.curCtx, snap.curTag, snap.globTag, snap.globLive ? 1 : 0,
      user ? 1 : 0, va.length, snap.tlbEntries, 0),
    u64s(snap.imageBase, BigInt(snap.image.length)),
    bytesOf(snap.image),
    bytesOf(snap.tlb),
    bytesOf(va),
    bytesOf(access),
  ], ms);
}

/**
 * Runs both arm64 native kernels over `snap` and the address list (input
 * format: bench/native/arm64.c); a batch repetition covers `chunk`
 * addresses, a single-call repetition `singleChunk` (the next slice of the
 * list each time).
 */
export function runNativeArm64(binary: string, snap: Arm64Snapshot, va: BigUint64Array, access: Uint8Array, el0: boolean, ms: number,
  chunk = va.length, singleChunk = va.length): NativeResult[] {
  const r = snap.regs;
  return runNativeInput(binary, [
    u32s(0x31414d56, 2),
    u64s(r.ttbr0, r.ttbr1, r.tcr, r.sctlr, r.vttbr, r.vtcr, r.hcr),
    u32s(r.pan ? 1 : 0, snap.tlbOn ? 1 : 0, snap.curTag, snap.globTag, snap.globLive ? 1 : 0, snap.s2Tag,
      el0 ? 1 : 0, va.length, snap.tlbEntries, chunk, singleChunk),
    u64s(snap.imageBase, BigInt(snap.image.length)),
    bytesOf(snap.image),
    bytesOf(snap.tlb),
    bytesOf(va),
    bytesOf(access),
  ], ms);
}
