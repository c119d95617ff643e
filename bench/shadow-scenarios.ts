// The shadow-MMU benchmark fixtures (src/kvm/; KVM arch/x86/kvm/mmu/mmu.c): small shadow-paging guests whose page tables are real SDM
// encodings built with X86PageTableBuilder, warmed until the measured
// operation is in its steady state.
//
//   hit   one vCPU, 2048 user pages (A and D set) in one 4096-aligned 8 MiB
//         range: after two warm-up passes every shadow SPTE exists and every
//         page holds its own slot of the 4096-entry hardware TLB, so
//         accessMany over the address list is all TLB hits and no exits.
//   cr3   one vCPU, CR4.PCIDE = 1, two guest address spaces (PCID 1 and 2)
//         whose roots are both shadowed and in the root cache (when the
//         policy has one): the measured operation is MOV CR3 between them.

import { createShadowVm, type ShadowVm } from "../src/kvm/shadow-vm.js";
import type { ShadowVcpu } from "../src/kvm/shadow-vcpu.js";
import { X86PageTableBuilder, LONG_MODE, CR4, CR3_NOFLUSH } from "../src/index.js";
import { Prng } from "./common.js";

const RAM = 64 << 20;
const POOL = 8 << 20;
const LEAF = { user: true, write: true, accessed: true, dirty: true } as const;

/** Addresses per accessMany call in the hit fixture (the batch area's capacity). */
export const HIT_N = 16384;
export const HIT_PAGES = 2048;

export interface HitGuest {
  vm: ShadowVm;
  vcpu: ShadowVcpu;
  /** HIT_N addresses (random page, random offset) and access kinds (0 read, 1 write, 2 fetch). */
  va: BigUint64Array;
  kinds: Uint8Array;
}

/** Guest access counters the hit fixture checks: exits (all reasons) and hardware TLB hits. */
export function exitsOf(v: ShadowVcpu): number {
  return Object.values(v.exits).reduce((s, n) => s + n, 0);
}

/** The TLB-hit guest under `policy`, warmed: one more accessMany over `va` is HIT_N hardware TLB hits and no exit. */
export async function hitGuest(policy: string, seed = 1): Promise<HitGuest> {
  const vm = await createShadowVm({ vcpus: 1, memoryBytes: RAM, policy, poolBytes: POOL });
  const b = new X86PageTableBuilder(vm.machine.memory, { tableBase: 0x10_0000n, tableLimit: 0x100_0000n });
  const vbase = 0x4000_0000n;
  for (let i = 0; i < HIT_PAGES; i++) b.map(vbase + BigInt(i) * 4096n, 0x100_0000n + BigInt((i * 7) % 8192) * 4096n, "4K", LEAF);
  const vcpu = vm.vcpus[0]!;
  vcpu.start({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE, cr3: b.root | 1n });
  const rng = new Prng(seed);
  const va = new BigUint64Array(HIT_N);
  const kinds = new Uint8Array(HIT_N);
  for (let i = 0; i < HIT_N; i++) {
    va[i] = vbase + BigInt(rng.int(HIT_PAGES)) * 4096n + BigInt(rng.int(4096));
    kinds[i] = rng.int(3);
  }
  for (let pass = 0; pass < 2; pass++) {
    const r = vcpu.accessMany(va, kinds, HIT_N, true);
    if (r.exception) throw new Error(`bench: hit guest (${policy}) raised a guest exception during warm-up`);
  }
  const exits0 = exitsOf(vcpu), hits0 = vcpu.hw.tlbStats().hits;
  vcpu.accessMany(va, kinds, HIT_N, true);
  const exits = exitsOf(vcpu) - exits0, hits = vcpu.hw.tlbStats().hits - hits0;
  if (exits !== 0 || hits !== HIT_N) throw new Error(`bench: hit guest (${policy}) not warm: ${exits} exits, ${hits} hits of ${HIT_N}`);
  return { vm, vcpu, va, kinds };
}

export interface Cr3Guest {
  vm: ShadowVm;
  vcpu: ShadowVcpu;
  /** Guest CR3 values of the two address spaces: root | PCID (1 and 2), without NOFLUSH. */
  a: bigint;
  b: bigint;
}

/**
 * The CR3 guest under `policy`: two address spaces, each with 64 user pages
 * touched (so each root has a populated shadow tree), left running on `a`
 * after a few switches in both directions, with and without NOFLUSH.
 */
export async function cr3Guest(policy: string): Promise<Cr3Guest> {
  const vm = await createShadowVm({ vcpus: 1, memoryBytes: RAM, policy, poolBytes: POOL });
  const mem = vm.machine.memory;
  const ba = new X86PageTableBuilder(mem, { tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
  const bb = new X86PageTableBuilder(mem, { tableBase: 0x40_0000n, tableLimit: 0x80_0000n });
  const pages = 64;
  const va = new BigUint64Array(pages), kinds = new Uint8Array(pages);
  for (let i = 0; i < pages; i++) {
    va[i] = 0x40_0000n + BigInt(i) * 4096n;
    kinds[i] = i % 3;
    ba.map(va[i]!, 0x100_0000n + BigInt(i) * 4096n, "4K", LEAF);
    bb.map(va[i]!, 0x200_0000n + BigInt(i) * 4096n, "4K", LEAF);
  }
  for (const t of [ba, bb]) t.map(0xffff_8880_0000_0000n, 0n, "1G", { write: true, nx: true, accessed: true, dirty: true });
  const vcpu = vm.vcpus[0]!;
  const a = ba.root | 1n, b = bb.root | 2n;
  vcpu.start({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PCIDE, cr3: a });
  const touch = () => {
    const r = vcpu.accessMany(va, kinds, pages, true);
    if (r.exception) throw new Error(`bench: cr3 guest (${policy}) raised a guest exception during warm-up`);
  };
  touch();
  for (const cr3 of [b, a, b | CR3_NOFLUSH, a | CR3_NOFLUSH, b, a | CR3_NOFLUSH]) {
    if (vcpu.writeCr3(cr3)) throw new Error(`bench: cr3 guest (${policy}): MOV CR3 ${cr3.toString(16)} raised #GP`);
    touch();
  }
  return { vm, vcpu, a, b };
}
