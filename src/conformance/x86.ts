// x86-64 conformance cases: every combination of paging-entry attributes and
// control state that the access rules of Intel SDM Vol.3A §4.5 (4- and 5-level
// paging), §4.6 (access rights, §4.6.2 protection keys), §4.7 (#PF error code)
// and §4.8 (accessed and dirty flags) read, enumerated as kvm-unit-tests'
// x86/access.c does (ac_test_bump over PTE/PDE flags × CR0.WP, CR4.SMEP/SMAP/
// PKE, EFER.NXE, EFLAGS.AC, PKRU × access). Expected outcomes come from
// refTranslateX86 (src/ref/x86-walk.ts); the line format is src/conformance/case.ts.
//
// How the space is covered, and why it is complete for those rules. The
// rights decision is a function of the effective R/W (ANDed over the walk),
// U/S (ANDed), XD (ORed), the leaf's key, the registers and the access; A/D
// updates depend only on which entries the walk used and whether it succeeded.
//   rights         4-level 4 KiB walk, R/W,U/S,XD at the PDE × at the PTE (64)
//                  × CR0.WP × CR4.SMEP × {SMAP=0, SMAP=1 AC=0, SMAP=1 AC=1} ×
//                  EFER.NXE (24) × {no A/D preset, A everywhere and D on the
//                  leaf} × CPL 0/3 × read/write/fetch: access.c's PDE × PTE
//                  product (AC without SMAP reads nothing, so it is not varied).
//   rights-large   the same for a 2 MiB and a 1 GiB leaf, the leaf varied alone.
//   rights-levels  R/W,U/S,XD at one upper level × at the leaf (64) for every
//                  other (upper level, leaf size) pair, 5-level paging included,
//                  under 4 register sets in which each bit is observable.
//   pkeys          leaf R/W,U/S × key 0 and 10 × CR4.PKE × PKRU AD/WD of that
//                  key (every other key gets the opposite bits, so reading the
//                  wrong key shows) × CR0.WP × SMAP/AC × access; 2 MiB and 1 GiB
//                  leaves with PKE=1.
//   not-present    P=0 at each level of every walk (4 and 5 levels, each leaf
//                  size), the entry zero or with every other bit set, × I/D
//                  reporting (NXE, SMEP) × access.
//   reserved       one reserved bit at each level: bit MAXPHYADDR and bit 51
//                  (MAXPHYADDR 36 and 46), XD with NXE=0, PS in a PML4E/PML5E,
//                  bits 20:13 / 29:13 of a large leaf; on an open walk and on
//                  one whose rights would also fault (RSVD takes precedence);
//                  bit 51 at the leaf with MAXPHYADDR 52 (an address bit).
//   ignored        the bits the SDM lists as ignored (11:9, 58:52, 62:59 and
//                  D in tables; G, PWT, PCD, PAT in leaves) set at each level
//                  and at all at once, with PKE=1 and every key but 0 disabled.
//   accessed-dirty leaf A/D preset (4 states) × upper A (none, all, alternate) ×
//                  a succeeding or a leaf-faulting access, each leaf size.
//   canonical      non-canonical addresses (#GP, tables present for them) and
//                  high-half addresses, 4- and 5-level.
// Not covered (the reference does not model them): 32-bit and PAE paging,
// PKS, shadow stacks, LAM, AMD's reserved bit 8 of PML4E/PML5E (never set).

import { hex } from "../addr.js";
import { refTranslateX86, type RefAccess } from "../ref/x86-walk.js";
import {
  CONFORMANCE_SCHEMA, CaseMemory, tablesOf, writesOf, type X86ConformanceCase, type X86ConformanceExpect,
} from "./case.js";

const RAM_BASE = 0n;
const RAM_SIZE = 16n << 20n;
const TABLE_BASE = 0x10_0000n;

