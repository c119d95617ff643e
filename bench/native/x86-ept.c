// Native C baseline for the EPT benchmark (bench/x86-ept.bench.ts): the
// two-dimensional walk of an x86-64 guest under EPT, as a native hypervisor
// or emulator would write it, over one flat array of host-physical memory (a
// copy of the machine memory the EPT and guest tables live in). Every guest
// paging-structure load is a guest-physical access translated through a full
// EPT walk first; then the final gpa is translated through EPT. No TLB, no
// paging-structure or EPT caches: every translation is a cold 2D walk, which
// loads (n+1)(m+1) − 1 entries for n guest and m EPT levels (24 for 4×4, 35
// for 5×5).
//
// Rules: Intel SDM Vol.3A §4.5–4.8 for the guest (the rule code of
// bench/native/x86.c: packed rights table, reserved masks, #PF error code,
// A/D with compare-exchange); Vol.3C §29.3.2 (EPT entries), §29.3.3.1
// (misconfigurations), §29.3.3.2 (violations and their exit qualification),
// §29.3.3.3 (order), §29.3.4 (EPT A/D: with EPTP bit 6 every guest
// paging-structure access is treated as a write). Semantics are those of
// src/ref/ept-walk.ts refTranslateX86Ept with executeOnly, adSupported and
// fiveLevel on (test/bench/x86-ept-native.test.ts replays the reference on
// the same bytes and compares every result and the memory after).
//
// Usage: x86-ept-native INPUT MS [CHUNK]         time the batch kernel for MS ms,
//                                                CHUNK addresses per call (default all)
//        x86-ept-native INPUT --check OUT_IMAGE  translate each address once, in
//                                                order; one result line each, then
//                                                the memory image to OUT_IMAGE
// INPUT (little-endian), written by bench/x86-ept.bench.ts and the test:
//   u32 magic 'VME1', u32 version 1
//   u64 cr0, cr3, cr4, efer, pkru, rflags, eptp
//   u32 maxphy, mbec, user, count
//   u64 image_base (hpa), image_len
//   u8  image[image_len]; u64 va[count]; u8 access[count] (0 read, 1 write, 2 fetch)
// Output (timing): one JSON object. Output (--check): per address
//   "status pa gpa level shift error qualification faultgpa" (numbers in hex):
//   status 0 ok, 1 #PF, 2 #GP, 3 abort, 6 EPT violation, 7 EPT misconfiguration;
//   gpa the guest-physical address (ok) or the hpa outside memory (abort);
//   error the #PF error code, or the abort stage (1 EPT, 2 guest); faultgpa the
//   gpa of an EPT violation, misconfiguration or abort.

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

enum { STATUS_OK = 0, STATUS_PF = 1, STATUS_GP = 2, STATUS_ABORT = 3, STATUS_EPT_VIOLATION = 6, STATUS_EPT_MISCONFIG = 7 };
#define RETRY 0xffu
// r_err of STATUS_ABORT: the entry outside memory is an EPT entry or a guest entry.
#define ABORT_EPT 1u
#define ABORT_GUEST 2u
#define BATCH_MAX 16384u
#define BS_STATUS_SHIFT 28
#define BS_PSHIFT_SHIFT 16
#define BS_LEVEL_SHIFT 8

// guest paging entries (SDM Vol.3A §4.5)
#define PTE_P (1ull << 0)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_PKEY_SHIFT 59
#define PTE_ADDR_MASK_52 0x000ffffffffff000ull
#define PTE_RSVD_2M 0x1fe000ull
#define PTE_RSVD_1G 0x3fffe000ull
#define CR0_PG (1ull << 31)
#define CR0_WP (1ull << 16)
#define CR4_PAE (1ull << 5)
#define CR4_LA57 (1ull << 12)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)
#define CR4_PKE (1ull << 22)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)
#define RFLAGS_AC (1ull << 18)
#define ACC_EXEC 1u
#define ACC_WRITE 2u
#define ACC_USER 4u
#define PFERR_P 1u
#define PFERR_W 2u
#define PFERR_U 4u
#define PFERR_RSVD 8u
#define PFERR_FETCH 16u
#define PFERR_PK 32u
#define ACCESS_READ 0u
#define ACCESS_WRITE 1u
#define ACCESS_FETCH 2u

