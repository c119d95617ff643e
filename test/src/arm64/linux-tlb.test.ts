/**
 * Linux arm64 range TLB invalidation replayed as TLBI lists:
 * KVM kvm_tlb_flush_vmid_range (arch/arm64/kvm/hyp/vhe/tlb.c), tlbflush.h (v6.5/v6.6
 * ascending __flush_tlb_range_op and its 2^21-page bug; the v6.9+ descending
 * loop) and worked examples (operands worked out by hand from tlbflush.h's
 * __TLBI_VADDR_RANGE and __TLBI_RANGE_NUM), plus the tiling property:
 * decoded with decodeTlbi, the emitted ops cover [start, start + pages·4K)
 * exactly, low to high.
 */
import { describe, expect, it } from "vitest";
import { decodeTlbi } from "../../../src/arm64/tlbi.js";
import {
  flushTlbRangeOp, kvmTlbFlushVmidRange, linuxFlushTlbRange, MAX_TLBI_OPS, MAX_TLBI_RANGE_PAGES,
  tlbiRangeNum, USER_ASID_FLAG, type LinuxTlbVariant, type TlbiCall,
} from "../../../src/arm64/linux-tlb.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../../helpers/rng.js";

const K4 = 0x1000n;
const M2 = 0x20_0000n;
const MAX = MAX_TLBI_RANGE_PAGES;
const hex = (v: bigint): string => "0x" + v.toString(16);

/** One expected op of a worked example: "s" = single (non-range), "r" = range; the operand. */
type Step = readonly ["s" | "r", bigint];

/** Worked examples, rows 1–13: start, pages, v6.5/v6.6 ascending, v6.9+ descending. */
const WORKED: readonly {
  row: number; start: bigint; pages: bigint; v66: readonly Step[] | "buggy"; v69: readonly Step[];
}[] = [
  { row: 1, start: 0x4000_0000n, pages: 1n, v66: [["s", 0x40000n]], v69: [["s", 0x40000n]] },
  {
    row: 2, start: 0x4000_0000n, pages: 3n,
    v66: [["s", 0x40000n], ["r", 0x400000040001n]],
    v69: [["r", 0x400000040000n], ["s", 0x40002n]],
  },
  { row: 3, start: 0x8000_0000n, pages: 512n, v66: [["r", 0x538000080000n]], v69: [["r", 0x538000080000n]] },
  {
    row: 4, start: 0x8000_0000n, pages: 515n,
    v66: [["s", 0x80000n], ["r", 0x400000080001n], ["r", 0x538000080003n]],
    v69: [["r", 0x538000080000n], ["r", 0x400000080200n], ["s", 0x80202n]],
  },
  {
    row: 5, start: 0x8000_0000n, pages: 100n,
    v66: [["r", 0x488000080000n], ["r", 0x500000080024n]],
    v69: [["r", 0x500000080000n], ["r", 0x488000080040n]],
  },
  {
    row: 6, start: 0x8000_0000n, pages: 127n,
    v66: [["s", 0x80000n], ["r", 0x4f0000080001n], ["r", 0x50000008003fn]],
    v69: [["r", 0x500000080000n], ["r", 0x4f0000080040n], ["s", 0x8007en]],
  },
  {
    row: 7, start: 0x8000_0000n, pages: 33n,
    v66: [["s", 0x80000n], ["r", 0x478000080001n]],
    v69: [["r", 0x478000080000n], ["s", 0x80020n]],
  },
  { row: 8, start: 0x4000_0000n, pages: 262144n, v66: [["r", 0x718000040000n]], v69: [["r", 0x718000040000n]] },
  { row: 9, start: 0x4000_0000n, pages: 524288n, v66: [["r", 0x738000040000n]], v69: [["r", 0x738000040000n]] },
  {
    row: 10, start: 0x4000_1000n, pages: MAX - 1n,
    v66: [
      ["s", 0x40001n], ["r", 0x4f0000040002n], ["r", 0x5f0000040040n], ["r", 0x6f0000040800n], ["r", 0x7f0000050000n],
    ],
    v69: [
      ["r", 0x7f0000040001n], ["r", 0x6f0000230001n], ["r", 0x5f000023f801n], ["r", 0x4f000023ffc1n], ["s", 0x23ffffn],
    ],
  },
  { row: 11, start: 0x4000_0000n, pages: MAX, v66: "buggy", v69: [["r", 0x7f8000040000n]] },
  { row: 12, start: 0xffff_bfe0_0000n, pages: 512n, v66: [["r", 0x538ffffbfe00n]], v69: [["r", 0x538ffffbfe00n]] },
  {
    row: 13, start: 0xffff_c000_0000n, pages: 261632n,
    v66: [["r", 0x5b8ffffc0000n], ["r", 0x6f0ffffc0600n], ["r", 0x710ffffcfe00n]],
    v69: [["r", 0x710ffffc0000n], ["r", 0x6f0fffff0000n], ["r", 0x5b8ffffff800n]],
  },
];

