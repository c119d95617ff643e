// arm64 conformance cases: stage 1 of the EL1&0 regime (VMSAv8-64, 4 KiB
// granule, stage 2 off), every combination of descriptor attributes and
// system-register state that the translation and permission rules of the Arm
// ARM DDI 0487 D8.2–D8.4 (AArch64.S1Translate, AArch64.S1CheckPermissions,
// FEAT_HAFDBS, FEAT_PAN, FEAT_E0PD, TBI) read, as distilled in
// docs/arm64-walk-contract.md. Expected outcomes come from refTranslateArm64
// (src/ref/arm64-walk.ts); the line format is src/conformance/case.ts.
//
// How the space is covered, and why it is complete for those rules. Stage-1
// permission is a function of the leaf's AP[2:1], UXN, PXN, the APTable and
// XNTable bits ORed over the tables above it, DBM with TCR.HD, PSTATE.PAN,
// SCTLR.WXN, the EL and the access; the AF and DBM updates depend on AF, DBM,
// TCR.HA/HD and whether the access passes.
//   permissions        L3 page under an L2 table: AP (4) × UXN,PXN (4) ×
//                      APTable (4) × UXNTable,PXNTable (4) × PAN × WXN × EL0/EL1
//                      × read/write/fetch, once with AF=1 and no hardware
//                      updates, once with AF=0, DBM=1 and TCR.HA+HD.
//   permissions-large  the leaf varied alone as an L2 and an L1 block, both
//                      update settings.
//   permissions-levels the table attributes at each other table level × the
//                      leaf, for every (table level, leaf level) pair, with
//                      PAN=WXN=0 and PAN=WXN=1.
//   hw-updates         AF × DBM × AP × {HA/HD off, HD alone, HA, HA+HD} ×
//                      APTable[1] × WXN × access, each leaf size.
//   invalid            an invalid descriptor at each level (zero, or every
//                      other bit set), a block at L0, a "block" at L3.
//   address-size       TTBR, table and output addresses at or above TCR.IPS
//                      (32 and 40 bits), with and without AF, at each level;
//                      an output address with bit 44 set under IPS 48.
//   regions            TTBR1 (leaf AP × XN × PAN), T0SZ/T1SZ 16..39 at the edge
//                      of the range and just beyond it, EPD0/1, E0PD0/1, TBI0/1 ×
//                      TBID0/1 on tagged addresses, HPD0/1 × APTable × XNTable,
//                      SCTLR.M = 0.
// Not covered (the reference does not model them): 16K/64K granules, 52-bit
// addresses (bits 51:48 are never set), the contiguous hint, FEAT_PAN3,
// permission overlays, EL2/EL3 regimes.

import { hex } from "../addr.js";
import { refTranslateArm64, type RefArmAccess, type RefArm64State } from "../ref/arm64-walk.js";
import {
  CONFORMANCE_SCHEMA, CaseMemory, tablesOf, writesOf, type Arm64ConformanceCase, type Arm64ConformanceExpect,
} from "./case.js";

const RAM_BASE = 0x4000_0000n;
const RAM_SIZE = 16n << 20n;
const TABLE_BASE = RAM_BASE + 0x10_0000n;
const TTBR1_TABLE_BASE = RAM_BASE + 0x20_0000n;
/** A zeroed page: the TTBR the cases do not use points at it. */
const EMPTY_TABLE = RAM_BASE + 0x30_0000n;

const VALID = 1n << 0n, TABLE = 1n << 1n, AP1 = 1n << 6n, AP2 = 1n << 7n, SH_INNER = 3n << 8n, AF = 1n << 10n;
const DBM = 1n << 51n, PXN = 1n << 53n, UXN = 1n << 54n;
const PXNTABLE = 1n << 59n, UXNTABLE = 1n << 60n, APTABLE_SHIFT = 61n;
const TCR_EPD0 = 1n << 7n, TCR_T1SZ_SHIFT = 16n, TCR_EPD1 = 1n << 23n, TCR_TG1_4K = 2n << 30n, TCR_IPS_SHIFT = 32n;
const TCR_TBI0 = 1n << 37n, TCR_TBI1 = 1n << 38n, TCR_HA = 1n << 39n, TCR_HD = 1n << 40n;
const TCR_HPD0 = 1n << 41n, TCR_HPD1 = 1n << 42n, TCR_TBID0 = 1n << 51n, TCR_TBID1 = 1n << 52n;
const TCR_E0PD0 = 1n << 55n, TCR_E0PD1 = 1n << 56n;
const SCTLR_M = 1n << 0n, SCTLR_WXN = 1n << 19n;
const IPS_48 = 5n;

