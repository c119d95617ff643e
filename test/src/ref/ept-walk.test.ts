/**
 * Rules of the reference EPT walker and the two-dimensional walk, one test per rule of Intel
 * SDM Vol.3C §29.3 (EPT translation, misconfigurations, violations and their prioritization,
 * accessed and dirty flags for EPT), the "Exit Qualification for EPT Violations" table and
 * the VM-entry checks on the EPTP. EPT and guest tables are built by hand in a MapMemory with
 * real entry encodings; bit constants are spelled out here rather than imported so that a
 * wrong constant in the walker cannot hide.
 */
import { describe, expect, it } from 'vitest';
import {
  refDecodeEptp,
  refEptStats,
  refTranslateX86Ept,
  refWalkEpt,
  type RefEptAccess,
  type RefEptOptions,
  type RefEptResult,
} from '../../../src/ref/ept-walk.js';
import { MapMemory, type RefMemory, type RefX86State } from '../../../src/ref/x86-walk.js';
import { HandTables } from '../../helpers/hand-tables.js';
import { A, D, IPAT, PS, Q_FETCH, Q_GVA, Q_R, Q_READ, Q_TRANSLATED, Q_UX, Q_WRITE, Q_X, R, UX, W, X, mt } from '../../helpers/ept-bits.js';

const RWX = R | W | X;
const WB = mt(6);
const TABLE = RWX | UX;
const LEAF = RWX | WB;

// EPTP
const EPTP_UC = 0n;
const EPTP_WB = 6n;
const PWL4 = 3n << 3n;
const PWL5 = 4n << 3n;
const EPTP_AD = 1n << 6n;

// guest x86 paging
const GP = 1n << 0n;
const GRW = 1n << 1n;
const GUS = 1n << 2n;
const GA = 1n << 5n;
const GD = 1n << 6n;
const GPS = 1n << 7n;
const GTABLE = GP | GRW | GUS;
const CR0_PE = 1n << 0n;
const CR0_WP = 1n << 16n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const PF_P = 1 << 0;
const PF_W = 1 << 1;
const PF_U = 1 << 2;
const PF_RSVD = 1 << 3;

const SIZE_4K = 4096;
const SIZE_2M = 2 * 1024 * 1024;
const SIZE_1G = 1024 * 1024 * 1024;

const RAM = 1n << 28n;
const EPT_BASE = 0x100_0000n;
const GUEST_HPA_OFFSET = 0x400_0000n;
const GUEST_ROOT = 0x10_0000n;
const GPA = 0x0000_0012_3456_789an;
const GPA5 = 0x00ab_0012_3456_789an;
const FRAME_4K = 0x0000_0007_6543_2000n;
const FRAME_2M = 0x0000_0007_6540_0000n;
const FRAME_1G = 0x0000_0040_c000_0000n;
const VA = 0x0000_7f12_3456_789an;
const VA5 = 0x00ab_cdef_0123_4567n;
const DATA_GPA = 0x0000_0000_0765_4000n;
const DATA_HPA = 0x0000_0003_2100_0000n;

const M46: RefEptOptions = { maxPhysAddrBits: 46 };
const bit = (n: number): bigint => 1n << BigInt(n);

function bitRange(hi: number, lo: number): bigint {
  let mask = 0n;
  for (let n = lo; n <= hi; n++) mask |= bit(n);
  return mask;
}

/** EPT paging structures from EPT_BASE upward (table entries default to RWX|UX); each table gets the next free 4 KiB frame. */
class Ept extends HandTables {
  constructor(mem: MapMemory = new MapMemory(RAM), levels: 4 | 5 = 4, base: bigint = EPT_BASE) {
    super(mem, base, levels, TABLE);
  }

  eptp(flags: bigint = EPTP_WB): bigint {
    return this.root | flags | (this.levels === 5 ? PWL5 : PWL4);
  }
}

/** Records every load and cmpxchg; `onCmpxchg` may force a result to model a racing CPU. */
class SpyMemory implements RefMemory {
  readonly reads: bigint[] = [];
  readonly cmpxchgs: bigint[] = [];

  constructor(
    readonly inner: MapMemory,
    private readonly onCmpxchg?: (hpa: bigint, call: number) => boolean | undefined,
  ) {}

  read64(hpa: bigint): bigint | undefined {
    this.reads.push(hpa);
    return this.inner.read64(hpa);
  }

  cmpxchg64(hpa: bigint, expected: bigint, desired: bigint): boolean {
    this.cmpxchgs.push(hpa);
    const forced = this.onCmpxchg?.(hpa, this.cmpxchgs.length);
    if (forced !== undefined) return forced;
    return this.inner.cmpxchg64(hpa, expected, desired);
  }
}

const READ: RefEptAccess = { type: 'read' };
const WRITE: RefEptAccess = { type: 'write' };
const FETCH: RefEptAccess = { type: 'fetch' };

const ok = (hpa: bigint, pageSize: number, level: number, extra: Partial<Extract<RefEptResult, { ok: true }>> = {}) => ({
  ok: true,
  hpa,
  pageSize,
  level,
  memType: 6,
  ipat: false,
  rwx: 7,
  ...extra,
});
const violation = (gpa: bigint, level: number, qualification: number, gva?: bigint) => ({
  ok: false,
  kind: 'ept-violation',
  gpa,
  level,
  qualification,
  ...(gva === undefined ? {} : { gva }),
});
const misconfig = (gpa: bigint, level: number) => ({ ok: false, kind: 'ept-misconfig', gpa, level });

/** A 4 KiB EPT mapping of GPA with `leaf` bits (FRAME_4K is added) and `upper` table entries. */
function map4K(leaf: bigint, upper: Record<number, bigint> = {}, levels: 4 | 5 = 4, gpa = GPA) {
  const ept = new Ept(undefined, levels);
  const hpas = ept.map(gpa, 1, FRAME_4K | leaf, upper);
  return { ept, hpas };
}

