// The batch loop a hypervisor vCPU runs for GuestCpu.accessMany: the hardware
// translates runs of accesses in wasm (one call per run, stopping at the
// first access that faults), and the one that faulted goes through the
// vCPU's single-access path (exits, MMU faults, emulation, injection).

import type { X86Vcpu } from "../x86/vcpu.js";
import type { X86Access } from "../x86/regs.js";
import type { GuestException } from "../guest/cpu.js";

/**
 * Runs `va[0..n)` with access codes `kinds` (0 read, 1 write, 2 fetch) at CPL 3
 * if `user`:
 * 1. copy up to one batch area's worth into `hw.batch()`;
 * 2. `run(i, m)` translates entries i..m−1 on the hardware (the caller reloads
 *    obsolete roots, charges hits and walks, counts accesses) and returns the
 *    index of the first that faulted, or m;
 * 3. that access goes through `slow` (counted there); a guest exception ends
 *    the loop with the number of accesses done before it.
 * Throws a TypeError for an access code other than 0, 1, 2.
 */
export function accessManyOnHardware(
  hw: X86Vcpu, va: BigUint64Array, kinds: Uint8Array, n: number,
  run: (start: number, count: number) => number,
  slow: (va: bigint, access: X86Access) => bigint | GuestException,
): { done: number; exception?: GuestException } {
  let done = 0;
  while (done < n) {
    const bt = hw.batch();
    const m = Math.min(bt.capacity, n - done);
    bt.va.set(va.subarray(done, done + m));
    bt.access.set(kinds.subarray(done, done + m));
    let i = 0;
    while (i < m) {
      const stop = run(i, m);
      if (stop >= m) break;
      const code = kinds[done + stop]!;
      if (code > 2) throw new TypeError(`vmmu: access code ${code} at index ${done + stop} is not 0, 1 or 2`);
      const r = slow(va[done + stop]!, code === 1 ? "write" : code === 2 ? "fetch" : "read");
      if (typeof r !== "bigint") return { done: done + stop, exception: r };
      i = stop + 1;
    }
    done += m;
  }
  return { done };
}
