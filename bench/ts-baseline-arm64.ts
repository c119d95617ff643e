// Plain-TypeScript baseline for the arm64 translation benchmarks: the wasm
// core's algorithm (assembly/arm64/mmu.ts, assembly/tlb.ts, assembly/phys.ts),
// step for step, over typed arrays holding a copy of the same guest RAM and
// TLB bytes. Arm ARM DDI 0487 D8 (AArch64.S1Translate, AArch64.S2Translate,
// AArch64.S1CheckPermissions, FEAT_HAFDBS) as pinned down in
// docs/arm64-walk-contract.md.
//
// 64-bit quantities are handled as u32 halves (lo, hi), as in the x86
// baseline (bench/ts-baseline.ts):
//   - a TLB key compare is two u32 compares;
//   - descriptor fields are tested on the half they live in (AF, AP, nG in
//     the low word; DBM, PXN, UXN, XN, the table attributes in the high one);
//   - table and output addresses keep bits 47:12, so the high half is 16 bits
//     and a descriptor address is table | index·8 (the table is aligned to
//     the size of its index range, so the add never carries);
//   - the host offset of a descriptor is an exact double (< 2^48).
// The hardware AF/DBM compare-exchange uses Atomics on a BigInt64Array view
// of the same bytes; in steady state (AF set, no DBM) it never runs.

/** Everything the arm64 baselines need to reproduce one wasm scenario. */
export interface Arm64Snapshot {
  regs: { ttbr0: bigint; ttbr1: bigint; tcr: bigint; sctlr: bigint; vttbr: bigint; vtcr: bigint; hcr: bigint; pan: boolean };
  tlbOn: boolean;
  /** Live tags of the current ASID context, the VMID's global context and its stage-2-only context (0: none). */
  curTag: number;
  globTag: number;
  globLive: boolean;
  s2Tag: number;
  /** Copy of guest RAM bytes [imageBase, imageBase + image.length): where the tables live. */
  imageBase: bigint;
  image: Uint8Array;
  /** Copy of the vCPU's TLB array (tlbEntries × 32 bytes). */
  tlb: Uint8Array;
  tlbEntries: number;
}

const STATUS_OK = 0, STATUS_ARM_FAULT = 4, STATUS_EACCESS = 5;
const FK_TRANSLATION = 1, FK_ADDRESS_SIZE = 2, FK_ACCESS_FLAG = 3, FK_PERMISSION = 4, FK_EXTERNAL = 5;
const C_LOOKUPS = 0, C_HITS = 1, C_MISSES = 2, C_WALKS = 3, C_PT_REFS = 4, C_AD_WRITES = 5, C_WALK_RETRIES = 6;
const C_FILLS = 7, C_EVICTIONS = 8, C_DROPPED = 13, C_FAULTS = 14;
/** Counter indices, as in assembly/layout.ts. */
export const COUNTER = { lookups: C_LOOKUPS, hits: C_HITS, misses: C_MISSES, walks: C_WALKS, ptRefs: C_PT_REFS, adWrites: C_AD_WRITES } as const;

const BATCH_MAX = 16384;
const BS_STATUS_SHIFT = 28, BS_PSHIFT_SHIFT = 16, BS_LEVEL_SHIFT = 8;
const A_GLOBAL = 1 << 23, A_PSHIFT_SHIFT = 24, A_LEVEL_SHIFT = 29;
const ARM_READ = 0, ARM_WRITE = 1, ARM_FETCH = 2;
const AWALK_UPDATE = 1, AWALK_DEBUG = 2, AWALK_NOTLB = 4;
const RETRY = 0xff;
const FF_S1PTW = 1, FF_WRITE = 2;
const TWO32 = 4294967296;

// Descriptor bits, by half. Low word:
const D_VALID = 1, D_TABLE = 2, D_AP1 = 1 << 6, D_AP2 = 1 << 7, D_S2AP_R = 1 << 6, D_S2AP_W = 1 << 7, D_AF = 1 << 10, D_NG = 1 << 11;
const D_ADDR_LO = 0xfffff000, D_ADDR_HI = 0xffff;
// High word (bit − 32):
const DH_DBM = 1 << 19, DH_PXN = 1 << 21, DH_UXN = 1 << 22, DH_S2XN_SHIFT = 21;
const DH_PXNTABLE = 1 << 27, DH_UXNTABLE = 1 << 28, DH_APTABLE0 = 1 << 29, DH_APTABLE1 = 1 << 30;
const DH_TABLE_ATTRS = DH_PXNTABLE | DH_UXNTABLE | DH_APTABLE0 | DH_APTABLE1;
// TCR_EL1 bits: low word EPD0 7, EPD1 23; high word (bit − 32):
const TCR_EPD0 = 1 << 7, TCR_EPD1 = 1 << 23;
const TCRH_TBI0 = 1 << 5, TCRH_TBI1 = 1 << 6, TCRH_HA = 1 << 7, TCRH_HD = 1 << 8, TCRH_HPD0 = 1 << 9, TCRH_HPD1 = 1 << 10;
const TCRH_TBID0 = 1 << 19, TCRH_TBID1 = 1 << 20, TCRH_E0PD0 = 1 << 23, TCRH_E0PD1 = 1 << 24;
const AL_EL0_R = 1 << 0, AL_EL0_W = 1 << 1, AL_EL0_X = 1 << 2, AL_EL1_R = 1 << 3, AL_EL1_W = 1 << 4, AL_EL1_X = 1 << 5;
const AL_EL1P_R = 1 << 6, AL_EL1P_W = 1 << 7;
const S2AL_R = 1 << 0, S2AL_W = 1 << 1, S2AL_X0 = 1 << 2, S2AL_X1 = 1 << 3, S2AL_DEVICE = 1 << 4;

