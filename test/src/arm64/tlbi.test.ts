/**
 * TLBI names and operand decoding/encoding: Arm ARM C5.5 (what
 * each op invalidates, operand formats, non-range TTL, leaf
 * forms, range TG rules); QEMU tlbi_aa64_get_range (target/arm/tcg/tlb-insns.c)
 * for BaseADDR sign extension and the reserved TG.
 */
import { describe, expect, it } from "vitest";
import {
  decodeTlbi, encodeTlbiRange, encodeTlbiVa, tlbiRangePages, TLBI_LOCAL_OPS, TLBI_OPS,
  type DecodedTlbi, type TlbiOp,
} from "../../../src/arm64/tlbi.js";

const A16 = { asid16: true };
const A8 = { asid16: false };

type Shape = Pick<DecodedTlbi, "kind" | "stage" | "leafOnly" | "allAsids" | "range">;
const SHAPES: Record<TlbiOp, Shape> = {
  VAE1IS: { kind: "va", stage: 1, leafOnly: false, allAsids: false, range: false },
  VALE1IS: { kind: "va", stage: 1, leafOnly: true, allAsids: false, range: false },
  VAAE1IS: { kind: "va", stage: 1, leafOnly: false, allAsids: true, range: false },
  VAALE1IS: { kind: "va", stage: 1, leafOnly: true, allAsids: true, range: false },
  ASIDE1IS: { kind: "asid", stage: 1, leafOnly: false, allAsids: false, range: false },
  VMALLE1IS: { kind: "vmall", stage: 1, leafOnly: false, allAsids: true, range: false },
  VMALLS12E1IS: { kind: "vmalls12", stage: 12, leafOnly: false, allAsids: true, range: false },
  IPAS2E1IS: { kind: "ipa", stage: 2, leafOnly: false, allAsids: true, range: false },
  IPAS2LE1IS: { kind: "ipa", stage: 2, leafOnly: true, allAsids: true, range: false },
  ALLE1IS: { kind: "all", stage: 12, leafOnly: false, allAsids: true, range: false },
  RVAE1IS: { kind: "va", stage: 1, leafOnly: false, allAsids: false, range: true },
  RVALE1IS: { kind: "va", stage: 1, leafOnly: true, allAsids: false, range: true },
  RVAAE1IS: { kind: "va", stage: 1, leafOnly: false, allAsids: true, range: true },
  RVAALE1IS: { kind: "va", stage: 1, leafOnly: true, allAsids: true, range: true },
  RIPAS2E1IS: { kind: "ipa", stage: 2, leafOnly: false, allAsids: true, range: true },
  RIPAS2LE1IS: { kind: "ipa", stage: 2, leafOnly: true, allAsids: true, range: true },
};

/** ASID 0x1234, TTL 0b0111, VA page 0x40000 (non-range); range: TG 01, S1 N7, TTL 11, base 0x80000. */
const NON_RANGE_OPERAND = 0x1234_7000_0004_0000n;
const RANGE_OPERAND = 0x1234_5000_0000_0000n | (7n << 39n) | (3n << 37n) | 0x80000n;

describe("op names", () => {
  it("lists 16 broadcast ops and their 16 local forms", () => {
    expect(TLBI_OPS).toHaveLength(16);
    expect(new Set(TLBI_OPS)).toEqual(new Set(Object.keys(SHAPES)));
    expect(TLBI_LOCAL_OPS).toEqual(TLBI_OPS.map((op) => op.replace(/IS$/, "")));
  });

  it.each(TLBI_OPS.map((op) => [op] as const))("%s decodes to its shape, IS and local, any case", (op) => {
    const operand = SHAPES[op].range ? RANGE_OPERAND : NON_RANGE_OPERAND;
    const is = decodeTlbi(op, operand, A16);
    expect(is).toMatchObject({ ...SHAPES[op], op, name: op, broadcast: true });
    const local = op.replace(/IS$/, "");
    const nsh = decodeTlbi(local.toLowerCase(), operand, A16);
    expect(nsh).toMatchObject({ ...SHAPES[op], op, name: local, broadcast: false });
    expect({ ...nsh, name: op, broadcast: true }).toEqual(is);
  });

  it.each(["VAE2IS", "TLBI VAE1IS", "VAE1ISIS", "", "RVMALLE1IS", "VAE1OS", "IS"])(
    "rejects %j with an error naming it",
    (bad) => {
      expect(() => decodeTlbi(bad, 0n, A16)).toThrow(`unknown TLBI op '${bad}'`);
    },
  );
});

