// Compiles the embedded wasm core once and instantiates it per vCPU over a
// shared WebAssembly.Memory. Works under Node and browsers;
// in a browser the page must be cross-origin isolated for SharedArrayBuffer.

import { WASM_BASE64, WASM_HASH, RIGHTS_BITS } from "./wasm-bytes.generated.js";
import { readLayout, type Layout } from "./layout.js";

/** The functions the wasm core exports (assembly/index.ts). i64 crosses as bigint. */
export interface CoreExports {
  machineInit(nVcpus: number, tlbEntries: number, poolBytes: number, slotBase: bigint, slotSize: bigint,
    eagerBytes: bigint, populate: number, maxPages: number): number;
  physAttach(): void;
  hostForStore(gpa: bigint): number;
  hostForRead(gpa: bigint): number;
  // TLB (vb = vCPU block base)
  tlbInit(vb: number): void;
  tlbFlushSlot(vb: number, slot: number): void;
  tlbFlushKey(vb: number, key: bigint): void;
  tlbFlushMatch(vb: number, mask: bigint, value: bigint): void;
  tlbFlushNonGlobal(vb: number): void;
  tlbFlushAll(vb: number): void;
  tlbInvalidateRange(vb: number, slot: number, vpn: bigint, pages: bigint, level: number): void;
  tlbInvalidateRangeMatch(vb: number, mask: bigint, value: bigint, vpn: bigint, pages: bigint, level: number): void;
  ctxLiveTag(vb: number, slot: number): number;
  slotFind(vb: number, key: bigint): number;
  slotAcquire(vb: number, key: bigint): number;
  // x86 (c = MMU context record address)
  x86DecodeContext(c: number, vb: number, regs: number, ptw: number): number;
  x86ReloadCr3(c: number, vb: number, regs: number): void;
  x86Translate(c: number, va: bigint, access: number, user: number): number;
  x86TranslateFast(c: number, vaLo: number, vaHi: number, access: number, user: number): number;
  x86TranslateBatch(c: number, count: number, user: number): number;
  x86TranslateUntilFault(c: number, start: number, count: number, user: number): number;
  x86Walk(c: number, va: bigint, access: number, user: number, flags: number): number;
  x86Invlpg(c: number, va: bigint): void;
  x86InvalidatePcidAddr(c: number, pcid: number, va: bigint): void;
  x86FlushPcid(c: number, pcid: number): void;
  x86FlushVpid(c: number, globals: number): void;
  mmuOwnCounters(c: number): number;
  // EPT
  eptDecodeContext(c: number, vb: number, regs: number): number;
  eptpCheck(eptp: bigint, maxPhy: number): number;
  vmxInvept(vb: number, type: number, root: bigint): void;
  vmxInvvpid(vb: number, type: number, vpid: number, va: bigint): void;
  // arm64
  armDecodeS1(c: number, vb: number, regs: number, ptw: number): number;
  armDecodeS2(c: number, vb: number, regs: number): number;
  armTranslate(c: number, va: bigint, access: number, el0: number): number;
  armTranslateFast(c: number, vaLo: number, vaHi: number, access: number, el0: number): number;
  armTranslateBatch(c: number, count: number, el0: number): number;
  armWalk(c: number, va: bigint, access: number, el0: number, flags: number): number;
  armWalkStage2(c: number, ipa: bigint, access: number, el0: number): number;
  armFlushVmid(vb: number, vmid: number, s2: number): void;
  armFlushAsid(vb: number, vmid: number, asid: number): void;
  armInvalidateVa(vb: number, vmid: number, asid: number, vpn: number, pages: number, level: number): void;
  armInvalidateIpa(vb: number, vmid: number, vpn: number, pages: number, level: number): void;
}

/** Called by the core the first time a populate-enabled memslot reads an unbacked frame. */
export type PopulateHook = (slotOffset: bigint) => void;

export interface Core {
  readonly exports: CoreExports;
  readonly layout: Layout;
}

let modulePromise: Promise<WebAssembly.Module> | undefined;

function decodeBase64(b64: string): Uint8Array {
  const B = (globalThis as { Buffer?: { from(s: string, e: string): Uint8Array } }).Buffer;
  if (B) return new Uint8Array(B.from(b64, "base64"));
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The compiled core module (compiled once per realm). */
export function coreModule(): Promise<WebAssembly.Module> {
  modulePromise ??= WebAssembly.compile(decodeBase64(WASM_BASE64) as BufferSource);
  return modulePromise;
}

/** Content hash of the embedded release wasm (for benchmark records). */
export const coreHash = WASM_HASH;

/**
 * Bits of the effective rights word a fast translation reports (lastRights()),
 * from assembly/layout.ts RIGHTS_*: RS/WS/XS and RU/WU/XU — a read / write /
 * fetch at supervisor (x86 CPL 0–2, arm64 EL1) / user (CPL 3, EL0) privilege
 * would be granted; GLOBAL; DIRTY — a granted write needs no A/D update;
 * CACHED — the translation is in the vCPU's TLB, so it may be cached until
 * invalidationEpoch() changes; the leaf level at LEVEL_SHIFT (3 bits) and the
 * page shift at PSHIFT_SHIFT (5 bits).
 */
export const RIGHTS = RIGHTS_BITS;

/**
 * Instantiates the core over `memory`. `populate`, when given, backs unbacked
 * frames on first read (the CLI uses it to page a memory image in lazily).
 */
export async function instantiateCore(module: WebAssembly.Module, memory: WebAssembly.Memory, populate?: PopulateHook): Promise<Core> {
  const instance = await WebAssembly.instantiate(module, {
    env: {
      memory,
      populate: (off: bigint) => { populate?.(off); },
      abort: (_msg: number, _file: number, line: number, col: number) => {
        throw new Error(`vmmu: wasm core aborted at ${line}:${col}`);
      },
    },
  });
  const exports = instance.exports as unknown as CoreExports & WebAssembly.Exports;
  return { exports, layout: readLayout(instance.exports) };
}