describe('EPTP (VM-entry checks on the EPT pointer)', () => {
  it('decodes memory type, walk length, A/D enable and root', () => {
    expect(refDecodeEptp(0x1234_5000n | EPTP_AD | PWL4 | EPTP_WB, M46)).toEqual({
      ok: true,
      memType: 6,
      levels: 4,
      ad: true,
      root: 0x1234_5000n,
    });
    expect(refDecodeEptp(0x7000n | PWL5 | EPTP_UC, M46)).toEqual({
      ok: true,
      memType: 0,
      levels: 5,
      ad: false,
      root: 0x7000n,
    });
  });

  it.each([1, 2, 3, 4, 5, 7])('memory type %i is invalid', (type) => {
    expect(refDecodeEptp(0x1000n | PWL4 | BigInt(type), M46)).toEqual({
      ok: false,
      kind: 'invalid-eptp',
      reason: 'memory-type',
    });
  });

  it.each([0, 1, 2, 5, 6, 7])('page-walk length − 1 of %i is invalid', (pwl) => {
    expect(refDecodeEptp(0x1000n | (BigInt(pwl) << 3n) | EPTP_WB, M46)).toEqual({
      ok: false,
      kind: 'invalid-eptp',
      reason: 'walk-length',
    });
  });

  it('a 5-level walk length is invalid when 5-level EPT is not supported', () => {
    expect(refDecodeEptp(0x1000n | PWL5 | EPTP_WB, { ...M46, fiveLevel: false })).toMatchObject({
      ok: false,
      reason: 'walk-length',
    });
  });

  it('bit 6 is invalid when EPT A/D flags are not supported, valid clear', () => {
    const opts = { ...M46, adSupported: false };
    expect(refDecodeEptp(0x1000n | EPTP_AD | PWL4 | EPTP_WB, opts)).toMatchObject({ ok: false, reason: 'accessed-dirty' });
    expect(refDecodeEptp(0x1000n | PWL4 | EPTP_WB, opts)).toMatchObject({ ok: true, ad: false });
  });

  it.each([7, 8, 9, 10, 11, 46, 51, 52, 63])('bit %i is reserved (MAXPHYADDR 46)', (n) => {
    expect(refDecodeEptp(0x1000n | bit(n) | PWL4 | EPTP_WB, M46)).toEqual({
      ok: false,
      kind: 'invalid-eptp',
      reason: 'reserved',
    });
  });

  it('root bits up to M-1 are address bits (bit 51 with MAXPHYADDR 52)', () => {
    expect(refDecodeEptp(bit(51) | 0x1000n | PWL4 | EPTP_WB, { maxPhysAddrBits: 52 })).toMatchObject({
      ok: true,
      root: bit(51) | 0x1000n,
    });
  });

  it('rejects a MAXPHYADDR outside 36..52', () => {
    expect(() => refDecodeEptp(0x1000n | PWL4 | EPTP_WB, { maxPhysAddrBits: 53 })).toThrow(RangeError);
  });

  it('refWalkEpt and refTranslateX86Ept throw on an EPTP that would fail VM entry', () => {
    const mem = new MapMemory(RAM);
    expect(() => refWalkEpt(mem, 0x1000n | PWL4 | 1n, GPA, READ, M46)).toThrow(RangeError);
    expect(() => refTranslateX86Ept(mem, guestState(), 0x1000n | PWL4 | EPTP_WB | bit(8), VA, 'read', false, M46)).toThrow(
      RangeError,
    );
  });
});

