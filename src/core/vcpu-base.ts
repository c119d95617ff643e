// What every vCPU shares whatever its architecture: the binding of one wasm
// instance to one vCPU block, a DataView that follows memory growth, the
// TLB/walk counters and the zero-copy batch views.

import type { Core } from "./load.js";
import type { GuestMemory } from "../memory.js";
import type { MemoryViews } from "./views.js";
import { DISPOSED_EXPORTS, type Lifetime } from "./lifetime.js";
import { bigintArg, boolArg, intArg, u64ArrayArg, u8ArrayArg } from "../validate.js";

/** TLB and walk counters of one vCPU, since creation or resetStats(). */
export interface TlbStats {
  lookups: number; hits: number; misses: number; walks: number; ptRefs: number; adWrites: number;
  walkRetries: number; fills: number; evictions: number; flushAll: number; flushNonGlobal: number;
  flushCtx: number; flushPage: number; dropped: number; faults: number; rollovers: number; flushProbes: number;
  /** Entries currently live (reachable) in the TLB. */
  live: number;
}

/** Views over one vCPU's batch area; fill `va` and `access`, call run(), read `pa` and `status`. */
export interface Batch<P> {
  readonly capacity: number;
  readonly va: BigUint64Array;
  readonly access: Uint8Array;
  readonly pa: BigUint64Array;
  readonly status: Uint32Array;
  /** Translates entries 0..count-1 with privilege `priv`; returns the number of faults. */
  run(count: number, priv: P): number;
}

export abstract class VcpuBase<P> {
  readonly base: number;
  protected readonly L: Core["layout"];
  protected ex: Core["exports"];
  /** The machine's disposed flag (shared with its memory and other vCPUs). */
  protected readonly lifetime: Lifetime;
  /** The memory's views (shared with `memory`), renewed on growth by fresh(). */
  protected readonly views: MemoryViews;
  private batchViews?: { generation: number; batch: Batch<P> };
  /**
   * T_INV_EPOCH and R_RIGHTS of this vCPU as one fixed-length view: unlike the
   * whole-memory views (length-tracking over a growable shared buffer, slow to
   * index), a fixed-length view is a plain load; the shared buffer is never
   * detached and the block never moves, so it stays valid across growth.
   */
  private cells: Uint32Array;
  /**
   * The STATE record (registers, result record) as fixed-length views, index =
   * offset >> 2 (u32) or >> 3 (u64): plain loads on the single-call paths,
   * valid across growth for the same reason as `cells`.
   */
  protected st32: Uint32Array;
  protected st64: BigUint64Array;
  /** Address of the counter block this object reports (the vCPU's; a context view's own). */
  protected countersAt: number;

  /**
   * Binds wasm instance `core` to vCPU block `index`. `fresh` initialises the
   * block (TLB on); a worker attaching to a running vCPU passes false. One
   * instance drives a vCPU at a time.
   */
  constructor(readonly index: number, core: Core, readonly memory: GuestMemory, fresh: boolean) {
    this.L = core.layout;
    this.ex = core.exports;
    this.lifetime = memory.lifetime;
    this.views = memory.views;
    const dv = this.dv();
    const stride = dv.getUint32(this.L.MACHINE_BASE + this.L.M_VCPU_STRIDE, true);
    this.base = this.L.VCPU_AREA + index * stride;
    this.cells = cellsOf(memory.buffer, this.base + this.L.T_INV_EPOCH, this.base + this.L.R_RIGHTS);
    this.st32 = new Uint32Array(memory.buffer, this.base + this.L.VCPU_STATE, (this.L.VCPU_COUNTERS - this.L.VCPU_STATE) >> 2);
    this.st64 = new BigUint64Array(memory.buffer, this.base + this.L.VCPU_STATE, (this.L.VCPU_COUNTERS - this.L.VCPU_STATE) >> 3);
    this.countersAt = this.base + this.L.VCPU_COUNTERS;
    this.ex.physAttach();
    this.ex.tlbInit(this.base);
    if (fresh) {
      dv.setUint32(this.base + this.L.S_INDEX, index, true);
      dv.setUint32(this.base + this.L.S_TLB_ON, 1, true);
    }
  }

  /**
   * @internal Machine.dispose: drops this vCPU's wasm instance and batch
   * views; every later call throws `vmmu: machine is disposed`.
   */
  release(): void {
    this.ex = DISPOSED_EXPORTS;
    this.cells = new Uint32Array(2);
    this.st32 = new Uint32Array(0);
    this.st64 = new BigUint64Array(0);
    this.batchViews = undefined;
  }

