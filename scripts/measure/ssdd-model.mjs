#!/usr/bin/env node
// The guest model's cost of one ssdd step on bare metal, to set beside the
// native measurement of scripts/measure/ssdd.sh (bench/data/ssdd-native.json).
// Builds the guest as src/experiments/run-cr0wp.ts does, but on BareMetalCpus
// (src/guest/bare-metal-cpu.ts) over an x86-64 machine's vCPUs, runs runSsdd
// (src/guest/ssdd.ts) and reports simulated cycles per step, split by cost
// entry. Reports only: no constant is changed.
//
//   node scripts/measure/ssdd-model.mjs [--pairs 10] [--iterations 2000] [--vcpus 1] [--json FILE]
//
// Per configuration (kernexec false or KERNEXEC_DEFAULTS; page-table
// isolation on, as LinuxGuest defaults, or off, as on a CPU not affected by
// Meltdown):
//   1. runs ssdd with `iterations` and with 0 iterations; a step's cycles are
//      the difference over pairs × iterations (fork, exec, attach and exit
//      cancel out);
//   2. splits them: BareMetalCpu.events() counts × BARE_METAL_COSTS for the
//      CPU's charged events; tlbStats() hits, walks, ptRefs, adWrites × their
//      costs; each LINUX_WORK_COSTS entry by rerunning both runs with that
//      entry 0 (the model is deterministic and, on 1 vCPU, its scheduling
//      does not depend on cycle counts, so the difference is exactly that
//      entry's share); what is left is the work ssdd.ts charges itself
//      (DEBUG_WORK + STOP_WORK per step).
// Bundles an entry point over src/ with esbuild (as scripts/bench.mjs does).
import { build } from "esbuild";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : args[i + 1];
};
const pairs = Number(opt("--pairs", 10)), iterations = Number(opt("--iterations", 2000)), vcpus = Number(opt("--vcpus", 1));
const jsonOut = opt("--json", null);
for (const [k, v] of [["--pairs", pairs], ["--iterations", iterations], ["--vcpus", vcpus]]) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`ssdd-model: ${k} must be a positive integer, got ${v}`);
}

const entry = `
import { createMachine } from "./src/index.js";
import { BareMetalCpu, BARE_METAL_COSTS } from "./src/guest/bare-metal-cpu.js";
import { LinuxGuest, LINUX_WORK_COSTS } from "./src/guest/linux.js";
import { runSsdd, KERNEXEC_DEFAULTS } from "./src/guest/ssdd.js";
export { BARE_METAL_COSTS, LINUX_WORK_COSTS, KERNEXEC_DEFAULTS };
const RAM = 256 << 20;
export async function run({ vcpus, pairs, iterations, kernexec, pti, work }) {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: RAM, vcpus });
  try {
    const cpus = BareMetalCpu.forMachine(machine);
    const guest = new LinuxGuest(cpus, { ramBytes: RAM, pti, work });
    guest.boot();
    const ev0 = cpus.map((c) => c.events()), tlb0 = cpus.map((c) => c.vcpu.tlbStats());
    const r = runSsdd(guest, { pairs, iterations, kernexec });
    const events = {}, tlb = { hits: 0, walks: 0, ptRefs: 0, adWrites: 0 };
    cpus.forEach((c, i) => {
      const e = c.events(), t = c.vcpu.tlbStats();
      for (const [k, n] of Object.entries(e)) events[k] = (events[k] ?? 0) + n - (ev0[i][k] ?? 0);
      for (const k of Object.keys(tlb)) tlb[k] += t[k] - tlb0[i][k];
    });
    return { cycles: r.cycles.reduce((a, b) => a + b, 0), steps: r.steps, inSteps: r.inSteps, stats: r.stats,
      kernelAccesses: r.kernelAccesses, userAccesses: r.userAccesses, events, tlb, wallMs: r.wallMs };
  } finally {
    machine.dispose();
  }
}
`;

const dir = mkdtempSync(path.join(tmpdir(), "vmmu-ssdd-model-"));
const outfile = path.join(dir, "entry.mjs");
await build({
  stdin: { contents: entry, resolveDir: root, loader: "ts", sourcefile: "ssdd-model-entry.ts" },
  outfile, bundle: true, platform: "node", format: "esm", target: "node20", logLevel: "warning",
});
const m = await import(pathToFileURL(outfile).href);
rmSync(dir, { recursive: true, force: true });

const { BARE_METAL_COSTS, LINUX_WORK_COSTS, KERNEXEC_DEFAULTS } = m;
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

