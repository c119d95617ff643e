// Linux arm64 range TLB invalidation, replayed as the list of TLBI instructions
// it issues: arch/arm64/include/asm/tlbflush.h (__flush_tlb_range,
// __flush_tlb_range_op) and the KVM stage-2 callers (arch/arm64/kvm/hyp/pgtable.c
// kvm_tlb_flush_vmid_range, hyp/{vhe,nvhe}/tlb.c __kvm_tlb_flush_vmid_range).
// Follows arch/arm64/include/asm/tlbflush.h and hyp/vhe/tlb.c (KVM sequences,
// the v6.5/v6.6 ascending loop, including its latent MAX_TLBI_RANGE_PAGES bug)
// and the v6.9+ descending loop of tlbflush.h (the LPA2 rework with Gavin
// Shan's "arm64: tlb: Fix TLBI RANGE operand" and "arm64: tlb: Allow range
// operation for MAX_TLBI_RANGE_PAGES"). 4 KiB pages, no LPA2 (so no 64 KiB
// alignment peel), no TLBI repeat errata. DSB/ISB barriers and VMID context switches are
// implied by each sequence and not listed.

import { encodeTlbiRange, encodeTlbiVa, tlbiRangePages, type TlbiOp } from "./tlbi.js";
import { bigintRangeArg, boolArg, enumArg, optBoolArg, optionsObject, show } from "../validate.js";

/** One TLBI instruction as issued: its name and its Xt operand (unsigned 64-bit). */
export interface TlbiCall {
  op: TlbiOp;
  operand: bigint;
}

/**
 * Which kernel's loop to replay. 'v6.6' = v6.5 __flush_tlb_range = v6.6
 * __flush_tlb_range_op (tlbflush.h as of v6.6). 'v6.9' = the descending loop after the LPA2
 * rework plus "Fix TLBI RANGE operand" and "Allow range operation for
 * MAX_TLBI_RANGE_PAGES" (tlbflush.h as of v6.9).
 */
export type LinuxTlbVariant = "v6.6" | "v6.9";

/** PAGE_SIZE with 4 KiB pages. */
export const PAGE_SIZE = 4096n;
const PAGE_SHIFT = 12n;

/**
 * MAX_TLBI_OPS = PTRS_PER_PTE (512 with 4 KiB pages; MAX_DVM_OPS from v6.7):
 * without FEAT_TLBIRANGE, a range of this many strides or more is cheaper to
 * drop with one ASID-wide flush than with one DVM message per stride.
 */
export const MAX_TLBI_OPS = 512n;

/** MAX_TLBI_RANGE_PAGES = __TLBI_RANGE_PAGES(31, 3) = 2^21 pages (8 GiB): the most one range op covers. */
export const MAX_TLBI_RANGE_PAGES = tlbiRangePages(31, 3);

/** USER_ASID_FLAG: with KPTI the user half of an mm runs under ASID | 1 (operand bit 48). */
export const USER_ASID_FLAG = 1n << 48n;

/** The non-range ops the Linux loop accepts; each has an R… range twin. */
export type RangeableTlbiOp =
  | "VAE1IS" | "VALE1IS" | "VAAE1IS" | "VAALE1IS" | "IPAS2E1IS" | "IPAS2LE1IS";

const RANGE_TWIN: Readonly<Record<RangeableTlbiOp, TlbiOp>> = {
  VAE1IS: "RVAE1IS",
  VALE1IS: "RVALE1IS",
  VAAE1IS: "RVAAE1IS",
  VAALE1IS: "RVAALE1IS",
  IPAS2E1IS: "RIPAS2E1IS",
  IPAS2LE1IS: "RIPAS2LE1IS",
};

/**
 * Linux __TLBI_RANGE_NUM(pages, scale): the NUM field for `pages` at `scale`,
 * −1 meaning "no range op at this scale".
 *
 * 'v6.6': ((pages >> (5·scale+1)) & 31) − 1, values −1..30. Only the five bits
 * of `pages` that belong to this scale count, so a count of exactly 2^21 gives
 * −1 at every scale 0..3.
 * 'v6.9': (min(pages, __TLBI_RANGE_PAGES(31, scale)) >> (5·scale+1)) − 1,
 * values −1..31 (Gavin Shan's fix).
 *
 * @param pages 4 KiB page count, ≥ 0. @param scale 0 or more (a negative scale
 * is a shift by a negative amount in C, undefined; this throws instead).
 */
