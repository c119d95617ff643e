/**
 * Rules of the reference arm64 walker, one test per rule of docs/arm64-walk-contract.md:
 * register values (reserved granules, TnSZ clamping, invalid SL0), TTBR selection, start levels, TBI, descriptor types, address-size and
 * access-flag faults, AP/UXN/PXN/PAN/WXN permissions, hierarchical attributes, DBM, stage 2
 * (concatenated start tables, S2AP, XNX, AF, DBM), S2-PTW, combined results, aborts, restarts
 * and the debugger view. Tables are built by hand in a MapMemory; bit constants are spelled
 * out here rather than imported so that a wrong constant in the walker cannot hide.
 */
import { describe, expect, it } from 'vitest';
import { MapMemory, type RefMemory } from '../../../src/ref/x86-walk.js';
import {
  refTranslateArm64,
  type RefArm64Result,
  type RefArm64State,
  type RefArmAccess,
} from '../../../src/ref/arm64-walk.js';

const bit = (n: number): bigint => 1n << BigInt(n);

// Descriptor bits.
const TABLE = 0b11n;
const PAGE = 0b11n;
const BLOCK = 0b01n;
const AP_EL0 = bit(6); // AP[1]
const AP_RO = bit(7); // AP[2]
const ap = (n: number): bigint => BigInt(n) << 6n; // AP[2:1] = n
const AF = bit(10);
const DBM = bit(51);
const PXN = bit(53);
const UXN = bit(54);
const SW55 = bit(55);
const PXN_TABLE = bit(59);
const UXN_TABLE = bit(60);
const APT_NO_EL0 = bit(61);
const APT_RO = bit(62);
const S2AP_R = bit(6);
const S2AP_W = bit(7);
const S2_RW = S2AP_R | S2AP_W;
const S2_NORMAL = 0xfn << 2n;
const S2_DEVICE = 0x1n << 2n;
const s2xn = (n: number): bigint => BigInt(n) << 53n;
const ADDR_47_12 = ((1n << 48n) - 1n) & ~0xfffn;

// TCR_EL1.
const t0sz = (n: number): bigint => BigInt(n);
const t1sz = (n: number): bigint => BigInt(n) << 16n;
const EPD0 = bit(7);
const EPD1 = bit(23);
const tg0 = (n: number): bigint => BigInt(n) << 14n;
const tg1 = (n: number): bigint => BigInt(n) << 30n;
const ips = (n: number): bigint => BigInt(n) << 32n;
const TBI0 = bit(37);
const TBI1 = bit(38);
const HA = bit(39);
const HD = bit(40);
const HPD0 = bit(41);
const HPD1 = bit(42);
const TBID0 = bit(51);
const TBID1 = bit(52);
const E0PD0 = bit(55);
const E0PD1 = bit(56);
const TCR_48 = t0sz(16) | t1sz(16) | tg1(0b10) | ips(0b101);
const TCR_SZ_MASK = 0x3fn | (0x3fn << 16n);

const SCTLR_M = bit(0);
const SCTLR_WXN = bit(19);
const HCR_VM = bit(0);
const HCR_PTW = bit(2);

// VTCR_EL2.
const vt0sz = (n: number): bigint => BigInt(n);
const sl0 = (n: number): bigint => BigInt(n) << 6n;
const vtg0 = (n: number): bigint => BigInt(n) << 14n;
const ps = (n: number): bigint => BigInt(n) << 16n;
const VTCR_HA = bit(21);
const VTCR_HD = bit(22);
const VTCR_40 = vt0sz(24) | sl0(1) | ps(0b101);

const SIZE_4K = 0x1000;
const SIZE_2M = 0x20_0000;
const SIZE_1G = 0x4000_0000;

const RAM = 1n << 32n;
const ROOT0 = 0x1000n;
const ROOT1 = 0x2000n;
const S2_ROOT = 0x8000n; // 8 KiB: two concatenated level-1 tables for a 40-bit IPA
/** Stage-2-unmapped IPA window (GiB 1) where tests relocate stage-1 tables. */
const ALIAS = 0x4000_0000n;

/** Indices 257 / 1 / 1 / 1 at levels 0..3, page offset 0xabc. */
const VA = 0x0000_8080_4020_1abcn;
const FRAME = 0x0000_0000_1234_5000n;

const FSC = {
  'address-size': 0x00,
  translation: 0x04,
  'access-flag': 0x08,
  permission: 0x0c,
  abort: 0x14,
} as const;
type Kind = keyof typeof FSC;

function s1Fault(kind: Kind, level: number, write = false): RefArm64Result {
  return { ok: false, stage: 1, fsc: FSC[kind] + level, level, s1ptw: false, write, kind };
}

function s2Fault(kind: Kind, level: number, ipa: bigint, s1ptw = false, write = false): RefArm64Result {
  return { ok: false, stage: 2, fsc: FSC[kind] + level, level, s1ptw, write, ipa, kind };
}

function ok(pa: bigint, pageSize: number, level: number, ipa = pa): RefArm64Result {
  return { ok: true, pa, pageSize, level, ipa };
}

const page = (frame: bigint, attrs = 0n): bigint => frame | PAGE | AF | attrs;
const block = (frame: bigint, attrs = 0n): bigint => frame | BLOCK | AF | attrs;
const s2page = (frame: bigint, attrs = S2_RW | S2_NORMAL): bigint => frame | PAGE | AF | attrs;
const s2block = (frame: bigint, attrs = S2_RW | S2_NORMAL): bigint => frame | BLOCK | AF | attrs;

function state(over: Partial<RefArm64State> = {}): RefArm64State {
  return {
    ttbr0: ROOT0,
    ttbr1: ROOT1,
    tcr: TCR_48,
    sctlr: SCTLR_M,
    vttbr: S2_ROOT,
    vtcr: VTCR_40,
    hcr: 0n,
    pan: false,
    ...over,
  };
}

function translate(
  mem: RefMemory,
  s: RefArm64State,
  va: bigint,
  access: RefArmAccess = 'read',
  el0 = false,
  debug = false,
): RefArm64Result {
  return refTranslateArm64(mem, s, va, access, el0, debug ? { debug: true } : undefined);
}

/** Builds translation tables; each new table gets the next free 4 KiB frame from 1 MiB up. */
class Tables {
  readonly mem = new MapMemory(RAM);
  private nextFree = 0x10_0000n;

  /**
   * Writes `leaf` verbatim for input address `input` at `leafLevel`, walking down from the
   * table at `root` (level `startLevel`, resolving `inputBits` input bits), creating tables as
   * needed. Table entries are `child | 0b11 | upper[level]`. Returns each descriptor's address
   * by level.
   */
  map(
    input: bigint,
    leafLevel: number,
    leaf: bigint,
    opts: { root?: bigint; startLevel?: number; inputBits?: number; upper?: Record<number, bigint> } = {},
  ): Map<number, bigint> {
    const { root = ROOT0, startLevel = 0, inputBits = 48, upper = {} } = opts;
    const addrs = new Map<number, bigint>();
    let table = root;
    for (let level = startLevel; level <= leafLevel; level++) {
      const shift = 12 + 9 * (3 - level);
      const width = level === startLevel ? inputBits - shift : 9;
      const index = (input >> BigInt(shift)) & ((1n << BigInt(width)) - 1n);
      const addr = table + index * 8n;
      addrs.set(level, addr);
      if (level === leafLevel) {
        this.mem.write64(addr, leaf);
        break;
      }
      const old = this.read(addr);
      let child = old & ADDR_47_12;
      if ((old & 3n) !== 3n) {
        child = this.nextFree;
        this.nextFree += 0x1000n;
      }
      this.mem.write64(addr, child | TABLE | (upper[level] ?? 0n));
      table = child;
    }
    return addrs;
  }

  /** Stage-2 mapping under S2_ROOT (40-bit IPA, start level 1). */
  mapS2(ipa: bigint, leafLevel: number, leaf: bigint): Map<number, bigint> {
    return this.map(ipa, leafLevel, leaf, { root: S2_ROOT, startLevel: 1, inputBits: 40 });
  }

  read(addr: bigint): bigint {
    return this.mem.read64(addr)!;
  }

  /** Points the table descriptor at `descAddr` to IPA `ipa`; returns the table's old address. */
  retarget(descAddr: bigint, ipa: bigint): bigint {
    const desc = this.read(descAddr);
    this.mem.write64(descAddr, (desc & ~ADDR_47_12) | ipa);
    return desc & ADDR_47_12;
  }
}

/** Tables plus a stage-2 identity map of IPA [0, 1 GiB) by one level-1 block. */
function twoStage(): Tables {
  const t = new Tables();
  t.mem.write64(S2_ROOT, s2block(0n));
  return t;
}

