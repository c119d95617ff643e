// AArch64 TLB maintenance (TLBI) instructions of the EL1&0 regime as KVM/arm64
// issues them: the instruction names and the decoding of their 64-bit operand.
// Follows Arm ARM C5.5 (the TLBI instructions: what each op invalidates, operand
// encodings, TTL hints, leaf-only forms) and the TLB maintenance rules of chapter D8 (range TG);
// range decoding matches QEMU target/arm tlbi_aa64_get_range.
// Models the 4 KiB granule, 48-bit IPA and VA without LPA2 (DS=0): BaseADDR is
// in 4 KiB units. Outer-shareable (…OS) and nXS forms are not modelled.

/** The broadcast (Inner Shareable) TLBI instructions, by their Arm names. */
export type TlbiOp =
  | "VAE1IS" | "VALE1IS" | "VAAE1IS" | "VAALE1IS"
  | "ASIDE1IS" | "VMALLE1IS" | "VMALLS12E1IS"
  | "IPAS2E1IS" | "IPAS2LE1IS" | "ALLE1IS"
  | "RVAE1IS" | "RVALE1IS" | "RVAAE1IS" | "RVAALE1IS"
  | "RIPAS2E1IS" | "RIPAS2LE1IS";

/** The local (this PE only) forms: the same operations without the IS suffix. */
export type TlbiLocalOp = TlbiOp extends `${infer Base}IS` ? Base : never;

/** Any instruction name `decodeTlbi` accepts. */
export type TlbiName = TlbiOp | TlbiLocalOp;

/**
 * What an op is addressed by:
 * 'va' one VA or VA range (stage 1); 'asid' one ASID; 'vmall' the whole
 * stage-1 regime of the current VMID; 'vmalls12' stage 1 and stage 2 of the
 * current VMID; 'ipa' one IPA or IPA range (stage 2 only); 'all' every VMID.
 */
export type TlbiKind = "va" | "asid" | "vmall" | "vmalls12" | "ipa" | "all";

/** A TLBI instruction and its operand, decoded for the 4 KiB granule. */
export interface DecodedTlbi {
  /** The instruction, named by its broadcast (IS) form. */
  op: TlbiOp;
  /** The name as given, upper-case: equals `op` for IS forms. */
  name: TlbiName;
  /** True for …IS forms (every PE in the Inner Shareable domain), false for local forms. */
  broadcast: boolean;
  kind: TlbiKind;
  /** 1 = stage-1 entries (incl. combined S1+S2), 2 = stage-2-only entries, 12 = both stages. */
  stage: 1 | 2 | 12;
  /** Only last-level (block/page) entries; walk-cache entries may survive (the …L… forms, Arm ARM C5.5). */
  leafOnly: boolean;
  /** The ASID matched, for ops that match one ASID (VAE1, VALE1, ASIDE1, RVAE1, RVALE1). */
  asid?: number;
  /** True when entries of every ASID are affected (…AA… forms, VMALL*, ALLE1, IPA forms). */
  allAsids: boolean;
  /** True for the FEAT_TLBIRANGE (R…) forms. */
  range: boolean;
  /**
   * 4 KiB page number of the first page: VA[55:12] for VA forms (after range
   * BaseADDR sign extension), IPA[47:12] (range: IPA[48:12]) for IPA forms;
   * 0n for ops that take no address.
   */
  startPage: bigint;
  /**
   * Byte address of the first page: the sign-extended 64-bit VA for VA forms
   * (so TTBR1 addresses come out as 0xffff…), the IPA for IPA forms, 0n for ops
   * that take no address.
   */
  startVa: bigint;
  /** 4 KiB pages covered: 1n for non-range address ops, (NUM+1)<<(5·SCALE+1) for range ops, 0n otherwise. */
  pages: bigint;
  /** Leaf-level hint (operand TTL, FEAT_TTL, Arm ARM C5.5; Linux tlbflush.h __tlbi_level), or null when the operand gives none. */
  ttlLevel: number | null;
  /**
   * Non-null when the architecture does not require the op to invalidate
   * anything (Arm ARM C5.5, range forms: TG = 00 reserved, or TG ≠ 01, the 4 KiB granule in use; QEMU tlbi_aa64_get_range);
   * the reason. The other fields still show what the operand encodes.
   */
  ignored: string | null;
  /** NS, operand bit 63, for IPA forms only. */
  ns?: boolean;
  /** Range forms only: the raw TG, SCALE and NUM fields. */
  tg?: number;
  scale?: number;
  num?: number;
}

