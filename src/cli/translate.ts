// `vmmu translate`: virtual-to-physical translation over a guest memory image
// (raw, or a QEMU ELF core: src/cli/image.ts) and a set of system registers,
// one JSON line per address.
// x86_64: the default is the debugger view (QEMU HMP gva2gpa: P and PS only,
// Intel SDM Vol.3A §4.5); `--access` walks as the CPU would (§4.6 rights,
// §4.7 error codes) without writing accessed/dirty bits.
// arm64: stage 1 of the EL1&0 regime, 4 KiB granule (Arm ARM DDI 0487 D8,
// docs/arm64-walk-contract.md); the default is QEMU's gva2gpa, a data read at
// the given EL and PSTATE.PAN; `--access` walks for that access without
// hardware Access-flag or dirty-state updates. Stage 2 is off.

import { createMachine, type Machine } from "../machine.js";
import { CR0, CR4, EFER, type X86Access } from "../x86/regs.js";
import type { X86TranslateResult, X86Vcpu } from "../x86/vcpu.js";
import type { Arm64Access } from "../arm64/regs.js";
import type { Arm64TranslateResult, Arm64Vcpu } from "../arm64/vcpu.js";
import { ImageError, MemoryImage } from "./image.js";

const USAGE = "usage: vmmu translate --arch x86_64 --image FILE [--image-base HEX] --cr3 HEX "
  + "[--cr0 HEX] [--cr4 HEX] [--efer HEX] [--access read|write|fetch [--user]] [--max-phys-bits N] [VA ...]\n"
  + "       vmmu translate --arch arm64 --image FILE --image-base HEX --ttbr0 HEX --ttbr1 HEX --tcr HEX "
  + "[--sctlr HEX] [--el 0|1] [--pan 0|1] [--access read|write|fetch] [VA ...]";

const HELP = `${USAGE}

Translates each VA (hex, 0x optional; one per line on stdin if none are given)
over FILE, a raw guest-physical memory image such as QEMU's pmemsave writes,
whose first byte is gpa --image-base (x86_64 default 0; required for arm64,
whose RAM usually starts at 0x40000000), or an ELF core such as QEMU's
dump-guest-memory writes (detected; its segments carry their physical
addresses, so no --image-base). Prints one JSON line per VA.

x86_64:
  {"va":"0x…","pa":"0x…"|null,"pageSize":N|null,"fault":null|{"vector","errorCode","level","kind"[,"gpa"]}}
  Default: the debugger view (present and page-size bits only, like QEMU gva2gpa).
  --access read|write|fetch [--user]: check rights as the CPU would (CPL 3 with
  --user); accessed/dirty bits are never written.
  Defaults: --cr0 0x80010001 (PE|WP|PG), --cr4 0x20 (PAE), --efer 0xd00 (LME|LMA|NXE),
  --max-phys-bits 52.

arm64 (stage 1 of the EL1&0 regime, 4 KiB granule; stage 2 off):
  {"va":"0x…","pa":"0x…"|null,"pageSize":N|null,"fault":null|{"stage","fsc","level","kind","s1ptw","write"}}
  Default: the debugger view, like QEMU gva2gpa: a data read at EL1 with PAN=0,
  which no descriptor's permissions refuse; --el 0|1 and --pan 0|1 alone make it
  a debugger read at that EL and PSTATE.PAN (EL0 sees only EL0-readable pages and
  no TTBR1 address under TCR.E0PD1; EL1 with PAN=1 no EL0-accessible page).
  --access read|write|fetch [--el 0|1] [--pan 0|1]: check the rights of that
  access at that EL and PAN (default EL1, PAN=0); the Access flag and dirty
  state are never written. --sctlr defaults to 0x1 (M).

A line that is not an address gets an "error" field.
Exit status: 0, or 2 on a usage or image error or if any input line was not
an address (every other line is still translated).
`;

interface CommonOptions {
  image: string;
  /** gpa of a raw image's first byte; undefined: 0 on x86_64, required for a raw arm64 image, none for an ELF core. */
  imageBase: bigint | undefined;
  /** Addresses from the command line; empty = read stdin. */
  vas: string[];
}

