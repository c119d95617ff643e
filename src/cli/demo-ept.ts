// The EPT part of `vmmu demo`: a guest in VMX non-root operation whose every
// paging-structure access and final access is translated through EPT (SDM
// Vol.3C §29.3), with an EPT violation and its exit qualification, the EPT
// A/D bits, and INVEPT on the combined and guest-physical mappings.

import { createMachine, X86PageTableBuilder, X86EptBuilder, LONG_MODE, hex } from "../index.js";
import type { X86TranslateResult, X86Vcpu } from "../index.js";

const out = (s = "") => process.stdout.write(s + "\n");

/** One translate() result on a line: gpa → hpa, or the fault with its EPT details. */
export function showEpt(r: X86TranslateResult): string {
  if (!("fault" in r)) return `gpa ${hex(r.gpa ?? 0n)} → hpa ${hex(r.pa)} (guest level ${r.level})`;
  const f = r.fault;
  if (f.kind === "ept-violation") return `EPT violation at gpa ${hex(f.gpa)}, EPT level ${f.level}, qualification ${hex(BigInt(f.qualification))}`;
  if (f.kind === "ept-misconfig") return `EPT misconfiguration at gpa ${hex(f.gpa)}, EPT level ${f.level}`;
  if (f.kind === "page-fault") return `#PF error=${hex(BigInt(f.errorCode))} level=${f.level}`;
  return f.kind;
}

function line(v: X86Vcpu, label: string, va: bigint, access: "read" | "write" | "fetch"): void {
  out(`  ${label.padEnd(44)} ${hex(va).padStart(12)} ${access.padEnd(5)} → ${showEpt(v.translate(va, access, false))}`);
}

/**
 * Runs the EPT part of the demo. Host memory is the machine's RAM; the
 * guest's tables and its page sit at guest-physical addresses EPT maps 16 MiB
 * higher, so every hpa differs from its gpa.
 */
export async function runEptDemo(): Promise<void> {
  out("\nx86 under EPT (VMX non-root, the two-dimensional walk of SDM Vol.3C §29.3):");
  const m = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20 });
  const v = m.vcpu(0);
  const SHIFT = 0x100_0000n;
  const ept = new X86EptBuilder(m.memory, { tableBase: 0x3f0_0000n, tableLimit: 0x400_0000n, accessedDirty: true });
  const guestPt = new X86PageTableBuilder(m.memory, { tableBase: SHIFT + 0x10_0000n, tableLimit: SHIFT + 0x20_0000n });
  const data = 0x40_0000n;
  guestPt.map(0x7000_0000n, data, "4K", { write: true });
  // The builder wrote host addresses; the guest sees its tables 16 MiB lower, so the pointers between them must be gpas.
  relocate(m.memory, guestPt, SHIFT);
  ept.mapRange(0x10_0000n, SHIFT + 0x10_0000n, 256, "4K");   // the guest's tables: gpa [1 MiB, 2 MiB) at host +16 MiB
  ept.map(data, SHIFT + data, "4K");                         // its data page
  v.setControl({ ...LONG_MODE, cr3: guestPt.root - SHIFT });
  v.setVmcs({ eptp: ept.eptp, vpid: 1 });
  out(`  EPTP ${hex(ept.eptp)} (4-level, A/D on), VPID 1; guest CR3 ${hex(guestPt.root - SHIFT)} is a gpa`);
  v.setTlbEnabled(false);
  const before = v.tlbStats();
  line(v, "a cold 2D walk", 0x7000_0123n, "read");
  const after = v.tlbStats();
  out(`  ${after.ptRefs - before.ptRefs} paging-structure loads (4 guest + 5 × 4 EPT), ${after.walks - before.walks} walks (1 guest + 5 EPT)`);
  v.setTlbEnabled(true);
  line(v, "a read fills a combined mapping (VPID, EP4TA)", 0x7000_0123n, "read");
  ept.map(data, SHIFT + data, "4K", { write: false });
  line(v, "EPT made the page read-only, no INVEPT yet", 0x7000_0456n, "read");
  line(v, "a write (D clear in the entry: it re-walks)", 0x7000_0456n, "write");
  out("  qualification bits: 1 data write, 3 and 5 read and execute allowed by every EPT entry, 7 linear address valid, 8 the final access");
  line(v, "a read caches the read-only mapping again", 0x7000_0789n, "read");
  ept.map(data, SHIFT + 0x80_0000n, "4K", { write: true });
  line(v, "EPT moved the page; the cached mapping stays", 0x7000_0789n, "read");
  v.invept(1, ept.eptp);
  line(v, "after INVEPT single-context", 0x7000_0789n, "read");
  m.dispose();
}

/** Moves the table pointers `b` wrote (host addresses) down by `shift`, to the gpas the guest sees them at. */
function relocate(mem: { read64(a: bigint): bigint; write64(a: bigint, v: bigint): void }, b: X86PageTableBuilder, shift: bigint): void {
  const fix = (table: bigint, level: number): void => {
    if (level === 1) return;
    for (let i = 0n; i < 512n; i++) {
      const at = table + i * 8n;
      const e = mem.read64(at);
      if ((e & 1n) === 0n || (level <= 3 && (e & 0x80n) !== 0n)) continue;
      const child = e & 0x000f_ffff_ffff_f000n;
      fix(child, level - 1);
      mem.write64(at, (e & ~0x000f_ffff_ffff_f000n) | (child - shift));
    }
  };
  fix(b.root, b.levels);
}
