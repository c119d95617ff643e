// The arm64 half of `vmmu demo`: a KVM-style guest (stage 2 with a 40-bit
// IPA space over two concatenated start tables), a Linux-style stage 1, the
// combined walk, stage-2 faults during the stage-1 walk, range TLB
// maintenance as Linux and KVM issue it, and throughput.

import {
  createMachine, Arm64Stage1Builder, Arm64Stage2Builder, kvmVtcr, LINUX_TCR, SCTLR, HCR, hex,
  linuxFlushTlbRange, kvmTlbFlushVmidRange,
} from "../index.js";
import type { Arm64TranslateResult, Arm64Vcpu } from "../index.js";

const out = (s = "") => process.stdout.write(s + "\n");

function show(r: Arm64TranslateResult): string {
  if ("fault" in r) {
    const f = r.fault;
    return `stage-${f.stage} ${f.kind} fault, FSC ${hex(f.fsc)}, level ${f.level}${f.s1ptw ? ", S1PTW" : ""}${f.ipa !== undefined ? `, IPA ${hex(f.ipa)}` : ""}`;
  }
  const size = r.pageSize >= 1 << 30 ? "1G" : r.pageSize >= 1 << 21 ? "2M" : "4K";
  return `pa ${hex(r.pa)} (${size}, stage-1 level ${r.level})`;
}

function line(v: Arm64Vcpu, label: string, va: bigint, access: "read" | "write" | "fetch", el0: boolean): void {
  out(`  ${label.padEnd(40)} ${hex(va).padStart(20)} ${access.padEnd(5)} EL${el0 ? 0 : 1} → ${show(v.translate(va, access, el0))}`);
}