/** A TTBR0 address with distinct, non-zero indices at every level: L0 0xa3, L1 0x15c, L2 0xe7, L3 0x1d2. */
const VA0 = (0xa3n << 39n) | (0x15cn << 30n) | (0xe7n << 21n) | (0x1d2n << 12n) | 0x5e8n;
/** The same in the TTBR1 range (bits 63:48 set). */
const VA1 = 0xffff_0000_0000_0000n | VA0;
/** Leaf output addresses by level: below 2^40. */
const OUT: Record<number, bigint> = { 3: 0x9a_bcde_f000n, 2: 0x76_5440_0000n, 1: 0x54_4000_0000n };
const SIZE_NAME: Record<number, string> = { 3: "4K", 2: "2M", 1: "1G" };

type El = 0 | 1;
interface Access { type: RefArmAccess; el: El }
const ACCESSES: readonly Access[] = [1, 0].flatMap((el) =>
  (["read", "write", "fetch"] as const).map((type) => ({ type, el: el as El })));

/** A walk: start level (from TnSZ) and leaf level. */
interface Shape { start: number; leaf: 1 | 2 | 3 }
const shapeName = (s: Shape): string => `L${s.start}-${SIZE_NAME[s.leaf]}`;

/** One descriptor's attributes; `value` replaces the whole descriptor. */
interface Desc {
  /** AP[2:1]: bit 1 = AP[2] (read-only), bit 0 = AP[1] (EL0). Leaves only; default 0b01. */
  ap?: number;
  uxn?: boolean; pxn?: boolean;
  /** AF, default true. */
  af?: boolean;
  dbm?: boolean;
  /** APTable, tables only. */
  apTable?: number;
  uxnTable?: boolean; pxnTable?: boolean;
  raw?: bigint;
  value?: bigint;
}

const AP_NAMES = ["rw-el1", "rw-all", "ro-el1", "ro-all"] as const;
const apName = (ap: number): string => AP_NAMES[ap]!;
const xnName = (uxn: boolean, pxn: boolean): string => `${uxn ? "U" : "-"}${pxn ? "P" : "-"}`;

function encode(level: number, leaf: boolean, d: Desc, next: bigint): bigint {
  if (d.value !== undefined) return d.value;
  let e = next | VALID;
  if (!leaf) {
    e |= TABLE;
    if (d.apTable) e |= BigInt(d.apTable) << APTABLE_SHIFT;
    if (d.uxnTable) e |= UXNTABLE;
    if (d.pxnTable) e |= PXNTABLE;
  } else {
    if (level === 3) e |= TABLE;
    e |= SH_INNER;
    const ap = d.ap ?? 1;
    if (ap & 1) e |= AP1;
    if (ap & 2) e |= AP2;
    if (d.af !== false) e |= AF;
    if (d.dbm) e |= DBM;
    if (d.uxn) e |= UXN;
    if (d.pxn) e |= PXN;
  }
  if (d.raw !== undefined) e |= d.raw;
  return e;
}

/** Index bits of `va` at `level` for a walk of `vaBits` starting at `start`. */
function index(va: bigint, level: number, start: number, vaBits: number): bigint {
  const shift = 12 + 9 * (3 - level);
  const width = level === start ? vaBits - shift : 9;
  return (va >> BigInt(shift)) & ((1n << BigInt(width)) - 1n);
}

