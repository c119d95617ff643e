// The EPT workload of bench/x86-ept.bench.ts: an x86-64 guest (4- or 5-level
// paging) under EPT of the same depth, all tables real SDM encodings in one
// machine's memory (host-physical memory under EPT), and the input the native
// C build (bench/native/x86-ept.c) takes for the very same bytes. Intel SDM
// Vol.3A §4.5 (guest paging), Vol.3C §29.3 (EPT).
//
// Host-physical layout (RAM 128 MiB):
//   [1 MiB, 16 MiB)   guest page tables, at gpa = hpa (EPT maps the range 1:1, 4 KiB pages)
//   [16 MiB, 24 MiB)  EPT tables (X86EptBuilder: leaves R/W/X, WB; EPTP WB with bit 6,
//                     EPT A/D on, as KVM runs it when supported)
//   [32 MiB, 96 MiB)  the guest's 16384 data pages, hpa in list order
// Guest: 16384 distinct 4 KiB pages spread over 2 PML4 × 4 PDPT × 32 PD × 64
// PT entries (256 page tables; 5-level: under PML5 entry 1), as the 1D walk
// benchmark (x86-scenarios.ts walkScenario), visited in shuffled order, one
// random offset and access kind (read / write / fetch, CPL 3) each. Each data
// page's gpa is a random 64 KiB-aligned slot in [1 GiB, 2 GiB), so the final
// EPT walks spread over 512 EPT page tables, as a guest's scattered page
// cache does; every EPT leaf is a 4 KiB page. A cold 2D walk then loads
// n + (n+1)·m entries: 24 for 4×4, 35 for 5×5.
//
// Guest leaves are user, writable, executable, with A and D set; a warm-up
// pass sets A in every guest non-leaf entry and A/D in every EPT entry used,
// so measured passes are the steady state: no A/D writes, guest or EPT.

import * as vmmu from "../src/index.js";
import type { Machine, X86Vcpu } from "../src/index.js";
import { Prng } from "./common.js";
import { u32s, u64s, bytesOf } from "./native.js";

/** The part of the public API the scenario is built with. */
export type X86EptLib = Pick<typeof vmmu, "createMachine" | "X86PageTableBuilder" | "X86EptBuilder" | "LONG_MODE" | "CR4">;

export const BATCH = 16384;
/** Translations per measured batch call (a slice of the address list, the next one each call). */
export const CHUNK = 2048;
const RAM = 128n << 20n;
export const GUEST_TABLES = 0x10_0000n;
const GUEST_TABLES_LIMIT = 0x100_0000n;
export const EPT_TABLES = 0x100_0000n;
const EPT_TABLES_LIMIT = 0x180_0000n;
const HOST_DATA = 0x200_0000n;
const GUEST_DATA = 0x4000_0000n;
const DATA_SLOTS = 16384;
const DATA_STRIDE = 0x1_0000n;

/** The EPT API of the contract (X86Vcpu.setVmcs), present once the EPT core has landed. */
export interface EptVcpu {
  setVmcs(v: { eptp?: bigint | null; vpid?: number; mbec?: boolean }): void;
}

export interface EptScenario {
  name: "ept44" | "ept55";
  label: string;
  levels: 4 | 5;
  machine: Machine<X86Vcpu>;
  vcpu: X86Vcpu;
  eptp: bigint;
  /** The address list: BATCH addresses and their access kinds (0 read, 1 write, 2 fetch), all at CPL 3. */
  va: BigUint64Array;
  access: Uint8Array;
  user: boolean;
  /** Entry loads of one cold 2D walk: levels + (levels + 1) · levels. */
  expectedPtRefs: number;
  /** Host-physical range holding every table, guest and EPT: what the native build gets a copy of. */
  imageBase: bigint;
  imageLimit: bigint;
}

