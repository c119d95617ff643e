// Plain-TypeScript baseline for the x86-64 translation benchmarks: the wasm
// core's algorithm (assembly/x86/mmu.ts, assembly/tlb.ts, assembly/phys.ts),
// step for step, over typed arrays holding a copy of the same guest RAM and
// TLB bytes. Intel SDM Vol.3A §4.5 (4/5-level paging), §4.6 (rights), §4.7
// (#PF error code), §4.8 (A/D), §4.10 (TLB).
//
// 64-bit quantities are handled as u32 halves (lo, hi) in Uint32Array views,
// which is how a performance-minded TS author avoids bigint on a hot path:
//   - a TLB key compare is two u32 compares;
//   - the packed hit filter is a u64 (bit 16·access + (attr & 15)) held as
//     two halves, so the rights-and-dirty test is one shift and one AND on
//     the half the bit lives in;
//   - guest-physical addresses of table entries are exact doubles (< 2^52).
// The A/D compare-exchange uses Atomics on a BigInt64Array view of the same
// bytes; in steady state (A/D already set) it never runs.

/** Everything a baseline needs to reproduce one wasm scenario. */
export interface MmuSnapshot {
  control: { cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint; pkru: bigint; rflags: bigint };
  maxPhysAddrBits: number;
  tlbOn: boolean;
  /** Current context slot and the live tags of it and of the global context. */
  curCtx: number;
  curTag: number;
  globTag: number;
  globLive: boolean;
  /** Copy of guest RAM bytes [imageBase, imageBase + image.length): where the tables live. */
  imageBase: bigint;
  image: Uint8Array;
  /** Copy of the vCPU's TLB array (tlbEntries × 32 bytes). */
  tlb: Uint8Array;
  tlbEntries: number;
}

const STATUS_OK = 0, STATUS_PF = 1, STATUS_GP = 2, STATUS_ABORT = 3, STATUS_EACCESS = 5;
const C_LOOKUPS = 0, C_HITS = 1, C_MISSES = 2, C_WALKS = 3, C_PT_REFS = 4, C_AD_WRITES = 5, C_WALK_RETRIES = 6;
const C_FILLS = 7, C_EVICTIONS = 8, C_DROPPED = 13, C_FAULTS = 14;
/** Counter indices, as in assembly/layout.ts. */
export const COUNTER = { lookups: C_LOOKUPS, hits: C_HITS, misses: C_MISSES, walks: C_WALKS, ptRefs: C_PT_REFS, adWrites: C_AD_WRITES } as const;

const BATCH_MAX = 16384;
const BS_STATUS_SHIFT = 28, BS_PSHIFT_SHIFT = 16, BS_LEVEL_SHIFT = 8;
const CTX_GLOBAL = 4096;
const A_ACC_MASK = 7, A_DIRTY = 8, A_GLOBAL = 1 << 23, A_PKEY_SHIFT = 16, A_PSHIFT_SHIFT = 24, A_LEVEL_SHIFT = 29;
const PTE_P = 1, PTE_A = 0x20, PTE_D = 0x40, PTE_PS = 0x80, PTE_G = 0x100;
const PTE_RSVD_2M = 0x1fe000, PTE_RSVD_1G = 0x3fffe000;
const ACC_EXEC = 1, ACC_WRITE = 2, ACC_USER = 4;
const PFERR_P = 1, PFERR_W = 2, PFERR_U = 4, PFERR_RSVD = 8, PFERR_FETCH = 16, PFERR_PK = 32;
const ACCESS_WRITE = 1, ACCESS_FETCH = 2;
const WALK_AD = 1, WALK_CHECK = 2, WALK_DEBUG = 4;
const RETRY = 0xff;
const TWO32 = 4294967296;

const lo32 = (v: bigint): number => Number(BigInt.asUintN(32, v));
const hi32 = (v: bigint): number => Number(BigInt.asUintN(32, v >> 32n));