const lo32 = (v: bigint): number => Number(BigInt.asUintN(32, v));
const hi32 = (v: bigint): number => Number(BigInt.asUintN(32, v >> 32n));
const levelShift = (level: number): number => 12 + 9 * (3 - level);

function paBitsOf(ps: number): number {
  switch (ps & 7) {
    case 0: return 32;
    case 1: return 36;
    case 2: return 40;
    case 3: return 42;
    case 4: return 44;
    default: return 48;
  }
}

/** True iff the 64-bit value (lo, hi) has a bit set at or above `bits` (32..48). */
function above(lo: number, hi: number, bits: number): boolean {
  return bits >= 32 ? (hi >>> (bits - 32)) !== 0 : hi !== 0 || (lo >>> bits) !== 0;
}

/** (lo, hi) >> shift, low 16 bits, for shift 12..39. */
function indexAt(lo: number, hi: number, shift: number): number {
  return shift >= 32 ? hi >>> (shift - 32) : (lo >>> shift) | (hi << (32 - shift));
}

/** The arm64 translation core of one vCPU in plain TS. */
export class TsArm64Mmu {
  /** Batch area, as in the wasm vCPU block: va and pa as (lo, hi) u32 pairs. */
  readonly va = new Uint32Array(BATCH_MAX * 2);
  readonly access = new Uint8Array(BATCH_MAX);
  readonly pa = new Uint32Array(BATCH_MAX * 2);
  readonly status = new Uint32Array(BATCH_MAX);
  /** Counters, indexed like the wasm C_* counters. */
  readonly counters = new Float64Array(17);
  /** Result record of the last single translate: pa lo, pa hi, ipa lo, ipa hi, status, level, shift, fsc. */
  readonly result = new Uint32Array(8);

  private readonly ram: Uint32Array;
  private readonly ram64: BigInt64Array;
  private readonly slotBase: number;
  private readonly eagerBytes: number;
  private readonly tlb: Uint32Array;
  private readonly tlbMask: number;
  private readonly curKeyHi: number;
  private readonly curSalt: number;
  private readonly globKeyHi: number;
  private readonly globSalt: number;
  private globLive: boolean;
  private readonly s2Tag: number;

  private ttbr0Lo = 0; private ttbr0Hi = 0;
  private ttbr1Lo = 0; private ttbr1Hi = 0;
  private tcrLo = 0; private tcrHi = 0;
  private vttbrLo = 0; private vttbrHi = 0;
  private s1On = false; private s2On = false; private pan = false; private wxn = false; private ptwDevice = false;
  private ha = false; private hd = false; private s2ha = false; private s2hd = false;
  private oaBits = 48; private s2OaBits = 48; private s2IpaBits = 48; private s2Start = 0; private s2TopBits = 9;
  private tlbOn = true;

  private aPaLo = 0; private aPaHi = 0; private aIpaLo = 0; private aIpaHi = 0;
  private aLevel = 0; private aShift = 0; private aFsc = 0; private aStage = 0; private aFlags = 0; private aKind = 0;
  private aAttr = 0; private aS1Shift = 12;
  private s2PaLo = 0; private s2PaHi = 0; private s2Shift = 0; private s2Allow = 0; private s2Level = 0;

  constructor(s: Arm64Snapshot) {
    const img = new Uint8Array(s.image.length);
    img.set(s.image);
    this.ram = new Uint32Array(img.buffer);
    this.ram64 = new BigInt64Array(img.buffer);
    this.slotBase = Number(s.imageBase);
    this.eagerBytes = s.image.length;
    const t = new Uint8Array(s.tlb.length);
    t.set(s.tlb);
    this.tlb = new Uint32Array(t.buffer);
    this.tlbMask = s.tlbEntries - 1;
    this.curKeyHi = (s.curTag << 16) >>> 0;
    this.curSalt = Math.imul(s.curTag, 0x9e3779b1) >>> 0;
    this.globKeyHi = (s.globTag << 16) >>> 0;
    this.globSalt = Math.imul(s.globTag, 0x9e3779b1) >>> 0;
    this.globLive = s.globLive;
    this.s2Tag = s.s2Tag;
    const rc = this.loadRegs(s);
    if (rc !== 0) throw new Error(`ts-baseline-arm64: registers rejected (${rc})`);
  }

