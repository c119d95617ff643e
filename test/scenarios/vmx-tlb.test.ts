/**
 * The VPID- and EPTP-tagged TLB, scenario by scenario: Intel SDM Vol.3C §29.4
 * "Caching Translation Information" (§28.3 in older editions): linear mappings
 * tagged by VPID and PCID, combined mappings by VPID, PCID and EP4TA (EPTP bits
 * 51:12), guest-physical mappings by EP4TA (§29.4.1); MOV CR3, INVLPG and
 * INVPCID affect only the current VPID, combined mappings of every EP4TA
 * (§29.4.3.1); INVEPT and INVVPID as their instruction pages say.
 *
 * A mapping is seen to survive when a guest or EPT entry is changed without an
 * invalidation and the old translation still comes back (stale, and allowed);
 * it is seen to be gone when the new one does. Guest entries are changed to
 * observe linear and combined mappings (a walk after their invalidation reads
 * the guest table afresh); EPT entries to observe guest-physical mappings.
 */
import { describe, expect, it } from "vitest";
import { CR3_NOFLUSH } from "../../src/index.js";
import { DATA, KVA, SPARE, VA, VA2, vmxWorld } from "../helpers/vmx.js";

const PCID1 = 1n, PCID2 = 2n;

describe("VPIDs and EPTPs tag the TLB", () => {
  it("a VPID's entries survive a switch to another VPID and back", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    vcpu.setVmcs({ vpid: 2 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    w.remapGuest(VA, SPARE);
    vcpu.setVmcs({ vpid: 1 });
    const hits = vcpu.tlbStats().hits;
    expect(vcpu.translate(VA + 8n)).toMatchObject({ pa: w.hostOf(0) + 8n, gpa: DATA + 8n });
    expect(vcpu.tlbStats().hits - hits).toBe(1);
    expect(vcpu.invvpid(1, 1)).toBeNull();
    expect(vcpu.translate(VA + 8n)).toMatchObject({ pa: w.hostOf(0) + 0x4008n, gpa: SPARE + 8n });
    vcpu.setVmcs({ vpid: 2 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
  });

  it("INVLPG inside VPID 2 leaves VPID 3's entry", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 3 });
    vcpu.translate(VA);
    vcpu.setVmcs({ vpid: 2 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    vcpu.invlpg(VA);
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
    vcpu.setVmcs({ vpid: 3 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
  });

  it("INVLPG inside a VPID drops the page's combined mappings under every EPTP of that VPID", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[1]!.eptp, vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(1) });
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0) });
    w.remapGuest(VA, SPARE);
    vcpu.invlpg(VA);
    vcpu.setVmcs({ eptp: w.epts[1]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(1) + 0x4000n, gpa: SPARE });
  });

  it("MOV CR3 without NOFLUSH flushes its PCID in the current VPID only", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 2 });
    vcpu.translate(VA);
    vcpu.setVmcs({ vpid: 1 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    expect(vcpu.writeCr3(w.guest.root | PCID1)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
    vcpu.setVmcs({ vpid: 2 });
    expect(vcpu.translate(VA)).toMatchObject({ gpa: DATA });
  });

  it.each([2, 3])("INVPCID type %i inside VPID 1 leaves VPID 2's entries", async (type) => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 2 });
    vcpu.translate(VA);
    vcpu.translate(KVA);
    vcpu.setVmcs({ vpid: 1 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    w.remapGuest(KVA, SPARE + 0x1000n);
    expect(vcpu.invpcid(type, 0)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
    vcpu.setVmcs({ vpid: 2 });
    expect(vcpu.translate(VA)).toMatchObject({ gpa: DATA });
    expect(vcpu.translate(KVA)).toMatchObject({ gpa: DATA + 0x2000n });
  });

  it("INVVPID type 3 keeps globals", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 1 });
    vcpu.translate(VA);
    vcpu.translate(KVA);
    w.remapGuest(VA, SPARE);
    w.remapGuest(KVA, SPARE + 0x1000n);
    expect(vcpu.invvpid(3, 1)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
    expect(vcpu.translate(KVA)).toMatchObject({ pa: w.hostOf(0) + 0x2000n, gpa: DATA + 0x2000n });
    expect(vcpu.invvpid(1, 1)).toBeNull();
    expect(vcpu.translate(KVA)).toMatchObject({ gpa: SPARE + 0x1000n });
  });

  it("INVVPID individual-address drops that address in every PCID and under every EPTP, globals too, and nothing else", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    const at = (eptp: number, pcid: bigint) => {
      vcpu.setVmcs({ eptp: w.epts[eptp]!.eptp });
      expect(vcpu.writeCr3(w.guest.root | pcid | CR3_NOFLUSH)).toBeNull();
    };
    vcpu.setVmcs({ vpid: 1 });
    for (const [e, p] of [[0, PCID1], [0, PCID2], [1, PCID1]] as const) {
      at(e, p);
      vcpu.translate(VA);
      vcpu.translate(VA2);
      vcpu.translate(KVA);
    }
    w.remapGuest(VA, SPARE);
    w.remapGuest(VA2, SPARE + 0x1000n);
    w.remapGuest(KVA, SPARE + 0x2000n);
    expect(vcpu.invvpid(0, 1, VA + 0x123n)).toBeNull();
    expect(vcpu.invvpid(0, 1, KVA)).toBeNull();
    for (const [e, p] of [[0, PCID1], [0, PCID2], [1, PCID1]] as const) {
      at(e, p);
      expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
      expect(vcpu.translate(KVA)).toMatchObject({ gpa: SPARE + 0x2000n });
      expect(vcpu.translate(VA2)).toMatchObject({ gpa: DATA + 0x1000n });
    }
  });

  it("INVVPID type 2 spares VPID 0", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 0 });
    vcpu.translate(VA);
    vcpu.setVmcs({ vpid: 5 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    expect(vcpu.invvpid(2, 0)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
    vcpu.setVmcs({ vpid: 0 });
    expect(vcpu.translate(VA)).toMatchObject({ gpa: DATA });
  });

  it("INVEPT single-context drops combined mappings of that EPTP only", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 1 });
    vcpu.translate(VA);
    vcpu.setVmcs({ eptp: w.epts[1]!.eptp });
    vcpu.translate(VA);
    vcpu.setVmcs({ vpid: 2 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    expect(vcpu.invept(1, w.epts[0]!.eptp)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(1), gpa: DATA });
    vcpu.setVmcs({ vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(1), gpa: DATA });
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0) + 0x4000n, gpa: SPARE });
  });

  it("INVEPT single-context names an EP4TA: an EPTP that differs only in memory type drops the same mappings", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    const wb = w.epts[0]!.eptp, uc = wb & ~7n;
    vcpu.setVmcs({ eptp: wb, vpid: 1 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    expect(vcpu.invept(1, uc)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ gpa: SPARE });
  });

  it("INVEPT all-context drops combined mappings of every EPTP and every VPID, and no linear mapping", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: null, vpid: 0 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: DATA });
    for (const [e, vpid] of [[0, 1], [1, 2], [2, 0]] as const) {
      vcpu.setVmcs({ eptp: w.epts[e]!.eptp, vpid });
      vcpu.translate(VA);
    }
    w.remapGuest(VA, SPARE);
    expect(vcpu.invept(2)).toBeNull();
    for (const [e, vpid] of [[0, 1], [1, 2], [2, 0]] as const) {
      vcpu.setVmcs({ eptp: w.epts[e]!.eptp, vpid });
      expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(e) + 0x4000n, gpa: SPARE });
    }
    vcpu.setVmcs({ eptp: null, vpid: 0 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: DATA });
  });

  it.each([["single-context", 1], ["all-context", 2]] as const)("guest-physical mappings survive INVVPID but not INVEPT %s", async (_, type) => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    w.remapEpt(0, DATA, w.hostOf(0) + 0x8000n);
    expect(vcpu.invvpid(1, 1)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    expect(type === 1 ? vcpu.invept(1, w.epts[0]!.eptp) : vcpu.invept(2)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0) + 0x8000n, gpa: DATA });
  });

  it("guest-physical mappings are per EP4TA: one EPTP's stale mapping is not used under another", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    w.remapEpt(1, DATA, w.hostOf(0));
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 1 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0) });
    vcpu.setVmcs({ eptp: w.epts[1]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0) });
    w.remapEpt(0, DATA, w.hostOf(0) + 0x8000n);
    w.remapEpt(1, DATA, w.hostOf(1));
    expect(vcpu.invept(1, w.epts[1]!.eptp)).toBeNull();
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(1) });
  });

  it("a linear mapping is not used under EPT, nor a combined one without it", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: null, vpid: 0 });
    expect(vcpu.translate(VA)).toMatchObject({ pa: DATA });
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
    vcpu.setVmcs({ eptp: null });
    expect(vcpu.translate(VA)).toMatchObject({ pa: DATA });
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp });
    expect(vcpu.translate(VA)).toMatchObject({ pa: w.hostOf(0), gpa: DATA });
  });

  it("setVmcs implies no flush and keeps the fields it is not given", async () => {
    const w = await vmxWorld();
    const { vcpu } = w;
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp, vpid: 7 });
    vcpu.translate(VA);
    w.remapGuest(VA, SPARE);
    vcpu.setVmcs({ vpid: 7 });
    vcpu.setVmcs({ eptp: w.epts[0]!.eptp });
    expect(vcpu.vmcs()).toEqual({ eptp: w.epts[0]!.eptp, vpid: 7, mbec: false });
    expect(vcpu.translate(VA)).toMatchObject({ gpa: DATA });
  });
});