/** Descriptors of a walk for `va`: one table page per level from `base`. */
function buildWalk(s: Shape, va: bigint, vaBits: number, base: bigint, desc: (level: number) => Desc, out = OUT): Map<bigint, bigint> {
  const words = new Map<bigint, bigint>();
  let table = base;
  for (let level = s.start; level <= s.leaf; level++) {
    const pa = table + index(va, level, s.start, vaBits) * 8n;
    const leaf = level === s.leaf;
    words.set(pa, encode(level, leaf, desc(level), leaf ? out[level]! : table + 0x1000n));
    table += 0x1000n;
  }
  return words;
}

interface Regs {
  t0sz: number; t1sz: number; ips: bigint;
  ha: boolean; hd: boolean; tcrExtra: bigint;
  m: boolean; wxn: boolean; pan: boolean;
  ttbr0: bigint; ttbr1: bigint;
}

const BASE_REGS: Regs = {
  t0sz: 16, t1sz: 16, ips: IPS_48, ha: false, hd: false, tcrExtra: 0n, m: true, wxn: false, pan: false,
  ttbr0: TABLE_BASE, ttbr1: EMPTY_TABLE,
};

function regsName(r: Regs): string {
  let s = `pan${+r.pan}-wxn${+r.wxn}-ha${+r.ha}-hd${+r.hd}`;
  if (r.ips !== IPS_48) s += `-ips${r.ips}`;
  return s;
}

function tcrOf(r: Regs): bigint {
  return BigInt(r.t0sz) | (BigInt(r.t1sz) << TCR_T1SZ_SHIFT) | TCR_TG1_4K | (r.ips << TCR_IPS_SHIFT)
    | (r.ha ? TCR_HA : 0n) | (r.hd ? TCR_HD : 0n) | r.tcrExtra;
}

function makeCase(group: string, id: string, va: bigint, words: Map<bigint, bigint>, r: Regs, acc: Access): Arm64ConformanceCase {
  const tcr = tcrOf(r);
  const sctlr = (r.m ? SCTLR_M : 0n) | (r.wxn ? SCTLR_WXN : 0n);
  const state: RefArm64State = { ttbr0: r.ttbr0, ttbr1: r.ttbr1, tcr, sctlr, vttbr: 0n, vtcr: 0n, hcr: 0n, pan: r.pan };
  const mem = new CaseMemory(RAM_BASE, RAM_SIZE, words);
  const res = refTranslateArm64(mem, state, va, acc.type, acc.el === 0);
  const writes = writesOf(words, mem.words);
  let expect: Arm64ConformanceExpect;
  if (res.ok) {
    expect = { pa: hex(res.pa), pageSize: res.pageSize, level: res.level, writes };
  } else {
    if (res.kind === "abort" || res.stage !== 1) throw new Error(`vmmu: conformance case ${id} reads outside RAM`);
    expect = { fault: { stage: 1, fsc: res.fsc, level: res.level, kind: res.kind, s1ptw: res.s1ptw, write: res.write }, writes };
  }
  return {
    schema: CONFORMANCE_SCHEMA, arch: "arm64", id: `arm64/${group}/${id}/el${acc.el}-${acc.type}`, group,
    ram: { base: hex(RAM_BASE), size: hex(RAM_SIZE) },
    tables: tablesOf(words),
    registers: { ttbr0: hex(r.ttbr0), ttbr1: hex(r.ttbr1), tcr: hex(tcr), sctlr: hex(sctlr), hcr: "0x0", pan: r.pan ? 1 : 0 },
    access: { va: hex(va), type: acc.type, el: acc.el },
    expect,
  };
}

/** Leaf AP × UXN,PXN: 16 attribute sets with their names. */
const LEAVES: readonly { d: Desc; name: string }[] = [0, 1, 2, 3].flatMap((ap) => [false, true].flatMap((uxn) =>
  [false, true].map((pxn) => ({ d: { ap, uxn, pxn }, name: `ap=${apName(ap)},xn=${xnName(uxn, pxn)}` }))));

/** APTable × UXNTable,PXNTable: 16 table attribute sets with their names. */
const TABLES: readonly { d: Desc; name: string }[] = [0, 1, 2, 3].flatMap((apTable) => [false, true].flatMap((uxnTable) =>
  [false, true].map((pxnTable) => ({ d: { apTable, uxnTable, pxnTable }, name: `apt=${apTable},xnt=${xnName(uxnTable, pxnTable)}` }))));