describe('EPT translation (SDM §29.3.2)', () => {
  it('translates a 4 KiB page through hand-placed 4-level entries (all indices 1)', () => {
    const mem = new MapMemory(RAM);
    mem.write64(0x1008n, 0x2000n | TABLE);
    mem.write64(0x2008n, 0x3000n | TABLE);
    mem.write64(0x3008n, 0x4000n | TABLE);
    mem.write64(0x4008n, FRAME_4K | LEAF);
    const gpa = 0x0000_0080_4020_1abcn;
    expect(refWalkEpt(mem, 0x1000n | PWL4 | EPTP_WB, gpa, READ, M46)).toEqual(ok(FRAME_4K | 0xabcn, SIZE_4K, 1));
  });

  it('translates a 4 KiB page through hand-placed 5-level entries (all indices 1)', () => {
    const mem = new MapMemory(RAM);
    for (let n = 1n; n <= 4n; n++) mem.write64(n * 0x1000n + 8n, (n + 1n) * 0x1000n | TABLE);
    mem.write64(0x5008n, FRAME_4K | LEAF);
    const gpa = 0x0001_0080_4020_1abcn;
    expect(refWalkEpt(mem, 0x1000n | PWL5 | EPTP_WB, gpa, READ, M46)).toEqual(ok(FRAME_4K | 0xabcn, SIZE_4K, 1));
  });

  it('indexes the PML5 table with gpa bits 56:48', () => {
    const { ept, hpas } = map4K(LEAF, {}, 5, GPA5);
    expect(hpas.get(5)).toBe(EPT_BASE + 0xabn * 8n);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA5, READ, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('4-level EPT uses only gpa bits 47:0', () => {
    const { ept } = map4K(LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA | bit(48) | bit(63), READ, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it.each([4, 5] as const)('translates a 2 MiB page (PDE bit 7) with %i-level EPT', (levels) => {
    const ept = new Ept(undefined, levels);
    ept.map(GPA, 2, FRAME_2M | PS | LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(ok(0x7_6556_789an, SIZE_2M, 2));
  });

  it.each([4, 5] as const)('translates a 1 GiB page (PDPTE bit 7) with %i-level EPT', (levels) => {
    const ept = new Ept(undefined, levels);
    ept.map(GPA, 3, FRAME_1G | PS | LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(ok(0x40_f456_789an, SIZE_1G, 3));
  });

  it.each([0, 1, 4, 5, 6])('reports leaf memory type %i', (type) => {
    const { ept } = map4K(RWX | mt(type));
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1, { memType: type }));
  });

  it.each([
    { size: '4K', level: 1, leaf: FRAME_4K | LEAF | IPAT },
    { size: '2M', level: 2, leaf: FRAME_2M | PS | LEAF | IPAT },
    { size: '1G', level: 3, leaf: FRAME_1G | PS | LEAF | IPAT },
  ])('reports ignore-PAT (bit 6) of a $size leaf', ({ level, leaf }) => {
    const ept = new Ept();
    ept.map(GPA, level, leaf);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toMatchObject({ ok: true, ipat: true, level });
  });

  it('the EPTP memory type (UC) does not change the leaf memory type', () => {
    const { ept } = map4K(LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(EPTP_UC), GPA, READ, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('ignores bits 63:52 and 11 everywhere, 9 in tables, 7 in a PTE, 8–10 without A/D and MBEC', () => {
    const high = bitRange(63, 52);
    const { ept } = map4K(LEAF | high | bit(11) | PS | A | D | UX, {
      4: TABLE | high | bit(11) | bit(9) | A,
      3: TABLE | high | bit(11) | bit(9),
      2: TABLE | high | bit(11) | bit(9),
    });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('uses address bits up to M-1 (bit 51 for MAXPHYADDR 52)', () => {
    const { ept } = map4K(LEAF | bit(51));
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, { maxPhysAddrBits: 52 })).toEqual(
      ok(bit(51) | FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('does not require the translated address to lie in RAM', () => {
    const { ept } = map4K(LEAF | bit(44));
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toMatchObject({ ok: true, hpa: bit(44) | FRAME_4K | 0x89an });
  });

  it('loads exactly one entry per level, root first', () => {
    const { ept, hpas } = map4K(LEAF);
    const spy = new SpyMemory(ept.mem);
    refWalkEpt(spy, ept.eptp(), GPA, READ, M46);
    expect(spy.reads).toEqual([4, 3, 2, 1].map((level) => hpas.get(level)));
  });
});

describe('permissions: bits 2:0 of the leaf (SDM §29.3.3.1, §29.3.3.2)', () => {
  type Outcome = 'ok' | 'violation' | 'misconfig';
  const rows: { xwr: number; read: Outcome; write: Outcome; fetch: Outcome }[] = [
    { xwr: 0b000, read: 'violation', write: 'violation', fetch: 'violation' },
    { xwr: 0b001, read: 'ok', write: 'violation', fetch: 'violation' },
    { xwr: 0b010, read: 'misconfig', write: 'misconfig', fetch: 'misconfig' },
    { xwr: 0b011, read: 'ok', write: 'ok', fetch: 'violation' },
    { xwr: 0b100, read: 'violation', write: 'violation', fetch: 'ok' },
    { xwr: 0b101, read: 'ok', write: 'violation', fetch: 'ok' },
    { xwr: 0b110, read: 'misconfig', write: 'misconfig', fetch: 'misconfig' },
    { xwr: 0b111, read: 'ok', write: 'ok', fetch: 'ok' },
  ];
  const cases = rows.flatMap((row) =>
    (['read', 'write', 'fetch'] as const).map((type) => ({ xwr: row.xwr.toString(2).padStart(3, '0'), bits: row.xwr, type, outcome: row[type] })),
  );

  it.each(cases)('XWR=$xwr in the leaf: a $type is $outcome', ({ bits, type, outcome }) => {
    const { ept } = map4K(BigInt(bits) | WB);
    const result = refWalkEpt(ept.mem, ept.eptp(), GPA, { type }, M46);
    if (outcome === 'ok') expect(result).toMatchObject({ ok: true, rwx: bits });
    else if (outcome === 'misconfig') expect(result).toEqual(misconfig(GPA, 1));
    else expect(result).toMatchObject({ ok: false, kind: 'ept-violation', level: 1 });
  });

  it.each([
    { name: 'read', access: READ },
    { name: 'write', access: WRITE },
    { name: 'fetch', access: FETCH },
  ])('execute-only (XWR=100) is a misconfiguration for a $name when not supported', ({ access }) => {
    const { ept } = map4K(X | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, access, { ...M46, executeOnly: false })).toEqual(misconfig(GPA, 1));
  });

  it.each([4, 3, 2])('write without read in the level-%i table entry is a misconfiguration', (level) => {
    const { ept } = map4K(LEAF, { [level]: W | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, level));
  });

  it('an execute-only table entry is a misconfiguration when not supported', () => {
    const { ept } = map4K(LEAF, { 3: X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, FETCH, { ...M46, executeOnly: false })).toEqual(misconfig(GPA, 3));
  });

  it.each<{ name: string; upper: Record<number, bigint>; access: RefEptAccess }>([
    { name: 'a write: PML4E without W', upper: { 4: R | X }, access: WRITE },
    { name: 'a fetch: PDPTE without X', upper: { 3: R | W }, access: FETCH },
    { name: 'a read: PDE without R', upper: { 2: X }, access: READ },
  ])('rights are ANDed over the walk: $name refuses although the leaf allows', ({ upper, access }) => {
    const { ept } = map4K(LEAF, upper);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, access, M46)).toMatchObject({ ok: false, kind: 'ept-violation', level: 1 });
  });

  it('rwx of a translation is the AND over every entry used', () => {
    const { ept } = map4K(RWX | WB, { 4: R | W | X, 3: R | W | X, 2: R | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toMatchObject({ ok: true, rwx: 5 });
  });
});

describe('not present (bits 2:0 = 000)', () => {
  it.each([4, 3, 2, 1])('a not-present entry at level %i is a violation at that level with bits 5:3 clear', (level) => {
    const { ept, hpas } = map4K(LEAF);
    ept.mem.write64(hpas.get(level)!, FRAME_4K);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(violation(GPA, level, Q_READ));
  });

  it('a not-present PML5E is a violation at level 5', () => {
    const ept = new Ept(undefined, 5);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA5, WRITE, M46)).toEqual(violation(GPA5, 5, Q_WRITE));
  });

  it.each([
    { name: 'bits 51:M', bits: bit(50) },
    { name: 'bits 7:3', bits: bitRange(7, 3) },
    { name: 'memory type 7', bits: mt(7) },
  ])('a not-present entry with $name set is a violation, not a misconfiguration', ({ bits }) => {
    const { ept } = map4K(LEAF, { 4: 0x5000n | bits });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(violation(GPA, 4, Q_READ));
  });

  it('bit 10 alone does not make an entry present without MBEC', () => {
    const { ept } = map4K(UX | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, FETCH, M46)).toEqual(violation(GPA, 1, Q_FETCH));
  });
});

describe('reserved bits (EPT misconfiguration)', () => {
  it.each([
    { level: 4, n: 46 },
    { level: 4, n: 51 },
    { level: 3, n: 46 },
    { level: 2, n: 50 },
    { level: 1, n: 46 },
    { level: 1, n: 51 },
  ])('bit $n (≥ M = 46) is reserved at level $level', ({ level, n }) => {
    const { ept } = map4K(LEAF | (level === 1 ? bit(n) : 0n), level === 1 ? {} : { [level]: TABLE | bit(n) });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, level));
  });

  it('bit 46 is an address bit for MAXPHYADDR 52 and reserved for 46 in a 1 GiB leaf', () => {
    const ept = new Ept();
    ept.map(GPA, 3, FRAME_1G | bit(46) | PS | LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, 3));
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, { maxPhysAddrBits: 52 })).toMatchObject({ ok: true, hpa: bit(46) | 0x40_f456_789an });
  });

  it.each([3, 4, 5, 6, 7])('bit %i of a PML4E is reserved', (n) => {
    const { ept } = map4K(LEAF, { 4: TABLE | bit(n) });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, 4));
  });

  it.each([3, 4, 5, 6, 7])('bit %i of a PML5E is reserved', (n) => {
    const { ept } = map4K(LEAF, { 5: TABLE | bit(n) }, 5, GPA5);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA5, READ, M46)).toEqual(misconfig(GPA5, 5));
  });

  it.each([
    { level: 3, n: 3 },
    { level: 3, n: 6 },
    { level: 2, n: 4 },
    { level: 2, n: 5 },
  ])('bit $n of a level-$level entry that references a table is reserved', ({ level, n }) => {
    const { ept } = map4K(LEAF, { [level]: TABLE | bit(n) });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, level));
  });

  it.each([12, 20, 21, 29])('bit %i of a 1 GiB leaf is reserved', (n) => {
    const ept = new Ept();
    ept.map(GPA, 3, FRAME_1G | bit(n) | PS | LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, 3));
  });

  it.each([12, 16, 20])('bit %i of a 2 MiB leaf is reserved', (n) => {
    const ept = new Ept();
    ept.map(GPA, 2, FRAME_2M | bit(n) | PS | LEAF);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, 2));
  });

  it('bit 32 of a 1 GiB leaf and bit 21 of a 2 MiB leaf are address bits', () => {
    const e1 = new Ept();
    e1.map(GPA, 3, FRAME_1G | bit(32) | PS | LEAF);
    expect(refWalkEpt(e1.mem, e1.eptp(), GPA, READ, M46)).toMatchObject({ ok: true, hpa: 0x41_f456_789an });
    const e2 = new Ept();
    e2.map(GPA, 2, FRAME_2M | bit(21) | PS | LEAF);
    expect(refWalkEpt(e2.mem, e2.eptp(), GPA, READ, M46)).toMatchObject({ ok: true, hpa: 0x7_6576_789an });
  });

  it.each([
    { where: 'PTE', level: 1 },
    { where: '2 MiB PDE', level: 2 },
    { where: '1 GiB PDPTE', level: 3 },
  ])('memory types 2, 3 and 7 in a $where leaf are misconfigurations', ({ level }) => {
    for (const type of [2, 3, 7]) {
      const ept = new Ept();
      const frame = level === 1 ? FRAME_4K : level === 2 ? FRAME_2M | PS : FRAME_1G | PS;
      ept.map(GPA, level, frame | RWX | mt(type));
      expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(misconfig(GPA, level));
    }
  });

  it('a misconfiguration in the leaf wins over rights refused by an upper entry', () => {
    const { ept } = map4K(LEAF | bit(50), { 4: R });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, WRITE, M46)).toEqual(misconfig(GPA, 1));
  });

  it('a not-present PTE below a PDE without R is a violation at level 1', () => {
    const { ept } = map4K(0n, { 2: X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, M46)).toEqual(violation(GPA, 1, Q_READ));
  });
});

