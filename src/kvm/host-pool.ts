// The host-table pool: 4 KiB pages in the shared memory where a hypervisor
// builds its own tables (shadow pages now; EPT and stage 2 later). Hardware
// walkers reach them at host-physical POOL_HPA + offset (assembly/phys.ts);
// the control plane reads and writes entries here through a u64 view.

import type { Layout } from "../core/layout.js";
import { hex } from "../addr.js";

export class HostPool {
  /** Host-physical address of the first pool byte, as walkers see it. */
  readonly hpaBase: bigint;
  /** Pool pages in total. */
  readonly pages: number;
  private readonly hostBase: number;
  private readonly free: number[] = [];
  private nextFresh = 0;
  private words?: { len: number; u64: BigUint64Array };
  /** Pages in use now and at most. */
  inUse = 0;
  peak = 0;

  constructor(private readonly wasmMemory: WebAssembly.Memory, layout: Layout) {
    const dv = new DataView(wasmMemory.buffer);
    this.hostBase = dv.getUint32(layout.MACHINE_BASE + layout.M_POOL_BASE, true);
    this.pages = dv.getUint32(layout.MACHINE_BASE + layout.M_POOL_BYTES, true) / 4096;
    this.hpaBase = dv.getBigUint64(layout.MACHINE_BASE + layout.M_POOL_HPA, true);
  }

  private u64(): BigUint64Array {
    const buf = this.wasmMemory.buffer;
    if (this.words === undefined || this.words.len !== buf.byteLength) this.words = { len: buf.byteLength, u64: new BigUint64Array(buf) };
    return this.words.u64;
  }

  /** Allocates one zeroed page; returns its hpa, or undefined when the pool is full. */
  alloc(): bigint | undefined {
    let page = this.free.pop();
    if (page === undefined) {
      if (this.nextFresh >= this.pages) return undefined;
      page = this.nextFresh++;
    }
    this.u64().fill(0n, (this.hostBase + page * 4096) / 8, (this.hostBase + page * 4096 + 4096) / 8);
    this.inUse++;
    if (this.inUse > this.peak) this.peak = this.inUse;
    return this.hpaBase + BigInt(page * 4096);
  }

  /** Returns the page at `hpa` to the pool. */
  release(hpa: bigint): void {
    this.free.push(this.pageOf(hpa));
    this.inUse--;
  }

  private pageOf(hpa: bigint): number {
    const off = hpa - this.hpaBase;
    if (off < 0n || off >= BigInt(this.pages * 4096) || (off & 0xfffn) !== 0n) throw new RangeError(`vmmu: ${hex(hpa)} is not a pool page`);
    return Number(off >> 12n);
  }

  /** Entry `index` (0..511) of the table page at `hpa`. */
  read(hpa: bigint, index: number): bigint {
    return this.u64()[(this.hostBase + Number(hpa - this.hpaBase)) / 8 + index]!;
  }

  /** Writes entry `index` of the table page at `hpa`. */
  write(hpa: bigint, index: number, value: bigint): void {
    this.u64()[(this.hostBase + Number(hpa - this.hpaBase)) / 8 + index] = value;
  }
}
