// Typed views over the machine's shared wasm memory that follow its growth
// without reading WebAssembly.Memory.prototype.buffer on every access (on a
// shared memory that getter costs tens of ns). The memory only grows through
// the core's frame allocator or machineInit, and both store the new size in
// 64 KiB pages at MACHINE_BASE + M_BACK_END after growing (assembly/phys.ts,
// assembly/machine.ts): a view is renewed when that field differs from the
// size it was made at. Until then the old views stay valid for every byte
// they cover (a shared buffer is never detached): only lazily backed guest
// frames can lie beyond them, so GuestMemory also checks each host address
// it is handed against the views (cover()).

import type { Layout } from "./layout.js";
import { DISPOSED_MESSAGE } from "./lifetime.js";

const cache = new WeakMap<WebAssembly.Memory, MemoryViews>();

/** 4 KiB of zeros, only ever read: the source for zeroing (a copy is faster than a fill on shared memory). */
export const ZEROS = new Uint8Array(4096);

/** Views over the whole of one wasm memory, shared by everything in this thread that uses it. */
export class MemoryViews {
  /** Bumped each time the views are renewed; callers holding derived views compare it. */
  generation = 0;
  dv!: DataView;
  u8!: Uint8Array;
  u32!: Uint32Array;
  u64!: BigUint64Array;
  i64!: BigInt64Array;
  private pages = -1;
  private header: Uint32Array;
  private readonly at: number;
  private memory: WebAssembly.Memory | undefined;

  private constructor(memory: WebAssembly.Memory, layout: Layout) {
    this.memory = memory;
    this.at = (layout.MACHINE_BASE + layout.M_BACK_END) >> 2;
    this.header = new Uint32Array(memory.buffer, 0, this.at + 1);
    this.fresh();
  }

  /** The views of `memory` in this thread (one instance per memory). */
  static of(memory: WebAssembly.Memory, layout: Layout): MemoryViews {
    let v = cache.get(memory);
    if (v === undefined) cache.set(memory, (v = new MemoryViews(memory, layout)));
    return v;
  }

  /** Renews the views if the memory has grown since they were made; returns this. */
  fresh(): this {
    const p = this.header[this.at]!;
    if (p !== this.pages) this.renew(p);
    return this;
  }

  /** Makes sure the views reach byte `end` (exclusive) of a host address the core returned; returns this. */
  cover(end: number): this {
    if (end > this.u8.length) this.renew(this.header[this.at]!);
    return this;
  }

  /**
   * Drops the memory and every view of it (Machine.dispose), so holding this
   * object no longer keeps the memory alive; a later fresh() or cover() throws.
   */
  release(): void {
    if (this.memory === undefined) return;
    this.memory = undefined;
    this.pages = -1;
    this.header = new Uint32Array(this.at + 1).fill(0xffff_ffff);
    const none = new ArrayBuffer(0);
    this.dv = new DataView(none);
    this.u8 = new Uint8Array(none);
    this.u32 = new Uint32Array(none);
    this.u64 = new BigUint64Array(none);
    this.i64 = new BigInt64Array(none);
    this.generation++;
  }

  private renew(pages: number): void {
    if (this.memory === undefined) throw new Error(DISPOSED_MESSAGE);
    const buf = this.memory.buffer;
    this.pages = pages;
    this.dv = new DataView(buf);
    this.u8 = new Uint8Array(buf);
    this.u32 = new Uint32Array(buf);
    this.u64 = new BigUint64Array(buf);
    this.i64 = new BigInt64Array(buf);
    this.generation++;
  }
}