describe('exit qualification for EPT violations', () => {
  it.each([
    { name: 'read', access: READ, q: Q_READ },
    { name: 'write', access: WRITE, q: Q_WRITE },
    { name: 'fetch', access: FETCH, q: Q_FETCH },
  ])('a $name sets its access bit; bits 5:3 hold the readable leaf (R only)', ({ access, q }) => {
    const { ept } = map4K(R | WB);
    const expected = access.type === 'read' ? undefined : violation(GPA, 1, q | Q_R);
    const result = refWalkEpt(ept.mem, ept.eptp(), GPA, access, M46);
    if (expected === undefined) expect(result.ok).toBe(true);
    else expect(result).toEqual(expected);
  });

  it('bits 5:3 are the AND of bits 2:0 over every entry used', () => {
    const { ept } = map4K(R | X | WB, { 4: RWX, 3: R | W | X, 2: R | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, WRITE, M46)).toEqual(violation(GPA, 1, Q_WRITE | Q_R | Q_X));
  });

  it('with a linear address, bit 7 and bit 8 are set for the translated access', () => {
    const { ept } = map4K(R | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'write', gva: VA }, M46)).toEqual(
      violation(GPA, 1, Q_WRITE | Q_R | Q_GVA | Q_TRANSLATED, VA),
    );
  });

  it('for a guest paging-structure read, bit 7 is set and bit 8 clear', () => {
    const { ept } = map4K(X | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'read', pagingStructure: true, gva: VA }, M46)).toEqual(
      violation(GPA, 1, Q_READ | Q_X | Q_GVA, VA),
    );
  });

  it('for a guest A/D update without EPT A/D, only the write bit reports the access', () => {
    const { ept } = map4K(R | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'write', pagingStructure: true, gva: VA }, M46)).toEqual(
      violation(GPA, 1, Q_WRITE | Q_R | Q_GVA, VA),
    );
  });

  it('with EPT A/D, a guest paging-structure read is treated as a write and sets bits 0 and 1', () => {
    const { ept } = map4K(R | X | WB);
    const access: RefEptAccess = { type: 'read', pagingStructure: true, gva: VA };
    expect(refWalkEpt(ept.mem, ept.eptp(EPTP_WB | EPTP_AD), GPA, access, M46)).toEqual(
      violation(GPA, 1, Q_READ | Q_WRITE | Q_R | Q_X | Q_GVA, VA),
    );
  });

  it('without a linear address, bits 7 and 8 are clear', () => {
    const { ept } = map4K(R | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, WRITE, M46)).toEqual(violation(GPA, 1, Q_WRITE | Q_R));
  });

  it('bit 6 is clear without MBEC even when bit 10 is set everywhere', () => {
    const { ept } = map4K(R | UX | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, FETCH, M46)).toEqual(violation(GPA, 1, Q_FETCH | Q_R));
  });

  it('no bit above 8 is ever set', () => {
    const { ept } = map4K(RWX | WB, { 4: R });
    const result = refWalkEpt(ept.mem, ept.eptp(EPTP_WB | EPTP_AD), GPA, { type: 'fetch', userLinear: true, gva: VA }, { ...M46, mbec: true });
    expect(result).toMatchObject({ kind: 'ept-violation' });
    if (result.ok || result.kind !== 'ept-violation') return;
    expect(result.qualification & ~0x1ff).toBe(0);
    expect(result.qualification).toBe(Q_FETCH | Q_R | Q_GVA | Q_TRANSLATED);
  });

  it('reads the gva modulo 2^64', () => {
    const { ept } = map4K(R | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'write', gva: -1n }, M46)).toMatchObject({ gva: 0xffff_ffff_ffff_ffffn });
  });
});

describe('mode-based execute control (MBEC)', () => {
  const MBEC = { ...M46, mbec: true };

  it('a supervisor-mode fetch needs X (bit 2) and ignores UX', () => {
    const { ept } = map4K(R | X | WB, { 4: R | X, 3: R | X, 2: R | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: false }, MBEC)).toMatchObject({ ok: true, rwx: 5 });
  });

  it('a user-mode fetch needs UX (bit 10) in every entry', () => {
    const { ept } = map4K(R | UX | WB, { 4: R | UX, 3: R | UX, 2: R | UX });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true }, MBEC)).toMatchObject({
      ok: true,
      rwx: Number(R | UX),
    });
  });

  it('a user-mode fetch from a page with X but no UX is a violation: bits 2, 3, 5 set, bit 6 clear', () => {
    const { ept } = map4K(R | X | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true, gva: VA }, MBEC)).toEqual(
      violation(GPA, 1, Q_FETCH | Q_R | Q_X | Q_GVA | Q_TRANSLATED, VA),
    );
  });

  it('a supervisor-mode fetch from a page with UX but no X is a violation: bit 6 set, bit 5 clear', () => {
    const { ept } = map4K(R | UX | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: false }, MBEC)).toEqual(
      violation(GPA, 1, Q_FETCH | Q_R | Q_UX),
    );
  });

  it('bit 6 is the AND of bit 10 over the walk', () => {
    const { ept } = map4K(R | UX | WB, { 3: R | W | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true }, MBEC)).toEqual(
      violation(GPA, 1, Q_FETCH | Q_R),
    );
  });

  it('with MBEC, bit 10 alone makes an entry present (user execute-only)', () => {
    const { ept } = map4K(UX | WB, { 4: UX, 3: UX, 2: UX });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true }, MBEC)).toMatchObject({ ok: true, rwx: Number(UX) });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, READ, MBEC)).toEqual(violation(GPA, 1, Q_READ | Q_UX));
  });

  it('with MBEC, a UX-only entry is a misconfiguration when execute-only is not supported', () => {
    const { ept } = map4K(UX | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true }, { ...MBEC, executeOnly: false })).toEqual(
      misconfig(GPA, 1),
    );
  });

  it('without MBEC, X governs user-mode fetches too', () => {
    const { ept } = map4K(R | X | WB, { 4: R | X, 3: R | X, 2: R | X });
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, { type: 'fetch', userLinear: true }, M46)).toMatchObject({ ok: true });
  });
});

