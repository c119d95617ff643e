// The per-vCPU software TLB: direct-mapped, context-tagged, generation-flushed.
//
// Follows the invalidation rules of Intel SDM Vol.3A §4.10.4 (tabulated in
// docs/mmu.md §5); the mechanism is architecture-neutral so the
// arm64 ASID/VMID contexts reuse it.
//
// Contexts and tags. A context slot names one address space whose entries are
// flushed together: a PCID (0..4095) or the global context (CTX_GLOBAL).
// Each slot holds a 16-bit tag, valid while its epoch equals the vCPU epoch.
// An entry matches only if its key carries the live tag of the context being
// looked up, so:
//   - flushing one context   = give it a fresh tag            O(1)
//   - flushing all contexts  = bump the epoch                 O(1)
//   - invalidating a page    = probe the slots it can occupy  O(1), or O(512)
//     for a 2 MiB page, O(min(2^18, entries)) for a 1 GiB page — only when
//     the context holds pieces of such pages.
// Dead entries stay in the array and are simply never matched; when the tag
// space runs out the whole array is cleared once (a rollover, as arm64 Linux
// does with ASIDs).
//
// Large pages are cached as 4 KiB pieces (QEMU's approach): the hit path is
// one index and one 64-bit compare for every page size.
//
//   idx = (vpn ^ salt(tag)) & (entries - 1)        key = tag << 48 | vpn
//
// Invariants:
//  - tag 0 is never live, so a zeroed entry never hits;
//  - CTX_LIVE of a live context counts exactly its entries in the array;
//  - an entry whose tag is not live is unreachable by lookup.

import {
  VCPU_CTX, CTX_STRIDE, CTX_TAG, CTX_EPOCH, CTX_LIVE, CTX_LIVE2M, CTX_LIVE1G, CTX_GLOBAL, CTX_SLOTS,
  T_EPOCH, T_NEXT_TAG, T_TOTAL_LIVE, T_INV_EPOCH, TAG_MAX, TLB_ENTRY, E_KEY, E_PA, E_ATTR, E_CTX, E_STATUS,
  BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT,
  VCPU_COUNTERS, C_FILLS, C_EVICTIONS, C_FLUSH_ALL, C_FLUSH_NONGLOBAL, C_FLUSH_CTX,
  C_DROPPED, C_ROLLOVERS, C_FLUSH_PROBES,
} from "./layout";

// attr field of an entry. Bits 22:0 belong to the architecture (x86: ACC,
// D, pkey; arm64: allow bits); bits 31:23 are read by the TLB itself.
export const A_ACC_MASK: u32 = 7; //        x86: X W U
export const A_DIRTY: u32 = 1 << 3; //      x86: D of the leaf
export const A_GLOBAL: u32 = 1 << 23; //    fill into the global context
export const A_PKEY_SHIFT: u32 = 16; //     x86: protection key, 4 bits
export const A_PSHIFT_SHIFT: u32 = 24; //   page shift of the page this piece belongs to (12, 21, 30)
export const A_LEVEL_SHIFT: u32 = 29; //    level of the leaf (x86 KVM numbering, arm64 Arm numbering)

export const VPN_MASK: u64 = (<u64>1 << 45) - 1;

// Instance state for the vCPU this instance runs.
export let vcpuBase: usize = 0;
export let tlbBase: usize = 0;
export let tlbMask: u64 = 0;
export let tlbEntries: u32 = 0;
/** Context slot of the current address space (the PCID in force). */
export let curCtx: u32 = 0;
export let curKeyHi: u64 = 0;
export let curSalt: u64 = 0;
export let globKeyHi: u64 = 0;
export let globSalt: u64 = 0;
/** True while the global context may hold live entries: gates the second probe. */
export let globLive: bool = false;
/** Context slot of global entries: CTX_GLOBAL on x86, the VMID's global context on arm64. */
export let globSlot: u32 = CTX_GLOBAL;

