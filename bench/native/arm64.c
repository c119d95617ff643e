// Native C baseline for the arm64 translation benchmarks: the same algorithm
// as the wasm core (assembly/arm64/mmu.ts, assembly/tlb.ts, assembly/phys.ts)
// over the same bytes: a copy of the guest RAM the translation tables live
// in, and a copy of the vCPU's TLB array. Arm ARM DDI 0487 D8
// (AArch64.S1Translate, AArch64.S2Translate, AArch64.S1CheckPermissions,
// FEAT_HAFDBS), as pinned down in docs/arm64-walk-contract.md.
//
// Mirrors the core as of git 653ba4d: direct-mapped 32-byte TLB entries
// (key = tag << 48 | vpn, idx = (vpn ^ salt) & mask), allow bits per
// (EL, PAN, access) in the entry, the precomputed batch status word, the
// combined walk in which every stage-1 descriptor address is an IPA
// translated by stage 2 (through the stage-2-only TLB context when the TLB is
// on), the hardware AF/DBM compare-exchange. Function boundaries follow the
// wasm module: arm_batch_hits is a call-free leaf called from the batch loop
// (armBatchHits is exported, hence out of line), arm_translate_slow is a
// real call (armTranslateSlow in build/release.wat); below it the compiler
// may inline and specialise as native compilers do.
//
// Kernels, each timed with clock_gettime(CLOCK_MONOTONIC) over many
// repetitions (median reported):
//   batch   armTranslateBatch: runs of TLB hits in arm_batch_hits, arm_translate_slow otherwise
//   single  armTranslate: one non-inlined call per address, result record stored
// One batch repetition covers `chunk` addresses: the whole list, or (walk
// cases) the next slice of it, copied into the batch area first as the wasm
// harness does; one single repetition covers the next `single_chunk`
// addresses. Either way a sample stays shorter than a scheduler time slice.
//
// Usage: arm64-native INPUT MS_PER_KERNEL
// INPUT (little-endian), written by bench/arm64-scenarios.ts:
//   u32 magic 'VMA1', u32 version 2
//   u64 ttbr0, ttbr1, tcr, sctlr, vttbr, vtcr, hcr
//   u32 pan, tlb_on, cur_tag, glob_tag, glob_live, s2_tag, el0, count, tlb_entries, chunk, single_chunk
//       (both chunks divide count)
//   u64 image_base (pa), image_len
//   u8  image[image_len]; u8 tlb[tlb_entries * 32]; u64 va[count]; u8 access[count]
// Output: one JSON object per kernel on stdout.

#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef uint64_t u64;
typedef int64_t i64;
typedef uint32_t u32;
typedef uint8_t u8;

#define NOINLINE __attribute__((noinline))

enum { STATUS_OK = 0, STATUS_ARM_FAULT = 4, STATUS_EACCESS = 5 };
enum { FK_TRANSLATION = 1, FK_ADDRESS_SIZE = 2, FK_ACCESS_FLAG = 3, FK_PERMISSION = 4, FK_EXTERNAL = 5 };
enum {
  C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_PT_REFS, C_AD_WRITES, C_WALK_RETRIES, C_FILLS,
  C_EVICTIONS, C_FLUSH_ALL, C_FLUSH_NONGLOBAL, C_FLUSH_CTX, C_FLUSH_PAGE, C_DROPPED, C_FAULTS,
  C_ROLLOVERS, C_FLUSH_PROBES, COUNTER_COUNT
};
#define BATCH_MAX 16384u
#define BS_STATUS_SHIFT 28
#define BS_PSHIFT_SHIFT 16
#define BS_LEVEL_SHIFT 8
#define TLB_ENTRY 32
#define E_KEY 0
#define E_PA 8
#define E_ATTR 16
#define E_CTX 20
#define E_STATUS 24

#define A_GLOBAL (1u << 23)
#define A_PSHIFT_SHIFT 24
#define A_LEVEL_SHIFT 29
#define VPN_MASK ((((u64)1) << 45) - 1)

#define ARM_READ 0u
#define ARM_WRITE 1u
#define ARM_FETCH 2u
#define AWALK_UPDATE 1u
#define AWALK_DEBUG 2u
#define AWALK_NOTLB 4u
#define RETRY 0xffu
#define FF_S1PTW 1u
#define FF_WRITE 2u

