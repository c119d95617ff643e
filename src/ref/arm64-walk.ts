/**
 * Reference arm64 address translation for the EL1&0 regime (VMSAv8-64, 4 KiB granule, 48-bit
 * OA): stage 1 (VA → IPA, TTBR0/TTBR1) and stage 2 (IPA → PA, VTTBR) with hardware Access-flag
 * and dirty-state updates. Written only from docs/arm64-walk-contract.md (which distils the Arm
 * ARM's AArch64.S1Translate / AArch64.S2Translate / AArch64.S1CheckPermissions, with QEMU's
 * target/arm/ptw.c as tie-breaker). It is the oracle for differential tests of the WebAssembly
 * walker: slow on purpose, bigint throughout, one descriptor load per level, no caches.
 *
 * Every register value is accepted, as a PE accepts it: any TG0/TG1/VTCR.TG0 walks with the 4 KiB
 * granule, TnSZ outside 16..39 is clamped, an invalid or inconsistent VTCR.SL0 makes every stage-2
 * walk a level-0 translation fault (contract, "Register values").
 *
 * Not modelled: 16K/64K granules, FEAT_LPA/LPA2 (52-bit), the contiguous hint, MAIR and
 * memory types (except stage-2 Device for HCR_EL2.PTW), ASIDs/VMIDs and the TLB, FEAT_PAN3,
 * FEAT_HAFT, FWB, EL2/EL3 regimes, Secure state (NS/NSTable), BTI and permission overlays.
 *
 * Stage-1 descriptors (level 0..2 table; level 1/2 block, level 3 page):
 *
 *  table  63  62 61  60   59   58   51 50   48 47                   12 11       2  1   0
 *       ┌────┬──────┬────┬────┬────────┬───────┬───────────────────────┬──────────┬───┬───┐
 *       │ NS │ AP   │ UX │ PX │ignored │ignored│ next-level table addr │ ignored  │ 1 │ 1 │
 *       │ Tb │ Table│ NTb│ NTb│        │       │                       │          │   │   │
 *       └────┴──────┴────┴────┴────────┴───────┴───────────────────────┴──────────┴───┴───┘
 *
 *  leaf   63  59 58 55  54    53   52   51   50  48 47        shift(L) .. 12 11  10  9 8  7 6  5  4 2  1   0
 *       ┌──────┬──────┬─────┬─────┬────┬─────┬──────┬──────────────────┬───┬────┬────┬────┬────┬─────┬───┬───┐
 *       │ PBHA │  SW  │ UXN │ PXN │ Ct │ DBM │ ign. │ output address   │nG │ AF │ SH │ AP │ NS │ Idx │ T │ 1 │
 *       └──────┴──────┴─────┴─────┴────┴─────┴──────┴──────────────────┴───┴────┴────┴────┴────┴─────┴───┴───┘
 *
 *  T      bit 1: 1 = table at L0–2 / page at L3; 0 = block at L1/L2, invalid at L0 and L3
 *  AP     [7:6] = AP[2:1]: AP[2] read-only, AP[1] EL0 access
 *  APTable [62:61]: bit 61 clears AP[1] below, bit 62 sets AP[2] below (unless TCR.HPDn)
 *  UXNTable/PXNTable [60]/[59]: ORed into UXN/PXN below (unless TCR.HPDn)
 *  DBM    dirty bit modifier: with TCR.HD (and HA) a write clears AP[2] instead of faulting
 *  Bits [51:48] never contribute to an address.
 *
 * Stage-2 leaf: same type bits and output placement; MemAttr [5:2] (00xx = Device), S2AP [7:6]
 * (bit 6 read, bit 7 write), AF [10], DBM [51] (sets S2AP[1]), XN [54:53] (FEAT_XNX):
 * 00 executable at EL1 and EL0, 01 not at EL1, 10 at neither, 11 not at EL0. Stage-2 tables
 * carry no attributes.
 */
import type { RefMemory } from './x86-walk.js';

/** Kind of memory access being translated. */
export type RefArmAccess = 'read' | 'write' | 'fetch';

/** The architectural state a translation depends on. Registers are unsigned 64-bit values. */
export interface RefArm64State {
  ttbr0: bigint;
  ttbr1: bigint;
  tcr: bigint;
  sctlr: bigint;
  vttbr: bigint;
  vtcr: bigint;
  hcr: bigint;
  /** PSTATE.PAN. */
  pan: boolean;
}