const P = 1n << 0n, RW = 1n << 1n, US = 1n << 2n, PWT = 1n << 3n, PCD = 1n << 4n, A = 1n << 5n, D = 1n << 6n;
const PS = 1n << 7n, G = 1n << 8n, PAT_LARGE = 1n << 12n, XD = 1n << 63n;
const PKEY_SHIFT = 59n;
const CR0_PE = 1n << 0n, CR0_WP = 1n << 16n, CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n, CR4_LA57 = 1n << 12n, CR4_SMEP = 1n << 20n, CR4_SMAP = 1n << 21n, CR4_PKE = 1n << 22n;
const EFER_LME = 1n << 8n, EFER_LMA = 1n << 10n, EFER_NXE = 1n << 11n;
const RFLAGS_FIXED = 1n << 1n, RFLAGS_AC = 1n << 18n;

/** Bits hi..lo inclusive. */
const bits = (hi: number, lo: number): bigint => ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);

/** A lower-half address with distinct, non-zero indices at every level: PML4 0xa3, PDPT 0x15c, PD 0xe7, PT 0x1d2. */
const VA4 = (0xa3n << 39n) | (0x15cn << 30n) | (0xe7n << 21n) | (0x1d2n << 12n) | 0x5e8n;
/** The same with PML5 index 0xb5 (5-level paging). */
const VA5 = (0xb5n << 48n) | VA4;
/** Leaf frames by level: below 2^36, so every MAXPHYADDR holds them. */
const FRAME: Record<number, bigint> = { 1: 0x9_abcd_e000n, 2: 0x7_6540_0000n, 3: 0x5_4000_0000n };
const SIZE_NAME: Record<number, string> = { 1: "4K", 2: "2M", 3: "1G" };

type Cpl = 0 | 3;
interface Access { type: RefAccess; cpl: Cpl }
const ACCESSES: readonly Access[] = [0, 3].flatMap((cpl) =>
  (["read", "write", "fetch"] as const).map((type) => ({ type, cpl: cpl as Cpl })));

interface Shape { levels: 4 | 5; leaf: 1 | 2 | 3 }

/** Levels of a walk, root first. */
function path(s: Shape): number[] {
  const out: number[] = [];
  for (let l: number = s.levels; l >= s.leaf; l--) out.push(l);
  return out;
}

const shapeName = (s: Shape): string => `${s.levels}l-${SIZE_NAME[s.leaf]}`;

/** One entry's attributes; omitted booleans are P=1, R/W=1, U/S=1, others 0. `value` replaces the whole entry. */
interface Attrs {
  p?: boolean; rw?: boolean; us?: boolean; xd?: boolean; a?: boolean; d?: boolean;
  pkey?: number; raw?: bigint; value?: bigint;
}

interface Regs {
  wp: boolean; smep: boolean; smap: boolean; ac: boolean; nxe: boolean; pke: boolean; pkru: bigint;
  maxphy: number;
}

const BASE_REGS: Regs = { wp: true, smep: false, smap: false, ac: false, nxe: true, pke: false, pkru: 0n, maxphy: 46 };

/** CR0.WP × CR4.SMEP × {SMAP off, SMAP on AC=0, SMAP on AC=1} × EFER.NXE. */
const REGS24: readonly Regs[] = [false, true].flatMap((wp) => [false, true].flatMap((smep) =>
  ([[false, false], [true, false], [true, true]] as const).flatMap(([smap, ac]) =>
    [false, true].map((nxe) => ({ ...BASE_REGS, wp, smep, smap, ac, nxe })))));

/** Register sets under which R/W, U/S and XD are each observable by some access. */
const REGS4: readonly Regs[] = [
  { ...BASE_REGS, wp: true, smep: true, smap: true, ac: false, nxe: true },
  { ...BASE_REGS, wp: false, smep: false, smap: false, ac: false, nxe: true },
  { ...BASE_REGS, wp: true, smep: true, smap: true, ac: true, nxe: true },
  { ...BASE_REGS, wp: true, smep: false, smap: false, ac: false, nxe: false },
];

function regsName(r: Regs): string {
  let s = `wp${+r.wp}-smep${+r.smep}-smap${+r.smap}-ac${+r.ac}-nxe${+r.nxe}`;
  if (r.pke || r.pkru !== 0n) s += `-pke${+r.pke}-pkru${hex(r.pkru)}`;
  if (r.maxphy !== 46) s += `-maxphy${r.maxphy}`;
  return s;
}