/** The x86 translation core of one vCPU in plain TS. */
export class TsX86Mmu {
  /** Batch area, as in the wasm vCPU block: va and pa as (lo, hi) u32 pairs. */
  readonly va = new Uint32Array(BATCH_MAX * 2);
  readonly access = new Uint8Array(BATCH_MAX);
  readonly pa = new Uint32Array(BATCH_MAX * 2);
  readonly status = new Uint32Array(BATCH_MAX);
  /** Counters, indexed like the wasm C_* counters. */
  readonly counters = new Float64Array(17);
  /** Result record of the last single translate: pa lo, pa hi, gpa lo, gpa hi, status, error, level, shift. */
  readonly result = new Uint32Array(8);

  private readonly ram: Uint32Array;
  private readonly ram64: BigInt64Array;
  private readonly slotBase: number;
  private readonly eagerBytes: number;
  private readonly tlb: Uint32Array;
  private readonly tlbMask: number;
  private readonly curCtx: number;
  private readonly curKeyHi: number;
  private readonly curSalt: number;
  private readonly globKeyHi: number;
  private readonly globSalt: number;
  private globLive: boolean;

  private pagingOn = false;
  private rootLevel = 4;
  /** Canonical: the signed high word shifted right by this is 0 or -1. */
  private canonHiShift = 15;
  private cr3Lo = 0;
  private cr3Hi = 0;
  private maskLo = 0;
  private maskHi = 0;
  private rsvdHi = 0;
  private pkActive = false;
  private pkru = 0;
  private wp = false;
  private pgeOn = false;
  private tlbOn = true;
  private permLo = 0;
  private permHi = 0;
  private errLo = 0;
  private errHi = 0;
  /** TLB-hit filters for supervisor and user accesses, as (lo, hi) halves. */
  private hitSLo = 0;
  private hitSHi = 0;
  private hitULo = 0;
  private hitUHi = 0;

  private rPaLo = 0;
  private rPaHi = 0;
  private rGpa = 0;
  private rErr = 0;
  private rLevel = 0;
  private rShift = 0;
  private rAttr = 0;

  constructor(s: MmuSnapshot) {
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
    this.curCtx = s.curCtx;
    this.curKeyHi = (s.curTag << 16) >>> 0;
    this.curSalt = Math.imul(s.curTag, 0x9e3779b1) >>> 0;
    this.globKeyHi = (s.globTag << 16) >>> 0;
    this.globSalt = Math.imul(s.globTag, 0x9e3779b1) >>> 0;
    this.globLive = s.globLive;
    this.loadControl(s);
  }

