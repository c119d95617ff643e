// Seeded PRNG for randomized tests (xoshiro128**). Every randomized test
// takes its seed from VMMU_SEED if set, else a fresh one, and prints it on
// failure so a run can be replayed exactly.

import { appendFileSync } from "node:fs";

export class Rng {
  private s: Uint32Array;
  constructor(readonly seed: number) {
    this.s = new Uint32Array(4);
    let x = seed >>> 0 || 0x9e3779b9;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  /** Uniform u32. */
  u32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!; s[3]! ^= s[1]!; s[1]! ^= s[2]!; s[0]! ^= s[3]!;
    s[2]! ^= t; s[3] = rotl(s[3]!, 11);
    return r;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  /** Uniform u64 as bigint. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The seed for this run: VMMU_SEED, or a fresh random one. */
export function testSeed(): number {
  const env = typeof process !== "undefined" ? process.env.VMMU_SEED : undefined;
  return env ? Number(env) >>> 0 : (Math.random() * 0x1_0000_0000) >>> 0;
}

/** Prefix for assertion messages so a failure names the seed to replay with. */
export function seedNote(seed: number, extra = ""): string {
  return `[replay with VMMU_SEED=${seed}${extra ? " " + extra : ""}]`;
}

/**
 * Reports to `npm run fuzz` (scripts/fuzz.mjs) how many random cases a randomized test ran:
 * when VMMU_FUZZ_COUNTS names a file, appends `{suite, seed, cases}` to it as one JSON line;
 * a no-op otherwise. Call it once the cases have run, before the test's final assertions.
 */
export function fuzzCount(suite: string, cases: number): void {
  const file = typeof process !== "undefined" ? process.env.VMMU_FUZZ_COUNTS : undefined;
  if (!file) return;
  const seed = process.env.VMMU_SEED ? Number(process.env.VMMU_SEED) >>> 0 : null;
  appendFileSync(file, JSON.stringify({ suite, seed, cases }) + "\n");
}