export function tlbiRangeNum(pages: bigint, scale: number, variant: LinuxTlbVariant): number {
  if (!Number.isInteger(scale) || scale < 0) throw new RangeError(`TLBI range scale ${scale} < 0`);
  const shift = BigInt(5 * scale + 1);
  if (variant === "v6.6") return Number((pages >> shift) & 31n) - 1;
  const capped = pages < tlbiRangePages(31, scale) ? pages : tlbiRangePages(31, scale);
  return Number(capped >> shift) - 1;
}

/** Inputs of `flushTlbRangeOp`, named after the __flush_tlb_range_op parameters. */
export interface FlushTlbRangeOpOptions {
  /** The non-range op; range ops use its R… twin. */
  op: RangeableTlbiOp;
  /** Byte address of the first page (VA, or IPA for IPAS2*), stride-aligned by the caller. */
  start: bigint;
  /** 4 KiB pages to invalidate, 0..MAX_TLBI_RANGE_PAGES, a multiple of stride/4096. */
  pages: bigint;
  /** Step of the non-range ops in bytes: a power of two ≥ 4096. */
  stride: bigint;
  /** ASID in operand[63:48]; 0 for IPA ops. */
  asid: number;
  /** Leaf level 1–3 as a TTL hint, 0 = no hint. */
  tlbLevel: number;
  /** tlbi_user: repeat every op for the KPTI user ASID (operand | USER_ASID_FLAG). */
  tlbiUser: boolean;
  /** system_supports_tlb_range(): FEAT_TLBIRANGE present. */
  tlbRange: boolean;
  variant: LinuxTlbVariant;
  /** ARM64_HAS_ARMv8_4_TTL: insert tlbLevel into non-range operands. Default true. */
  featTtl?: boolean;
}

/**
 * The core loop, Linux __flush_tlb_range_op (the inline loop of v6.5
 * __flush_tlb_range). Returns the TLBIs in issue order; pure.
 *
 * v6.6, ascending (tlbflush.h v6.6):
 *  1. scale = 0.
 *  2. While pages > 0:
 *     a. If !tlbRange or pages is odd: one non-range op at `start` (with the
 *        TTL hint if featTtl and tlbLevel ≠ 0); start += stride;
 *        pages −= stride/4096; next iteration (scale unchanged).
 *     b. num = __TLBI_RANGE_NUM(pages, scale) (v6.6 form). If num ≥ 0: one
 *        range op (start, scale, num, TTL = tlbLevel); advance start and
 *        pages by __TLBI_RANGE_PAGES(num, scale).
 *     c. scale += 1.
 *  The odd page is peeled at the low end; ops go from low to high address.
 *  With pages = 2^21 exactly, scales 0–3 all give num = −1 and scale 4
 *  produces an operand whose SCALE spills into TG: 0x4000_0000_0000 | base,
 *  which decodes as 2 pages (the latent bug; only KVM reaches it).
 *
 * v6.9, descending (tlbflush.h v6.9):
 *  1. scale = 3.
 *  2. While pages > 0:
 *     a. If !tlbRange or pages = 1: one non-range op, as in v6.6 step 2a.
 *     b. num = __TLBI_RANGE_NUM(pages, scale) (min() form). If num ≥ 0: one
 *        range op as in v6.6 step 2b.
 *     c. scale −= 1.
 *  Each scale takes the largest multiple of its unit that fits; a leftover
 *  odd page is flushed last, at the high end. Ops still go low to high.
 *
 * Every op is followed by its KPTI user copy when tlbiUser.
 *
 * @throws RangeError when pages > MAX_TLBI_RANGE_PAGES (no Linux caller does
 *         that: the v6.6 loop would never end), pages is not a multiple of
 *         stride/4096, or stride / tlbLevel / asid are out of range.
 */