// assembly/arm64/desc.ts
#define D_VALID ((u64)1 << 0)
#define D_TABLE ((u64)1 << 1)
#define D_AP1 ((u64)1 << 6)
#define D_AP2 ((u64)1 << 7)
#define D_S2AP_R ((u64)1 << 6)
#define D_S2AP_W ((u64)1 << 7)
#define D_AF ((u64)1 << 10)
#define D_NG ((u64)1 << 11)
#define D_DBM ((u64)1 << 51)
#define D_PXN ((u64)1 << 53)
#define D_UXN ((u64)1 << 54)
#define D_S2XN_SHIFT 53
#define D_PXNTABLE ((u64)1 << 59)
#define D_UXNTABLE ((u64)1 << 60)
#define D_APTABLE0 ((u64)1 << 61)
#define D_APTABLE1 ((u64)1 << 62)
#define D_MEMATTR_SHIFT 2
#define D_ADDR_MASK 0x0000fffffffff000ull
#define TCR_EPD0 ((u64)1 << 7)
#define TCR_EPD1 ((u64)1 << 23)
#define TCR_IPS_SHIFT 32
#define TCR_TBI0 ((u64)1 << 37)
#define TCR_TBI1 ((u64)1 << 38)
#define TCR_HA ((u64)1 << 39)
#define TCR_HD ((u64)1 << 40)
#define TCR_HPD0 ((u64)1 << 41)
#define TCR_HPD1 ((u64)1 << 42)
#define TCR_TBID0 ((u64)1 << 51)
#define TCR_TBID1 ((u64)1 << 52)
#define TCR_E0PD0 ((u64)1 << 55)
#define TCR_E0PD1 ((u64)1 << 56)
#define SCTLR_M ((u64)1 << 0)
#define SCTLR_WXN ((u64)1 << 19)
#define HCR_VM ((u64)1 << 0)
#define HCR_PTW ((u64)1 << 2)
#define VTCR_PS_SHIFT 16
#define VTCR_HA ((u64)1 << 21)
#define VTCR_HD ((u64)1 << 22)
#define AL_EL0_R (1u << 0)
#define AL_EL0_W (1u << 1)
#define AL_EL0_X (1u << 2)
#define AL_EL1_R (1u << 3)
#define AL_EL1_W (1u << 4)
#define AL_EL1_X (1u << 5)
#define AL_EL1P_R (1u << 6)
#define AL_EL1P_W (1u << 7)
#define S2AL_R (1u << 0)
#define S2AL_W (1u << 1)
#define S2AL_X0 (1u << 2)
#define S2AL_X1 (1u << 3)
#define S2AL_DEVICE (1u << 4)

static inline u32 level_shift(u32 level) { return 12 + 9 * (3 - level); }
static u32 pa_bits_of(u32 ps) {
  switch (ps & 7) {
    case 0: return 32;
    case 1: return 36;
    case 2: return 40;
    case 3: return 42;
    case 4: return 44;
    default: return 48;
  }
}

// ---- guest RAM (phys.ts): one eager slot, the copied image --------------

static u8 *ram;
static u64 slot_base, eager_bytes;

