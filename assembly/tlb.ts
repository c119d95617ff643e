// The per-vCPU software TLB: direct-mapped, context-tagged, generation-flushed.
//
// Follows the invalidation rules of Intel SDM Vol.3A §4.10.4 (as tabulated in
// reference/x86-kvm-mmu.md A.9); the mechanism is architecture-neutral so the
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
  VCPU_CTX, CTX_STRIDE, CTX_TAG, CTX_EPOCH, CTX_LIVE, CTX_LIVE2M, CTX_LIVE1G, CTX_GLOBAL,
  T_EPOCH, T_NEXT_TAG, T_TOTAL_LIVE, TAG_MAX, TLB_ENTRY, E_KEY, E_PA, E_ATTR, E_CTX, E_STATUS,
  BS_PSHIFT_SHIFT, BS_LEVEL_SHIFT,
  VCPU_COUNTERS, C_FILLS, C_EVICTIONS, C_FLUSH_ALL, C_FLUSH_NONGLOBAL, C_FLUSH_CTX,
  C_DROPPED, C_ROLLOVERS, C_FLUSH_PROBES,
} from "./layout";

// attr field of an entry
export const A_ACC_MASK: u32 = 7;
export const A_DIRTY: u32 = 1 << 3;
export const A_GLOBAL: u32 = 1 << 4;
export const A_LEVEL_SHIFT: u32 = 5;
export const A_PSHIFT_SHIFT: u32 = 8;
export const A_PKEY_SHIFT: u32 = 16;

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
}

