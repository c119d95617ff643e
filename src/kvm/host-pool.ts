// The host-table pool: 4 KiB pages in the shared memory where a hypervisor
// builds its own tables (shadow pages now; EPT and stage 2 later). Hardware
// walkers reach them at host-physical POOL_HPA + offset (assembly/phys.ts);
// the control plane reads and writes entries here through a u64 view of the
// wasm memory, at the pool's host offset. Pages are named by their hpa.

import type { Layout } from "../core/layout.js";
import { hex } from "../addr.js";
import { MemoryViews, ZEROS } from "../core/views.js";

export class HostPool {
  /** Host-physical address of the first pool byte, as walkers see it. */
  readonly hpaBase: bigint;
  /** Pool pages in total. */
  readonly pages: number;
  /** Host offset (in the wasm memory) of the first pool byte. */
  private readonly hostOffset: number;
  private readonly free: number[] = [];
  /** 1 for each page handed out and not yet released: a double release is refused, not a page handed out twice. */
  private readonly used: Uint8Array;
  private nextFresh = 0;
  private readonly views: MemoryViews;
  /** Pages in use now and at most. */
  inUse = 0;
  peak = 0;

  constructor(wasmMemory: WebAssembly.Memory, layout: Layout) {
    this.views = MemoryViews.of(wasmMemory, layout);
    const dv = this.views.fresh().dv;
    this.hostOffset = dv.getUint32(layout.MACHINE_BASE + layout.M_POOL_BASE, true);
    this.pages = dv.getUint32(layout.MACHINE_BASE + layout.M_POOL_BYTES, true) / 4096;
    this.hpaBase = dv.getBigUint64(layout.MACHINE_BASE + layout.M_POOL_HPA, true);
    this.used = new Uint8Array(this.pages);
  }

  private u64(): BigUint64Array {
    return this.views.fresh().u64;
  }

  /**
   * Allocates one zeroed page; returns its hpa, or undefined when the pool is
   * full (and stays undefined until a page is released: nothing in use is
   * ever handed out again).
   */
  alloc(): bigint | undefined {
    let page = this.free.pop();
    if (page === undefined) {
      if (this.nextFresh >= this.pages) return undefined;
      page = this.nextFresh++;
    }
    this.views.fresh().u8.set(ZEROS, this.hostOffset + page * 4096);
    this.used[page] = 1;
    this.inUse++;
    if (this.inUse > this.peak) this.peak = this.inUse;
    return this.hpaBase + BigInt(page * 4096);
  }

  /** Returns the page at `hpa` to the pool; throws if it is not a page in use. */
  release(hpa: bigint): void {
    const page = this.pageOf(hpa);
    if (this.used[page] !== 1) throw new Error(`vmmu: pool page ${hex(hpa)} released while not in use`);
    this.used[page] = 0;
    this.free.push(page);
    this.inUse--;
  }

  private pageOf(hpa: bigint): number {
    const off = hpa - this.hpaBase;
    if (off < 0n || off >= BigInt(this.pages * 4096) || (off & 0xfffn) !== 0n) throw new RangeError(`vmmu: ${hex(hpa)} is not a pool page`);
    return Number(off >> 12n);
  }

  /** Pool-wide number of entry 0 of the page at `hpa` (pool page × 512), for entry() and setEntry(). */
  entryBase(hpa: bigint): number {
    return this.pageOf(hpa) * 512;
  }

  /** Entry number `n` of the pool (pool page × 512 + index). */
  entry(n: number): bigint {
    return this.u64()[this.hostOffset / 8 + n]!;
  }

  /** Writes entry number `n` of the pool. */
  setEntry(n: number, value: bigint): void {
    this.u64()[this.hostOffset / 8 + n] = value;
  }

  /**
   * Compare-exchange of entry number `n` (Atomics.compareExchange: a locked
   * cmpxchg, KVM's try_cmpxchg64 in tdp_mmu_set_spte_atomic): writes `desired`
   * only if the entry still holds `expected`; returns whether it did. Both are
   * taken as unsigned 64-bit values.
   */
  cmpxchg(n: number, expected: bigint, desired: bigint): boolean {
    const e = BigInt.asUintN(64, expected);
    return Atomics.compareExchange(this.u64(), this.hostOffset / 8 + n, e, BigInt.asUintN(64, desired)) === e;
  }

  /** A u32 view over the whole memory, for hot paths that read entries as two halves (see wordOf). */
  words(): Uint32Array {
    return this.views.fresh().u32;
  }

  /** Index in words() of the low half of entry number `n` (the high half follows). */
  wordOf(n: number): number {
    return this.hostOffset / 4 + n * 2;
  }

  /** Entry `index` (0..511) of the table page at `hpa`. */
  read(hpa: bigint, index: number): bigint {
    return this.u64()[(this.hostOffset + Number(hpa - this.hpaBase)) / 8 + index]!;
  }

  /** Writes entry `index` of the table page at `hpa`. */
  write(hpa: bigint, index: number, value: bigint): void {
    this.u64()[(this.hostOffset + Number(hpa - this.hpaBase)) / 8 + index] = value;
  }
}