const s1 = (steps: readonly Step[]): TlbiCall[] =>
  steps.map(([k, operand]) => ({ op: k === "s" ? "VAE1IS" : "RVAE1IS", operand }));
const s2 = (steps: readonly Step[]): TlbiCall[] =>
  steps.map(([k, operand]) => ({ op: k === "s" ? "IPAS2E1IS" : "RIPAS2E1IS", operand }));
const VMALLE1IS: TlbiCall = { op: "VMALLE1IS", operand: 0n };

/**
 * Decodes every address op and checks they cover [start, start + pages·4K)
 * exactly, in issue order. Compares in plain code and asserts once, so the
 * random sweep stays fast.
 */
function expectTiles(calls: readonly TlbiCall[], start: bigint, pages: bigint, note = ""): void {
  let next = start;
  let problem = "";
  for (const c of calls) {
    if (c.op === "VMALLE1IS") continue;
    const d = decodeTlbi(c.op, c.operand, { asid16: true });
    if (d.ignored !== null) problem ||= `${c.op} ${hex(c.operand)} ignored: ${d.ignored}`;
    if (d.startVa !== next) problem ||= `${c.op} ${hex(c.operand)} starts at ${hex(d.startVa)}, expected ${hex(next)}`;
    next = BigInt.asUintN(64, next + (d.pages << 12n));
  }
  const end = BigInt.asUintN(64, start + (pages << 12n));
  if (next !== end) problem ||= `ops end at ${hex(next)}, expected ${hex(end)}`;
  expect(problem, note).toBe("");
}

describe("worked examples", () => {
  const variants = [["v6.6", "v66"], ["v6.9", "v69"]] as const;
  for (const [variant, col] of variants) {
    describe(`${variant} (${variant === "v6.6" ? "ascending" : "descending"})`, () => {
      it.each(WORKED.filter((r) => r[col] !== "buggy").map((r) => [r.row, r] as const))(
        "row %i: __flush_tlb_range, KVM stage 2 and kvm_tlb_flush_vmid_range emit the table's operands",
        (_row, r) => {
          const steps = r[col] as readonly Step[];
          expect(linuxFlushTlbRange({ start: r.start, pages: r.pages, tlbRange: true, variant })).toEqual(s1(steps));
          expect(linuxFlushTlbRange({ start: r.start, pages: r.pages, tlbRange: true, variant, stage2: true }))
            .toEqual(s2(steps));
          expect(kvmTlbFlushVmidRange({ start: r.start, size: r.pages << 12n, tlbRange: true, variant }))
            .toEqual([...s2(steps), VMALLE1IS]);
          expectTiles(s1(steps), r.start, r.pages);
        },
      );
    });
  }
});