// The lazy part of the slot (phys.ts hostForLoadLazy): nothing is lazy in the
// copied image, so an offset past it is outside the slot: external abort.
static NOINLINE u8 *host_for_load_lazy(u64 off) { (void)off; return NULL; }
static inline u8 *host_of(u64 pa) {
  u64 off = pa - slot_base;
  return off < eager_bytes ? ram + off : host_for_load_lazy(off);
}
static inline u64 load_entry(u8 *host) { return __atomic_load_n((u64 *)host, __ATOMIC_SEQ_CST); }
static inline int cas_entry(u8 *host, u64 expected, u64 desired) {
  if (host < ram) return 0;
  return __atomic_compare_exchange_n((u64 *)host, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

// ---- TLB (tlb.ts) ------------------------------------------------------

static u64 counters[COUNTER_COUNT];
static u8 *tlb_base;
static u64 tlb_mask;
static u64 cur_key_hi, cur_salt, glob_key_hi, glob_salt;
static int glob_live;
// Live tag of the VMID's stage-2-only context (ctxLiveTag(s2Slot)); 0: none.
static u32 s2_tag;

static inline void counter_add(u32 idx, u64 n) { counters[idx] += n; }
static inline u64 salt_of(u32 tag) { return (u64)(u32)(tag * 0x9e3779b1u); }
static inline u8 *slot_addr(u64 vpn, u64 salt) { return tlb_base + ((size_t)((vpn ^ salt) & tlb_mask) << 5); }
static inline u64 ld64(u8 *p) { u64 v; memcpy(&v, p, 8); return v; }
static inline u32 ld32(u8 *p) { u32 v; memcpy(&v, p, 4); return v; }
static inline void st64(u8 *p, u64 v) { memcpy(p, &v, 8); }
static inline void st32(u8 *p, u32 v) { memcpy(p, &v, 4); }

// Context live-count accounting and tag allocation of tlb.ts are left out:
// fills and drops never run inside the measured kernels (hits only, or the
// TLB off).
static void fill_at(u64 key_hi, u64 salt, u64 vpn, u64 pa4k, u32 attr, u32 report_shift) {
  u8 *e = slot_addr(vpn, salt);
  if (ld64(e + E_KEY) != 0) counter_add(C_EVICTIONS, 1);
  st64(e + E_KEY, key_hi | vpn);
  st64(e + E_PA, pa4k);
  st32(e + E_ATTR, attr);
  st32(e + E_CTX, 0);
  st32(e + E_STATUS, (report_shift << BS_PSHIFT_SHIFT) | (((attr >> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT));
  counter_add(C_FILLS, 1);
}
static void tlb_fill_report(u64 vpn, u64 pa4k, u32 attr, u32 report_shift) {
  int global = (attr & A_GLOBAL) != 0;
  fill_at(global ? glob_key_hi : cur_key_hi, global ? glob_salt : cur_salt, vpn, pa4k, attr, report_shift);
  if (global) glob_live = 1;
}
static void tlb_fill_s2(u64 vpn, u64 pa4k, u32 attr) {
  if (s2_tag != 0) fill_at((u64)s2_tag << 48, salt_of(s2_tag), vpn, pa4k, attr, (attr >> A_PSHIFT_SHIFT) & 31);
}
static u8 *tlb_lookup_s2(u64 vpn) {
  if (s2_tag == 0) return NULL;
  u8 *e = slot_addr(vpn, salt_of(s2_tag));
  return ld64(e + E_KEY) == (((u64)s2_tag << 48) | vpn) ? e : NULL;
}
static void tlb_drop(u8 *e) {
  st64(e + E_KEY, 0);
  counter_add(C_DROPPED, 1);
}

// ---- mode (mmu.ts armLoadRegs) -------------------------------------------

static u64 ttbr0, ttbr1, tcr, vttbr;
static int s1_on, s2_on, pan, wxn, ptw_device, ha, hd, s2ha, s2hd, tlb_on = 1;
static u32 oa_bits = 48, s2_oa_bits = 48, s2_ipa_bits = 48, s2_start, s2_top_bits = 9;

static u64 a_pa, a_ipa;
static u32 a_level, a_shift, a_fsc, a_stage, a_flags, a_kind, a_attr, a_s1_shift = 12;
static u64 s2_pa;
static u32 s2_shift, s2_allow, s2_level;

static struct { u64 pa, ipa; u32 status, level, shift, fsc, stage, fflags, kind; } result;

static int load_regs(u64 r_ttbr0, u64 r_ttbr1, u64 r_tcr, u64 sctlr, u64 r_vttbr, u64 vtcr, u64 hcr, u32 r_pan, u32 r_tlb_on) {
  ttbr0 = r_ttbr0; ttbr1 = r_ttbr1; tcr = r_tcr; vttbr = r_vttbr;
  pan = r_pan != 0;
  tlb_on = r_tlb_on != 0;
  s1_on = (sctlr & SCTLR_M) != 0;
  s2_on = (hcr & HCR_VM) != 0;
  wxn = (sctlr & SCTLR_WXN) != 0;
  ptw_device = (hcr & HCR_PTW) != 0;
  ha = (tcr & TCR_HA) != 0;
  hd = ha && (tcr & TCR_HD) != 0;
  oa_bits = pa_bits_of((u32)(tcr >> TCR_IPS_SHIFT));
  if (s1_on) {
    if (((tcr >> 14) & 3) != 0 || ((tcr >> 30) & 3) != 2) return 1;
    u32 t0 = (u32)(tcr & 63), t1 = (u32)((tcr >> 16) & 63);
    if (t0 < 16 || t0 > 39 || t1 < 16 || t1 > 39) return 2;
  }
  if (s2_on) {
    if (((vtcr >> 14) & 3) != 0) return 1;
    u32 t0 = (u32)(vtcr & 63);
    if (t0 < 16 || t0 > 39) return 2;
    u32 sl0 = (u32)((vtcr >> 6) & 3);
    if (sl0 == 3) return 3;
    s2_ipa_bits = 64 - t0;
    s2_start = 2 - sl0;
    int top = (int)s2_ipa_bits - (int)level_shift(s2_start);
    if (top < 1 || top > 13) return 3;
    s2_top_bits = (u32)top;
    s2_oa_bits = pa_bits_of((u32)(vtcr >> VTCR_PS_SHIFT));
    s2ha = (vtcr & VTCR_HA) != 0;
    s2hd = s2ha && (vtcr & VTCR_HD) != 0;
  }
  return 0;
}

static u32 fault(u32 stage, u32 kind, u32 level, u32 flags) {
  a_stage = stage;
  a_kind = kind;
  a_level = level;
  a_flags = flags;
  u32 base = 0x04;
  if (kind == FK_ADDRESS_SIZE) base = 0x00;
  else if (kind == FK_ACCESS_FLAG) base = 0x08;
  else if (kind == FK_PERMISSION) base = 0x0c;
  else if (kind == FK_EXTERNAL) base = 0x14;
  a_fsc = base + level;
  return STATUS_ARM_FAULT;
}

// ---- stage 2 (mmu.ts s2Walk, s2Grants, s2Translate) -----------------------

static u32 s2_walk(u64 ipa, u32 access, int el0, int ptw, int update) {
  u32 ff = (ptw ? FF_S1PTW : 0) | (access == ARM_WRITE ? FF_WRITE : 0);
  a_ipa = ipa;
  if ((ipa >> s2_ipa_bits) != 0) return fault(2, FK_TRANSLATION, 0, ff);
  counter_add(C_WALKS, 1);
  u32 level = s2_start;
  u32 idx_bits = s2_top_bits;
  u64 table = (vttbr & 0x0000fffffffffffeull) & ~((((u64)1) << (idx_bits + 3)) - 1);
  if ((table >> s2_oa_bits) != 0) return fault(2, FK_ADDRESS_SIZE, level, ff);
  u64 refs = 0;
  for (;;) {
    u64 shift = level_shift(level);
    u64 gpa = table + (((ipa >> shift) & ((((u64)1) << idx_bits) - 1)) << 3);
    u8 *host = host_of(gpa);
    if (host == NULL) { counter_add(C_PT_REFS, refs); return fault(2, FK_EXTERNAL, level, ff); }
    u64 desc = load_entry(host);
    refs++;
    if ((desc & D_VALID) == 0 || (level == 0 && (desc & D_TABLE) == 0) || (level == 3 && (desc & D_TABLE) == 0)) {
      counter_add(C_PT_REFS, refs);
      return fault(2, FK_TRANSLATION, level, ff);
    }
    if (level < 3 && (desc & D_TABLE) != 0) {
      table = desc & D_ADDR_MASK;
      if ((table >> s2_oa_bits) != 0) { counter_add(C_PT_REFS, refs); return fault(2, FK_ADDRESS_SIZE, level, ff); }
      level++;
      idx_bits = 9;
      continue;
    }
    counter_add(C_PT_REFS, refs);
    u64 pmask = (((u64)1) << shift) - 1;
    u64 oa = desc & D_ADDR_MASK & ~pmask;
    if ((oa >> s2_oa_bits) != 0) return fault(2, FK_ADDRESS_SIZE, level, ff);
    u64 want = desc;
    if ((desc & D_AF) == 0) {
      if (!s2ha) return fault(2, FK_ACCESS_FLAG, level, ff);
      want |= D_AF;
    }
    if (access == ARM_WRITE && s2hd && (desc & D_DBM) != 0) want |= D_S2AP_W;
    u32 xn = (u32)(desc >> D_S2XN_SHIFT) & 3;
    int device = ((desc >> D_MEMATTR_SHIFT) & 0xc) == 0;
    int ok;
    if (access == ARM_READ) ok = (want & D_S2AP_R) != 0;
    else if (access == ARM_WRITE) ok = (want & D_S2AP_W) != 0;
    else ok = el0 ? (xn == 0 || xn == 1) : (xn == 0 || xn == 3);
    if (!ok) return fault(2, FK_PERMISSION, level, ff);
    if (update && want != desc) {
      if (!cas_entry(host, desc, want)) return RETRY;
      counter_add(C_AD_WRITES, 1);
    } else if (!update) {
      want = desc;
    }
    if (ptw && ptw_device && device) return fault(2, FK_PERMISSION, level, ff);
    s2_pa = oa | (ipa & pmask);
    s2_shift = (u32)shift;
    s2_level = level;
    u32 allow = 0;
    if ((want & D_S2AP_R) != 0) allow |= S2AL_R;
    if ((want & D_S2AP_W) != 0 && (want & D_AF) != 0) allow |= S2AL_W;
    if (xn == 0 || xn == 1) allow |= S2AL_X0;
    if (xn == 0 || xn == 3) allow |= S2AL_X1;
    if (device) allow |= S2AL_DEVICE;
    if ((want & D_AF) == 0) allow = 0;
    s2_allow = allow;
    return STATUS_OK;
  }
}

static int s2_grants(u32 allow, u32 access, int el0, int ptw) {
  if (ptw && ptw_device && (allow & S2AL_DEVICE) != 0) return 0;
  if (access == ARM_READ) return (allow & S2AL_R) != 0;
  if (access == ARM_WRITE) return (allow & S2AL_W) != 0;
  return (allow & (el0 ? S2AL_X0 : S2AL_X1)) != 0;
}

static u32 s2_translate(u64 ipa, u32 access, int el0, int ptw, u32 flags) {
  u64 vpn = (ipa >> 12) & VPN_MASK;
  int use_tlb = tlb_on && (flags & AWALK_NOTLB) == 0;
  int update = (flags & AWALK_UPDATE) != 0;
  if (use_tlb) {
    u8 *e = tlb_lookup_s2(vpn);
    if (e != NULL) {
      u32 attr = ld32(e + E_ATTR);
      if (s2_grants(attr & 0xff, access, el0, ptw)) {
        s2_pa = ld64(e + E_PA) | (ipa & 0xfff);
        s2_shift = (attr >> A_PSHIFT_SHIFT) & 31;
        s2_level = (attr >> A_LEVEL_SHIFT) & 7;
        s2_allow = attr & 0xff;
        return STATUS_OK;
      }
      tlb_drop(e);
    }
  }
  for (;;) {
    u32 s = s2_walk(ipa, access, el0, ptw, update);
    if (s == RETRY) { counter_add(C_WALK_RETRIES, 1); continue; }
    if (s == STATUS_OK && use_tlb && update) {
      tlb_fill_s2(vpn, s2_pa & ~(u64)0xfff, s2_allow | (s2_shift << A_PSHIFT_SHIFT) | (s2_level << A_LEVEL_SHIFT));
    }
    return s;
  }
}

// ---- stage 1 (mmu.ts s1AllowBits, s1DescHost, s1WalkOnce, s1Walk) ---------

static inline u32 el0_rw(int ap1, int ap2) { return ap1 ? (ap2 ? 1 : 3) : 0; }

static u32 s1_allow_bits(int ap1, int ap2, int uxn, int pxn) {
  u32 u = el0_rw(ap1, ap2);
  u32 k = ap2 ? 1 : 3;
  u32 al = 0;
  if (u & 1) al |= AL_EL0_R;
  if (u & 2) al |= AL_EL0_W;
  if (!uxn && !(wxn && (u & 2) != 0)) al |= AL_EL0_X;
  al |= AL_EL1_R;
  if (k & 2) al |= AL_EL1_W;
  if (!pxn && (u & 2) == 0 && !(wxn && (k & 2) != 0)) al |= AL_EL1_X;
  if (u == 0) {
    al |= AL_EL1P_R;
    if (k & 2) al |= AL_EL1P_W;
  }
  return al;
}

static inline u32 allow_bit(u32 access, int el0, int pan_on) {
  if (el0) return AL_EL0_R << access;
  if (access == ARM_FETCH) return AL_EL1_X;
  return pan_on ? AL_EL1P_R << access : AL_EL1_R << access;
}

static u8 *s1_desc_host(u64 dipa, u32 level, u32 flags, u32 wr) {
  u64 pa = dipa;
  if (s2_on && (flags & AWALK_DEBUG) == 0) {
    if (s2_translate(dipa, ARM_READ, 0, 1, flags) != STATUS_OK) return NULL;
    pa = s2_pa;
  }
  u8 *host = host_of(pa);
  if (host == NULL) fault(1, FK_EXTERNAL, level, wr);
  return host;
}

static u32 s1_walk_once(u64 va, u32 access, int el0, u32 flags) {
  int debug = (flags & AWALK_DEBUG) != 0;
  int update = (flags & AWALK_UPDATE) != 0 && !debug;
  u32 wr = access == ARM_WRITE ? FF_WRITE : 0;
  u64 ipa;
  u32 s1_shift = 12, s1_level = 0;
  u32 al = 0xff;
  int global = 0;
  if (!s1_on) {
    if ((va >> 48) != 0) return fault(1, FK_ADDRESS_SIZE, 0, wr);
    ipa = va;
  } else {
    int upper = ((va >> 55) & 1) != 0;
    int tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0;
    if (access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0) tbi = 0;
    u32 tsz = (u32)((upper ? tcr >> 16 : tcr) & 63);
    u32 va_bits = 64 - tsz;
    u64 top_end = tbi ? 56 : 64;
    u64 top_mask = ((top_end == 64 ? 0 : (((u64)1) << top_end)) - (((u64)1) << va_bits));
    if ((va & top_mask) != (upper ? top_mask : 0)) return fault(1, FK_TRANSLATION, 0, wr);
    if ((tcr & (upper ? TCR_EPD1 : TCR_EPD0)) != 0) return fault(1, FK_TRANSLATION, 0, wr);
    if (el0 && (tcr & (upper ? TCR_E0PD1 : TCR_E0PD0)) != 0) return fault(1, FK_TRANSLATION, 0, wr);
    u32 level = 4 - (va_bits - 12 + 8) / 9;
    u32 idx_bits = va_bits - level_shift(level);
    u64 ttbr = upper ? ttbr1 : ttbr0;
    u64 table = (ttbr & 0x0000fffffffffffeull) & ~((((u64)1) << (idx_bits + 3)) - 1);
    if ((table >> oa_bits) != 0) return fault(1, FK_ADDRESS_SIZE, level, wr);
    int hpd = (tcr & (upper ? TCR_HPD1 : TCR_HPD0)) != 0;
    u64 tattr = 0, refs = 0, desc = 0, dipa = 0;
    u8 *host = NULL;
    for (;;) {
      u64 shift = level_shift(level);
      dipa = table + (((va >> shift) & ((((u64)1) << idx_bits) - 1)) << 3);
      host = s1_desc_host(dipa, level, flags, wr);
      if (host == NULL) { counter_add(C_PT_REFS, refs); return STATUS_ARM_FAULT; }
      desc = load_entry(host);
      refs++;
      int is_table = (desc & D_TABLE) != 0;
      if ((desc & D_VALID) == 0 || (level == 0 && !is_table) || (level == 3 && !is_table)) {
        counter_add(C_PT_REFS, refs);
        return fault(1, FK_TRANSLATION, level, wr);
      }
      if (level < 3 && is_table) {
        table = desc & D_ADDR_MASK;
        if ((table >> oa_bits) != 0) { counter_add(C_PT_REFS, refs); return fault(1, FK_ADDRESS_SIZE, level, wr); }
        if (!hpd) tattr |= desc & (D_PXNTABLE | D_UXNTABLE | D_APTABLE0 | D_APTABLE1);
        level++;
        idx_bits = 9;
        continue;
      }
      break;
    }
    counter_add(C_PT_REFS, refs);
    u64 shift = level_shift(level);
    u64 pmask = (((u64)1) << shift) - 1;
    u64 oa = desc & D_ADDR_MASK & ~pmask;
    if ((oa >> oa_bits) != 0) return fault(1, FK_ADDRESS_SIZE, level, wr);
    u64 want = desc;
    if ((desc & D_AF) == 0) {
      if (!ha) return fault(1, FK_ACCESS_FLAG, level, wr);
      want |= D_AF;
    }
    if (access == ARM_WRITE && hd && (desc & D_DBM) != 0) want &= ~D_AP2;
    int ap1 = (want & D_AP1) != 0 && (tattr & D_APTABLE0) == 0;
    int ap2 = (want & D_AP2) != 0 || (tattr & D_APTABLE1) != 0;
    int uxn = (desc & D_UXN) != 0 || (tattr & D_UXNTABLE) != 0;
    int pxn = (desc & D_PXN) != 0 || (tattr & D_PXNTABLE) != 0;
    u32 access_al = s1_allow_bits(ap1, ap2, uxn, pxn);
    if ((access_al & allow_bit(access, el0, pan)) == 0) return fault(1, FK_PERMISSION, level, wr);
    if (update && want != desc) {
      if (s2_on && s2_translate(dipa, ARM_WRITE, 0, 1, flags) != STATUS_OK) { a_flags |= FF_WRITE; return STATUS_ARM_FAULT; }
      if (!cas_entry(host, desc, want)) return RETRY;
      counter_add(C_AD_WRITES, 1);
    }
    u64 final_desc = update ? want : desc;
    al = (final_desc & D_AF) != 0
      ? s1_allow_bits((final_desc & D_AP1) != 0 && (tattr & D_APTABLE0) == 0,
        (final_desc & D_AP2) != 0 || (tattr & D_APTABLE1) != 0, uxn, pxn)
      : 0;
    ipa = oa | (va & pmask);
    s1_shift = (u32)shift;
    s1_level = level;
    global = (desc & D_NG) == 0;
  }
  a_ipa = ipa;
  u64 pa = ipa;
  u32 shift_out = s1_shift;
  if (s2_on && !debug) {
    u32 s = s2_translate(ipa, access, el0, 0, flags);
    if (s != STATUS_OK) return s;
    pa = s2_pa;
    if (s2_shift < shift_out || !s1_on) shift_out = s2_shift;
    if (!s1_on) s1_level = s2_level;
    u32 s2a = s2_allow, c = 0;
    if (s2a & S2AL_R) c |= AL_EL0_R | AL_EL1_R | AL_EL1P_R;
    if (s2a & S2AL_W) c |= AL_EL0_W | AL_EL1_W | AL_EL1P_W;
    if (s2a & S2AL_X0) c |= AL_EL0_X;
    if (s2a & S2AL_X1) c |= AL_EL1_X;
    al &= c;
  }
  a_pa = pa;
  a_shift = shift_out;
  a_s1_shift = s1_shift;
  a_level = s1_level;
  a_attr = al | (global ? A_GLOBAL : 0);
  return STATUS_OK;
}

static u32 s1_walk(u64 va, u32 access, int el0, u32 flags) {
  if (s1_on) counter_add(C_WALKS, 1);
  for (;;) {
    u32 s = s1_walk_once(va, access, el0, flags);
    if (s != RETRY) return s;
    counter_add(C_WALK_RETRIES, 1);
  }
}

// ---- translate (mmu.ts armTranslateSlow / armTranslate / armBatchHits / armTranslateBatch)

static inline u64 untag(u64 va) { return (u64)((i64)(va << 8) >> 8); }
static inline int e0pd_blocks(u64 va, int el0) {
  return el0 && (tcr & (((va >> 55) & 1) != 0 ? TCR_E0PD1 : TCR_E0PD0)) != 0;
}

static NOINLINE u32 arm_translate_slow(u64 va, u32 access, int el0) {
  int canonical = ((i64)(va << 8) >> 8) == (i64)va;
  u64 key = va;
  if (!canonical) {
    int upper = ((va >> 55) & 1) != 0;
    int tbi = (tcr & (upper ? TCR_TBI1 : TCR_TBI0)) != 0 && !(access == ARM_FETCH && (tcr & (upper ? TCR_TBID1 : TCR_TBID0)) != 0);
    if (tbi) { key = untag(va); canonical = 1; }
  }
  if (tlb_on && s1_on && canonical && !e0pd_blocks(va, el0)) {
    u64 vpn = (key >> 12) & VPN_MASK;
    counter_add(C_LOOKUPS, 1);
    u8 *e = slot_addr(vpn, cur_salt);
    int hit = ld64(e + E_KEY) == (cur_key_hi | vpn);
    if (!hit && glob_live) {
      e = slot_addr(vpn, glob_salt);
      hit = ld64(e + E_KEY) == (glob_key_hi | vpn);
    }
    if (hit) {
      u32 attr = ld32(e + E_ATTR);
      if ((attr & allow_bit(access, el0, pan)) != 0) {
        counter_add(C_HITS, 1);
        a_pa = ld64(e + E_PA) | (va & 0xfff);
        u32 st = ld32(e + E_STATUS);
        a_level = (st >> BS_LEVEL_SHIFT) & 0xff;
        a_shift = (st >> BS_PSHIFT_SHIFT) & 31;
        return STATUS_OK;
      }
      tlb_drop(e);
    }
    counter_add(C_MISSES, 1);
  }
  u32 s = s1_walk(va, access, el0, AWALK_UPDATE);
  if (s != STATUS_OK) { counter_add(C_FAULTS, 1); return s; }
  if (tlb_on && s1_on) {
    u64 key = (untag(va) >> 12) & VPN_MASK;
    u32 attr = a_attr | (a_s1_shift << A_PSHIFT_SHIFT) | (a_level << A_LEVEL_SHIFT);
    tlb_fill_report(key, a_pa & ~(u64)0xfff, attr, a_shift);
  }
  return STATUS_OK;
}

static u32 store_result(u32 s) {
  result.status = s;
  if (s == STATUS_OK) {
    result.pa = a_pa;
    result.ipa = a_ipa;
    result.level = a_level;
    result.shift = a_shift;
  } else {
    result.pa = 0;
    result.ipa = a_stage == 2 ? a_ipa : 0;
    result.level = a_level;
    result.shift = 0;
    result.fsc = a_fsc;
    result.stage = a_stage;
    result.fflags = a_flags;
    result.kind = a_kind;
  }
  return s;
}

static NOINLINE u32 arm_translate(u64 va, u32 access, u32 el0) {
  if (access > ARM_FETCH) return store_result(STATUS_EACCESS);
  return store_result(arm_translate_slow(va, access, el0 != 0));
}

static u64 batch_va[BATCH_MAX], batch_pa[BATCH_MAX];
static u32 batch_status[BATCH_MAX];
static u8 batch_access[BATCH_MAX];

static NOINLINE u32 arm_batch_hits(u32 i, u32 count, u8 *tlb, u64 key_hi, u64 salt, u64 mask, u32 bits, int e0pd_lo, int e0pd_hi) {
  for (; i < count; i++) {
    u64 va = batch_va[i];
    if (((i64)(va << 8) >> 8) != (i64)va || ((va >> 63) != 0 ? e0pd_hi : e0pd_lo)) break;
    u64 vpn = (va >> 12) & VPN_MASK;
    u8 *e = tlb + ((size_t)((vpn ^ salt) & mask) << 5);
    if (ld64(e + E_KEY) != (key_hi | vpn)) break;
    u32 access = batch_access[i];
    if (access > ARM_FETCH || (ld32(e + E_ATTR) & ((bits >> (access << 3)) & 0xff)) == 0) break;
    batch_pa[i] = ld64(e + E_PA) | (va & 0xfff);
    batch_status[i] = ld32(e + E_STATUS);
  }
  return i;
}

static NOINLINE u32 arm_translate_batch(u32 count, u32 el0) {
  if (count > BATCH_MAX) count = BATCH_MAX;
  int is_el0 = el0 != 0;
  int fast = tlb_on && s1_on;
  u32 bits = allow_bit(ARM_READ, is_el0, pan) | (allow_bit(ARM_WRITE, is_el0, pan) << 8) | (allow_bit(ARM_FETCH, is_el0, pan) << 16);
  int e0pd_lo = is_el0 && (tcr & TCR_E0PD0) != 0, e0pd_hi = is_el0 && (tcr & TCR_E0PD1) != 0;
  u64 hits = 0;
  u32 faults = 0, i = 0;
  while (i < count) {
    if (fast) {
      u32 j = arm_batch_hits(i, count, tlb_base, cur_key_hi, cur_salt, tlb_mask, bits, e0pd_lo, e0pd_hi);
      hits += (u64)(j - i);
      i = j;
      if (i >= count) break;
    }
    u64 va = batch_va[i];
    u32 access = batch_access[i];
    u32 at = i++;
    if (access > ARM_FETCH) {
      faults++;
      batch_pa[at] = 0;
      batch_status[at] = (u32)STATUS_EACCESS << BS_STATUS_SHIFT;
      continue;
    }
    u32 s = arm_translate_slow(va, access, is_el0);
    if (s == STATUS_OK) {
      batch_pa[at] = a_pa;
      batch_status[at] = (a_shift << BS_PSHIFT_SHIFT) | (a_level << BS_LEVEL_SHIFT);
    } else {
      faults++;
      batch_pa[at] = a_stage == 2 ? a_ipa : 0;
      batch_status[at] = (s << BS_STATUS_SHIFT) | ((a_flags & FF_WRITE) != 0 ? 1u << 16 : 0)
        | (a_level << BS_LEVEL_SHIFT) | ((a_flags & FF_S1PTW) != 0 ? 0x80 : 0) | (a_stage == 2 ? 0x40 : 0) | (a_fsc & 0x3f);
    }
  }
  if (hits != 0) {
    counter_add(C_LOOKUPS, hits);
    counter_add(C_HITS, hits);
  }
  return faults;
}

// ---- harness (as x86.c) -----------------------------------------------------

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static u32 mix(u32 h, u32 x) { return h * 31u + x; }

static u32 n_addr, el0_flag, chunk, single_chunk, slice, single_slice;
// The address list; the batch arrays get the slice being translated.
static u64 src_va[BATCH_MAX];
static u8 src_access[BATCH_MAX];

/** Offset of the next slice of `size` addresses, counted in `*k` (0 when a repetition covers the whole list). */
static u32 next_slice(u32 size, u32 *k) {
  if (size == n_addr) return 0;
  return ((*k)++ % (n_addr / size)) * size;
}
static volatile u32 sink;

static void read_exact(FILE *f, void *p, size_t n, const char *what) {
  if (n && fread(p, 1, n, f) != n) { fprintf(stderr, "arm64-native: short read (%s)\n", what); exit(2); }
}

static u32 run_batch(void) {
  if (chunk != n_addr) {
    u32 off = next_slice(chunk, &slice);
    memcpy(batch_va, src_va + off, (size_t)chunk * 8);
    memcpy(batch_access, src_access + off, chunk);
  }
  return arm_translate_batch(chunk, el0_flag);
}

static u32 run_single(void) {
  u32 acc = 0, off = next_slice(single_chunk, &single_slice);
  for (u32 i = off; i < off + single_chunk; i++) {
    u32 s = arm_translate(src_va[i], src_access[i], el0_flag);
    acc += s + result.level;
  }
  return acc;
}

static u32 batch_checksum(void) {
  memcpy(batch_va, src_va, (size_t)n_addr * 8);
  memcpy(batch_access, src_access, n_addr);
  arm_translate_batch(n_addr, el0_flag);
  u32 h = 0;
  for (u32 i = 0; i < n_addr; i++) {
    h = mix(h, (u32)batch_pa[i]);
    h = mix(h, (u32)(batch_pa[i] >> 32));
    h = mix(h, batch_status[i]);
  }
  return h;
}

static u32 single_checksum(void) {
  u32 h = 0;
  for (u32 i = 0; i < n_addr; i++) {
    u32 s = arm_translate(src_va[i], src_access[i], el0_flag);
    h = mix(h, (u32)result.pa);
    h = mix(h, (u32)(result.pa >> 32));
    h = mix(h, (s << 16) | (result.level << 8) | result.shift);
  }
  return h;
}

// One repetition is one kernel call over `chunk` addresses, like one
// tinybench sample of the wasm batch; repetitions continue until `ms`
// milliseconds have passed (at least 11).
static void measure(const char *name, u32 (*kernel)(void), u32 (*checksum)(void), u32 per_rep, double ms) {
  enum { MAX_REPS = 1 << 16 };
  static double samples[MAX_REPS];
  for (int k = 0; k < 3; k++) sink += kernel();
  memset(counters, 0, sizeof counters);
  int reps = 0;
  double start = now_ns();
  while (reps < MAX_REPS && (reps < 11 || now_ns() - start < ms * 1e6)) {
    double t0 = now_ns();
    sink += kernel();
    samples[reps++] = (now_ns() - t0) / per_rep;
  }
  double ops = (double)reps * per_rep;
  qsort(samples, reps, sizeof samples[0], cmp_double);
  double med = reps % 2 ? samples[reps / 2] : (samples[reps / 2 - 1] + samples[reps / 2]) / 2;
  u64 c[COUNTER_COUNT];
  memcpy(c, counters, sizeof c);
  u32 sum = checksum();
  printf("{\"kernel\":\"%s\",\"nsPerOp\":%.4f,\"minNsPerOp\":%.4f,\"reps\":%d,\"opsPerRep\":%u,"
         "\"hits\":%.4f,\"misses\":%.4f,\"walks\":%.4f,\"ptRefs\":%.4f,\"adWrites\":%.4f,\"checksum\":%u,\"sink\":%u}\n",
         name, med, samples[0], reps, per_rep,
         c[C_HITS] / ops, c[C_MISSES] / ops, c[C_WALKS] / ops, c[C_PT_REFS] / ops, c[C_AD_WRITES] / ops, sum, sink);
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: arm64-native INPUT MS_PER_KERNEL\n"); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  double ms = atof(argv[2]);
  u32 hdr[2];
  read_exact(f, hdr, sizeof hdr, "header");
  if (hdr[0] != 0x31414d56u || hdr[1] != 2) { fprintf(stderr, "arm64-native: bad input file\n"); return 2; }
  u64 regs[7];
  read_exact(f, regs, sizeof regs, "registers");
  u32 p[11];
  read_exact(f, p, sizeof p, "parameters");
  u32 r_pan = p[0], r_tlb_on = p[1], cur_tag = p[2], glob_tag = p[3], glive = p[4];
  s2_tag = p[5];
  el0_flag = p[6];
  n_addr = p[7];
  u32 entries = p[8];
  chunk = p[9] != 0 ? p[9] : n_addr;
  single_chunk = p[10] != 0 ? p[10] : n_addr;
  if (n_addr > BATCH_MAX || entries == 0 || (entries & (entries - 1)) != 0 || chunk > n_addr || n_addr % chunk != 0
      || single_chunk > n_addr || n_addr % single_chunk != 0) {
    fprintf(stderr, "arm64-native: bad sizes\n");
    return 2;
  }
  u64 img[2];
  read_exact(f, img, sizeof img, "image header");
  slot_base = img[0];
  eager_bytes = img[1];
  ram = aligned_alloc(4096, (eager_bytes + 4095) & ~4095ull);
  tlb_base = aligned_alloc(4096, (size_t)entries * TLB_ENTRY);
  if (!ram || !tlb_base) { fprintf(stderr, "arm64-native: out of memory\n"); return 2; }
  read_exact(f, ram, eager_bytes, "image");
  read_exact(f, tlb_base, (size_t)entries * TLB_ENTRY, "tlb");
  read_exact(f, src_va, (size_t)n_addr * 8, "va");
  read_exact(f, src_access, n_addr, "access");
  memcpy(batch_va, src_va, (size_t)n_addr * 8);
  memcpy(batch_access, src_access, n_addr);
  fclose(f);

  tlb_mask = entries - 1;
  cur_key_hi = (u64)cur_tag << 48;
  cur_salt = salt_of(cur_tag);
  glob_key_hi = (u64)glob_tag << 48;
  glob_salt = salt_of(glob_tag);
  glob_live = glive != 0;
  int rc = load_regs(regs[0], regs[1], regs[2], regs[3], regs[4], regs[5], regs[6], r_pan, r_tlb_on);
  if (rc != 0) { fprintf(stderr, "arm64-native: registers rejected (%d)\n", rc); return 2; }

  sink += run_batch(); // warm caches; steady state (AF already set by the wasm warm-up)
  measure("batch", run_batch, batch_checksum, chunk, ms);
  measure("single", run_single, single_checksum, single_chunk, ms);
  return 0;
}
