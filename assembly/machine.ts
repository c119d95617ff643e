// Machine bring-up: lays out linear memory (see layout.ts) and writes the
// machine header that every instance and the TS control plane read.

import {
  MACHINE_BASE, MACHINE_MAGIC, M_MAGIC, M_NVCPUS, M_VCPU_STRIDE, M_TLB_ENTRIES, M_POOL_BASE,
  M_POOL_BYTES, M_FRAME_DIR, M_RAM_HOST, M_BACK_NEXT, M_BACK_END, M_BACKED, M_POPULATE,
  M_SLOT_BASE, M_SLOT_SIZE, M_EAGER_BYTES, M_MAX_PAGES, M_POOL_HPA, POOL_HPA, VCPU_AREA, VCPU_TLB, TLB_ENTRY,
  WASM_PAGE, LINEAR_LIMIT,
} from "./layout";

export const INIT_OK: i32 = 0;
export const INIT_EALREADY: i32 = 1; //   header already written
export const INIT_EVCPUS: i32 = 2; //     vCPU count outside 1..256
export const INIT_ETLB: i32 = 3; //       TLB entries not a power of two in 16..2^20
export const INIT_ESLOT: i32 = 4; //      slot size 0, unaligned, > 2^46, or base + size overflows
export const INIT_ENOMEM: i32 = 5; //     the layout does not fit in 4 GiB / the memory maximum

/** Maximum memslot size: 64 TiB (frame directory ≤ 64 MiB). */
export const SLOT_MAX: u64 = <u64>1 << 46;

function align64k(x: u64): u64 {
  return (x + 0xffff) & ~<u64>0xffff;
}

/**
 * Lays out a fresh machine in the (zeroed) shared memory and grows the memory
 * to hold every fixed region plus the eager part of guest RAM.
 *
 * 1. Validate the configuration.
 * 2. Place the vCPU blocks, the host-table pool, the frame directory (if any
 *    part of the slot is lazy) and the eager RAM, each 64 KiB aligned.
 * 3. Grow the memory to cover them (backed frames grow it later).
 * 4. Write the header, magic last.
 *
 * Called once from TS, on instance 0, before any other instance attaches.
 * `maxPages` is the memory's declared maximum (64 KiB pages).
 */
export function machineInit(
  nVcpus: u32, tlbEntries: u32, poolBytes: u32,
  slotBase: u64, slotSize: u64, eagerBytes: u64, populate: u32, maxPages: u32,
): i32 {
  if (load<u32>(MACHINE_BASE + M_MAGIC) == MACHINE_MAGIC) return INIT_EALREADY;
  if (nVcpus < 1 || nVcpus > 256) return INIT_EVCPUS;
  if (tlbEntries < 16 || tlbEntries > (1 << 20) || (tlbEntries & (tlbEntries - 1)) != 0) return INIT_ETLB;
  if (slotSize == 0 || (slotSize & 0xfff) != 0 || (slotBase & 0xfff) != 0 || slotSize > SLOT_MAX) return INIT_ESLOT;
  if (slotBase + slotSize < slotBase) return INIT_ESLOT;
  if (slotBase < POOL_HPA + <u64>poolBytes && POOL_HPA < slotBase + slotSize) return INIT_ESLOT;
  if (eagerBytes > slotSize) eagerBytes = slotSize;
  eagerBytes &= ~<u64>0xfff;

  const stride = align64k(<u64>VCPU_TLB + <u64>tlbEntries * TLB_ENTRY);
  const poolBase = <u64>VCPU_AREA + stride * nVcpus;
  const afterPool = align64k(poolBase + <u64>poolBytes);
  let dir: u64 = 0;
  let ramHost = afterPool;
  if (eagerBytes < slotSize) {
    dir = afterPool;
    const chunks = (slotSize + 0x3fffff) >> 22;
    ramHost = align64k(dir + chunks * 4);
  }
  const backBase = align64k(ramHost + eagerBytes);
  const limit = <u64>maxPages * WASM_PAGE;
  if (backBase > LINEAR_LIMIT || backBase > limit) return INIT_ENOMEM;

  const needPages = <i32>(backBase >> 16);
  const have = memory.size();
  if (needPages > have && memory.grow(needPages - have) < 0) return INIT_ENOMEM;

  store<u32>(MACHINE_BASE + M_NVCPUS, nVcpus);
  store<u32>(MACHINE_BASE + M_VCPU_STRIDE, <u32>stride);
  store<u32>(MACHINE_BASE + M_TLB_ENTRIES, tlbEntries);
  store<u32>(MACHINE_BASE + M_POOL_BASE, <u32>poolBase);
  store<u32>(MACHINE_BASE + M_POOL_BYTES, poolBytes);
  store<u32>(MACHINE_BASE + M_FRAME_DIR, <u32>dir);
  store<u32>(MACHINE_BASE + M_RAM_HOST, <u32>ramHost);
  store<u64>(MACHINE_BASE + M_BACK_NEXT, backBase);
  store<u32>(MACHINE_BASE + M_BACK_END, <u32>memory.size());
  store<u32>(MACHINE_BASE + M_BACKED, 0);
  store<u32>(MACHINE_BASE + M_POPULATE, populate);
  store<u64>(MACHINE_BASE + M_POOL_HPA, POOL_HPA);
  store<u64>(MACHINE_BASE + M_SLOT_BASE, slotBase);
  store<u64>(MACHINE_BASE + M_SLOT_SIZE, slotSize);
  store<u64>(MACHINE_BASE + M_EAGER_BYTES, eagerBytes);
  store<u32>(MACHINE_BASE + M_MAX_PAGES, maxPages);
  atomic.store<u32>(MACHINE_BASE + M_MAGIC, MACHINE_MAGIC);
  return INIT_OK;
}