const PAN_WXN: readonly [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

/** No hardware updates with AF=1, or AF=0 and DBM=1 with TCR.HA and TCR.HD. */
const UPDATES = [
  { name: "af1", leaf: {} as Desc, ha: false, hd: false },
  { name: "af0-dbm-hahd", leaf: { af: false, dbm: true } as Desc, ha: true, hd: true },
] as const;

const S0 = (leaf: 1 | 2 | 3): Shape => ({ start: 0, leaf });

function* permissions(): Generator<Arm64ConformanceCase> {
  const s = S0(3);
  for (const t of TABLES) for (const lf of LEAVES) for (const [pan, wxn] of PAN_WXN) for (const u of UPDATES) {
    const r: Regs = { ...BASE_REGS, pan, wxn, ha: u.ha, hd: u.hd };
    const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === 2 ? t.d : l === 3 ? { ...lf.d, ...u.leaf } : {}));
    const name = `${shapeName(s)}/L2:${t.name}/L3:${lf.name}/${u.name}/${regsName(r)}`;
    for (const acc of ACCESSES) yield makeCase("permissions", name, VA0, words, r, acc);
  }
}

function* permissionsLarge(): Generator<Arm64ConformanceCase> {
  for (const leaf of [2, 1] as const) {
    const s = S0(leaf);
    for (const lf of LEAVES) for (const [pan, wxn] of PAN_WXN) for (const u of UPDATES) {
      const r: Regs = { ...BASE_REGS, pan, wxn, ha: u.ha, hd: u.hd };
      const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === leaf ? { ...lf.d, ...u.leaf } : {}));
      const name = `${shapeName(s)}/L${leaf}:${lf.name}/${u.name}/${regsName(r)}`;
      for (const acc of ACCESSES) yield makeCase("permissions-large", name, VA0, words, r, acc);
    }
  }
}

function* permissionsLevels(): Generator<Arm64ConformanceCase> {
  const pairs: [1 | 2 | 3, number][] = [[3, 0], [3, 1], [2, 0], [2, 1], [1, 0]];
  for (const [leaf, upper] of pairs) {
    const s = S0(leaf);
    for (const t of TABLES) for (const lf of LEAVES) for (const both of [false, true]) {
      const r: Regs = { ...BASE_REGS, pan: both, wxn: both };
      const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === upper ? t.d : l === leaf ? lf.d : {}));
      const name = `${shapeName(s)}/L${upper}:${t.name}/L${leaf}:${lf.name}/${regsName(r)}`;
      for (const acc of ACCESSES) yield makeCase("permissions-levels", name, VA0, words, r, acc);
    }
  }
}

function* hwUpdates(): Generator<Arm64ConformanceCase> {
  const hahd: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
  for (const leaf of [3, 2, 1] as const) {
    const s = S0(leaf);
    for (const af of [false, true]) for (const dbm of [false, true]) for (const ap of [0, 1, 2, 3]) for (const [ha, hd] of hahd) {
      for (const noWrite of [false, true]) for (const wxn of [false, true]) {
        const r: Regs = { ...BASE_REGS, ha, hd, wxn };
        const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === leaf ? { ap, af, dbm } : l === leaf - 1 ? { apTable: noWrite ? 2 : 0 } : {}));
        const name = `${shapeName(s)}/L${leaf}:ap=${apName(ap)},af${+af},dbm${+dbm}/L${leaf - 1}:apt=${noWrite ? 2 : 0}/${regsName(r)}`;
        for (const acc of ACCESSES) yield makeCase("hw-updates", name, VA0, words, r, acc);
      }
    }
  }
}

