// A vmmu machine: one shared WebAssembly.Memory holding guest RAM and every
// vCPU's state and TLB, and one wasm instance per vCPU over it.

import { coreModule, instantiateCore, type Core, type PopulateHook } from "./core/load.js";
import type { Layout } from "./core/layout.js";
import { GuestMemory, type Memslot } from "./memory.js";
import { X86Vcpu } from "./x86/vcpu.js";
import { Arm64Vcpu } from "./arm64/vcpu.js";
import { hex } from "./addr.js";
import { enumArg, fnArg, intArg, optionsObject, own, show } from "./validate.js";

export interface MachineOptions {
  arch: "x86_64" | "arm64";
  /** Guest RAM size in bytes (a multiple of 4096, at most 64 TiB). */
  memoryBytes: number | bigint;
  /** vCPUs, 1..256 (default 1). */
  vcpus?: number;
  /** MAXPHYADDR, 36..52 (default 46 on x86_64, 48 on arm64). Guest RAM must lie below 2^maxPhysAddrBits. */
  maxPhysAddrBits?: number;
  /** Guest-physical address where RAM starts (default 0). */
  ramBase?: bigint;
  /** TLB entries per vCPU: a power of two, 16..2^20 (default 4096). */
  tlbEntries?: number;
  /**
   * Leading bytes of RAM backed whole at creation. The rest is backed one
   * 4 KiB frame at a time on first write, so guests far larger than the 4 GiB
   * wasm memory work as long as the frames they touch fit. Default: all of RAM
   * if it is at most 2 GiB, else none.
   */
  eagerBytes?: number | bigint;
  /** Bytes reserved for host page tables (shadow/EPT pools), default 1 MiB. */
  poolBytes?: number;
  /** Called to fill an unbacked frame on its first read (memory images). */
  populate?: PopulateHook;
  /**
   * Cap on the wasm memory (bytes) the machine may grow to: machine state,
   * eager RAM and lazily backed frames together. Default: what an all-eager
   * machine needs, else the wasm32 limit (4 GiB). A write that needs a frame
   * past the cap throws a RangeError; nothing written before changes.
   */
  maxHostBytes?: number | bigint;
}

export type X86MachineOptions = MachineOptions & { arch: "x86_64" };
export type Arm64MachineOptions = MachineOptions & { arch: "arm64" };
export type Vcpu = X86Vcpu | Arm64Vcpu;

/** What a worker needs to attach to a machine: post it with postMessage. */
export interface MachineHandle {
  arch: "x86_64" | "arm64";
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  slot: Memslot;
  maxPhysAddrBits: number;
}

const GiB = 1n << 30n;
let layoutCache: Layout | undefined;

/** The core's layout constants, read from a probe instance (no machine needed). */
export async function coreLayout(): Promise<Layout> {
  if (!layoutCache) {
    const probe = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
    layoutCache = (await instantiateCore(await coreModule(), probe)).layout;
  }
  return layoutCache;
}

export class Machine<V extends Vcpu = Vcpu> {
  private handleRef: MachineHandle | undefined;

  private constructor(
    readonly arch: "x86_64" | "arm64",
    readonly memory: GuestMemory,
    readonly layout: Layout,
    private readonly vcpuList: V[],
    handle: MachineHandle,
  ) {
    this.handleRef = handle;
  }

  /** What a worker needs to attach to this machine (see attachVcpu). */
  get handle(): MachineHandle {
    this.memory.lifetime.check();
    return this.handleRef!;
  }

  /** True once dispose() has been called. */
  get disposed(): boolean {
    return this.memory.lifetime.disposed;
  }

  /**
   * Releases the machine: every later call on it, its memory or its vCPUs
   * throws `vmmu: machine is disposed`, and this object, its memory and its
   * vCPUs no longer reference the wasm memory or instances, so the engine
   * may reclaim them at its next garbage collection even while they are
   * still referenced. Idempotent. Workers attached with attachVcpu hold
   * their own references; terminate them too.
   */
  dispose(): void {
    if (this.memory.lifetime.disposed) return;
    for (const v of this.vcpuList) v.release();
    this.vcpuList.length = 0;
    this.memory.release();
    this.handleRef = undefined;
  }

