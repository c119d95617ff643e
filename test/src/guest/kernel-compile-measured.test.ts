/**
 * The measured densities the kernel-compile workload is grounded in
 * (src/guest/kernel-compile-measured.ts) are those of the measurement's data
 * file, bench/data/kernel-compile-lib.json, and give the user time between
 * kernel events that file implies.
 */
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { MEASURED_CC1_REACH, MEASURED_KERNEL_COMPILE, pagesTouched, userCyclesPerKernelEvent } from "../../../src/guest/kernel-compile-measured.js";

const data = JSON.parse(readFileSync(new URL("../../../bench/data/kernel-compile-lib.json", import.meta.url), "utf8"));
const reach = JSON.parse(readFileSync(new URL("../../../bench/data/tlb-reach-cc1.json", import.meta.url), "utf8"));

describe("the measured kernel compile", () => {
  it("holds the densities of bench/data/kernel-compile-lib.json", () => {
    for (const [ours, theirs] of [[MEASURED_KERNEL_COMPILE.cc1, data.densities.cc1], [MEASURED_KERNEL_COMPILE.rest, data.densities.restOfBuild]] as const) {
      expect(ours.syscallsPerUserMs).toBe(theirs.syscallsPerUserMs);
      expect(ours.minorFaultsPerUserMs).toBe(theirs.minorFaultsPerUserMs);
    }
  });

  it("puts 27 µs of user time between a cc1's kernel events and 2.4 µs between any other process's", () => {
    const cc1 = data.perCc1;
    const perEvent = cc1.userMs.sum / (data.processes.byProgram.cc1.syscalls + cc1.minorFaults.sum);
    expect(userCyclesPerKernelEvent(true, 1e9) / 1e6).toBeCloseTo(perEvent, 2);
    expect(userCyclesPerKernelEvent(true, 3e9)).toBe(81_978);
    expect(userCyclesPerKernelEvent(false, 3e9)).toBe(7_212);
  });

  it("holds the TLB reach of bench/data/tlb-reach-cc1.json", () => {
    expect(MEASURED_CC1_REACH.instructionsPerUs).toBe(reach.instructionsPerUs);
    expect(MEASURED_CC1_REACH.windows).toEqual(reach.windows.map((w: { instructions: number; pages: number }) => [w.instructions, w.pages]));
    expect(reach.instructionsPerUs).toBeCloseTo(reach.instructions / (reach.nativeUserMs * 1000), 0);
  });

  it("reads the pages a gap touches off the measured curve: exact at a window, monotone between, clamped past the ends", () => {
    const cyclesFor = (instr: number) => (instr / MEASURED_CC1_REACH.instructionsPerUs) * 3e3;
    expect(pagesTouched(cyclesFor(100_000), 3e9)).toBe(332);
    expect(pagesTouched(cyclesFor(30_000), 3e9)).toBe(201);
    let last = 0;
    for (let i = 1_000; i <= 10_000_000; i *= 1.5) {
      const p = pagesTouched(cyclesFor(i), 3e9);
      expect(p).toBeGreaterThanOrEqual(last);
      last = p;
    }
    expect(pagesTouched(cyclesFor(1e9), 3e9)).toBe(953);
    expect(pagesTouched(0, 3e9)).toBe(0);
    // A cc1 gap (27.3 µs: 131 k instructions) touches about 350 pages; another process's (2.4 µs) about 125.
    expect(pagesTouched(userCyclesPerKernelEvent(true, 3e9), 3e9)).toBeGreaterThan(331);
    expect(pagesTouched(userCyclesPerKernelEvent(true, 3e9), 3e9)).toBeLessThan(482);
    expect(pagesTouched(userCyclesPerKernelEvent(false, 3e9), 3e9)).toBeGreaterThan(69);
    expect(pagesTouched(userCyclesPerKernelEvent(false, 3e9), 3e9)).toBeLessThan(201);
  });
});
