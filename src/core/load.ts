// Compiles the embedded wasm core once and instantiates it per vCPU over a
// shared WebAssembly.Memory (style.md §2.5). Works under Node and browsers;
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
  tlbAttach(base: number, tlb: number, entries: number): void;
  tlbFlushCtx(slot: number): void;
  tlbFlushNonGlobal(): void;
  tlbFlushAll(): void;
  tlbInvalidatePage(slot: number, vpn: bigint): void;
  ctxLiveTag(slot: number): number;
  selectCtx(slot: number): void;
  x86LoadControl(): number;
  x86LoadCr3(): void;
  x86Translate(va: bigint, access: number, user: number): number;
  x86TranslateFast(vaLo: number, vaHi: number, access: number, user: number): number;
  armTranslateFast(vaLo: number, vaHi: number, access: number, el0: number): number;
  x86TranslateBatch(count: number, user: number): number;
  x86TranslateUntilFault(start: number, count: number, user: number): number;
  x86Walk(va: bigint, access: number, user: number, flags: number): number;
  x86Invlpg(va: bigint): void;
  x86InvalidatePcidAddr(pcid: number, va: bigint): void;
  tlbInvalidateRange(slot: number, vpn: bigint, pages: bigint, level: number): void;
  tlbInvalidateRangeF(slot: number, vpn: number, pages: number, level: number): void;
  selectGlobal(slot: number): void;
  armLoadRegs(): number;
  armSelectContexts(cur: number, glob: number, s2: number): void;
  armTranslate(va: bigint, access: number, el0: number): number;
  armTranslateBatch(count: number, el0: number): number;
  armWalk(va: bigint, access: number, el0: number, flags: number): number;
  armWalkStage2(ipa: bigint, access: number, el0: number): number;
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