export function flushTlbRangeOp(o: FlushTlbRangeOpOptions): TlbiCall[] {
  optionsObject(o, "opts");
  enumArg(o.op, "op", RANGE_TWIN);
  address(o.start, "start");
  bigintRangeArg(o.pages, "pages", 0n, 1n << 64n);
  boolArg(o.tlbiUser, "tlbiUser");
  boolArg(o.tlbRange, "tlbRange");
  enumArg(o.variant, "variant", VARIANTS);
  optBoolArg(o.featTtl, "featTtl", true);
  checkStride(o.stride);
  checkLevel(o.tlbLevel);
  checkAsid(o.asid);
  const stridePages = o.stride >> PAGE_SHIFT;
  if (o.pages < 0n || o.pages > MAX_TLBI_RANGE_PAGES) {
    throw new RangeError(`vmmu: __flush_tlb_range_op: ${o.pages} pages outside 0..${MAX_TLBI_RANGE_PAGES}`);
  }
  if (o.pages % stridePages !== 0n) {
    throw new RangeError(`vmmu: __flush_tlb_range_op: pages (${o.pages}) is not a multiple of the ${o.stride}-byte stride`);
  }
  const featTtl = o.featTtl ?? true;
  const rangeOp = RANGE_TWIN[o.op];
  const calls: TlbiCall[] = [];
  const emit = (op: TlbiOp, operand: bigint): void => {
    calls.push({ op, operand });
    if (o.tlbiUser) calls.push({ op, operand: operand | USER_ASID_FLAG });
  };

  let start = o.start;
  let pages = o.pages;
  const ascending = o.variant === "v6.6";
  let scale = ascending ? 0 : 3;
  while (pages > 0n) {
    const single = !o.tlbRange || (ascending ? pages % 2n === 1n : pages === 1n);
    if (single) {
      emit(o.op, encodeTlbiVa(start, o.asid, featTtl ? o.tlbLevel : 0));
      start += o.stride;
      pages -= stridePages;
      continue;
    }
    if (scale < 0 || scale > 4) {
      throw new Error(`__flush_tlb_range_op: scale ${scale} with ${pages} pages left (unreachable)`);
    }
    const num = tlbiRangeNum(pages, scale, o.variant);
    if (num >= 0) {
      emit(rangeOp, encodeTlbiRange({ baseVa: start, asid: o.asid, scale, num, ttl: o.tlbLevel }));
      const covered = tlbiRangePages(num, scale);
      start += covered << PAGE_SHIFT;
      pages -= covered;
    }
    scale += ascending ? 1 : -1;
  }
  return calls;
}

/** Options of `linuxFlushTlbRange`: give either `pages` or an exclusive `end`. */
export type LinuxFlushTlbRangeOptions = {
  /** First byte address (VA; IPA when stage2); rounded down to the stride. */
  start: bigint;
  /** Step in bytes: PAGE_SIZE (default), PMD_SIZE, … — a power of two ≥ 4096. */
  stride?: bigint;
  /** ASID of the mm, u16; default 0. Forced to 0 for stage2. */
  asid?: number;
  /** Use the leaf-only ops (VALE1IS/RVALE1IS; IPAS2LE1IS/RIPAS2LE1IS for stage2). */
  lastLevel?: boolean;
  /** Leaf level hint 1–3; 0 or undefined = no hint (v6.9's TLBI_TTL_UNKNOWN). */
  tlbLevel?: number;
  /** system_supports_tlb_range(): FEAT_TLBIRANGE present. */
  tlbRange: boolean;
  /** IPAS2E1IS/RIPAS2E1IS with ASID 0 (KVM __flush_s2_tlb_range_op); flush-all is VMALLS12E1IS. */
  stage2?: boolean;
  /** Default 'v6.6'. */
  variant?: LinuxTlbVariant;
  /** arm64_kernel_unmapped_at_el0(): repeat every stage-1 op for the user ASID. */
  kpti?: boolean;
  /** ARM64_HAS_ARMv8_4_TTL; default true. */
  featTtl?: boolean;
} & ({ pages: bigint; end?: undefined } | { end: bigint; pages?: undefined });

