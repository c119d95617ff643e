// Guest physical memory as the control plane sees it: bigint-addressed reads
// and writes through the memslot (assembly/phys.ts decides where each frame
// lives), a byte view of the eagerly backed part, and the atomic
// compare-exchange the reference walker and tests use on the same entries.

import type { CoreExports } from "./core/load.js";
import type { Layout } from "./core/layout.js";
import { hex } from "./addr.js";
import { MemoryViews, ZEROS } from "./core/views.js";
import { DISPOSED_EXPORTS, Lifetime } from "./core/lifetime.js";
import { intArg, reg64Arg, show, u8ArrayArg } from "./validate.js";

/** The guest's RAM memslot: [base, base + size). */
export interface Memslot {
  readonly base: bigint;
  readonly size: bigint;
  /** Leading bytes of the slot backed contiguously from the start. */
  readonly eagerBytes: bigint;
}

export class GuestMemory {
  /** Views over the whole wasm memory, renewed on growth (call views.fresh() before use). */
  readonly views: MemoryViews;

  private mem: WebAssembly.Memory | undefined;

  /**
   * Binds the memory API to `wasmMemory` through instance `core`. `lifetime`
   * is the machine's disposed flag (a fresh one for an attached worker).
   */
  constructor(
    wasmMemory: WebAssembly.Memory,
    private core: CoreExports,
    private readonly layout: Layout,
    readonly slot: Memslot,
    /** @internal The machine's disposed flag, shared with its vCPUs. */
    readonly lifetime: Lifetime = new Lifetime(),
  ) {
    this.mem = wasmMemory;
    this.views = MemoryViews.of(wasmMemory, layout);
  }

  /** The shared WebAssembly.Memory holding guest RAM and the machine's state. */
  get wasmMemory(): WebAssembly.Memory {
    this.lifetime.check();
    return this.mem!;
  }

  /** The SharedArrayBuffer behind guest RAM (and everything else in the machine). */
  get buffer(): SharedArrayBuffer {
    return this.wasmMemory.buffer as unknown as SharedArrayBuffer;
  }

  /**
   * @internal Machine.dispose: drops the wasm memory, the instance and the
   * views, so nothing reachable from this object keeps them alive.
   */
  release(): void {
    this.lifetime.disposed = true;
    this.mem = undefined;
    this.core = DISPOSED_EXPORTS;
    this.views.release();
  }

  /** True iff `gpa` is inside the RAM memslot. */
  contains(gpa: bigint): boolean {
    this.lifetime.check();
    checkGpa(gpa);
    return this.inSlot(gpa);
  }

  private inSlot(gpa: bigint): boolean {
    return gpa >= this.slot.base && gpa - this.slot.base < this.slot.size;
  }

  private host(gpa: bigint, forStore: boolean): number {
    if (!this.inSlot(gpa)) {
      throw new RangeError(`vmmu: gpa ${hex(gpa)} is outside guest RAM [${hex(this.slot.base)}, ${hex(this.slot.base + this.slot.size)})`);
    }
    const h = forStore ? this.core.hostForStore(gpa) : this.core.hostForRead(gpa);
    if (h === 1) throw new RangeError(`vmmu: out of host memory while backing gpa ${hex(gpa)}: the frames touched exceed the machine's ${this.hostLimitBytes()} host bytes (createMachine maxHostBytes; at most 4 GiB)`);
    const host = h >>> 0;
    this.views.fresh().cover(host - (host & 0xfff) + 4096);
    return host;
  }

  /** The most linear memory this machine may grow to (bytes): maxHostBytes, or the wasm32 limit. */
  hostLimitBytes(): number {
    this.lifetime.check();
    return this.views.fresh().dv.getUint32(this.layout.MACHINE_BASE + this.layout.M_MAX_PAGES, true) * this.layout.WASM_PAGE;
  }

  /** Reads the little-endian u64 at `gpa` (need not be aligned). Unbacked memory reads as zero. */
  read64(gpa: bigint): bigint {
    this.lifetime.check();
    checkGpa(gpa);
    if ((gpa & 0xfffn) <= 0xff8n) {
      const h = this.host(gpa, false);
      return this.views.dv.getBigUint64(h, true);
    }
    return bytesToU64(this.read(gpa, 8));
  }

  /** Writes the little-endian u64 `value` at `gpa`. */
  write64(gpa: bigint, value: bigint): void {
    this.lifetime.check();
    checkGpa(gpa);
    const v = BigInt.asUintN(64, reg64Arg(value, "value"));
    if ((gpa & 0xfffn) <= 0xff8n) {
      const h = this.host(gpa, true);
      this.views.dv.setBigUint64(h, v, true);
      return;
    }
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    this.write(gpa, b);
  }

