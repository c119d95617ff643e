// Guest-physical memory: the RAM memslot, on-demand frame backing, and the one
// chokepoint for paging-structure loads and A/D compare-exchange (the role of
// QEMU's arm_ldq_ptw / arm_casq_ptw and KVM's FNAME(cmpxchg_gpte)).
//
// One memslot covers [slotBase, slotBase + slotSize). Its first eagerBytes are
// backed whole, contiguously from ramHost. The rest is backed per 4 KiB frame
// on first write, through a two-level frame table:
//
//   off = gpa - slotBase
//   frameDir[off >> 22] ──► leaf (one 4 KiB page: 1024 × u32 hfn)
//                            leaf[(off >> 12) & 1023] = host frame number, 0 = unbacked
//
// An unbacked frame reads as zero (the ZERO page) unless the machine has a
// populate hook (a memory image on disk), which is called on every read of a
// frame it has not backed (it backs non-zero frames, so usually once).
// A gpa outside the slot has no host address: callers turn that into an
// abort-style fault, never a read of another region. The one other region a
// walker may read is the host-table pool, at host-physical POOL_HPA: the
// tables a hypervisor builds (shadow pages, EPT, stage 2) live there and
// point at each other by those addresses.

import {
  MACHINE_BASE, M_SLOT_BASE, M_SLOT_SIZE, M_EAGER_BYTES, M_RAM_HOST, M_FRAME_DIR, M_POOL_BASE, M_POOL_BYTES, M_POOL_HPA,
  M_BACK_NEXT, M_BACK_END, M_BACKED, M_POPULATE, M_MAX_PAGES, M_GROW_LOCK, ZERO_PAGE, WASM_PAGE, LINEAR_LIMIT,
} from "./layout";

/** Called when a populate-enabled slot reads an unbacked frame; `off` is the slot offset of the frame. */
@external("env", "populate")
declare function hostPopulate(off: u64): void;

// Per-instance copies of the slot header, refreshed by physAttach().
export let slotBase: u64 = 0;
let slotSize: u64 = 0;
export let eagerBytes: u64 = 0;
export let ramHost: usize = 0;
let frameDir: usize = 0;
let populate: bool = false;
let poolHpa: u64 = 0;
let poolBytes: u64 = 0;
let poolHost: usize = 0;

/** Copies the memslot description from the machine header into this instance. Called once per instance. */
export function physAttach(): void {
  slotBase = load<u64>(MACHINE_BASE + M_SLOT_BASE);
  slotSize = load<u64>(MACHINE_BASE + M_SLOT_SIZE);
  eagerBytes = load<u64>(MACHINE_BASE + M_EAGER_BYTES);
  ramHost = load<u32>(MACHINE_BASE + M_RAM_HOST);
  frameDir = load<u32>(MACHINE_BASE + M_FRAME_DIR);
  populate = load<u32>(MACHINE_BASE + M_POPULATE) != 0;
  poolHpa = load<u64>(MACHINE_BASE + M_POOL_HPA);
  poolBytes = <u64>load<u32>(MACHINE_BASE + M_POOL_BYTES);
  poolHost = load<u32>(MACHINE_BASE + M_POOL_BASE);
}

/**
 * Host linear address of guest-physical `gpa` for a load, or 0 if `gpa` is
 * outside the memslot. Unbacked frames map to the ZERO page (after the
 * populate hook, if any, had its chance).
 */
// @ts-ignore: decorator
@inline export function hostForLoad(gpa: u64): usize {
  const off = gpa - slotBase;
  if (off < eagerBytes) return ramHost + <usize>off;
  return hostForLoadLazy(off);
}

/** The part of hostForLoad past the eager region; `off` is the slot offset. */
export function hostForLoadLazy(off: u64): usize {
  if (off >= slotSize) {
    // The host-table pool: hypervisor-built tables (shadow, EPT, stage 2).
    const p = off + slotBase - poolHpa;
    return p < poolBytes ? poolHost + <usize>p : 0;
  }
  let host = lookupFrame(off);
  if (host == 0 && populate) {
    hostPopulate(off & ~<u64>0xfff);
    host = lookupFrame(off);
  }
  return host != 0 ? host : <usize>ZERO_PAGE + <usize>(off & 0xfff);
}

function lookupFrame(off: u64): usize {
  const leaf = atomic.load<u32>(frameDir + <usize>(off >> 22) * 4);
  if (leaf == 0) return 0;
  const hfn = atomic.load<u32>(<usize>leaf + <usize>((off >> 12) & 1023) * 4);
  if (hfn == 0) return 0;
  return (<usize>hfn << 12) | <usize>(off & 0xfff);
}

