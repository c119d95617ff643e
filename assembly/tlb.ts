// The per-vCPU software TLB: direct-mapped, slot-tagged, generation-flushed,
// and the one allocator of TLB context slots for every tag the architectures
// define (x86 PCID × VPID × EP4TA, EPT guest-physical, arm64 ASID × VMID,
// stage 2).
//
// Follows the invalidation rules of Intel SDM Vol.3A §4.10.4 and Vol.3C §29.4
// (tabulated in docs/mmu.md §5) and Arm ARM D8.16 (TLB maintenance); the
// mechanism is architecture-neutral.
//
// Every function takes the vCPU block `vb`: the TLB, its slots and counters
// live in shared memory (assembly/layout.ts), and this module keeps no state,
// so any wasm instance on any thread may run any vCPU (one at a time).
//
// Slots and tags. A slot (found by its 64-bit key, layout.ts "TLB context
// slots") names entries flushed together. Each slot holds a 16-bit tag, valid
// while its epoch equals the vCPU epoch. An entry matches only if its key
// carries the live tag of the slot being looked up, so:
//   - flushing one slot       = give it a fresh tag             O(1)
//   - flushing everything     = bump the epoch                  O(1)
//   - flushing by key pattern = scan the slots in use           O(slots used)
//   - invalidating a page     = probe the entries it can occupy O(1), or O(512)
//     for a 2 MiB page, O(min(2^18, entries)) for a 1 GiB page — only when
//     the slot holds pieces of such pages.
// Dead entries stay in the array and are never matched; when the tag space
// runs out the array is cleared once (a rollover, as arm64 Linux does with
// ASIDs).
//
// Large pages are cached as 4 KiB pieces (QEMU's approach): the hit path is
// one index and one 64-bit compare for every page size.
//
//   idx = (vpn ^ salt(tag)) & (entries - 1)        key = tag << 48 | vpn
//
// Invariants:
//  - tag 0 is never live, so a zeroed entry never hits;
//  - CTX_LIVE of a live slot counts exactly its entries in the array;
//  - an entry whose tag is not live is unreachable by lookup;
//  - a slot whose key changes is flushed first.

import {
  VCPU_CTX, CTX_STRIDE, CTX_TAG, CTX_EPOCH, CTX_LIVE, CTX_LIVE2M, CTX_LIVE1G, CTX_STAMP, CTX_KEY, CTX_SLOTS, CTX_SETS, CTX_WAYS,
  T_EPOCH, T_NEXT_TAG, T_TOTAL_LIVE, T_INV_EPOCH, T_SLOTS_USED, T_STAMP, TAG_MAX, TLB_ENTRY, E_KEY, E_PA, E_ATTR, E_CTX, E_STATUS, E_GFN,
  BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT, VCPU_SLOTLIST, VCPU_TLB, MACHINE_BASE, M_TLB_ENTRIES,
  VCPU_COUNTERS, C_FILLS, C_EVICTIONS, C_FLUSH_ALL, C_FLUSH_NONGLOBAL, C_FLUSH_CTX,
  C_DROPPED, C_ROLLOVERS, C_FLUSH_PROBES, C_SLOT_EVICTIONS, KEY_GLOBAL, MC_SLOT, MC_KEY, MC_HIT_TAG, MC_HIT_EPOCH,
} from "./layout";

// attr field of an entry. Bits 22:0 belong to the architecture (x86: ACC,
// D, pkey; arm64: allow bits; EPT: rights); bits 31:23 are read by the TLB itself.
export const A_ACC_MASK: u32 = 7; //        x86: X W U
export const A_DIRTY: u32 = 1 << 3; //      x86: D of the leaf
export const A_GLOBAL: u32 = 1 << 23; //    fill into the global slot
export const A_PKEY_SHIFT: u32 = 16; //     x86: protection key, 4 bits
export const A_PSHIFT_SHIFT: u32 = 24; //   page shift of the page this piece belongs to (12, 21, 30)
export const A_LEVEL_SHIFT: u32 = 29; //    level of the leaf (x86 KVM numbering, arm64 Arm numbering)

export const VPN_MASK: u64 = (<u64>1 << 45) - 1;
/** No slot (a lookup that found none). */
export const NO_SLOT: u32 = 0xffff_ffff;