// Non-range VA operand (VAE1IS, VALE1IS, VAAE1IS, VAALE1IS; ASIDE1IS uses only ASID):
//
//  63              48 47        44 43                                        0
// ┌──────────────────┬────────────┬───────────────────────────────────────────┐
// │       ASID       │    TTL     │                 VA[55:12]                 │
// └──────────────────┴────────────┴───────────────────────────────────────────┘
//   ASID: 16 bits when TCR_EL1.AS=1; with AS=0 only [55:48] count. RES0 for …AA….
//   TTL[3:2]: granule (00 no hint, 01 4K, 10 16K, 11 64K); TTL[1:0]: leaf level.
//
// Non-range IPA operand (IPAS2E1IS, IPAS2LE1IS):
//
//  63 62          48 47      44 43    40 39       36 35                           0
// ┌──┬──────────────┬──────────┬────────┬───────────┬──────────────────────────────┐
// │NS│     RES0     │   TTL    │  RES0  │ IPA[51:48]│          IPA[47:12]          │
// └──┴──────────────┴──────────┴────────┴───────────┴──────────────────────────────┘
//   IPA[51:48] exists only with FEAT_LPA; ignored here (48-bit IPA).
//
// Range operand (RVAE1IS, RVALE1IS, RVAAE1IS, RVAALE1IS, RIPAS2E1IS, RIPAS2LE1IS):
//
//  63            48 47 46 45 44 43      39 38 37 36                              0
// ┌────────────────┬─────┬─────┬──────────┬─────┬─────────────────────────────────┐
// │      ASID      │ TG  │SCALE│   NUM    │ TTL │   BaseADDR (4K: VA/IPA[48:12])  │
// └────────────────┴─────┴─────┴──────────┴─────┴─────────────────────────────────┘
//   [63:48]: ASID for RVAE*/RVALE*; RES0 for RVAA*; NS[63] + RES0 for RIPAS2*.
//   TG: 00 reserved, 01 4K, 10 16K, 11 64K. TTL: 00 any level, 01/10/11 level 1/2/3.
//   Covers [BaseADDR, BaseADDR + (NUM+1)·2^(5·SCALE+1)) granules.

import { bigintArg, boolArg, intArg, optionsObject, reg64Arg, show } from "../validate.js";

const ASID_SHIFT = 48n;
const TTL_SHIFT = 44n;
const VA_FIELD_MASK = (1n << 44n) - 1n;
const RANGE_BADDR_MASK = (1n << 37n) - 1n;
const RANGE_TTL_SHIFT = 37n;
const RANGE_NUM_SHIFT = 39n;
const RANGE_SCALE_SHIFT = 44n;
const RANGE_TG_SHIFT = 46n;
const PAGE_SHIFT = 12n;
const U64_MASK = (1n << 64n) - 1n;

/** TG / TTL[3:2] value of the 4 KiB granule (Linux get_trans_granule()). */
export const TLBI_GRANULE_4K = 1;

interface OpInfo {
  kind: TlbiKind;
  stage: 1 | 2 | 12;
  leafOnly: boolean;
  byAsid: boolean;
  range: boolean;
}