/** R/W, U/S, XD as one of 8 attribute sets, and its name ("W", "U", "X" or "-" per bit). */
const RIGHTS: readonly { attrs: Attrs; name: string }[] = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => {
  const rw = (i & 1) !== 0, us = (i & 2) !== 0, xd = (i & 4) !== 0;
  return { attrs: { rw, us, xd }, name: `${rw ? "W" : "-"}${us ? "U" : "-"}${xd ? "X" : "-"}` };
});

function encode(level: number, leaf: boolean, at: Attrs, next: bigint): bigint {
  if (at.value !== undefined) return at.value;
  let e = next;
  if (at.p !== false) e |= P;
  if (at.rw !== false) e |= RW;
  if (at.us !== false) e |= US;
  if (at.xd) e |= XD;
  if (at.a) e |= A;
  if (at.d) e |= D;
  if (leaf && level > 1) e |= PS;
  if (at.pkey !== undefined) e |= BigInt(at.pkey) << PKEY_SHIFT;
  if (at.raw !== undefined) e |= at.raw;
  return e;
}

/** Table words of a walk for `va`: one table page per level from TABLE_BASE, `attrs` per level. */
function buildWalk(s: Shape, va: bigint, attrs: (level: number) => Attrs): Map<bigint, bigint> {
  const words = new Map<bigint, bigint>();
  let table = TABLE_BASE;
  for (const level of path(s)) {
    const gpa = table + ((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn) * 8n;
    const leaf = level === s.leaf;
    const next = leaf ? FRAME[level]! : table + 0x1000n;
    words.set(gpa, encode(level, leaf, attrs(level), next));
    table += 0x1000n;
  }
  return words;
}

/** A/D presets: none, or A on every entry and D on the leaf. */
const AD_PRESETS = [
  { name: "ad-none", at: (_leaf: boolean): Attrs => ({}) },
  { name: "ad-all", at: (leaf: boolean): Attrs => ({ a: true, d: leaf }) },
] as const;

function makeCase(group: string, id: string, s: Shape, va: bigint, words: Map<bigint, bigint>, r: Regs, acc: Access): X86ConformanceCase {
  const cr0 = CR0_PE | CR0_PG | (r.wp ? CR0_WP : 0n);
  const cr4 = CR4_PAE | (s.levels === 5 ? CR4_LA57 : 0n) | (r.smep ? CR4_SMEP : 0n) | (r.smap ? CR4_SMAP : 0n) | (r.pke ? CR4_PKE : 0n);
  const efer = EFER_LME | EFER_LMA | (r.nxe ? EFER_NXE : 0n);
  const rflags = RFLAGS_FIXED | (r.ac ? RFLAGS_AC : 0n);
  const mem = new CaseMemory(RAM_BASE, RAM_SIZE, words);
  const state = { cr0, cr3: TABLE_BASE, cr4, efer, pkru: r.pkru, rflags, maxPhysAddrBits: r.maxphy };
  const res = refTranslateX86(mem, state, va, acc.type, acc.cpl === 3);
  const writes = writesOf(words, mem.words);
  let expect: X86ConformanceExpect;
  if (res.ok) {
    expect = { pa: hex(res.pa), pageSize: res.pageSize, level: res.level, writes };
  } else {
    if (res.kind === "abort") throw new Error(`vmmu: conformance case ${id} reads outside RAM`);
    expect = { fault: { vector: res.vector, errorCode: res.errorCode, level: res.level, kind: res.kind }, writes };
  }
  return {
    schema: CONFORMANCE_SCHEMA, arch: "x86_64", id: `x86/${group}/${id}/cpl${acc.cpl}-${acc.type}`, group,
    ram: { base: hex(RAM_BASE), size: hex(RAM_SIZE) },
    tables: tablesOf(words),
    registers: {
      cr0: hex(cr0), cr3: hex(TABLE_BASE), cr4: hex(cr4), efer: hex(efer), pkru: hex(r.pkru), rflags: hex(rflags),
      maxphyaddr: r.maxphy,
    },
    access: { va: hex(va), type: acc.type, cpl: acc.cpl },
    expect,
  };
}

const vaOf = (s: Shape): bigint => (s.levels === 5 ? VA5 : VA4);

function* rights(): Generator<X86ConformanceCase> {
  const s: Shape = { levels: 4, leaf: 1 };
  for (const up of RIGHTS) for (const lf of RIGHTS) for (const r of REGS24) for (const ad of AD_PRESETS) {
    const words = buildWalk(s, VA4, (l) => ({ ...ad.at(l === 1), ...(l === 2 ? up.attrs : l === 1 ? lf.attrs : {}) }));
    for (const acc of ACCESSES) yield makeCase("rights", `${shapeName(s)}/L2=${up.name}/L1=${lf.name}/${regsName(r)}/${ad.name}`, s, VA4, words, r, acc);
  }
}

function* rightsLarge(): Generator<X86ConformanceCase> {
  for (const leaf of [2, 3] as const) {
    const s: Shape = { levels: 4, leaf };
    for (const lf of RIGHTS) for (const r of REGS24) for (const ad of AD_PRESETS) {
      const words = buildWalk(s, VA4, (l) => ({ ...ad.at(l === leaf), ...(l === leaf ? lf.attrs : {}) }));
      for (const acc of ACCESSES) yield makeCase("rights-large", `${shapeName(s)}/L${leaf}=${lf.name}/${regsName(r)}/${ad.name}`, s, VA4, words, r, acc);
    }
  }
}

function* rightsLevels(): Generator<X86ConformanceCase> {
  const pairs: [Shape, number][] = [
    [{ levels: 4, leaf: 1 }, 4], [{ levels: 4, leaf: 1 }, 3], [{ levels: 4, leaf: 2 }, 4], [{ levels: 4, leaf: 2 }, 3],
    [{ levels: 4, leaf: 3 }, 4], [{ levels: 5, leaf: 1 }, 5], [{ levels: 5, leaf: 3 }, 5],
  ];
  for (const [s, upper] of pairs) {
    const va = vaOf(s);
    for (const up of RIGHTS) for (const lf of RIGHTS) for (const r of REGS4) {
      const words = buildWalk(s, va, (l) => (l === upper ? up.attrs : l === s.leaf ? lf.attrs : {}));
      for (const acc of ACCESSES) {
        yield makeCase("rights-levels", `${shapeName(s)}/L${upper}=${up.name}/L${s.leaf}=${lf.name}/${regsName(r)}`, s, va, words, r, acc);
      }
    }
  }
}

/** PKRU with access-disable `ad` and write-disable `wd` for `key` and the opposite for every other key. */
function pkruFor(key: number, ad: boolean, wd: boolean): bigint {
  let v = 0n;
  for (let k = 0; k < 16; k++) {
    const a = k === key ? ad : !ad, w = k === key ? wd : !wd;
    if (a) v |= 1n << BigInt(2 * k);
    if (w) v |= 1n << BigInt(2 * k + 1);
  }
  return v;
}

function* pkeys(): Generator<X86ConformanceCase> {
  const adwd = [[false, false], [true, false], [false, true], [true, true]] as const;
  const s4k: Shape = { levels: 4, leaf: 1 };
  for (const key of [0, 10]) for (const rw of [false, true]) for (const us of [false, true]) for (const pke of [false, true]) {
    for (const [ad, wd] of adwd) for (const wp of [false, true]) for (const [smap, ac] of [[false, false], [true, false], [true, true]] as const) {
      const r: Regs = { ...BASE_REGS, wp, smap, ac, pke, pkru: pkruFor(key, ad, wd) };
      const words = buildWalk(s4k, VA4, (l) => (l === 1 ? { rw, us, pkey: key } : {}));
      const name = `${shapeName(s4k)}/L1=${rw ? "W" : "-"}${us ? "U" : "-"}-/key${key}/${regsName(r)}`;
      for (const acc of ACCESSES) yield makeCase("pkeys", name, s4k, VA4, words, r, acc);
    }
  }
  for (const leaf of [2, 3] as const) {
    const s: Shape = { levels: 4, leaf };
    for (const rw of [false, true]) for (const us of [false, true]) for (const [ad, wd] of adwd) {
      const r: Regs = { ...BASE_REGS, pke: true, pkru: pkruFor(10, ad, wd) };
      const words = buildWalk(s, VA4, (l) => (l === leaf ? { rw, us, pkey: 10 } : {}));
      const name = `${shapeName(s)}/L${leaf}=${rw ? "W" : "-"}${us ? "U" : "-"}-/key10/${regsName(r)}`;
      for (const acc of ACCESSES) yield makeCase("pkeys", name, s, VA4, words, r, acc);
    }
  }
}

const ALL_SHAPES: readonly Shape[] = [4, 5].flatMap((levels) => ([1, 2, 3] as const).map((leaf) => ({ levels: levels as 4 | 5, leaf })));

function* notPresent(): Generator<X86ConformanceCase> {
  const entries = [{ name: "zero", value: 0n }, { name: "junk", value: BigInt.asUintN(64, ~P) }];
  const regs: Regs[] = [
    { ...BASE_REGS, nxe: false, smep: false }, { ...BASE_REGS, nxe: true, smep: false }, { ...BASE_REGS, nxe: false, smep: true },
  ];
  for (const s of ALL_SHAPES) for (const level of path(s)) for (const e of entries) for (const r of regs) {
    const va = vaOf(s);
    const words = buildWalk(s, va, (l) => (l === level ? { value: e.value } : {}));
    for (const acc of ACCESSES) yield makeCase("not-present", `${shapeName(s)}/L${level}=${e.name}/${regsName(r)}`, s, va, words, r, acc);
  }
}

function* reserved(): Generator<X86ConformanceCase> {
  const shapes: Shape[] = [{ levels: 4, leaf: 1 }, { levels: 4, leaf: 2 }, { levels: 4, leaf: 3 }, { levels: 5, leaf: 1 }];
  const variants = [
    { name: "open", attrs: {} as Attrs, regs: { ...BASE_REGS, wp: false } },
    { name: "denied", attrs: { rw: false, us: false } as Attrs, regs: { ...BASE_REGS, wp: true, smep: true, smap: true } },
  ];
  for (const s of shapes) for (const level of path(s)) {
    const kinds: { name: string; raw: bigint; maxphy: number; nxe: boolean }[] = [];
    for (const m of [36, 46]) {
      kinds.push({ name: `bit${m}`, raw: 1n << BigInt(m), maxphy: m, nxe: true });
      kinds.push({ name: "bit51", raw: 1n << 51n, maxphy: m, nxe: true });
    }
    kinds.push({ name: "xd", raw: XD, maxphy: 46, nxe: false });
    if (level >= 4) kinds.push({ name: "ps", raw: PS, maxphy: 46, nxe: true });
    if (level === s.leaf && level === 2) kinds.push({ name: "bit13", raw: 1n << 13n, maxphy: 46, nxe: true }, { name: "bit20", raw: 1n << 20n, maxphy: 46, nxe: true });
    if (level === s.leaf && level === 3) kinds.push({ name: "bit13", raw: 1n << 13n, maxphy: 46, nxe: true }, { name: "bit29", raw: 1n << 29n, maxphy: 46, nxe: true });
    for (const k of kinds) for (const v of variants) {
      const va = vaOf(s);
      const r: Regs = { ...v.regs, maxphy: k.maxphy, nxe: k.nxe };
      const words = buildWalk(s, va, (l) => (l === level ? { ...v.attrs, raw: k.raw } : v.attrs));
      for (const acc of ACCESSES) yield makeCase("reserved", `${shapeName(s)}/L${level}+${k.name}/${v.name}/${regsName(r)}`, s, va, words, r, acc);
    }
  }
  for (const leaf of [1, 2, 3] as const) {
    const s: Shape = { levels: 4, leaf };
    const r: Regs = { ...BASE_REGS, wp: false, maxphy: 52 };
    const words = buildWalk(s, VA4, (l) => (l === leaf ? { raw: 1n << 51n } : {}));
    for (const acc of ACCESSES) yield makeCase("reserved", `${shapeName(s)}/L${leaf}+bit51/open/${regsName(r)}`, s, VA4, words, r, acc);
  }
}

function* ignored(): Generator<X86ConformanceCase> {
  const shapes: Shape[] = [{ levels: 4, leaf: 1 }, { levels: 4, leaf: 2 }, { levels: 4, leaf: 3 }, { levels: 5, leaf: 1 }];
  const r: Regs = { ...BASE_REGS, pke: true, pkru: pkruFor(0, false, false) };
  const ignoredBits = (s: Shape, level: number): bigint => {
    const common = bits(11, 9) | bits(58, 52);
    if (level !== s.leaf) return common | bits(62, 59) | D | (level <= 3 ? G : 0n);
    return common | G | PWT | PCD | (level === 1 ? PS : PAT_LARGE);
  };
  for (const s of shapes) {
    const va = vaOf(s);
    for (const at of [...path(s).map(String), "all"]) {
      const words = buildWalk(s, va, (l) => (at === "all" || at === String(l) ? { raw: ignoredBits(s, l) } : {}));
      for (const acc of ACCESSES) yield makeCase("ignored", `${shapeName(s)}/${at === "all" ? "all" : `L${at}`}/${regsName(r)}`, s, va, words, r, acc);
    }
  }
}

function* accessedDirty(): Generator<X86ConformanceCase> {
  const leafAd = [[false, false], [true, false], [false, true], [true, true]] as const;
  const upperA = ["none", "all", "alternate"] as const;
  const outcomes = [{ name: "open", attrs: {} as Attrs }, { name: "denied", attrs: { rw: false, us: false } as Attrs }];
  for (const leaf of [1, 2, 3] as const) {
    const s: Shape = { levels: 4, leaf };
    for (const [a, d] of leafAd) for (const ua of upperA) for (const o of outcomes) {
      const words = buildWalk(s, VA4, (l) => {
        if (l === leaf) return { ...o.attrs, a, d };
        return { a: ua === "all" || (ua === "alternate" && l % 2 === 0) };
      });
      const name = `${shapeName(s)}/leaf-${a ? "A" : "-"}${d ? "D" : "-"}/upper-a-${ua}/${o.name}`;
      for (const acc of ACCESSES) yield makeCase("accessed-dirty", name, s, VA4, words, BASE_REGS, acc);
    }
  }
}

function* canonical(): Generator<X86ConformanceCase> {
  const low = VA4;
  const vas: [Shape, string, bigint][] = [
    [{ levels: 4, leaf: 1 }, "bit47-only", low | (1n << 47n)],
    [{ levels: 4, leaf: 1 }, "high-bit47-clear", low | 0xffff_0000_0000_0000n],
    [{ levels: 4, leaf: 1 }, "high", low | 0xffff_8000_0000_0000n],
    [{ levels: 5, leaf: 1 }, "bit47-set", low | (1n << 47n) | (0xb5n << 48n)],
    [{ levels: 5, leaf: 1 }, "bit56-only", low | (1n << 56n)],
    [{ levels: 5, leaf: 1 }, "high-bit56-clear", low | 0xfe00_0000_0000_0000n],
    [{ levels: 5, leaf: 1 }, "high", low | 0xff00_0000_0000_0000n],
  ];
  for (const [s, name, va] of vas) {
    const words = buildWalk(s, va, () => ({}));
    for (const acc of ACCESSES) yield makeCase("canonical", `${shapeName(s)}/${name}`, s, va, words, BASE_REGS, acc);
  }
}

/** Every x86-64 case, in a fixed order (ids and order are stable across runs). */
export function* x86ConformanceCases(): Generator<X86ConformanceCase> {
  yield* rights();
  yield* rightsLarge();
  yield* rightsLevels();
  yield* pkeys();
  yield* notPresent();
  yield* reserved();
  yield* ignored();
  yield* accessedDirty();
  yield* canonical();
}
