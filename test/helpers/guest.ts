// Fixtures for the guest layer: a machine whose vCPUs are BareMetalCpus, and
// a booted Linux guest model on them.

import { createMachine, type Machine, type X86Vcpu } from "../../src/index.js";
import { BareMetalCpu, type BareMetalCpuOptions } from "../../src/guest/bare-metal-cpu.js";
import { LinuxGuest, type LinuxOptions } from "../../src/guest/linux.js";
import { disposeAfterAll } from "./machine.js";

export interface BareMetalGuest {
  machine: Machine<X86Vcpu>;
  cpus: BareMetalCpu[];
  guest: LinuxGuest;
}

/** A booted Linux guest on `vcpus` bare-metal CPUs with `ramMiB` of RAM (default 1 vCPU, 128 MiB); the machine is disposed after the file's last test. */
export async function bareMetalGuest(opts: Partial<LinuxOptions> & { vcpus?: number; ramMiB?: number; cpu?: BareMetalCpuOptions } = {}): Promise<BareMetalGuest> {
  const ram = (opts.ramMiB ?? 128) << 20;
  const machine = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: ram, vcpus: opts.vcpus ?? 1 }));
  const cpus = BareMetalCpu.forMachine(machine, opts.cpu);
  const guest = new LinuxGuest(cpus, { ...opts, ramBytes: ram });
  guest.boot();
  return { machine, cpus, guest };
}