// @ts-ignore: decorator
@inline export function counterAdd(idx: u32, n: u64): void {
  const p = vcpuBase + VCPU_COUNTERS + (<usize>idx << 3);
  store<u64>(p, load<u64>(p) + n);
}

// @ts-ignore: decorator
@inline function ctxPtr(slot: u32): usize {
  return vcpuBase + VCPU_CTX + <usize>slot * CTX_STRIDE;
}

// @ts-ignore: decorator
@inline export function saltOf(tag: u32): u64 {
  return <u64>(tag * 0x9e3779b1);
}

// @ts-ignore: decorator
@inline export function slotAddr(vpn: u64, salt: u64): usize {
  return tlbBase + (<usize>((vpn ^ salt) & tlbMask) << 5);
}

/** Marks that an entry may have been dropped or stopped matching (T_INV_EPOCH). */
// @ts-ignore: decorator
@inline export function invalidated(): void {
  store<u32>(vcpuBase + T_INV_EPOCH, load<u32>(vcpuBase + T_INV_EPOCH) + 1);
}

function epoch(): u32 {
  return load<u32>(vcpuBase + T_EPOCH);
}

/** Live tag of context `slot`, or 0 if it has none (flushed since its last use). */
export function ctxLiveTag(slot: u32): u32 {
  const c = ctxPtr(slot);
  return load<u32>(c + CTX_EPOCH) == epoch() ? load<u32>(c + CTX_TAG) : 0;
}

function liveOf(slot: u32, field: u32): u32 {
  const c = ctxPtr(slot);
  return load<u32>(c + CTX_EPOCH) == epoch() ? load<u32>(c + field) : 0;
}

/**
 * Binds this instance to vCPU block `base` with a TLB of `entries` slots at
 * `tlb`. Called once per instance by the TS loader.
 */
export function tlbAttach(base: usize, tlb: usize, entries: u32): void {
  vcpuBase = base;
  tlbBase = tlb;
  tlbEntries = entries;
  tlbMask = <u64>(entries - 1);
  if (load<u32>(base + T_EPOCH) == 0) {
    store<u32>(base + T_EPOCH, 1);
    store<u32>(base + T_NEXT_TAG, 1);
  }
  refreshGlobal();
  selectCtx(curCtx);
}

/** Clears the whole array and restarts tag allocation. */
function rollover(): void {
  memory.fill(tlbBase, 0, <usize>tlbEntries * TLB_ENTRY);
  counterAdd(C_DROPPED, <u64>load<u32>(vcpuBase + T_TOTAL_LIVE));
  counterAdd(C_ROLLOVERS, 1);
  store<u32>(vcpuBase + T_TOTAL_LIVE, 0);
  store<u32>(vcpuBase + T_EPOCH, epoch() + 1);
  store<u32>(vcpuBase + T_NEXT_TAG, 1);
  invalidated();
}

/** Live tag of `slot`, allocating a fresh one if needed. May roll over. */
function acquireTag(slot: u32): u32 {
  const t = ctxLiveTag(slot);
  if (t != 0) return t;
  let next = load<u32>(vcpuBase + T_NEXT_TAG);
  if (next > TAG_MAX) {
    rollover();
    next = 1;
    if (slot != globSlot) { store<u32>(vcpuBase + T_NEXT_TAG, next + 1); bindTag(slot, next); refreshGlobal(); return next; }
  }
  store<u32>(vcpuBase + T_NEXT_TAG, next + 1);
  bindTag(slot, next);
  return next;
}

function bindTag(slot: u32, tag: u32): void {
  const c = ctxPtr(slot);
  store<u32>(c + CTX_TAG, tag);
  store<u32>(c + CTX_EPOCH, epoch());
  store<u32>(c + CTX_LIVE, 0);
  store<u32>(c + CTX_LIVE2M, 0);
  store<u32>(c + CTX_LIVE1G, 0);
}

