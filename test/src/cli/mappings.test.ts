/**
 * `vmmu mappings` over raw pmemsave images of the real-Linux fixtures: the
 * CLI prints what the library's mappings() gives for the same tables (x86-64
 * live CR3s; arm64 both TTBR halves at --image-base 0x40000000), and refuses
 * usage mistakes with one line and exit 2. (The ELF-core path:
 * test/src/forensics/qemu-elf-core.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { mappings } from "../../../src/index.js";
import { openImageFile } from "../../../src/forensics/file.js";
import {
  loadArm64Snapshot, loadX86Snapshot, vcpuOf, writeSparseImage, describeRealworld,
} from "../../helpers/realworld.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const hex = (v: bigint): string => "0x" + v.toString(16);

function vmmu(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "mappings", ...args], { encoding: "utf8", maxBuffer: 256 << 20 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stdout.split("\n").filter((l) => l !== "") };
}

let tmp: string;
beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vmmu-mappings-"));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("vmmu mappings usage", () => {
  const tiny = (): string => {
    const f = path.join(tmp, "tiny.img");
    fs.writeFileSync(f, new Uint8Array(8192));
    return f;
  };
  const cases: [string, () => string[], RegExp][] = [
    ["no --image", () => ["--cr3", "0"], /--image FILE is required/],
    ["a raw x86 image without --cr3", () => ["--image", tiny()], /--cr3 HEX is required: '.*' holds no QEMU CPU notes/],
    ["a raw arm64 image without --image-base", () => ["--arch", "arm64", "--image", tiny(), "--ttbr0", "0", "--ttbr1", "0", "--tcr", "0x80800000"], /--image-base HEX is required with --arch arm64 for a raw image/],
    ["--cpu with arm64", () => ["--arch", "arm64", "--image", tiny(), "--image-base", "0", "--ttbr0", "0", "--ttbr1", "0", "--tcr", "0", "--cpu", "0"], /--cpu is an option of --arch x86_64/],
    ["--cpu with --cr3", () => ["--image", tiny(), "--cr3", "0", "--cpu", "0"], /pass one or the other/],
    ["a bad --cpu", () => ["--image", tiny(), "--cpu", "x"], /--cpu must be a CPU index, not 'x'/],
    ["--user", () => ["--image", tiny(), "--cr3", "0", "--user"], /--user is an option of vmmu translate, not mappings/],
    ["an unknown option", () => ["--image", tiny(), "--cr3", "0", "--bogus"], /unknown option '--bogus'/],
    ["a missing image file", () => ["--image", path.join(tmp, "nope"), "--cr3", "0"], /cannot open image: .*ENOENT/],
  ];
  for (const [what, args, message] of cases) {
    it(`exits 2 with one line on stderr for ${what}`, () => {
      const r = vmmu(args());
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^vmmu mappings: [^\n]+\n$/);
      expect(r.stderr).toMatch(message);
    });
  }

  it("explains itself with --help, and vmmu lists it", () => {
    const r = vmmu(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/usage: vmmu mappings --arch x86_64 --image FILE/);
    expect(r.stdout).toMatch(/KERNEL and USER are the rights at CPL 0 \/ EL1 and CPL 3 \/ EL0/);
    const top = spawnSync(process.execPath, [CLI, "--help"], { encoding: "utf8" });
    expect(top.stdout).toMatch(/vmmu mappings --arch x86_64\|arm64 --image FILE/);
  });
});

describeRealworld("x86_64", "vmmu mappings on a raw image of the x86-64 real-Linux tables", () => {
  it("prints, for each vCPU's CR3, the ranges the library lists, in text and JSON", () => {
    const snap = loadX86Snapshot("nokaslr_4lvl_snap0");
    const file = path.join(tmp, "x86.img");
    writeSparseImage(file, snap.pages, Number(snap.ramSize));
    const image = openImageFile(file);
    for (const cpu of [0, 1]) {
      const v = vcpuOf(snap, cpu);
      const want = mappings({ arch: "x86_64", memory: image, root: v.cr3 });
      const regs = ["--cr3", hex(v.cr3), "--cr4", hex(v.cr4), "--efer", hex(v.efer)];
      const json = vmmu(["--image", file, ...regs, "--json"]);
      expect(json.code).toBe(0);
      expect(json.lines.map((l) => JSON.parse(l))).toEqual(want.map((m) => ({
        va: hex(m.va), end: hex(BigInt.asUintN(64, m.va + m.size)), size: hex(m.size), pa: hex(m.pa), kernel: m.rights.kernel, user: m.rights.user,
      })));
      const text = vmmu(["--image", file, ...regs]);
      expect(text.lines.length).toBe(want.length);
      expect(text.lines[0]).toMatch(/^[0-9a-f]{16}-[0-9a-f]{16} [0-9a-f]{16} [0-9a-f]{16} [-r][-w][-x] [-r][-w][-x]$/);
    }
  });
});

describeRealworld("arm64", "vmmu mappings on a raw image of the arm64 real-Linux tables", () => {
  it("lists the TTBR0 half, then the TTBR1 half, as the library does", () => {
    const snap = loadArm64Snapshot("nokaslr_snap0");
    const file = path.join(tmp, "arm64.img");
    writeSparseImage(file, snap.pages, Number(snap.ramSize), snap.ramBase);
    const image = openImageFile(file, { base: snap.ramBase });
    const v = snap.vcpus[1]!;
    const want = [0, 1].flatMap((ttbr) => mappings({ arch: "arm64", memory: image, root: ttbr ? v.ttbr1 : v.ttbr0, ttbr: ttbr as 0 | 1, tcr: v.tcr }));
    const r = vmmu(["--arch", "arm64", "--image", file, "--image-base", hex(snap.ramBase), "--ttbr0", hex(v.ttbr0), "--ttbr1", hex(v.ttbr1), "--tcr", hex(v.tcr), "--json"]);
    expect(r.code).toBe(0);
    expect(r.lines.map((l) => (JSON.parse(l) as { va: string }).va)).toEqual(want.map((m) => hex(m.va)));
    expect(want.some((m) => m.va >> 63n === 1n) && want.some((m) => m.va >> 63n === 0n)).toBe(true);
  });
});