  /** armLoadRegs. */
  private loadRegs(s: Arm64Snapshot): number {
    const r = s.regs;
    this.ttbr0Lo = lo32(r.ttbr0); this.ttbr0Hi = hi32(r.ttbr0);
    this.ttbr1Lo = lo32(r.ttbr1); this.ttbr1Hi = hi32(r.ttbr1);
    this.tcrLo = lo32(r.tcr); this.tcrHi = hi32(r.tcr);
    this.vttbrLo = lo32(r.vttbr); this.vttbrHi = hi32(r.vttbr);
    const vtcr = lo32(r.vtcr);
    this.pan = r.pan;
    this.tlbOn = s.tlbOn;
    this.s1On = (r.sctlr & 1n) !== 0n;
    this.s2On = (r.hcr & 1n) !== 0n;
    this.wxn = (r.sctlr & (1n << 19n)) !== 0n;
    this.ptwDevice = (r.hcr & 4n) !== 0n;
    this.ha = (this.tcrHi & TCRH_HA) !== 0;
    this.hd = this.ha && (this.tcrHi & TCRH_HD) !== 0;
    this.oaBits = paBitsOf(this.tcrHi);
    if (this.s1On) {
      if (((this.tcrLo >>> 14) & 3) !== 0 || ((this.tcrLo >>> 30) & 3) !== 2) return 1;
      const t0 = this.tcrLo & 63, t1 = (this.tcrLo >>> 16) & 63;
      if (t0 < 16 || t0 > 39 || t1 < 16 || t1 > 39) return 2;
    }
    if (this.s2On) {
      if (((vtcr >>> 14) & 3) !== 0) return 1;
      const t0 = vtcr & 63;
      if (t0 < 16 || t0 > 39) return 2;
      const sl0 = (vtcr >>> 6) & 3;
      if (sl0 === 3) return 3;
      this.s2IpaBits = 64 - t0;
      this.s2Start = 2 - sl0;
      const top = this.s2IpaBits - levelShift(this.s2Start);
      if (top < 1 || top > 13) return 3;
      this.s2TopBits = top;
      this.s2OaBits = paBitsOf(vtcr >>> 16);
      this.s2ha = (vtcr & (1 << 21)) !== 0;
      this.s2hd = this.s2ha && (vtcr & (1 << 22)) !== 0;
    }
    return 0;
  }

  private count(idx: number, n: number): void {
    const c = this.counters;
    c[idx] = c[idx]! + n;
  }

  private fault(stage: number, kind: number, level: number, flags: number): number {
    this.aStage = stage;
    this.aKind = kind;
    this.aLevel = level;
    this.aFlags = flags;
    let base = 0x04;
    if (kind === FK_ADDRESS_SIZE) base = 0x00;
    else if (kind === FK_ACCESS_FLAG) base = 0x08;
    else if (kind === FK_PERMISSION) base = 0x0c;
    else if (kind === FK_EXTERNAL) base = 0x14;
    this.aFsc = base + level;
    return STATUS_ARM_FAULT;
  }

  /** hostOf: u32 word index of the descriptor at pa (lo, hi) in the image, or -1 (outside the slot: nothing is lazy in the copy). */
  private hostOf(lo: number, hi: number): number {
    const off = hi * TWO32 + lo - this.slotBase;
    return off >= 0 && off < this.eagerBytes ? off >>> 2 : -1;
  }

  private casEntry(w: number, expLo: number, expHi: number, wantLo: number, wantHi: number): boolean {
    const exp = BigInt.asIntN(64, (BigInt(expHi >>> 0) << 32n) | BigInt(expLo >>> 0));
    const want = BigInt.asIntN(64, (BigInt(wantHi >>> 0) << 32n) | BigInt(wantLo >>> 0));
    return Atomics.compareExchange(this.ram64, w >> 1, exp, want) === exp;
  }

  // ---- stage 2 --------------------------------------------------------------