/**
 * Linux __flush_tlb_range(vma, start, end, stride, last_level, tlb_level)
 * (v6.5; v6.6 body = __flush_tlb_range_op; v6.9 = __flush_tlb_range_nosync +
 * dsb), as the TLBIs it issues. Pure.
 *
 *  1. end = opts.end, or start + pages·4096; start = round_down(start, stride);
 *     end = round_up(end, stride); pages = (end − start) / 4096.
 *  2. If (!tlbRange and end − start ≥ MAX_TLBI_OPS·stride) or
 *     pages ≥ MAX_TLBI_RANGE_PAGES (v6.9: pages > MAX_TLBI_RANGE_PAGES):
 *     flush_tlb_mm() = ASIDE1IS with ASID << 48 (plus the KPTI user copy);
 *     for stage2 VMALLS12E1IS instead. Stop.
 *  3. op = lastLevel ? VALE1IS : VAE1IS (stage2: IPAS2LE1IS : IPAS2E1IS);
 *     run `flushTlbRangeOp` (__flush_tlb_range_op) with tlbi_user = kpti
 *     (never for stage2).
 *
 * So in v6.6 exactly 2^21 pages becomes a full ASID flush here; the buggy
 * 2^21-page loop is reachable only through `kvmTlbFlushVmidRange`.
 *
 * @throws RangeError for both or neither of pages/end, end < start, or an
 *         invalid stride, level or ASID.
 */
export function linuxFlushTlbRange(opts: LinuxFlushTlbRangeOptions): TlbiCall[] {
  optionsObject(opts, "opts");
  address(opts.start, "start");
  const stride = opts.stride === undefined ? PAGE_SIZE : opts.stride;
  const variant = opts.variant === undefined ? "v6.6" : enumArg(opts.variant, "variant", VARIANTS);
  const stage2 = optBoolArg(opts.stage2, "stage2", false);
  checkAsid(opts.asid === undefined ? 0 : opts.asid);
  const asid = stage2 ? 0 : (opts.asid ?? 0);
  const tlbLevel = opts.tlbLevel === undefined ? 0 : opts.tlbLevel;
  const kpti = optBoolArg(opts.kpti, "kpti", false) && !stage2;
  boolArg(opts.tlbRange, "tlbRange");
  optBoolArg(opts.lastLevel, "lastLevel", false);
  optBoolArg(opts.featTtl, "featTtl", true);
  checkStride(stride);
  checkLevel(tlbLevel);
  if ((opts.pages === undefined) === (opts.end === undefined)) {
    throw new RangeError("vmmu: linuxFlushTlbRange: give exactly one of pages and end");
  }
  if (opts.pages !== undefined) bigintRangeArg(opts.pages, "pages", 0n, 1n << 64n, "a page count ≥ 0 (a bigint)");
  if (opts.end !== undefined) address(opts.end, "end");
  const rawEnd = opts.end ?? opts.start + (opts.pages! << PAGE_SHIFT);
  if (rawEnd < opts.start) throw new RangeError("vmmu: linuxFlushTlbRange: end < start");

  const start = roundDown(opts.start, stride);
  const end = roundUp(rawEnd, stride);
  const pages = (end - start) >> PAGE_SHIFT;

  const tooManyOps = !opts.tlbRange && end - start >= MAX_TLBI_OPS * stride;
  const tooManyPages = variant === "v6.6" ? pages >= MAX_TLBI_RANGE_PAGES : pages > MAX_TLBI_RANGE_PAGES;
  if (tooManyOps || tooManyPages) {
    if (stage2) return [{ op: "VMALLS12E1IS", operand: 0n }];
    const operand = encodeTlbiVa(0n, asid);
    const calls: TlbiCall[] = [{ op: "ASIDE1IS", operand }];
    if (kpti) calls.push({ op: "ASIDE1IS", operand: operand | USER_ASID_FLAG });
    return calls;
  }

  const lastLevel = opts.lastLevel ?? false;
  const op: RangeableTlbiOp = stage2
    ? (lastLevel ? "IPAS2LE1IS" : "IPAS2E1IS")
    : (lastLevel ? "VALE1IS" : "VAE1IS");
  return flushTlbRangeOp({
    op, start, pages, stride, asid, tlbLevel, tlbiUser: kpti,
    tlbRange: opts.tlbRange, variant, featTtl: opts.featTtl ?? true,
  });
}

