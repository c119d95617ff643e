// The conformance-suite line format, schema "vmmu-conformance/1": one JSON
// object per line, self-contained, so another emulator can replay a case with
// no vmmu code — load the table bytes into zeroed RAM, set the registers,
// perform the access, compare the outcome and the table words afterwards.
// Expected outcomes come from the reference walkers (src/ref/x86-walk.ts,
// Intel SDM Vol.3A §4.5–4.8; src/ref/arm64-walk.ts, Arm ARM DDI 0487 D8.2–D8.4
// as distilled in docs/arm64-walk-contract.md).
//
// Every 64-bit quantity is a string "0x…" (lower-case hex, no leading zeros);
// `bytes` is the memory image of a table entry, little-endian, two hex digits
// per byte. A line (x86_64; arm64 differs in registers, access and fault):
//
//   { "schema": "vmmu-conformance/1", "arch": "x86_64",
//     "id": "x86/rights/4l-4K/L2=---/L1=---/wp0-smep0-smap0-ac0-nxe0/ad-none/cpl0-read", "group": "rights",
//     "ram": { "base": "0x0", "size": "0x1000000" },
//     "tables": [ { "gpa": "0x100518", "bytes": "0710100000000000" }, …,
//                 { "gpa": "0x103e90", "bytes": "01e0cdab09000000" } ],
//     "registers": { "cr0": "0x80000001", "cr3": "0x100000", "cr4": "0x20", "efer": "0x500",
//                    "pkru": "0x0", "rflags": "0x2", "maxphyaddr": 46 },
//     "access": { "va": "0x51d71cfd25e8", "type": "read", "cpl": 0 },
//     "expect": { "pa": "0x9abcde5e8", "pageSize": 4096, "level": 1,
//                 "writes": [ { "gpa": "0x100518", "before": "0x101007", "after": "0x101027" }, … ] } }
//
// `expect` holds either pa/pageSize/level or `fault`; `writes` lists every
// table entry the access changes (A/D, AF, DBM), with its value before and
// after; every other entry of `tables` must be left as it was.

import { hex } from "../addr.js";
import type { RefMemory } from "../ref/x86-walk.js";

/** Schema tag of every line; bumped when a field changes meaning. */
export const CONFORMANCE_SCHEMA = "vmmu-conformance/1";

/** One table entry: its guest-physical address and its bytes in memory order (little-endian hex). */
export interface ConformanceTableEntry { gpa: string; bytes: string }

/** A table entry the access rewrites: 64-bit values before and after. */
export interface ConformanceWrite { gpa: string; before: string; after: string }

/** Guest RAM of the case: `size` bytes at `base`, zero except for `tables`. */
export interface ConformanceRam { base: string; size: string }

export interface X86ConformanceRegisters {
  cr0: string; cr3: string; cr4: string; efer: string; pkru: string; rflags: string;
  /** MAXPHYADDR; only cases of group "reserved" set a bit in 51:36 of any entry. */
  maxphyaddr: number;
}

export interface X86ConformanceFault {
  /** 14 #PF, 13 #GP (non-canonical address). */
  vector: number;
  /** #PF error code (SDM §4.7): P, W/R, U/S, RSVD, I/D, PK; 0 for #GP. */
  errorCode: number;
  /** Level of the entry that faulted (1 = PTE … 5 = PML5E); 0 for #GP. */
  level: number;
  kind: "page-fault" | "general-protection";
}

export type X86ConformanceExpect =
  | { pa: string; pageSize: number; level: number; writes: ConformanceWrite[] }
  | { fault: X86ConformanceFault; writes: ConformanceWrite[] };

export interface X86ConformanceCase {
  schema: typeof CONFORMANCE_SCHEMA;
  arch: "x86_64";
  id: string;
  group: string;
  ram: ConformanceRam;
  tables: ConformanceTableEntry[];
  registers: X86ConformanceRegisters;
  access: { va: string; type: "read" | "write" | "fetch"; cpl: 0 | 3 };
  expect: X86ConformanceExpect;
}