describe("exactly MAX_TLBI_RANGE_PAGES (2^21) pages, worked example 11", () => {
  const start = 0x4000_0000n;

  it("v6.6 KVM path: scale reaches 4 and the operand decodes to 2 pages", () => {
    const calls = kvmTlbFlushVmidRange({ start, size: MAX << 12n, tlbRange: true, variant: "v6.6" });
    expect(calls).toEqual([{ op: "RIPAS2E1IS", operand: 0x400000040000n }, VMALLE1IS]);
    const d = decodeTlbi("RIPAS2E1IS", 0x400000040000n, { asid16: true });
    expect(d).toMatchObject({ tg: 1, scale: 0, num: 0, pages: 2n, startVa: start, ignored: null });
    expect(d.pages).not.toBe(MAX);
  });

  it("v6.6 __TLBI_RANGE_NUM is -1 at every scale 0..3, 0 at scale 4", () => {
    expect([0, 1, 2, 3, 4].map((s) => tlbiRangeNum(MAX, s, "v6.6"))).toEqual([-1, -1, -1, -1, 0]);
    expect([3, 2, 1, 0].map((s) => tlbiRangeNum(MAX, s, "v6.9"))).toEqual([31, 31, 31, 31]);
  });

  it("v6.6 __flush_tlb_range never reaches the loop: pages >= MAX flushes the ASID", () => {
    expect(linuxFlushTlbRange({ start, pages: MAX, tlbRange: true, asid: 9 }))
      .toEqual([{ op: "ASIDE1IS", operand: 9n << 48n }]);
    expect(linuxFlushTlbRange({ start, pages: MAX, tlbRange: true, stage2: true }))
      .toEqual([{ op: "VMALLS12E1IS", operand: 0n }]);
  });

  it("v6.9: one RIPAS2E1IS S3 N31 = 0x7f8000040000 covering all 2^21 pages, on both paths", () => {
    const kvm = kvmTlbFlushVmidRange({ start, size: MAX << 12n, tlbRange: true, variant: "v6.9" });
    expect(kvm).toEqual([{ op: "RIPAS2E1IS", operand: 0x7f8000040000n }, VMALLE1IS]);
    expectTiles(kvm, start, MAX);
    expect(linuxFlushTlbRange({ start, pages: MAX, tlbRange: true, variant: "v6.9" }))
      .toEqual([{ op: "RVAE1IS", operand: 0x7f8000040000n }]);
  });
});

describe("flush-all thresholds (__flush_tlb_range step 2)", () => {
  const start = 0x7f00_0000_0000n;
  const asidAll: TlbiCall[] = [{ op: "ASIDE1IS", operand: 0x2a_0000_0000_0000n }];

  it.each(["v6.6", "v6.9"] as const)("%s without FEAT_TLBIRANGE: 512 strides flush the ASID, 511 are single ops", (variant) => {
    expect(linuxFlushTlbRange({ start, pages: MAX_TLBI_OPS, tlbRange: false, asid: 42, variant })).toEqual(asidAll);
    const calls = linuxFlushTlbRange({ start, pages: MAX_TLBI_OPS - 1n, tlbRange: false, asid: 42, variant });
    expect(calls).toHaveLength(511);
    expect(calls.every((c) => c.op === "VAE1IS")).toBe(true);
    expectTiles(calls, start, 511n);
    expect(calls[0]!.operand).toBe((42n << 48n) | (start >> 12n));
  });

  it("the non-range threshold counts strides: 512 × 2 MiB flush, 511 × 2 MiB are 511 ops 2 MiB apart", () => {
    expect(linuxFlushTlbRange({ start, end: start + 512n * M2, stride: M2, tlbRange: false, asid: 42 })).toEqual(asidAll);
    const calls = linuxFlushTlbRange({ start, end: start + 511n * M2, stride: M2, tlbRange: false, tlbLevel: 2 });
    expect(calls).toHaveLength(511);
    calls.forEach((c, i) => {
      expect(c.op).toBe("VAE1IS");
      expect(c.operand).toBe((0b0110n << 44n) | ((start + BigInt(i) * M2) >> 12n));
    });
  });

  it("with FEAT_TLBIRANGE, 512 pages are one range op, not a flush", () => {
    expect(linuxFlushTlbRange({ start, pages: 512n, tlbRange: true })).toEqual([
      { op: "RVAE1IS", operand: 0x5380_0000_0000n | (start >> 12n) },
    ]);
  });

  it.each([
    ["v6.6", MAX - 1n, "loop"], ["v6.6", MAX, "flush"], ["v6.6", MAX + 1n, "flush"],
    ["v6.9", MAX - 1n, "loop"], ["v6.9", MAX, "loop"], ["v6.9", MAX + 1n, "flush"],
  ] as const)("%s, %s pages with FEAT_TLBIRANGE → %s (>= vs >)", (variant, pages, what) => {
    const calls = linuxFlushTlbRange({ start, pages, tlbRange: true, asid: 42, variant });
    if (what === "flush") {
      expect(calls).toEqual(asidAll);
    } else {
      expect(calls.every((c) => c.op === "RVAE1IS" || c.op === "VAE1IS")).toBe(true);
      expectTiles(calls, start, pages);
    }
  });

  it("KPTI: the full flush is repeated for the user ASID", () => {
    expect(linuxFlushTlbRange({ start, pages: MAX, tlbRange: true, asid: 42, kpti: true })).toEqual([
      ...asidAll, { op: "ASIDE1IS", operand: 0x2b_0000_0000_0000n },
    ]);
  });
});