// @ts-ignore: decorator
@inline export function counterAdd(vb: usize, idx: u32, n: u64): void {
  const p = vb + VCPU_COUNTERS + (<usize>idx << 3);
  store<u64>(p, load<u64>(p) + n);
}

// @ts-ignore: decorator
@inline export function ctxPtr(vb: usize, slot: u32): usize {
  return vb + VCPU_CTX + <usize>slot * CTX_STRIDE;
}

// @ts-ignore: decorator
@inline export function saltOf(tag: u32): u64 {
  return <u64>(tag * 0x9e3779b1);
}

// @ts-ignore: decorator
@inline export function tlbEntries(): u32 {
  return load<u32>(MACHINE_BASE + M_TLB_ENTRIES);
}

// @ts-ignore: decorator
@inline export function tlbBaseOf(vb: usize): usize {
  return vb + VCPU_TLB;
}

// @ts-ignore: decorator
@inline export function slotAddr(vb: usize, vpn: u64, salt: u64): usize {
  return vb + VCPU_TLB + (<usize>((vpn ^ salt) & <u64>(tlbEntries() - 1)) << 5);
}

/** Marks that an entry may have been dropped or stopped matching (T_INV_EPOCH). */
// @ts-ignore: decorator
@inline export function invalidated(vb: usize): void {
  store<u32>(vb + T_INV_EPOCH, load<u32>(vb, T_INV_EPOCH) + 1);
}

// @ts-ignore: decorator
@inline function epoch(vb: usize): u32 {
  return load<u32>(vb, T_EPOCH);
}

/** Starts the bookkeeping of a fresh vCPU block (idempotent). */
export function tlbInit(vb: usize): void {
  if (load<u32>(vb, T_EPOCH) == 0) {
    store<u32>(vb + T_EPOCH, 1);
    store<u32>(vb + T_NEXT_TAG, 1);
  }
}

/** Live tag of `slot`, or 0 if it has none (flushed since its last use). */
export function ctxLiveTag(vb: usize, slot: u32): u32 {
  if (slot >= CTX_SLOTS) return 0;
  const c = ctxPtr(vb, slot);
  return load<u32>(c, CTX_EPOCH) == epoch(vb) ? load<u32>(c, CTX_TAG) : 0;
}

// @ts-ignore: decorator
@inline function liveOf(vb: usize, slot: u32, field: u32): u32 {
  const c = ctxPtr(vb, slot);
  return load<u32>(c, CTX_EPOCH) == epoch(vb) ? load<u32>(c + field) : 0;
}

/** Whether `slot` may hold live entries (gates the second probe of a lookup). */
// @ts-ignore: decorator
@inline export function slotHasLive(vb: usize, slot: u32): bool {
  return slot < CTX_SLOTS && liveOf(vb, slot, CTX_LIVE) != 0;
}

// ---- the slot allocator ------------------------------------------------------

// @ts-ignore: decorator
@inline function setOf(key: u64): u32 {
  let h = key * 0x9e37_79b9_7f4a_7c15;
  return <u32>(h >> 55) & (CTX_SETS - 1);
}

function nextStamp(vb: usize): u32 {
  const s = load<u32>(vb, T_STAMP) + 1;
  store<u32>(vb + T_STAMP, s);
  return s;
}

/** Slot holding `key`, or NO_SLOT. */
export function slotFind(vb: usize, key: u64): u32 {
  const first = setOf(key) * CTX_WAYS;
  for (let w: u32 = 0; w < CTX_WAYS; w++) {
    if (load<u64>(ctxPtr(vb, first + w) + CTX_KEY) == key) return first + w;
  }
  return NO_SLOT;
}

/**
 * Slot of `key`, allocating one if needed.
 *
 * 1. A way of the key's set holding the key: stamp it, return it.
 * 2. Else a never-used way: key it, list it in VCPU_SLOTLIST.
 * 3. Else the least recently stamped way: flush it (its entries become
 *    unreachable), re-key it. Counted in C_SLOT_EVICTIONS.
 */