describe('accessed and dirty flags for EPT (SDM §29.3.4)', () => {
  const ADP = EPTP_WB | EPTP_AD;

  it('EPTP bit 6 clear: no entry is ever written', () => {
    const { ept } = map4K(LEAF);
    const spy = new SpyMemory(ept.mem);
    for (const access of [READ, WRITE, FETCH, { type: 'read', pagingStructure: true } as const]) {
      expect(refWalkEpt(spy, ept.eptp(), GPA, access, M46).ok).toBe(true);
    }
    expect(spy.cmpxchgs).toEqual([]);
  });

  it.each([
    { name: 'read', access: READ },
    { name: 'fetch', access: FETCH },
  ])('a $name sets A in every entry and D nowhere', ({ access }) => {
    const { ept, hpas } = map4K(LEAF);
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, access, M46);
    for (const level of [4, 3, 2, 1]) expect(ept.entry(hpas, level) & (A | D)).toBe(A);
  });

  it('a write sets A in every entry and D in the leaf only', () => {
    const { ept, hpas } = map4K(LEAF);
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, WRITE, M46);
    for (const level of [4, 3, 2]) expect(ept.entry(hpas, level) & (A | D)).toBe(A);
    expect(ept.entry(hpas, 1)).toBe(FRAME_4K | LEAF | A | D);
  });

  it.each([
    { size: '2 MiB', level: 2, leaf: FRAME_2M | PS | LEAF },
    { size: '1 GiB', level: 3, leaf: FRAME_1G | PS | LEAF },
  ])('a write through a $size page sets D in that leaf', ({ level, leaf }) => {
    const ept = new Ept();
    const hpas = ept.map(GPA, level, leaf);
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, WRITE, M46);
    expect(ept.entry(hpas, level)).toBe(leaf | A | D);
    expect(ept.entry(hpas, 4) & (A | D)).toBe(A);
  });

  it('a guest paging-structure read is treated as a write: D in the leaf', () => {
    const { ept, hpas } = map4K(LEAF);
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, { type: 'read', pagingStructure: true, gva: VA }, M46);
    expect(ept.entry(hpas, 1)).toBe(FRAME_4K | LEAF | A | D);
  });

  it('a guest paging-structure read of a read-only page violates only with EPT A/D', () => {
    const { ept } = map4K(R | WB);
    const access: RefEptAccess = { type: 'read', pagingStructure: true, gva: VA };
    expect(refWalkEpt(ept.mem, ept.eptp(), GPA, access, M46).ok).toBe(true);
    expect(refWalkEpt(ept.mem, ept.eptp(ADP), GPA, access, M46)).toMatchObject({ kind: 'ept-violation' });
  });

  it('a violation sets A in the table entries and leaves the leaf untouched', () => {
    const { ept, hpas } = map4K(R | WB);
    expect(refWalkEpt(ept.mem, ept.eptp(ADP), GPA, WRITE, M46)).toMatchObject({ kind: 'ept-violation' });
    for (const level of [4, 3, 2]) expect(ept.entry(hpas, level) & A).toBe(A);
    expect(ept.entry(hpas, 1)).toBe(FRAME_4K | R | WB);
  });

  it('a misconfigured PDPTE sets A above it and nothing in or below it', () => {
    const { ept, hpas } = map4K(LEAF, { 3: TABLE | bit(5) });
    expect(refWalkEpt(ept.mem, ept.eptp(ADP), GPA, READ, M46)).toEqual(misconfig(GPA, 3));
    expect(ept.entry(hpas, 4) & A).toBe(A);
    expect(ept.entry(hpas, 3) & A).toBe(0n);
    expect(ept.entry(hpas, 1) & A).toBe(0n);
  });

  it('never sets bit 9 in an entry that references a table', () => {
    const { ept, hpas } = map4K(LEAF);
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, WRITE, M46);
    for (const level of [4, 3, 2]) expect(ept.entry(hpas, level) & D).toBe(0n);
  });

  it('issues no cmpxchg when A and D are already set', () => {
    const { ept } = map4K(LEAF | A | D, { 4: TABLE | A, 3: TABLE | A, 2: TABLE | A });
    const spy = new SpyMemory(ept.mem);
    expect(refWalkEpt(spy, ept.eptp(ADP), GPA, WRITE, M46).ok).toBe(true);
    expect(spy.cmpxchgs).toEqual([]);
  });

  it('counts A/D stores', () => {
    const { ept } = map4K(LEAF);
    const stats = refEptStats();
    refWalkEpt(ept.mem, ept.eptp(ADP), GPA, WRITE, { ...M46, stats });
    expect(stats).toEqual({ guestLoads: 0, eptLoads: 4, adWrites: 4 });
  });

  it('a lost cmpxchg restarts the EPT walk from the root and keeps the concurrent update', () => {
    const { ept, hpas } = map4K(LEAF);
    const leafHpa = hpas.get(1)!;
    const spy = new SpyMemory(ept.mem, (hpa, call) => {
      if (hpa === leafHpa && call === 4) ept.mem.write64(hpa, ept.mem.read64(hpa)! | bit(11));
      return undefined;
    });
    expect(refWalkEpt(spy, ept.eptp(ADP), GPA, WRITE, M46)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
    expect(spy.reads.filter((hpa) => hpa === hpas.get(4))).toHaveLength(2);
    expect(ept.entry(hpas, 1)).toBe(FRAME_4K | LEAF | bit(11) | A | D);
  });

  it('throws after 100 restarts', () => {
    const { ept } = map4K(LEAF);
    const spy = new SpyMemory(ept.mem, () => false);
    expect(() => refWalkEpt(spy, ept.eptp(ADP), GPA, READ, M46)).toThrow(Error);
  });
});

describe('EPT entries outside RAM', () => {
  it('aborts at the root when the EPTP points beyond RAM', () => {
    const eptp = RAM | PWL4 | EPTP_WB;
    expect(refWalkEpt(new MapMemory(RAM), eptp, GPA, READ, M46)).toEqual({
      ok: false,
      kind: 'abort',
      vector: -1,
      errorCode: 0,
      stage: 'ept',
      level: 4,
      gpa: GPA,
      hpa: RAM + 0n * 8n,
    });
  });

  it('aborts at the PTE level when a PDE points beyond RAM, with A set above', () => {
    const ept = new Ept();
    const hpas = ept.map(GPA, 2, RAM | TABLE);
    expect(refWalkEpt(ept.mem, ept.eptp(EPTP_WB | EPTP_AD), GPA, READ, M46)).toMatchObject({
      kind: 'abort',
      stage: 'ept',
      level: 1,
      hpa: RAM + 0x167n * 8n,
    });
    for (const level of [4, 3, 2]) expect(ept.entry(hpas, level) & A).toBe(A);
  });
});

// ---------------------------------------------------------------------------------------------
// Two-dimensional walk

function guestState(over: Partial<RefX86State> = {}): RefX86State {
  return {
    cr0: CR0_PE | CR0_PG | CR0_WP,
    cr3: GUEST_ROOT,
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
    pkru: 0n,
    rflags: 0x2n,
    maxPhysAddrBits: 46,
    ...over,
  };
}

/**
 * Guest page tables at guest-physical GUEST_ROOT upward, each table frame mapped by a 4 KiB EPT
 * leaf (`tableLeaf`) to hpa = gpa + GUEST_HPA_OFFSET, and the data page DATA_GPA → DATA_HPA.
 */
class TwoD {
  readonly ept: Ept;
  readonly tableEpt = new Map<bigint, Map<number, bigint>>();
  private readonly guest: HandTables;

