/**
 * A real QEMU `dump-guest-memory` ELF core of a Debian x86-64 Linux guest
 * (scripts/fixtures/qemu-elf-core.sh; test/fixtures/qemu-elf-x86_64/): opened
 * by format detection, CR3 found in the core's own QEMU note, and QEMU's
 * answers reproduced — every `gva2gpa` row and every `info mem` line —
 * through the library and through the CLI; readVirtual reads the marker the
 * guest's init left across a page boundary.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { lookup, mappings, openImage, readVirtual, writeVirtual, type Mapping, type MemoryImage, type X86Space } from "../../../src/index.js";

const DIR = fileURLToPath(new URL("../../fixtures/qemu-elf-x86_64/", import.meta.url));
const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const hex = (v: bigint): string => "0x" + v.toString(16);
const h16 = (v: bigint): string => v.toString(16).padStart(16, "0");

const meta = JSON.parse(readFileSync(join(DIR, "meta.json"), "utf8")) as { core_sha256: string; core_bytes: number };
const marker = JSON.parse(readFileSync(join(DIR, "marker.json"), "utf8")) as { va: string; text: string };
const rows = readFileSync(join(DIR, "gva2gpa.jsonl"), "utf8").split("\n").filter((l) => l !== "")
  .map((l) => JSON.parse(l) as { va: string; gpa: string | null });
const infoMem = gunzipSync(readFileSync(join(DIR, "info_mem.txt.gz"))).toString("latin1").split("\n").filter((l) => l !== "");
const registers = readFileSync(join(DIR, "info_registers.txt"), "latin1");
const reg = (name: string): bigint => BigInt("0x" + new RegExp(`${name}=([0-9a-f]+)`).exec(registers)![1]);

/** QEMU `info mem` (target/i386/monitor.c mem_print): ranges merged while U/S and R/W stay equal, printed `start-end size urw`. */
function asInfoMem(ranges: Mapping[]): string[] {
  const out: string[] = [];
  let start = 0n, end = -1n, prot = "";
  const flush = () => { if (end >= 0n) out.push(`${h16(start)}-${h16(end)} ${h16(end - start)} ${prot}`); };
  for (const m of ranges) {
    const p = (m.rights.user !== "---" ? "u" : "-") + "r" + (m.rights.kernel[1] === "w" ? "w" : "-");
    if (m.va === end && p === prot) { end = m.va + m.size; continue; }
    flush();
    start = m.va; end = m.va + m.size; prot = p;
  }
  flush();
  return out;
}

let bytes: Uint8Array;
let image: MemoryImage;
let space: X86Space;
let tmp: string;
let coreFile: string;