  /** A DataView over the whole memory, renewed when the memory has grown. */
  protected dv(): DataView {
    return this.views.fresh().dv;
  }

  /** u32 view over the whole memory (index = byte address >> 2), renewed on growth. */
  protected u32(): Uint32Array {
    return this.views.fresh().u32;
  }

  /** u64 view over the whole memory (index = byte address >> 3), renewed on growth. */
  protected u64(): BigUint64Array {
    return this.views.fresh().u64;
  }

  /**
   * Throws the error a translate() with these arguments deserves (disposed,
   * `va` not a bigint, the privilege not a boolean): the hot paths test all
   * three in one branch and call this only when one fails.
   */
  protected refuse(va: unknown, priv: unknown): never {
    this.lifetime.check();
    bigintArg(va, "va");
    boolArg(priv, this.privName);
    throw new Error("vmmu: unreachable: refuse() found nothing to refuse");
  }

  /** The name of the privilege argument in messages (`user`, `el0`). */
  protected abstract readonly privName: string;

  /** Runs the architecture's batch translation for `count` entries. */
  protected abstract runBatch(count: number, priv: P): number;

  /** Zero-copy views over this vCPU's batch area (capacity BATCH_MAX). */
  batch(): Batch<P> {
    this.lifetime.check();
    const v = this.views.fresh();
    if (this.batchViews?.generation === v.generation) return this.batchViews.batch;
    const buf = v.u8.buffer;
    const L = this.L, b = this.base, n = L.BATCH_MAX;
    const batch: Batch<P> = {
      capacity: n,
      va: new BigUint64Array(buf, b + L.VCPU_BATCH_VA, n),
      access: new Uint8Array(buf, b + L.VCPU_BATCH_ACCESS, n),
      pa: new BigUint64Array(buf, b + L.VCPU_BATCH_PA, n),
      status: new Uint32Array(buf, b + L.VCPU_BATCH_STATUS, n),
      run: (count: number, priv: P) => {
        this.lifetime.check();
        intArg(count, "count", 0, n);
        boolArg(priv, this.privName);
        return this.runBatch(count, priv);
      },
    };
    this.batchViews = { generation: v.generation, batch };
    return batch;
  }

  /**
   * Translates every address of `va` in order, in chunks through the batch
   * area; `access` holds one code per address (0 read, 1 write, 2 fetch) or
   * is one code for all. Writes pa and status words into `out`; returns the
   * number of faults.
   */
  protected batchInto(va: BigUint64Array, access: Uint8Array | number, priv: P,
    out: { pa: BigUint64Array; status: Uint32Array }): number {
    u64ArrayArg(va, "va");
    if (typeof access !== "number") u8ArrayArg(access, "access");
    boolArg(priv, this.privName);
    if (typeof out !== "object" || out === null) throw new TypeError("vmmu: out must be { pa: BigUint64Array, status: Uint32Array }");
    u64ArrayArg(out.pa, "out.pa");
    if (!(out.status instanceof Uint32Array)) throw new TypeError("vmmu: out.status must be a Uint32Array");
    if (out.pa.length < va.length || out.status.length < va.length) throw new RangeError("vmmu: output arrays shorter than the input");
    if (typeof access !== "number" && access.length < va.length) throw new RangeError("vmmu: access array shorter than the input");
    let faults = 0;
    for (let done = 0; done < va.length;) {
      const bt = this.batch();
      const n = Math.min(bt.capacity, va.length - done);
      bt.va.set(va.subarray(done, done + n));
      if (typeof access === "number") bt.access.fill(access, 0, n); else bt.access.set(access.subarray(done, done + n));
      faults += bt.run(n, priv);
      const after = this.batch();
      out.pa.set(after.pa.subarray(0, n), done);
      out.status.set(after.status.subarray(0, n), done);
      done += n;
    }
    return faults;
  }

  /** Turns the TLB off (every access walks) or on; either way the TLB is flushed. */
  setTlbEnabled(on: boolean): void {
    this.lifetime.check();
    boolArg(on, "on");
    if (this.setContextTlb(on)) return;
    this.dv().setUint32(this.base + this.L.S_TLB_ON, on ? 1 : 0, true);
    this.ex.tlbFlushAll(this.base);
    this.reload();
  }

  /** Address of this vCPU's MMU context record `index` (assembly/layout.ts MMU_*). */
  protected ctxAddr(index: number): number {
    return this.base + this.L.VCPU_MMU + index * this.L.MMU_STRIDE;
  }