  constructor(
    readonly guestLevels: 4 | 5 = 4,
    eptLevels: 4 | 5 = 4,
    readonly tableLeaf: bigint = LEAF,
  ) {
    this.ept = new Ept(undefined, eptLevels);
    this.guest = new HandTables(this.ept.mem, GUEST_ROOT, guestLevels, GTABLE, {
      hostOffset: GUEST_HPA_OFFSET, onNewTable: (gpa) => this.mapTable(gpa),
    });
    this.mapTable(GUEST_ROOT);
  }

  get mem(): MapMemory {
    return this.ept.mem;
  }

  private mapTable(gpa: bigint): void {
    this.tableEpt.set(gpa, this.ept.map(gpa, 1, (gpa + GUEST_HPA_OFFSET) | this.tableLeaf));
  }

  /** Guest mapping of `va` with `leaf` verbatim at `leafLevel`; returns each guest entry's gpa by level. */
  map(va: bigint, leafLevel: number, leaf: bigint, upper: Record<number, bigint> = {}): Map<number, bigint> {
    return this.guest.map(va, leafLevel, leaf, upper);
  }

  /** The guest entry at guest-physical `gpa`. */
  gpte(gpa: bigint): bigint {
    return this.mem.read64(gpa + GUEST_HPA_OFFSET)!;
  }

  /** The EPT leaf that maps the guest table page holding guest-physical `gpa`. */
  tableLeafHpa(gpa: bigint): bigint {
    return this.tableEpt.get(gpa & ~0xfffn)!.get(1)!;
  }
}

/** A guest 4 KiB page VA → DATA_GPA (user, writable) with the data page mapped by EPT `dataLeaf`. */
function twoD(opts: { guestLeaf?: bigint; dataLeaf?: bigint; tableLeaf?: bigint; guestLevels?: 4 | 5; eptLevels?: 4 | 5; va?: bigint } = {}) {
  const t = new TwoD(opts.guestLevels ?? 4, opts.eptLevels ?? 4, opts.tableLeaf ?? LEAF);
  const va = opts.va ?? VA;
  const gpas = t.map(va, 1, DATA_GPA | (opts.guestLeaf ?? GRW | GUS | GP));
  const data = t.ept.map(DATA_GPA, 1, DATA_HPA | (opts.dataLeaf ?? LEAF));
  return { t, gpas, data, va };
}

const ok2d = (pa: bigint, gpa: bigint, pageSize: number, level: number, eptPageSize = SIZE_4K, eptLevel = 1) => ({
  ok: true,
  pa,
  gpa,
  pageSize,
  level,
  eptPageSize,
  eptLevel,
});
const pf = (errorCode: number, level: number) => ({ ok: false, kind: 'page-fault', vector: 14, errorCode, level });

describe('two-dimensional walk: translations', () => {
  it('translates a 4 KiB guest page over 4 KiB EPT pages', () => {
    const { t } = twoD();
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', true, M46)).toEqual(
      ok2d(DATA_HPA | 0x89an, DATA_GPA | 0x89an, SIZE_4K, 1),
    );
  });

  it('pageSize is the guest page size, eptPageSize the EPT leaf of the final gpa', () => {
    const t = new TwoD();
    t.map(VA, 2, 0x4000_0000n | GPS | GRW | GP);
    t.ept.map(0x4000_0000n, 2, 0x8_0000_0000n | PS | LEAF);
    const gpa = 0x4000_0000n | (VA & 0x1f_ffffn);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      ok2d(0x8_0000_0000n | (VA & 0x1f_ffffn), gpa, SIZE_2M, 2, SIZE_2M, 2),
    );
  });

  it('a 2 MiB guest page over 4 KiB EPT pages, and a 4 KiB guest page over a 1 GiB EPT page', () => {
    const t = new TwoD();
    t.map(VA, 2, 0x4000_0000n | GPS | GRW | GP);
    t.ept.map(0x4000_0000n | (VA & 0x1f_f000n), 1, DATA_HPA | LEAF);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      ok2d(DATA_HPA | 0x89an, 0x4000_0000n | (VA & 0x1f_ffffn), SIZE_2M, 2, SIZE_4K, 1),
    );
    const u = new TwoD();
    u.map(VA, 1, 0x8000_0000n | GRW | GP);
    u.ept.map(0x8000_0000n, 3, FRAME_1G | PS | LEAF);
    expect(refTranslateX86Ept(u.mem, guestState(), u.ept.eptp(), VA, 'read', false, M46)).toEqual(
      ok2d(FRAME_1G | 0x89an, 0x8000_0000n | 0x89an, SIZE_4K, 1, SIZE_1G, 3),
    );
  });

  it('translates 5-level guest paging over 5-level EPT', () => {
    const { t, va } = twoD({ guestLevels: 5, eptLevels: 5, va: VA5 });
    const s = guestState({ cr4: CR4_PAE | CR4_LA57 });
    expect(refTranslateX86Ept(t.mem, s, t.ept.eptp(), va, 'write', false, M46)).toEqual(
      ok2d(DATA_HPA | 0x567n, DATA_GPA | 0x567n, SIZE_4K, 1),
    );
  });

  it('translates 4-level guest paging over 5-level EPT', () => {
    const { t } = twoD({ eptLevels: 5 });
    expect(t.ept.eptp() & (7n << 3n)).toBe(PWL5);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'fetch', false, M46)).toEqual(
      ok2d(DATA_HPA | 0x89an, DATA_GPA | 0x89an, SIZE_4K, 1),
    );
  });

  it('with guest paging off, the linear address is the gpa and goes through EPT', () => {
    const ept = new Ept();
    ept.map(0x7000n, 1, DATA_HPA | LEAF);
    const s = guestState({ cr0: CR0_PE });
    expect(refTranslateX86Ept(ept.mem, s, ept.eptp(), 0x7123n, 'write', false, M46)).toEqual(
      ok2d(DATA_HPA | 0x123n, 0x7123n, SIZE_4K, 0),
    );
  });

  it('with guest paging off, an EPT violation has bits 7 and 8 set', () => {
    const ept = new Ept();
    ept.map(0x7000n, 1, DATA_HPA | R | WB);
    const s = guestState({ cr0: CR0_PE });
    expect(refTranslateX86Ept(ept.mem, s, ept.eptp(), 0x7123n, 'write', false, M46)).toEqual(
      violation(0x7123n, 1, Q_WRITE | Q_R | Q_GVA | Q_TRANSLATED, 0x7123n),
    );
  });

  it('the guest MAXPHYADDR bounds the guest, the host MAXPHYADDR the EPT', () => {
    const t = new TwoD();
    t.map(VA, 1, bit(40) | DATA_GPA | GP);
    t.ept.map(bit(40) | DATA_GPA, 1, DATA_HPA | LEAF);
    expect(refTranslateX86Ept(t.mem, guestState({ maxPhysAddrBits: 40 }), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      pf(PF_P | PF_RSVD, 1),
    );
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toMatchObject({
      ok: true,
      gpa: bit(40) | DATA_GPA | 0x89an,
    });
  });

  it('a non-canonical gva raises #GP(0) before any load', () => {
    const { t } = twoD();
    const spy = new SpyMemory(t.mem);
    expect(refTranslateX86Ept(spy, guestState(), t.ept.eptp(), 0x0000_8000_0000_0000n, 'read', false, M46)).toEqual({
      ok: false,
      kind: 'general-protection',
      vector: 13,
      errorCode: 0,
      level: 0,
    });
    expect(spy.reads).toEqual([]);
  });

  it('throws for guest paging without long mode', () => {
    const { t } = twoD();
    expect(() => refTranslateX86Ept(t.mem, guestState({ efer: 0n }), t.ept.eptp(), VA, 'read', false, M46)).toThrow(
      'unsupported paging mode',
    );
  });
});