describe("scale boundaries and odd counts", () => {
  const start = 0x1_0000_0000n;
  const shape = (calls: TlbiCall[]): string[] =>
    calls.map((c) => {
      const d = decodeTlbi(c.op, c.operand, { asid16: true });
      return d.range ? `S${d.scale} N${d.num}` : "single";
    });

  it.each([
    [2n, ["S0 N0"], ["S0 N0"]],
    [62n, ["S0 N30"], ["S0 N30"]],
    [63n, ["single", "S0 N30"], ["S0 N30", "single"]],
    [64n, ["S1 N0"], ["S1 N0"]],
    [65n, ["single", "S1 N0"], ["S1 N0", "single"]],
    [66n, ["S0 N0", "S1 N0"], ["S1 N0", "S0 N0"]],
    [2046n, ["S0 N30", "S1 N30"], ["S1 N30", "S0 N30"]],
    [2047n, ["single", "S0 N30", "S1 N30"], ["S1 N30", "S0 N30", "single"]],
    [2048n, ["S2 N0"], ["S2 N0"]],
    [2049n, ["single", "S2 N0"], ["S2 N0", "single"]],
    [65534n, ["S0 N30", "S1 N30", "S2 N30"], ["S2 N30", "S1 N30", "S0 N30"]],
    [65535n, ["single", "S0 N30", "S1 N30", "S2 N30"], ["S2 N30", "S1 N30", "S0 N30", "single"]],
    [65536n, ["S3 N0"], ["S3 N0"]],
    [65537n, ["single", "S3 N0"], ["S3 N0", "single"]],
    [32n * 65536n - 65536n, ["S3 N30"], ["S3 N30"]],
  ] as const)("%s pages: v6.6 %j, v6.9 %j", (pages, v66, v69) => {
    const a = linuxFlushTlbRange({ start, pages, tlbRange: true, variant: "v6.6" });
    const b = linuxFlushTlbRange({ start, pages, tlbRange: true, variant: "v6.9" });
    expect(shape(a)).toEqual(v66);
    expect(shape(b)).toEqual(v69);
    expectTiles(a, start, pages);
    expectTiles(b, start, pages);
  });

  it("v6.6 peels the odd page at the low end, v6.9 at the high end", () => {
    for (const pages of [1n, 3n, 33n, 127n, 515n, 4097n, 99999n]) {
      const a = linuxFlushTlbRange({ start, pages, tlbRange: true, variant: "v6.6" });
      const b = linuxFlushTlbRange({ start, pages, tlbRange: true, variant: "v6.9" });
      expect(a[0]).toEqual({ op: "VAE1IS", operand: start >> 12n });
      expect(b.at(-1)).toEqual({ op: "VAE1IS", operand: (start >> 12n) + pages - 1n });
      expect(a.filter((c) => c.op === "VAE1IS")).toHaveLength(1);
      expect(b.filter((c) => c.op === "VAE1IS")).toHaveLength(1);
    }
  });
});

