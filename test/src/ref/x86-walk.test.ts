/**
 * Rules of the reference x86-64 walker, one test per rule of Intel SDM Vol.3A §4.5–4.8:
 * translations, reserved bits, access rights, protection keys, #PF error codes, canonical
 * addresses, aborts outside guest RAM, accessed/dirty updates and the debugger view.
 * Page tables are built by hand in a MapMemory; bit constants are spelled out here rather
 * than imported so that a wrong constant in the walker cannot hide.
 */
import { describe, expect, it } from 'vitest';
import {
  MapMemory,
  refIsCanonical,
  refTranslateX86,
  type RefAccess,
  type RefMemory,
  type RefResult,
  type RefX86State,
} from '../../../src/ref/x86-walk.js';
import { HandTables } from '../../helpers/hand-tables.js';

const P = 1n << 0n;
const RW = 1n << 1n;
const US = 1n << 2n;
const A = 1n << 5n;
const D = 1n << 6n;
const PS = 1n << 7n;
const G = 1n << 8n;
const XD = 1n << 63n;
const TABLE = P | RW | US;

const CR0_PE = 1n << 0n;
const CR0_WP = 1n << 16n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_LA57 = 1n << 12n;
const CR4_SMEP = 1n << 20n;
const CR4_SMAP = 1n << 21n;
const CR4_PKE = 1n << 22n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const EFER_NXE = 1n << 11n;
const RFLAGS_AC = 1n << 18n;

const PF_P = 1 << 0;
const PF_W = 1 << 1;
const PF_U = 1 << 2;
const PF_RSVD = 1 << 3;
const PF_ID = 1 << 4;
const PF_PK = 1 << 5;

const SIZE_4K = 4096;
const SIZE_2M = 2 * 1024 * 1024;
const SIZE_1G = 1024 * 1024 * 1024;

const RAM = 1n << 24n;
const ROOT = 0x1000n;
const VA = 0x0000_7f12_3456_789an;
const FRAME_4K = 0x0000_0012_3456_7000n;
const FRAME_2M = 0x0000_0012_3440_0000n;
const FRAME_1G = 0x0000_0040_c000_0000n;

const bit = (n: number): bigint => 1n << BigInt(n);
const pkey = (key: number): bigint => BigInt(key) << 59n;
const pkruAD = (key: number): bigint => bit(2 * key);
const pkruWD = (key: number): bigint => bit(2 * key + 1);

function bitRange(hi: number, lo: number): bigint {
  let mask = 0n;
  for (let n = lo; n <= hi; n++) mask |= bit(n);
  return mask;
}

function makeState(over: Partial<RefX86State> = {}): RefX86State {
  return {
    cr0: CR0_PE | CR0_PG,
    cr3: ROOT,
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
    pkru: 0n,
    rflags: 0x2n,
    maxPhysAddrBits: 46,
    ...over,
  };
}

const state5 = (over: Partial<RefX86State> = {}): RefX86State =>
  makeState({ cr4: CR4_PAE | CR4_LA57, ...over });

/** Builds page tables from ROOT downward (non-leaf entries default to P|RW|US); each table gets the next free 4 KiB frame. */
class Tables extends HandTables {
  constructor(readonly rootLevel: 4 | 5 = 4) {
    super(new MapMemory(RAM), ROOT, rootLevel, TABLE);
  }
}

/** Records every load and cmpxchg; `onCmpxchg` may change memory first to model a racing CPU. */
class SpyMemory implements RefMemory {
  readonly reads: bigint[] = [];
  readonly cmpxchgs: bigint[] = [];

  constructor(
    readonly inner: MapMemory,
    private readonly onCmpxchg?: (gpa: bigint, call: number) => boolean | undefined,
  ) {}

  read64(gpa: bigint): bigint | undefined {
    this.reads.push(gpa);
    return this.inner.read64(gpa);
  }

  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    this.cmpxchgs.push(gpa);
    const forced = this.onCmpxchg?.(gpa, this.cmpxchgs.length);
    if (forced !== undefined) return forced;
    return this.inner.cmpxchg64(gpa, expected, desired);
  }
}

const pf = (errorCode: number, level: number): RefResult => ({
  ok: false,
  vector: 14,
  errorCode,
  level,
  kind: 'page-fault',
});
const GP: RefResult = { ok: false, vector: 13, errorCode: 0, level: 0, kind: 'general-protection' };
const abort = (level: number, gpa: bigint): RefResult => ({
  ok: false,
  vector: -1,
  errorCode: 0,
  level,
  kind: 'abort',
  gpa,
});
const ok = (pa: bigint, pageSize: number, level: number): RefResult => ({
  ok: true,
  pa,
  pageSize,
  level,
});

function map4K(leaf: bigint, upper: Record<number, bigint> = {}, rootLevel: 4 | 5 = 4) {
  const t = new Tables(rootLevel);
  const gpas = t.map(VA, 1, FRAME_4K | leaf, upper);
  return { t, gpas };
}

describe('MapMemory', () => {
  it('reads never-written words in RAM as 0', () => {
    expect(new MapMemory(0x1000n).read64(0xff8n)).toBe(0n);
  });

  it('reads at or beyond the RAM size as undefined', () => {
    const mem = new MapMemory(0x1000n);
    expect(mem.read64(0x1000n)).toBeUndefined();
    expect(mem.read64(1n << 52n)).toBeUndefined();
  });

  it('stores written words modulo 2^64', () => {
    const mem = new MapMemory(0x1000n);
    mem.write64(0x10n, 0x1234n);
    mem.write64(0x18n, -1n);
    expect(mem.read64(0x10n)).toBe(0x1234n);
    expect(mem.read64(0x18n)).toBe(0xffff_ffff_ffff_ffffn);
  });

  it('cmpxchg64 stores only when the current word equals the expected one', () => {
    const mem = new MapMemory(0x1000n);
    mem.write64(0x8n, 5n);
    expect(mem.cmpxchg64(0x8n, 4n, 9n)).toBe(false);
    expect(mem.read64(0x8n)).toBe(5n);
    expect(mem.cmpxchg64(0x8n, 5n, 9n)).toBe(true);
    expect(mem.read64(0x8n)).toBe(9n);
  });

  it('throws on cmpxchg64 or write64 outside RAM', () => {
    const mem = new MapMemory(0x1000n);
    expect(() => mem.cmpxchg64(0x1000n, 0n, 1n)).toThrow(Error);
    expect(() => mem.write64(0x1000n, 1n)).toThrow(Error);
  });

  it('throws on unaligned addresses and on a RAM size that is not a multiple of 8', () => {
    const mem = new MapMemory(0x1000n);
    expect(() => mem.read64(0x4n)).toThrow(RangeError);
    expect(() => new MapMemory(0x1004n)).toThrow(RangeError);
  });
});