const OP_INFO: Readonly<Record<TlbiOp, OpInfo>> = {
  VAE1IS: { kind: "va", stage: 1, leafOnly: false, byAsid: true, range: false },
  VALE1IS: { kind: "va", stage: 1, leafOnly: true, byAsid: true, range: false },
  VAAE1IS: { kind: "va", stage: 1, leafOnly: false, byAsid: false, range: false },
  VAALE1IS: { kind: "va", stage: 1, leafOnly: true, byAsid: false, range: false },
  ASIDE1IS: { kind: "asid", stage: 1, leafOnly: false, byAsid: true, range: false },
  VMALLE1IS: { kind: "vmall", stage: 1, leafOnly: false, byAsid: false, range: false },
  VMALLS12E1IS: { kind: "vmalls12", stage: 12, leafOnly: false, byAsid: false, range: false },
  IPAS2E1IS: { kind: "ipa", stage: 2, leafOnly: false, byAsid: false, range: false },
  IPAS2LE1IS: { kind: "ipa", stage: 2, leafOnly: true, byAsid: false, range: false },
  ALLE1IS: { kind: "all", stage: 12, leafOnly: false, byAsid: false, range: false },
  RVAE1IS: { kind: "va", stage: 1, leafOnly: false, byAsid: true, range: true },
  RVALE1IS: { kind: "va", stage: 1, leafOnly: true, byAsid: true, range: true },
  RVAAE1IS: { kind: "va", stage: 1, leafOnly: false, byAsid: false, range: true },
  RVAALE1IS: { kind: "va", stage: 1, leafOnly: true, byAsid: false, range: true },
  RIPAS2E1IS: { kind: "ipa", stage: 2, leafOnly: false, byAsid: false, range: true },
  RIPAS2LE1IS: { kind: "ipa", stage: 2, leafOnly: true, byAsid: false, range: true },
};

/** Every broadcast op name, in declaration order. */
export const TLBI_OPS: readonly TlbiOp[] = Object.keys(OP_INFO) as TlbiOp[];

/** Every local op name, in the same order as `TLBI_OPS`. */
export const TLBI_LOCAL_OPS: readonly TlbiLocalOp[] = TLBI_OPS.map(
  (op) => op.slice(0, -2) as TlbiLocalOp,
);

/** Every name tlbiFast takes, by numeric code: the broadcast forms (0–15), then the local forms (16–31). */
export const TLBI_NAMES: readonly TlbiName[] = [...TLBI_OPS, ...TLBI_LOCAL_OPS];

/** The numeric code of each TLBI name (Arm64Vcpu.tlbiFast): TLBI_CODE.VAE1IS, TLBI_CODE.VALE1 … */
export const TLBI_CODE: Readonly<Record<TlbiName, number>> = Object.fromEntries(TLBI_NAMES.map((n, i) => [n, i])) as Record<TlbiName, number>;

/** TlbiFields.kind: the TlbiKind as a number. */
export const TLBI_KIND = { va: 0, asid: 1, vmall: 2, vmalls12: 3, ipa: 4, all: 5 } as const;

/**
 * A decoded TLBI in Numbers, for the allocation-free path (decodeTlbiFields
 * fills one record in place). 64-bit quantities are split or fit 53 bits.
 */
export interface TlbiFields {
  /** Numeric code (TLBI_CODE) of the instruction as executed. */
  code: number;
  kind: number;
  broadcast: boolean;
  /** The ASID matched, or −1 when every ASID is affected. */
  asid: number;
  /**
   * First 4 KiB page as the TLB keys it: VA[56:12] of the sign-extended VA
   * (45 bits) for VA forms, IPA[47:12] (range: [48:12]) for IPA forms; 0 otherwise.
   */
  vpn: number;
  /** VA/IPA forms: operand bits as decoded (VA[55:12], IPA[47:12], or BaseADDR); 0 otherwise. */
  page: number;
  /** Pages covered: 1 for single-address ops, (NUM+1)·2^(5·SCALE+1) for range ops, 0 otherwise. */
  pages: number;
  /** TTL level hint, or −1 for none. */
  level: number;
  /** Range forms: TG, SCALE, NUM (else 0). */
  tg: number; scale: number; num: number;
  /** IPA forms: NS, operand bit 63. */
  ns: boolean;
  /** 0 when the op must invalidate; 1 reserved range TG = 00; 2 range TG not the 4 KiB granule (Arm ARM C5.5 range forms). */
  ignored: number;
}