/** Options of one `vmmu translate --arch x86_64` run. */
export interface X86TranslateOptions extends CommonOptions {
  arch: "x86_64";
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  /** Rights-checked walk for this access; undefined = debugger view. */
  access?: X86Access;
  user: boolean;
  maxPhysAddrBits: number;
}

/** Options of one `vmmu translate --arch arm64` run. */
export interface Arm64TranslateOptions extends CommonOptions {
  arch: "arm64";
  ttbr0: bigint;
  ttbr1: bigint;
  tcr: bigint;
  sctlr: bigint;
  /** Rights-checked walk for this access; undefined = debugger view (a data read). */
  access?: Arm64Access;
  /** The access is at EL0 (else EL1). */
  el0: boolean;
  /** PSTATE.PAN. */
  pan: boolean;
}

/** Options of one `vmmu translate` run. */
export type TranslateOptions = X86TranslateOptions | Arm64TranslateOptions;

/** A command-line mistake: reported as one line with exit code 2. */
export class UsageError extends Error {}

class HelpRequest extends Error {}

const HEX64 = /^(?:0x)?([0-9a-f]{1,16})$/i;

/** Parses a 64-bit hex number, `0x` optional (leading zeros beyond 16 digits are fine). Undefined if it is not one. */
export function parseHex64(text: string): bigint | undefined {
  const m = HEX64.exec(text.replace(/^(0x)?0+(?=[0-9a-f])/i, "$1"));
  return m ? BigInt("0x" + m[1]) : undefined;
}

const X86_FLAGS = ["--cr0", "--cr3", "--cr4", "--efer", "--max-phys-bits"];
const ARM64_FLAGS = ["--ttbr0", "--ttbr1", "--tcr", "--sctlr", "--el", "--pan"];
const VALUE_FLAGS = new Set(["--arch", "--image", "--image-base", "--access", ...X86_FLAGS, ...ARM64_FLAGS]);

/** Parses the arguments after `translate`. Throws UsageError on a mistake. */
export function parseTranslateArgs(args: string[]): TranslateOptions {
  const values = new Map<string, string>();
  const vas: string[] = [];
  let user = false;
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") { vas.push(...args.slice(i + 1)); break; }
    if (!arg.startsWith("-") || arg === "-") { vas.push(arg); continue; }
    const eq = arg.indexOf("=");
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (flag === "--user" && eq < 0) { user = true; continue; }
    if ((flag === "-h" || flag === "--help") && eq < 0) { help = true; continue; }
    if (!VALUE_FLAGS.has(flag)) throw new UsageError(`unknown option '${flag}'`);
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else value = args[++i];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (values.has(flag)) throw new UsageError(`${flag} given twice`);
    values.set(flag, value);
  }
  if (help) throw new HelpRequest();

  const hexOpt = (flag: string, fallback?: bigint): bigint | undefined => {
    const text = values.get(flag);
    if (text === undefined) return fallback;
    const v = parseHex64(text.trim());
    if (v === undefined) throw new UsageError(`${flag}: '${text}' is not a 64-bit hex number`);
    return v;
  };
  const required = (flag: string, why = ""): bigint => {
    const v = hexOpt(flag);
    if (v === undefined) throw new UsageError(`${flag} HEX is required${why}`);
    return v;
  };

  const arch = values.get("--arch") ?? "x86_64";
  if (arch !== "x86_64" && arch !== "arm64") throw new UsageError(`--arch '${arch}' is not supported (x86_64, arm64 are)`);
  const other = arch === "arm64" ? "x86_64" : "arm64";
  const stray = (arch === "arm64" ? X86_FLAGS : ARM64_FLAGS).find((flag) => values.has(flag));
  if (stray !== undefined) throw new UsageError(`${stray} is an option of --arch ${other}, not ${arch}`);
  if (arch === "arm64" && user) throw new UsageError("--user is an option of --arch x86_64, not arm64 (use --el 0)");

  const image = values.get("--image");
  if (image === undefined || image === "") throw new UsageError("--image FILE is required");

  const accessText = values.get("--access");
  if (accessText !== undefined && accessText !== "read" && accessText !== "write" && accessText !== "fetch") {
    throw new UsageError(`--access must be read, write or fetch, not '${accessText}'`);
  }
  const access = accessText as "read" | "write" | "fetch" | undefined;

  if (arch === "arm64") {
    const imageBase = hexOpt("--image-base");
    checkImageBase(imageBase);
    const bit = (flag: string, fallback: boolean): boolean => {
      const text = values.get(flag);
      if (text === undefined) return fallback;
      if (text !== "0" && text !== "1") throw new UsageError(`${flag} must be 0 or 1, not '${text}'`);
      return text === "1";
    };
    return {
      arch, image, imageBase, access, vas,
      ttbr0: required("--ttbr0"),
      ttbr1: required("--ttbr1"),
      tcr: required("--tcr"),
      sctlr: hexOpt("--sctlr", 1n)!,
      el0: !bit("--el", true),
      pan: bit("--pan", false),
    };
  }

  const cr3 = required("--cr3");
  const imageBase = hexOpt("--image-base");
  checkImageBase(imageBase);
  if (access === undefined && user) throw new UsageError("--user needs --access (the debugger view checks no rights)");

  const physText = values.get("--max-phys-bits");
  const maxPhysAddrBits = physText === undefined ? 52 : Number(physText);
  if (!/^\d+$/.test(physText ?? "52") || maxPhysAddrBits < 36 || maxPhysAddrBits > 52) {
    throw new UsageError(`--max-phys-bits must be an integer in 36..52, not '${physText}'`);
  }

  return {
    arch, image, imageBase, cr3, user, access, maxPhysAddrBits, vas,
    cr0: hexOpt("--cr0", CR0.PE | CR0.WP | CR0.PG)!,
    cr4: hexOpt("--cr4", CR4.PAE)!,
    efer: hexOpt("--efer", EFER.LME | EFER.LMA | EFER.NXE)!,
  };
}