export function slotAcquire(vb: usize, key: u64): u32 {
  const first = setOf(key) * CTX_WAYS;
  let victim: u32 = NO_SLOT;
  let empty: u32 = NO_SLOT;
  let oldest: u32 = 0;
  for (let w: u32 = 0; w < CTX_WAYS; w++) {
    const s = first + w;
    const c = ctxPtr(vb, s);
    const k = load<u64>(c, CTX_KEY);
    if (k == key) { store<u32>(c + CTX_STAMP, nextStamp(vb)); return s; }
    if (k == 0) {
      if (empty == NO_SLOT) empty = s;
      continue;
    }
    const st = load<u32>(c, CTX_STAMP);
    if (victim == NO_SLOT || st < oldest) { victim = s; oldest = st; }
  }
  if (empty != NO_SLOT) victim = empty;
  const c = ctxPtr(vb, victim);
  if (load<u64>(c, CTX_KEY) == 0) {
    const n = load<u32>(vb, T_SLOTS_USED);
    store<u16>(vb + VCPU_SLOTLIST + (<usize>n << 1), <u16>victim);
    store<u32>(vb + T_SLOTS_USED, n + 1);
  } else {
    flushSlotQuiet(vb, victim);
    counterAdd(vb, C_SLOT_EVICTIONS, 1);
  }
  store<u64>(c + CTX_KEY, key);
  store<u32>(c + CTX_STAMP, nextStamp(vb));
  return victim;
}

/**
 * The slot of `key` as cached in a context record at `cache` (a u32 holding
 * a slot number): reused while that slot still holds `key`, else acquired
 * again and cached.
 */
// @ts-ignore: decorator
@inline export function slotCached(vb: usize, cache: usize, key: u64): u32 {
  const s = load<u32>(cache);
  if (s < CTX_SLOTS && load<u64>(ctxPtr(vb, s) + CTX_KEY) == key) return s;
  const t = slotAcquire(vb, key);
  store<u32>(cache, t);
  return t;
}

/**
 * The live tag of the slot of record `rec`'s key MC_KEY (0 if that slot has
 * none), read through the record's cache (MC_HIT_TAG, MC_HIT_EPOCH): a
 * single translation's TLB probe then costs two loads and a compare instead
 * of the slot and tag checks (slotCached, ctxLiveTag).
 *
 * Valid because every write that can change the answer — a slot re-keyed or
 * flushed (slotAcquire, flushSlotQuiet), the epoch moved (tlbFlushAll,
 * tlbFlushNonGlobal, rollover), the record's key changed (the decoders,
 * x86ReloadCr3) — calls invalidated(), which moves T_INV_EPOCH; a tag given
 * to a slot that had none (acquireTag) replaces a cached 0, which is never
 * trusted.
 */
// @ts-ignore: decorator
@inline export function slotTagCached(vb: usize, rec: usize): u32 {
  const tag = load<u32>(rec, MC_HIT_TAG);
  if (tag != 0 && load<u32>(rec, MC_HIT_EPOCH) == load<u32>(vb, T_INV_EPOCH)) return tag;
  return slotTagRefresh(vb, rec);
}

/** slotTagCached's miss: looks the slot and its tag up and caches them. */
function slotTagRefresh(vb: usize, rec: usize): u32 {
  const t = ctxLiveTag(vb, slotCached(vb, rec + MC_SLOT, load<u64>(rec, MC_KEY)));
  store<u32>(rec + MC_HIT_TAG, t);
  store<u32>(rec + MC_HIT_EPOCH, load<u32>(vb, T_INV_EPOCH));
  return t;
}

/** Entry address of `vpn` under live tag `tag` (0: none), else 0. */
// @ts-ignore: decorator
@inline export function tlbLookupTag(vb: usize, tag: u32, vpn: u64): usize {
  if (tag == 0) return 0;
  const e = slotAddr(vb, vpn, saltOf(tag));
  return load<u64>(e, E_KEY) == ((<u64>tag << 48) | vpn) ? e : 0;
}

// ---- tags --------------------------------------------------------------------

/** Clears the whole array and restarts tag allocation. */
function rollover(vb: usize): void {
  memory.fill(tlbBaseOf(vb), 0, <usize>tlbEntries() * TLB_ENTRY);
  counterAdd(vb, C_DROPPED, <u64>load<u32>(vb, T_TOTAL_LIVE));
  counterAdd(vb, C_ROLLOVERS, 1);
  store<u32>(vb + T_TOTAL_LIVE, 0);
  store<u32>(vb + T_EPOCH, epoch(vb) + 1);
  store<u32>(vb + T_NEXT_TAG, 1);
  invalidated(vb);
}

/**
 * Live tag of `slot`, allocating a fresh one if needed. May roll over, which
 * kills every other slot's tag: callers holding another slot's tag re-read it.
 */