/** Records loads and compare-exchanges; `onCmpxchg` may change memory first and veto the exchange. */
class SpyMemory implements RefMemory {
  readonly reads: bigint[] = [];
  cmpxchgs = 0;

  constructor(
    readonly inner: MapMemory,
    private readonly onCmpxchg?: (gpa: bigint, call: number) => boolean,
  ) {}

  read64(gpa: bigint): bigint | undefined {
    this.reads.push(gpa);
    return this.inner.read64(gpa);
  }

  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    this.cmpxchgs++;
    if (this.onCmpxchg !== undefined && !this.onCmpxchg(gpa, this.cmpxchgs)) return false;
    return this.inner.cmpxchg64(gpa, expected, desired);
  }
}

describe('register values: every one is accepted, as a PE accepts it', () => {
  /** The outcome for each of `vas` under `s`. */
  const outcomes = (t: Tables, s: RefArm64State, vas: bigint[]): RefArm64Result[] => vas.map((va) => translate(t.mem, s, va));

  it('walks with the 4 KiB granule whatever TG0 and TG1 say (reserved, 16K, 64K)', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    t.map(0xffff_8080_4020_1000n, 3, page(0x5000n), { root: ROOT1 });
    const vas = [VA, 0xffff_8080_4020_1abcn, 0x0000_8080_4020_2000n];
    const want = outcomes(t, state(), vas);
    expect(want[0]).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    for (const tg0v of [0b01, 0b10, 0b11]) {
      for (const tg1v of [0b00, 0b01, 0b11]) {
        expect(outcomes(t, state({ tcr: (TCR_48 & ~(tg0(3) | tg1(3))) | tg0(tg0v) | tg1(tg1v) }), vas)).toEqual(want);
      }
    }
  });

  it('walks T0SZ / T1SZ below 16 as 16 and above 39 as 39', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    t.map(0x1ff_f000n, 3, page(0x1000_0000n), { root: ROOT1, startLevel: 2, inputBits: 25 });
    const low = [VA, 0x0001_0000_0000_0000n, 0x0008_0000_0000_0000n];
    const high = [0xffff_ffff_ffff_f123n, 0xffff_ffff_fc00_0000n, 0xffff_ffff_fe00_0000n];
    const s = (tsz0: number, tsz1: number) => state({ tcr: (TCR_48 & ~TCR_SZ_MASK) | t0sz(tsz0) | t1sz(tsz1) });
    const wantLow = outcomes(t, s(16, 39), low);
    const wantHigh = outcomes(t, s(16, 39), high);
    expect(wantLow).toEqual([ok(FRAME | 0xabcn, SIZE_4K, 3), s1Fault('translation', 0), s1Fault('translation', 0)]);
    expect(wantHigh.slice(0, 2)).toEqual([ok(0x1000_0123n, SIZE_4K, 3), s1Fault('translation', 0)]);
    for (const [tsz0, tsz1] of [[0, 40], [12, 48], [15, 63]]) {
      expect(outcomes(t, s(tsz0!, tsz1!), low)).toEqual(wantLow);
      expect(outcomes(t, s(tsz0!, tsz1!), high)).toEqual(wantHigh);
    }
  });

  it('never reads T0SZ of a region EPD0 closes: any value faults at level 0 there and TTBR1 still walks', () => {
    const t = new Tables();
    t.map(0xffff_8080_4020_1000n, 3, page(0x5000n), { root: ROOT1 });
    for (const tsz of [0, 16, 39, 63]) {
      const s = state({ tcr: (TCR_48 & ~0x3fn) | t0sz(tsz) | EPD0 });
      expect(translate(t.mem, s, VA)).toEqual(s1Fault('translation', 0));
      expect(translate(t.mem, s, 0xffff_8080_4020_1abcn)).toEqual(ok(0x5abcn, SIZE_4K, 3));
    }
  });

  it('walks VTCR_EL2.T0SZ outside 16..39 as the nearest bound, then checks SL0 against it', () => {
    const t = new Tables();
    const root = 0x10000n;
    t.map(0x1_2000n, 3, s2page(0x7_7000n), { root, startLevel: 2, inputBits: 25 });
    const s = (vtcr: bigint) => state({ sctlr: 0n, hcr: HCR_VM, vttbr: root, vtcr: vtcr | ps(0b101) });
    const want = translate(t.mem, s(vt0sz(39) | sl0(0)), 0x1_2abcn);
    expect(want).toEqual(ok(0x7_7abcn, SIZE_4K, 3, 0x1_2abcn));
    for (const tsz of [40, 50, 63]) {
      expect(translate(t.mem, s(vt0sz(tsz) | sl0(0)), 0x1_2abcn)).toEqual(want);
      expect(translate(t.mem, s(vt0sz(tsz) | sl0(0)), 0x200_0000n)).toEqual(s2Fault('translation', 0, 0x200_0000n));
      expect(translate(t.mem, s(vt0sz(tsz) | sl0(1)), 0x1_2abcn)).toEqual(s2Fault('translation', 0, 0x1_2abcn));
    }
    // T0SZ = 0..15 walks as a 48-bit IPA: from level 0 (SL0 = 2), not from level 1 (18 index bits).
    const spy = new SpyMemory(t.mem);
    expect(translate(spy, s(vt0sz(0) | sl0(1)), 0x1_2abcn)).toEqual(s2Fault('translation', 0, 0x1_2abcn));
    expect(spy.reads).toEqual([]);
    translate(spy, s(vt0sz(0) | sl0(2)), 0x1_2abcn);
    expect(spy.reads[0]).toBe(root);
  });

  it.each([
    ['SL0 = 3', vt0sz(24) | sl0(3)],
    ['48-bit IPA from level 1 (18 index bits)', vt0sz(16) | sl0(1)],
    ['44-bit IPA from level 1 (14 index bits)', vt0sz(20) | sl0(1)],
    ['35-bit IPA from level 2 (14 index bits)', vt0sz(29) | sl0(0)],
    ['38-bit IPA from level 0 (no index bits)', vt0sz(26) | sl0(2)],
  ])('makes every stage-2 walk a translation fault at level 0 for %s, S1PTW ones included', (_name, vtcr) => {
    const t = twoStage();
    t.map(VA, 3, page(FRAME));
    const spy = new SpyMemory(t.mem);
    expect(translate(spy, state({ sctlr: 0n, hcr: HCR_VM, vtcr }), 0x1234_5000n, 'write')).toEqual(
      s2Fault('translation', 0, 0x1234_5000n, false, true),
    );
    expect(translate(spy, state({ hcr: HCR_VM, vtcr }), VA)).toEqual(s2Fault('translation', 0, ROOT0 + 257n * 8n, true));
    expect(spy.reads).toEqual([]);
  });

  it.each([
    ['43-bit IPA from level 1 (16 tables)', vt0sz(21) | sl0(1)],
    ['34-bit IPA from level 2 (16 tables)', vt0sz(30) | sl0(0)],
    ['31-bit IPA from level 1 (1 index bit)', vt0sz(33) | sl0(1)],
    ['40-bit IPA from level 0 (2 entries)', vt0sz(24) | sl0(2)],
    ['25-bit IPA from level 2', vt0sz(39) | sl0(0)],
  ])('walks stage 2 for the consistent %s', (_name, vtcr) => {
    const spy = new SpyMemory(new Tables().mem);
    expect(translate(spy, state({ sctlr: 0n, hcr: HCR_VM, vtcr }), 0x1000n)).toMatchObject({ ok: false, kind: 'translation' });
    expect(spy.reads.length).toBe(1);
  });

  it('reads no stage-2 field while HCR.VM = 0, nor TCR while SCTLR.M = 0', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    expect(translate(t.mem, state({ vtcr: vt0sz(24) | sl0(3) | vtg0(3) }), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state({ sctlr: 0n, tcr: 0n }), 0x1000n)).toEqual(ok(0x1000n, SIZE_4K, 0));
  });
});

describe('stage 1 off (SCTLR.M = 0)', () => {
  it('returns va as ipa and pa, level 0, 4 KiB, without reading memory', () => {
    const spy = new SpyMemory(new Tables().mem);
    expect(translate(spy, state({ sctlr: 0n }), 0x0000_ffff_1234_5678n, 'write')).toEqual(
      ok(0x0000_ffff_1234_5678n, SIZE_4K, 0),
    );
    expect(spy.reads).toEqual([]);
  });

  it('gives a stage-1 address-size fault at level 0 when VA[63:48] is non-zero, TBI or not', () => {
    const t = new Tables();
    const s = state({ sctlr: 0n, tcr: TCR_48 | TBI0 | TBI1 });
    expect(translate(t.mem, s, 0x0001_0000_0000_0000n)).toEqual(s1Fault('address-size', 0));
    expect(translate(t.mem, s, 0x5a00_0000_0000_1000n, 'write')).toEqual(s1Fault('address-size', 0, true));
    expect(translate(t.mem, s, 0x5a00_0000_0000_1000n)).toMatchObject({ fsc: 0x00 });
  });
});