/**
 * Outcome of one translation.
 * - ok: pa is the physical address, ipa the intermediate one (= pa when stage 2 is off),
 *   pageSize = min(stage-1 block size, stage-2 block size), level = stage-1 leaf level
 *   (stage-2 leaf level when stage 1 is off; 0 when both are off, pageSize 4096 then).
 * - fault: the stage that faulted, fsc (ESR_ELx.FSC: type base + level), the level, s1ptw
 *   (stage-2 fault while walking stage-1 tables), write (WnR), ipa (stage-2 faults only: the
 *   faulting IPA, the descriptor's IPA when s1ptw) and the fault kind.
 */
export type RefArm64Result =
  | { ok: true; pa: bigint; pageSize: number; level: number; ipa: bigint }
  | {
      ok: false;
      stage: 1 | 2;
      fsc: number;
      level: number;
      s1ptw: boolean;
      write: boolean;
      ipa?: bigint;
      kind: 'translation' | 'address-size' | 'access-flag' | 'permission' | 'abort';
    };

type FaultKind = Extract<RefArm64Result, { ok: false }>['kind'];
type Fault = Extract<RefArm64Result, { ok: false }>;

const FSC_BASE: Record<FaultKind, number> = {
  'address-size': 0x00,
  translation: 0x04,
  'access-flag': 0x08,
  permission: 0x0c,
  abort: 0x14,
};

const ARM_DESC_VALID_BIT = 1n << 0n;
const ARM_DESC_TYPE_BIT = 1n << 1n;
const ARM_DESC_AP1_BIT = 1n << 6n;
const ARM_DESC_AP2_BIT = 1n << 7n;
const ARM_DESC_S2AP_READ_BIT = 1n << 6n;
const ARM_DESC_S2AP_WRITE_BIT = 1n << 7n;
const ARM_DESC_AF_BIT = 1n << 10n;
const ARM_DESC_DBM_BIT = 1n << 51n;
const ARM_DESC_PXN_BIT = 1n << 53n;
const ARM_DESC_UXN_BIT = 1n << 54n;
const ARM_DESC_S2_MEMATTR_SHIFT = 2n;
const ARM_DESC_S2_MEMATTR_MASK = 0xfn;
const ARM_DESC_S2_XN_SHIFT = 53n;
const ARM_DESC_S2_XN_MASK = 0x3n;
const ARM_TABLE_PXN_BIT = 1n << 59n;
const ARM_TABLE_UXN_BIT = 1n << 60n;
const ARM_TABLE_AP_NO_EL0_BIT = 1n << 61n;
const ARM_TABLE_AP_NO_WRITE_BIT = 1n << 62n;

const TCR_T0SZ_SHIFT = 0;
const TCR_EPD0_BIT = 1n << 7n;
const TCR_T1SZ_SHIFT = 16;
const TCR_EPD1_BIT = 1n << 23n;
const TCR_IPS_SHIFT = 32;
const TCR_TBI0_BIT = 1n << 37n;
const TCR_TBI1_BIT = 1n << 38n;
const TCR_HA_BIT = 1n << 39n;
const TCR_HD_BIT = 1n << 40n;
const TCR_HPD0_BIT = 1n << 41n;
const TCR_HPD1_BIT = 1n << 42n;
const TCR_TBID0_BIT = 1n << 51n;
const TCR_TBID1_BIT = 1n << 52n;
const TCR_E0PD0_BIT = 1n << 55n;
const TCR_E0PD1_BIT = 1n << 56n;

const SCTLR_M_BIT = 1n << 0n;
const SCTLR_WXN_BIT = 1n << 19n;

const HCR_VM_BIT = 1n << 0n;
const HCR_PTW_BIT = 1n << 2n;

const VTCR_T0SZ_SHIFT = 0;
const VTCR_SL0_SHIFT = 6;
const VTCR_PS_SHIFT = 16;
const VTCR_HA_BIT = 1n << 21n;
const VTCR_HD_BIT = 1n << 22n;

/** TCR.IPS / VTCR.PS encodings 0..7 → output address bits (110 = 52 and 111 are treated as 48). */
const OUTPUT_BITS_BY_ENCODING = [32, 36, 40, 42, 44, 48, 48, 48] as const;