export async function runArm64Demo(): Promise<void> {
  const RAM = 0x4000_0000n;
  const m = await createMachine({ arch: "arm64", memoryBytes: 256 << 20, ramBase: RAM, vcpus: 2 });
  // Stage 2: IPA → PA RAM + IPA: the stage-1 table area in 4 KiB pages, [4 MiB, 204 MiB) in 2 MiB blocks.
  const { vtcr, startLevel } = kvmVtcr(40);
  const s2 = new Arm64Stage2Builder(m.memory, { ipaBits: 40, startLevel, tableBase: RAM + 0x0010_0000n, tableLimit: RAM + 0x0020_0000n });
  s2.mapRange(0x0020_0000n, RAM + 0x0020_0000n, 16, "4K");
  s2.mapRange(0x0040_0000n, RAM + 0x0040_0000n, 100, "2M");
  // Stage-1 tables live at IPA 0x200000..0x210000 (PA RAM + IPA), mapped by 4 KiB stage-2 pages.
  const s1user = new Arm64Stage1Builder(m.memory, { tableBase: RAM + 0x0020_0000n, tableLimit: RAM + 0x0020_8000n, tableOffset: RAM });
  const s1kern = new Arm64Stage1Builder(m.memory, { tableBase: RAM + 0x0020_8000n, tableLimit: RAM + 0x0021_0000n, tableOffset: RAM });
  out(`\narm64: guest with stage 2 (40-bit IPA, start level ${startLevel}, ${s2.tablesAllocated} stage-2 table pages), VMID 1, ASID 7`);
  const v = m.vcpu(0);
  v.setSystemRegisters({ hcr: HCR.VM, vtcr, vttbr: s2.vttbr(1), tcr: LINUX_TCR, sctlr: SCTLR.M, ttbr0: s1user.ttbr(7), ttbr1: s1kern.ttbr(0) });
  out("  (stage-1 table descriptors hold IPAs; the walker translates every table access through stage 2)");
  // Map with IPAs as output addresses.
  s1user.map(0x40_0000n, 0x0060_0000n, "4K", { el0: true, nG: true });
  s1user.map(0x40_1000n, 0x0060_1000n, "4K", { el0: true, nG: true, dbm: true, readOnly: true, uxn: true });
  s1kern.map(0xffff_8000_0800_0000n, 0x0080_0000n, "2M", {});
  s1kern.map(0xffff_8000_1000_0000n, 0x4000_0000n, "2M", {});
  line(v, "user text (EL0 fetch)", 0x40_0000n, "fetch", true);
  line(v, "user data, DBM clean → write sets dirty", 0x40_1008n, "write", true);
  line(v, "kernel 2 MiB block", 0xffff_8000_0812_3456n, "read", false);
  line(v, "EL0 reads kernel (E0PD1)", 0xffff_8000_0812_3456n, "read", true);
  line(v, "IPA outside the stage-2 map", 0xffff_8000_1000_0000n, "read", false);
  line(v, "unmapped user VA", 0x50_0000n, "read", true);
  v.setSystemRegisters({ ttbr0: (7n << 48n) | 0x3f00_0000n });
  line(v, "TTBR0 at an IPA stage 2 lacks (S1PTW)", 0x41_0000n, "read", true);
  v.setSystemRegisters({ ttbr0: s1user.ttbr(7) });

  out("\nrange TLB maintenance (FEAT_TLBIRANGE), as Linux v6.6 and KVM v6.6 issue it:");
  const ops = linuxFlushTlbRange({ start: 0x40_0000n, pages: 515n, asid: 7, tlbRange: true });
  out(`  flush_tlb_range(0x400000, 515 pages, ASID 7): ${ops.map((o) => `${o.op} ${hex(o.operand)}`).join("; ")}`);
  for (const o of ops) v.tlbi(o.op, o.operand);
  const kvm = kvmTlbFlushVmidRange({ start: 0n, size: 1n << 30n, tlbRange: true });
  out(`  kvm_tlb_flush_vmid_range(IPA 0, 1 GiB): ${kvm.map((o) => `${o.op} ${hex(o.operand)}`).join("; ")}`);
  for (const o of kvm) v.tlbi(o.op, o.operand);
  const ts = v.tlbiStats();
  out(`  executed ${Object.entries(ts.ops).map(([k, n]) => `${k}×${n}`).join(", ")}; context flushes ${ts.contextFlushes}, range flushes ${ts.rangeFlushes}; broadcast reached vCPU 1 too: ${JSON.stringify(m.vcpu(1).tlbiStats().ops)}`);

  out("\nthroughput (batch API):");
  const n = 2048;
  for (let i = 0n; i < BigInt(n); i++) s1user.map(0x1000_0000n + i * 4096n, 0x0400_0000n + i * 4096n, "4K", { el0: true, nG: true });
  v.tlbi("VMALLS12E1IS");
  const bt = v.batch();
  for (let i = 0; i < bt.capacity; i++) { bt.va[i] = 0x1000_0000n + BigInt((i * 7) % n) * 4096n + BigInt(i & 0xff8); bt.access[i] = 0; }
  bt.run(bt.capacity, true);
  v.resetStats();
  let cnt = 0;
  let t0 = performance.now();
  while (performance.now() - t0 < 400) { bt.run(bt.capacity, true); cnt += bt.capacity; }
  let dt = performance.now() - t0;
  out(`  TLB hits:          ${(cnt / dt / 1e3).toFixed(1)} M translations/s (${((dt * 1e6) / cnt).toFixed(2)} ns each)`);
  v.setTlbEnabled(false);
  v.resetStats();
  cnt = 0;
  t0 = performance.now();
  while (performance.now() - t0 < 400) { bt.run(bt.capacity, true); cnt += bt.capacity; }
  dt = performance.now() - t0;
  const s = v.tlbStats();
  out(`  combined walks:    ${(cnt / dt / 1e3).toFixed(1)} M/s (${((dt * 1e6) / cnt).toFixed(1)} ns each; ${(s.ptRefs / cnt).toFixed(1)} descriptor reads per translation: each stage-1 table access is itself a stage-2 walk)`);
  v.setTlbEnabled(true);
  m.dispose();
}
