/**
 * The measured densities the kernel-compile workload is grounded in
 * (src/guest/kernel-compile-measured.ts) are those of the measurement's data
 * file, bench/data/kernel-compile-lib.json, and give the user time between
 * kernel events that file implies.
 */
import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { MEASURED_KERNEL_COMPILE, userCyclesPerKernelEvent } from "../../../src/guest/kernel-compile-measured.js";

const data = JSON.parse(readFileSync(new URL("../../../bench/data/kernel-compile-lib.json", import.meta.url), "utf8"));

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
});