  /** s2Walk. */
  private s2Walk(ipaLo: number, ipaHi: number, access: number, el0: boolean, ptw: boolean, update: boolean): number {
    const ff = (ptw ? FF_S1PTW : 0) | (access === ARM_WRITE ? FF_WRITE : 0);
    this.aIpaLo = ipaLo;
    this.aIpaHi = ipaHi;
    if (above(ipaLo, ipaHi, this.s2IpaBits)) return this.fault(2, FK_TRANSLATION, 0, ff);
    this.count(C_WALKS, 1);
    let level = this.s2Start;
    let idxBits = this.s2TopBits;
    let tLo = (this.vttbrLo & 0xfffffffe & ~((1 << (idxBits + 3)) - 1)) >>> 0;
    let tHi = this.vttbrHi & 0xffff;
    if (above(tLo, tHi, this.s2OaBits)) return this.fault(2, FK_ADDRESS_SIZE, level, ff);
    const ram = this.ram;
    let refs = 0;
    for (;;) {
      const shift = levelShift(level);
      const w = this.hostOf((tLo | ((indexAt(ipaLo, ipaHi, shift) & ((1 << idxBits) - 1)) << 3)) >>> 0, tHi);
      if (w < 0) { this.count(C_PT_REFS, refs); return this.fault(2, FK_EXTERNAL, level, ff); }
      const dLo = ram[w]!, dHi = ram[w + 1]!;
      refs++;
      if ((dLo & D_VALID) === 0 || (level === 0 && (dLo & D_TABLE) === 0) || (level === 3 && (dLo & D_TABLE) === 0)) {
        this.count(C_PT_REFS, refs);
        return this.fault(2, FK_TRANSLATION, level, ff);
      }
      if (level < 3 && (dLo & D_TABLE) !== 0) {
        tLo = (dLo & D_ADDR_LO) >>> 0;
        tHi = dHi & D_ADDR_HI;
        if (above(tLo, tHi, this.s2OaBits)) { this.count(C_PT_REFS, refs); return this.fault(2, FK_ADDRESS_SIZE, level, ff); }
        level++;
        idxBits = 9;
        continue;
      }
      this.count(C_PT_REFS, refs);
      const pmask = (1 << shift) - 1;
      const oaLo = (dLo & D_ADDR_LO & ~pmask) >>> 0, oaHi = dHi & D_ADDR_HI;
      if (above(oaLo, oaHi, this.s2OaBits)) return this.fault(2, FK_ADDRESS_SIZE, level, ff);
      let want = dLo;
      if ((dLo & D_AF) === 0) {
        if (!this.s2ha) return this.fault(2, FK_ACCESS_FLAG, level, ff);
        want |= D_AF;
      }
      if (access === ARM_WRITE && this.s2hd && (dHi & DH_DBM) !== 0) want |= D_S2AP_W;
      const xn = (dHi >>> DH_S2XN_SHIFT) & 3;
      const device = ((dLo >>> 2) & 0xc) === 0;
      let ok: boolean;
      if (access === ARM_READ) ok = (want & D_S2AP_R) !== 0;
      else if (access === ARM_WRITE) ok = (want & D_S2AP_W) !== 0;
      else ok = el0 ? xn === 0 || xn === 1 : xn === 0 || xn === 3;
      if (!ok) return this.fault(2, FK_PERMISSION, level, ff);
      if (update && want !== dLo) {
        if (!this.casEntry(w, dLo, dHi, want, dHi)) return RETRY;
        this.count(C_AD_WRITES, 1);
      } else if (!update) {
        want = dLo;
      }
      if (ptw && this.ptwDevice && device) return this.fault(2, FK_PERMISSION, level, ff);
      this.s2PaLo = (oaLo | (ipaLo & pmask)) >>> 0;
      this.s2PaHi = oaHi;
      this.s2Shift = shift;
      this.s2Level = level;
      let allow = 0;
      if ((want & D_S2AP_R) !== 0) allow |= S2AL_R;
      if ((want & D_S2AP_W) !== 0 && (want & D_AF) !== 0) allow |= S2AL_W;
      if (xn === 0 || xn === 1) allow |= S2AL_X0;
      if (xn === 0 || xn === 3) allow |= S2AL_X1;
      if (device) allow |= S2AL_DEVICE;
      if ((want & D_AF) === 0) allow = 0;
      this.s2Allow = allow;
      return STATUS_OK;
    }
  }

  private s2Grants(allow: number, access: number, el0: boolean, ptw: boolean): boolean {
    if (ptw && this.ptwDevice && (allow & S2AL_DEVICE) !== 0) return false;
    if (access === ARM_READ) return (allow & S2AL_R) !== 0;
    if (access === ARM_WRITE) return (allow & S2AL_W) !== 0;
    return (allow & (el0 ? S2AL_X0 : S2AL_X1)) !== 0;
  }

  /** s2Translate: the stage-2-only TLB context, else a walk and a fill. */
  private s2Translate(ipaLo: number, ipaHi: number, access: number, el0: boolean, ptw: boolean, flags: number): number {
    const vpnLo = ((ipaLo >>> 12) | (ipaHi << 20)) >>> 0;
    const vpnHi = (ipaHi >>> 12) & 0x1fff;
    const useTlb = this.tlbOn && (flags & AWALK_NOTLB) === 0;
    const update = (flags & AWALK_UPDATE) !== 0;
    if (useTlb && this.s2Tag !== 0) {
      const t = this.tlb;
      const e = (((vpnLo ^ (Math.imul(this.s2Tag, 0x9e3779b1) >>> 0)) & this.tlbMask) << 3) >>> 0;
      if (t[e] === vpnLo && t[e + 1] === (((this.s2Tag << 16) | vpnHi) >>> 0)) {
        const attr = t[e + 4]!;
        if (this.s2Grants(attr & 0xff, access, el0, ptw)) {
          this.s2PaLo = (t[e + 2]! | (ipaLo & 0xfff)) >>> 0;
          this.s2PaHi = t[e + 3]!;
          this.s2Shift = (attr >>> A_PSHIFT_SHIFT) & 31;
          this.s2Level = (attr >>> A_LEVEL_SHIFT) & 7;
          this.s2Allow = attr & 0xff;
          return STATUS_OK;
        }
        this.tlbDrop(e);
      }
    }
    for (;;) {
      const s = this.s2Walk(ipaLo, ipaHi, access, el0, ptw, update);
      if (s === RETRY) { this.count(C_WALK_RETRIES, 1); continue; }
      if (s === STATUS_OK && useTlb && update && this.s2Tag !== 0) {
        const attr = this.s2Allow | (this.s2Shift << A_PSHIFT_SHIFT) | (this.s2Level << A_LEVEL_SHIFT);
        this.fillAt((this.s2Tag << 16) >>> 0, Math.imul(this.s2Tag, 0x9e3779b1) >>> 0, vpnLo, vpnHi,
          (this.s2PaLo & D_ADDR_LO) >>> 0, this.s2PaHi, attr, this.s2Shift);
      }
      return s;
    }
  }