describe("ASID field", () => {
  it.each([
    ["VAE1IS", 0xabcd_0000_0004_0000n],
    ["VALE1IS", 0xabcd_0000_0004_0000n],
    ["ASIDE1IS", 0xabcd_0000_0000_0000n],
    ["RVAE1IS", 0xabcd_4000_0004_0000n],
    ["RVALE1IS", 0xabcd_4000_0004_0000n],
  ] as const)("%s: 16-bit with TCR.AS=1, low byte only with AS=0", (op, operand) => {
    expect(decodeTlbi(op, operand, A16).asid).toBe(0xabcd);
    expect(decodeTlbi(op, operand, A8).asid).toBe(0xcd);
    expect(decodeTlbi(op, operand, A8).allAsids).toBe(false);
  });

  it.each(["VAAE1IS", "VAALE1IS", "RVAAE1IS", "RVAALE1IS", "VMALLE1IS", "VMALLS12E1IS", "ALLE1IS", "IPAS2E1IS", "RIPAS2E1IS"] as const)(
    "%s matches any ASID and reports none",
    (op) => {
      const d = decodeTlbi(op, 0x00ff_4000_0000_0001n, A16);
      expect(d.asid).toBeUndefined();
      expect(d.allAsids).toBe(true);
    },
  );
});

describe("non-range VA operand", () => {
  it("takes VA[55:12] from bits [43:0] and ignores TTL/ASID for the address", () => {
    const d = decodeTlbi("VAE1IS", 0x0001_7000_0004_0000n, A16);
    expect(d).toMatchObject({ startPage: 0x40000n, startVa: 0x4000_0000n, pages: 1n, ttlLevel: 3, ignored: null, asid: 1 });
  });

  it.each([
    ["0xffff_8000_0010_0000", 0xffff_8000_0010_0000n, 0xff8_0000_0100n],
    ["0xffff_ffff_ffff_f000", 0xffff_ffff_ffff_f000n, 0xfff_ffff_ffffn],
    ["0xff80_0000_0000_0000", 0xff80_0000_0000_0000n, 0x800_0000_0000n],
  ] as const)("sign-extends TTBR1 VA %s from VA bit 55", (_label, va, field) => {
    const operand = encodeTlbiVa(va, 0);
    expect(operand).toBe(field);
    const d = decodeTlbi("VAAE1IS", operand, A16);
    expect(d.startPage).toBe(field);
    expect(d.startVa).toBe(va);
  });

  it("keeps TTBR0 VAs (VA bit 55 clear) positive", () => {
    const d = decodeTlbi("VAE1IS", encodeTlbiVa(0x0000_ffff_ffff_f000n, 5), A16);
    expect(d.startVa).toBe(0x0000_ffff_ffff_f000n);
    expect(d.asid).toBe(5);
  });

  const TTL_ROWS: readonly (readonly [number, number | null])[] = [
    [0b0000, null], [0b0001, null], [0b0011, null],
    [0b0100, 0], [0b0101, 1], [0b0110, 2], [0b0111, 3],
    [0b1001, null], [0b1010, null], [0b1111, null],
  ];
  it.each(TTL_ROWS.map(([ttl, level]) => [ttl.toString(2).padStart(4, "0"), ttl, level] as const))(
    "TTL 0b%s → level hint %s (a hint only when TTL[3:2] = 01, 4K)",
    (_bits, ttl, level) => {
      const operand = (BigInt(ttl) << 44n) | 0x1234n;
      expect(decodeTlbi("VALE1IS", operand, A16).ttlLevel).toBe(level);
      expect(decodeTlbi("IPAS2E1IS", operand, A16).ttlLevel).toBe(level);
      expect(decodeTlbi("VALE1IS", operand, A16).ignored).toBeNull();
    },
  );
});