/**
 * Host linear address of `gpa` for a store, backing its frame first if needed;
 * 0 if `gpa` is outside the memslot, 1 if backing memory is exhausted.
 * Called from TS by the memory API and builders (once per frame touched).
 */
export function hostForStore(gpa: u64): usize {
  const off = gpa - slotBase;
  if (off < eagerBytes) return ramHost + <usize>off;
  if (off >= slotSize) return 0;
  const host = lookupFrame(off);
  if (host != 0) return host;
  return backFrame(off);
}

/** Plain host address for a load, exported for TS (no populate side effects beyond the hook). */
export function hostForRead(gpa: u64): usize {
  return hostForLoad(gpa);
}

function lock(): void {
  while (atomic.cmpxchg<u32>(MACHINE_BASE + M_GROW_LOCK, 0, 1) != 0) {}
}
function unlock(): void {
  atomic.store<u32>(MACHINE_BASE + M_GROW_LOCK, 0);
}

/**
 * Allocates one zeroed 4 KiB host frame from the backing area; 0 when memory
 * is exhausted. Caller holds the lock.
 *
 * 1. If the frame at the bump pointer lies past the memory's current end,
 *    grow by 1/8 (at least 1 MiB, at least to cover it), capped at the
 *    machine's maximum.
 * 2. If it still does not fit, fail — the pointer is left where it is, so
 *    every later call fails the same way (the pointer is a u64 byte address
 *    bounded by LINEAR_LIMIT: it cannot wrap onto the low regions).
 * 3. Otherwise advance the pointer and return the frame.
 * Fresh memory from memory.grow is zero and frames are never reused, so the
 * frame needs no clearing.
 */
function allocFrameLocked(): usize {
  const next = load<u64>(MACHINE_BASE + M_BACK_NEXT);
  if (next + 4096 > <u64>load<u32>(MACHINE_BASE + M_BACK_END) * WASM_PAGE) {
    const maxPages = load<u32>(MACHINE_BASE + M_MAX_PAGES);
    const have = <u32>memory.size();
    const cover = <u32>((next + 4096 + WASM_PAGE - 1) / WASM_PAGE);
    let want: u32 = have < 16 ? 16 : have >> 3;
    if (cover > have && cover - have > want) want = cover - have;
    if (have >= maxPages) want = 0;
    else if (want > maxPages - have) want = maxPages - have;
    if (want == 0 || memory.grow(want) < 0) return 0;
    store<u32>(MACHINE_BASE + M_BACK_END, have + want);
    if (next + 4096 > <u64>(have + want) * WASM_PAGE) return 0;
  }
  if (next + 4096 > LINEAR_LIMIT) return 0;
  store<u64>(MACHINE_BASE + M_BACK_NEXT, next + 4096);
  return <usize>next;
}

function backFrame(off: u64): usize {
  lock();
  let host = lookupFrame(off);
  if (host == 0) {
    const dirSlot = frameDir + <usize>(off >> 22) * 4;
    let leaf = <usize>load<u32>(dirSlot);
    if (leaf == 0) {
      leaf = allocFrameLocked();
      if (leaf == 0) { unlock(); return 1; }
      atomic.store<u32>(dirSlot, <u32>leaf);
    }
    const frame = allocFrameLocked();
    if (frame == 0) { unlock(); return 1; }
    atomic.store<u32>(leaf + <usize>((off >> 12) & 1023) * 4, <u32>(frame >> 12));
    atomic.add<u32>(MACHINE_BASE + M_BACKED, 1);
    host = frame | <usize>(off & 0xfff);
  }
  unlock();
  return host;
}

/** Atomic 64-bit load of a paging-structure entry at host address `host` (8-aligned). */
// @ts-ignore: decorator
@inline export function loadEntry(host: usize): u64 {
  return atomic.load<u64>(host);
}

/**
 * Atomic compare-exchange of a paging-structure entry: stores `desired` iff the
 * entry still holds `expected`. Returns true on success. The only way the
 * walker writes guest memory.
 */
// @ts-ignore: decorator
@inline export function casEntry(host: usize, expected: u64, desired: u64): bool {
  if (host < <usize>0x2000) return false; // the ZERO page is never written
  return atomic.cmpxchg<u64>(host, expected, desired) == expected;
}
