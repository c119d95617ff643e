// `vmmu demo` (what `npm start` runs): builds real x86-64 page tables in guest
// RAM, translates through the TLB and the walker, shows faults and the
// architectural effect of invalidations, then measures throughput.

import { createMachine, X86PageTableBuilder, LONG_MODE, CR4, CR3_NOFLUSH, hex, coreHash } from "../index.js";
import type { X86TranslateResult, X86Vcpu } from "../index.js";
import { runArm64Demo } from "./demo-arm64.js";
import { runEptDemo } from "./demo-ept.js";
import { runKpti } from "../experiments/run-kpti.js";
import { runCr0Wp } from "../experiments/run-cr0wp.js";
import { formatCr0Wp } from "./run-cr0wp.js";
import { formatKpti, formatKptiLegend } from "./run.js";

const out = (s = "") => process.stdout.write(s + "\n");

function show(r: X86TranslateResult): string {
  if ("fault" in r) {
    const f = r.fault;
    return f.kind === "page-fault" ? `#PF error=${hex(f.errorCode)} level=${f.level}`
      : f.kind === "general-protection" ? "#GP(0)" : `abort: table gpa ${hex(f.gpa ?? 0n)} outside RAM`;
  }
  const size = r.pageSize >= 1 << 30 ? "1G" : r.pageSize >= 1 << 21 ? "2M" : "4K";
  return `pa ${hex(r.pa)} (${size} page, level ${r.level})`;
}

function line(v: X86Vcpu, label: string, va: bigint, access: "read" | "write" | "fetch", user: boolean): void {
  out(`  ${label.padEnd(44)} ${hex(va).padStart(20)} ${access.padEnd(5)} ${user ? "user" : "kern"} → ${show(v.translate(va, access, user))}`);
}

function rate(ops: number, ms: number): string {
  const m = ops / ms / 1e3;
  return `${m.toFixed(1)} M/s (${((ms * 1e6) / ops).toFixed(2)} ns each)`;
}

const USAGE = `usage: vmmu demo

  What \`npm start\` runs, in about ten seconds: builds x86-64 page tables in guest
  RAM, translates through the TLB and the walker (faults included), shows what
  INVLPG and MOV CR3 do, measures throughput; a guest under EPT (the 2D walk, an
  EPT violation, INVEPT); the same for arm64 with stage 2 and
  range TLB maintenance; then a short \`vmmu run kpti\` at 1 and 4 vCPUs with its
  column legend, and a short \`vmmu run cr0wp\` (seed 002) on all three MMUs.
  Takes no options.
`;

