// The browser demo's Web Worker (HTML Living Standard §10.2, dedicated
// workers). Two roles, one per message:
//   { role: "vcpu", handle, index, vas, batch }: attaches to vCPU `index` of the
//     page's machine through the posted MachineHandle (its shared
//     WebAssembly.Memory needs a cross-origin-isolated page) and translates
//     `vas`, then `batch` addresses in the pages of `vas` with translateBatch
//     (twice: the second pass is timed), over the same guest memory;
//   { role: "kpti", run }: runs the seed reproduction (runKpti) off the page's
//     thread, posting progress.
// Answers { type: "progress", policy, fraction } and finally
// { type: "done", result } or { type: "error", message }.

import { attachVcpu, type MachineHandle, type X86Vcpu, type X86TranslateResult } from "../src/index.js";
import { runKpti, type KptiRunOptions } from "../src/experiments/run-kpti.js";

interface WorkerScope {
  postMessage(message: unknown): void;
  onmessage: ((e: MessageEvent) => void) | null;
  crossOriginIsolated: boolean;
}
const scope = self as unknown as WorkerScope;

export interface VcpuJob { role: "vcpu"; handle: MachineHandle; index: number; vas: bigint[]; batch: number }
export interface KptiJob { role: "kpti"; run: KptiRunOptions }

export interface VcpuJobResult {
  isolated: boolean;
  results: { va: bigint; result: X86TranslateResult }[];
  batch: { count: number; faults: number; ms: number };
  stats: ReturnType<X86Vcpu["tlbStats"]>;
}

async function vcpuJob(job: VcpuJob): Promise<VcpuJobResult> {
  const v = (await attachVcpu(job.handle, job.index)) as X86Vcpu;
  const results = job.vas.map((va) => ({ va, result: v.translate(va, "read", true) }));
  const va = new BigUint64Array(job.batch);
  for (let i = 0; i < va.length; i++) va[i] = (job.vas[i % job.vas.length]! & ~0xfffn) + BigInt((i * 8) & 0xff8);
  const out = { pa: new BigUint64Array(va.length), status: new Uint32Array(va.length) };
  v.translateBatch(va, "read", true, out); // cold: walks, fills, and the engine's first compile of the path
  const t0 = performance.now();
  const faults = v.translateBatch(va, "read", true, out);
  const ms = performance.now() - t0;
  return { isolated: scope.crossOriginIsolated, results, batch: { count: va.length, faults, ms }, stats: v.tlbStats() };
}

scope.onmessage = async (e: MessageEvent) => {
  const job = e.data as VcpuJob | KptiJob;
  try {
    const result = job.role === "vcpu" ? await vcpuJob(job)
      : await runKpti({ ...job.run, onProgress: (policy, fraction) => scope.postMessage({ type: "progress", policy, fraction }) });
    scope.postMessage({ type: "done", result });
  } catch (err) {
    scope.postMessage({ type: "error", message: err instanceof Error ? `${err.message}\n${err.stack ?? ""}` : String(err) });
  }
};