export function acquireTag(vb: usize, slot: u32): u32 {
  const t = ctxLiveTag(vb, slot);
  if (t != 0) return t;
  let next = load<u32>(vb, T_NEXT_TAG);
  if (next > TAG_MAX) {
    rollover(vb);
    next = 1;
  }
  store<u32>(vb + T_NEXT_TAG, next + 1);
  const c = ctxPtr(vb, slot);
  store<u32>(c + CTX_TAG, next);
  store<u32>(c + CTX_EPOCH, epoch(vb));
  store<u32>(c + CTX_LIVE, 0);
  store<u32>(c + CTX_LIVE2M, 0);
  store<u32>(c + CTX_LIVE1G, 0);
  return next;
}

// @ts-ignore: decorator
@inline function pieceShift(attr: u32): u32 {
  return (attr >> A_PSHIFT_SHIFT) & 31;
}

/** Accounting when a live entry leaves the array (eviction or invalidation). */
function unaccount(vb: usize, e: usize): void {
  const key = load<u64>(e, E_KEY);
  const slot = load<u32>(e, E_CTX);
  if (slot >= CTX_SLOTS) return;
  const c = ctxPtr(vb, slot);
  if (load<u32>(c, CTX_EPOCH) != epoch(vb) || <u64>load<u32>(c, CTX_TAG) != (key >> 48)) return;
  store<u32>(c + CTX_LIVE, load<u32>(c, CTX_LIVE) - 1);
  const ps = pieceShift(load<u32>(e, E_ATTR));
  if (ps == 21) store<u32>(c + CTX_LIVE2M, load<u32>(c, CTX_LIVE2M) - 1);
  else if (ps == 30) store<u32>(c + CTX_LIVE1G, load<u32>(c, CTX_LIVE1G) - 1);
  store<u32>(vb + T_TOTAL_LIVE, load<u32>(vb, T_TOTAL_LIVE) - 1);
}

function isLiveEntry(vb: usize, e: usize): bool {
  const key = load<u64>(e, E_KEY);
  if (key == 0) return false;
  const slot = load<u32>(e, E_CTX);
  return <u64>ctxLiveTag(vb, slot) == (key >> 48);
}

// ---- lookup and fill ---------------------------------------------------------

/**
 * Entry address of `vpn` in `slot` if cached there, else 0: the one TLB
 * lookup (the batch-hit loops inline the same compare with the tag hoisted).
 */
// @ts-ignore: decorator
@inline export function tlbLookup(vb: usize, slot: u32, vpn: u64): usize {
  const tag = ctxLiveTag(vb, slot);
  if (tag == 0) return 0;
  const e = slotAddr(vb, vpn, saltOf(tag));
  return load<u64>(e, E_KEY) == ((<u64>tag << 48) | vpn) ? e : 0;
}

/**
 * Caches one 4 KiB piece `vpn` → `pa4k` with `attr` (and guest frame `gfn`) in `slot`; hits report
 * page shift `reportShift` (arm64 combined entries are invalidated as their
 * stage-1 block but report min(stage 1, stage 2)).
 */