  /**
   * Atomic compare-exchange of the aligned u64 at `gpa`: stores `desired` iff it
   * holds `expected`. Returns true on success. The same instruction the walker
   * uses for A/D, so concurrent updates from both sides are never lost.
   * Values are 64-bit, given signed or unsigned.
   */
  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    this.lifetime.check();
    checkGpa(gpa);
    if ((gpa & 7n) !== 0n) throw new RangeError(`vmmu: cmpxchg64 needs an 8-aligned gpa, got ${hex(gpa)}`);
    const e = BigInt.asIntN(64, reg64Arg(expected, "expected"));
    const d = BigInt.asIntN(64, reg64Arg(desired, "desired"));
    const h = this.host(gpa, true);
    return Atomics.compareExchange(this.views.i64, h / 8, e, d) === e;
  }

  /** Throws unless [gpa, gpa + length) lies inside the memslot. */
  private checkRange(gpa: bigint, length: number): void {
    this.lifetime.check();
    checkGpa(gpa);
    intArg(length, "length", 0, Number.MAX_SAFE_INTEGER);
    if (length === 0) return;
    if (!this.inSlot(gpa)) this.host(gpa, false);
    const last = gpa + BigInt(length) - 1n;
    if (!this.inSlot(last)) this.host(this.slot.base + this.slot.size, false);
  }

  /** Copies `length` bytes starting at `gpa` out of guest RAM. */
  read(gpa: bigint, length: number): Uint8Array {
    intArg(length, "length", 0, 0x7fff_ffff);
    this.checkRange(gpa, length);
    const out = new Uint8Array(length);
    this.readInto(gpa, out);
    return out;
  }

  /** Copies `out.length` bytes starting at `gpa` out of guest RAM into `out`. */
  readInto(gpa: bigint, out: Uint8Array): void {
    const length = u8ArrayArg(out, "out").length;
    this.checkRange(gpa, length);
    let done = 0;
    while (done < length) {
      const a = gpa + BigInt(done);
      const n = Math.min(length - done, 4096 - Number(a & 0xfffn));
      const h = this.host(a, false);
      out.set(this.views.u8.subarray(h, h + n), done);
      done += n;
    }
  }

  /** Copies `bytes` into guest RAM at `gpa`, backing frames as needed. */
  write(gpa: bigint, bytes: Uint8Array): void {
    this.checkRange(gpa, u8ArrayArg(bytes, "bytes").length);
    let done = 0;
    while (done < bytes.length) {
      const a = gpa + BigInt(done);
      const n = Math.min(bytes.length - done, 4096 - Number(a & 0xfffn));
      const h = this.host(a, true);
      this.views.u8.set(bytes.subarray(done, done + n), h);
      done += n;
    }
  }

  /** Sets `length` bytes starting at `gpa` to `byte`, backing frames as needed. */
  fill(gpa: bigint, length: number, byte: number): void {
    this.checkRange(gpa, length);
    intArg(byte, "byte", 0, 255);
    let done = 0;
    while (done < length) {
      const a = gpa + BigInt(done);
      const n = Math.min(length - done, 4096 - Number(a & 0xfffn));
      const h = this.host(a, true);
      if (byte === 0) this.views.u8.set(ZEROS.subarray(0, n), h);
      else this.views.u8.fill(byte, h, h + n);
      done += n;
    }
  }

  /**
   * A byte view of the eagerly backed part of guest RAM, over the
   * SharedArrayBuffer: index 0 is gpa `slot.base`. Lazily backed frames are
   * not contiguous and are not in this view; use read/write for them.
   */
  bytes(): Uint8Array {
    this.lifetime.check();
    const v = this.views.fresh();
    const ramHost = v.dv.getUint32(this.layout.MACHINE_BASE + this.layout.M_RAM_HOST, true);
    return new Uint8Array(v.u8.buffer, ramHost, Number(this.slot.eagerBytes));
  }

  /** Number of 4 KiB frames backed on demand so far (outside the eager part). */
  backedFrames(): number {
    this.lifetime.check();
    return this.views.fresh().dv.getUint32(this.layout.MACHINE_BASE + this.layout.M_BACKED, true);
  }
}

function checkGpa(gpa: unknown): asserts gpa is bigint {
  if (typeof gpa !== "bigint") throw new TypeError(`vmmu: gpa must be a bigint, got ${show(gpa)}`);
}


function bytesToU64(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
}
