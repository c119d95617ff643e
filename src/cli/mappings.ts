// `vmmu mappings`: every mapped range of a guest memory image's page tables
// (raw or QEMU ELF core; src/forensics/image.ts), as QEMU's HMP `info mem`
// lists them but with the physical address and the rights of both privilege
// levels (src/forensics/mappings.ts). Registers as `vmmu translate` takes them;
// for an x86-64 QEMU core without --cr3, the CPU's registers in the core.

import { CR4, EFER } from "../x86/regs.js";
import { mappings, type Mapping } from "../forensics/mappings.js";
import type { AddressSpace } from "../forensics/space.js";
import type { FileImage } from "../forensics/file.js";
import { ImageError, MemoryImage } from "./image.js";
import { LineWriter, parseTranslateArgs, UsageError, type TranslateOptions } from "./translate.js";

const USAGE = "usage: vmmu mappings --arch x86_64 --image FILE [--image-base HEX] [--cr3 HEX [--cr4 HEX] [--efer HEX] | --cpu N] "
  + "[--max-phys-bits N] [--leaves] [--json]\n"
  + "       vmmu mappings --arch arm64 --image FILE [--image-base HEX] --ttbr0 HEX --ttbr1 HEX --tcr HEX [--leaves] [--json]";

const HELP = `${USAGE}

Lists every mapped range of the page tables in FILE, a raw guest-physical
memory image (QEMU pmemsave; its first byte is gpa --image-base, default 0,
required for arm64) or an ELF core (QEMU dump-guest-memory; detected). Like
QEMU's \`info mem\`, adjacent pages whose rights are equal are one range, here
only while their physical addresses are contiguous too. The debugger view:
present/valid and page-size bits decide; nothing is written.

x86_64: the tables of --cr3 (4-level, or 5-level when --cr4 has LA57; XD
  honoured when --efer has NXE: defaults as vmmu translate). Without --cr3, an
  x86_64 QEMU core gives CR3 and CR4 of CPU --cpu N (default 0) from its notes.
arm64: stage 1, 4 KiB granule: the TTBR0 half, then the TTBR1 half, each as
  TCR_EL1 says (TnSZ, TBI, EPD, HPD; TCR.HA+HD make DBM pages writable).

Output, one line per range (ascending VA):
  VA-START-VA-END SIZE PA KERNEL USER
  KERNEL and USER are the rights at CPL 0 / EL1 and CPL 3 / EL0, "rwx" with
  "-" for a right not granted, folded over every level of the walk.
--leaves: one line per leaf entry instead, with its level, gpa and value.
--json: one JSON object per line:
  {"va":"0x…","end":"0x…","size":"0x…","pa":"0x…","kernel":"rw-","user":"---"[,"level":N,"entryAddress":"0x…","entry":"0x…"]}

Exit status: 0, or 2 on a usage or image error.
`;

/** Options of one `vmmu mappings` run. */
export interface MappingsCliOptions {
  translate: TranslateOptions;
  json: boolean;
  leaves: boolean;
  /** x86_64 without --cr3: registers from the core's notes of this CPU. */
  cpu: number | undefined;
}

class HelpRequest extends Error {}

/** Parses the arguments after `mappings`. Throws UsageError on a mistake. */
export function parseMappingsArgs(args: string[]): MappingsCliOptions {
  const rest: string[] = [];
  let json = false, leaves = false, cpuText: string | undefined, help = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--json") json = true;
    else if (a === "--leaves") leaves = true;
    else if (a === "-h" || a === "--help") help = true;
    else if (a === "--cpu" || a.startsWith("--cpu=")) {
      cpuText = a === "--cpu" ? args[++i] : a.slice(6);
      if (cpuText === undefined) throw new UsageError("--cpu needs a value");
    } else rest.push(a);
  }
  if (help) throw new HelpRequest();
  for (const flag of ["--access", "--user", "--el", "--pan", "--sctlr"]) {
    if (rest.some((a) => a === flag || a.startsWith(flag + "="))) throw new UsageError(`${flag} is an option of vmmu translate, not mappings (mappings lists every range with its rights)`);
  }
  const hasCr3 = rest.some((a) => a === "--cr3" || a.startsWith("--cr3="));
  const arch = archOf(rest);
  const translate = parseTranslateArgs(arch === "x86_64" && !hasCr3 ? [...rest, "--cr3", "0"] : rest);
  if (translate.vas.length > 0) throw new UsageError(`unexpected argument '${translate.vas[0]}' (mappings takes no addresses)`);
  let cpu: number | undefined;
  if (cpuText !== undefined) {
    if (translate.arch !== "x86_64") throw new UsageError("--cpu is an option of --arch x86_64 (the registers in a QEMU core's notes)");
    if (hasCr3) throw new UsageError("--cpu picks the registers from the core; --cr3 gives them: pass one or the other");
    if (!/^\d+$/.test(cpuText)) throw new UsageError(`--cpu must be a CPU index, not '${cpuText}'`);
    cpu = Number(cpuText);
  }
  if (translate.arch === "x86_64" && !hasCr3) cpu ??= 0;
  return { translate, json, leaves, cpu };
}