  /** @internal */
  static async create(options: MachineOptions): Promise<Machine> {
    const o = optionsObject(options, "options");
    const opts = {
      arch: enumArg(own(o, "arch"), "arch", ["x86_64", "arm64"] as const),
      memoryBytes: own(o, "memoryBytes") as number | bigint, ramBase: own(o, "ramBase") as bigint | undefined,
      vcpus: own(o, "vcpus") as number | undefined, maxPhysAddrBits: own(o, "maxPhysAddrBits") as number | undefined,
      tlbEntries: own(o, "tlbEntries") as number | undefined, eagerBytes: own(o, "eagerBytes") as number | bigint | undefined,
      poolBytes: own(o, "poolBytes") as number | undefined, maxHostBytes: own(o, "maxHostBytes") as number | bigint | undefined,
      populate: fnArg<PopulateHook>(own(o, "populate"), "populate", true),
    };
    const size = toBig(opts.memoryBytes, "memoryBytes");
    const base = orDefault(opts.ramBase, 0n);
    const vcpus = orDefault(opts.vcpus, 1);
    const maxPhys = orDefault(opts.maxPhysAddrBits, opts.arch === "arm64" ? 48 : 46);
    const tlbEntries = orDefault(opts.tlbEntries, 4096);
    const poolBytes = orDefault(opts.poolBytes, 1 << 20);
    if (size <= 0n || (size & 0xfffn) !== 0n) throw new RangeError(`vmmu: memoryBytes must be a positive multiple of 4096, got ${show(opts.memoryBytes)}`);
    if (typeof base !== "bigint") throw new TypeError(`vmmu: ramBase must be a bigint, got ${show(base)}`);
    if (base < 0n || (base & 0xfffn) !== 0n) throw new RangeError(`vmmu: ramBase must be a 4 KiB aligned gpa, got ${show(base)}`);
    intArg(vcpus, "vcpus", 1, 256);
    intArg(maxPhys, "maxPhysAddrBits", 36, 52);
    intArg(tlbEntries, "tlbEntries", 16, 1 << 20);
    intArg(poolBytes, "poolBytes", 0, 0xffff_f000);
    if (base + size > 1n << BigInt(maxPhys)) {
      throw new RangeError(`vmmu: ramBase + memoryBytes (${hex(base + size)}) exceeds 2^maxPhysAddrBits (MAXPHYADDR 2^${maxPhys}); raise maxPhysAddrBits or shrink the guest`);
    }
    if (poolBytes % 4096 !== 0) throw new RangeError(`vmmu: poolBytes must be a multiple of 4096, got ${poolBytes}`);
    const eager = opts.eagerBytes !== undefined ? toBig(opts.eagerBytes, "eagerBytes") : size <= 2n * GiB ? size : 0n;
    if (eager < 0n || eager > size) throw new RangeError(`vmmu: eagerBytes must be 0..memoryBytes (${size}), got ${show(opts.eagerBytes)}`);

    const layout = await coreLayout();
    if (size > layout.SLOT_MAX) throw new RangeError(`vmmu: memoryBytes above ${layout.SLOT_MAX} is not supported`);
    if ((tlbEntries & (tlbEntries - 1)) !== 0) throw new RangeError(`vmmu: tlbEntries must be a power of two in 16..2^20, got ${tlbEntries}`);
    // What the machine needs at creation (an upper bound on machineInit's
    // layout), and the most it may grow to: that alone when all RAM is eager,
    // else the wasm32 limit for lazily backed frames — either capped by
    // maxHostBytes.
    const limit = BigInt(layout.LINEAR_LIMIT);
    const perVcpu = BigInt(layout.VCPU_TLB + tlbEntries * layout.TLB_ENTRY + layout.WASM_PAGE);
    const state = BigInt(layout.VCPU_AREA) + BigInt(vcpus) * perVcpu + BigInt(poolBytes) + 2n * BigInt(layout.WASM_PAGE);
    const dirBytes = eager === size ? 0n : ((size + 0x3fffffn) >> 22n) * 4n + BigInt(layout.WASM_PAGE);
    const atCreation = state + dirBytes + eager;
    if (atCreation > limit) {
      throw new RangeError(`vmmu: the machine needs ${atCreation} bytes of wasm memory at creation (vCPU state ${BigInt(vcpus) * perVcpu}, ` +
        `host-table pool ${poolBytes}, eager RAM ${eager}${dirBytes ? `, frame directory ${dirBytes}` : ""}), above the 4 GiB wasm32 limit; ` +
        `lower vcpus, tlbEntries, poolBytes or eagerBytes`);
    }
    const page = BigInt(layout.WASM_PAGE);
    let maxPages = Number(eager === size ? (atCreation + page - 1n) / page : limit / page);
    if (opts.maxHostBytes !== undefined) {
      const cap = toBig(opts.maxHostBytes, "maxHostBytes");
      if (cap > limit) throw new RangeError(`vmmu: maxHostBytes (${cap}) is above the 4 GiB wasm32 limit`);
      if ((cap / page) * page < atCreation) throw new RangeError(`vmmu: maxHostBytes (${cap}) is below the ${atCreation} bytes this machine needs at creation`);
      maxPages = Math.min(maxPages, Number(cap / page));
    }

    const module = await coreModule();
    const wasmMemory = new WebAssembly.Memory({ initial: 2, maximum: maxPages, shared: true });
    const core0 = await instantiateCore(module, wasmMemory, opts.populate);
    const rc = core0.exports.machineInit(vcpus, tlbEntries, poolBytes, base, size, eager, opts.populate ? 1 : 0, maxPages);
    if (rc !== layout.INIT_OK) throw new Error(`vmmu: machine layout failed (${initError(layout, rc)})`);
    const slot: Memslot = { base, size, eagerBytes: eager & ~0xfffn };
    const memory = new GuestMemory(wasmMemory, core0.exports, layout, slot);
    const list: Vcpu[] = [];
    for (let i = 0; i < vcpus; i++) {
      const core: Core = i === 0 ? core0 : await instantiateCore(module, wasmMemory, opts.populate);
      list.push(opts.arch === "arm64" ? new Arm64Vcpu(i, core, memory, Math.min(maxPhys, 48)) : new X86Vcpu(i, core, memory, maxPhys));
    }
    if (opts.arch === "arm64") {
      const arms = list as Arm64Vcpu[];
      for (const v of arms) v.setPeers(arms);
    }
    return new Machine(opts.arch, memory, layout, list, { arch: opts.arch, module, memory: wasmMemory, slot, maxPhysAddrBits: maxPhys });
  }