/** A fresh TlbiFields record to decode into. */
export function tlbiFields(): TlbiFields {
  return { code: 0, kind: 0, broadcast: false, asid: -1, vpn: 0, page: 0, pages: 0, level: -1, tg: 0, scale: 0, num: 0, ns: false, ignored: 0 };
}

const INFO_BY_CODE: readonly OpInfo[] = TLBI_NAMES.map((_, i) => OP_INFO[TLBI_OPS[i % TLBI_OPS.length]!]);
/** Per code: TLBI_KIND value, and flags 1 byAsid, 2 range, 4 VA form, 8 IPA form, 16 broadcast. */
const KIND_BY_CODE = Int32Array.from(INFO_BY_CODE, (info) => TLBI_KIND[info.kind]);
const FLAGS_BY_CODE = Int32Array.from(INFO_BY_CODE, (info, i) =>
  (info.byAsid ? 1 : 0) | (info.range ? 2 : 0) | (info.kind === "va" ? 4 : 0) | (info.kind === "ipa" ? 8 : 0) | (i < TLBI_OPS.length ? 16 : 0));
const P32 = 0x1_0000_0000;

/**
 * Decodes instruction `code` (TLBI_CODE) with operand hi:lo (two 32-bit
 * halves, signed or unsigned) into `out`, in place: the same fields decodeTlbi
 * reports, without BigInt or allocation. `code` must be a valid code (the
 * caller checks). Bit layouts: see the operand diagrams above.
 */
export function decodeTlbiFields(out: TlbiFields, code: number, lo: number, hi: number, asid16: boolean): void {
  const flags = FLAGS_BY_CODE[code]!;
  const l = lo >>> 0, h = hi >>> 0;
  out.code = code;
  out.kind = KIND_BY_CODE[code]!;
  out.broadcast = (flags & 16) !== 0;
  out.asid = (flags & 1) !== 0 ? (asid16 ? h >>> 16 : (h >>> 16) & 0xff) : -1;
  out.vpn = 0; out.page = 0; out.pages = 0; out.level = -1;
  out.tg = 0; out.scale = 0; out.num = 0; out.ns = false; out.ignored = 0;
  if ((flags & 12) === 0) return;
  const va = (flags & 4) !== 0;
  out.ns = !va && (h >>> 31) === 1;
  if ((flags & 2) === 0) {
    // VA[55:12] = op[43:0], sign-extended from VA bit 55 (op bit 43) into VA[56]; IPA[47:12] = op[35:0].
    out.page = va ? (h & 0xfff) * P32 + l : (h & 0xf) * P32 + l;
    out.vpn = va && (h & 0x800) !== 0 ? out.page + 2 ** 44 : out.page;
    out.pages = 1;
    const ttl = (h >>> 12) & 0xf;
    out.level = ttl >> 2 === TLBI_GRANULE_4K ? ttl & 3 : -1;
    return;
  }
  // BaseADDR = op[36:0] = VA/IPA[48:12]; VA forms sign-extend from its bit 36 (VA bit 48), as QEMU.
  const base = (h & 0x1f) * P32 + l;
  const ttl = (h >>> 5) & 3;
  out.num = (h >>> 7) & 0x1f;
  out.scale = (h >>> 12) & 3;
  out.tg = (h >>> 14) & 3;
  out.pages = (out.num + 1) * 2 ** (5 * out.scale + 1);
  out.level = ttl === 0 ? -1 : ttl;
  out.page = base;
  out.vpn = va && (h & 0x10) !== 0 ? base + (2 ** 45 - 2 ** 37) : base;
  out.ignored = out.tg === 0 ? 1 : out.tg !== TLBI_GRANULE_4K ? 2 : 0;
}

function isTlbiOp(name: string): name is TlbiOp {
  return Object.prototype.hasOwnProperty.call(OP_INFO, name);
}