export function tlbFill(vb: usize, slot: u32, vpn: u64, pa4k: u64, attr: u32, reportShift: u32, gfn: u32): void {
  const tag = acquireTag(vb, slot);
  const e = slotAddr(vb, vpn, saltOf(tag));
  if (isLiveEntry(vb, e)) {
    unaccount(vb, e);
    counterAdd(vb, C_EVICTIONS, 1);
    invalidated(vb);
  }
  store<u64>(e + E_KEY, (<u64>tag << 48) | vpn);
  store<u64>(e + E_PA, pa4k);
  store<u32>(e + E_ATTR, attr);
  store<u32>(e + E_CTX, slot);
  store<u32>(e + E_STATUS, (reportShift << BS_PSHIFT_SHIFT) | (((attr >> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT));
  store<u32>(e + E_GFN, gfn);
  const c = ctxPtr(vb, slot);
  store<u32>(c + CTX_LIVE, load<u32>(c, CTX_LIVE) + 1);
  const ps = pieceShift(attr);
  if (ps == 21) store<u32>(c + CTX_LIVE2M, load<u32>(c, CTX_LIVE2M) + 1);
  else if (ps == 30) store<u32>(c + CTX_LIVE1G, load<u32>(c, CTX_LIVE1G) + 1);
  store<u32>(vb + T_TOTAL_LIVE, load<u32>(vb, T_TOTAL_LIVE) + 1);
  counterAdd(vb, C_FILLS, 1);
}

/** Removes the entry at `e`. */
export function tlbDrop(vb: usize, e: usize): void {
  invalidated(vb);
  unaccount(vb, e);
  store<u64>(e + E_KEY, 0);
  counterAdd(vb, C_DROPPED, 1);
}

// ---- flushes -----------------------------------------------------------------

/** Kills `slot`'s tag (its entries become unreachable) without counting a flush. */
function flushSlotQuiet(vb: usize, slot: u32): void {
  const live = liveOf(vb, slot, CTX_LIVE);
  counterAdd(vb, C_DROPPED, <u64>live);
  store<u32>(vb + T_TOTAL_LIVE, load<u32>(vb, T_TOTAL_LIVE) - live);
  store<u32>(ctxPtr(vb, slot) + CTX_EPOCH, 0);
  invalidated(vb);
}

/**
 * Flushes `slot` (NO_SLOT: nothing) and gives it a fresh tag at once (so
 * flushes consume tags as uses do, and tag rollover is reached by flushing
 * as by switching). Counted in C_FLUSH_CTX.
 */
export function tlbFlushSlot(vb: usize, slot: u32): void {
  if (slot >= CTX_SLOTS) return;
  counterAdd(vb, C_FLUSH_CTX, 1);
  flushSlotQuiet(vb, slot);
  acquireTag(vb, slot);
}

/** Flushes the slot of `key`, if it has one. */
export function tlbFlushKey(vb: usize, key: u64): void {
  tlbFlushSlot(vb, slotFind(vb, key));
}

/**
 * Flushes every slot in use whose key k has (k & mask) == value: one pass over
 * the slot list. Counted once in C_FLUSH_CTX.
 */
export function tlbFlushMatch(vb: usize, mask: u64, value: u64): void {
  flushMatchCounted(vb, mask, value, C_FLUSH_CTX);
}

/** tlbFlushMatch counted in counter `counter` (C_FLUSH_*). */
export function flushMatchCounted(vb: usize, mask: u64, value: u64, counter: u32): void {
  counterAdd(vb, counter, 1);
  const n = load<u32>(vb, T_SLOTS_USED);
  const list = vb + VCPU_SLOTLIST;
  const ep = epoch(vb);
  for (let i: u32 = 0; i < n; i++) {
    const s = <u32>load<u16>(list + (<usize>i << 1));
    const c = ctxPtr(vb, s);
    if ((load<u64>(c, CTX_KEY) & mask) == value && load<u32>(c, CTX_EPOCH) == ep) {
      flushSlotQuiet(vb, s);
      acquireTag(vb, s);
    }
  }
}

/**
 * Flushes every slot but those of global entries (x86 INVPCID type 3,
 * CR3 writes without PCIDs in the broadest form): the epoch moves on and the
 * live global slots are carried over to it.
 */
export function tlbFlushNonGlobal(vb: usize): void {
  counterAdd(vb, C_FLUSH_NONGLOBAL, 1);
  const old = epoch(vb);
  const e = old + 1;
  let kept: u32 = 0;
  const n = load<u32>(vb, T_SLOTS_USED);
  const list = vb + VCPU_SLOTLIST;
  for (let i: u32 = 0; i < n; i++) {
    const c = ctxPtr(vb, <u32>load<u16>(list + (<usize>i << 1)));
    if ((load<u64>(c, CTX_KEY) & KEY_GLOBAL) != 0 && load<u32>(c, CTX_EPOCH) == old) {
      store<u32>(c + CTX_EPOCH, e);
      kept += load<u32>(c, CTX_LIVE);
    }
  }
  counterAdd(vb, C_DROPPED, <u64>(load<u32>(vb, T_TOTAL_LIVE) - kept));
  store<u32>(vb + T_EPOCH, e);
  store<u32>(vb + T_TOTAL_LIVE, kept);
  invalidated(vb);
}

/** Flushes every slot. */
export function tlbFlushAll(vb: usize): void {
  counterAdd(vb, C_FLUSH_ALL, 1);
  counterAdd(vb, C_DROPPED, <u64>load<u32>(vb, T_TOTAL_LIVE));
  store<u32>(vb + T_EPOCH, epoch(vb) + 1);
  store<u32>(vb + T_TOTAL_LIVE, 0);
  invalidated(vb);
}

// @ts-ignore: decorator
@inline function levelOk(attr: u32, level: u32): bool {
  return level == 0 || ((attr >> A_LEVEL_SHIFT) & 7) == level;
}

/** Drops the entry with live tag `tag` caching `vpn` if its piece shift is `shift` (any if 0) and its level passes. */
function probeDrop(vb: usize, tag: u32, vpn: u64, shift: u32, level: u32): void {
  const e = slotAddr(vb, vpn, saltOf(tag));
  if (load<u64>(e, E_KEY) == ((<u64>tag << 48) | vpn)) {
    const attr = load<u32>(e, E_ATTR);
    if ((shift == 0 || pieceShift(attr) == shift) && levelOk(attr, level)) tlbDrop(vb, e);
  }
}

/**
 * Invalidates every entry of `slot` that translates an address in the pages
 * [vpn, vpn + pages), whatever the size of the page or block the entry came
 * from; with `level` ≠ 0 only entries from leaves at that level (an arm64
 * TTL hint: entries at other levels may stay).
 *
 * 1. A slot with no live entries costs nothing.
 * 2. Count the probes needed: every page of the range, plus — if the slot
 *    holds 2 MiB / 1 GiB pieces — every piece slot of the 2 MiB / 1 GiB
 *    regions the range touches.
 * 3. If that exceeds the array size, scan the array once instead, dropping
 *    entries of this slot whose page overlaps the range.
 * 4. Otherwise probe: any piece at a page in the range; 2 MiB / 1 GiB pieces
 *    in the surrounding regions.
 * Cost: O(min(probes, entries)). Callers count the flush.
 */
export function tlbInvalidateRange(vb: usize, slot: u32, vpn: u64, pages: u64, level: u32): void {
  const tag = ctxLiveTag(vb, slot);
  if (tag == 0 || pages == 0 || liveOf(vb, slot, CTX_LIVE) == 0) return;
  const entries = tlbEntries();
  const end = vpn + pages;
  const has2m = liveOf(vb, slot, CTX_LIVE2M) != 0;
  const has1g = liveOf(vb, slot, CTX_LIVE1G) != 0;
  const lo2m = vpn & ~<u64>511, hi2m = (end + 511) & ~<u64>511;
  const lo1g = vpn & ~<u64>0x3ffff, hi1g = (end + 0x3ffff) & ~<u64>0x3ffff;
  let probes = pages;
  if (has2m) probes += hi2m - lo2m;
  if (has1g) probes += hi1g - lo1g;
  if (probes > <u64>entries) {
    const keyHi = <u64>tag << 48;
    const base = tlbBaseOf(vb);
    for (let e = base, stop = base + <usize>entries * TLB_ENTRY; e < stop; e += TLB_ENTRY) {
      const key = load<u64>(e, E_KEY);
      if ((key & ~VPN_MASK) != keyHi) continue;
      const attr = load<u32>(e, E_ATTR);
      const span = (<u64>1 << (pieceShift(attr) - 12)) - 1;
      const first = (key & VPN_MASK) & ~span;
      if (first < end && first + span >= vpn && levelOk(attr, level)) tlbDrop(vb, e);
    }
    counterAdd(vb, C_FLUSH_PROBES, <u64>entries);
    return;
  }
  for (let p = vpn; p < end; p++) probeDrop(vb, tag, p, 0, level);
  if (has2m) for (let p = lo2m; p < hi2m; p++) probeDrop(vb, tag, p, 21, level);
  if (has1g) for (let p = lo1g; p < hi1g; p++) probeDrop(vb, tag, p, 30, level);
  counterAdd(vb, C_FLUSH_PROBES, probes);
}

/**
 * tlbInvalidateRange on every slot in use whose key k has (k & mask) == value.
 */
export function tlbInvalidateRangeMatch(vb: usize, mask: u64, value: u64, vpn: u64, pages: u64, level: u32): void {
  const n = load<u32>(vb, T_SLOTS_USED);
  const list = vb + VCPU_SLOTLIST;
  for (let i: u32 = 0; i < n; i++) {
    const s = <u32>load<u16>(list + (<usize>i << 1));
    if ((load<u64>(ctxPtr(vb, s) + CTX_KEY) & mask) == value) tlbInvalidateRange(vb, s, vpn, pages, level);
  }
}