describe('paging modes', () => {
  it('returns va unchanged as pa when CR0.PG=0, without reading memory', () => {
    const mem = new SpyMemory(new MapMemory(RAM));
    const s = makeState({ cr0: CR0_PE | CR0_WP });
    const va = 0xffff_0000_1234_5678n;
    expect(refTranslateX86(mem, s, va, 'write', true)).toEqual(ok(va, SIZE_4K, 0));
    expect(mem.reads).toEqual([]);
  });

  it('throws for CR0.PG=1 without EFER.LME and EFER.LMA', () => {
    const s = makeState({ efer: EFER_NXE });
    expect(() => refTranslateX86(new MapMemory(RAM), s, VA, 'read', false)).toThrow(
      'unsupported paging mode',
    );
  });

  it('throws for CR0.PG=1 without CR4.PAE', () => {
    const s = makeState({ cr4: CR4_LA57 });
    expect(() => refTranslateX86(new MapMemory(RAM), s, VA, 'read', false)).toThrow(
      'unsupported paging mode',
    );
  });

  it.each([
    ['LME', EFER_LME],
    ['LMA', EFER_LMA],
  ])('accepts EFER.%s alone as long mode', (_name, efer) => {
    const { t } = map4K(P);
    expect(refTranslateX86(t.mem, makeState({ efer }), VA, 'read', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it.each([35, 53, 40.5])('rejects maxPhysAddrBits=%s', (maxPhysAddrBits) => {
    const s = makeState({ maxPhysAddrBits });
    expect(() => refTranslateX86(new MapMemory(RAM), s, VA, 'read', false)).toThrow(RangeError);
  });
});

describe('translations', () => {
  it('translates a 4 KiB page in 4-level paging through hand-placed entries (all indices 1)', () => {
    const mem = new MapMemory(RAM);
    mem.write64(0x1008n, 0x2000n | TABLE);
    mem.write64(0x2008n, 0x3000n | TABLE);
    mem.write64(0x3008n, 0x4000n | TABLE);
    mem.write64(0x4008n, 0x12_3456_7000n | TABLE);
    const va = 0x0000_0080_4020_1abcn;
    expect(refTranslateX86(mem, makeState(), va, 'read', true)).toEqual(
      ok(0x12_3456_7abcn, SIZE_4K, 1),
    );
  });

  it('translates a 4 KiB page in 5-level paging through hand-placed entries (all indices 1)', () => {
    const mem = new MapMemory(RAM);
    mem.write64(0x1008n, 0x2000n | TABLE);
    mem.write64(0x2008n, 0x3000n | TABLE);
    mem.write64(0x3008n, 0x4000n | TABLE);
    mem.write64(0x4008n, 0x5000n | TABLE);
    mem.write64(0x5008n, 0x12_3456_7000n | TABLE);
    const va = 0x0001_0080_4020_1abcn;
    expect(refTranslateX86(mem, state5(), va, 'read', true)).toEqual(
      ok(0x12_3456_7abcn, SIZE_4K, 1),
    );
  });

  it('translates the top of the upper half through entry 511 of every table', () => {
    const mem = new MapMemory(RAM);
    mem.write64(0x1ff8n, 0x2000n | TABLE);
    mem.write64(0x2ff8n, 0x3000n | TABLE);
    mem.write64(0x3ff8n, 0x4000n | TABLE);
    mem.write64(0x4ff8n, 0xabc_d000n | TABLE);
    expect(refTranslateX86(mem, makeState(), 0xffff_ffff_ffff_f123n, 'read', false)).toEqual(
      ok(0xabc_d123n, SIZE_4K, 1),
    );
  });

  it('reads a negative bigint va modulo 2^64', () => {
    const mem = new MapMemory(RAM);
    mem.write64(0x1ff8n, 0x2000n | TABLE);
    mem.write64(0x2ff8n, 0x3000n | TABLE);
    mem.write64(0x3ff8n, 0x4000n | TABLE);
    mem.write64(0x4ff8n, 0xabc_d000n | TABLE);
    expect(refTranslateX86(mem, makeState(), -0xeddn, 'read', false)).toEqual(
      ok(0xabc_d123n, SIZE_4K, 1),
    );
  });

  it.each([4, 5] as const)('translates a 2 MiB page (PDE.PS=1) in %i-level paging', (root) => {
    const t = new Tables(root);
    t.map(VA, 2, FRAME_2M | PS | P);
    const s = root === 5 ? state5() : makeState();
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(
      ok(0x12_3456_789an, SIZE_2M, 2),
    );
  });

  it.each([4, 5] as const)('translates a 1 GiB page (PDPTE.PS=1) in %i-level paging', (root) => {
    const t = new Tables(root);
    t.map(VA, 3, FRAME_1G | PS | P);
    const s = root === 5 ? state5() : makeState();
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(
      ok(0x40_f456_789an, SIZE_1G, 3),
    );
  });

  it('translates a 4 KiB page in 5-level paging with a non-zero PML5 index', () => {
    const t = new Tables(5);
    const va = 0x00ab_cdef_0123_4567n;
    const gpas = t.map(va, 1, 0x7_6543_2000n | P);
    expect(gpas.get(5)).toBe(ROOT + 0xabn * 8n);
    expect(refTranslateX86(t.mem, state5(), va, 'read', false)).toEqual(
      ok(0x7_6543_2567n, SIZE_4K, 1),
    );
  });

  it('treats bit 7 of a PTE as PAT: neither a page size nor reserved', () => {
    const { t } = map4K(PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('leaves bit 12 (PAT) of a 2 MiB leaf out of the physical address', () => {
    const t = new Tables();
    t.map(VA, 2, FRAME_2M | bit(12) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      ok(0x12_3456_789an, SIZE_2M, 2),
    );
  });

  it('ignores bits 62:52 at every level and keeps them out of the physical address', () => {
    const ignored = 0x7ffn << 52n;
    const { t } = map4K(ignored | P, { 4: ignored | TABLE, 3: ignored | TABLE, 2: ignored | TABLE });
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('ignores bits 11:8 in non-leaf entries and G in the leaf', () => {
    const { t } = map4K(G | 0xe00n | P, { 4: 0xf00n | TABLE, 3: 0xf00n | TABLE, 2: 0xf00n | TABLE });
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('takes the root from CR3 bits M-1:12, ignoring PCID bits 11:0, bit 63 and bits at or above M', () => {
    const { t } = map4K(P);
    const s = makeState({ cr3: XD | bit(50) | bit(46) | ROOT | 0xfffn });
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('uses leaf address bits up to M-1 (bit 35 for M=36, bit 51 for M=52)', () => {
    const t36 = new Tables();
    t36.map(VA, 1, bit(35) | 0x3456_7000n | P);
    expect(refTranslateX86(t36.mem, makeState({ maxPhysAddrBits: 36 }), VA, 'read', false)).toEqual(
      ok(bit(35) | 0x3456_789an, SIZE_4K, 1),
    );
    const t52 = map4K(bit(51) | P).t;
    expect(refTranslateX86(t52.mem, makeState({ maxPhysAddrBits: 52 }), VA, 'read', false)).toEqual(
      ok(bit(51) | FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('does not require the translated address to lie inside guest RAM', () => {
    const t = new Tables();
    t.map(VA, 1, bit(40) | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      ok(bit(40) | 0x89an, SIZE_4K, 1),
    );
  });
});

describe('reserved bits', () => {
  it.each([
    { root: 4, level: 4, leafLevel: 1 },
    { root: 4, level: 3, leafLevel: 1 },
    { root: 4, level: 2, leafLevel: 1 },
    { root: 4, level: 1, leafLevel: 1 },
    { root: 5, level: 5, leafLevel: 1 },
    { root: 4, level: 3, leafLevel: 3 },
    { root: 4, level: 2, leafLevel: 2 },
  ] as const)(
    'bit 63 is reserved at level $level (leaf level $leafLevel, $root-level) when EFER.NXE=0',
    ({ root, level, leafLevel }) => {
      const t = new Tables(root);
      const leafFrame = leafLevel === 1 ? FRAME_4K : leafLevel === 2 ? FRAME_2M | PS : FRAME_1G | PS;
      const leaf = leafFrame | P | (level === leafLevel ? XD : 0n);
      t.map(VA, leafLevel, leaf, level === leafLevel ? {} : { [level]: XD | TABLE });
      const s = root === 5 ? state5() : makeState();
      expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, level));
    },
  );

  it('bit 63 is not reserved when EFER.NXE=1', () => {
    const { t } = map4K(XD | P, { 4: XD | TABLE, 3: XD | TABLE, 2: XD | TABLE });
    const s = makeState({ efer: EFER_LME | EFER_LMA | EFER_NXE });
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('PS (bit 7) is reserved in a PML4E', () => {
    const { t } = map4K(P, { 4: PS | TABLE });
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 4));
  });

  it('PS (bit 7) is reserved in a PML5E', () => {
    const { t } = map4K(P, { 5: PS | TABLE }, 5);
    expect(refTranslateX86(t.mem, state5(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 5));
  });

  it.each([13, 16, 20])('bit %i of a 2 MiB leaf is reserved', (n) => {
    const t = new Tables();
    t.map(VA, 2, FRAME_2M | bit(n) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 2));
  });

  it('bits 29:13 of a non-leaf PDPTE and bits 20:13 of a non-leaf PDE are address bits', () => {
    const mem = new MapMemory(RAM);
    mem.write64(ROOT + 0xfen * 8n, 0x2000n | TABLE);
    mem.write64(0x2000n + 0x48n * 8n, 0xff_e000n | TABLE);
    mem.write64(0xff_e000n + 0x1a2n * 8n, 0x1f_e000n | TABLE);
    mem.write64(0x1f_e000n + 0x167n * 8n, FRAME_4K | P);
    expect(refTranslateX86(mem, makeState(), VA, 'read', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it.each([
    { n: 12, pa: 0x12_3456_789an },
    { n: 21, pa: 0x12_3476_789an },
  ])('bit $n of a 2 MiB leaf is not reserved', ({ n, pa }) => {
    const t = new Tables();
    t.map(VA, 2, FRAME_2M | bit(n) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(ok(pa, SIZE_2M, 2));
  });

  it.each([13, 21, 29])('bit %i of a 1 GiB leaf is reserved', (n) => {
    const t = new Tables();
    t.map(VA, 3, FRAME_1G | bit(n) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 3));
  });

  it.each([
    { n: 12, pa: 0x40_f456_789an },
    { n: 32, pa: 0x41_f456_789an },
  ])('bit $n of a 1 GiB leaf is not reserved', ({ n, pa }) => {
    const t = new Tables();
    t.map(VA, 3, FRAME_1G | bit(n) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(ok(pa, SIZE_1G, 3));
  });

  it.each([4, 3, 2, 1])('bit M (36) is reserved at level %i for MAXPHYADDR=36', (level) => {
    const { t } = map4K(P | (level === 1 ? bit(36) : 0n), level === 1 ? {} : { [level]: bit(36) | TABLE });
    const s = makeState({ maxPhysAddrBits: 36 });
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, level));
  });

  it('bit M is reserved in a PML5E', () => {
    const { t } = map4K(P, { 5: bit(46) | TABLE }, 5);
    expect(refTranslateX86(t.mem, state5(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 5));
  });

  it.each([
    { leafLevel: 2, frame: FRAME_2M | PS },
    { leafLevel: 3, frame: FRAME_1G | PS },
  ])('bit 51 is reserved in a level-$leafLevel leaf for MAXPHYADDR=46', ({ leafLevel, frame }) => {
    const t = new Tables();
    t.map(VA, leafLevel, frame | bit(51) | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(
      pf(PF_P | PF_RSVD, leafLevel),
    );
  });

  it('no bit below 52 is reserved for MAXPHYADDR=52', () => {
    const { t } = map4K(bit(51) | bit(46) | P);
    const s = makeState({ maxPhysAddrBits: 52 });
    expect(refTranslateX86(t.mem, s, VA, 'read', false)).toEqual(
      ok(bit(51) | bit(46) | FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('reserved bits in a not-present entry give a not-present fault', () => {
    const { t } = map4K(XD | bit(50) | PS);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(0, 1));
  });

  it('a reserved bit wins over a rights violation in the same leaf', () => {
    const { t } = map4K(bit(47) | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'write', true)).toEqual(
      pf(PF_P | PF_W | PF_U | PF_RSVD, 1),
    );
  });

  it('a reserved-bit fault carries the W, U/S and I/D bits of the access', () => {
    const { t } = map4K(P, { 3: bit(47) | TABLE });
    const s = makeState({ efer: EFER_LME | EFER_NXE });
    expect(refTranslateX86(t.mem, s, VA, 'fetch', true)).toEqual(
      pf(PF_P | PF_U | PF_RSVD | PF_ID, 3),
    );
    expect(refTranslateX86(t.mem, s, VA, 'write', false)).toEqual(pf(PF_P | PF_W | PF_RSVD, 3));
  });
});

interface RightsRow {
  name: string;
  access: RefAccess;
  user: boolean;
  /** Leaf flags besides P. */
  leaf: bigint;
  /** Replaces the PDPTE flags. */
  pdpte?: bigint;
  cr0?: bigint;
  cr4?: bigint;
  efer?: bigint;
  rflags?: bigint;
  /** Expected #PF error code, or null for success. */
  fault: number | null;
}

function runRights(row: RightsRow, extraState: Partial<RefX86State> = {}, leafExtra = 0n) {
  const { t, gpas } = map4K(P | row.leaf | leafExtra, row.pdpte === undefined ? {} : { 3: row.pdpte });
  const s = makeState({
    cr0: CR0_PE | CR0_PG | (row.cr0 ?? 0n),
    cr4: CR4_PAE | (row.cr4 ?? 0n),
    efer: EFER_LME | EFER_LMA | (row.efer ?? 0n),
    rflags: 0x2n | (row.rflags ?? 0n),
    ...extraState,
  });
  const leafBefore = t.entry(gpas, 1);
  const result = refTranslateX86(t.mem, s, VA, row.access, row.user);
  if (row.fault === null) {
    expect(result).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  } else {
    expect(result).toEqual(pf(row.fault, 1));
    expect(t.entry(gpas, 1)).toBe(leafBefore);
  }
}

describe('access rights (SDM §4.6.1)', () => {
  const rows: RightsRow[] = [
    { name: 'user read of a supervisor page faults', access: 'read', user: true, leaf: RW, fault: PF_P | PF_U },
    { name: 'user read of a read-only user page succeeds', access: 'read', user: true, leaf: US, fault: null },
    { name: 'user read faults when only the PDPTE has U/S=0', access: 'read', user: true, leaf: RW | US, pdpte: P | RW, fault: PF_P | PF_U },
    { name: 'user write to a writable user page succeeds', access: 'write', user: true, leaf: RW | US, fault: null },
    { name: 'user write to a read-only user page faults with CR0.WP=0', access: 'write', user: true, leaf: US, fault: PF_P | PF_W | PF_U },
    { name: 'user write to a read-only user page faults with CR0.WP=1', access: 'write', user: true, leaf: US, cr0: CR0_WP, fault: PF_P | PF_W | PF_U },
    { name: 'user write faults when only the PDPTE has R/W=0', access: 'write', user: true, leaf: RW | US, pdpte: P | US, fault: PF_P | PF_W | PF_U },
    { name: 'user write to a writable supervisor page faults', access: 'write', user: true, leaf: RW, fault: PF_P | PF_W | PF_U },
    { name: 'user fetch from a read-only user page succeeds (NXE=1)', access: 'fetch', user: true, leaf: US, efer: EFER_NXE, fault: null },
    { name: 'user fetch from an XD user page faults (NXE=1)', access: 'fetch', user: true, leaf: US | XD, efer: EFER_NXE, fault: PF_P | PF_U | PF_ID },
    { name: 'user fetch faults when only the PDPTE has XD=1 (NXE=1)', access: 'fetch', user: true, leaf: US, pdpte: TABLE | XD, efer: EFER_NXE, fault: PF_P | PF_U | PF_ID },
    { name: 'user fetch from a supervisor page faults, no I/D without NXE or SMEP', access: 'fetch', user: true, leaf: RW, fault: PF_P | PF_U },
    { name: 'supervisor read of a read-only supervisor page succeeds', access: 'read', user: false, leaf: 0n, fault: null },
    { name: 'supervisor read of a user page succeeds without SMAP', access: 'read', user: false, leaf: US, fault: null },
    { name: 'supervisor read of a user page faults with SMAP and AC=0', access: 'read', user: false, leaf: US, cr4: CR4_SMAP, fault: PF_P },
    { name: 'supervisor read of a user page succeeds with SMAP and AC=1', access: 'read', user: false, leaf: US, cr4: CR4_SMAP, rflags: RFLAGS_AC, fault: null },
    { name: 'supervisor read of a supervisor page succeeds with SMAP and AC=0', access: 'read', user: false, leaf: RW, cr4: CR4_SMAP, fault: null },
    { name: 'supervisor read with SMAP succeeds when only the PDPTE has U/S=0', access: 'read', user: false, leaf: US, pdpte: P | RW, cr4: CR4_SMAP, fault: null },
    { name: 'supervisor write to a read-only page succeeds with CR0.WP=0', access: 'write', user: false, leaf: 0n, fault: null },
    { name: 'supervisor write to a read-only page faults with CR0.WP=1', access: 'write', user: false, leaf: 0n, cr0: CR0_WP, fault: PF_P | PF_W },
    { name: 'supervisor write faults with CR0.WP=1 when only the PDPTE has R/W=0', access: 'write', user: false, leaf: RW, pdpte: P | US, cr0: CR0_WP, fault: PF_P | PF_W },
    { name: 'supervisor write to a writable page succeeds with CR0.WP=1', access: 'write', user: false, leaf: RW, cr0: CR0_WP, fault: null },
    { name: 'supervisor write to a writable user page faults with SMAP and AC=0', access: 'write', user: false, leaf: RW | US, cr4: CR4_SMAP, fault: PF_P | PF_W },
    { name: 'supervisor write to a writable user page succeeds with SMAP and AC=1', access: 'write', user: false, leaf: RW | US, cr0: CR0_WP, cr4: CR4_SMAP, rflags: RFLAGS_AC, fault: null },
    { name: 'supervisor write to a read-only user page succeeds with WP=0, SMAP and AC=1', access: 'write', user: false, leaf: US, cr4: CR4_SMAP, rflags: RFLAGS_AC, fault: null },
    { name: 'supervisor write to a read-only user page faults with WP=1, SMAP and AC=1', access: 'write', user: false, leaf: US, cr0: CR0_WP, cr4: CR4_SMAP, rflags: RFLAGS_AC, fault: PF_P | PF_W },
    { name: 'supervisor fetch from a supervisor page succeeds (NXE=1)', access: 'fetch', user: false, leaf: 0n, efer: EFER_NXE, fault: null },
    { name: 'supervisor fetch from an XD supervisor page faults (NXE=1)', access: 'fetch', user: false, leaf: XD, efer: EFER_NXE, fault: PF_P | PF_ID },
    { name: 'supervisor fetch faults when only the PDPTE has XD=1 (NXE=1)', access: 'fetch', user: false, leaf: RW, pdpte: TABLE | XD, efer: EFER_NXE, fault: PF_P | PF_ID },
    { name: 'supervisor fetch from an XD user page faults without SMEP (NXE=1)', access: 'fetch', user: false, leaf: US | XD, efer: EFER_NXE, fault: PF_P | PF_ID },
    { name: 'supervisor fetch from a user page succeeds without SMEP', access: 'fetch', user: false, leaf: US, fault: null },
    { name: 'supervisor fetch from a user page faults with SMEP', access: 'fetch', user: false, leaf: US, cr4: CR4_SMEP, fault: PF_P | PF_ID },
    { name: 'supervisor fetch from a user page faults with SMEP even with AC=1', access: 'fetch', user: false, leaf: US, cr4: CR4_SMEP | CR4_SMAP, rflags: RFLAGS_AC, fault: PF_P | PF_ID },
    { name: 'supervisor fetch from a supervisor page succeeds with SMEP', access: 'fetch', user: false, leaf: RW, cr4: CR4_SMEP, fault: null },
    { name: 'supervisor fetch from a user page succeeds with SMAP and AC=0 (SMAP is data only)', access: 'fetch', user: false, leaf: US, cr4: CR4_SMAP, fault: null },
    { name: 'supervisor fetch from a read-only page succeeds with CR0.WP=1', access: 'fetch', user: false, leaf: 0n, cr0: CR0_WP, fault: null },
  ];

  it.each(rows)('$name', (row) => runRights(row));
});

interface KeyRow extends RightsRow {
  pkru: bigint;
  /** Leaf protection key; 3 unless given. */
  key?: number;
  /** CR4.PKE; set unless false. */
  pke?: boolean;
}

describe('protection keys (SDM §4.6.2)', () => {
  const rows: KeyRow[] = [
    { name: 'AD denies a user read', access: 'read', user: true, leaf: US, pkru: pkruAD(3), fault: PF_P | PF_U | PF_PK },
    { name: 'AD of another key does not matter', access: 'read', user: true, leaf: US, pkru: pkruAD(4) | pkruWD(2), fault: null },
    { name: 'AD denies a user write', access: 'write', user: true, leaf: RW | US, pkru: pkruAD(3), fault: PF_P | PF_W | PF_U | PF_PK },
    { name: 'WD denies a user write', access: 'write', user: true, leaf: RW | US, pkru: pkruWD(3), fault: PF_P | PF_W | PF_U | PF_PK },
    { name: 'WD allows a user read', access: 'read', user: true, leaf: RW | US, pkru: pkruWD(3), fault: null },
    { name: 'AD does not apply to a user fetch', access: 'fetch', user: true, leaf: US, pkru: pkruAD(3) | pkruWD(3), fault: null },
    { name: 'keys are ignored with CR4.PKE=0', access: 'write', user: true, leaf: RW | US, pkru: pkruAD(3) | pkruWD(3), pke: false, fault: null },
    { name: 'AD denies a supervisor read of a user page', access: 'read', user: false, leaf: US, pkru: pkruAD(3), fault: PF_P | PF_PK },
    { name: 'WD denies a supervisor write to a user page with CR0.WP=1', access: 'write', user: false, leaf: RW | US, cr0: CR0_WP, pkru: pkruWD(3), fault: PF_P | PF_W | PF_PK },
    { name: 'WD allows a supervisor write to a user page with CR0.WP=0', access: 'write', user: false, leaf: RW | US, pkru: pkruWD(3), fault: null },
    { name: 'AD does not apply to a supervisor read of a supervisor page', access: 'read', user: false, leaf: RW, pkru: pkruAD(3), fault: null },
    { name: 'WD does not apply to a supervisor write to a supervisor page', access: 'write', user: false, leaf: RW, cr0: CR0_WP, pkru: pkruWD(3), fault: null },
    { name: 'AD does not apply when only the PDPTE makes the page supervisor', access: 'read', user: false, leaf: US, pdpte: P | RW, pkru: pkruAD(3), fault: null },
    { name: 'AD does not apply to a supervisor fetch from a user page', access: 'fetch', user: false, leaf: US, pkru: pkruAD(3), fault: null },
    { name: 'PK is reported together with a rights violation', access: 'write', user: true, leaf: US, pkru: pkruWD(3), fault: PF_P | PF_W | PF_U | PF_PK },
    { name: 'PK is reported together with a SMAP violation', access: 'read', user: false, leaf: US, cr4: CR4_SMAP, pkru: pkruAD(3), fault: PF_P | PF_PK },
    { name: 'a user access to a supervisor page reports no PK', access: 'write', user: true, leaf: RW, pkru: pkruAD(3), fault: PF_P | PF_W | PF_U },
    { name: 'key 0 uses PKRU bits 1:0', access: 'read', user: true, leaf: US, key: 0, pkru: pkruAD(0), fault: PF_P | PF_U | PF_PK },
    { name: 'key 15 uses PKRU bits 31:30', access: 'write', user: true, leaf: RW | US, key: 15, pkru: pkruWD(15), fault: PF_P | PF_W | PF_U | PF_PK },
    { name: 'the key comes from the leaf, not from non-leaf entries', access: 'read', user: true, leaf: US, key: 0, pdpte: pkey(5) | TABLE, pkru: pkruAD(5), fault: null },
  ];

  it.each(rows)('$name', (row) => {
    const cr4 = (row.cr4 ?? 0n) | (row.pke === false ? 0n : CR4_PKE);
    runRights({ ...row, cr4 }, { pkru: row.pkru }, pkey(row.key ?? 3));
  });
});

describe('#PF error code (SDM §4.7)', () => {
  it.each([4, 3, 2, 1])('a not-present entry at level %i faults at that level', (level) => {
    const t = new Tables();
    const gpas = t.map(VA, 1, FRAME_4K | P);
    t.mem.write64(gpas.get(level)!, 0n);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(0, level));
  });

  it('a not-present PML5E faults at level 5', () => {
    expect(refTranslateX86(new MapMemory(RAM), state5(), VA, 'read', false)).toEqual(pf(0, 5));
  });

  it.each([
    { name: 'supervisor read', access: 'read', user: false, code: 0 },
    { name: 'supervisor write', access: 'write', user: false, code: PF_W },
    { name: 'user read', access: 'read', user: true, code: PF_U },
    { name: 'user write', access: 'write', user: true, code: PF_W | PF_U },
  ] as const)('a not-present fault on a $name has error code $code', ({ access, user, code }) => {
    expect(refTranslateX86(new MapMemory(RAM), makeState(), VA, access, user)).toEqual(pf(code, 4));
  });

  it.each([
    { name: 'neither NXE nor SMEP', cr4: 0n, efer: 0n, user: false, code: 0 },
    { name: 'NXE', cr4: 0n, efer: EFER_NXE, user: false, code: PF_ID },
    { name: 'SMEP', cr4: CR4_SMEP, efer: 0n, user: false, code: PF_ID },
    { name: 'NXE, user mode', cr4: 0n, efer: EFER_NXE, user: true, code: PF_U | PF_ID },
    { name: 'SMEP, user mode', cr4: CR4_SMEP, efer: 0n, user: true, code: PF_U | PF_ID },
  ])('a not-present fetch with $name has error code $code', ({ cr4, efer, user, code }) => {
    const s = makeState({ cr4: CR4_PAE | cr4, efer: EFER_LME | EFER_LMA | efer });
    expect(refTranslateX86(new MapMemory(RAM), s, VA, 'fetch', user)).toEqual(pf(code, 4));
  });

  it('I/D is not set for data accesses even with NXE and SMEP', () => {
    const s = makeState({ cr4: CR4_PAE | CR4_SMEP, efer: EFER_LME | EFER_NXE });
    expect(refTranslateX86(new MapMemory(RAM), s, VA, 'write', true)).toEqual(pf(PF_W | PF_U, 4));
  });
});

describe('canonical addresses (SDM §4.5)', () => {
  it.each([
    { va: '0x0', la57: false, canonical: true },
    { va: '0x00007fffffffffff', la57: false, canonical: true },
    { va: '0x0000800000000000', la57: false, canonical: false },
    { va: '0xffff7fffffffffff', la57: false, canonical: false },
    { va: '0xffff800000000000', la57: false, canonical: true },
    { va: '0x8000000000000000', la57: false, canonical: false },
    { va: '0x0000800000000000', la57: true, canonical: true },
    { va: '0x00ffffffffffffff', la57: true, canonical: true },
    { va: '0x0100000000000000', la57: true, canonical: false },
    { va: '0xfeffffffffffffff', la57: true, canonical: false },
    { va: '0xff00000000000000', la57: true, canonical: true },
    { va: '0xffff800000000000', la57: true, canonical: true },
    { va: '-1', la57: false, canonical: true },
  ])('refIsCanonical($va, la57=$la57) is $canonical', ({ va, la57, canonical }) => {
    expect(refIsCanonical(BigInt(va), la57)).toBe(canonical);
  });

  it.each(['0x0000800000000000', '0xffff7ffffffff000', '0x8000000000000000'])(
    'non-canonical va %s raises #GP(0) in 4-level paging before any load',
    (hex) => {
      const va = BigInt(hex);
      const mem = new SpyMemory(new MapMemory(RAM));
      expect(refTranslateX86(mem, makeState(), va, 'read', false)).toEqual(GP);
      expect(mem.reads).toEqual([]);
    },
  );

  it.each(['0x0100000000000000', '0xfefffffffffff000'])(
    'non-canonical va %s raises #GP(0) in 5-level paging before any load',
    (hex) => {
      const va = BigInt(hex);
      const mem = new SpyMemory(new MapMemory(RAM));
      expect(refTranslateX86(mem, state5(), va, 'fetch', true)).toEqual(GP);
      expect(mem.reads).toEqual([]);
    },
  );

  it('a va canonical only under 5-level paging is walked from the PML5', () => {
    const va = 0x0000_8000_0000_0000n;
    expect(refTranslateX86(new MapMemory(RAM), makeState(), va, 'read', false)).toEqual(GP);
    expect(refTranslateX86(new MapMemory(RAM), state5(), va, 'read', false)).toEqual(pf(0, 5));
  });

  it('raises #GP(0) for a non-canonical va in debug mode too', () => {
    const va = 0x0000_8000_0000_0000n;
    expect(refTranslateX86(new MapMemory(RAM), makeState(), va, 'read', false, { debug: true })).toEqual(GP);
  });
});

describe('entries outside guest RAM', () => {
  it('aborts at the root level when CR3 points beyond RAM', () => {
    const s = makeState({ cr3: RAM });
    expect(refTranslateX86(new MapMemory(RAM), s, VA, 'read', false)).toEqual(
      abort(4, RAM + 0xfen * 8n),
    );
  });

  it('aborts at the PML5 level in 5-level paging', () => {
    const s = state5({ cr3: RAM });
    const va = 0x0003_0000_0000_0000n;
    expect(refTranslateX86(new MapMemory(RAM), s, va, 'read', false)).toEqual(abort(5, RAM + 3n * 8n));
  });

  it('aborts at the PTE level and keeps the A bits set on the way down', () => {
    const t = new Tables();
    const gpas = t.map(VA, 2, RAM | TABLE);
    const result = refTranslateX86(t.mem, makeState(), VA, 'write', true);
    expect(result).toEqual(abort(1, RAM + 0x167n * 8n));
    for (const level of [4, 3, 2]) expect(t.entry(gpas, level) & A).toBe(A);
  });

  it('aborts in debug mode too', () => {
    const s = makeState({ cr3: RAM });
    expect(refTranslateX86(new MapMemory(RAM), s, VA, 'read', false, { debug: true })).toEqual(
      abort(4, RAM + 0xfen * 8n),
    );
  });
});

describe('accessed and dirty flags (SDM §4.8)', () => {
  it('a read sets A at every level and D nowhere', () => {
    const { t, gpas } = map4K(RW | US | P);
    refTranslateX86(t.mem, makeState(), VA, 'read', true);
    for (const level of [4, 3, 2, 1]) expect(t.entry(gpas, level) & (A | D)).toBe(A);
  });

  it('a write sets A at every level and D only in the leaf', () => {
    const { t, gpas } = map4K(RW | US | P);
    refTranslateX86(t.mem, makeState(), VA, 'write', true);
    for (const level of [4, 3, 2]) expect(t.entry(gpas, level) & (A | D)).toBe(A);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | RW | US | P | A | D);
  });

  it('a write through a 2 MiB page sets D in the PDE and not in the PDPTE', () => {
    const t = new Tables();
    const gpas = t.map(VA, 2, FRAME_2M | PS | RW | P);
    refTranslateX86(t.mem, makeState(), VA, 'write', false);
    expect(t.entry(gpas, 2)).toBe(FRAME_2M | PS | RW | P | A | D);
    expect(t.entry(gpas, 3) & (A | D)).toBe(A);
  });

  it('a fetch sets A but not D in the leaf', () => {
    const { t, gpas } = map4K(P);
    refTranslateX86(t.mem, makeState(), VA, 'fetch', false);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | P | A);
  });

  it('a rights fault sets A in the non-leaf entries and leaves the leaf untouched', () => {
    const { t, gpas } = map4K(US | P);
    const result = refTranslateX86(t.mem, makeState(), VA, 'write', true);
    expect(result).toEqual(pf(PF_P | PF_W | PF_U, 1));
    for (const level of [4, 3, 2]) expect(t.entry(gpas, level) & A).toBe(A);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | US | P);
  });

  it('a protection-key fault leaves the leaf untouched', () => {
    const { t, gpas } = map4K(pkey(1) | RW | US | P);
    const s = makeState({ cr4: CR4_PAE | CR4_PKE, pkru: pkruWD(1) });
    expect(refTranslateX86(t.mem, s, VA, 'write', true)).toEqual(pf(PF_P | PF_W | PF_U | PF_PK, 1));
    expect(t.entry(gpas, 1)).toBe(pkey(1) | FRAME_4K | RW | US | P);
  });

  it('a not-present PDE leaves the PDE as it is and sets A above it', () => {
    const t = new Tables();
    const gpas = t.map(VA, 2, 0x7000n | RW);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(0, 2));
    expect(t.entry(gpas, 4) & A).toBe(A);
    expect(t.entry(gpas, 3) & A).toBe(A);
    expect(t.entry(gpas, 2)).toBe(0x7000n | RW);
  });

  it('a reserved-bit fault in the PDPTE leaves the PDPTE and everything below untouched', () => {
    const { t, gpas } = map4K(P, { 3: bit(50) | TABLE });
    const before = [3, 2, 1].map((level) => t.entry(gpas, level));
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false)).toEqual(pf(PF_P | PF_RSVD, 3));
    expect(t.entry(gpas, 4) & A).toBe(A);
    expect([3, 2, 1].map((level) => t.entry(gpas, level))).toEqual(before);
  });

  it('issues no cmpxchg when A and D are already set, and never clears D', () => {
    const { t, gpas } = map4K(RW | P | A | D, { 4: TABLE | A, 3: TABLE | A, 2: TABLE | A });
    const mem = new SpyMemory(t.mem);
    expect(refTranslateX86(mem, makeState(), VA, 'read', false).ok).toBe(true);
    expect(refTranslateX86(mem, makeState(), VA, 'write', false).ok).toBe(true);
    expect(mem.cmpxchgs).toEqual([]);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | RW | P | A | D);
  });

  it('a write to a leaf with A already set adds only D', () => {
    const { t, gpas } = map4K(RW | P | A, { 4: TABLE | A, 3: TABLE | A, 2: TABLE | A });
    const mem = new SpyMemory(t.mem);
    refTranslateX86(mem, makeState(), VA, 'write', false);
    expect(mem.cmpxchgs).toEqual([gpas.get(1)]);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | RW | P | A | D);
  });

  it('a lost cmpxchg on the leaf restarts from the root and keeps the concurrent update', () => {
    const { t, gpas } = map4K(RW | P);
    const leafGpa = gpas.get(1)!;
    const soft = bit(9);
    const mem = new SpyMemory(t.mem, (gpa, call) => {
      if (gpa === leafGpa && call === 4) t.mem.write64(gpa, t.mem.read64(gpa)! | soft);
      return undefined;
    });
    expect(refTranslateX86(mem, makeState(), VA, 'write', false)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
    expect(mem.reads.filter((gpa) => gpa === gpas.get(4))).toHaveLength(2);
    expect(t.entry(gpas, 1)).toBe(FRAME_4K | soft | RW | P | A | D);
  });

  it('a lost cmpxchg on a non-leaf entry restarts from the root', () => {
    const { t, gpas } = map4K(RW | P);
    const pdpteGpa = gpas.get(3)!;
    const mem = new SpyMemory(t.mem, (gpa, call) => (gpa === pdpteGpa && call === 2 ? false : undefined));
    expect(refTranslateX86(mem, makeState(), VA, 'read', false).ok).toBe(true);
    expect(mem.reads).toEqual([gpas.get(4), pdpteGpa, gpas.get(4), pdpteGpa, gpas.get(2), gpas.get(1)]);
  });

  it('a restart sees a mapping removed concurrently and faults', () => {
    const { t, gpas } = map4K(RW | P);
    const leafGpa = gpas.get(1)!;
    const mem = new SpyMemory(t.mem, (gpa) => {
      if (gpa === leafGpa) t.mem.write64(gpa, 0n);
      return undefined;
    });
    expect(refTranslateX86(mem, makeState(), VA, 'read', false)).toEqual(pf(0, 1));
  });

  it('throws after 100 restarts', () => {
    const { t, gpas } = map4K(RW | P);
    const mem = new SpyMemory(t.mem, () => false);
    expect(() => refTranslateX86(mem, makeState(), VA, 'read', false)).toThrow(Error);
    expect(mem.reads.filter((gpa) => gpa === gpas.get(4))).toHaveLength(101);
  });
});

describe('debug mode', () => {
  const debug = { debug: true } as const;

  it('ignores access rights', () => {
    const { t } = map4K(P, { 3: P });
    const s = makeState({ cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_SMEP | CR4_SMAP | CR4_PKE, pkru: 0xffff_ffffn });
    for (const access of ['read', 'write', 'fetch'] as const) {
      expect(refTranslateX86(t.mem, s, VA, access, true, debug)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
    }
  });

  it('ignores XD with NXE=1 and bit 63 with NXE=0', () => {
    const { t } = map4K(XD | P, { 4: XD | TABLE });
    const nx = makeState({ efer: EFER_LME | EFER_NXE });
    expect(refTranslateX86(t.mem, nx, VA, 'fetch', true, debug)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
    expect(refTranslateX86(t.mem, makeState(), VA, 'fetch', true, debug)).toEqual(ok(FRAME_4K | 0x89an, SIZE_4K, 1));
  });

  it('ignores reserved bits 20:13 of a 2 MiB leaf and keeps them out of the address', () => {
    const t = new Tables();
    t.map(VA, 2, FRAME_2M | bitRange(20, 13) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false, debug)).toEqual(
      ok(0x12_3456_789an, SIZE_2M, 2),
    );
  });

  it('ignores reserved bits 29:13 of a 1 GiB leaf', () => {
    const t = new Tables();
    t.map(VA, 3, FRAME_1G | bitRange(29, 13) | PS | P);
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false, debug)).toEqual(
      ok(0x40_f456_789an, SIZE_1G, 3),
    );
  });

  it('walks through a PML4E with PS=1 as a table', () => {
    const { t } = map4K(P, { 4: PS | TABLE });
    expect(refTranslateX86(t.mem, makeState(), VA, 'read', false, debug)).toEqual(
      ok(FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('uses leaf address bits 51:12 regardless of MAXPHYADDR and drops bits 62:52', () => {
    const { t } = map4K((0x7ffn << 52n) | bit(51) | bit(40) | P);
    const s = makeState({ maxPhysAddrBits: 36 });
    expect(refTranslateX86(t.mem, s, VA, 'read', false, debug)).toEqual(
      ok(bit(51) | bit(40) | FRAME_4K | 0x89an, SIZE_4K, 1),
    );
  });

  it('takes the root from CR3 bits 51:12 regardless of MAXPHYADDR', () => {
    const s = makeState({ cr3: bit(40) | ROOT | 0xfffn, maxPhysAddrBits: 36 });
    expect(refTranslateX86(new MapMemory(RAM), s, VA, 'read', false, debug)).toEqual(
      abort(4, bit(40) | ROOT + 0xfen * 8n),
    );
  });

  it('reports a not-present fault with error code 0 whatever the access', () => {
    const { t } = map4K(RW);
    const s = makeState({ efer: EFER_LME | EFER_NXE, cr4: CR4_PAE | CR4_SMEP });
    expect(refTranslateX86(t.mem, s, VA, 'fetch', true, debug)).toEqual(pf(0, 1));
    expect(refTranslateX86(t.mem, s, VA, 'write', true, debug)).toEqual(pf(0, 1));
  });

  it('writes no A or D bits', () => {
    const { t } = map4K(RW | P);
    const mem = new SpyMemory(t.mem);
    expect(refTranslateX86(mem, makeState(), VA, 'write', false, debug).ok).toBe(true);
    expect(mem.cmpxchgs).toEqual([]);
  });
});