const PAGE_SHIFT = 12;
const LEVEL_BITS = 9;
const MAX_LEVEL = 3;
const ADDR_TOP_BIT = 47;
const MIN_TSZ = 16;
const MAX_TSZ = 39;
const MAX_CONCAT_INDEX_BITS = LEVEL_BITS + 4;
const MAX_RESTARTS = 100;

const PROT_READ = 1;
const PROT_WRITE = 2;

const RESTART = Symbol('restart');
type Restart = typeof RESTART;

/** Bits hi..lo inclusive; 0n when hi < lo. */
function bitRange(hi: number, lo: number): bigint {
  if (hi < lo) return 0n;
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

function has(value: bigint, bit: bigint): boolean {
  return (value & bit) !== 0n;
}

function field(value: bigint, shift: number, width: number): number {
  return Number((value >> BigInt(shift)) & ((1n << BigInt(width)) - 1n));
}

/** Address bits resolved below level L: 39, 30, 21, 12 for levels 0..3. */
function levelShift(level: number): number {
  return PAGE_SHIFT + LEVEL_BITS * (MAX_LEVEL - level);
}

/** TnSZ as the walk uses it: the field clamped to 16..39 (no FEAT_LVA/LPA2, no FEAT_TTST). */
function effectiveTsz(tsz: number): number {
  return Math.min(MAX_TSZ, Math.max(MIN_TSZ, tsz));
}

/** Stage-1 start level for an input size: 4 − ceil((bits − 12) / 9). */
function stage1StartLevel(inputBits: number): number {
  return 4 - Math.ceil((inputBits - PAGE_SHIFT) / LEVEL_BITS);
}

/** VTCR.SL0 (4 KiB granule) → start level: 0 → 2, 1 → 1, 2 → 0; 3 is invalid (-1). */
function stage2StartLevel(sl0: number): number {
  return sl0 <= 2 ? 2 - sl0 : -1;
}

/**
 * Start table address: `baseReg`[47:1] with the bits below the top table's size cleared.
 * The top table resolves `inputBits − shift(start)` index bits, so it spans 2^(that + 3) bytes.
 */
function topTableBase(baseReg: bigint, inputBits: number, startLevel: number): bigint {
  const tableBytesLog2 = inputBits - levelShift(startLevel) + 3;
  return baseReg & bitRange(ADDR_TOP_BIT, Math.max(1, tableBytesLog2));
}

/** Index of `input` into the table at `level`: inputBits − shift(start) bits at the start level, else 9. */
function tableIndex(input: bigint, level: number, startLevel: number, inputBits: number): bigint {
  const shift = levelShift(level);
  const width = level === startLevel ? inputBits - shift : LEVEL_BITS;
  return (input >> BigInt(shift)) & bitRange(width - 1, 0);
}

/** Contract rule 6: x0 invalid; 01 block at L1/L2, invalid at L0/L3; 11 table at L0–2, page at L3. */
function descriptorKind(desc: bigint, level: number): 'invalid' | 'table' | 'leaf' {
  if (!has(desc, ARM_DESC_VALID_BIT)) return 'invalid';
  const typeBit = has(desc, ARM_DESC_TYPE_BIT);
  if (level === MAX_LEVEL) return typeBit ? 'leaf' : 'invalid';
  if (typeBit) return 'table';
  return level === 0 ? 'invalid' : 'leaf';
}

function stage1Fault(kind: FaultKind, level: number, write: boolean): Fault {
  return { ok: false, stage: 1, fsc: FSC_BASE[kind] + level, level, s1ptw: false, write, kind };
}

function stage2Fault(kind: FaultKind, level: number, ipa: bigint, s1ptw: boolean, write: boolean): Fault {
  return { ok: false, stage: 2, fsc: FSC_BASE[kind] + level, level, s1ptw, write, ipa, kind };
}

/** Stage-2 parameters decoded once from VTTBR_EL2, VTCR_EL2 and HCR_EL2. */
interface Stage2Params {
  /**
   * False when SL0 is reserved (3) or inconsistent with the IPA size (the start level would need
   * fewer than 1 or more than 16 concatenated tables): every walk is then a translation fault at
   * level 0 (Arm ARM AArch64.S2InvalidSL / AArch64.S2InconsistentSL).
   */
  readonly validSl: boolean;
  readonly ipaBits: number;
  readonly startLevel: number;
  /** Start table address (concatenated tables included), not yet checked against PS. */
  readonly base: bigint;
  readonly outputBits: number;
  readonly ha: boolean;
  /** VTCR.HD, effective only with VTCR.HA. */
  readonly hd: boolean;
  readonly ptw: boolean;
}

function decodeStage2(s: RefArm64State): Stage2Params {
  const ipaBits = 64 - effectiveTsz(field(s.vtcr, VTCR_T0SZ_SHIFT, 6));
  const startLevel = stage2StartLevel(field(s.vtcr, VTCR_SL0_SHIFT, 2));
  const indexBits = ipaBits - levelShift(startLevel);
  const validSl = startLevel >= 0 && indexBits >= 1 && indexBits <= MAX_CONCAT_INDEX_BITS;
  const ha = has(s.vtcr, VTCR_HA_BIT);
  return {
    validSl,
    ipaBits,
    startLevel,
    base: validSl ? topTableBase(s.vttbr, ipaBits, startLevel) : 0n,
    outputBits: OUTPUT_BITS_BY_ENCODING[field(s.vtcr, VTCR_PS_SHIFT, 3)]!,
    ha,
    hd: ha && has(s.vtcr, VTCR_HD_BIT),
    ptw: has(s.hcr, HCR_PTW_BIT),
  };
}

type Stage2Outcome =
  | { ok: true; pa: bigint; pageSize: number; level: number; memAttr: bigint }
  | { ok: false; kind: FaultKind; level: number };

/**
 * Stage-2 permission for one access (contract stage 2 rule 5). `dirty` is true when a write is
 * allowed only through DBM (with VTCR.HD) and the update must set S2AP[1].
 */
function stage2Permits(
  desc: bigint,
  access: RefArmAccess,
  el0: boolean,
  hd: boolean,
): { allowed: boolean; dirty: boolean } {
  switch (access) {
    case 'read':
      return { allowed: has(desc, ARM_DESC_S2AP_READ_BIT), dirty: false };
    case 'write': {
      if (has(desc, ARM_DESC_S2AP_WRITE_BIT)) return { allowed: true, dirty: false };
      const dirty = hd && has(desc, ARM_DESC_DBM_BIT);
      return { allowed: dirty, dirty };
    }
    case 'fetch': {
      const xn = (desc >> ARM_DESC_S2_XN_SHIFT) & ARM_DESC_S2_XN_MASK;
      // 00 both execute; 01 EL1 may not; 10 neither; 11 EL0 may not.
      const allowed = el0 ? xn === 0n || xn === 1n : xn === 0n || xn === 3n;
      return { allowed, dirty: false };
    }
  }
}

/**
 * One stage-2 walk of `ipa` (contract stage 2 rules 1–6):
 *  1. invalid or inconsistent SL0, or IPA ≥ 2^ipaBits → translation fault, level 0; start table
 *     above PS → address-size fault;
 *  2. per level: load (abort outside RAM), type check, table address-size check;
 *  3. at the leaf: output address-size check, then AF, then permission;
 *  4. set AF / S2AP[1] (DBM) by one compare-exchange when the access passes.
 * Returns RESTART when the compare-exchange lost a race.
 */
function walkStage2(
  mem: RefMemory,
  p: Stage2Params,
  ipa: bigint,
  access: RefArmAccess,
  el0: boolean,
): Stage2Outcome | Restart {
  if (!p.validSl || ipa >> BigInt(p.ipaBits) !== 0n) return { ok: false, kind: 'translation', level: 0 };
  const outputMask = bitRange(ADDR_TOP_BIT, p.outputBits);
  if (has(p.base, outputMask)) return { ok: false, kind: 'address-size', level: p.startLevel };

  let tableBase = p.base;
  for (let level = p.startLevel; level <= MAX_LEVEL; level++) {
    const descPa = tableBase + tableIndex(ipa, level, p.startLevel, p.ipaBits) * 8n;
    const desc = mem.read64(descPa);
    if (desc === undefined) return { ok: false, kind: 'abort', level };
    const kind = descriptorKind(desc, level);
    if (kind === 'invalid') return { ok: false, kind: 'translation', level };
    if (kind === 'table') {
      tableBase = desc & bitRange(ADDR_TOP_BIT, PAGE_SHIFT);
      if (has(tableBase, outputMask)) return { ok: false, kind: 'address-size', level };
      continue;
    }

    const shift = levelShift(level);
    const frame = desc & bitRange(ADDR_TOP_BIT, shift);
    if (has(frame, outputMask)) return { ok: false, kind: 'address-size', level };
    if (!has(desc, ARM_DESC_AF_BIT) && !p.ha) return { ok: false, kind: 'access-flag', level };
    const perm = stage2Permits(desc, access, el0, p.hd);
    if (!perm.allowed) return { ok: false, kind: 'permission', level };

    const updated = desc | ARM_DESC_AF_BIT | (perm.dirty ? ARM_DESC_S2AP_WRITE_BIT : 0n);
    if (updated !== desc && !mem.cmpxchg64(descPa, desc, updated)) return RESTART;
    return {
      ok: true,
      pa: frame | (ipa & bitRange(shift - 1, 0)),
      pageSize: 2 ** shift,
      level,
      memAttr: (desc >> ARM_DESC_S2_MEMATTR_SHIFT) & ARM_DESC_S2_MEMATTR_MASK,
    };
  }
  throw new Error('unreachable: level 3 is always a leaf or invalid');
}

/** Everything one translation depends on; `stage2` is null when stage 2 is off or in debug mode. */
interface Translation {
  readonly mem: RefMemory;
  readonly s: RefArm64State;
  readonly va: bigint;
  /** Always 'read' in debug mode. */
  readonly access: RefArmAccess;
  readonly el0: boolean;
  readonly debug: boolean;
  readonly stage2: Stage2Params | null;
}

/**
 * S2-PTW (contract stage 2 rule 7): the PA of the stage-1 descriptor at `descIpa`. A read is a
 * stage-2 read at EL1 (Device memory with HCR_EL2.PTW is a permission fault); an `update` (a
 * stage-1 AF/DBM write) is a stage-2 write at EL1. Any fault is stage 2 with s1ptw set.
 */
function descriptorPa(t: Translation, descIpa: bigint, update: boolean): bigint | Fault | Restart {
  if (t.stage2 === null) return descIpa;
  const write = update;
  const r = walkStage2(t.mem, t.stage2, descIpa, update ? 'write' : 'read', false);
  if (r === RESTART) return RESTART;
  if (!r.ok) return stage2Fault(r.kind, r.level, descIpa, true, write);
  const device = (r.memAttr >> 2n) === 0n;
  if (t.stage2.ptw && device) return stage2Fault('permission', r.level, descIpa, true, write);
  return r.pa;
}

/** Stage 2 of the final IPA (or the IPA itself when stage 2 is off); stage-1 results carried along. */
function finishStage2(
  t: Translation,
  ipa: bigint,
  s1PageSize: number | null,
  s1Level: number,
): RefArm64Result | Restart {
  if (t.stage2 === null) return { ok: true, pa: ipa, pageSize: s1PageSize ?? 4096, level: s1Level, ipa };
  const r = walkStage2(t.mem, t.stage2, ipa, t.access, t.el0);
  if (r === RESTART) return RESTART;
  if (!r.ok) return stage2Fault(r.kind, r.level, ipa, false, t.access === 'write');
  return {
    ok: true,
    pa: r.pa,
    pageSize: s1PageSize === null ? r.pageSize : Math.min(s1PageSize, r.pageSize),
    level: s1PageSize === null ? r.level : s1Level,
    ipa,
  };
}

/**
 * Stage-1 data and instruction permissions (contract rule 11, QEMU get_S1prot) from the
 * effective AP[2:1], UXN and PXN. Returns true when the access is allowed.
 */
function stage1Permits(t: Translation, readOnly: boolean, el0Access: boolean, uxn: boolean, pxn: boolean): boolean {
  const wxn = has(t.s.sctlr, SCTLR_WXN_BIT);
  const ownRw = readOnly ? PROT_READ : PROT_READ | PROT_WRITE;
  const el0Rw = el0Access ? ownRw : 0;
  let protRw: number;
  let exec: boolean;
  if (t.el0) {
    protRw = el0Rw;
    exec = !uxn && !(wxn && (protRw & PROT_WRITE) !== 0);
  } else {
    protRw = t.s.pan && el0Rw !== 0 ? 0 : ownRw;
    exec = !pxn && (el0Rw & PROT_WRITE) === 0 && !(wxn && (protRw & PROT_WRITE) !== 0);
  }
  switch (t.access) {
    case 'read':
      return (protRw & PROT_READ) !== 0;
    case 'write':
      return (protRw & PROT_WRITE) !== 0;
    case 'fetch':
      return exec;
  }
}

/** SCTLR.M = 0: IPA = VA when VA[63:48] = 0, else a stage-1 address-size fault at level 0. */
function translateStage1Off(t: Translation): RefArm64Result | Restart {
  if (t.va >> 48n !== 0n) return stage1Fault('address-size', 0, t.access === 'write');
  return finishStage2(t, t.va, null, 0);
}

/**
 * One full translation (contract stage 1 rules 1–12, then stage 2 of the output):
 *  1. pick TTBR0/TTBR1 by VA bit 55; check the VA range (with TBI), EPDn and E0PDn;
 *  2. from the start level: translate the descriptor address through stage 2 (S2-PTW), load it
 *     (abort outside RAM), check its type; at a table check the next address against IPS and
 *     fold APTable/UXNTable/PXNTable (unless HPDn);
 *  3. at the leaf: output address-size, access flag, permissions (DBM and APTable applied);
 *  4. set AF / clear AP[2] by one compare-exchange (needs stage-2 write permission on the
 *     descriptor's page), then translate the output IPA through stage 2.
 * Returns RESTART when a compare-exchange lost a race.
 */
function translateOnce(t: Translation): RefArm64Result | Restart {
  const { s, va } = t;
  if (!has(s.sctlr, SCTLR_M_BIT)) return translateStage1Off(t);
  const write = t.access === 'write';
  const tcr = s.tcr;

  const upperRange = has(va, 1n << 55n);
  const vaBits = 64 - effectiveTsz(field(tcr, upperRange ? TCR_T1SZ_SHIFT : TCR_T0SZ_SHIFT, 6));
  const tbi =
    has(tcr, upperRange ? TCR_TBI1_BIT : TCR_TBI0_BIT) &&
    (t.access !== 'fetch' || !has(tcr, upperRange ? TCR_TBID1_BIT : TCR_TBID0_BIT));
  const checkedBits = bitRange(tbi ? 55 : 63, vaBits);
  if ((va & checkedBits) !== (upperRange ? checkedBits : 0n)) return stage1Fault('translation', 0, write);
  if (has(tcr, upperRange ? TCR_EPD1_BIT : TCR_EPD0_BIT)) return stage1Fault('translation', 0, write);
  if (t.el0 && has(tcr, upperRange ? TCR_E0PD1_BIT : TCR_E0PD0_BIT)) return stage1Fault('translation', 0, write);

  const hpd = has(tcr, upperRange ? TCR_HPD1_BIT : TCR_HPD0_BIT);
  const ha = has(tcr, TCR_HA_BIT);
  const hd = ha && has(tcr, TCR_HD_BIT);
  const outputMask = bitRange(ADDR_TOP_BIT, OUTPUT_BITS_BY_ENCODING[field(tcr, TCR_IPS_SHIFT, 3)]!);
  const startLevel = stage1StartLevel(vaBits);
  let tableBase = topTableBase(upperRange ? s.ttbr1 : s.ttbr0, vaBits, startLevel);
  if (has(tableBase, outputMask)) return stage1Fault('address-size', startLevel, write);

  let apTable = 0n;
  let uxnTable = false;
  let pxnTable = false;
  for (let level = startLevel; level <= MAX_LEVEL; level++) {
    const descIpa = tableBase + tableIndex(va, level, startLevel, vaBits) * 8n;
    const descPa = descriptorPa(t, descIpa, false);
    if (typeof descPa !== 'bigint') return descPa;
    const desc = t.mem.read64(descPa);
    if (desc === undefined) return stage1Fault('abort', level, write);
    const kind = descriptorKind(desc, level);
    if (kind === 'invalid') return stage1Fault('translation', level, write);
    if (kind === 'table') {
      tableBase = desc & bitRange(ADDR_TOP_BIT, PAGE_SHIFT);
      if (has(tableBase, outputMask)) return stage1Fault('address-size', level, write);
      if (!hpd) {
        apTable |= desc & (ARM_TABLE_AP_NO_EL0_BIT | ARM_TABLE_AP_NO_WRITE_BIT);
        uxnTable ||= has(desc, ARM_TABLE_UXN_BIT);
        pxnTable ||= has(desc, ARM_TABLE_PXN_BIT);
      }
      continue;
    }

    const shift = levelShift(level);
    const frame = desc & bitRange(ADDR_TOP_BIT, shift);
    if (has(frame, outputMask)) return stage1Fault('address-size', level, write);
    if (!has(desc, ARM_DESC_AF_BIT) && !ha) return stage1Fault('access-flag', level, write);

    const dirtyWrite = write && hd && has(desc, ARM_DESC_DBM_BIT);
    let readOnly = has(desc, ARM_DESC_AP2_BIT) && !dirtyWrite;
    let el0Access = has(desc, ARM_DESC_AP1_BIT);
    if (has(apTable, ARM_TABLE_AP_NO_EL0_BIT)) el0Access = false;
    if (has(apTable, ARM_TABLE_AP_NO_WRITE_BIT)) readOnly = true;
    const uxn = has(desc, ARM_DESC_UXN_BIT) || uxnTable;
    const pxn = has(desc, ARM_DESC_PXN_BIT) || pxnTable;
    if (!stage1Permits(t, readOnly, el0Access, uxn, pxn)) return stage1Fault('permission', level, write);

    const pageSize = 2 ** shift;
    const ipa = frame | (va & bitRange(shift - 1, 0));
    if (t.debug) return { ok: true, pa: ipa, pageSize, level, ipa };

    let updated = desc | ARM_DESC_AF_BIT;
    if (dirtyWrite) updated &= ~ARM_DESC_AP2_BIT;
    if (updated !== desc) {
      const updatePa = descriptorPa(t, descIpa, true);
      if (typeof updatePa !== 'bigint') return updatePa;
      if (!t.mem.cmpxchg64(updatePa, desc, updated)) return RESTART;
    }
    return finishStage2(t, ipa, pageSize, level);
  }
  throw new Error('unreachable: level 3 is always a leaf or invalid');
}

/**
 * Translates `va` for one access in the EL1&0 regime, as the CPU would, or as a debugger would
 * with `opts.debug` (QEMU gva2gpa).
 *
 * - Every register value is accepted (contract, "Register values").
 * - `va` is read modulo 2^64.
 * - Stage 1 runs when SCTLR_EL1.M = 1, stage 2 when HCR_EL2.VM = 1; with stage 2 on, every
 *   stage-1 descriptor address is an IPA translated by stage 2 first.
 * - Side effects (not in debug mode), all through `mem.cmpxchg64` on the descriptor value the
 *   walk read, and only when the access passes that stage's checks: stage-1 leaf AF (TCR.HA)
 *   and AP[2] cleared on a DBM write (TCR.HD); stage-2 leaf AF (VTCR.HA) and S2AP[1] set on a
 *   DBM write (VTCR.HD), including for stage-2 walks of stage-1 tables. The stage-1 update
 *   happens before stage 2 translates the output IPA. A lost compare-exchange restarts the
 *   whole translation; after 100 restarts this throws.
 * - Debug mode: stage 1 only (stage-1 table addresses are read as PAs even if stage 2 is on),
 *   a data read at the given EL with PAN whatever `access` says, AF = 0 translates when TCR.HA
 *   = 1, no writes to memory.
 *
 * @param mem guest-physical memory holding the translation tables
 * @param s system registers and PSTATE.PAN
 * @param va virtual address
 * @param access read, write or instruction fetch
 * @param el0 true for an EL0 (unprivileged) access, false for EL1
 * @param opts `debug` for the side-effect-free debugger view
 */
export function refTranslateArm64(
  mem: RefMemory,
  s: RefArm64State,
  va: bigint,
  access: RefArmAccess,
  el0: boolean,
  opts: { debug?: boolean } = {},
): RefArm64Result {
  const debug = opts.debug === true;
  const t: Translation = {
    mem,
    s,
    va: BigInt.asUintN(64, va),
    access: debug ? 'read' : access,
    el0,
    debug,
    stage2: !debug && has(s.hcr, HCR_VM_BIT) ? decodeStage2(s) : null,
  };
  for (let restarts = 0; restarts <= MAX_RESTARTS; restarts++) {
    const result = translateOnce(t);
    if (result !== RESTART) return result;
  }
  throw new Error(`arm64 translation of va 0x${t.va.toString(16)} restarted more than ${MAX_RESTARTS} times`);
}