describe('two-dimensional walk: memory references', () => {
  it('a cold 4-level guest × 4-level EPT walk loads 24 entries: 4 guest, 20 EPT', () => {
    const { t } = twoD();
    const stats = refEptStats();
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(EPTP_WB | EPTP_AD), VA, 'write', false, { ...M46, stats }).ok).toBe(
      true,
    );
    expect(stats.guestLoads).toBe(4);
    expect(stats.eptLoads).toBe(20);
    expect(stats.guestLoads + stats.eptLoads).toBe(24);
  });

  it('a cold 5-level guest × 5-level EPT walk loads 35 entries', () => {
    const { t, va } = twoD({ guestLevels: 5, eptLevels: 5, va: VA5 });
    const stats = refEptStats();
    const s = guestState({ cr4: CR4_PAE | CR4_LA57 });
    expect(refTranslateX86Ept(t.mem, s, t.ept.eptp(), va, 'read', false, { ...M46, stats }).ok).toBe(true);
    expect(stats.guestLoads + stats.eptLoads).toBe(35);
  });

  it.each([
    { guestLevels: 4, eptLevels: 5, refs: 29 },
    { guestLevels: 5, eptLevels: 4, refs: 29 },
  ] as const)('a $guestLevels-level guest × $eptLevels-level EPT walk loads (n+1)(m+1) − 1 = $refs', ({ guestLevels, eptLevels, refs }) => {
    const { t, va } = twoD({ guestLevels, eptLevels, va: guestLevels === 5 ? VA5 : VA });
    const stats = refEptStats();
    const s = guestState({ cr4: guestLevels === 5 ? CR4_PAE | CR4_LA57 : CR4_PAE });
    expect(refTranslateX86Ept(t.mem, s, t.ept.eptp(), va, 'read', false, { ...M46, stats }).ok).toBe(true);
    expect(stats.guestLoads + stats.eptLoads).toBe(refs);
  });

  it('a second walk loads the same 24 entries (no caches) and stores nothing', () => {
    const { t } = twoD();
    const eptp = t.ept.eptp(EPTP_WB | EPTP_AD);
    refTranslateX86Ept(t.mem, guestState(), eptp, VA, 'write', false, M46);
    const stats = refEptStats();
    refTranslateX86Ept(t.mem, guestState(), eptp, VA, 'write', false, { ...M46, stats });
    expect(stats).toEqual({ guestLoads: 4, eptLoads: 20, adWrites: 0 });
  });

  it('walks EPT for CR3 first, then each guest entry, then the data gpa', () => {
    const { t, gpas, data } = twoD();
    const spy = new SpyMemory(t.mem);
    refTranslateX86Ept(spy, guestState(), t.ept.eptp(), VA, 'read', false, M46);
    const expected: bigint[] = [];
    for (const level of [4, 3, 2, 1]) {
      const gpa = gpas.get(level)!;
      const eptHpas = t.tableEpt.get(gpa & ~0xfffn)!;
      for (const eptLevel of [4, 3, 2, 1]) expected.push(eptHpas.get(eptLevel)!);
      expected.push(gpa + GUEST_HPA_OFFSET);
    }
    for (const eptLevel of [4, 3, 2, 1]) expected.push(data.get(eptLevel)!);
    expect(spy.reads).toEqual(expected);
  });
});

describe('two-dimensional walk: guest faults and walk order', () => {
  it('a guest not-present PDE is a #PF at level 2 with the access error code', () => {
    const { t, gpas } = twoD();
    t.mem.write64(gpas.get(2)! + GUEST_HPA_OFFSET, 0n);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', true, M46)).toEqual(pf(PF_W | PF_U, 2));
  });

  it('guest rights apply as in 1D paging: a user write to a read-only page', () => {
    const { t } = twoD({ guestLeaf: GUS | GP });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', true, M46)).toEqual(
      pf(PF_P | PF_W | PF_U, 1),
    );
  });

  it('an EPT violation on the guest PML4 entry comes before any guest fault', () => {
    const t = new TwoD();
    t.map(VA, 1, DATA_GPA | GP);
    const pml4e = GUEST_ROOT + ((VA >> 39n) & 0x1ffn) * 8n;
    t.mem.write64(pml4e + GUEST_HPA_OFFSET, 0n);
    t.ept.mem.write64(t.tableLeafHpa(GUEST_ROOT), 0n);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      violation(pml4e, 1, Q_READ | Q_GVA, VA),
    );
  });

  it('an EPT misconfiguration on a guest table reports the guest entry gpa', () => {
    const { t, gpas } = twoD();
    t.ept.mem.write64(t.tableLeafHpa(gpas.get(3)!), (gpas.get(3)! & ~0xfffn) + GUEST_HPA_OFFSET | RWX | mt(2));
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      misconfig(gpas.get(3)!, 1),
    );
  });

  it('a guest fault on the PDPTE comes before an EPT violation on the data page', () => {
    const { t, gpas } = twoD({ dataLeaf: 0n });
    t.mem.write64(gpas.get(3)! + GUEST_HPA_OFFSET, 0n);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(pf(0, 3));
  });

  it('an EPT violation on the final access has bits 7 and 8 set and carries gpa and gva', () => {
    const { t } = twoD({ dataLeaf: R | WB });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', false, M46)).toEqual(
      violation(DATA_GPA | 0x89an, 1, Q_WRITE | Q_R | Q_GVA | Q_TRANSLATED, VA),
    );
  });

  it('a not-present EPT PDE for the data gpa is a violation at EPT level 2 with bits 5:3 clear', () => {
    const { t, data } = twoD();
    t.mem.write64(data.get(2)!, 0n);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'fetch', false, M46)).toEqual(
      violation(DATA_GPA | 0x89an, 2, Q_FETCH | Q_GVA | Q_TRANSLATED, VA),
    );
  });

  it('the guest leaf A/D flags are set before the final EPT check, even when it fails', () => {
    const { t, gpas } = twoD({ dataLeaf: R | WB });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', false, M46)).toMatchObject({ kind: 'ept-violation' });
    expect(t.gpte(gpas.get(1)!) & (GA | GD)).toBe(GA | GD);
  });

  it('a guest table translated outside RAM is an abort at that guest level', () => {
    const { t, gpas } = twoD();
    const pdGpa = gpas.get(2)! & ~0xfffn;
    t.ept.mem.write64(t.tableLeafHpa(pdGpa), RAM | LEAF);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual({
      ok: false,
      kind: 'abort',
      vector: -1,
      errorCode: 0,
      stage: 'guest',
      level: 2,
      gpa: gpas.get(2)!,
      hpa: RAM | (gpas.get(2)! & 0xfffn),
    });
  });

  it('an EPT table outside RAM while translating the guest root is an EPT abort', () => {
    const { t, gpas } = twoD();
    const eptHpas = t.tableEpt.get(GUEST_ROOT)!;
    t.ept.mem.write64(eptHpas.get(2)!, RAM | TABLE);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual({
      ok: false,
      kind: 'abort',
      vector: -1,
      errorCode: 0,
      stage: 'ept',
      level: 1,
      gpa: gpas.get(4)!,
      hpa: RAM + ((GUEST_ROOT >> 12n) & 0x1ffn) * 8n,
    });
  });
});