/** Number of 4 KiB pages a range op covers: (num+1) << (5·scale+1) (Linux __TLBI_RANGE_PAGES). */
export function tlbiRangePages(num: number, scale: number): bigint {
  return BigInt(num + 1) << BigInt(5 * scale + 1);
}

/**
 * Decodes one TLBI instruction and its operand for a regime using the 4 KiB
 * granule, 48-bit VA/IPA and no LPA2.
 *
 * @param op      instruction name, IS or local form, any case ("vae1is", "RIPAS2E1").
 * @param operand the Xt value, a 64-bit bigint given unsigned or signed (−2^63..2^64−1; anything else is refused).
 * @param opts.asid16 TCR_EL1.AS: true = 16-bit ASIDs; false = ASID is operand[55:48]
 *                    and operand[63:56] is ignored.
 * @returns the decoded form; pure, no side effects. Operand fields an op does
 *          not use are ignored (e.g. the whole operand of VMALLE1IS).
 * @throws Error naming the op when it is not a known TLBI name; TypeError /
 *         RangeError naming the argument for a non-string op, an operand that
 *         is not a 64-bit bigint, or opts without a boolean asid16.
 *
 * VA forms: VA[55:12] = operand[43:0], sign-extended from VA bit 55. IPA
 * forms: IPA[47:12] = operand[35:0], NS = bit 63. Range forms: BaseADDR =
 * operand[36:0] is VA/IPA[48:12]; for VA forms it is sign-extended from bit 36
 * (VA bit 48) as QEMU does for two-range regimes. A range TG other than 01 sets
 * `ignored` (Arm ARM C5.5 range forms). A non-range TTL whose TTL[3:2] is not 01 is treated as no hint;
 * TTL 0b0100 decodes to level 0 (a reserved value without FEAT_LPA2).
 */
export function decodeTlbi(op: string, operand: bigint, opts: { asid16: boolean }): DecodedTlbi {
  if (typeof op !== "string") throw new TypeError(`vmmu: op must be a TLBI instruction name (a string), got ${show(op)}`);
  reg64Arg(operand, "operand");
  boolArg(optionsObject(opts, "opts").asid16, "opts.asid16");
  const upper = op.toUpperCase();
  let family: TlbiOp;
  let broadcast: boolean;
  if (isTlbiOp(upper)) {
    family = upper;
    broadcast = true;
  } else if (!upper.endsWith("IS") && isTlbiOp(upper + "IS")) {
    family = (upper + "IS") as TlbiOp;
    broadcast = false;
  } else {
    throw new RangeError(
      `vmmu: unknown TLBI op '${op}': op must be one of ${TLBI_OPS.join(", ")} or a local form (${TLBI_LOCAL_OPS.join(", ")})`,
    );
  }
  const x = BigInt.asUintN(64, operand);
  const f = tlbiFields();
  const code = TLBI_CODE[upper as TlbiName];
  decodeTlbiFields(f, code, Number(x & 0xffff_ffffn), Number(x >> 32n), opts.asid16);
  const info = INFO_BY_CODE[code]!;
  const out: DecodedTlbi = {
    op: family,
    name: upper as TlbiName,
    broadcast,
    kind: info.kind,
    stage: info.stage,
    leafOnly: info.leafOnly,
    allAsids: !info.byAsid,
    range: info.range,
    startPage: 0n,
    startVa: 0n,
    pages: 0n,
    ttlLevel: null,
    ignored: null,
  };
  if (f.asid >= 0) out.asid = f.asid;
  if (info.kind === "ipa") out.ns = f.ns;
  if (info.kind !== "va" && info.kind !== "ipa") return out;
  out.pages = BigInt(f.pages);
  out.ttlLevel = f.level < 0 ? null : f.level;
  if (info.kind === "va") {
    out.startVa = BigInt.asUintN(64, BigInt.asIntN(57, BigInt(f.vpn) << PAGE_SHIFT));
    out.startPage = (out.startVa >> PAGE_SHIFT) & VA_FIELD_MASK;
  } else {
    out.startPage = BigInt(f.page);
    out.startVa = out.startPage << PAGE_SHIFT;
  }
  if (info.range) {
    out.tg = f.tg;
    out.scale = f.scale;
    out.num = f.num;
    if (f.ignored === 1) out.ignored = "range TG=0b00 is reserved: no entries need be invalidated";
    else if (f.ignored === 2) out.ignored = `range TG=0b${f.tg.toString(2)} (${f.tg === 2 ? "16K" : "64K"}) does not match the 4K granule in use: no entries need be invalidated`;
  }
  return out;
}