describe("non-range IPA operand", () => {
  it("takes IPA[47:12] from bits [35:0], NS from bit 63, ignores bits [43:36]", () => {
    const d = decodeTlbi("IPAS2E1IS", (1n << 63n) | (0xffn << 36n) | 0xf_ffff_ffffn, A16);
    expect(d).toMatchObject({ startPage: 0xf_ffff_ffffn, startVa: 0xffff_ffff_f000n, pages: 1n, ns: true });
    expect(decodeTlbi("IPAS2LE1IS", 0x40000n, A16)).toMatchObject({ startVa: 0x4000_0000n, ns: false, leafOnly: true });
  });

  it("never sign-extends an IPA", () => {
    expect(decodeTlbi("IPAS2E1IS", 0x8_0000_0000n, A16).startVa).toBe(0x8000_0000_0000n);
  });
});

describe("range operand", () => {
  it("decodes TG, SCALE, NUM, TTL and BaseADDR", () => {
    const d = decodeTlbi("RVAE1IS", RANGE_OPERAND, A16);
    expect(d).toMatchObject({
      tg: 1, scale: 1, num: 7, ttlLevel: 3, startPage: 0x80000n, startVa: 0x8000_0000n,
      pages: 512n, ignored: null, asid: 0x1234,
    });
  });

  it.each([["00", 0, null], ["01", 1, 1], ["10", 2, 2], ["11", 3, 3]] as const)("TTL 0b%s → level %s", (_bits, ttl, level) => {
    const operand = encodeTlbiRange({ baseVa: 0x4000_0000n, asid: 0, scale: 0, num: 0, ttl });
    expect(decodeTlbi("RVALE1IS", operand, A16).ttlLevel).toBe(level);
    expect(decodeTlbi("RIPAS2LE1IS", operand, A16).ttlLevel).toBe(level);
  });

  it("TG=00 is reserved: ignored, with the reason", () => {
    const operand = encodeTlbiRange({ baseVa: 0x4000_0000n, asid: 0, scale: 1, num: 7, ttl: 0 }) & ~(3n << 46n);
    for (const op of ["RVAE1IS", "RIPAS2E1IS", "rvaale1"] as const) {
      const d = decodeTlbi(op, operand, A16);
      expect(d.tg).toBe(0);
      expect(d.ignored).toMatch(/TG=0b00 is reserved/);
    }
  });

  it.each([[2, "16K"], [3, "64K"]] as const)("TG=%s (%s) does not match the 4K granule: ignored", (tg, size) => {
    const operand = (0x4000_0000n >> 12n) | (BigInt(tg) << 46n);
    const d = decodeTlbi("RVAE1IS", operand, A16);
    expect(d.tg).toBe(tg);
    expect(d.ignored).toContain(size);
    expect(d.ignored).toContain("does not match the 4K granule");
  });

  it("sign-extends a VA BaseADDR from bit 36 (VA bit 48), as QEMU for two-range regimes", () => {
    const kva = 0xffff_8000_0000_0000n;
    const operand = encodeTlbiRange({ baseVa: kva, asid: 0, scale: 3, num: 0, ttl: 0 });
    expect(operand & (1n << 36n)).not.toBe(0n);
    const d = decodeTlbi("RVAAE1IS", operand, A16);
    expect(d.startVa).toBe(kva);
    expect(d.startPage).toBe(0xff8_0000_0000n);
    expect(d.pages).toBe(65536n);
  });

  it("does not sign-extend an IPA BaseADDR", () => {
    const operand = (1n << 46n) | (1n << 36n) | 5n;
    expect(decodeTlbi("RIPAS2E1IS", operand, A16).startVa).toBe((1n << 48n) | 0x5000n);
    expect(decodeTlbi("RVAE1IS", operand, A16).startVa).toBe(0xffff_0000_0000_5000n);
  });

  it("reads NS from bit 63 of RIPAS2*", () => {
    expect(decodeTlbi("RIPAS2E1IS", (1n << 63n) | (1n << 46n), A16).ns).toBe(true);
    expect(decodeTlbi("RIPAS2LE1", 1n << 46n, A16).ns).toBe(false);
  });

  it.each([
    [0, 0, 2n], [30, 0, 62n], [31, 0, 64n], [0, 1, 64n], [31, 1, 2048n],
    [0, 2, 2048n], [31, 2, 65536n], [0, 3, 65536n], [2, 3, 196608n], [31, 3, 2097152n],
  ] as const)("NUM %s SCALE %s covers %s pages", (num, scale, pages) => {
    expect(tlbiRangePages(num, scale)).toBe(pages);
    const operand = encodeTlbiRange({ baseVa: 0n, asid: 0, scale, num, ttl: 0 });
    expect(decodeTlbi("RVAE1IS", operand, A16).pages).toBe(pages);
  });
});

