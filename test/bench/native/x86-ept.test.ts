// The native C 2D walk of the EPT benchmark (bench/native/x86-ept.c) against
// the reference EPT walker (src/ref/ept-walk.ts refTranslateX86Ept, written
// from the SDM) on the same bytes: the benchmark's own tables cold (every
// A/D update still to do), then the same tables randomly damaged (not-present
// and misconfigured EPT entries, read-only guest tables, reserved bits, lost
// A bits, pointers out of memory) under random guest controls, EPTP A/D and
// MBEC. Every result (status, pa, gpa, level, page size, #PF error code, exit
// qualification, faulting gpa) and the memory after (A/D side effects) agree,
// so the C baseline the wasm 2D walk is timed against computes the same thing.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CR0, CR4, EFER, RFLAGS } from "../../../src/index.js";
import { refEptStats, refTranslateX86Ept, type RefX86EptResult } from "../../../src/ref/ept-walk.js";
import type { RefAccess, RefMemory } from "../../../src/ref/x86-walk.js";
import {
  eptWalkScenario, imageOf, nativeInput, nativeState, EPT_TABLES, GUEST_TABLES, type EptScenario, type NativeEptState,
} from "../../../bench/x86-ept-scenarios.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../../helpers/rng.js";
import { skipped, verbose } from "../../helpers/note.js";

const SRC = path.resolve(import.meta.dirname, "../../../bench/native/x86-ept.c");
const KINDS: readonly RefAccess[] = ["read", "write", "fetch"];

/** Host-physical memory for the reference walker: a flat byte image at `base`; outside it, no RAM. */
class ImageMemory implements RefMemory {
  private readonly dv: DataView;
  constructor(readonly bytes: Uint8Array, private readonly base: bigint) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private off(hpa: bigint): number | undefined {
    const o = hpa - this.base;
    return o >= 0n && o + 8n <= BigInt(this.bytes.length) ? Number(o) : undefined;
  }
  read64(hpa: bigint): bigint | undefined {
    const o = this.off(hpa);
    return o === undefined ? undefined : this.dv.getBigUint64(o, true);
  }
  cmpxchg64(hpa: bigint, expected: bigint, desired: bigint): boolean {
    const o = this.off(hpa);
    if (o === undefined) throw new Error(`cmpxchg64 outside memory at 0x${hpa.toString(16)}`);
    if (this.dv.getBigUint64(o, true) !== expected) return false;
    this.dv.setBigUint64(o, desired, true);
    return true;
  }
}

const h = (v: bigint | number) => v.toString(16);

/** A reference result in the line format of x86-ept.c --check. */
function refLine(r: RefX86EptResult): string {
  if (r.ok) return `0 ${h(r.pa)} ${h(r.gpa)} ${h(r.level)} ${h(Math.log2(r.pageSize))} 0 0 0`;
  switch (r.kind) {
    case "page-fault": return `1 0 0 ${h(r.level)} 0 ${h(r.errorCode)} 0 0`;
    case "general-protection": return "2 0 0 0 0 0 0 0";
    case "abort": return `3 0 ${h(r.hpa)} ${h(r.level)} 0 ${r.stage === "ept" ? 1 : 2} 0 ${h(r.gpa)}`;
    case "ept-violation": return `6 0 0 ${h(r.level)} 0 0 ${h(r.qualification)} ${h(r.gpa)}`;
    case "ept-misconfig": return `7 0 0 ${h(r.level)} 0 0 0 ${h(r.gpa)}`;
  }
}

let dir = "";
let binary: string | undefined;
let skip = "";
/** Results by status (the first field of a --check line), over the test file. */
const tally = new Map<string, number>();
const scenarios = new Map<4 | 5, { s: EptScenario; st: NativeEptState; image: Uint8Array }>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "vmmu-ept-native-"));
  const out = path.join(dir, "x86-ept-native");
  const r = spawnSync("cc", ["-O2", "-Wall", "-Werror", "-o", out, SRC], { encoding: "utf8" });
  if (r.error) skip = `cc not available (${r.error.message})`;
  else if (r.status !== 0) throw new Error(`cc failed on bench/native/x86-ept.c:\n${r.stderr}`);
  else binary = out;
  if (skip) skipped("test/bench/native/x86-ept.test.ts", skip);
  for (const levels of [4, 5] as const) {
    const s = await eptWalkScenario(levels);
    scenarios.set(levels, { s, st: nativeState(s), image: imageOf(s) });
    s.machine.dispose();
  }
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs x86-ept.c --check: one line per address, and the memory image after. */
function runCheck(st: NativeEptState, image: Uint8Array, va: BigUint64Array, access: Uint8Array): { lines: string[]; after: Uint8Array } {
  const input = path.join(dir, "in.bin"), outImage = path.join(dir, "out.bin");
  writeFileSync(input, Buffer.concat(nativeInput(st, GUEST_TABLES, image, va, access)));
  const r = spawnSync(binary!, [input, "--check", outImage], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`x86-ept-native --check failed (${r.status ?? r.signal}): ${r.stderr}`);
  return { lines: r.stdout.trimEnd().split("\n"), after: new Uint8Array(readFileSync(outImage)) };
}