  /** x86LoadControl: mode, reserved bits and the packed rights table. */
  private loadControl(s: MmuSnapshot): void {
    const { cr0, cr3, cr4, efer, pkru, rflags } = s.control;
    const maxPhy = s.maxPhysAddrBits;
    this.cr3Lo = lo32(cr3);
    this.cr3Hi = hi32(cr3);
    this.pagingOn = (cr0 & (1n << 31n)) !== 0n;
    const longMode = (efer & ((1n << 8n) | (1n << 10n))) !== 0n && (cr4 & (1n << 5n)) !== 0n;
    if (this.pagingOn && !longMode) throw new Error("ts-baseline: paging without long mode");
    const la57 = (cr4 & (1n << 12n)) !== 0n;
    this.rootLevel = la57 ? 5 : 4;
    this.canonHiShift = la57 ? 24 : 15;
    const addrMask = ((1n << BigInt(maxPhy)) - 1n) & ~0xfffn;
    this.maskLo = lo32(addrMask);
    this.maskHi = hi32(addrMask);
    const nxe = (efer & (1n << 11n)) !== 0n;
    const rsvd = (0x000f_ffff_ffff_f000n & ~addrMask) | (nxe ? 0n : 1n << 63n);
    this.rsvdHi = hi32(rsvd);
    this.pkActive = (cr4 & (1n << 22n)) !== 0n && longMode;
    this.pkru = lo32(pkru);
    this.wp = (cr0 & (1n << 16n)) !== 0n;
    this.pgeOn = (cr4 & (1n << 7n)) !== 0n;
    this.tlbOn = s.tlbOn;
    const smep = (cr4 & (1n << 20n)) !== 0n;
    const smapOn = (cr4 & (1n << 21n)) !== 0n && (rflags & (1n << 18n)) === 0n;
    let perm = 0n, errs = 0n;
    for (let user = 0; user < 2; user++) {
      for (let access = 0; access < 3; access++) {
        const i = access + 3 * user;
        let mask = 0;
        for (let acc = 0; acc < 8; acc++) {
          const w = (acc & ACC_WRITE) !== 0, u = (acc & ACC_USER) !== 0, x = (acc & ACC_EXEC) !== 0;
          let fault: boolean;
          if (user) fault = !u || (access === ACCESS_WRITE && !w) || (access === ACCESS_FETCH && !x);
          else if (access === ACCESS_FETCH) fault = (u && smep) || !x;
          else fault = (u && smapOn) || (access === ACCESS_WRITE && this.wp && !w);
          if (fault) mask |= 1 << acc;
        }
        perm |= BigInt(mask) << BigInt(i * 8);
        let e = 0;
        if (access === ACCESS_WRITE) e |= PFERR_W;
        if (user) e |= PFERR_U;
        if (access === ACCESS_FETCH && (nxe || smep)) e |= PFERR_FETCH;
        errs |= BigInt(e) << BigInt(i * 8);
      }
    }
    this.permLo = lo32(perm);
    this.permHi = hi32(perm);
    this.errLo = lo32(errs);
    this.errHi = hi32(errs);
    let hs = 0n, hu = 0n;
    for (let access = 0; access < 3; access++) {
      for (let idx = 0; idx < 16; idx++) {
        const acc = idx & A_ACC_MASK;
        const clean = (idx & A_DIRTY) === 0 && access === ACCESS_WRITE;
        const bit = 1n << BigInt(access * 16 + idx);
        if (clean || ((perm >> BigInt(access * 8 + acc)) & 1n) !== 0n) hs |= bit;
        if (clean || ((perm >> BigInt((access + 3) * 8 + acc)) & 1n) !== 0n) hu |= bit;
      }
    }
    this.hitSLo = lo32(hs);
    this.hitSHi = hi32(hs);
    this.hitULo = lo32(hu);
    this.hitUHi = hi32(hu);
  }

  private count(idx: number, n: number): void {
    const c = this.counters;
    c[idx] = c[idx]! + n;
  }

  private errBase(ai: number): number {
    return ai < 4 ? (this.errLo >>> (ai * 8)) & 0xff : (this.errHi >>> (ai * 8 - 32)) & 0xff;
  }

  private rightsFault(ai: number, acc: number): boolean {
    const bit = ai * 8 + acc;
    return ((bit < 32 ? this.permLo >>> bit : this.permHi >>> (bit - 32)) & 1) !== 0;
  }

  private pkFault(access: number, user: number, acc: number, pkey: number): boolean {
    if (!this.pkActive || access === ACCESS_FETCH || (acc & ACC_USER) === 0) return false;
    const bits = (this.pkru >>> (pkey * 2)) & 3;
    if (bits & 1) return true;
    return (bits & 2) !== 0 && access === ACCESS_WRITE && (user !== 0 || this.wp);
  }

  private isCanonical(hi: number): boolean {
    const top = (hi | 0) >> this.canonHiShift;
    return top === 0 || top === -1;
  }

  /** hostForLoadLazy: nothing is lazy in the copied image, so an offset past it is outside the slot (-1: abort). */
  private hostForLoadLazy(_off: number): number {
    return -1;
  }

  private casEntry(w: number, loOld: number, hiOld: number, loNew: number): boolean {
    const expected = BigInt.asIntN(64, (BigInt(hiOld >>> 0) << 32n) | BigInt(loOld >>> 0));
    const desired = BigInt.asIntN(64, (BigInt(hiOld >>> 0) << 32n) | BigInt(loNew >>> 0));
    return Atomics.compareExchange(this.ram64, w >>> 1, expected, desired) === expected;
  }