describe("operand details", () => {
  const start = 0x5555_0000_0000n;

  it("lastLevel uses VALE1IS / RVALE1IS; tlbLevel lands in TTL [47:44] and [38:37]", () => {
    const calls = linuxFlushTlbRange({ start, pages: 3n, tlbRange: true, lastLevel: true, tlbLevel: 3, asid: 7 });
    expect(calls).toEqual([
      { op: "VALE1IS", operand: (7n << 48n) | (0b0111n << 44n) | (start >> 12n) },
      { op: "RVALE1IS", operand: (7n << 48n) | (1n << 46n) | (3n << 37n) | ((start >> 12n) + 1n) },
    ]);
    const [single, range] = calls.map((c) => decodeTlbi(c.op, c.operand, { asid16: true }));
    expect(single).toMatchObject({ leafOnly: true, ttlLevel: 3, asid: 7 });
    expect(range).toMatchObject({ leafOnly: true, ttlLevel: 3, asid: 7, pages: 2n });
  });

  it("without FEAT_TTL the non-range ops carry no hint; range ops still do", () => {
    const calls = linuxFlushTlbRange({ start, pages: 3n, tlbRange: true, tlbLevel: 2, featTtl: false });
    expect(calls.map((c) => decodeTlbi(c.op, c.operand, { asid16: true }).ttlLevel)).toEqual([null, 2]);
  });

  it("KPTI: every stage-1 op is followed by its user-ASID copy (bit 48 set); never for stage 2", () => {
    const calls = linuxFlushTlbRange({ start, pages: 67n, tlbRange: true, asid: 0x10, kpti: true });
    expect(calls.map((c) => c.op)).toEqual(["VAE1IS", "VAE1IS", "RVAE1IS", "RVAE1IS", "RVAE1IS", "RVAE1IS"]);
    for (let i = 0; i < calls.length; i += 2) {
      expect(calls[i + 1]!.operand).toBe(calls[i]!.operand | USER_ASID_FLAG);
      expect(decodeTlbi(calls[i + 1]!.op, calls[i + 1]!.operand, { asid16: true }).asid).toBe(0x11);
    }
    const kernel = calls.filter((_, i) => i % 2 === 0);
    expectTiles(kernel, start, 67n);
    const s2calls = linuxFlushTlbRange({ start, pages: 67n, tlbRange: true, asid: 0x10, kpti: true, stage2: true });
    expect(s2calls.map((c) => c.op)).toEqual(["IPAS2E1IS", "RIPAS2E1IS", "RIPAS2E1IS"]);
    expect(s2calls.every((c) => c.operand >> 48n === 0n)).toBe(true);
  });

  it("end is exclusive and both ends are rounded to the stride", () => {
    const byEnd = linuxFlushTlbRange({ start: start + 0x123n, end: start + 0x3001n, tlbRange: true });
    expect(byEnd).toEqual(linuxFlushTlbRange({ start, pages: 4n, tlbRange: true }));
    expect(linuxFlushTlbRange({ start, end: start, tlbRange: true })).toEqual([]);
    const byStride = linuxFlushTlbRange({ start: start + K4, end: start + M2 + K4, stride: M2, tlbRange: true });
    expectTiles(byStride, start, 1024n);
  });

  it("TTBR1 (kernel) VAs tile through the sign-extended decode", () => {
    const kva = 0xffff_8000_1234_5000n;
    for (const variant of ["v6.6", "v6.9"] as const) {
      expectTiles(linuxFlushTlbRange({ start: kva, pages: 99_999n, tlbRange: true, variant }), kva, 99_999n, variant);
    }
  });

  it("rejects bad arguments", () => {
    const bad = (o: object): (() => unknown) => () =>
      linuxFlushTlbRange({ start: 0n, tlbRange: true, ...o } as Parameters<typeof linuxFlushTlbRange>[0]);
    expect(bad({})).toThrow(/exactly one of pages and end/);
    expect(bad({ pages: 1n, end: 0x1000n })).toThrow(/exactly one of pages and end/);
    expect(bad({ pages: -1n })).toThrow(RangeError);
    expect(bad({ start: 0x2000n, end: 0x1000n })).toThrow(/end < start/);
    expect(bad({ pages: 1n, stride: 0x1800n })).toThrow(/stride/);
    expect(bad({ pages: 1n, stride: 0x800n })).toThrow(/stride/);
    expect(bad({ pages: 1n, tlbLevel: 4 })).toThrow(/level/);
    expect(bad({ pages: 1n, asid: 0x10000 })).toThrow(/ASID/);
    const op = { op: "VAE1IS", start: 0n, stride: K4, asid: 0, tlbLevel: 0, tlbiUser: false, tlbRange: true } as const;
    expect(() => flushTlbRangeOp({ ...op, pages: MAX + 1n, variant: "v6.6" })).toThrow(/pages outside/);
    expect(() => flushTlbRangeOp({ ...op, pages: 3n, stride: 2n * K4, variant: "v6.9" })).toThrow(/multiple/);
    expect(() => kvmTlbFlushVmidRange({ start: 0n, size: -1n, tlbRange: true })).toThrow(RangeError);
  });
});