describe("ops without an address", () => {
  it.each(["ASIDE1IS", "VMALLE1IS", "VMALLS12E1IS", "ALLE1IS"] as const)("%s reports no pages and no hint", (op) => {
    const d = decodeTlbi(op, 0xffff_ffff_ffff_ffffn, A16);
    expect(d).toMatchObject({ startPage: 0n, startVa: 0n, pages: 0n, ttlLevel: null, ignored: null });
    expect(d.ns).toBeUndefined();
  });
});

describe("encoders (Linux __TLBI_VADDR, __TLBI_VADDR_RANGE)", () => {
  it("encodeTlbiVa: page number in [43:0], ASID in [63:48], TTL 0b01:level in [47:44]", () => {
    expect(encodeTlbiVa(0x4000_0abcn, 0)).toBe(0x40000n);
    expect(encodeTlbiVa(0x4000_0000n, 0xffff)).toBe(0xffff_0000_0004_0000n);
    expect(encodeTlbiVa(0x4000_0000n, 1, 0)).toBe(0x0001_0000_0004_0000n);
    expect(encodeTlbiVa(0x4000_0000n, 1, 1)).toBe(0x0001_5000_0004_0000n);
    expect(encodeTlbiVa(0x4000_0000n, 1, 2)).toBe(0x0001_6000_0004_0000n);
    expect(encodeTlbiVa(0x4000_0000n, 1, 3)).toBe(0x0001_7000_0004_0000n);
  });

  it("encodeTlbiRange: BaseADDR [36:0], TTL [38:37], NUM [43:39], SCALE [45:44], TG=01, ASID", () => {
    expect(encodeTlbiRange({ baseVa: 0x8000_0000n, asid: 0, scale: 1, num: 7, ttl: 0 })).toBe(0x538000080000n);
    expect(encodeTlbiRange({ baseVa: 0x8000_0000n, asid: 0x42, scale: 1, num: 7, ttl: 3 })).toBe(0x0042_53e0_0008_0000n);
  });

  it("encodeTlbiRange does not mask SCALE: scale 4 spills into TG (the v6.6 bug operand)", () => {
    const operand = encodeTlbiRange({ baseVa: 0x4000_0000n, asid: 0, scale: 4, num: 0, ttl: 0 });
    expect(operand).toBe(0x400000040000n);
    expect(decodeTlbi("RIPAS2E1IS", operand, A16)).toMatchObject({ tg: 1, scale: 0, num: 0, pages: 2n });
  });

  it("round-trips through decodeTlbi", () => {
    for (const [va, asid, scale, num, ttl] of [
      [0x1234_5000n, 7, 0, 3, 1], [0xffff_c000_0000_0000n, 0xff, 2, 30, 2], [0x0000_ffff_fff0_0000n, 0, 1, 31, 0],
    ] as const) {
      const d = decodeTlbi("RVAE1IS", encodeTlbiRange({ baseVa: va, asid, scale, num, ttl }), A16);
      expect(d).toMatchObject({ startVa: va, asid, scale, num, ttlLevel: ttl === 0 ? null : ttl, ignored: null });
      const s = decodeTlbi("VAE1IS", encodeTlbiVa(va, asid, ttl), A16);
      expect(s).toMatchObject({ startVa: va, asid, pages: 1n, ttlLevel: ttl === 0 ? null : ttl });
    }
  });
});