  /** walkOnce: one attempt at a walk from CR3; STATUS_* or RETRY. */
  private walkOnce(lo: number, hi: number, access: number, user: number, flags: number): number {
    const debug = (flags & WALK_DEBUG) !== 0;
    const check = (flags & WALK_CHECK) !== 0;
    const setAD = (flags & WALK_AD) !== 0;
    const mLo = debug ? 0xfffff000 : this.maskLo;
    const mHi = debug ? 0xfffff : this.maskHi;
    const ai = access + (user !== 0 ? 3 : 0);
    const ram = this.ram;
    let table = (this.cr3Hi & mHi) * TWO32 + ((this.cr3Lo & mLo) >>> 0);
    let acc = 7;
    let level = this.rootLevel;
    let shift = 12 + 9 * (level - 1);
    let refs = 0;
    const sb = this.slotBase, eb = this.eagerBytes, rsvdHi = this.rsvdHi;
    for (;;) {
      const idx = shift >= 32 ? (hi >>> (shift - 32)) & 511 : ((lo >>> shift) | (hi << (32 - shift))) & 511;
      const gpa = table + idx * 8;
      const off = gpa - sb;
      const w = off >= 0 && off < eb ? off >>> 2 : this.hostForLoadLazy(off);
      if (w < 0) {
        this.count(C_PT_REFS, refs);
        this.rGpa = gpa; this.rLevel = level; this.rErr = 0;
        return STATUS_ABORT;
      }
      const pLo = ram[w]!;
      const pHi = ram[w + 1]!;
      refs++;
      if ((pLo & PTE_P) === 0) {
        this.count(C_PT_REFS, refs);
        this.rLevel = level; this.rErr = debug ? 0 : this.errBase(ai);
        return STATUS_PF;
      }
      const ps = (pLo & PTE_PS) !== 0;
      if (check && !debug) {
        let rsvdLo = 0;
        if (level >= 4) rsvdLo = PTE_PS;
        else if (ps && level === 3) rsvdLo = PTE_RSVD_1G;
        else if (ps && level === 2) rsvdLo = PTE_RSVD_2M;
        if (((pLo & rsvdLo) | (pHi & rsvdHi)) !== 0) {
          this.count(C_PT_REFS, refs);
          this.rLevel = level; this.rErr = this.errBase(ai) | PFERR_P | PFERR_RSVD;
          return STATUS_PF;
        }
      }
      acc &= (pLo & 6) | ((pHi >>> 31) ^ 1);
      const leaf = level === 1 || (ps && (level === 2 || level === 3));
      if (!leaf) {
        if (setAD && (pLo & PTE_A) === 0) {
          if (!this.casEntry(w, pLo, pHi, pLo | PTE_A)) { this.count(C_PT_REFS, refs); return RETRY; }
          this.count(C_AD_WRITES, 1);
        }
        table = (pHi & mHi) * TWO32 + ((pLo & mLo) >>> 0);
        level--;
        shift -= 9;
        continue;
      }
      this.count(C_PT_REFS, refs);
      const pmask = shift >= 32 ? 0xffffffff : (1 << shift) - 1;
      const pkey = (pHi >>> 27) & 15;
      if (check) {
        const rf = this.rightsFault(ai, acc);
        const pf = this.pkFault(access, user, acc, pkey);
        if (rf || pf) {
          this.rLevel = level; this.rErr = this.errBase(ai) | PFERR_P | (pf ? PFERR_PK : 0);
          return STATUS_PF;
        }
      }
      let dirty = (pLo & PTE_D) !== 0;
      if (setAD) {
        const want = (pLo | PTE_A | (access === ACCESS_WRITE ? PTE_D : 0)) >>> 0;
        if (want !== pLo) {
          if (!this.casEntry(w, pLo, pHi, want)) return RETRY;
          this.count(C_AD_WRITES, 1);
        }
        dirty = (want & PTE_D) !== 0;
      }
      this.rPaLo = ((pLo & mLo & ~pmask) | (lo & pmask)) >>> 0;
      this.rPaHi = shift >= 32 ? (pHi & mHi & ~((1 << (shift - 32)) - 1)) | (hi & ((1 << (shift - 32)) - 1)) : pHi & mHi;
      this.rLevel = level;
      this.rShift = shift;
      this.rErr = 0;
      this.rAttr = acc | (dirty ? A_DIRTY : 0) | (this.pgeOn && (pLo & PTE_G) !== 0 ? A_GLOBAL : 0)
        | (level << A_LEVEL_SHIFT) | (shift << A_PSHIFT_SHIFT) | (pkey << A_PKEY_SHIFT);
      return STATUS_OK;
    }
  }