function* invalid(): Generator<Arm64ConformanceCase> {
  const kinds = [{ name: "zero", value: 0n }, { name: "junk", value: BigInt.asUintN(64, ~VALID) }];
  for (const leaf of [3, 2, 1] as const) {
    const s = S0(leaf);
    for (let level = 0; level <= leaf; level++) for (const k of kinds) {
      const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === level ? { value: k.value } : {}));
      for (const acc of ACCESSES) yield makeCase("invalid", `${shapeName(s)}/L${level}=${k.name}`, VA0, words, BASE_REGS, acc);
    }
  }
  // A block descriptor (bits 1:0 = 01) where none is allowed: at L0, and at L3.
  const l0Block = buildWalk(S0(1), VA0, 48, TABLE_BASE, (l) => (l === 0 ? { value: 0x80_0000_0000n | VALID | AF | SH_INNER | AP1 } : {}));
  for (const acc of ACCESSES) yield makeCase("invalid", "L0-1G/L0=block", VA0, l0Block, BASE_REGS, acc);
  const l3Block = buildWalk(S0(3), VA0, 48, TABLE_BASE, (l) => (l === 3 ? { value: OUT[3]! | VALID | AF | SH_INNER | AP1 } : {}));
  for (const acc of ACCESSES) yield makeCase("invalid", "L0-4K/L3=block", VA0, l3Block, BASE_REGS, acc);
}

function* addressSize(): Generator<Arm64ConformanceCase> {
  /** Leaf outputs below 2^32, so IPS 32 holds them. */
  const low: Record<number, bigint> = { 3: 0x8765_4000n, 2: 0x8760_0000n, 1: 0xc000_0000n };
  for (const [ips, bitsOf] of [[0n, 32], [2n, 40]] as const) {
    const bit = 1n << BigInt(bitsOf);
    for (const leaf of [3, 2, 1] as const) {
      const s = S0(leaf);
      // TTBR0 at or above IPS: once per IPS, on the 4K walk.
      if (leaf === 3) {
        const r: Regs = { ...BASE_REGS, ips, ttbr0: TABLE_BASE | bit };
        const words = buildWalk(s, VA0, 48, TABLE_BASE, () => ({}), low);
        for (const acc of ACCESSES) yield makeCase("address-size", `${shapeName(s)}/ttbr0+bit${bitsOf}/${regsName(r)}`, VA0, words, r, acc);
      }
      for (let level = 0; level <= leaf; level++) for (const af of [true, false]) {
        if (level < leaf && !af) continue;
        const r: Regs = { ...BASE_REGS, ips };
        const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === level ? { raw: bit, af } : { af }), low);
        const name = `${shapeName(s)}/L${level}+bit${bitsOf}${level === leaf ? `-af${+af}` : ""}/${regsName(r)}`;
        for (const acc of ACCESSES) yield makeCase("address-size", name, VA0, words, r, acc);
      }
    }
  }
  for (const leaf of [3, 2, 1] as const) {
    const s = S0(leaf);
    const words = buildWalk(s, VA0, 48, TABLE_BASE, (l) => (l === leaf ? { raw: 1n << 44n } : {}));
    for (const acc of ACCESSES) yield makeCase("address-size", `${shapeName(s)}/L${leaf}+bit44/${regsName(BASE_REGS)}`, VA0, words, BASE_REGS, acc);
  }
}

/** Start level for TnSZ: 4 − ceil((64 − TnSZ − 12) / 9). */
const startLevel = (tsz: number): number => 4 - Math.ceil((64 - tsz - 12) / 9);