describe('stage 1: regions, VA range, TBI, EPD, E0PD', () => {
  it('selects TTBR0 for VA bit 55 = 0 and TTBR1 for bit 55 = 1', () => {
    const t = new Tables();
    t.map(0x0000_1234_5678_9000n, 3, page(0x1111_1000n));
    t.map(0xffff_1234_5678_9000n, 3, page(0x2222_2000n), { root: ROOT1 });
    const s = state();
    expect(translate(t.mem, s, 0x0000_1234_5678_9abcn)).toEqual(ok(0x1111_1abcn, SIZE_4K, 3));
    expect(translate(t.mem, s, 0xffff_1234_5678_9abcn)).toEqual(ok(0x2222_2abcn, SIZE_4K, 3));
  });

  it('faults (translation, level 0) when bits above vaBits differ from bit 55', () => {
    const t = new Tables();
    t.map(0x0000_1234_5678_9000n, 3, page(FRAME));
    t.map(0xffff_1234_5678_9000n, 3, page(FRAME), { root: ROOT1 });
    const s = state();
    for (const va of [0x0001_1234_5678_9000n, 0xff00_1234_5678_9000n, 0x0080_1234_5678_9000n, 0xfeff_1234_5678_9000n]) {
      expect(translate(t.mem, s, va)).toEqual(s1Fault('translation', 0));
    }
    expect(translate(t.mem, s, 0x0001_1234_5678_9000n, 'write')).toMatchObject({ fsc: 0x04, write: true });
  });

  it('checks the range against T0SZ / T1SZ = 25 (39-bit regions)', () => {
    const t = new Tables();
    const s = state({ tcr: (TCR_48 & ~TCR_SZ_MASK) | t0sz(25) | t1sz(25) });
    t.map(0x7f_ffff_f000n, 3, page(0x1000_0000n), { startLevel: 1, inputBits: 39 });
    t.map(0xffff_ff80_0000_0000n, 3, page(0x2000_0000n), { root: ROOT1, startLevel: 1, inputBits: 39 });
    expect(translate(t.mem, s, 0x7f_ffff_f123n)).toEqual(ok(0x1000_0123n, SIZE_4K, 3));
    expect(translate(t.mem, s, 0x80_0000_0000n)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, s, 0xffff_ff80_0000_0123n)).toEqual(ok(0x2000_0123n, SIZE_4K, 3));
    expect(translate(t.mem, s, 0xffff_ff7f_ffff_f000n)).toEqual(s1Fault('translation', 0));
  });

  it('TBI0 ignores the top byte of TTBR0 data addresses', () => {
    const t = new Tables();
    t.map(0x0000_1234_5678_9000n, 3, page(FRAME));
    const tagged = 0x5a00_1234_5678_9abcn;
    expect(translate(t.mem, state(), tagged)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, state({ tcr: TCR_48 | TBI0 }), tagged, 'write')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state({ tcr: TCR_48 | TBI0 }), tagged, 'fetch')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    // TBI1 alone does not cover the TTBR0 region.
    expect(translate(t.mem, state({ tcr: TCR_48 | TBI1 }), tagged)).toEqual(s1Fault('translation', 0));
  });

  it('TBI1 ignores the top byte of TTBR1 addresses, region still chosen by bit 55', () => {
    const t = new Tables();
    t.map(0xffff_ff12_3456_7000n, 3, page(FRAME), { root: ROOT1 });
    const tagged = 0x00ff_ff12_3456_7abcn;
    expect(translate(t.mem, state(), tagged)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, state({ tcr: TCR_48 | TBI1 }), tagged)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    // bits [55:48] must still equal bit 55
    expect(translate(t.mem, state({ tcr: TCR_48 | TBI1 }), 0x00fe_ff12_3456_7abcn)).toEqual(s1Fault('translation', 0));
  });

  it('TBID0 keeps TBI0 for data but not for instruction fetches', () => {
    const t = new Tables();
    t.map(0x0000_1234_5678_9000n, 3, page(FRAME));
    const s = state({ tcr: TCR_48 | TBI0 | TBID0 });
    expect(translate(t.mem, s, 0x5a00_1234_5678_9abcn)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, s, 0x5a00_1234_5678_9abcn, 'fetch')).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, s, 0x0000_1234_5678_9abcn, 'fetch')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('TBID1 keeps TBI1 for data but not for instruction fetches', () => {
    const t = new Tables();
    t.map(0xffff_ff12_3456_7000n, 3, page(FRAME), { root: ROOT1 });
    const s = state({ tcr: TCR_48 | TBI1 | TBID1 });
    expect(translate(t.mem, s, 0x12ff_ff12_3456_7abcn)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, s, 0x12ff_ff12_3456_7abcn, 'fetch')).toEqual(s1Fault('translation', 0));
    // TBID0 does not affect TTBR1
    const s0 = state({ tcr: TCR_48 | TBI1 | TBID0 });
    expect(translate(t.mem, s0, 0x12ff_ff12_3456_7abcn, 'fetch')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('EPD0 disables TTBR0 walks (translation fault, level 0) and only those', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    t.map(0xffff_0000_0000_0000n, 3, page(FRAME), { root: ROOT1 });
    const s = state({ tcr: TCR_48 | EPD0 });
    expect(translate(t.mem, s, VA)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, s, 0xffff_0000_0000_0000n)).toEqual(ok(FRAME, SIZE_4K, 3));
  });

  it('EPD1 disables TTBR1 walks (translation fault, level 0) and only those', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    t.map(0xffff_0000_0000_0000n, 3, page(FRAME), { root: ROOT1 });
    const s = state({ tcr: TCR_48 | EPD1 });
    expect(translate(t.mem, s, 0xffff_0000_0000_0000n, 'write')).toEqual(s1Fault('translation', 0, true));
    expect(translate(t.mem, s, VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('E0PD0 faults EL0 accesses to TTBR0 at level 0 but not EL1 accesses', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)));
    const s = state({ tcr: TCR_48 | E0PD0 });
    expect(translate(t.mem, s, VA, 'read', true)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, s, VA, 'read', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state({ tcr: TCR_48 | E0PD1 }), VA, 'read', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('E0PD1 faults EL0 accesses to TTBR1 at level 0 but not EL1 accesses', () => {
    const t = new Tables();
    t.map(0xffff_0000_0000_0000n, 3, page(FRAME, ap(0b01)), { root: ROOT1 });
    const s = state({ tcr: TCR_48 | E0PD1 });
    expect(translate(t.mem, s, 0xffff_0000_0000_0000n, 'fetch', true)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, s, 0xffff_0000_0000_0000n, 'read', false)).toEqual(ok(FRAME, SIZE_4K, 3));
  });
});