/**
 * Non-range VA/IPA operand, as Linux __TLBI_VADDR(addr, asid) plus the
 * __tlbi_level() TTL insertion.
 *
 * @param va       byte address (VA, or IPA for IPAS2*); bits below 12 and
 *                 above 55 are dropped: operand[43:0] = va[55:12].
 * @param asid     ASID placed in [63:48] (0 for …AA… and IPA forms); u16.
 * @param ttlLevel leaf level 1–3 → TTL = 0b01:level in [47:44]; 0 or
 *                 undefined means no hint (the v6.5/v6.6 convention).
 * @returns the unsigned 64-bit operand.
 */
export function encodeTlbiVa(va: bigint, asid: number, ttlLevel?: number): bigint {
  bigintArg(va, "va");
  intArg(asid, "asid", 0, 0xffff);
  if (ttlLevel !== undefined) intArg(ttlLevel, "ttlLevel", 0, 3);
  let x = (va >> PAGE_SHIFT) & VA_FIELD_MASK;
  x |= BigInt(asid) << ASID_SHIFT;
  if (ttlLevel !== undefined && ttlLevel !== 0) {
    const ttl = BigInt((ttlLevel & 3) | (TLBI_GRANULE_4K << 2));
    x = (x & ~(0xfn << TTL_SHIFT)) | (ttl << TTL_SHIFT);
  }
  return x & U64_MASK;
}

/**
 * Range operand, as Linux __TLBI_VADDR_RANGE(addr, asid, scale, num, ttl)
 * with TG = 01 (4 KiB).
 *
 * @param f.baseVa byte address of the first page; operand[36:0] = baseVa[48:12].
 * @param f.asid   ASID in [63:48] (0 for RVAA* and RIPAS2*).
 * @param f.scale  exponent 0–4 (4 only reproduces the bug below); f.num 0–31;
 *                 f.ttl 0–3 (0 = no level hint). Anything else is a RangeError.
 * @returns the unsigned 64-bit operand.
 *
 * Like the Linux macro, scale, num and ttl are shifted into place without
 * masking: scale = 4 lands on bit 46 (inside TG, which is already 01), the
 * v6.6 MAX_TLBI_RANGE_PAGES bug (fixed in v6.9 by "arm64: tlb: Fix TLBI RANGE operand", tlbflush.h __TLBI_RANGE_NUM).
 */
export function encodeTlbiRange(f: {
  baseVa: bigint;
  asid: number;
  scale: number;
  num: number;
  ttl: number;
}): bigint {
  optionsObject(f, "fields");
  bigintArg(f.baseVa, "baseVa");
  intArg(f.asid, "asid", 0, 0xffff);
  intArg(f.scale, "scale", 0, 4);
  intArg(f.num, "num", 0, 31);
  intArg(f.ttl, "ttl", 0, 3);
  let x = (f.baseVa >> PAGE_SHIFT) & RANGE_BADDR_MASK;
  x |= BigInt(f.ttl) << RANGE_TTL_SHIFT;
  x |= BigInt(f.num) << RANGE_NUM_SHIFT;
  x |= BigInt(f.scale) << RANGE_SCALE_SHIFT;
  x |= BigInt(TLBI_GRANULE_4K) << RANGE_TG_SHIFT;
  x |= BigInt(f.asid) << ASID_SHIFT;
  return x & U64_MASK;
}