describe('two-dimensional walk: guest A/D updates through EPT', () => {
  it('a guest table mapped read-only by EPT: the A update of the PML4E violates (bits 1, 3, 7; not 8)', () => {
    const { t, gpas } = twoD({ tableLeaf: R | WB });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      violation(gpas.get(4)!, 1, Q_WRITE | Q_R | Q_GVA, VA),
    );
    expect(t.gpte(gpas.get(4)!) & GA).toBe(0n);
  });

  it('read-only guest tables with every A already set translate without EPT A/D', () => {
    const t = new TwoD(4, 4, R | WB);
    t.map(VA, 1, DATA_GPA | GA | GP, { 4: GTABLE | GA, 3: GTABLE | GA, 2: GTABLE | GA });
    t.ept.map(DATA_GPA, 1, DATA_HPA | LEAF);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46)).toEqual(
      ok2d(DATA_HPA | 0x89an, DATA_GPA | 0x89an, SIZE_4K, 1),
    );
  });

  it('a write needs EPT W for the guest leaf D update: read-only PT page violates at the PTE', () => {
    const t = new TwoD();
    const gpas = t.map(VA, 1, DATA_GPA | GA | GRW | GP, { 4: GTABLE | GA, 3: GTABLE | GA, 2: GTABLE | GA });
    t.ept.map(DATA_GPA, 1, DATA_HPA | LEAF);
    const ptPage = gpas.get(1)! & ~0xfffn;
    t.mem.write64(t.tableLeafHpa(ptPage), (ptPage + GUEST_HPA_OFFSET) | R | X | WB);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'read', false, M46).ok).toBe(true);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', false, M46)).toEqual(
      violation(gpas.get(1)!, 1, Q_WRITE | Q_R | Q_X | Q_GVA, VA),
    );
  });

  it('with EPT A/D, read-only guest tables violate on the load even with every A set (bits 0, 1, 7)', () => {
    const t = new TwoD(4, 4, R | WB);
    const gpas = t.map(VA, 1, DATA_GPA | GA | GP, { 4: GTABLE | GA, 3: GTABLE | GA, 2: GTABLE | GA });
    t.ept.map(DATA_GPA, 1, DATA_HPA | LEAF);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(EPTP_WB | EPTP_AD), VA, 'read', false, M46)).toEqual(
      violation(gpas.get(4)!, 1, Q_READ | Q_WRITE | Q_R | Q_GVA, VA),
    );
  });

  it('sets the guest A flags at every level and D in the guest leaf on a write', () => {
    const { t, gpas } = twoD();
    refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'write', false, M46);
    for (const level of [4, 3, 2]) expect(t.gpte(gpas.get(level)!) & (GA | GD)).toBe(GA);
    expect(t.gpte(gpas.get(1)!) & (GA | GD)).toBe(GA | GD);
  });

  it('with EPT A/D, every EPT leaf mapping a guest table gets D; the data page only on a write', () => {
    const { t, gpas, data } = twoD();
    const eptp = t.ept.eptp(EPTP_WB | EPTP_AD);
    refTranslateX86Ept(t.mem, guestState(), eptp, VA, 'read', false, M46);
    for (const level of [4, 3, 2, 1]) {
      expect(t.mem.read64(t.tableLeafHpa(gpas.get(level)!))! & (A | D)).toBe(A | D);
    }
    expect(t.ept.entry(data, 1) & (A | D)).toBe(A);
    refTranslateX86Ept(t.mem, guestState(), eptp, VA, 'write', false, M46);
    expect(t.ept.entry(data, 1) & (A | D)).toBe(A | D);
  });

  it('without EPT A/D, no EPT entry is written', () => {
    const { t } = twoD();
    const spy = new SpyMemory(t.mem);
    refTranslateX86Ept(spy, guestState(), t.ept.eptp(), VA, 'write', false, M46);
    expect(spy.cmpxchgs.every((hpa) => hpa >= GUEST_HPA_OFFSET)).toBe(true);
    expect(spy.cmpxchgs).toHaveLength(4);
  });

  it('a lost guest cmpxchg restarts the 2D walk from CR3', () => {
    const { t, gpas } = twoD();
    const pdpteHpa = gpas.get(3)! + GUEST_HPA_OFFSET;
    let forced = false;
    const spy = new SpyMemory(t.mem, (hpa) => {
      if (hpa !== pdpteHpa || forced) return undefined;
      forced = true;
      return false;
    });
    const stats = refEptStats();
    expect(refTranslateX86Ept(spy, guestState(), t.ept.eptp(), VA, 'read', false, { ...M46, stats }).ok).toBe(true);
    expect(stats.guestLoads).toBe(2 + 4);
    expect(spy.reads.filter((hpa) => hpa === gpas.get(4)! + GUEST_HPA_OFFSET)).toHaveLength(2);
  });
});

describe('two-dimensional walk: MBEC', () => {
  const MBEC = { ...M46, mbec: true };

  it('a fetch from a guest user page (U/S = 1 at every level) needs EPT UX', () => {
    const { t } = twoD({ guestLeaf: GUS | GP, dataLeaf: R | X | WB });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'fetch', true, MBEC)).toEqual(
      violation(DATA_GPA | 0x89an, 1, Q_FETCH | Q_R | Q_X | Q_GVA | Q_TRANSLATED, VA),
    );
  });

  it('a fetch from a guest supervisor page needs EPT X, whatever the CPL leaves allowed', () => {
    const { t } = twoD({ guestLeaf: GP, dataLeaf: R | UX | WB });
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'fetch', false, MBEC)).toEqual(
      violation(DATA_GPA | 0x89an, 1, Q_FETCH | Q_R | Q_UX | Q_GVA | Q_TRANSLATED, VA),
    );
    const u = twoD({ guestLeaf: GP, dataLeaf: R | X | WB });
    expect(refTranslateX86Ept(u.t.mem, guestState(), u.t.ept.eptp(), VA, 'fetch', false, MBEC).ok).toBe(true);
  });

  it('one supervisor guest entry makes the page supervisor-mode for MBEC', () => {
    const t = new TwoD();
    t.map(VA, 1, DATA_GPA | GUS | GP, { 3: GP | GRW });
    t.ept.map(DATA_GPA, 1, DATA_HPA | R | X | WB);
    expect(refTranslateX86Ept(t.mem, guestState(), t.ept.eptp(), VA, 'fetch', false, MBEC).ok).toBe(true);
  });

  it('guest paging off: every fetch is supervisor-mode', () => {
    const ept = new Ept();
    ept.map(0x7000n, 1, DATA_HPA | R | X | WB);
    const s = guestState({ cr0: CR0_PE });
    expect(refTranslateX86Ept(ept.mem, s, ept.eptp(), 0x7123n, 'fetch', true, MBEC).ok).toBe(true);
  });
});