/** The 2D-walk workload with `levels`-level guest paging under `levels`-level EPT. */
export async function eptWalkScenario(levels: 4 | 5, seed = 3, lib: X86EptLib = vmmu): Promise<EptScenario> {
  const machine = await lib.createMachine({ arch: "x86_64", memoryBytes: RAM });
  const mem = machine.memory;
  const guest = new lib.X86PageTableBuilder(mem, { levels, tableBase: GUEST_TABLES, tableLimit: GUEST_TABLES_LIMIT });
  const ept = new lib.X86EptBuilder(mem, { levels, tableBase: EPT_TABLES, tableLimit: EPT_TABLES_LIMIT, accessedDirty: true });
  const rng = new Prng(seed);
  const slots = rng.shuffle(Array.from({ length: DATA_SLOTS }, (_, i) => i));
  const pages: bigint[] = [];
  for (let i = 0; i < BATCH; i++) {
    const l4 = 1 + (i & 1), l3 = (i >> 1) & 3, l2 = (i >> 3) & 31, l1 = (i >> 8) & 63;
    const l5 = levels === 5 ? 1n << 48n : 0n;
    const v = l5 | (BigInt(l4) << 39n) | (BigInt(l3) << 30n) | (BigInt(l2) << 21n) | (BigInt(l1) << 12n);
    const gpa = GUEST_DATA + BigInt(slots[i]!) * DATA_STRIDE;
    guest.map(v, gpa, "4K", { user: true, write: true, accessed: true, dirty: true });
    ept.map(gpa, HOST_DATA + BigInt(i) * 4096n, "4K");
    pages.push(v);
  }
  ept.mapRange(GUEST_TABLES, GUEST_TABLES, Number((GUEST_TABLES_LIMIT - GUEST_TABLES) >> 12n), "4K");
  rng.shuffle(pages);
  const va = new BigUint64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    va[i] = pages[i]! + BigInt(rng.int(4096));
    access[i] = rng.int(3);
  }
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...lib.LONG_MODE, cr4: lib.LONG_MODE.cr4 | (levels === 5 ? lib.CR4.LA57 : 0n), cr3: guest.root });
  return {
    name: levels === 5 ? "ept55" : "ept44", label: `2D walk, ${levels}-level guest × ${levels}-level EPT`, levels, machine, vcpu, eptp: ept.eptp,
    va, access, user: true, expectedPtRefs: levels + (levels + 1) * levels, imageBase: GUEST_TABLES, imageLimit: EPT_TABLES_LIMIT,
  };
}

/** True if the core has the EPT API (X86Vcpu.setVmcs). */
export function hasEptCore(vcpu: X86Vcpu): boolean {
  return typeof (vcpu as unknown as Partial<EptVcpu>).setVmcs === "function";
}

/** Enables EPT on the scenario's vCPU and turns its TLB off: every translation is a cold 2D walk. */
export function enterEpt(s: EptScenario): void {
  (s.vcpu as unknown as EptVcpu).setVmcs({ eptp: s.eptp });
  s.vcpu.setTlbEnabled(false);
}

/** Parameters of the native input besides the bytes: register values and flags. */
export interface NativeEptState {
  cr0: bigint; cr3: bigint; cr4: bigint; efer: bigint; pkru: bigint; rflags: bigint; eptp: bigint;
  maxPhysAddrBits: number; mbec: boolean; user: boolean;
}

/** The scenario's state as the native build takes it. */
export function nativeState(s: EptScenario): NativeEptState {
  const c = s.vcpu.control();
  return { ...c, eptp: s.eptp, maxPhysAddrBits: s.vcpu.maxPhysAddrBits, mbec: false, user: s.user };
}

/** The input file of bench/native/x86-ept.c (its format is documented there). */
export function nativeInput(st: NativeEptState, imageBase: bigint, image: Uint8Array, va: BigUint64Array, access: Uint8Array): Buffer[] {
  if (va.length !== access.length) throw new RangeError("bench: va and access lists differ in length");
  return [
    u32s(0x31454d56, 1),
    u64s(st.cr0, st.cr3, st.cr4, st.efer, st.pkru, st.rflags, st.eptp),
    u32s(st.maxPhysAddrBits, st.mbec ? 1 : 0, st.user ? 1 : 0, va.length),
    u64s(imageBase, BigInt(image.length)),
    bytesOf(image),
    bytesOf(va),
    bytesOf(access),
  ];
}

/** A copy of the host-physical range holding every table of the scenario. */
export function imageOf(s: EptScenario): Uint8Array {
  return s.machine.memory.read(s.imageBase, Number(s.imageLimit - s.imageBase));
}