  private walk(lo: number, hi: number, access: number, user: number, flags: number): number {
    this.count(C_WALKS, 1);
    for (;;) {
      const s = this.walkOnce(lo, hi, access, user, flags);
      if (s !== RETRY) return s;
      this.count(C_WALK_RETRIES, 1);
    }
  }

  /** tlbFill, without the per-context live accounting (never on a measured path). */
  private tlbFill(vpnLo: number, vpnHi: number, paLo: number, paHi: number, attr: number): void {
    const global = (attr & A_GLOBAL) !== 0;
    const e = (((vpnLo ^ (global ? this.globSalt : this.curSalt)) & this.tlbMask) << 3) >>> 0;
    const t = this.tlb;
    if ((t[e]! | t[e + 1]!) !== 0) this.count(C_EVICTIONS, 1);
    t[e] = vpnLo;
    t[e + 1] = (global ? this.globKeyHi : this.curKeyHi) | vpnHi;
    t[e + 2] = paLo;
    t[e + 3] = paHi;
    t[e + 4] = attr;
    t[e + 5] = global ? CTX_GLOBAL : this.curCtx;
    t[e + 6] = (((attr >>> A_PSHIFT_SHIFT) & 31) << BS_PSHIFT_SHIFT) | (((attr >>> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT);
    if (global) this.globLive = true;
    this.count(C_FILLS, 1);
  }

  private tlbDrop(e: number): void {
    this.tlb[e] = 0;
    this.tlb[e + 1] = 0;
    this.count(C_DROPPED, 1);
  }

  /** translateSlow: canonical check, TLB (current then global context), walk, fill. */
  private translateSlow(lo: number, hi: number, access: number, user: number): number {
    if (!this.pagingOn) {
      this.rPaLo = lo; this.rPaHi = hi; this.rLevel = 0; this.rShift = 12; this.rErr = 0;
      return STATUS_OK;
    }
    if (!this.isCanonical(hi)) {
      this.rLevel = 0; this.rErr = 0;
      this.count(C_FAULTS, 1);
      return STATUS_GP;
    }
    const vpnLo = ((lo >>> 12) | (hi << 20)) >>> 0;
    const vpnHi = (hi >>> 12) & 0x1fff;
    if (this.tlbOn) {
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
        const ai = access + (user !== 0 ? 3 : 0);
        const acc = attr & A_ACC_MASK;
        if (!this.rightsFault(ai, acc) && !this.pkFault(access, user, acc, (attr >>> A_PKEY_SHIFT) & 15)
          && !(access === ACCESS_WRITE && (attr & A_DIRTY) === 0)) {
          this.count(C_HITS, 1);
          this.rPaLo = (t[e + 2]! | (lo & 0xfff)) >>> 0;
          this.rPaHi = t[e + 3]!;
          this.rLevel = (attr >>> A_LEVEL_SHIFT) & 7;
          this.rShift = (attr >>> A_PSHIFT_SHIFT) & 31;
          this.rErr = 0;
          return STATUS_OK;
        }
        this.tlbDrop(e);
      }
      this.count(C_MISSES, 1);
    }
    const s = this.walk(lo, hi, access, user, WALK_AD | WALK_CHECK);
    if (s !== STATUS_OK) {
      this.count(C_FAULTS, 1);
      return s;
    }
    if (this.tlbOn) this.tlbFill(vpnLo, vpnHi, (this.rPaLo & 0xfffff000) >>> 0, this.rPaHi, this.rAttr);
    return STATUS_OK;
  }

  /** x86Translate: one address; the result record gets pa, gpa, status, error, level, shift. */
  translate(lo: number, hi: number, access: number, user: number): number {
    const s = this.translateSlow(lo, hi, access, user);
    const r = this.result;
    const ok = s === STATUS_OK;
    r[0] = ok ? this.rPaLo : 0;
    r[1] = ok ? this.rPaHi : 0;
    r[2] = s === STATUS_ABORT ? this.rGpa % TWO32 : 0;
    r[3] = s === STATUS_ABORT ? Math.floor(this.rGpa / TWO32) : 0;
    r[4] = s;
    r[5] = s === STATUS_PF ? this.rErr : 0;
    r[6] = this.rLevel;
    r[7] = ok ? this.rShift : 0;
    return s;
  }

  private statusWord(s: number): number {
    return ((s << BS_STATUS_SHIFT) | (s === STATUS_OK ? this.rShift << BS_PSHIFT_SHIFT : 0)
      | (this.rLevel << BS_LEVEL_SHIFT) | (s === STATUS_PF ? this.rErr : 0)) >>> 0;
  }

  /** x86TranslateBatch: the TLB-hit case of the current context inline, translateSlow otherwise. Returns faults. */
  translateBatch(count: number, user: number): number {
    if (count > BATCH_MAX) count = BATCH_MAX;
    const vaArr = this.va, paArr = this.pa, stArr = this.status, acArr = this.access, t = this.tlb;
    const keyHi = this.curKeyHi;
    const salt = this.curSalt;
    const mask = this.tlbMask;
    const hitLo = user !== 0 ? this.hitULo : this.hitSLo;
    const hitHi = user !== 0 ? this.hitUHi : this.hitSHi;
    const fast = this.pagingOn && this.tlbOn && !this.pkActive;
    const cshift = this.canonHiShift;
    let hits = 0;
    let faults = 0;
    for (let i = 0; i < count; i++) {
      const lo = vaArr[2 * i]!;
      const hi = vaArr[2 * i + 1]!;
      const access = acArr[i]!;
      const top = (hi | 0) >> cshift;
      if (fast && access <= ACCESS_FETCH && (top === 0 || top === -1)) {
        const vpnLo = ((lo >>> 12) | (hi << 20)) >>> 0;
        const vpnHi = (hi >>> 12) & 0x1fff;
        const e = (((vpnLo ^ salt) & mask) << 3) >>> 0;
        if (t[e] === vpnLo && t[e + 1] === ((keyHi | vpnHi) >>> 0)) {
          const attr = t[e + 4]!;
          const bit = (access << 4) + (attr & 15);
          if (((bit < 32 ? hitLo >>> bit : hitHi >>> (bit - 32)) & 1) === 0) {
            paArr[2 * i] = t[e + 2]! | (lo & 0xfff);
            paArr[2 * i + 1] = t[e + 3]!;
            stArr[i] = t[e + 6]!;
            hits++;
            continue;
          }
        }
      }
      const s = access <= ACCESS_FETCH ? this.translateSlow(lo, hi, access, user) : STATUS_EACCESS;
      if (s === STATUS_OK) {
        paArr[2 * i] = this.rPaLo;
        paArr[2 * i + 1] = this.rPaHi;
      } else if (s === STATUS_ABORT) {
        paArr[2 * i] = this.rGpa % TWO32;
        paArr[2 * i + 1] = Math.floor(this.rGpa / TWO32);
      } else {
        paArr[2 * i] = 0;
        paArr[2 * i + 1] = 0;
      }
      stArr[i] = this.statusWord(s);
      if (s !== STATUS_OK) faults++;
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