describe('stage 1: start levels and top tables', () => {
  it('T0SZ = 16 walks four levels from a 512-entry level-0 table', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME));
    const spy = new SpyMemory(t.mem);
    expect(translate(spy, state(), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.reads).toEqual([ROOT0 + 257n * 8n, addrs.get(1), addrs.get(2), addrs.get(3)]);
    expect(addrs.get(0)).toBe(ROOT0 + 0x808n);
  });

  it('T0SZ = 25 starts at level 1 with a full table indexed by VA[38:30]', () => {
    const t = new Tables();
    const va = 0x7f_c020_3abcn; // level-1 index 511, level 2 index 1, level 3 index 3
    const addrs = t.map(va, 3, page(FRAME), { startLevel: 1, inputBits: 39 });
    const spy = new SpyMemory(t.mem);
    const s = state({ tcr: (TCR_48 & ~0x3fn) | t0sz(25) });
    expect(translate(spy, s, va)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.reads).toEqual([ROOT0 + 0xff8n, addrs.get(2), addrs.get(3)]);
  });

  it('T0SZ = 39 starts at level 2 with a 16-entry table and ignores TTBR bits below 128 bytes', () => {
    const t = new Tables();
    const va = 0x1e0_5abcn; // level-2 index 15, level-3 index 5
    const addrs = t.map(va, 3, page(FRAME), { startLevel: 2, inputBits: 25 });
    const spy = new SpyMemory(t.mem);
    const s = state({ tcr: (TCR_48 & ~0x3fn) | t0sz(39), ttbr0: ROOT0 | 0x7fn });
    expect(translate(spy, s, va)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.reads).toEqual([ROOT0 + 0x78n, addrs.get(3)]);
    expect(translate(t.mem, s, 0x200_0000n)).toEqual(s1Fault('translation', 0));
  });

  it('T0SZ = 20 uses a partial 32-entry level-0 table indexed by VA[43:39]', () => {
    const t = new Tables();
    const va = 0xf80_0020_3abcn; // level-0 index 31
    t.map(va, 3, page(FRAME), { inputBits: 44 });
    const spy = new SpyMemory(t.mem);
    const s = state({ tcr: (TCR_48 & ~0x3fn) | t0sz(20), ttbr0: ROOT0 | 0xfen });
    expect(translate(spy, s, va)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.reads[0]).toBe(ROOT0 + 0xf8n);
    expect(translate(t.mem, s, 0x1000_0000_0000n)).toEqual(s1Fault('translation', 0));
  });

  it('T1SZ = 39 starts the TTBR1 walk at level 2 with a 16-entry table', () => {
    const t = new Tables();
    const va = 0xffff_ffff_fe20_3abcn; // level-2 index 1, level-3 index 3
    t.map(va, 3, page(FRAME), { root: ROOT1, startLevel: 2, inputBits: 25 });
    const spy = new SpyMemory(t.mem);
    const s = state({ tcr: (TCR_48 & ~t1sz(0x3f)) | t1sz(39) });
    expect(translate(spy, s, va)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.reads[0]).toBe(ROOT1 + 8n);
    expect(translate(t.mem, s, 0xffff_ffff_fc00_0000n)).toEqual(s1Fault('translation', 0));
  });

  it('ignores the ASID and CnP fields of TTBR0', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    expect(translate(t.mem, state({ ttbr0: 0xabcd_0000_0000_0000n | ROOT0 | 1n }), VA)).toEqual(
      ok(FRAME | 0xabcn, SIZE_4K, 3),
    );
  });
});

describe('stage 1: descriptor types', () => {
  it('maps a 1 GiB block at level 1, ignoring descriptor bits below bit 30', () => {
    const t = new Tables();
    t.map(VA, 1, block(0x0000_00c0_0000_0000n | 0x1ff_f000n));
    expect(translate(t.mem, state(), VA)).toEqual(ok(0x0000_00c0_0020_1abcn, SIZE_1G, 1));
  });

  it('maps a 2 MiB block at level 2, ignoring descriptor bits below bit 21', () => {
    const t = new Tables();
    t.map(VA, 2, block(0x0000_0000_4460_0000n | 0x1f_f000n));
    expect(translate(t.mem, state(), VA)).toEqual(ok(0x0000_0000_4460_1abcn, SIZE_2M, 2));
  });

  it('treats a 01 descriptor at level 0 as invalid (translation fault, level 0)', () => {
    const t = new Tables();
    t.mem.write64(ROOT0 + 257n * 8n, block(0n));
    expect(translate(t.mem, state(), VA)).toEqual(s1Fault('translation', 0));
  });

  it('treats a 01 descriptor at level 3 as invalid (translation fault, level 3)', () => {
    const t = new Tables();
    t.map(VA, 3, FRAME | BLOCK | AF);
    expect(translate(t.mem, state(), VA)).toEqual(s1Fault('translation', 3));
    expect(translate(t.mem, state(), VA)).toMatchObject({ fsc: 0x07 });
  });

  it('treats bit 0 = 0 as invalid at the level where it is found, whatever the other bits', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME));
    t.mem.write64(addrs.get(2)!, 0xffff_ffff_ffff_fffen);
    expect(translate(t.mem, state(), VA, 'write')).toEqual(s1Fault('translation', 2, true));
  });
});

describe('stage 1: address size (IPS)', () => {
  const ips40 = (extra = 0n) => state({ tcr: (TCR_48 & ~ips(7)) | ips(0b010) | extra });

  it('faults at the start level when the TTBR base is at or above 2^IPS', () => {
    const t = new Tables();
    expect(translate(t.mem, { ...ips40(), ttbr0: 1n << 40n }, VA)).toEqual(s1Fault('address-size', 0));
    expect(translate(t.mem, { ...state(), ttbr0: 1n << 40n }, VA)).toEqual(s1Fault('abort', 0));
    const s = state({ tcr: (TCR_48 & ~(ips(7) | 0x3fn)) | ips(0b010) | t0sz(25) });
    expect(translate(t.mem, { ...s, ttbr0: 1n << 40n }, 0x1000n)).toEqual(s1Fault('address-size', 1));
    expect(translate(t.mem, { ...ips40(), ttbr0: 1n << 40n }, VA)).toMatchObject({ fsc: 0x00, kind: 'address-size' });
  });

  it('faults at the table level when a next-level table address is at or above 2^IPS', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME));
    t.mem.write64(addrs.get(1)!, (1n << 41n) | TABLE);
    expect(translate(t.mem, ips40(), VA)).toEqual(s1Fault('address-size', 1));
  });

  it('faults at the leaf level when the output address is at or above 2^IPS', () => {
    const t = new Tables();
    t.map(VA, 3, page(1n << 40n));
    expect(translate(t.mem, ips40(), VA)).toEqual(s1Fault('address-size', 3));
    const t2 = new Tables();
    t2.map(VA, 2, block(0x0000_8000_0000_0000n));
    expect(translate(t2.mem, ips40(), VA, 'fetch')).toEqual(s1Fault('address-size', 2));
    expect(translate(t2.mem, state(), VA)).toEqual(ok(0x0000_8000_0000_1abcn, SIZE_2M, 2));
  });

  it('uses 32 bits for IPS = 000 and 48 bits for IPS = 110', () => {
    const t = new Tables();
    t.map(VA, 3, page(0x1_0000_0000n));
    const withIps = (n: number) => state({ tcr: (TCR_48 & ~ips(7)) | ips(n) });
    expect(translate(t.mem, withIps(0b000), VA)).toEqual(s1Fault('address-size', 3));
    expect(translate(t.mem, withIps(0b110), VA)).toEqual(ok(0x1_0000_0abcn, SIZE_4K, 3));
  });

  it('ignores descriptor bits [51:48] in table and leaf addresses', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME | bit(48) | bit(49)));
    t.mem.write64(addrs.get(1)!, t.read(addrs.get(1)!) | bit(48) | bit(50));
    expect(translate(t.mem, ips40(), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('checks the address size before the access flag', () => {
    const t = new Tables();
    t.map(VA, 3, (1n << 40n) | PAGE);
    expect(translate(t.mem, ips40(), VA)).toEqual(s1Fault('address-size', 3));
  });
});

describe('stage 1: access flag', () => {
  it('faults with AF = 0 and TCR.HA = 0 (fsc 0x08 + level) and leaves memory alone', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE);
    expect(translate(t.mem, state(), VA, 'write')).toEqual(s1Fault('access-flag', 3, true));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE);
    const t2 = new Tables();
    t2.map(VA, 2, 0x4000_0000n | BLOCK);
    expect(translate(t2.mem, state(), VA)).toMatchObject({ fsc: 0x0a, kind: 'access-flag', level: 2 });
  });

  it('sets AF by compare-exchange with TCR.HA = 1 and translates', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE | SW55);
    expect(translate(t.mem, state({ tcr: TCR_48 | HA }), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | SW55 | AF);
  });

  it('reports the access-flag fault before a permission fault', () => {
    const t = new Tables();
    t.map(VA, 3, FRAME | PAGE | ap(0b00));
    expect(translate(t.mem, state(), VA, 'read', true)).toEqual(s1Fault('access-flag', 3));
  });

  it('does not set AF when the access then fails the permission check', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE | ap(0b10));
    expect(translate(t.mem, state({ tcr: TCR_48 | HA }), VA, 'write')).toEqual(s1Fault('permission', 3, true));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | ap(0b10));
  });

  it('does not write an entry whose AF is already set', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME));
    const spy = new SpyMemory(t.mem);
    translate(spy, state({ tcr: TCR_48 | HA | HD }), VA, 'write');
    expect(spy.cmpxchgs).toBe(0);
  });
});