/**
 * KVM kvm_tlb_flush_vmid_range(mmu, addr, size) (v6.6 arch/arm64/kvm/hyp/pgtable.c), as
 * the TLBIs it issues for one VMID. Pure.
 *
 *  1. Without FEAT_TLBIRANGE: __kvm_tlb_flush_vmid = one VMALLS12E1IS, for
 *     any size (even 0 or one page). Stop.
 *  2. pages = size / 4096. While pages > 0: chunk = min(pages,
 *     MAX_TLBI_RANGE_PAGES); __kvm_tlb_flush_vmid_range(addr, chunk);
 *     addr += chunk·4096; pages −= chunk.
 *
 * __kvm_tlb_flush_vmid_range(start, pages):
 *  1. stride = PAGE_SIZE; start = round_down(start, stride).
 *  2. __flush_s2_tlb_range_op(ipas2e1is, start, pages, stride, no TTL) =
 *     `flushTlbRangeOp` with IPAS2E1IS/RIPAS2E1IS, ASID 0, no user copy.
 *  3. VMALLE1IS (IPA ops need not hit combined S1+S2 entries).
 *
 * There is no flush-all threshold: an 8 GiB chunk goes straight into the
 * loop, which in v6.6 emits the buggy 2-page operand (flushTlbRangeOp, v6.6).
 *
 * @param opts.start IPA in bytes. @param opts.size bytes; the sub-page
 *        remainder is dropped (size >> 12), as in the kernel.
 * @throws RangeError for a negative size.
 */
export function kvmTlbFlushVmidRange(opts: {
  start: bigint;
  size: bigint;
  tlbRange: boolean;
  variant?: LinuxTlbVariant;
}): TlbiCall[] {
  optionsObject(opts, "opts");
  address(opts.start, "start");
  bigintRangeArg(opts.size, "size", 0n, 1n << 64n, "a byte count ≥ 0 (a bigint)");
  boolArg(opts.tlbRange, "tlbRange");
  const variant = opts.variant === undefined ? "v6.6" : enumArg(opts.variant, "variant", VARIANTS);
  if (!opts.tlbRange) return [{ op: "VMALLS12E1IS", operand: 0n }];
  const calls: TlbiCall[] = [];
  let addr = opts.start;
  let pages = opts.size >> PAGE_SHIFT;
  while (pages > 0n) {
    const chunk = pages < MAX_TLBI_RANGE_PAGES ? pages : MAX_TLBI_RANGE_PAGES;
    calls.push(
      ...flushTlbRangeOp({
        op: "IPAS2E1IS", start: roundDown(addr, PAGE_SIZE), pages: chunk, stride: PAGE_SIZE,
        asid: 0, tlbLevel: 0, tlbiUser: false, tlbRange: true, variant,
      }),
      { op: "VMALLE1IS", operand: 0n },
    );
    addr += chunk << PAGE_SHIFT;
    pages -= chunk;
  }
  return calls;
}

function roundDown(x: bigint, align: bigint): bigint {
  return x & ~(align - 1n);
}

function roundUp(x: bigint, align: bigint): bigint {
  return (x + align - 1n) & ~(align - 1n);
}

const VARIANTS: readonly LinuxTlbVariant[] = ["v6.6", "v6.9"];

/** A byte address: a bigint in 0..2^64−1. */
function address(v: unknown, name: string): void {
  bigintRangeArg(v, name, 0n, (1n << 64n) - 1n, "an address 0..2^64−1 (a bigint)");
}

function checkStride(stride: unknown): void {
  if (typeof stride !== "bigint") throw new TypeError(`vmmu: stride must be a bigint power of two ≥ ${PAGE_SIZE}, got ${show(stride)}`);
  if (stride < PAGE_SIZE || (stride & (stride - 1n)) !== 0n) {
    throw new RangeError(`vmmu: TLB flush stride ${stride} is not a power of two ≥ ${PAGE_SIZE}`);
  }
}

function checkLevel(level: unknown): void {
  if (typeof level !== "number") throw new TypeError(`vmmu: tlbLevel must be a level hint 0..3, got ${show(level)}`);
  if (!Number.isInteger(level) || level < 0 || level > 3) {
    throw new RangeError(`vmmu: tlbLevel (TLB level hint) ${level} outside 0..3`);
  }
}

function checkAsid(asid: unknown): void {
  if (typeof asid !== "number") throw new TypeError(`vmmu: asid must be an ASID 0..0xffff, got ${show(asid)}`);
  if (!Number.isInteger(asid) || asid < 0 || asid > 0xffff) {
    throw new RangeError(`vmmu: asid: ASID ${asid} outside 0..0xffff`);
  }
}