describe("kvm_tlb_flush_vmid_range (v6.6 arch/arm64/kvm/hyp/pgtable.c)", () => {
  const ipa = 0x8000_0000n;

  it("without FEAT_TLBIRANGE: one VMALLS12E1IS for any size", () => {
    for (const size of [0n, K4, M2, 16n << 30n]) {
      expect(kvmTlbFlushVmidRange({ start: ipa, size, tlbRange: false })).toEqual([{ op: "VMALLS12E1IS", operand: 0n }]);
    }
  });

  it("with it: nothing for size 0; sub-page remainders are dropped", () => {
    expect(kvmTlbFlushVmidRange({ start: ipa, size: 0n, tlbRange: true })).toEqual([]);
    expect(kvmTlbFlushVmidRange({ start: ipa, size: 0xfffn, tlbRange: true })).toEqual([]);
    expect(kvmTlbFlushVmidRange({ start: ipa, size: 0x1fffn, tlbRange: true }))
      .toEqual([{ op: "IPAS2E1IS", operand: ipa >> 12n }, VMALLE1IS]);
  });

  it("no MAX_TLBI_OPS threshold: 4096 pages are range ops, not a VMID flush", () => {
    expect(kvmTlbFlushVmidRange({ start: ipa, size: 4096n << 12n, tlbRange: true }))
      .toEqual([{ op: "RIPAS2E1IS", operand: 0x6080_0008_0000n }, VMALLE1IS]);
  });

  it.each(["v6.6", "v6.9"] as const)("%s: chunks of at most 2^21 pages, each closed by VMALLE1IS", (variant) => {
    const pages = 2n * MAX + 3n;
    const calls = kvmTlbFlushVmidRange({ start: ipa, size: pages << 12n, tlbRange: true, variant });
    const chunks: TlbiCall[][] = [[]];
    for (const c of calls) {
      chunks.at(-1)!.push(c);
      if (c.op === "VMALLE1IS") chunks.push([]);
    }
    expect(chunks.pop()).toEqual([]);
    expect(chunks).toHaveLength(3);
    const first = variant === "v6.6" ? 0x400000080000n : 0x7f8000080000n;
    expect(chunks[0]).toEqual([{ op: "RIPAS2E1IS", operand: first }, VMALLE1IS]);
    const second = (ipa + (MAX << 12n)) >> 12n;
    expect(chunks[1]).toEqual([{ op: "RIPAS2E1IS", operand: (first & ~0xf_ffff_ffffn) | second }, VMALLE1IS]);
    const third = ipa + (2n * MAX << 12n);
    expectTiles(chunks[2]!, third, 3n);
    if (variant === "v6.9") expectTiles(calls, ipa, pages);
  });
});