/** Runs the demo: 0, or 2 (one vmmu: line) for any argument but --help. */
export async function runDemo(args: string[]): Promise<number> {
  if (args.some((a) => a === "-h" || a === "--help")) { process.stdout.write(USAGE); return 0; }
  if (args.length > 0) {
    process.stderr.write(`vmmu: demo takes no ${args[0]!.startsWith("-") ? "option" : "argument"} '${args[0]}' (vmmu demo --help)\n`);
    return 2;
  }
  out(`vmmu demo — x86-64 paging in WebAssembly over one shared guest memory (core ${coreHash})`);
  const m = await createMachine({ arch: "x86_64", memoryBytes: 256 << 20, vcpus: 2 });
  const b = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x100_0000n });
  const KERNEL = 0xffff_ffff_8100_0000n;
  const DIRECT = 0xffff_8880_0000_0000n;
  b.mapRange(KERNEL, 0x100_0000n, 4, "2M", { global: true });              // kernel text, 2 MiB pages
  b.map(DIRECT, 0n, "1G", { write: true, nx: true, global: true });        // direct map, one 1 GiB page
  b.mapRange(0x40_0000n, 0x200_0000n, 16, "4K", { user: true });           // user text (read-only)
  b.mapRange(0x7fff_f000_0000n, 0x300_0000n, 16, "4K", { user: true, write: true, nx: true, pkey: 0 }); // user stack
  const v = m.vcpu(0);
  v.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE | CR4.SMEP | CR4.SMAP, cr3: b.root | 1n });
  out(`\nguest RAM ${m.memory.slot.size >> 20n} MiB, ${m.vcpuCount} vCPUs; page tables at ${hex(b.root)} (${b.tablesAllocated} table pages); ${v}`);

  out("\ntranslations (TLB, then the 4-level walker; A/D set by compare-exchange):");
  line(v, "kernel text, 2M global page", KERNEL + 0x1234n, "fetch", false);
  line(v, "direct map, 1G page", DIRECT + 0x1234_5678n, "write", false);
  line(v, "user text", 0x40_0123n, "fetch", true);
  line(v, "user stack", 0x7fff_f000_0ff8n, "write", true);
  line(v, "user writes its read-only text", 0x40_0123n, "write", true);
  line(v, "kernel fetch from user page (SMEP)", 0x40_0123n, "fetch", false);
  line(v, "kernel reads user page, AC=0 (SMAP)", 0x40_0123n, "read", false);
  line(v, "user reads kernel page", KERNEL, "read", true);
  line(v, "fetch from NX direct map", DIRECT, "fetch", false);
  line(v, "unmapped", 0x1234_5000n, "read", true);
  line(v, "non-canonical", 0x0000_8000_0000_0000n, "read", false);

  out("\ninvalidation (SDM §4.10.4): a PTE edit is invisible until INVLPG");
  const leaf = b.leafGpa(0x40_0000n)!;
  line(v, "user reads its text (now cached)", 0x40_0000n, "read", true);
  m.memory.write64(leaf, X86PageTableBuilder.leaf(0x500_0000n, "4K", { user: true }));
  line(v, "after remapping the PTE, before INVLPG", 0x40_0000n, "read", true);
  v.invlpg(0x40_0000n);
  line(v, "after INVLPG", 0x40_0000n, "read", true);
  out("  MOV CR3 to PCID 2 with bit 63 (no flush), edit PCID 1's mapping, come back with bit 63:");
  v.writeCr3(b.root | 2n | CR3_NOFLUSH);
  m.memory.write64(leaf, X86PageTableBuilder.leaf(0x600_0000n, "4K", { user: true }));
  v.writeCr3(b.root | 1n | CR3_NOFLUSH);
  line(v, "  PCID 1's entry survived", 0x40_0000n, "read", true);
  v.writeCr3(b.root | 1n);
  line(v, "  after MOV CR3 without bit 63", 0x40_0000n, "read", true);
  const s = v.tlbStats();
  out(`  counters: lookups ${s.lookups}, hits ${s.hits}, walks ${s.walks}, pt refs ${s.ptRefs}, A/D writes ${s.adWrites}, context flushes ${s.flushCtx}, page flushes ${s.flushPage}, dropped ${s.dropped}, live ${s.live}`);

  out("\nthroughput (batch API, one wasm call per 16384 addresses):");
  const users = 2048;
  b.mapRange(0x1000_0000n, 0x800_0000n, users, "4K", { user: true, write: true });
  const bt = v.batch();
  for (let i = 0; i < bt.capacity; i++) {
    bt.va[i] = 0x1000_0000n + BigInt((i * 7) % users) * 4096n + BigInt(i & 0xff8);
    bt.access[i] = i % 4 === 3 ? 1 : 0;
  }
  bt.run(bt.capacity, true);
  v.resetStats();
  const measure = (budgetMs: number): number => {
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < budgetMs) { bt.run(bt.capacity, true); n += bt.capacity; t = performance.now(); }
    return (n / (t - t0)) * 1e-3;
  };
  measure(100);
  const hitRate = measure(500);
  const hs = v.tlbStats();
  out(`  TLB hits:             ${hitRate.toFixed(1)} M translations/s (${(1e3 / hitRate).toFixed(2)} ns each; hit ratio ${(hs.hits / hs.lookups).toFixed(4)})`);
  v.setTlbEnabled(false);
  v.resetStats();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 400) { bt.run(bt.capacity, true); n += bt.capacity; }
  const ws = v.tlbStats();
  out(`  4-level walks:        ${rate(n, performance.now() - t0)}, ${(ws.ptRefs / ws.walks).toFixed(2)} table loads per walk`);
  v.setTlbEnabled(true);
  m.dispose();
  await runEptDemo();
  await runArm64Demo();

  out("\nseed reproduction (short form of `vmmu run kpti`): a KPTI guest compiling a kernel on the shadow MMU");
  for (const vcpus of [1, 4]) {
    out(`\n${vcpus} vCPU${vcpus > 1 ? "s" : ""}, 16 jobs:`);
    const r = await runKpti({ vcpus, policies: ["baseline", "shahid2018", "lai2021", "alon2018"], jobs: 16, accessesPerProcess: 60_000 });
    for (const l of formatKpti(vcpus, r)) out("  " + l);
  }
  out("");
  for (const l of formatKptiLegend()) out("  " + l);

  out("\nseed reproduction (short form of `vmmu run cr0wp`): ssdd in a grsecurity guest toggling CR0.WP, on each MMU");
  out("(2 vCPUs, 10 pairs × 200 PTRACE_SINGLESTEPs; baseline = v5.10, krause2023 = with Mathias Krause's series):\n");
  const c = await runCr0Wp({ mmus: ["legacy", "tdp", "shadow"], policies: ["baseline", "keep-roots", "preserve-roots", "krause2023"], pairs: 10, iterations: 200 });
  for (const l of formatCr0Wp(c, 10, 200)) out("  " + l);
  out("\nnext: `vmmu run kpti --policy all` and `vmmu run cr0wp --mmu all --policy all` for every patch on its own; `npm test` runs the differential, TLB-semantics,");
  out("shadow-correctness and real-Linux suites; `npm run bench` compares against native C.");
  return 0;
}