  /** Number of vCPUs. */
  get vcpuCount(): number {
    this.memory.lifetime.check();
    return this.vcpuList.length;
  }

  /** vCPU `i`, driven by its own wasm instance on this thread. */
  vcpu(i = 0): V {
    this.memory.lifetime.check();
    const n = this.vcpuList.length;
    if (typeof i !== "number") throw new TypeError(`vmmu: index must be a vCPU index 0..${n - 1}, got ${show(i)}`);
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new RangeError(`vmmu: no vCPU ${i}: index must be 0..${n - 1} (machine has ${n})`);
    return this.vcpuList[i]!;
  }
}

// `using m = await createMachine(…)` (explicit resource management) disposes
// the machine at the end of the scope, where the engine defines Symbol.dispose.
const disposeSymbol = (Symbol as { dispose?: symbol }).dispose;
if (disposeSymbol !== undefined) {
  Object.defineProperty(Machine.prototype, disposeSymbol, {
    value(this: Machine) { this.dispose(); }, writable: true, configurable: true,
  });
}

/**
 * Creates a machine. Guest RAM starts zeroed; vCPUs start with translation
 * off (x86: CR0.PG = 0; arm64: SCTLR_EL1.M = 0, HCR_EL2.VM = 0).
 * Throws a TypeError (wrong type) or RangeError (out of range) naming the
 * option on bad input.
 */
export function createMachine(opts: X86MachineOptions): Promise<Machine<X86Vcpu>>;
export function createMachine(opts: Arm64MachineOptions): Promise<Machine<Arm64Vcpu>>;
export function createMachine(opts: MachineOptions): Promise<Machine>;
export function createMachine(opts: MachineOptions): Promise<Machine> {
  return Machine.create(opts);
}

/**
 * Attaches to vCPU `index` of a machine from another thread (worker_threads
 * or a Web Worker), with a fresh wasm instance over the same shared memory.
 * The vCPU must not be driven by another instance at the same time.
 */
export async function attachVcpu(handle: MachineHandle & { arch: "x86_64" }, index: number): Promise<X86Vcpu>;
export async function attachVcpu(handle: MachineHandle & { arch: "arm64" }, index: number): Promise<Arm64Vcpu>;
export async function attachVcpu(handle: MachineHandle, index: number): Promise<Vcpu>;
export async function attachVcpu(handle: MachineHandle, index: number): Promise<Vcpu> {
  const h = optionsObject(handle, "handle");
  if (!(h.module instanceof WebAssembly.Module) || !(h.memory instanceof WebAssembly.Memory)) {
    throw new TypeError(`vmmu: handle must be a Machine's handle (module, memory, slot, …), got ${show(handle)}`);
  }
  enumArg(h.arch, "handle.arch", ["x86_64", "arm64"] as const);
  const core = await instantiateCore(handle.module, handle.memory);
  const L = core.layout;
  const n = new DataView(handle.memory.buffer).getUint32(L.MACHINE_BASE + L.M_NVCPUS, true);
  intArg(index, "index", 0, n - 1);
  const memory = new GuestMemory(handle.memory, core.exports, core.layout, handle.slot);
  if (handle.arch === "arm64") return new Arm64Vcpu(index, core, memory, Math.min(handle.maxPhysAddrBits, 48), false);
  return new X86Vcpu(index, core, memory, handle.maxPhysAddrBits, false);
}

/** An option's value, or `dflt` when it is omitted (undefined; null is a value, and a wrong one). */
function orDefault<T>(v: T | undefined, dflt: T): T {
  return v === undefined ? dflt : v;
}

function toBig(v: number | bigint, name: string): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v !== "number") throw new TypeError(`vmmu: ${name} must be a number or bigint, got ${show(v)}`);
  if (!Number.isSafeInteger(v)) throw new RangeError(`vmmu: ${name} must be an integer, got ${show(v)}`);
  return BigInt(v);
}

function initError(L: Layout, rc: number): string {
  switch (rc) {
    case L.INIT_EVCPUS: return "vCPU count";
    case L.INIT_ETLB: return "TLB size";
    case L.INIT_ESLOT: return "memslot size or alignment";
    case L.INIT_ENOMEM: return "does not fit in the 4 GiB wasm memory";
    default: return `code ${rc}`;
  }
}