describe('stage 1: dirty state (DBM)', () => {
  const hahd = state({ tcr: TCR_48 | HA | HD });

  it('lets a write through a read-only DBM page with HA+HD and clears AP[2] in memory', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME, ap(0b10) | DBM));
    expect(translate(t.mem, hahd, VA, 'write')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(page(FRAME, ap(0b00) | DBM));
  });

  it('sets AF and clears AP[2] in one update, also for an EL0 write to AP = 11', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE | ap(0b11) | DBM);
    const spy = new SpyMemory(t.mem);
    expect(translate(spy, hahd, VA, 'write', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | AF | ap(0b01) | DBM);
    expect(spy.cmpxchgs).toBe(1);
  });

  it('does not change a DBM page on a read', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME, ap(0b10) | DBM));
    expect(translate(t.mem, hahd, VA, 'read')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(page(FRAME, ap(0b10) | DBM));
  });

  it('faults a write to a read-only page without DBM, without HD, or with HD but not HA', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b10)));
    expect(translate(t.mem, hahd, VA, 'write')).toEqual(s1Fault('permission', 3, true));
    const t2 = new Tables();
    const addrs = t2.map(VA, 3, page(FRAME, ap(0b10) | DBM));
    expect(translate(t2.mem, state({ tcr: TCR_48 | HA }), VA, 'write')).toEqual(s1Fault('permission', 3, true));
    expect(translate(t2.mem, state({ tcr: TCR_48 | HD }), VA, 'write')).toEqual(s1Fault('permission', 3, true));
    expect(t2.read(addrs.get(3)!)).toBe(page(FRAME, ap(0b10) | DBM));
  });

  it('does not let DBM override APTable[1] (no write below)', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME, ap(0b10) | DBM), { upper: { 1: APT_RO } });
    expect(translate(t.mem, hahd, VA, 'write')).toEqual(s1Fault('permission', 3, true));
    expect(t.read(addrs.get(3)!)).toBe(page(FRAME, ap(0b10) | DBM));
  });
});

describe('stage 1: hierarchical attributes', () => {
  it('APTable[0] (bit 61) removes EL0 access below the table', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)), { upper: { 1: APT_NO_EL0 } });
    expect(translate(t.mem, state(), VA, 'read', true)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state(), VA, 'write', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('APTable[1] (bit 62) removes write access at every EL below the table', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)), { upper: { 2: APT_RO } });
    expect(translate(t.mem, state(), VA, 'write', false)).toEqual(s1Fault('permission', 3, true));
    expect(translate(t.mem, state(), VA, 'write', true)).toEqual(s1Fault('permission', 3, true));
    expect(translate(t.mem, state(), VA, 'read', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('UXNTable forbids EL0 fetches below the table, not EL1 ones', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b00)), { upper: { 0: UXN_TABLE } });
    expect(translate(t.mem, state(), VA, 'fetch', true)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('PXNTable forbids EL1 fetches below the table, not EL0 ones', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b11)), { upper: { 2: PXN_TABLE } });
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state(), VA, 'fetch', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('HPD0 disables APTable/UXNTable/PXNTable for TTBR0; HPD1 does not', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b00)), { upper: { 0: APT_RO | APT_NO_EL0, 1: UXN_TABLE | PXN_TABLE } });
    const hpd0 = state({ tcr: TCR_48 | HPD0 });
    expect(translate(t.mem, hpd0, VA, 'write')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, hpd0, VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, hpd0, VA, 'fetch', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    const hpd1 = state({ tcr: TCR_48 | HPD1 });
    expect(translate(t.mem, hpd1, VA, 'write')).toEqual(s1Fault('permission', 3, true));
    expect(translate(t.mem, hpd1, VA, 'fetch')).toEqual(s1Fault('permission', 3));
  });

  it('HPD1 disables the table attributes for TTBR1', () => {
    const t = new Tables();
    const va = 0xffff_8080_4020_1000n;
    t.map(va, 3, page(FRAME, ap(0b01)), { root: ROOT1, upper: { 1: APT_NO_EL0 } });
    expect(translate(t.mem, state(), va, 'read', true)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state({ tcr: TCR_48 | HPD1 }), va, 'read', true)).toEqual(ok(FRAME, SIZE_4K, 3));
  });

  it('applies APTable before the "EL0-writable implies PXN" rule', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)), { upper: { 1: APT_NO_EL0 } });
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    const t2 = new Tables();
    t2.map(VA, 3, page(FRAME, ap(0b01)));
    expect(translate(t2.mem, state(), VA, 'fetch', false)).toEqual(s1Fault('permission', 3));
  });
});

describe('stage 1: permissions', () => {
  // [AP[2:1], el0, access, allowed]; WXN = PAN = UXN = PXN = 0.
  const rows: [number, boolean, RefArmAccess, boolean][] = [
    [0b00, false, 'read', true], [0b00, false, 'write', true], [0b00, false, 'fetch', true],
    [0b00, true, 'read', false], [0b00, true, 'write', false], [0b00, true, 'fetch', true],
    [0b01, false, 'read', true], [0b01, false, 'write', true], [0b01, false, 'fetch', false],
    [0b01, true, 'read', true], [0b01, true, 'write', true], [0b01, true, 'fetch', true],
    [0b10, false, 'read', true], [0b10, false, 'write', false], [0b10, false, 'fetch', true],
    [0b10, true, 'read', false], [0b10, true, 'write', false], [0b10, true, 'fetch', true],
    [0b11, false, 'read', true], [0b11, false, 'write', false], [0b11, false, 'fetch', true],
    [0b11, true, 'read', true], [0b11, true, 'write', false], [0b11, true, 'fetch', true],
  ];
  it.each(rows)('AP=%i el0=%s %s allowed=%s', (apBits, el0, access, allowed) => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(apBits)));
    const expected = allowed ? ok(FRAME | 0xabcn, SIZE_4K, 3) : s1Fault('permission', 3, access === 'write');
    expect(translate(t.mem, state(), VA, access, el0)).toEqual(expected);
  });

  it('reports permission faults with fsc 0x0C + level at a block', () => {
    const t = new Tables();
    t.map(VA, 1, block(0x4000_0000n, ap(0b11)));
    expect(translate(t.mem, state(), VA, 'write')).toMatchObject({ fsc: 0x0d, level: 1, write: true, stage: 1 });
  });

  it('leaf UXN forbids EL0 fetches only; leaf PXN forbids EL1 fetches only', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b11) | UXN));
    expect(translate(t.mem, state(), VA, 'fetch', true)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state(), VA, 'read', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    t.map(VA, 3, page(FRAME, ap(0b11) | PXN));
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(s1Fault('permission', 3));
    expect(translate(t.mem, state(), VA, 'fetch', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  it('EL0-writable implies PXN: EL1 cannot fetch from AP = 01', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)));
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(s1Fault('permission', 3));
    t.map(VA, 3, page(FRAME, ap(0b11)));
    expect(translate(t.mem, state(), VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });

  // [AP[2:1], el0, access, allowed] with PSTATE.PAN = 1.
  const panRows: [number, boolean, RefArmAccess, boolean][] = [
    [0b00, false, 'read', true], [0b00, false, 'write', true],
    [0b01, false, 'read', false], [0b01, false, 'write', false],
    [0b10, false, 'read', true],
    [0b11, false, 'read', false], [0b11, false, 'fetch', true],
    [0b01, true, 'read', true], [0b01, true, 'write', true], [0b11, true, 'read', true],
  ];
  it.each(panRows)('PAN: AP=%i el0=%s %s allowed=%s', (apBits, el0, access, allowed) => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(apBits)));
    const expected = allowed ? ok(FRAME | 0xabcn, SIZE_4K, 3) : s1Fault('permission', 3, access === 'write');
    expect(translate(t.mem, state({ pan: true }), VA, access, el0)).toEqual(expected);
  });

  // [AP[2:1], el0, pan, allowed] for a fetch with SCTLR.WXN = 1.
  const wxnRows: [number, boolean, boolean, boolean][] = [
    [0b00, false, false, false],
    [0b10, false, false, true],
    [0b11, false, false, true],
    [0b11, false, true, true],
    [0b01, true, false, false],
    [0b00, true, false, true],
    [0b11, true, false, true],
  ];
  it.each(wxnRows)('WXN: fetch AP=%i el0=%s pan=%s allowed=%s', (apBits, el0, pan, allowed) => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(apBits)));
    const s = state({ sctlr: SCTLR_M | SCTLR_WXN, pan });
    const expected = allowed ? ok(FRAME | 0xabcn, SIZE_4K, 3) : s1Fault('permission', 3);
    expect(translate(t.mem, s, VA, 'fetch', el0)).toEqual(expected);
  });

  it('WXN does not affect data accesses', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)));
    const s = state({ sctlr: SCTLR_M | SCTLR_WXN });
    expect(translate(t.mem, s, VA, 'write', true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, s, VA, 'write', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
  });
});