/** The reference over a copy of `image`, address by address in order. */
function runRef(st: NativeEptState, image: Uint8Array, va: BigUint64Array, access: Uint8Array) {
  const mem = new ImageMemory(image.slice(), GUEST_TABLES);
  const stats = refEptStats();
  const opts = { maxPhysAddrBits: st.maxPhysAddrBits, executeOnly: true, mbec: st.mbec, adSupported: true, fiveLevel: true, stats };
  const guest = { cr0: st.cr0, cr3: st.cr3, cr4: st.cr4, efer: st.efer, pkru: st.pkru, rflags: st.rflags, maxPhysAddrBits: st.maxPhysAddrBits };
  const lines = Array.from(va, (v, i) => refLine(refTranslateX86Ept(mem, guest, st.eptp, v, KINDS[access[i]!]!, st.user, opts)));
  return { lines, after: mem.bytes, stats };
}

function firstWordDiff(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.length !== b.length) return `image sizes ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i += 8) {
    for (let j = i; j < i + 8; j++) {
      if (a[j] !== b[j]) {
        const w = (x: Uint8Array) => h(new DataView(x.buffer, x.byteOffset).getBigUint64(i, true));
        return `word at hpa 0x${h(GUEST_TABLES + BigInt(i))}: C 0x${w(a)}, reference 0x${w(b)}`;
      }
    }
  }
  return undefined;
}

function expectSame(st: NativeEptState, image: Uint8Array, va: BigUint64Array, access: Uint8Array, note: string) {
  const c = runCheck(st, image, va, access);
  const ref = runRef(st, image, va, access);
  expect(c.lines.length, note).toBe(va.length);
  for (let i = 0; i < va.length; i++) {
    if (c.lines[i] !== ref.lines[i]) {
      expect.fail(`${note} address ${i} (va 0x${h(va[i]!)}, ${KINDS[access[i]!]}): C "${c.lines[i]}", reference "${ref.lines[i]}"`);
    }
  }
  expect(firstWordDiff(c.after, ref.after), `${note} memory after`).toBeUndefined();
  for (const l of ref.lines) tally.set(l.slice(0, 1), (tally.get(l.slice(0, 1)) ?? 0) + 1);
  return ref;
}

describe("bench/native/x86-ept.c: the C 2D walk computes what the reference EPT walker computes", () => {
  it("translates the benchmark's tables cold exactly as the reference, A/D updates included, and loads 24 / 35 entries per walk", (ctx) => {
    if (!binary) ctx.skip();
    for (const levels of [4, 5] as const) {
      const { s, st, image } = scenarios.get(levels)!;
      const n = 2048;
      const va = s.va.slice(0, n), access = s.access.slice(0, n);
      const ref = expectSame(st, image, va, access, `${s.name} cold:`);
      expect(ref.lines.every((l) => l.startsWith("0 ")), "every benchmark address translates").toBe(true);
      expect(ref.stats.guestLoads + ref.stats.eptLoads).toBe(n * s.expectedPtRefs);
      expect(ref.stats.adWrites).toBeGreaterThan(0);
    }
  });

  it("times steady-state walks that load 24 (4×4) and 35 (5×5) entries each, with no A/D writes and no faults", (ctx) => {
    if (!binary) ctx.skip();
    for (const levels of [4, 5] as const) {
      const { s, st, image } = scenarios.get(levels)!;
      const input = path.join(dir, "timing.bin");
      writeFileSync(input, Buffer.concat(nativeInput(st, GUEST_TABLES, image, s.va, s.access)));
      const r = spawnSync(binary!, [input, "1", "2048"], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as Record<string, number>;
      expect(res).toMatchObject({ walks: 1, ptRefs: s.expectedPtRefs, guestRefs: levels, eptRefs: (levels + 1) * levels, adWrites: 0, faults: 0, restarts: 0 });
      expect(res.nsPerOp).toBeGreaterThan(0);
    }
  });

  it("agrees with the reference on damaged tables under random controls, EPTP A/D and MBEC", (ctx) => {
    if (!binary) ctx.skip();
    const seed = testSeed();
    const rng = new Rng(seed);
    tally.clear();
    const rounds = 12, n = 512;
    for (let round = 0; round < rounds; round++) {
      const levels = rng.chance(0.5) ? 4 : 5;
      const { s, st: base, image: clean } = scenarios.get(levels)!;
      const image = clean.slice();
      const dv = new DataView(image.buffer);
      const entries = (lo: bigint, hi: bigint) => {
        const at: number[] = [];
        for (let o = Number(lo - GUEST_TABLES); o < Number(hi - GUEST_TABLES); o += 8) if (dv.getBigUint64(o, true) !== 0n) at.push(o);
        return at;
      };
      const eptWords = entries(EPT_TABLES, GUEST_TABLES + BigInt(image.length));
      const guestWords = entries(GUEST_TABLES, EPT_TABLES);
      const outside = GUEST_TABLES + BigInt(image.length) + BigInt(rng.int(1 << 20)) * 4096n;
      const eptOps: ((e: bigint) => bigint)[] = [
        (e) => e & ~7n, (e) => (e & ~7n) | 2n, (e) => e & ~2n, (e) => e & ~4n, (e) => e & ~1n, (e) => e | 0x400n,
        (e) => e | (1n << BigInt(3 + rng.int(5))), (e) => e | (1n << BigInt(46 + rng.int(6))), (e) => (e & ~0x38n) | (BigInt(rng.int(8)) << 3n),
        (e) => e | 0x80n, (e) => e | 0x300n, (e) => (e & ~0x000f_ffff_ffff_f000n) | outside,
      ];
      const guestOps: ((e: bigint) => bigint)[] = [
        (e) => e & ~1n, (e) => e & ~2n, (e) => e & ~4n, (e) => e | (1n << 63n), (e) => e & ~0x20n, (e) => e & ~0x60n,
        (e) => e | 0x80n, (e) => e | (1n << BigInt(46 + rng.int(6))), (e) => e | (BigInt(rng.int(16)) << 59n),
        (e) => (e & ~0x000f_ffff_ffff_f000n) | (BigInt(rng.int(1 << 20)) << 12n),
      ];
      const damage = (words: number[], ops: ((e: bigint) => bigint)[], count: number) => {
        for (let k = 0; k < count && words.length; k++) {
          const o = rng.pick(words);
          dv.setBigUint64(o, BigInt.asUintN(64, rng.pick(ops)(dv.getBigUint64(o, true))), true);
        }
      };
      damage(eptWords, eptOps, rng.int(600));
      damage(guestWords, guestOps, rng.int(600));
      if (rng.chance(0.5)) for (const o of guestWords) if (rng.chance(0.3)) dv.setBigUint64(o, dv.getBigUint64(o, true) & ~0x60n, true);

      const va = new BigUint64Array(n), access = new Uint8Array(n);
      const pagingOff = rng.chance(0.1);
      for (let i = 0; i < n; i++) {
        const pick = rng.int(20);
        if (pagingOff) va[i] = pick < 15 ? 0x4000_0000n + BigInt(rng.int(16384)) * 0x1_0000n + BigInt(rng.int(4096)) : rng.u64() & 0xffff_ffffn;
        else va[i] = pick < 17 ? s.va[rng.int(s.va.length)]! ^ BigInt(rng.int(4096)) : pick < 19 ? rng.u64() : s.va[rng.int(s.va.length)]! ^ (1n << BigInt(12 + rng.int(40)));
        access[i] = rng.int(3);
      }
      const st: NativeEptState = {
        ...base,
        cr0: pagingOff ? base.cr0 & ~CR0.PG : rng.chance(0.5) ? base.cr0 : base.cr0 & ~CR0.WP,
        cr4: base.cr4 | (rng.chance(0.3) ? CR4.SMEP : 0n) | (rng.chance(0.3) ? CR4.SMAP : 0n) | (rng.chance(0.3) ? CR4.PKE : 0n),
        efer: rng.chance(0.8) ? base.efer : base.efer & ~EFER.NXE,
        pkru: rng.chance(0.5) ? 0n : BigInt(rng.u32()),
        rflags: rng.chance(0.5) ? 0n : RFLAGS.AC,
        eptp: rng.chance(0.7) ? base.eptp : base.eptp & ~(1n << 6n),
        mbec: rng.chance(0.3),
        user: rng.chance(0.7),
      };
      expectSame(st, image, va, access, `${seedNote(seed)} round ${round} (${s.name}, eptp 0x${h(st.eptp)}, mbec ${st.mbec}, user ${st.user}, paging ${!pagingOff}):`);
    }
    const names: Record<string, string> = { 0: "ok", 1: "#PF", 2: "#GP", 3: "abort", 6: "EPT violation", 7: "EPT misconfig" };
    verbose(`x86-ept.c vs reference: seed ${seed}, ${rounds * n} translations: ${[...tally].sort().map(([k, v]) => `${names[k] ?? k} ${v}`).join(", ")}`);
    fuzzCount("x86-ept-native", rounds * n);
    for (const k of ["0", "1", "2", "6", "7"]) expect(tally.get(k) ?? 0, `${seedNote(seed)} no ${names[k]} among the results`).toBeGreaterThan(0);
  });
});