  // ---- stage 1 --------------------------------------------------------------

  private s1AllowBits(ap1: boolean, ap2: boolean, uxn: boolean, pxn: boolean): number {
    const u = ap1 ? (ap2 ? 1 : 3) : 0;
    const k = ap2 ? 1 : 3;
    let al = 0;
    if (u & 1) al |= AL_EL0_R;
    if (u & 2) al |= AL_EL0_W;
    if (!uxn && !(this.wxn && (u & 2) !== 0)) al |= AL_EL0_X;
    al |= AL_EL1_R;
    if (k & 2) al |= AL_EL1_W;
    if (!pxn && (u & 2) === 0 && !(this.wxn && (k & 2) !== 0)) al |= AL_EL1_X;
    if (u === 0) {
      al |= AL_EL1P_R;
      if (k & 2) al |= AL_EL1P_W;
    }
    return al;
  }

  private allowBit(access: number, el0: boolean, panOn: boolean): number {
    if (el0) return AL_EL0_R << access;
    if (access === ARM_FETCH) return AL_EL1_X;
    return panOn ? AL_EL1P_R << access : AL_EL1_R << access;
  }

  /** s1DescHost: word index of the stage-1 descriptor at dipa (through stage 2), or -1 with the fault set. */
  private s1DescHost(dLo: number, dHi: number, level: number, flags: number, wr: number): number {
    let pLo = dLo, pHi = dHi;
    if (this.s2On && (flags & AWALK_DEBUG) === 0) {
      if (this.s2Translate(dLo, dHi, ARM_READ, false, true, flags) !== STATUS_OK) return -1;
      pLo = this.s2PaLo;
      pHi = this.s2PaHi;
    }
    const w = this.hostOf(pLo, pHi);
    if (w < 0) this.fault(1, FK_EXTERNAL, level, wr);
    return w;
  }