describe('stage 1: aborts and restarts', () => {
  it('reports a descriptor read outside RAM as an external abort on the walk (fsc 0x14 + level)', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME));
    t.mem.write64(addrs.get(1)!, RAM | TABLE);
    expect(translate(t.mem, state(), VA, 'write')).toEqual(s1Fault('abort', 2, true));
    expect(translate(t.mem, state(), VA)).toMatchObject({ fsc: 0x16 });
    expect(translate(t.mem, state({ ttbr0: RAM }), VA)).toEqual(s1Fault('abort', 0));
  });

  it('restarts the whole translation when the leaf changed before the AF update', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE);
    const leaf = addrs.get(3)!;
    const spy = new SpyMemory(t.mem, (gpa, call) => {
      if (call === 1) t.mem.write64(gpa, t.read(gpa) | SW55);
      return true;
    });
    expect(translate(spy, state({ tcr: TCR_48 | HA }), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.cmpxchgs).toBe(2);
    expect(spy.reads.filter((a) => a === addrs.get(0)).length).toBe(2);
    expect(t.read(leaf)).toBe(FRAME | PAGE | SW55 | AF);
  });

  it('restarts with the new descriptor, which may now fault', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE);
    const spy = new SpyMemory(t.mem, (gpa, call) => {
      if (call === 1) t.mem.write64(gpa, 0n);
      return true;
    });
    expect(translate(spy, state({ tcr: TCR_48 | HA }), VA)).toEqual(s1Fault('translation', 3));
    expect(t.read(addrs.get(3)!)).toBe(0n);
  });

  it('throws after 100 restarts', () => {
    const t = new Tables();
    t.map(VA, 3, FRAME | PAGE);
    const spy = new SpyMemory(t.mem, () => false);
    expect(() => translate(spy, state({ tcr: TCR_48 | HA }), VA)).toThrow(/restarted more than 100 times/);
    expect(spy.cmpxchgs).toBe(101);
  });
});

describe('stage 2 alone (SCTLR.M = 0, HCR.VM = 1)', () => {
  const s2 = (over: Partial<RefArm64State> = {}) => state({ sctlr: 0n, hcr: HCR_VM, ...over });

  it('indexes the second of two concatenated level-1 tables (40-bit IPA, SL0 = 1), VTTBR low bits ignored', () => {
    const t = new Tables();
    const ipa = 0x80_4020_1abcn; // level-1 index 513 = entry 1 of the second table
    t.mem.write64(S2_ROOT + 0x1008n, s2block(0x1_c000_0000n));
    const spy = new SpyMemory(t.mem);
    expect(translate(spy, s2({ vttbr: S2_ROOT | 0x1fffn }), ipa)).toEqual(ok(0x1_c020_1abcn, SIZE_1G, 1, ipa));
    expect(spy.reads).toEqual([S2_ROOT + 0x1008n]);
  });

  it('starts at level 2 with four concatenated tables for a 32-bit IPA (SL0 = 0)', () => {
    const t = new Tables();
    const root = 0x1_0000n;
    t.mem.write64(root + 0x3ff8n, s2block(0x2000_0000n));
    const s = s2({ vttbr: root | 0x3000n, vtcr: vt0sz(32) | sl0(0) | ps(0b101) });
    expect(translate(t.mem, s, 0xffe0_1abcn)).toEqual(ok(0x2000_1abcn, SIZE_2M, 2, 0xffe0_1abcn));
    expect(translate(t.mem, s, 0x1_0000_0000n)).toEqual(s2Fault('translation', 0, 0x1_0000_0000n));
  });

  it('starts at level 1 with sixteen concatenated tables for a 43-bit IPA', () => {
    const t = new Tables();
    const root = 0x2_0000n;
    t.mem.write64(root + 0xfff8n, s2block(0xc000_0000n));
    const s = s2({ vttbr: root, vtcr: vt0sz(21) | sl0(1) | ps(0b101) });
    expect(translate(t.mem, s, 0x7ff_c000_0abcn)).toEqual(ok(0xc000_0abcn, SIZE_1G, 1, 0x7ff_c000_0abcn));
  });

  it('walks four levels for a 48-bit IPA (SL0 = 2) and three from a full level-1 table for 39 bits', () => {
    const t = new Tables();
    const root48 = 0x3_0000n;
    t.map(VA, 3, s2page(FRAME), { root: root48 });
    const s48 = s2({ vttbr: root48, vtcr: vt0sz(16) | sl0(2) | ps(0b101) });
    expect(translate(t.mem, s48, VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, VA));
    const root39 = 0x4_0000n;
    const ipa = 0x7f_c020_3abcn;
    const addrs = t.map(ipa, 3, s2page(FRAME), { root: root39, startLevel: 1, inputBits: 39 });
    expect(addrs.get(1)).toBe(root39 + 0xff8n);
    const s39 = s2({ vttbr: root39, vtcr: vt0sz(25) | sl0(1) | ps(0b101) });
    expect(translate(t.mem, s39, ipa)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, ipa));
  });

  it('faults (stage 2, translation, level 0) on an IPA at or above 2^ipaBits', () => {
    const t = new Tables();
    expect(translate(t.mem, s2(), 1n << 40n, 'write')).toEqual(s2Fault('translation', 0, 1n << 40n, false, true));
  });

  it('reports a stage-2 address-size fault for VTTBR, table and output addresses at or above PS', () => {
    const t = new Tables();
    const ps40 = vt0sz(24) | sl0(1) | ps(0b010);
    expect(translate(t.mem, s2({ vtcr: ps40, vttbr: 1n << 40n }), 0x1000n)).toEqual(
      s2Fault('address-size', 1, 0x1000n),
    );
    t.mem.write64(S2_ROOT + 16n, (1n << 40n) | TABLE);
    expect(translate(t.mem, s2({ vtcr: ps40 }), 0x8000_1000n)).toEqual(s2Fault('address-size', 1, 0x8000_1000n));
    t.mapS2(0xc000_0000n, 2, s2block(1n << 41n));
    expect(translate(t.mem, s2({ vtcr: ps40 }), 0xc000_1000n)).toEqual(s2Fault('address-size', 2, 0xc000_1000n));
    expect(translate(t.mem, s2(), 0xc000_1000n)).toEqual(ok((1n << 41n) | 0x1000n, SIZE_2M, 2, 0xc000_1000n));
  });

  it('applies the descriptor type rules at stage 2 (invalid, 01 at level 3)', () => {
    const t = new Tables();
    expect(translate(t.mem, s2(), 0x1000n)).toEqual(s2Fault('translation', 1, 0x1000n));
    t.mapS2(0x1000n, 3, FRAME | BLOCK | AF | S2_RW);
    expect(translate(t.mem, s2(), 0x1abcn)).toEqual(s2Fault('translation', 3, 0x1abcn));
  });

  // [S2AP, access, allowed]
  const s2apRows: [number, RefArmAccess, boolean][] = [
    [0b00, 'read', false], [0b00, 'write', false], [0b00, 'fetch', true],
    [0b01, 'read', true], [0b01, 'write', false],
    [0b10, 'read', false], [0b10, 'write', true],
    [0b11, 'read', true], [0b11, 'write', true],
  ];
  it.each(s2apRows)('S2AP=%i %s allowed=%s', (s2ap, access, allowed) => {
    const t = new Tables();
    t.mapS2(0x1000n, 3, s2page(FRAME, (BigInt(s2ap) << 6n) | S2_NORMAL));
    const expected = allowed
      ? ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn)
      : s2Fault('permission', 3, 0x1abcn, false, access === 'write');
    expect(translate(t.mem, s2(), 0x1abcn, access)).toEqual(expected);
  });

  // [XN[1:0], el0, allowed] for a fetch
  const xnRows: [number, boolean, boolean][] = [
    [0b00, false, true], [0b00, true, true],
    [0b01, false, false], [0b01, true, true],
    [0b10, false, false], [0b10, true, false],
    [0b11, false, true], [0b11, true, false],
  ];
  it.each(xnRows)('XN=%i el0=%s fetch allowed=%s', (xn, el0, allowed) => {
    const t = new Tables();
    t.mapS2(0x1000n, 3, s2page(FRAME, S2AP_R | S2_NORMAL | s2xn(xn)));
    const expected = allowed ? ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn) : s2Fault('permission', 3, 0x1abcn);
    expect(translate(t.mem, s2(), 0x1abcn, 'fetch', el0)).toEqual(expected);
    expect(translate(t.mem, s2(), 0x1abcn, 'read', el0)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn));
  });

  it('faults on S2 AF = 0 without VTCR.HA and sets AF with it', () => {
    const t = new Tables();
    const addrs = t.mapS2(0x1000n, 3, FRAME | PAGE | S2_RW | S2_NORMAL);
    expect(translate(t.mem, s2(), 0x1abcn)).toEqual(s2Fault('access-flag', 3, 0x1abcn));
    expect(translate(t.mem, s2(), 0x1abcn)).toMatchObject({ fsc: 0x0b });
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | S2_RW | S2_NORMAL);
    expect(translate(t.mem, s2({ vtcr: VTCR_40 | VTCR_HA }), 0x1abcn)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | S2_RW | S2_NORMAL | AF);
  });

  it('checks the S2 access flag before S2 permissions and sets AF only on success', () => {
    const t = new Tables();
    const addrs = t.mapS2(0x1000n, 3, FRAME | PAGE | S2AP_R | S2_NORMAL);
    expect(translate(t.mem, s2(), 0x1abcn, 'write')).toEqual(s2Fault('access-flag', 3, 0x1abcn, false, true));
    const withHa = s2({ vtcr: VTCR_40 | VTCR_HA });
    expect(translate(t.mem, withHa, 0x1abcn, 'write')).toEqual(s2Fault('permission', 3, 0x1abcn, false, true));
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | S2AP_R | S2_NORMAL);
  });

  it('S2 DBM with VTCR.HA+HD turns a write to a read-only page into setting S2AP[1]', () => {
    const t = new Tables();
    const addrs = t.mapS2(0x1000n, 3, s2page(FRAME, S2AP_R | S2_NORMAL | DBM));
    const hahd = s2({ vtcr: VTCR_40 | VTCR_HA | VTCR_HD });
    expect(translate(t.mem, s2({ vtcr: VTCR_40 | VTCR_HD }), 0x1abcn, 'write')).toEqual(
      s2Fault('permission', 3, 0x1abcn, false, true),
    );
    expect(translate(t.mem, s2({ vtcr: VTCR_40 | VTCR_HA }), 0x1abcn, 'write')).toEqual(
      s2Fault('permission', 3, 0x1abcn, false, true),
    );
    expect(translate(t.mem, hahd, 0x1abcn, 'read')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn));
    expect(t.read(addrs.get(3)!)).toBe(s2page(FRAME, S2AP_R | S2_NORMAL | DBM));
    expect(translate(t.mem, hahd, 0x1abcn, 'write')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x1abcn));
    expect(t.read(addrs.get(3)!)).toBe(s2page(FRAME, S2_RW | S2_NORMAL | DBM));
  });

  it('reports a stage-2 descriptor read outside RAM as a stage-2 abort', () => {
    const t = new Tables();
    t.mem.write64(S2_ROOT + 16n, RAM | TABLE);
    expect(translate(t.mem, s2(), 0x8000_1234n)).toEqual(s2Fault('abort', 2, 0x8000_1234n));
  });

  it('reports the stage-2 leaf level and size when stage 1 is off', () => {
    const t = new Tables();
    t.mapS2(0x4000_0000n, 2, s2block(0x60_0000n));
    expect(translate(t.mem, s2(), 0x4001_2345n)).toEqual(ok(0x61_2345n, SIZE_2M, 2, 0x4001_2345n));
  });
});