function archOf(args: string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--arch") return args[i + 1] ?? "";
    if (args[i]!.startsWith("--arch=")) return args[i]!.slice(7);
  }
  return "x86_64";
}

/** Runs `vmmu mappings`. Returns 0, or 2 on a usage or image error (one line on stderr). */
export async function runMappings(args: string[]): Promise<number> {
  let opts: MappingsCliOptions;
  try {
    opts = parseMappingsArgs(args);
  } catch (err) {
    if (err instanceof HelpRequest) { process.stdout.write(HELP); return 0; }
    if (err instanceof UsageError) return fail(`${err.message} (try 'vmmu mappings --help')`);
    throw err;
  }
  const t = opts.translate;
  let backing: MemoryImage;
  try {
    backing = MemoryImage.open(t.image, t.imageBase, t.arch);
  } catch (err) {
    if (err instanceof ImageError) return fail(err.message);
    return fail(`cannot open image: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    let spaces: AddressSpace[];
    try {
      spaces = spacesOf(backing.image, opts);
    } catch (err) {
      if (err instanceof UsageError) return fail(err.message);
      throw err;
    }
    const out = new LineWriter(process.stdout);
    for (const space of spaces) {
      for (const m of mappings(space, { coalesce: !opts.leaves })) {
        out.push(opts.json ? jsonLine(m) : textLine(m));
        if (out.full) await out.flush();
        if (out.closed) return 0;
      }
    }
    await out.flush();
    return 0;
  } finally {
    backing.close();
  }
}

/** The address spaces to list: the x86 root, or both arm64 halves. */
function spacesOf(image: FileImage, opts: MappingsCliOptions): AddressSpace[] {
  const t = opts.translate;
  if (t.arch === "arm64") {
    return [0, 1].map((ttbr) => ({ arch: "arm64", memory: image, root: ttbr ? t.ttbr1 : t.ttbr0, ttbr: ttbr as 0 | 1, tcr: t.tcr }));
  }
  let { cr3, cr4 } = t;
  if (opts.cpu !== undefined) {
    const c = image.cpus[opts.cpu];
    if (c === undefined) {
      throw new UsageError(image.cpus.length === 0
        ? `--cr3 HEX is required: '${t.image}' holds no QEMU CPU notes`
        : `--cpu ${opts.cpu}: the core holds CPUs 0..${image.cpus.length - 1}`);
    }
    cr3 = c.cr3;
    cr4 = c.cr4;
  }
  return [{
    arch: "x86_64", memory: image, root: cr3, la57: (cr4 & CR4.LA57) !== 0n, nxe: (t.efer & EFER.NXE) !== 0n,
    maxPhysAddrBits: t.maxPhysAddrBits,
  }];
}

const h16 = (v: bigint): string => v.toString(16).padStart(16, "0");

function textLine(m: Mapping): string {
  const head = `${h16(m.va)}-${h16(BigInt.asUintN(64, m.va + m.size))} ${h16(m.size)} ${h16(m.pa)} ${m.rights.kernel} ${m.rights.user}`;
  return m.leaf ? `${head} L${m.leaf.level} ${h16(m.leaf.entryAddress)} ${h16(m.leaf.value)}` : head;
}

function jsonLine(m: Mapping): string {
  const x = (v: bigint): string => `"0x${v.toString(16)}"`;
  const head = `{"va":${x(m.va)},"end":${x(BigInt.asUintN(64, m.va + m.size))},"size":${x(m.size)},"pa":${x(m.pa)},"kernel":"${m.rights.kernel}","user":"${m.rights.user}"`;
  return m.leaf ? `${head},"level":${m.leaf.level},"entryAddress":${x(m.leaf.entryAddress)},"entry":${x(m.leaf.value)}}` : `${head}}`;
}

function fail(message: string): number {
  process.stderr.write(`vmmu mappings: ${message}\n`);
  return 2;
}