/** Live tag of `slot`, allocating a fresh one if needed. May roll over. */
function acquireTag(slot: u32): u32 {
  const t = ctxLiveTag(slot);
  if (t != 0) return t;
  let next = load<u32>(vcpuBase + T_NEXT_TAG);
  if (next > TAG_MAX) {
    rollover();
    next = 1;
    if (slot != CTX_GLOBAL) { store<u32>(vcpuBase + T_NEXT_TAG, next + 1); bindTag(slot, next); refreshGlobal(); return next; }
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
  const t = acquireTag(CTX_GLOBAL);
  globKeyHi = <u64>t << 48;
  globSalt = saltOf(t);
  globLive = liveOf(CTX_GLOBAL, CTX_LIVE) != 0;
}

/** Makes `slot` the current context (after a CR3 load or mode change). No flush. */
export function selectCtx(slot: u32): void {
  curCtx = slot;
  const t = acquireTag(slot);
  curKeyHi = <u64>t << 48;
  curSalt = saltOf(t);
  // acquireTag may have rolled over: the global tag must be re-read too.
  const g = ctxLiveTag(CTX_GLOBAL);
  if (<u64>g << 48 != globKeyHi) refreshGlobal();
}

// @ts-ignore: decorator
@inline function pieceShift(attr: u32): u32 {
  return (attr >> A_PSHIFT_SHIFT) & 31;
}

/** Accounting when a live entry leaves the array (eviction or invalidation). */
function unaccount(e: usize): void {
  const key = load<u64>(e + E_KEY);
  const slot = load<u32>(e + E_CTX);
  if (slot > CTX_GLOBAL) return;
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
  if (slot > CTX_GLOBAL) return false;
  return <u64>ctxLiveTag(slot) == (key >> 48);
}

/**
 * Caches one 4 KiB piece: `vpn` → `pa4k` with `attr`, in the current context
 * or, if `attr` has A_GLOBAL, in the global context. Called after every
 * successful walk with the TLB on.
 */
export function tlbFill(vpn: u64, pa4k: u64, attr: u32): void {
  const global = (attr & A_GLOBAL) != 0;
  const slot = global ? CTX_GLOBAL : curCtx;
  const keyHi = global ? globKeyHi : curKeyHi;
  const e = slotAddr(vpn, global ? globSalt : curSalt);
  if (isLiveEntry(e)) {
    unaccount(e);
    counterAdd(C_EVICTIONS, 1);
  }
  store<u64>(e + E_KEY, keyHi | vpn);
  store<u64>(e + E_PA, pa4k);
  store<u32>(e + E_ATTR, attr);
  store<u32>(e + E_CTX, slot);
  store<u32>(e + E_STATUS, (pieceShift(attr) << BS_PSHIFT_SHIFT) | (((attr >> A_LEVEL_SHIFT) & 7) << BS_LEVEL_SHIFT));
  const c = ctxPtr(slot);
  store<u32>(c + CTX_LIVE, load<u32>(c + CTX_LIVE) + 1);
  const ps = pieceShift(attr);
  if (ps == 21) store<u32>(c + CTX_LIVE2M, load<u32>(c + CTX_LIVE2M) + 1);
  else if (ps == 30) store<u32>(c + CTX_LIVE1G, load<u32>(c + CTX_LIVE1G) + 1);
  store<u32>(vcpuBase + T_TOTAL_LIVE, load<u32>(vcpuBase + T_TOTAL_LIVE) + 1);
  if (global) globLive = true;
  counterAdd(C_FILLS, 1);
}

/** Removes the entry at `e`. */
export function tlbDrop(e: usize): void {
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
  if (slot == CTX_GLOBAL) refreshGlobal();
  selectCtx(curCtx);
}

/** Flushes every non-global context; global entries survive. */
export function tlbFlushNonGlobal(): void {
  counterAdd(C_FLUSH_NONGLOBAL, 1);
  const g = ctxPtr(CTX_GLOBAL);
  const gLive = liveOf(CTX_GLOBAL, CTX_LIVE);
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

/** Drops the entry of context `slot` caching `vpn` if it has page shift `shift` (or any if shift is 0). */
function probeDrop(slot: u32, tag: u32, vpn: u64, shift: u32): void {
  const e = slotAddr(vpn, saltOf(tag));
  if (load<u64>(e + E_KEY) == ((<u64>tag << 48) | vpn)) {
    if (shift == 0 || pieceShift(load<u32>(e + E_ATTR)) == shift) tlbDrop(e);
  }
}

/**
 * Invalidates every entry of context `slot` that translates an address in the
 * page containing `vpn`, whatever that page's size.
 *
 * 1. The 4 KiB piece at `vpn` itself (any page size): one probe.
 * 2. If the context holds 2 MiB pieces: the 512 pieces of the 2 MiB region.
 * 3. If it holds 1 GiB pieces: the pieces of the 1 GiB region — probed one by
 *    one, or by one scan of the array when that is shorter.
 * A context with no live entries costs nothing. Callers count the flush.
 */
export function tlbInvalidatePage(slot: u32, vpn: u64): void {
  const tag = ctxLiveTag(slot);
  if (tag == 0 || liveOf(slot, CTX_LIVE) == 0) return;
  let probes: u64 = 1;
  probeDrop(slot, tag, vpn, 0);
  if (liveOf(slot, CTX_LIVE2M) != 0) {
    const base = vpn & ~<u64>511;
    for (let i: u64 = 0; i < 512; i++) probeDrop(slot, tag, base | i, 21);
    probes += 512;
  }
  if (liveOf(slot, CTX_LIVE1G) != 0) {
    const base = vpn & ~<u64>0x3ffff;
    if (<u64>tlbEntries < 0x40000) {
      const keyHi = <u64>tag << 48;
      for (let e = tlbBase, end = tlbBase + <usize>tlbEntries * TLB_ENTRY; e < end; e += TLB_ENTRY) {
        const key = load<u64>(e + E_KEY);
        if ((key & ~VPN_MASK) == keyHi && ((key & VPN_MASK) & ~<u64>0x3ffff) == base && pieceShift(load<u32>(e + E_ATTR)) == 30) tlbDrop(e);
      }
      probes += <u64>tlbEntries;
    } else {
      for (let i: u64 = 0; i < 0x40000; i++) probeDrop(slot, tag, base | i, 30);
      probes += 0x40000;
    }
  }
  counterAdd(C_FLUSH_PROBES, probes);
}