describe("tiling property over random ranges", () => {
  const seed = testSeed();
  const rng = new Rng(seed);
  const USER_TOP = 1n << 36n;
  const KERNEL_BASE = 0xffff_0000_0000_0n;

  function randomPages(maxPages: bigint): bigint {
    const r = rng.int(6);
    let p: bigint;
    if (r === 0) p = BigInt(1 + rng.int(130));
    else if (r === 1) p = BigInt(1 + rng.int(70_000));
    else if (r === 2) p = 1n + (rng.u64() % maxPages);
    else if (r === 3) p = (1n << BigInt(rng.int(22))) + BigInt(rng.int(5)) - 2n;
    else if (r === 4) p = maxPages - BigInt(rng.int(70));
    else p = BigInt(rng.pick([64, 2048, 65536, 511, 513, 1023, 2047, 2049, 65535, 65537]));
    if (p < 1n) p = 1n;
    return p > maxPages ? maxPages : p;
  }

  it("__flush_tlb_range: ops tile the range low to high; shapes per v6.6/v6.9 tlbflush.h", () => {
    for (let i = 0; i < 3000; i++) {
      const variant: LinuxTlbVariant = rng.chance(0.5) ? "v6.6" : "v6.9";
      const tlbRange = rng.chance(0.85);
      const stage2 = rng.chance(0.3);
      const kernel = !stage2 && rng.chance(0.4);
      const maxPages = !tlbRange ? MAX_TLBI_OPS - 1n : variant === "v6.6" ? MAX - 1n : MAX;
      const pages = randomPages(maxPages);
      const firstPage = (kernel ? KERNEL_BASE : 0n) + (rng.u64() % (USER_TOP - pages));
      const start = firstPage << 12n;
      const note = seedNote(seed, `i=${i} ${variant} tlbRange=${tlbRange} stage2=${stage2} start=${hex(start)} pages=${pages}`);
      const calls = linuxFlushTlbRange({ start, pages, tlbRange, variant, stage2 });
      expectTiles(calls, start, pages, note);

      const singles = calls.filter((c) => c.op === "VAE1IS" || c.op === "IPAS2E1IS").length;
      if (!tlbRange) {
        expect(singles, note).toBe(Number(pages));
        continue;
      }
      expect(singles, note).toBe(Number(pages % 2n));
      const scales = calls
        .map((c) => decodeTlbi(c.op, c.operand, { asid16: true }))
        .filter((d) => d.range)
        .map((d) => d.scale!);
      const sorted = [...new Set(scales)].sort((a, b) => (variant === "v6.6" ? a - b : b - a));
      expect(scales, `${note}: one range op per scale, ${variant === "v6.6" ? "ascending" : "descending"}`).toEqual(sorted);
      expect(calls.length, note).toBeLessThanOrEqual(5);
    }
    fuzzCount("linux-tlb", 3000);
  });

  it("kvm_tlb_flush_vmid_range: every chunk tiles, except the v6.6 exact-2^21 chunk", () => {
    for (let i = 0; i < 400; i++) {
      const variant: LinuxTlbVariant = rng.chance(0.5) ? "v6.6" : "v6.9";
      const pages = variant === "v6.6" ? randomPages(MAX - 1n) : randomPages(3n * MAX + 5n);
      const start = (rng.u64() % ((1n << 36n) - pages)) << 12n;
      const note = seedNote(seed, `i=${i} ${variant} start=${hex(start)} pages=${pages}`);
      const calls = kvmTlbFlushVmidRange({ start, size: pages << 12n, tlbRange: true, variant });
      expectTiles(calls, start, pages, note);
      const flushes = calls.filter((c) => c.op === "VMALLE1IS").length;
      expect(flushes, note).toBe(Number((pages + MAX - 1n) / MAX));
      expect(calls.at(-1), note).toEqual(VMALLE1IS);
    }
    fuzzCount("linux-tlb", 400);
  });
});