function refreshGlobal(): void {
  const t = acquireTag(globSlot);
  globKeyHi = <u64>t << 48;
  globSalt = saltOf(t);
  globLive = liveOf(globSlot, CTX_LIVE) != 0;
}

/** Makes `slot` the context global entries are filled into and looked up in. No flush. */
export function selectGlobal(slot: u32): void {
  globSlot = slot;
  refreshGlobal();
  selectCtx(curCtx);
}

/** Makes `slot` the current context (after a CR3 load or mode change). No flush. */
export function selectCtx(slot: u32): void {
  invalidated();
  curCtx = slot;
  const t = acquireTag(slot);
  curKeyHi = <u64>t << 48;
  curSalt = saltOf(t);
  // acquireTag may have rolled over: the global tag must be re-read too.
  const g = ctxLiveTag(globSlot);
  if (<u64>g << 48 != globKeyHi || g == 0) refreshGlobal();
}

// @ts-ignore: decorator
@inline function pieceShift(attr: u32): u32 {
  return (attr >> A_PSHIFT_SHIFT) & 31;
}

/** Accounting when a live entry leaves the array (eviction or invalidation). */
function unaccount(e: usize): void {
  const key = load<u64>(e + E_KEY);
  const slot = load<u32>(e + E_CTX);
  if (slot >= CTX_SLOTS) return;
  const c = ctxPtr(slot);
  if (load<u32>(c + CTX_EPOCH) != epoch() || <u64>load<u32>(c + CTX_TAG) != (key >> 48)) return;
  store<u32>(c + CTX_LIVE, load<u32>(c + CTX_LIVE) - 1);
  const ps = pieceShift(load<u32>(e + E_ATTR));
  if (ps == 21) store<u32>(c + CTX_LIVE2M, load<u32>(c + CTX_LIVE2M) - 1);
  else if (ps == 30) store<u32>(c + CTX_LIVE1G, load<u32>(c + CTX_LIVE1G) - 1);
  store<u32>(vcpuBase + T_TOTAL_LIVE, load<u32>(vcpuBase + T_TOTAL_LIVE) - 1);
}

function isLiveEntry(e: usize): bool {
  const key = load<u64>(e + E_KEY);
  if (key == 0) return false;
  const slot = load<u32>(e + E_CTX);
  if (slot >= CTX_SLOTS) return false;
  return <u64>ctxLiveTag(slot) == (key >> 48);
}

/**
 * Caches one 4 KiB piece: `vpn` → `pa4k` with `attr`, in the current context
 * or, if `attr` has A_GLOBAL, in the global context. Called after every
 * successful walk with the TLB on.
 */
export function tlbFill(vpn: u64, pa4k: u64, attr: u32): void {
  tlbFillReport(vpn, pa4k, attr, pieceShift(attr));
}

/**
 * tlbFill with a page shift to report on hits (`reportShift`) that differs
 * from the piece shift invalidation uses: arm64 combined entries are
 * invalidated as their stage-1 block but report min(stage 1, stage 2).
 */
export function tlbFillReport(vpn: u64, pa4k: u64, attr: u32, reportShift: u32): void {
  const global = (attr & A_GLOBAL) != 0;
  fillAt(global ? globSlot : curCtx, global ? globKeyHi : curKeyHi, global ? globSalt : curSalt, vpn, pa4k, attr, reportShift);
  if (global) globLive = true;
}

/** Caches one piece in context `slot` (arm64 stage-2-only entries). */
export function tlbFillIn(slot: u32, vpn: u64, pa4k: u64, attr: u32): void {
  const tag = acquireTag(slot);
  fillAt(slot, <u64>tag << 48, saltOf(tag), vpn, pa4k, attr, pieceShift(attr));
  if (slot == globSlot) globLive = true;
}