describe('stage 1 + stage 2', () => {
  const both = (over: Partial<RefArm64State> = {}) => state({ hcr: HCR_VM, ...over });

  it('translates the stage-1 output IPA through stage 2 and reports both addresses', () => {
    const t = twoStage();
    t.map(VA, 3, page(0x8000_5000n));
    t.mapS2(0x8000_5000n, 3, s2page(FRAME));
    expect(translate(t.mem, both(), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x8000_5abcn));
  });

  it('translates every stage-1 descriptor address through stage 2 (IPA ≠ PA)', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    const l2Table = t.retarget(addrs.get(1)!, ALIAS);
    t.mapS2(ALIAS, 3, s2page(l2Table));
    expect(translate(t.mem, both(), VA)).toEqual(ok(0x1abcn, SIZE_4K, 3, 0x1abcn));
    // with stage 2 off the same tables send the walk to the unbacked IPA-as-PA
    expect(translate(t.mem, state(), VA)).toEqual(s1Fault('translation', 2));
  });

  it('combined page size is the smaller of the two stages; level is the stage-1 level', () => {
    const t = twoStage();
    t.map(VA, 2, block(0x8000_0000n));
    t.mapS2(0x8000_1000n, 3, s2page(FRAME));
    expect(translate(t.mem, both(), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 2, 0x8000_1abcn));

    const t2 = twoStage();
    t2.map(VA, 1, block(0x8000_0000n));
    t2.mapS2(0x8020_0000n, 2, s2block(0x0060_0000n));
    expect(translate(t2.mem, both(), VA)).toEqual(ok(0x0060_1abcn, SIZE_2M, 1, 0x8020_1abcn));

    const t3 = twoStage();
    t3.map(VA, 2, block(0x0020_0000n));
    expect(translate(t3.mem, both(), VA)).toEqual(ok(0x0020_1abcn, SIZE_2M, 2));

    const t4 = twoStage();
    t4.map(VA, 3, page(0x0030_0000n));
    expect(translate(t4.mem, both(), VA)).toEqual(ok(0x0030_0abcn, SIZE_4K, 3));
  });

  it('reports a stage-2 translation fault on a stage-1 table as s1ptw with the descriptor IPA', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    t.retarget(addrs.get(0)!, ALIAS); // level-1 table now at IPA ALIAS, unmapped at stage 2
    expect(translate(t.mem, both(), VA)).toEqual(s2Fault('translation', 1, ALIAS + 8n, true, false));
    expect(translate(t.mem, both(), VA, 'write')).toEqual(s2Fault('translation', 1, ALIAS + 8n, true, false));
    expect(translate(t.mem, both(), VA, 'fetch')).toMatchObject({ s1ptw: true, write: false, fsc: 0x05 });
  });

  it('translates the TTBR base through stage 2 as well', () => {
    const t = twoStage();
    t.map(VA, 3, page(0x1000n));
    expect(translate(t.mem, both({ ttbr0: ALIAS }), VA)).toEqual(s2Fault('translation', 1, ALIAS + 257n * 8n, true));
    t.mapS2(ALIAS, 3, s2page(ROOT0));
    expect(translate(t.mem, both({ ttbr0: ALIAS }), VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
  });

  it('needs stage-2 read permission (S2AP[0]) on stage-1 tables, whatever the access', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    const l2Table = t.retarget(addrs.get(1)!, ALIAS);
    t.mapS2(ALIAS, 3, s2page(l2Table, S2AP_W | S2_NORMAL));
    for (const access of ['read', 'write', 'fetch'] as const) {
      expect(translate(t.mem, both(), VA, access)).toEqual(
        s2Fault('permission', 3, ALIAS + 8n, true, false),
      );
    }
    // stage-2 XN does not matter for table reads
    t.mapS2(ALIAS, 3, s2page(l2Table, S2AP_R | S2_NORMAL | s2xn(0b10)));
    expect(translate(t.mem, both(), VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
  });

  it('applies the stage-2 access flag to stage-1 table pages (fault, or set with VTCR.HA)', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    const l3Table = t.retarget(addrs.get(2)!, ALIAS);
    const s2addrs = t.mapS2(ALIAS, 3, l3Table | PAGE | S2_RW | S2_NORMAL);
    expect(translate(t.mem, both(), VA)).toEqual(s2Fault('access-flag', 3, ALIAS + 8n, true));
    expect(translate(t.mem, both({ vtcr: VTCR_40 | VTCR_HA }), VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
    expect(t.read(s2addrs.get(3)!)).toBe(l3Table | PAGE | S2_RW | S2_NORMAL | AF);
  });

  it('HCR_EL2.PTW makes a stage-1 walk through stage-2 Device memory a stage-2 permission fault', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x8000_0000n));
    const l2Table = t.retarget(addrs.get(1)!, ALIAS);
    t.mapS2(ALIAS, 3, s2page(l2Table, S2_RW | S2_DEVICE));
    t.mapS2(0x8000_0000n, 3, s2page(FRAME, S2_RW | S2_DEVICE)); // data in Device memory is fine
    expect(translate(t.mem, both(), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x8000_0abcn));
    expect(translate(t.mem, both({ hcr: HCR_VM | HCR_PTW }), VA)).toEqual(
      s2Fault('permission', 3, ALIAS + 8n, true),
    );
    t.mapS2(ALIAS, 3, s2page(l2Table, S2_RW | (0b0100n << 2n))); // MemAttr 0100: Normal
    expect(translate(t.mem, both({ hcr: HCR_VM | HCR_PTW }), VA)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x8000_0abcn));
  });

  it('a stage-1 AF update needs stage-2 write permission on the table page (fault: s1ptw, write)', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, 0x1000n | PAGE);
    const l3Table = t.retarget(addrs.get(2)!, ALIAS);
    t.mapS2(ALIAS, 3, s2page(l3Table, S2AP_R | S2_NORMAL));
    const ha = both({ tcr: TCR_48 | HA });
    expect(translate(t.mem, ha, VA)).toEqual(s2Fault('permission', 3, ALIAS + 8n, true, true));
    expect(t.read(addrs.get(3)!)).toBe(0x1000n | PAGE);
    // no update needed → no write permission needed
    t.mem.write64(addrs.get(3)!, page(0x1000n));
    expect(translate(t.mem, ha, VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
    // writable table page → AF set
    t.mem.write64(addrs.get(3)!, 0x1000n | PAGE);
    t.mapS2(ALIAS, 3, s2page(l3Table));
    expect(translate(t.mem, ha, VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(page(0x1000n));
  });

  it('a stage-1 DBM update needs stage-2 write permission on the table page', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n, ap(0b10) | DBM));
    const l3Table = t.retarget(addrs.get(2)!, ALIAS);
    t.mapS2(ALIAS, 3, s2page(l3Table, S2AP_R | S2_NORMAL));
    const hahd = both({ tcr: TCR_48 | HA | HD });
    expect(translate(t.mem, hahd, VA, 'write')).toEqual(s2Fault('permission', 3, ALIAS + 8n, true, true));
    expect(translate(t.mem, hahd, VA, 'read')).toEqual(ok(0x1abcn, SIZE_4K, 3));
    t.mapS2(ALIAS, 3, s2page(l3Table));
    expect(translate(t.mem, hahd, VA, 'write')).toEqual(ok(0x1abcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(page(0x1000n, DBM));
  });

  it('the stage-1 update is a stage-2 write: S2 DBM with VTCR.HA+HD makes the table page writable', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, 0x1000n | PAGE);
    const l3Table = t.retarget(addrs.get(2)!, ALIAS);
    const s2addrs = t.mapS2(ALIAS, 3, s2page(l3Table, S2AP_R | S2_NORMAL | DBM));
    const s = both({ tcr: TCR_48 | HA, vtcr: VTCR_40 | VTCR_HA | VTCR_HD });
    expect(translate(t.mem, s, VA)).toEqual(ok(0x1abcn, SIZE_4K, 3));
    expect(t.read(addrs.get(3)!)).toBe(page(0x1000n));
    expect(t.read(s2addrs.get(3)!)).toBe(s2page(l3Table, S2_RW | S2_NORMAL | DBM));
  });

  it('a fault on the final IPA is stage 2, not s1ptw, with the full IPA; the stage-1 AF update precedes it', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, 0x8000_1000n | PAGE);
    const s = both({ tcr: TCR_48 | HA });
    expect(translate(t.mem, s, VA, 'write')).toEqual(s2Fault('translation', 1, 0x8000_1abcn, false, true));
    expect(t.read(addrs.get(3)!)).toBe(page(0x8000_1000n));
    t.mapS2(0x8000_1000n, 3, s2page(FRAME, S2AP_R | S2_NORMAL));
    expect(translate(t.mem, s, VA, 'write')).toEqual(s2Fault('permission', 3, 0x8000_1abcn, false, true));
    expect(translate(t.mem, s, VA, 'read')).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x8000_1abcn));
  });

  it('uses the accessing EL for the stage-2 XN check of the final IPA', () => {
    const t = twoStage();
    t.map(VA, 3, page(0x8000_1000n, ap(0b11)));
    t.mapS2(0x8000_1000n, 3, s2page(FRAME, S2AP_R | S2_NORMAL | s2xn(0b11)));
    expect(translate(t.mem, both(), VA, 'fetch', true)).toEqual(s2Fault('permission', 3, 0x8000_1abcn));
    expect(translate(t.mem, both(), VA, 'fetch', false)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3, 0x8000_1abcn));
  });

  it('a stage-1 fault wins over stage 2 of the (never computed) output', () => {
    const t = twoStage();
    t.map(VA, 3, page(0x8000_1000n, ap(0b00)));
    expect(translate(t.mem, both(), VA, 'read', true)).toEqual(s1Fault('permission', 3));
  });

  it('a stage-1 descriptor whose PA is outside RAM is a stage-1 abort; a stage-2 one during S2-PTW is s1ptw', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    t.retarget(addrs.get(0)!, ALIAS);
    const s2addrs = t.mapS2(ALIAS, 3, s2page(RAM));
    expect(translate(t.mem, both(), VA)).toEqual(s1Fault('abort', 1));
    t.mem.write64(s2addrs.get(1)!, RAM | TABLE);
    expect(translate(t.mem, both(), VA)).toEqual(s2Fault('abort', 2, ALIAS + 8n, true));
  });

  it('applies the stage-2 IPA range check to stage-1 descriptor addresses', () => {
    const t = twoStage();
    const addrs = t.map(VA, 3, page(0x1000n));
    t.retarget(addrs.get(0)!, 1n << 40n);
    expect(translate(t.mem, both(), VA)).toEqual(s2Fault('translation', 0, (1n << 40n) + 8n, true));
  });

  it('stage 1 off with stage 2 on reports the stage-2 level and size', () => {
    const t = twoStage();
    expect(translate(t.mem, both({ sctlr: 0n }), 0x3456_789an)).toEqual(ok(0x3456_789an, SIZE_1G, 1));
  });
});