function checkImageBase(imageBase: bigint | undefined): void {
  if (imageBase !== undefined && (imageBase & 0xfffn) !== 0n) throw new UsageError(`--image-base 0x${imageBase.toString(16)} is not 4 KiB aligned`);
}

/**
 * Runs `vmmu translate`. Returns 0, or 2 on a usage or image error (reported
 * as one line on stderr) or when some input line was not an address.
 */
export async function runTranslate(args: string[]): Promise<number> {
  let opts: TranslateOptions;
  try {
    opts = parseTranslateArgs(args);
  } catch (err) {
    if (err instanceof HelpRequest) { process.stdout.write(HELP); return 0; }
    if (err instanceof UsageError) return fail(`${err.message} (try 'vmmu translate --help')`);
    throw err;
  }

  let image: MemoryImage;
  try {
    image = MemoryImage.open(opts.image, opts.imageBase, opts.arch);
  } catch (err) {
    if (err instanceof ImageError) return fail(err.message);
    return fail(`cannot open image: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    let translate: (va: bigint) => string;
    try {
      translate = opts.arch === "arm64" ? await arm64Translator(image, opts) : await x86Translator(image, opts);
    } catch (err) {
      return fail(err instanceof Error ? err.message.replace(/^vmmu: /, "") : String(err));
    }
    return await translateAll(translate, opts.vas);
  } finally {
    image.close();
  }
}

function fail(message: string): number {
  process.stderr.write(`vmmu translate: ${message}\n`);
  return 2;
}

const IMAGE_MACHINE = { eagerBytes: 0n, tlbEntries: 16 } as const;

async function x86Translator(image: MemoryImage, opts: X86TranslateOptions): Promise<(va: bigint) => string> {
  const machine: Machine<X86Vcpu> = await createMachine({
    arch: "x86_64", memoryBytes: image.memoryBytes, ramBase: image.ramBase, maxPhysAddrBits: opts.maxPhysAddrBits,
    populate: image.populate, ...IMAGE_MACHINE,
  });
  image.attach(machine.memory);
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ cr0: opts.cr0, cr3: opts.cr3, cr4: opts.cr4, efer: opts.efer });
  const { access, user } = opts;
  return access === undefined
    ? (va) => formatResult(va, vcpu.peek(va))
    : (va) => formatResult(va, vcpu.walk(va, access, user, { setAD: false }));
}

async function arm64Translator(image: MemoryImage, opts: Arm64TranslateOptions): Promise<(va: bigint) => string> {
  const machine: Machine<Arm64Vcpu> = await createMachine({
    arch: "arm64", memoryBytes: image.memoryBytes, ramBase: image.ramBase, populate: image.populate, ...IMAGE_MACHINE,
  });
  image.attach(machine.memory);
  const vcpu = machine.vcpu(0);
  vcpu.setSystemRegisters({ ttbr0: opts.ttbr0, ttbr1: opts.ttbr1, tcr: opts.tcr, sctlr: opts.sctlr, pan: opts.pan });
  const { access, el0, pan } = opts;
  return access === undefined
    ? (va) => formatArm64Result(va, vcpu.peek(va, { el0, pan }))
    : (va) => formatArm64Result(va, vcpu.walk(va, access, el0, { update: false }));
}

async function translateAll(translate: (va: bigint) => string, vas: string[]): Promise<number> {
  const out = new LineWriter(process.stdout);
  let bad = 0;
  const line = (text: string): void => {
    const t = text.trim();
    if (t === "") return;
    const va = parseHex64(t);
    if (va === undefined) {
      bad++;
      out.push(`{"va":${JSON.stringify(t)},"pa":null,"pageSize":null,"fault":null,"error":"not a 64-bit hex address"}`);
    } else {
      out.push(translate(va));
    }
  };

  if (vas.length > 0) {
    for (const v of vas) {
      line(v);
      if (out.full) await out.flush();
      if (out.closed) break;
    }
  } else {
    let rest = "";
    process.stdin.setEncoding("utf8");
    for await (const chunk of process.stdin as AsyncIterable<string>) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const l of lines) line(l);
      if (out.full) await out.flush();
      if (out.closed) break;
    }
    line(rest);
  }
  await out.flush();
  return bad > 0 ? 2 : 0;
}

/** One output line (no newline) for the x86-64 translation of `va`. */
export function formatResult(va: bigint, r: X86TranslateResult): string {
  const head = `{"va":"0x${va.toString(16)}",`;
  if ("pa" in r) return `${head}"pa":"0x${r.pa.toString(16)}","pageSize":${r.pageSize},"fault":null}`;
  const f = r.fault;
  const gpa = f.gpa !== undefined && f.kind === "abort" ? `,"gpa":"0x${f.gpa.toString(16)}"` : "";
  return `${head}"pa":null,"pageSize":null,"fault":{"vector":${f.vector},"errorCode":${f.errorCode},"level":${f.level},"kind":"${f.kind}"${gpa}}}`;
}

/** One output line (no newline) for the arm64 translation of `va`; "ipa" only on stage-2 faults. */
export function formatArm64Result(va: bigint, r: Arm64TranslateResult): string {
  const head = `{"va":"0x${va.toString(16)}",`;
  if ("pa" in r) return `${head}"pa":"0x${r.pa.toString(16)}","pageSize":${r.pageSize},"fault":null}`;
  const f = r.fault;
  const ipa = f.stage === 2 && f.ipa !== undefined ? `,"ipa":"0x${f.ipa.toString(16)}"` : "";
  return `${head}"pa":null,"pageSize":null,"fault":{"stage":${f.stage},"fsc":${f.fsc},"level":${f.level},"kind":"${f.kind}",`
    + `"s1ptw":${f.s1ptw},"write":${f.write}${ipa}}}`;
}

/** Buffers lines and writes them in chunks, honouring backpressure; stops quietly on EPIPE. */
export class LineWriter {
  private buf = "";
  private error?: Error;
  closed = false;

  constructor(private readonly stream: NodeJS.WriteStream, private readonly chunk = 1 << 16) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      this.closed = true;
      if (err.code !== "EPIPE") this.error = err;
    });
  }

  /** True when the buffer holds a chunk's worth of output. */
  get full(): boolean {
    return this.buf.length >= this.chunk;
  }

  push(line: string): void {
    this.buf += line + "\n";
  }

  async flush(): Promise<void> {
    const text = this.buf;
    this.buf = "";
    if (text !== "" && !this.closed && !this.stream.write(text)) {
      const stream = this.stream;
      await new Promise<void>((resolve) => {
        const done = (): void => { stream.off("drain", done); stream.off("close", done); resolve(); };
        stream.on("drain", done);
        stream.on("close", done);
      });
    }
    if (this.error) throw this.error;
  }
}