  /** s1WalkOnce: one attempt at a stage-1 (+ stage-2) translation; STATUS_* or RETRY. */
  private s1WalkOnce(lo: number, hi: number, access: number, el0: boolean, flags: number): number {
    const debug = (flags & AWALK_DEBUG) !== 0;
    const update = (flags & AWALK_UPDATE) !== 0 && !debug;
    const wr = access === ARM_WRITE ? FF_WRITE : 0;
    let ipaLo: number, ipaHi: number;
    let s1Shift = 12, s1Level = 0;
    let al = 0xff;
    let global = false;
    if (!this.s1On) {
      if ((hi >>> 16) !== 0) return this.fault(1, FK_ADDRESS_SIZE, 0, wr);
      ipaLo = lo;
      ipaHi = hi;
    } else {
      const tcrLo = this.tcrLo, tcrHi = this.tcrHi;
      const upper = ((hi >>> 23) & 1) !== 0;
      let tbi = (tcrHi & (upper ? TCRH_TBI1 : TCRH_TBI0)) !== 0;
      if (access === ARM_FETCH && (tcrHi & (upper ? TCRH_TBID1 : TCRH_TBID0)) !== 0) tbi = false;
      const tsz = (upper ? tcrLo >>> 16 : tcrLo) & 63;
      const vaBits = 64 - tsz;
      const topHi = tbi ? 0x00ffffff : 0xffffffff;
      const mHi = vaBits >= 32 ? (topHi & ~((1 << (vaBits - 32)) - 1)) >>> 0 : topHi;
      const mLo = vaBits >= 32 ? 0 : ~((1 << vaBits) - 1) >>> 0;
      const vLo = (lo & mLo) >>> 0, vHi = (hi & mHi) >>> 0;
      if (upper ? vLo !== mLo || vHi !== mHi : (vLo | vHi) !== 0) return this.fault(1, FK_TRANSLATION, 0, wr);
      if ((tcrLo & (upper ? TCR_EPD1 : TCR_EPD0)) !== 0) return this.fault(1, FK_TRANSLATION, 0, wr);
      if (el0 && (tcrHi & (upper ? TCRH_E0PD1 : TCRH_E0PD0)) !== 0) return this.fault(1, FK_TRANSLATION, 0, wr);
      let level = 4 - (((vaBits - 12 + 8) / 9) | 0);
      let idxBits = vaBits - levelShift(level);
      let tLo = ((upper ? this.ttbr1Lo : this.ttbr0Lo) & 0xfffffffe & ~((1 << (idxBits + 3)) - 1)) >>> 0;
      let tHi = (upper ? this.ttbr1Hi : this.ttbr0Hi) & D_ADDR_HI;
      if (above(tLo, tHi, this.oaBits)) return this.fault(1, FK_ADDRESS_SIZE, level, wr);
      const hpd = (tcrHi & (upper ? TCRH_HPD1 : TCRH_HPD0)) !== 0;
      const ram = this.ram;
      let tattr = 0;
      let refs = 0;
      let dLo = 0, dHi = 0, w = 0, dipaLo = 0, dipaHi = 0;
      for (;;) {
        const shift = levelShift(level);
        dipaLo = (tLo | ((indexAt(lo, hi, shift) & ((1 << idxBits) - 1)) << 3)) >>> 0;
        dipaHi = tHi;
        w = this.s1DescHost(dipaLo, dipaHi, level, flags, wr);
        if (w < 0) { this.count(C_PT_REFS, refs); return STATUS_ARM_FAULT; }
        dLo = ram[w]!;
        dHi = ram[w + 1]!;
        refs++;
        const isTable = (dLo & D_TABLE) !== 0;
        if ((dLo & D_VALID) === 0 || (level === 0 && !isTable) || (level === 3 && !isTable)) {
          this.count(C_PT_REFS, refs);
          return this.fault(1, FK_TRANSLATION, level, wr);
        }
        if (level < 3 && isTable) {
          tLo = (dLo & D_ADDR_LO) >>> 0;
          tHi = dHi & D_ADDR_HI;
          if (above(tLo, tHi, this.oaBits)) { this.count(C_PT_REFS, refs); return this.fault(1, FK_ADDRESS_SIZE, level, wr); }
          if (!hpd) tattr |= dHi & DH_TABLE_ATTRS;
          level++;
          idxBits = 9;
          continue;
        }
        break;
      }
      this.count(C_PT_REFS, refs);
      const shift = levelShift(level);
      const pmask = (1 << shift) - 1;
      const oaLo = (dLo & D_ADDR_LO & ~pmask) >>> 0, oaHi = dHi & D_ADDR_HI;
      if (above(oaLo, oaHi, this.oaBits)) return this.fault(1, FK_ADDRESS_SIZE, level, wr);
      let want = dLo;
      if ((dLo & D_AF) === 0) {
        if (!this.ha) return this.fault(1, FK_ACCESS_FLAG, level, wr);
        want |= D_AF;
      }
      if (access === ARM_WRITE && this.hd && (dHi & DH_DBM) !== 0) want &= ~D_AP2;
      const ap1 = (want & D_AP1) !== 0 && (tattr & DH_APTABLE0) === 0;
      const ap2 = (want & D_AP2) !== 0 || (tattr & DH_APTABLE1) !== 0;
      const uxn = (dHi & DH_UXN) !== 0 || (tattr & DH_UXNTABLE) !== 0;
      const pxn = (dHi & DH_PXN) !== 0 || (tattr & DH_PXNTABLE) !== 0;
      if ((this.s1AllowBits(ap1, ap2, uxn, pxn) & this.allowBit(access, el0, this.pan)) === 0) {
        return this.fault(1, FK_PERMISSION, level, wr);
      }
      if (update && want !== dLo) {
        if (this.s2On && this.s2Translate(dipaLo, dipaHi, ARM_WRITE, false, true, flags) !== STATUS_OK) { this.aFlags |= FF_WRITE; return STATUS_ARM_FAULT; }
        if (!this.casEntry(w, dLo, dHi, want, dHi)) return RETRY;
        this.count(C_AD_WRITES, 1);
      }
      const fin = update ? want : dLo;
      al = (fin & D_AF) !== 0
        ? this.s1AllowBits((fin & D_AP1) !== 0 && (tattr & DH_APTABLE0) === 0, (fin & D_AP2) !== 0 || (tattr & DH_APTABLE1) !== 0, uxn, pxn)
        : 0;
      ipaLo = (oaLo | (lo & pmask)) >>> 0;
      ipaHi = oaHi;
      s1Shift = shift;
      s1Level = level;
      global = (dLo & D_NG) === 0;
    }
    this.aIpaLo = ipaLo;
    this.aIpaHi = ipaHi;
    let paLo = ipaLo, paHi = ipaHi;
    let shiftOut = s1Shift;
    if (this.s2On && !debug) {
      const s = this.s2Translate(ipaLo, ipaHi, access, el0, false, flags);
      if (s !== STATUS_OK) return s;
      paLo = this.s2PaLo;
      paHi = this.s2PaHi;
      if (this.s2Shift < shiftOut || !this.s1On) shiftOut = this.s2Shift;
      if (!this.s1On) s1Level = this.s2Level;
      const s2a = this.s2Allow;
      let c = 0;
      if (s2a & S2AL_R) c |= AL_EL0_R | AL_EL1_R | AL_EL1P_R;
      if (s2a & S2AL_W) c |= AL_EL0_W | AL_EL1_W | AL_EL1P_W;
      if (s2a & S2AL_X0) c |= AL_EL0_X;
      if (s2a & S2AL_X1) c |= AL_EL1_X;
      al &= c;
    }
    this.aPaLo = paLo;
    this.aPaHi = paHi;
    this.aShift = shiftOut;
    this.aS1Shift = s1Shift;
    this.aLevel = s1Level;
    this.aAttr = al | (global ? A_GLOBAL : 0);
    return STATUS_OK;
  }