function* regions(): Generator<Arm64ConformanceCase> {
  // TTBR1: the leaf varied under PAN.
  for (const lf of LEAVES) for (const pan of [false, true]) {
    const r: Regs = { ...BASE_REGS, pan, ttbr0: EMPTY_TABLE, ttbr1: TTBR1_TABLE_BASE };
    const words = buildWalk(S0(3), VA1, 48, TTBR1_TABLE_BASE, (l) => (l === 3 ? lf.d : {}));
    for (const acc of ACCESSES) yield makeCase("regions", `ttbr1/L0-4K/L3:${lf.name}/${regsName(r)}`, VA1, words, r, acc);
  }
  // T0SZ / T1SZ: the page of the range nearest its edge, and the page just beyond the edge. Tables
  // exist for the index bits of either, so a walker that skips the range check translates.
  for (const tsz of [16, 20, 25, 30, 34, 39]) for (const upper of [false, true]) for (const inside of [true, false]) {
    const vaBits = 64 - tsz;
    const size = 1n << BigInt(vaBits);
    const va = upper ? (inside ? -size : -size - 0x1000n) : inside ? size - 0x1000n : size;
    const s: Shape = { start: startLevel(tsz), leaf: 3 };
    const base = upper ? TTBR1_TABLE_BASE : TABLE_BASE;
    const r: Regs = upper ? { ...BASE_REGS, t1sz: tsz, ttbr0: EMPTY_TABLE, ttbr1: base } : { ...BASE_REGS, t0sz: tsz };
    const at = BigInt.asUintN(64, va) | 0x5e8n;
    const words = buildWalk(s, at, vaBits, base, () => ({}));
    const name = `${upper ? "ttbr1" : "ttbr0"}/tsz${tsz}/${inside ? "edge" : "outside"}`;
    for (const acc of ACCESSES) yield makeCase("regions", name, at, words, r, acc);
  }
  // EPD0/EPD1 and E0PD0/E0PD1, with tables present for the address.
  const walks = [
    { side: "ttbr0", va: VA0, base: TABLE_BASE, regs: { ...BASE_REGS }, epd: TCR_EPD0, e0pd: TCR_E0PD0 },
    { side: "ttbr1", va: VA1, base: TTBR1_TABLE_BASE, regs: { ...BASE_REGS, ttbr0: EMPTY_TABLE, ttbr1: TTBR1_TABLE_BASE }, epd: TCR_EPD1, e0pd: TCR_E0PD1 },
  ];
  for (const w of walks) {
    const words = buildWalk(S0(3), w.va, 48, w.base, () => ({}));
    for (const [flag, name] of [[w.epd, "epd"], [w.e0pd, "e0pd"]] as const) {
      const r: Regs = { ...w.regs, tcrExtra: flag };
      for (const acc of ACCESSES) yield makeCase("regions", `${w.side}/${name}`, w.va, words, r, acc);
    }
    // TBI × TBID on an address tagged 0x5a in bits 63:56.
    const tagged = (w.va & 0x00ff_ffff_ffff_ffffn) | (w.side === "ttbr1" ? 0xa5n << 56n : 0x5an << 56n);
    for (const tbi of [false, true]) for (const tbid of [false, true]) {
      const extra = (tbi ? (w.side === "ttbr1" ? TCR_TBI1 : TCR_TBI0) : 0n) | (tbid ? (w.side === "ttbr1" ? TCR_TBID1 : TCR_TBID0) : 0n);
      const r: Regs = { ...w.regs, tcrExtra: extra };
      for (const acc of ACCESSES) yield makeCase("regions", `${w.side}/tagged/tbi${+tbi}-tbid${+tbid}`, tagged, words, r, acc);
    }
    // HPD: APTable and XNTable at every table level, ignored when HPDn = 1.
    for (const hpd of [false, true]) for (const t of TABLES) {
      const r: Regs = { ...w.regs, tcrExtra: hpd ? (w.side === "ttbr1" ? TCR_HPD1 : TCR_HPD0) : 0n };
      const hw = buildWalk(S0(3), w.va, 48, w.base, (l) => (l < 3 ? t.d : {}));
      for (const acc of ACCESSES) yield makeCase("regions", `${w.side}/hpd${+hpd}/L0-L2:${t.name}`, w.va, hw, r, acc);
    }
  }
  // SCTLR.M = 0: the VA is the output address below 2^48, else an address-size fault.
  const off = buildWalk(S0(3), VA0, 48, TABLE_BASE, () => ({}));
  for (const [name, va] of [["low", VA0], ["high", VA1]] as const) {
    for (const acc of ACCESSES) yield makeCase("regions", `mmu-off/${name}`, va, off, { ...BASE_REGS, m: false }, acc);
  }
}

/** Every arm64 case, in a fixed order (ids and order are stable across runs). */
export function* arm64ConformanceCases(): Generator<Arm64ConformanceCase> {
  yield* permissions();
  yield* permissionsLarge();
  yield* permissionsLevels();
  yield* hwUpdates();
  yield* invalid();
  yield* addressSize();
  yield* regions();
}
