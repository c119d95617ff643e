// Simulated time of the hardware's own work for a hypervisor vCPU: TLB hits
// and paging-structure references counted by the wasm core (its counter
// block), charged from the cost model. Shared by the shadow and the EPT vCPU.

import type { X86Vcpu } from "../x86/vcpu.js";
import type { MemoryViews } from "../core/views.js";
import type { CostModel } from "./cost-model.js";

/**
 * Reads a vCPU's hit and reference counters as u32 halves (low half of
 * counter i at 2i: the deltas charged are far below 2^32), renewing the view
 * after memory growth. `mark()` remembers both counts; `single` and `run`
 * give the cycles of the hardware work since.
 */
export class HwMeter {
  private counters: Uint32Array;
  private gen: number;
  private readonly views: MemoryViews;
  private hits0 = 0;
  private refs0 = 0;

  constructor(private readonly hw: X86Vcpu, private readonly cHits: number, private readonly cRefs: number) {
    this.views = hw.memory.views;
    this.gen = this.views.fresh().generation;
    this.counters = HwMeter.halves(hw.counterView());
  }

  private static halves(c: BigUint64Array): Uint32Array {
    return new Uint32Array(c.buffer, c.byteOffset, c.length * 2);
  }

  private ctr(): Uint32Array {
    if (this.views.fresh().generation !== this.gen) {
      this.gen = this.views.generation;
      this.counters = HwMeter.halves(this.hw.counterView());
    }
    return this.counters;
  }

  /** Remembers the counts before a hardware translation or run. */
  mark(): void {
    const c = this.ctr();
    this.hits0 = c[2 * this.cHits]!;
    this.refs0 = c[2 * this.cRefs]!;
  }

  /** One translation since mark(): a TLB hit, or a walk of the references it made. */
  single(costs: CostModel): number {
    const c = this.ctr();
    if (c[2 * this.cHits]! !== this.hits0) return costs.tlbHit;
    return costs.hwWalkRef * ((c[2 * this.cRefs]! - this.refs0) >>> 0);
  }

  /** A run of translations since mark(): every hit and every reference. */
  run(costs: CostModel): number {
    const c = this.ctr();
    return costs.tlbHit * ((c[2 * this.cHits]! - this.hits0) >>> 0) + costs.hwWalkRef * ((c[2 * this.cRefs]! - this.refs0) >>> 0);
  }
}