  private s1Walk(lo: number, hi: number, access: number, el0: boolean, flags: number): number {
    if (this.s1On) this.count(C_WALKS, 1);
    for (;;) {
      const s = this.s1WalkOnce(lo, hi, access, el0, flags);
      if (s !== RETRY) return s;
      this.count(C_WALK_RETRIES, 1);
    }
  }

  // ---- TLB --------------------------------------------------------------------

  /** fillAt, without the per-context live accounting (never on a measured path). */
  private fillAt(keyHi: number, salt: number, vpnLo: number, vpnHi: number, paLo: number, paHi: number, attr: number, reportShift: number): void {
    const e = (((vpnLo ^ salt) & this.tlbMask) << 3) >>> 0;
    const t = this.tlb;
    if ((t[e]! | t[e + 1]!) !== 0) this.count(C_EVICTIONS, 1);
    t[e] = vpnLo;
    t[e + 1] = keyHi | vpnHi;
    t[e + 2] = paLo;
    t[e + 3] = paHi;
    t[e + 4] = attr;
    t[e + 5] = 0;
    t[e + 6] = (reportShift << BS_PSHIFT_SHIFT) | (((attr >>> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT);
    this.count(C_FILLS, 1);
  }

  private tlbDrop(e: number): void {
    this.tlb[e] = 0;
    this.tlb[e + 1] = 0;
    this.count(C_DROPPED, 1);
  }

  // ---- translate ----------------------------------------------------------------

  /** armTranslateSlow: TLB (current ASID context, then the VMID's global one), else the combined walk and a fill. */
  private translateSlow(lo: number, hi: number, access: number, el0: boolean): number {
    const top = (hi | 0) >> 23;
    let canonical = top === 0 || top === -1;
    let vaKeyHi = hi;
    if (!canonical) {
      const upper = ((hi >>> 23) & 1) !== 0;
      const tbi = (this.tcrHi & (upper ? TCRH_TBI1 : TCRH_TBI0)) !== 0
        && !(access === ARM_FETCH && (this.tcrHi & (upper ? TCRH_TBID1 : TCRH_TBID0)) !== 0);
      if (tbi) { vaKeyHi = (hi << 8) >> 8; canonical = true; }
    }
    const e0pd = el0 && (this.tcrHi & (((hi >>> 23) & 1) !== 0 ? TCRH_E0PD1 : TCRH_E0PD0)) !== 0;
    if (this.tlbOn && this.s1On && canonical && !e0pd) {
      const vpnLo = ((lo >>> 12) | (vaKeyHi << 20)) >>> 0;
      const vpnHi = (vaKeyHi >>> 12) & 0x1fff;
      this.count(C_LOOKUPS, 1);
      const t = this.tlb;
      let e = (((vpnLo ^ this.curSalt) & this.tlbMask) << 3) >>> 0;
      let hit = t[e] === vpnLo && t[e + 1] === ((this.curKeyHi | vpnHi) >>> 0);
      if (!hit && this.globLive) {
        e = (((vpnLo ^ this.globSalt) & this.tlbMask) << 3) >>> 0;
        hit = t[e] === vpnLo && t[e + 1] === ((this.globKeyHi | vpnHi) >>> 0);
      }
      if (hit) {
        const attr = t[e + 4]!;
        if ((attr & this.allowBit(access, el0, this.pan)) !== 0) {
          this.count(C_HITS, 1);
          this.aPaLo = (t[e + 2]! | (lo & 0xfff)) >>> 0;
          this.aPaHi = t[e + 3]!;
          const st = t[e + 6]!;
          this.aLevel = (st >>> BS_LEVEL_SHIFT) & 0xff;
          this.aShift = (st >>> BS_PSHIFT_SHIFT) & 31;
          return STATUS_OK;
        }
        this.tlbDrop(e);
      }
      this.count(C_MISSES, 1);
    }
    const s = this.s1Walk(lo, hi, access, el0, AWALK_UPDATE);
    if (s !== STATUS_OK) { this.count(C_FAULTS, 1); return s; }
    if (this.tlbOn && this.s1On) {
      const uhi = (hi << 8) >> 8;
      const vpnLo = ((lo >>> 12) | (uhi << 20)) >>> 0;
      const vpnHi = (uhi >>> 12) & 0x1fff;
      const attr = this.aAttr | (this.aS1Shift << A_PSHIFT_SHIFT) | (this.aLevel << A_LEVEL_SHIFT);
      const global = (attr & A_GLOBAL) !== 0;
      this.fillAt(global ? this.globKeyHi : this.curKeyHi, global ? this.globSalt : this.curSalt, vpnLo, vpnHi,
        (this.aPaLo & D_ADDR_LO) >>> 0, this.aPaHi, attr, this.aShift);
      if (global) this.globLive = true;
    }
    return STATUS_OK;
  }

  /** armTranslate: one address; the result record gets pa, ipa, status, level, shift, fsc. */
  translate(lo: number, hi: number, access: number, el0: number): number {
    const s = access > ARM_FETCH ? STATUS_EACCESS : this.translateSlow(lo, hi, access, el0 !== 0);
    const r = this.result;
    const ok = s === STATUS_OK;
    r[0] = ok ? this.aPaLo : 0;
    r[1] = ok ? this.aPaHi : 0;
    r[2] = ok || this.aStage === 2 ? this.aIpaLo : 0;
    r[3] = ok || this.aStage === 2 ? this.aIpaHi : 0;
    r[4] = s;
    r[5] = this.aLevel;
    r[6] = ok ? this.aShift : 0;
    r[7] = ok ? 0 : this.aFsc;
    return s;
  }

  /** armBatchHits: the run of current-ASID TLB hits from index i; returns the first index that is not one. */
  private batchHits(i: number, count: number, keyHi: number, salt: number, mask: number, bits: number, e0pdLo: boolean, e0pdHi: boolean): number {
    const vaArr = this.va, paArr = this.pa, stArr = this.status, acArr = this.access, t = this.tlb;
    for (; i < count; i++) {
      const lo = vaArr[2 * i]!, hi = vaArr[2 * i + 1]!;
      const top = (hi | 0) >> 23;
      if ((top !== 0 && top !== -1) || (hi >>> 31 !== 0 ? e0pdHi : e0pdLo)) break;
      const vpnLo = ((lo >>> 12) | (hi << 20)) >>> 0;
      const vpnHi = (hi >>> 12) & 0x1fff;
      const e = ((vpnLo ^ salt) & mask) << 3;
      if (t[e] !== vpnLo || t[e + 1] !== ((keyHi | vpnHi) >>> 0)) break;
      const access = acArr[i]!;
      if (access > ARM_FETCH || (t[e + 4]! & ((bits >>> (access << 3)) & 0xff)) === 0) break;
      paArr[2 * i] = t[e + 2]! | (lo & 0xfff);
      paArr[2 * i + 1] = t[e + 3]!;
      stArr[i] = t[e + 6]!;
    }
    return i;
  }

  /** armTranslateBatch: runs of hits through batchHits, translateSlow otherwise. Returns the number of faults. */
  translateBatch(count: number, el0: number): number {
    if (count > BATCH_MAX) count = BATCH_MAX;
    const vaArr = this.va, paArr = this.pa, stArr = this.status, acArr = this.access;
    const isEl0 = el0 !== 0;
    const fast = this.tlbOn && this.s1On;
    const bits = this.allowBit(ARM_READ, isEl0, this.pan) | (this.allowBit(ARM_WRITE, isEl0, this.pan) << 8)
      | (this.allowBit(ARM_FETCH, isEl0, this.pan) << 16);
    const e0pdLo = isEl0 && (this.tcrHi & TCRH_E0PD0) !== 0, e0pdHi = isEl0 && (this.tcrHi & TCRH_E0PD1) !== 0;
    let hits = 0;
    let faults = 0;
    let i = 0;
    while (i < count) {
      if (fast) {
        const j = this.batchHits(i, count, this.curKeyHi, this.curSalt, this.tlbMask, bits, e0pdLo, e0pdHi);
        hits += j - i;
        i = j;
        if (i >= count) break;
      }
      const lo = vaArr[2 * i]!, hi = vaArr[2 * i + 1]!;
      const access = acArr[i]!;
      const at = i++;
      if (access > ARM_FETCH) {
        faults++;
        paArr[2 * at] = 0;
        paArr[2 * at + 1] = 0;
        stArr[at] = STATUS_EACCESS << BS_STATUS_SHIFT;
        continue;
      }
      const s = this.translateSlow(lo, hi, access, isEl0);
      if (s === STATUS_OK) {
        paArr[2 * at] = this.aPaLo;
        paArr[2 * at + 1] = this.aPaHi;
        stArr[at] = (this.aShift << BS_PSHIFT_SHIFT) | (this.aLevel << BS_LEVEL_SHIFT);
      } else {
        faults++;
        const s2 = this.aStage === 2;
        paArr[2 * at] = s2 ? this.aIpaLo : 0;
        paArr[2 * at + 1] = s2 ? this.aIpaHi : 0;
        stArr[at] = (s << BS_STATUS_SHIFT) | ((this.aFlags & FF_WRITE) !== 0 ? 1 << 16 : 0) | (this.aLevel << BS_LEVEL_SHIFT)
          | ((this.aFlags & FF_S1PTW) !== 0 ? 0x80 : 0) | (s2 ? 0x40 : 0) | (this.aFsc & 0x3f);
      }
    }
    if (hits !== 0) {
      this.count(C_LOOKUPS, hits);
      this.count(C_HITS, hits);
    }
    return faults;
  }

  /** Zeroes the counters. */
  resetStats(): void {
    this.counters.fill(0);
  }
}