describe('debugger view', () => {
  it('ignores stage 2 and reads stage-1 tables as PAs', () => {
    const t = new Tables();
    t.map(VA, 3, page(0x8000_1000n));
    const s = state({ hcr: HCR_VM, vttbr: 0x7_0000n }); // empty stage-2 tables
    expect(translate(t.mem, s, VA)).toEqual(s2Fault('translation', 1, ROOT0 + 257n * 8n, true));
    expect(translate(t.mem, s, VA, 'read', false, true)).toEqual(ok(0x8000_1abcn, SIZE_4K, 3));
  });

  it('translates an AF = 0 page when TCR.HA = 1 without writing it; faults when HA = 0', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, FRAME | PAGE | ap(0b10) | DBM);
    const spy = new SpyMemory(t.mem);
    const s = state({ tcr: TCR_48 | HA | HD });
    expect(translate(spy, s, VA, 'write', false, true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(spy.cmpxchgs).toBe(0);
    expect(t.read(addrs.get(3)!)).toBe(FRAME | PAGE | ap(0b10) | DBM);
    expect(translate(t.mem, state(), VA, 'read', false, true)).toEqual(s1Fault('access-flag', 3));
  });

  it('checks permissions as a data read at the given EL, with PAN, whatever the access', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b00) | UXN | PXN));
    expect(translate(t.mem, state(), VA, 'fetch', false, true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state(), VA, 'write', true, true)).toEqual(s1Fault('permission', 3, false));
    t.map(VA, 3, page(FRAME, ap(0b11)));
    expect(translate(t.mem, state(), VA, 'write', false, true)).toEqual(ok(FRAME | 0xabcn, SIZE_4K, 3));
    expect(translate(t.mem, state({ pan: true }), VA, 'fetch', false, true)).toEqual(s1Fault('permission', 3));
  });

  it('applies TBI as for data (TBID ignored) and the usual VA, EPD and E0PD checks', () => {
    const t = new Tables();
    t.map(VA, 3, page(FRAME, ap(0b01)));
    const s = state({ tcr: TCR_48 | TBI0 | TBID0 });
    expect(translate(t.mem, s, 0x7700_0000_0000_0000n | VA, 'fetch', false, true)).toEqual(
      ok(FRAME | 0xabcn, SIZE_4K, 3),
    );
    expect(translate(t.mem, state(), 0x0001_0000_0000_0000n | VA, 'read', false, true)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, state({ tcr: TCR_48 | EPD0 }), VA, 'read', false, true)).toEqual(s1Fault('translation', 0));
    expect(translate(t.mem, state({ tcr: TCR_48 | E0PD0 }), VA, 'read', true, true)).toEqual(s1Fault('translation', 0));
  });

  it('returns va as pa with stage 1 off, even with stage 2 on', () => {
    const t = new Tables();
    const s = state({ sctlr: 0n, hcr: HCR_VM, vttbr: 0x7_0000n });
    expect(translate(t.mem, s, 0x1234_5678n, 'read', false, true)).toEqual(ok(0x1234_5678n, SIZE_4K, 0));
    expect(translate(t.mem, s, 0x1234_5678n)).toEqual(s2Fault('translation', 1, 0x1234_5678n));
  });

  it('reports a table outside RAM as an abort', () => {
    const t = new Tables();
    const addrs = t.map(VA, 3, page(FRAME));
    t.mem.write64(addrs.get(2)!, RAM | TABLE);
    expect(translate(t.mem, state(), VA, 'read', false, true)).toEqual(s1Fault('abort', 3));
  });
});