beforeAll(() => {
  bytes = gunzipSync(readFileSync(join(DIR, "core.elf.gz")));
  image = openImage(bytes);
  const cpu = image.cpus[0]!;
  space = { arch: "x86_64", memory: image, root: cpu.cr3, la57: (cpu.cr4 & (1n << 12n)) !== 0n };
  tmp = mkdtempSync(join(tmpdir(), "vmmu-elf-core-"));
  coreFile = join(tmp, "core.elf");
  writeFileSync(coreFile, bytes);
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("the QEMU ELF core of a Debian x86-64 guest", () => {
  it("is the core QEMU wrote (size and SHA-256 as recorded)", () => {
    expect(bytes.length).toBe(meta.core_bytes);
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(meta.core_sha256);
  });

  it("opens as an x86-64 ELF core: RAM below 640 KiB and from 768 KiB, VGA RAM, BIOS; CR0, CR3, CR4 in its QEMU note as info registers printed them", () => {
    expect(image.format).toBe("elf");
    expect(image.arch).toBe("x86_64");
    expect(image.ranges.map((r) => [hex(r.gpa), hex(r.size)])).toEqual([
      ["0x0", "0xa0000"], ["0xc0000", "0x5f40000"], ["0xfd000000", "0x1000000"], ["0xfffc0000", "0x40000"],
    ]);
    expect(image.cpus).toHaveLength(1);
    expect(image.cpus[0]).toMatchObject({ cr0: reg("CR0"), cr3: reg("CR3"), cr4: reg("CR4") });
  });

  it("lookup reproduces every QEMU gva2gpa row", () => {
    const wrong = rows.filter((r) => {
      const l = lookup(space, BigInt(r.va));
      return (l.mapped ? hex(l.pa) : null) !== r.gpa;
    });
    expect(rows.length).toBeGreaterThan(500);
    expect(rows.filter((r) => r.gpa === null).length).toBeGreaterThan(3);
    expect(wrong.slice(0, 10)).toEqual([]);
  });

  it("mappings, merged as info mem merges, reproduces every info mem line", () => {
    const ours = asInfoMem(mappings(space));
    expect(ours.length).toBe(infoMem.length);
    expect(ours.filter((l, i) => l !== infoMem[i]).slice(0, 10)).toEqual([]);
  });

  it("readVirtual reads init's marker across its page boundary; writeVirtual changes only the overlay", () => {
    const va = BigInt(marker.va);
    expect(va & 0xfffn).toBeGreaterThan(0xfc0n);
    expect(new TextDecoder().decode(readVirtual(space, va, marker.text.length))).toBe(marker.text);
    const copy = openImage(bytes);
    const s = { ...space, memory: copy };
    writeVirtual(s, va + 10n, new TextEncoder().encode("vmmu"));
    expect(new TextDecoder().decode(readVirtual(s, va, 20))).toBe("VMMU-ELF-FvmmuRE: th");
    expect(new TextDecoder().decode(readVirtual(space, va, 20))).toBe(marker.text.slice(0, 20));
    expect(() => readVirtual(space, 0x1000n, 8)).toThrow(/vmmu: readVirtual: va 0x1000 is not mapped \(entry at level \d not present\)/);
  });
});

function vmmu(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stdout.split("\n").filter((l) => l !== "") };
}

describe("the CLI on the QEMU ELF core", () => {
  it("vmmu translate detects the core and reproduces every gva2gpa row", () => {
    const r = vmmu(["translate", "--image", coreFile, "--cr3", hex(image.cpus[0]!.cr3)], rows.map((x) => x.va).join("\n"));
    expect(r.code).toBe(0);
    const got = r.lines.map((l) => (JSON.parse(l) as { pa: string | null }).pa);
    expect(got).toEqual(rows.map((x) => x.gpa));
  });

  it("vmmu mappings takes CR3 from the core and prints the library's ranges; --json and --leaves too", () => {
    const ranges = mappings(space);
    const r = vmmu(["mappings", "--image", coreFile]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.lines.length).toBe(ranges.length);
    const last = ranges[ranges.length - 1]!;
    expect(r.lines[r.lines.length - 1]).toBe(`${h16(last.va)}-${h16(last.va + last.size)} ${h16(last.size)} ${h16(last.pa)} ${last.rights.kernel} ${last.rights.user}`);
    expect(vmmu(["mappings", "--image", coreFile, "--cr3", hex(image.cpus[0]!.cr3), "--cr4", hex(image.cpus[0]!.cr4)]).stdout).toBe(r.stdout);
    const json = vmmu(["mappings", "--image", coreFile, "--json"]).lines.map((l) => JSON.parse(l) as Record<string, string>);
    expect(json[0]).toEqual({ va: hex(ranges[0]!.va), end: hex(ranges[0]!.va + ranges[0]!.size), size: hex(ranges[0]!.size), pa: hex(ranges[0]!.pa), ...ranges[0]!.rights });
    const leaves = vmmu(["mappings", "--image", coreFile, "--leaves", "--json"]).lines;
    expect(leaves.length).toBe(mappings(space, { coalesce: false }).length);
    expect(JSON.parse(leaves[0]!)).toMatchObject({ level: 1, entryAddress: expect.stringMatching(/^0x/), entry: expect.stringMatching(/^0x/) });
  });

  it("refuses what does not fit the core, in one line with exit 2", () => {
    const cases: [string[], RegExp][] = [
      [["mappings", "--image", coreFile, "--image-base", "0x1000"], /--image-base applies to raw images; '.*' is an ELF core/],
      [["mappings", "--arch", "arm64", "--image", coreFile, "--ttbr0", "0", "--ttbr1", "0", "--tcr", "0"], /is an x86_64 core, not arm64 \(--arch x86_64\)/],
      [["translate", "--arch", "arm64", "--image", coreFile, "--ttbr0", "0", "--ttbr1", "0", "--tcr", "0"], /is an x86_64 core, not arm64/],
      [["mappings", "--image", coreFile, "--cpu", "1"], /--cpu 1: the core holds CPUs 0\.\.0/],
      [["mappings", "--image", coreFile, "0x1000"], /mappings takes no addresses/],
      [["mappings", "--image", coreFile, "--access", "read"], /--access is an option of vmmu translate, not mappings/],
    ];
    for (const [args, message] of cases) {
      const r = vmmu(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(new RegExp(`^vmmu (mappings|translate): [^\\n]+\\n$`));
      expect(r.stderr).toMatch(message);
    }
  });
});