  /** A context view's setTlbEnabled (its own register block, no flush of the vCPU's TLB); false for a vCPU. */
  protected setContextTlb(_on: boolean): boolean {
    return false;
  }

  /** Re-derives the mode from the STATE record after it changed. */
  protected abstract reload(): void;

  /** TLB and walk counters. */
  tlbStats(): TlbStats {
    this.lifetime.check();
    const dv = this.dv(), L = this.L, c = this.countersAt;
    const n = (i: number) => Number(dv.getBigUint64(c + i * 8, true));
    return {
      lookups: n(L.C_LOOKUPS), hits: n(L.C_HITS), misses: n(L.C_MISSES), walks: n(L.C_WALKS), ptRefs: n(L.C_PT_REFS),
      adWrites: n(L.C_AD_WRITES), walkRetries: n(L.C_WALK_RETRIES), fills: n(L.C_FILLS), evictions: n(L.C_EVICTIONS),
      flushAll: n(L.C_FLUSH_ALL), flushNonGlobal: n(L.C_FLUSH_NONGLOBAL), flushCtx: n(L.C_FLUSH_CTX),
      flushPage: n(L.C_FLUSH_PAGE), dropped: n(L.C_DROPPED), faults: n(L.C_FAULTS), rollovers: n(L.C_ROLLOVERS),
      flushProbes: n(L.C_FLUSH_PROBES), live: dv.getUint32(this.base + L.T_TOTAL_LIVE, true),
    };
  }

  /**
   * A live view of the counters block (u64 per counter, index C_*), for
   * callers that read counters on a hot path; renew it after memory growth
   * (when `memory.views.fresh().generation` changes).
   */
  counterView(): BigUint64Array {
    this.lifetime.check();
    return this.u64().subarray(this.countersAt >> 3, (this.countersAt >> 3) + this.L.COUNTER_COUNT);
  }

  /**
   * The invalidation epoch (a u32 that wraps): it changes whenever this
   * vCPU's TLB may have dropped an entry or stopped matching it — an
   * invalidation, a flush, an eviction by a fill, a tag rollover, a context
   * switch, a mode or rights change. A cache of translations an embedder
   * builds from fast-path results carrying RIGHTS.CACHED stays correct for as
   * long as the epoch it was built under holds.
   */
  invalidationEpoch(): number {
    this.lifetime.check();
    return this.cells[0]!;
  }

  /** The effective rights word (RIGHTS.*) of the last successful translateFast(). */
  lastRights(): number {
    this.lifetime.check();
    return this.cells[1]!;
  }

  /** Zeroes the counters (not the TLB). */
  resetStats(): void {
    this.lifetime.check();
    this.views.fresh().u8.fill(0, this.countersAt, this.countersAt + this.L.COUNTER_COUNT * 8);
  }
}

/**
 * Checks the Numbers of a fast-path call (translateFast): two 32-bit halves of
 * the address (signed or unsigned), an access code 0..2 and a privilege flag.
 * Throws the `vmmu:` error naming the first bad one; returns nothing.
 */
export function checkFastArgs(vaLo: unknown, vaHi: unknown, access: unknown, priv: unknown, privName: string, names: readonly [string, string] = ["vaLo", "vaHi"]): void {
  for (const [v, name] of [[vaLo, names[0]], [vaHi, names[1]]] as const) {
    if (typeof v !== "number") throw new TypeError(`vmmu: ${name} must be a number (a 32-bit half of the 64-bit value), got ${typeof v}`);
    if ((v >>> 0) !== v && (v | 0) !== v) throw new RangeError(`vmmu: ${name} must be a 32-bit integer (-2^31..2^32-1), got ${v}`);
  }
  if (access !== 0 && access !== 1 && access !== 2) throw new RangeError(`vmmu: access must be 0 (read), 1 (write) or 2 (fetch), got ${String(access)}`);
  if (priv !== 0 && priv !== 1 && priv !== true && priv !== false) throw new TypeError(`vmmu: ${privName} must be 0, 1 or a boolean, got ${String(priv)}`);
}

/** A 2-element fixed-length view: [u32 at `epochAt`, u32 at `rightsAt`] (adjacent by the layout). */
function cellsOf(buffer: ArrayBufferLike, epochAt: number, rightsAt: number): Uint32Array {
  if (rightsAt !== epochAt + 4) throw new Error("vmmu: layout places R_RIGHTS right after T_INV_EPOCH (assembly/layout.ts)");
  return new Uint32Array(buffer, epochAt, 2);
}