/** Entry address of `vpn` in context `slot` if cached there, else 0. */
export function tlbLookupIn(slot: u32, vpn: u64): usize {
  const tag = ctxLiveTag(slot);
  if (tag == 0) return 0;
  const e = slotAddr(vpn, saltOf(tag));
  return load<u64>(e + E_KEY) == ((<u64>tag << 48) | vpn) ? e : 0;
}

function fillAt(slot: u32, keyHi: u64, salt: u64, vpn: u64, pa4k: u64, attr: u32, reportShift: u32): void {
  const e = slotAddr(vpn, salt);
  if (isLiveEntry(e)) {
    unaccount(e);
    counterAdd(C_EVICTIONS, 1);
    invalidated();
  }
  store<u64>(e + E_KEY, keyHi | vpn);
  store<u64>(e + E_PA, pa4k);
  store<u32>(e + E_ATTR, attr);
  store<u32>(e + E_CTX, slot);
  store<u32>(e + E_STATUS, (reportShift << BS_PSHIFT_SHIFT) | (((attr >> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT));
  const c = ctxPtr(slot);
  store<u32>(c + CTX_LIVE, load<u32>(c + CTX_LIVE) + 1);
  const ps = pieceShift(attr);
  if (ps == 21) store<u32>(c + CTX_LIVE2M, load<u32>(c + CTX_LIVE2M) + 1);
  else if (ps == 30) store<u32>(c + CTX_LIVE1G, load<u32>(c + CTX_LIVE1G) + 1);
  store<u32>(vcpuBase + T_TOTAL_LIVE, load<u32>(vcpuBase + T_TOTAL_LIVE) + 1);
  counterAdd(C_FILLS, 1);
}

/** Removes the entry at `e`. */
export function tlbDrop(e: usize): void {
  invalidated();
  unaccount(e);
  store<u64>(e + E_KEY, 0);
  counterAdd(C_DROPPED, 1);
}

/** Gives context `slot` a fresh tag: every entry it had becomes unreachable. */
export function tlbFlushCtx(slot: u32): void {
  counterAdd(C_FLUSH_CTX, 1);
  const live = liveOf(slot, CTX_LIVE);
  counterAdd(C_DROPPED, <u64>live);
  store<u32>(vcpuBase + T_TOTAL_LIVE, load<u32>(vcpuBase + T_TOTAL_LIVE) - live);
  store<u32>(ctxPtr(slot) + CTX_EPOCH, 0);
  if (slot == globSlot) refreshGlobal();
  selectCtx(curCtx);
}

/** Flushes every non-global context; global entries survive. */
export function tlbFlushNonGlobal(): void {
  counterAdd(C_FLUSH_NONGLOBAL, 1);
  const g = ctxPtr(globSlot);
  const gLive = liveOf(globSlot, CTX_LIVE);
  const total = load<u32>(vcpuBase + T_TOTAL_LIVE);
  counterAdd(C_DROPPED, <u64>(total - gLive));
  const e = epoch() + 1;
  const gValid = load<u32>(g + CTX_EPOCH) == epoch();
  store<u32>(vcpuBase + T_EPOCH, e);
  if (gValid) store<u32>(g + CTX_EPOCH, e);
  store<u32>(vcpuBase + T_TOTAL_LIVE, gLive);
  refreshGlobal();
  selectCtx(curCtx);
}

/** Flushes every context including the global one. */
export function tlbFlushAll(): void {
  counterAdd(C_FLUSH_ALL, 1);
  counterAdd(C_DROPPED, <u64>load<u32>(vcpuBase + T_TOTAL_LIVE));
  store<u32>(vcpuBase + T_EPOCH, epoch() + 1);
  store<u32>(vcpuBase + T_TOTAL_LIVE, 0);
  globLive = false;
  refreshGlobal();
  selectCtx(curCtx);
}

// @ts-ignore: decorator
@inline function levelOk(attr: u32, level: u32): bool {
  return level == 0 || ((attr >> A_LEVEL_SHIFT) & 7) == level;
}

/** Drops the entry of `slot` (live tag `tag`) caching `vpn` if its piece shift is `shift` (any if 0) and its level passes. */
function probeDrop(tag: u32, vpn: u64, shift: u32, level: u32): void {
  const e = slotAddr(vpn, saltOf(tag));
  if (load<u64>(e + E_KEY) == ((<u64>tag << 48) | vpn)) {
    const attr = load<u32>(e + E_ATTR);
    if ((shift == 0 || pieceShift(attr) == shift) && levelOk(attr, level)) tlbDrop(e);
  }
}

/**
 * Invalidates every entry of context `slot` that translates an address in
 * the pages [vpn, vpn + pages), whatever the size of the page or block the
 * entry came from; with `level` ≠ 0 only entries from leaves at that level
 * (an arm64 TTL hint: entries at other levels may stay).
 *
 * 1. A context with no live entries costs nothing.
 * 2. Count the probes needed: every page of the range, plus — if the context
 *    holds 2 MiB / 1 GiB pieces — every piece slot of the 2 MiB / 1 GiB
 *    regions the range touches.
 * 3. If that exceeds the array size, scan the array once instead, dropping
 *    entries of this context whose page overlaps the range.
 * 4. Otherwise probe: any piece at a page in the range; 2 MiB / 1 GiB pieces
 *    in the surrounding regions.
 * Cost: O(min(probes, entries)). Callers count the flush.
 */
export function tlbInvalidateRange(slot: u32, vpn: u64, pages: u64, level: u32): void {
  const tag = ctxLiveTag(slot);
  if (tag == 0 || pages == 0 || liveOf(slot, CTX_LIVE) == 0) return;
  const end = vpn + pages;
  const has2m = liveOf(slot, CTX_LIVE2M) != 0;
  const has1g = liveOf(slot, CTX_LIVE1G) != 0;
  const lo2m = vpn & ~<u64>511, hi2m = (end + 511) & ~<u64>511;
  const lo1g = vpn & ~<u64>0x3ffff, hi1g = (end + 0x3ffff) & ~<u64>0x3ffff;
  let probes = pages;
  if (has2m) probes += hi2m - lo2m;
  if (has1g) probes += hi1g - lo1g;
  if (probes > <u64>tlbEntries) {
    const keyHi = <u64>tag << 48;
    for (let e = tlbBase, stop = tlbBase + <usize>tlbEntries * TLB_ENTRY; e < stop; e += TLB_ENTRY) {
      const key = load<u64>(e + E_KEY);
      if ((key & ~VPN_MASK) != keyHi) continue;
      const attr = load<u32>(e + E_ATTR);
      const span = (<u64>1 << (pieceShift(attr) - 12)) - 1;
      const first = (key & VPN_MASK) & ~span;
      if (first < end && first + span >= vpn && levelOk(attr, level)) tlbDrop(e);
    }
    counterAdd(C_FLUSH_PROBES, <u64>tlbEntries);
    return;
  }
  for (let p = vpn; p < end; p++) probeDrop(tag, p, 0, level);
  if (has2m) for (let p = lo2m; p < hi2m; p++) probeDrop(tag, p, 21, level);
  if (has1g) for (let p = lo1g; p < hi1g; p++) probeDrop(tag, p, 30, level);
  counterAdd(C_FLUSH_PROBES, probes);
}

/**
 * tlbInvalidateRange with the page number and the count as f64 (exact below
 * 2^53): the BigInt-free entry point of the Number TLB-maintenance path.
 */
export function tlbInvalidateRangeF(slot: u32, vpn: f64, pages: f64, level: u32): void {
  tlbInvalidateRange(slot, <u64>vpn, <u64>pages, level);
}

/** Invalidates the page containing `vpn` in context `slot` (x86 INVLPG shape): tlbInvalidateRange(slot, vpn, 1, 0). */
export function tlbInvalidatePage(slot: u32, vpn: u64): void {
  tlbInvalidateRange(slot, vpn, 1, 0);
}