// EPT entries and EPTP (SDM Vol.3C §29.3.2, §25.6.11)
#define EPT_R (1ull << 0)
#define EPT_W (1ull << 1)
#define EPT_X (1ull << 2)
#define EPT_RWX 7ull
#define EPT_MT_SHIFT 3
#define EPT_PS (1ull << 7)
#define EPT_A (1ull << 8)
#define EPT_D (1ull << 9)
#define EPT_UX (1ull << 10)
#define EPTP_PWL_SHIFT 3
#define EPTP_AD (1ull << 6)
#define QUAL_READ 1u
#define QUAL_WRITE 2u
#define QUAL_FETCH 4u
#define QUAL_RWX_SHIFT 3
#define QUAL_USER_EXEC (1u << 6)
#define QUAL_GVA_VALID (1u << 7)
#define QUAL_GVA_TRANSLATED (1u << 8)

// ---- host-physical memory: the copied image --------------------------------

static u8 *ram;
static u64 ram_base, ram_bytes;

static inline u8 *host_of(u64 hpa) {
  u64 off = hpa - ram_base;
  return off < ram_bytes ? ram + off : NULL;
}
static inline u64 load_entry(u8 *host) { return __atomic_load_n((u64 *)host, __ATOMIC_SEQ_CST); }
static inline int cas_entry(u8 *host, u64 expected, u64 desired) {
  return __atomic_compare_exchange_n((u64 *)host, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static u64 c_walks, c_guest_refs, c_ept_refs, c_ad_writes, c_restarts, c_faults;

// ---- guest mode (the rule tables of bench/native/x86.c load_control) -----------

static int paging_on, pk_active, wp;
static u32 root_level, canon_shift, pkru;
static u64 cr3, addr_mask, rsvd_base, perm_pack, err_pack;

static void load_control(u64 cr0, u64 cr3v, u64 cr4, u64 efer, u64 pkruv, u64 rflags, u32 max_phy) {
  cr3 = cr3v;
  paging_on = (cr0 & CR0_PG) != 0;
  int long_mode = (efer & (EFER_LME | EFER_LMA)) != 0 && (cr4 & CR4_PAE) != 0;
  if (paging_on && !long_mode) { fprintf(stderr, "x86-ept-native: paging without long mode\n"); exit(2); }
  int la57 = (cr4 & CR4_LA57) != 0;
  root_level = la57 ? 5 : 4;
  canon_shift = la57 ? 7 : 16;
  addr_mask = ((((u64)1) << max_phy) - 1) & ~(u64)0xfff;
  int nxe = (efer & EFER_NXE) != 0;
  rsvd_base = (PTE_ADDR_MASK_52 & ~addr_mask) | (nxe ? 0 : ((u64)1 << 63));
  pk_active = (cr4 & CR4_PKE) != 0 && long_mode;
  pkru = (u32)pkruv;
  wp = (cr0 & CR0_WP) != 0;
  int smep = (cr4 & CR4_SMEP) != 0;
  int smap_on = (cr4 & CR4_SMAP) != 0 && (rflags & RFLAGS_AC) == 0;
  u64 perm = 0, errs = 0;
  for (u32 user = 0; user < 2; user++) {
    for (u32 access = 0; access < 3; access++) {
      u32 i = access + 3 * user, mask = 0;
      for (u32 acc = 0; acc < 8; acc++) {
        int w = (acc & ACC_WRITE) != 0, u = (acc & ACC_USER) != 0, x = (acc & ACC_EXEC) != 0, fault;
        if (user) fault = !u || (access == ACCESS_WRITE && !w) || (access == ACCESS_FETCH && !x);
        else if (access == ACCESS_FETCH) fault = (u && smep) || !x;
        else fault = (u && smap_on) || (access == ACCESS_WRITE && wp && !w);
        if (fault) mask |= 1u << acc;
      }
      perm |= (u64)mask << (i * 8);
      u32 e = 0;
      if (access == ACCESS_WRITE) e |= PFERR_W;
      if (user) e |= PFERR_U;
      if (access == ACCESS_FETCH && (nxe || smep)) e |= PFERR_FETCH;
      errs |= (u64)e << (i * 8);
    }
  }
  perm_pack = perm;
  err_pack = errs;
}

static inline u32 err_base(u32 ai) { return (u32)(err_pack >> (ai * 8)) & 0xff; }
static inline int rights_fault(u32 ai, u32 acc) { return ((perm_pack >> (ai * 8 + acc)) & 1) != 0; }
static int pk_fault(u32 access, u32 user, u32 acc, u32 pkey) {
  if (!pk_active || access == ACCESS_FETCH || (acc & ACC_USER) == 0) return 0;
  u32 bits = (pkru >> (pkey * 2)) & 3;
  if (bits & 1) return 1;
  return (bits & 2) != 0 && access == ACCESS_WRITE && (user != 0 || wp);
}

// ---- EPT mode (the decoded EPTP) -------------------------------------------

static u64 ept_root, ept_addr_mask, ept_rsvd_hi, ept_perm_mask;
static u32 ept_levels;
static int ept_ad, mbec;

static void load_eptp(u64 eptp, u32 max_phy, u32 mbec_on) {
  ept_levels = ((eptp >> EPTP_PWL_SHIFT) & 7) == 4 ? 5 : 4;
  ept_ad = (eptp & EPTP_AD) != 0;
  ept_addr_mask = ((((u64)1) << max_phy) - 1) & ~(u64)0xfff;
  ept_root = eptp & ept_addr_mask;
  ept_rsvd_hi = PTE_ADDR_MASK_52 & ~ept_addr_mask; // bits 51:M
  mbec = mbec_on != 0;
  ept_perm_mask = mbec ? EPT_RWX | EPT_UX : EPT_RWX;
}

// Results of the last EPT walk (e_*) and of the last translation (r_*).
static u64 e_hpa;
static u32 e_level, e_shift, e_rwx;
static u64 r_pa, r_gpa, r_fault_gpa;
static u32 r_level, r_shift, r_err, r_qual;

static inline u32 qualification(u32 type, int paging_structure, u64 rights, int gva_valid) {
  u32 q;
  if (paging_structure && ept_ad) q = QUAL_READ | QUAL_WRITE;
  else q = type == ACCESS_READ ? QUAL_READ : type == ACCESS_WRITE ? QUAL_WRITE : QUAL_FETCH;
  q |= (u32)(rights & EPT_RWX) << QUAL_RWX_SHIFT;
  if (mbec && (rights & EPT_UX) != 0) q |= QUAL_USER_EXEC;
  if (gva_valid) {
    q |= QUAL_GVA_VALID;
    if (!paging_structure) q |= QUAL_GVA_TRANSLATED;
  }
  return q;
}

// Reserved bits, W without R, and leaf memory types 2, 3, 7 (execute-only is supported).
static inline int ept_misconfigured(u32 level, u64 e, int leaf) {
  if ((e & (EPT_R | EPT_W)) == EPT_W) return 1;
  u64 rsvd = ept_rsvd_hi;
  if (level >= 4) rsvd |= 0xf8ull;                   // 7:3
  else if (!leaf) rsvd |= 0x78ull;                   // 6:3
  else if (level == 3) rsvd |= 0x3ffff000ull;        // 29:12
  else if (level == 2) rsvd |= 0x1ff000ull;          // 20:12
  if ((e & rsvd) != 0) return 1;
  if (leaf) {
    u32 mt = (u32)(e >> EPT_MT_SHIFT) & 7;
    if (mt == 2 || mt == 3 || mt == 7) return 1;
  }
  return 0;
}

// One EPT translation of `gpa`: STATUS_OK with e_hpa / e_level / e_shift /
// e_rwx, or a fault in r_* (r_fault_gpa = gpa). A lost A/D compare-exchange
// restarts this EPT walk.
static inline u32 ept_translate(u64 gpa, u32 type, int paging_structure, int user_linear) {
  for (;;) {
    u64 table = ept_root, rights = ept_perm_mask;
    u32 level = ept_levels;
    u32 shift = 12 + 9 * (level - 1);
    u64 refs = 0;
    int restart = 0;
    for (;;) {
      u64 hpa = table + (((gpa >> shift) & 511) << 3);
      u8 *host = host_of(hpa);
      if (host == NULL) {
        c_ept_refs += refs;
        r_fault_gpa = gpa; r_gpa = hpa; r_level = level; r_err = ABORT_EPT; r_qual = 0;
        return STATUS_ABORT;
      }
      u64 e = load_entry(host);
      refs++;
      u64 perms = e & ept_perm_mask;
      rights &= perms;
      if (perms == 0) {
        c_ept_refs += refs;
        r_fault_gpa = gpa; r_level = level; r_err = 0;
        r_qual = qualification(type, paging_structure, rights, 1);
        return STATUS_EPT_VIOLATION;
      }
      int leaf = level == 1 || ((e & EPT_PS) != 0 && (level == 2 || level == 3));
      if (ept_misconfigured(level, e, leaf)) {
        c_ept_refs += refs;
        r_fault_gpa = gpa; r_level = level; r_err = 0; r_qual = 0;
        return STATUS_EPT_MISCONFIG;
      }
      if (!leaf) {
        if (ept_ad && (e & EPT_A) == 0) {
          if (!cas_entry(host, e, e | EPT_A)) { restart = 1; break; }
          c_ad_writes++;
        }
        table = e & ept_addr_mask;
        level--;
        shift -= 9;
        continue;
      }
      c_ept_refs += refs;
      int allowed;
      if (paging_structure && ept_ad) allowed = (rights & (EPT_R | EPT_W)) == (EPT_R | EPT_W);
      else if (type == ACCESS_READ) allowed = (rights & EPT_R) != 0;
      else if (type == ACCESS_WRITE) allowed = (rights & EPT_W) != 0;
      else allowed = (rights & (mbec && user_linear ? EPT_UX : EPT_X)) != 0;
      if (!allowed) {
        r_fault_gpa = gpa; r_level = level; r_err = 0;
        r_qual = qualification(type, paging_structure, rights, 1);
        return STATUS_EPT_VIOLATION;
      }
      if (ept_ad) {
        u64 want = e | EPT_A | (type == ACCESS_WRITE || paging_structure ? EPT_D : 0);
        if (want != e) {
          if (!cas_entry(host, e, want)) { refs = 0; restart = 1; break; }
          c_ad_writes++;
        }
      }
      u64 pmask = (((u64)1) << shift) - 1;
      e_hpa = (e & ept_addr_mask & ~pmask) | (gpa & pmask);
      e_level = level;
      e_shift = shift;
      e_rwx = (u32)rights;
      return STATUS_OK;
    }
    if (restart) { c_ept_refs += refs; c_restarts++; }
  }
}

// ---- the 2D walk -------------------------------------------------------------

// The A/D update of a guest entry loaded through an EPT translation with
// rights `rwx` at EPT level `level`: a data write, refused unless W.
static inline u32 guest_entry_write_refused(u64 entry_gpa, u32 rwx, u32 level) {
  if ((rwx & EPT_W) != 0) return 0;
  r_fault_gpa = entry_gpa; r_level = level; r_err = 0;
  r_qual = qualification(ACCESS_WRITE, 1, rwx, 1);
  return STATUS_EPT_VIOLATION;
}

static u32 walk2d_once(u64 va, u32 access, u32 user) {
  u32 ai = access + (user != 0 ? 3 : 0);
  u64 table = cr3 & addr_mask;
  u32 acc = 7, level = root_level;
  u32 shift = 12 + 9 * (level - 1);
  int user_page = 1;
  for (;;) {
    u64 entry_gpa = table + (((va >> shift) & 511) << 3);
    u32 s = ept_translate(entry_gpa, ACCESS_READ, 1, 0);
    if (s != STATUS_OK) return s;
    u8 *host = host_of(e_hpa);
    if (host == NULL) {
      r_fault_gpa = entry_gpa; r_gpa = e_hpa; r_level = level; r_err = ABORT_GUEST; r_qual = 0;
      return STATUS_ABORT;
    }
    u64 pte = load_entry(host);
    c_guest_refs++;
    if ((pte & PTE_P) == 0) { r_level = level; r_err = err_base(ai); return STATUS_PF; }
    int ps = (pte & PTE_PS) != 0;
    u64 rsvd = rsvd_base;
    if (level >= 4) rsvd |= PTE_PS;
    else if (ps && level == 3) rsvd |= PTE_RSVD_1G;
    else if (ps && level == 2) rsvd |= PTE_RSVD_2M;
    if ((pte & rsvd) != 0) { r_level = level; r_err = err_base(ai) | PFERR_P | PFERR_RSVD; return STATUS_PF; }
    acc &= (u32)(pte & 6) | ((u32)(pte >> 63) ^ 1);
    user_page = (acc & ACC_USER) != 0;
    int leaf = level == 1 || (ps && (level == 2 || level == 3));
    if (!leaf) {
      if ((pte & PTE_A) == 0) {
        if (guest_entry_write_refused(entry_gpa, e_rwx, e_level)) return STATUS_EPT_VIOLATION;
        if (!cas_entry(host, pte, pte | PTE_A)) return RETRY;
        c_ad_writes++;
      }
      table = pte & addr_mask;
      level--;
      shift -= 9;
      continue;
    }
    u32 pkey = (u32)(pte >> PTE_PKEY_SHIFT) & 15;
    int rf = rights_fault(ai, acc);
    int pf = pk_fault(access, user, acc, pkey);
    if (rf || pf) { r_level = level; r_err = err_base(ai) | PFERR_P | (pf ? PFERR_PK : 0); return STATUS_PF; }
    u64 bits = PTE_A | (access == ACCESS_WRITE ? PTE_D : 0);
    if ((pte & bits) != bits) {
      if (guest_entry_write_refused(entry_gpa, e_rwx, e_level)) return STATUS_EPT_VIOLATION;
      if (!cas_entry(host, pte, pte | bits)) return RETRY;
      c_ad_writes++;
    }
    u64 pmask = (((u64)1) << shift) - 1;
    u64 gpa = (pte & addr_mask & ~pmask) | (va & pmask);
    s = ept_translate(gpa, access, 0, user_page);
    if (s != STATUS_OK) return s;
    r_pa = e_hpa;
    r_gpa = gpa;
    r_level = level;
    r_shift = shift;
    r_err = 0;
    return STATUS_OK;
  }
}

// One translation of linear `va` (CPL 3 iff `user`): the batch's slow path.
static NOINLINE u32 translate(u64 va, u32 access, u32 user) {
  c_walks++;
  if (!paging_on) {
    u32 s = ept_translate(va, access, 0, 0);
    if (s != STATUS_OK) { c_faults++; return s; }
    r_pa = e_hpa; r_gpa = va; r_level = 0; r_shift = 12; r_err = 0;
    return STATUS_OK;
  }
  if (((i64)(va << canon_shift) >> canon_shift) != (i64)va) { r_level = 0; r_err = 0; c_faults++; return STATUS_GP; }
  for (;;) {
    u32 s = walk2d_once(va, access, user);
    if (s == RETRY) { c_restarts++; continue; }
    if (s != STATUS_OK) c_faults++;
    return s;
  }
}

static u64 batch_va[BATCH_MAX], batch_pa[BATCH_MAX];
static u32 batch_status[BATCH_MAX];
static u8 batch_access[BATCH_MAX];

static inline u32 status_word(u32 s) {
  return (s << BS_STATUS_SHIFT) | (s == STATUS_OK ? r_shift << BS_PSHIFT_SHIFT : 0)
    | (r_level << BS_LEVEL_SHIFT) | (s == STATUS_PF ? r_err : 0);
}

// The batch kernel: one translation per address, pa (host-physical) and a
// status word per address, the number of faults returned.
static NOINLINE u32 translate_batch(u32 count, u32 user) {
  u32 faults = 0;
  for (u32 i = 0; i < count; i++) {
    u32 s = translate(batch_va[i], batch_access[i], user);
    batch_pa[i] = s == STATUS_OK ? r_pa : 0;
    batch_status[i] = status_word(s);
    if (s != STATUS_OK) faults++;
  }
  return faults;
}

// ---- harness ---------------------------------------------------------------

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

static u32 n_addr, user_flag;
static volatile u32 sink;

static void read_exact(FILE *f, void *p, size_t n, const char *what) {
  if (n && fread(p, 1, n, f) != n) { fprintf(stderr, "x86-ept-native: short read (%s)\n", what); exit(2); }
}

// Checksum of one pass (the formula of bench/x86-ept.bench.ts): per address,
// pa low, pa high, then level << 8 | page shift; a fault mixes 0, 0, 1 << 16 | level << 8.
static u32 pass_checksum(void) {
  u32 h = 0;
  for (u32 i = 0; i < n_addr; i++) {
    u32 s = translate(batch_va[i], batch_access[i], user_flag);
    if (s != STATUS_OK) { h = mix(mix(mix(h, 0), 0), (1u << 16) | (r_level << 8)); continue; }
    h = mix(mix(mix(h, (u32)r_pa), (u32)(r_pa >> 32)), (r_level << 8) | r_shift);
  }
  return h;
}

// Each repetition is one batch call over a `chunk`-address slice of the list
// (the next slice each time), like one tinybench sample of the wasm batch;
// repetitions continue until `ms` milliseconds have passed (at least 11).
static void measure(double ms, u32 chunk) {
  enum { MAX_REPS = 1 << 16 };
  static double samples[MAX_REPS];
  u32 slices = n_addr / chunk;
  sink += translate_batch(n_addr, user_flag); // the whole list once: A/D set, caches warm
  c_walks = c_guest_refs = c_ept_refs = c_ad_writes = c_restarts = c_faults = 0;
  int reps = 0;
  double start = now_ns();
  u64 vas[BATCH_MAX];
  u8 accs[BATCH_MAX];
  memcpy(vas, batch_va, sizeof vas);
  memcpy(accs, batch_access, sizeof accs);
  while (reps < MAX_REPS && (reps < 11 || now_ns() - start < ms * 1e6)) {
    u32 k = (u32)reps % slices;
    memcpy(batch_va, vas + (size_t)k * chunk, (size_t)chunk * 8);
    memcpy(batch_access, accs + (size_t)k * chunk, chunk);
    double t0 = now_ns();
    sink += translate_batch(chunk, user_flag);
    samples[reps++] = (now_ns() - t0) / chunk;
  }
  memcpy(batch_va, vas, sizeof vas);
  memcpy(batch_access, accs, sizeof accs);
  double ops = (double)reps * chunk;
  qsort(samples, reps, sizeof samples[0], cmp_double);
  double med = reps % 2 ? samples[reps / 2] : (samples[reps / 2 - 1] + samples[reps / 2]) / 2;
  u64 walks = c_walks, grefs = c_guest_refs, erefs = c_ept_refs, ad = c_ad_writes, rs = c_restarts, fl = c_faults;
  u32 sum = pass_checksum();
  printf("{\"kernel\":\"batch\",\"nsPerOp\":%.4f,\"minNsPerOp\":%.4f,\"reps\":%d,\"opsPerRep\":%u,"
         "\"walks\":%.4f,\"ptRefs\":%.4f,\"guestRefs\":%.4f,\"eptRefs\":%.4f,\"adWrites\":%.4f,\"restarts\":%.4f,\"faults\":%.4f,"
         "\"checksum\":%u,\"sink\":%u}\n",
         med, samples[0], reps, chunk, walks / ops, (grefs + erefs) / ops, grefs / ops, erefs / ops, ad / ops, rs / ops, fl / ops,
         sum, sink);
  fflush(stdout);
}

static void check(const char *out_image) {
  for (u32 i = 0; i < n_addr; i++) {
    r_pa = r_gpa = r_fault_gpa = 0;
    r_level = r_shift = r_err = r_qual = 0;
    u32 s = translate(batch_va[i], batch_access[i], user_flag);
    printf("%x %llx %llx %x %x %x %x %llx\n", s, (unsigned long long)(s == STATUS_OK ? r_pa : 0),
           (unsigned long long)(s == STATUS_OK || s == STATUS_ABORT ? r_gpa : 0), r_level, s == STATUS_OK ? r_shift : 0,
           s == STATUS_PF || s == STATUS_ABORT ? r_err : 0, s == STATUS_EPT_VIOLATION ? r_qual : 0,
           (unsigned long long)(s == STATUS_EPT_VIOLATION || s == STATUS_EPT_MISCONFIG || s == STATUS_ABORT ? r_fault_gpa : 0));
  }
  FILE *f = fopen(out_image, "wb");
  if (!f || fwrite(ram, 1, ram_bytes, f) != ram_bytes || fclose(f) != 0) { perror(out_image); exit(2); }
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[2], "--check") == 0 && argc < 4)) {
    fprintf(stderr, "usage: x86-ept-native INPUT MS_PER_KERNEL [CHUNK] | x86-ept-native INPUT --check OUT_IMAGE\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  u32 hdr[2];
  read_exact(f, hdr, sizeof hdr, "header");
  if (hdr[0] != 0x31454d56u || hdr[1] != 1) { fprintf(stderr, "x86-ept-native: bad input file\n"); return 2; }
  u64 regs[7];
  read_exact(f, regs, sizeof regs, "registers");
  u32 p[4];
  read_exact(f, p, sizeof p, "parameters");
  u32 max_phy = p[0];
  user_flag = p[2];
  n_addr = p[3];
  if (n_addr == 0 || n_addr > BATCH_MAX || max_phy < 36 || max_phy > 52) { fprintf(stderr, "x86-ept-native: bad sizes\n"); return 2; }
  u64 img[2];
  read_exact(f, img, sizeof img, "image header");
  ram_base = img[0];
  ram_bytes = img[1];
  ram = aligned_alloc(4096, (ram_bytes + 4095) & ~4095ull);
  if (!ram) { fprintf(stderr, "x86-ept-native: out of memory\n"); return 2; }
  read_exact(f, ram, ram_bytes, "image");
  read_exact(f, batch_va, (size_t)n_addr * 8, "va");
  read_exact(f, batch_access, n_addr, "access");
  fclose(f);
  for (u32 i = 0; i < n_addr; i++) {
    if (batch_access[i] > ACCESS_FETCH) { fprintf(stderr, "x86-ept-native: bad access code\n"); return 2; }
  }

  load_control(regs[0], regs[1], regs[2], regs[3], regs[4], regs[5], max_phy);
  load_eptp(regs[6], max_phy, p[1]);

  if (strcmp(argv[2], "--check") == 0) {
    check(argv[3]);
    return 0;
  }
  u32 chunk = argc > 3 ? (u32)atoi(argv[3]) : n_addr;
  if (chunk == 0 || chunk > n_addr || n_addr % chunk != 0) { fprintf(stderr, "x86-ept-native: bad chunk\n"); return 2; }
  measure(atof(argv[2]), chunk);
  return 0;
}