async function perStep(cfg, work) {
  const a = await m.run({ vcpus, pairs, iterations, ...cfg, work });
  const b = await m.run({ vcpus, pairs, iterations: 0, ...cfg, work });
  const steps = a.steps - b.steps;
  const d = (x, y) => (x - y) / steps;
  const events = {};
  for (const k of new Set([...Object.keys(a.events), ...Object.keys(b.events)])) events[k] = d(a.events[k] ?? 0, b.events[k] ?? 0);
  const tlb = {};
  for (const k of Object.keys(a.tlb)) tlb[k] = d(a.tlb[k], b.tlb[k]);
  const stats = {};
  for (const k of Object.keys(a.stats)) stats[k] = d(a.stats[k], b.stats[k]);
  return { cycles: d(a.cycles, b.cycles), steps, events, tlb, stats, inSteps: a.inSteps, kernelAccesses: d(a.kernelAccesses, b.kernelAccesses),
    userAccesses: d(a.userAccesses, b.userAccesses), wallMs: a.wallMs };
}

const configs = [
  { name: "stock kernel, PTI off (this machine: AMD, not affected by Meltdown)", kernexec: false, pti: false },
  { name: "stock kernel, PTI on (LinuxGuest's default, run-cr0wp's guest)", kernexec: false, pti: true },
  { name: "grsecurity KERNEXEC defaults, PTI on (run-cr0wp's guest)", kernexec: undefined, pti: true },
];
const out = { pairs, iterations, vcpus, costs: { BARE_METAL_COSTS, LINUX_WORK_COSTS, KERNEXEC_DEFAULTS }, configs: [] };
for (const c of configs) {
  const cfg = { kernexec: c.kernexec, pti: c.pti };
  const base = await perStep(cfg, undefined);
  const parts = {};
  for (const [k, n] of Object.entries(base.events)) if (n) parts[`BARE_METAL_COSTS.${k}`] = n * (BARE_METAL_COSTS[k] ?? 0);
  parts["BARE_METAL_COSTS.tlbHit"] = base.tlb.hits * BARE_METAL_COSTS.tlbHit;
  parts["BARE_METAL_COSTS.walk"] = base.tlb.walks * BARE_METAL_COSTS.walk;
  parts["BARE_METAL_COSTS.ptRef"] = base.tlb.ptRefs * BARE_METAL_COSTS.ptRef;
  parts["BARE_METAL_COSTS.adWrite"] = base.tlb.adWrites * BARE_METAL_COSTS.adWrite;
  for (const k of Object.keys(LINUX_WORK_COSTS)) {
    if (LINUX_WORK_COSTS[k] === 0) continue;
    const z = await perStep(cfg, { [k]: 0 });
    const share = base.cycles - z.cycles;
    if (Math.abs(share) > 1e-9) parts[`LINUX_WORK_COSTS.${k}`] = share;
  }
  const attributed = Object.values(parts).reduce((a, b) => a + b, 0);
  parts["ssdd.ts DEBUG_WORK + STOP_WORK (remainder)"] = base.cycles - attributed;
  const sorted = Object.fromEntries(Object.entries(parts).filter(([, v]) => Math.abs(v) > 1e-9).sort((x, y) => y[1] - x[1]).map(([k, v]) => [k, round(v)]));
  const r = {
    name: c.name, kernexec: c.kernexec === false ? false : KERNEXEC_DEFAULTS, pti: c.pti,
    cyclesPerStep: round(base.cycles), parts: sorted,
    countsPerStep: {
      events: Object.fromEntries(Object.entries(base.events).filter(([, v]) => v).map(([k, v]) => [k, round(v, 3)])),
      tlb: Object.fromEntries(Object.entries(base.tlb).map(([k, v]) => [k, round(v, 3)])),
      kernelAccesses: round(base.kernelAccesses, 3), userAccesses: round(base.userAccesses, 3),
      guest: Object.fromEntries(Object.entries(base.stats).filter(([, v]) => v).map(([k, v]) => [k, round(v, 3)])),
    },
    hostWallMsOfRun: round(base.wallMs),
  };
  out.configs.push(r);
  console.log(`\n${c.name}: ${r.cyclesPerStep} simulated cycles per step (${pairs} pairs × ${iterations}, ${vcpus} vCPU)`);
  for (const [k, v] of Object.entries(sorted)) console.log(`  ${k.padEnd(46)} ${String(v).padStart(9)}  ${(100 * v / base.cycles).toFixed(1).padStart(5)}%`);
  console.log(`  counts per step: ${JSON.stringify(r.countsPerStep.events)} tlb ${JSON.stringify(r.countsPerStep.tlb)}`);
}
if (jsonOut) writeFileSync(jsonOut, `${JSON.stringify(out, null, 2)}\n`);