export interface Arm64ConformanceRegisters {
  ttbr0: string; ttbr1: string; tcr: string; sctlr: string;
  /** HCR_EL2; always 0 (stage 2 off): the cases are stage 1 of the EL1&0 regime. */
  hcr: string;
  /** PSTATE.PAN. */
  pan: 0 | 1;
}

export interface Arm64ConformanceFault {
  stage: 1;
  /** ESR_ELx DFSC/IFSC: 0x00 address size, 0x04 translation, 0x08 access flag, 0x0c permission, + level. */
  fsc: number;
  level: number;
  kind: "translation" | "address-size" | "access-flag" | "permission";
  /** ESR.S1PTW; always false with stage 2 off. */
  s1ptw: boolean;
  /** ESR.WnR. */
  write: boolean;
}

export type Arm64ConformanceExpect =
  | { pa: string; pageSize: number; level: number; writes: ConformanceWrite[] }
  | { fault: Arm64ConformanceFault; writes: ConformanceWrite[] };

export interface Arm64ConformanceCase {
  schema: typeof CONFORMANCE_SCHEMA;
  arch: "arm64";
  id: string;
  group: string;
  ram: ConformanceRam;
  tables: ConformanceTableEntry[];
  registers: Arm64ConformanceRegisters;
  access: { va: string; type: "read" | "write" | "fetch"; el: 0 | 1 };
  expect: Arm64ConformanceExpect;
}

export type ConformanceCase = X86ConformanceCase | Arm64ConformanceCase;

/** Little-endian hex of the 8 bytes of `value`. */
export function entryBytes(value: bigint): string {
  let s = "";
  for (let i = 0n; i < 64n; i += 8n) s += ((value >> i) & 0xffn).toString(16).padStart(2, "0");
  return s;
}

/** The 64-bit value of 8 little-endian bytes in hex (inverse of entryBytes). */
export function entryValue(bytes: string): bigint {
  if (!/^[0-9a-f]{16}$/.test(bytes)) throw new Error(`vmmu: bytes must be 16 hex digits, got '${bytes}'`);
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(parseInt(bytes.slice(2 * i, 2 * i + 2), 16));
  return v;
}

/**
 * The table words of one case as the reference walker sees them: RAM of
 * `size` bytes at `base`, zero except for the words given; reads outside RAM
 * return undefined (the walkers report an abort, which no case produces).
 */
export class CaseMemory implements RefMemory {
  readonly words: Map<bigint, bigint>;

  constructor(readonly base: bigint, readonly size: bigint, words: Map<bigint, bigint>) {
    this.words = new Map(words);
  }

  read64(gpa: bigint): bigint | undefined {
    if (gpa < this.base || gpa + 8n > this.base + this.size) return undefined;
    return this.words.get(gpa) ?? 0n;
  }

  cmpxchg64(gpa: bigint, expected: bigint, desired: bigint): boolean {
    if (this.read64(gpa) !== expected) return false;
    this.words.set(gpa, desired);
    return true;
  }
}

/** The `tables` field for a set of words (address order). */
export function tablesOf(words: Map<bigint, bigint>): ConformanceTableEntry[] {
  return [...words].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([gpa, v]) => ({ gpa: hex(gpa), bytes: entryBytes(v) }));
}

/** The `writes` field: every word of `before` whose value differs in `after` (address order). */
export function writesOf(before: Map<bigint, bigint>, after: Map<bigint, bigint>): ConformanceWrite[] {
  const out: ConformanceWrite[] = [];
  for (const [gpa, v] of [...before].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const w = after.get(gpa) ?? 0n;
    if (w !== v) out.push({ gpa: hex(gpa), before: hex(v), after: hex(w) });
  }
  for (const gpa of after.keys()) {
    if (!before.has(gpa)) throw new Error(`vmmu: reference wrote ${hex(gpa)}, outside the case's tables`);
  }
  return out;
}
