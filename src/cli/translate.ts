// `vmmu translate`: virtual-to-physical translation over a raw guest memory
// image and a set of control registers, one JSON line per address. The default
// is the debugger view (QEMU HMP gva2gpa: P and PS only, Intel SDM Vol.3A
// §4.5); `--access` walks as the CPU would (§4.6 rights, §4.7 error codes)
// without writing accessed/dirty bits.

import { createMachine, type Machine } from "../machine.js";
import { CR0, CR4, EFER, type X86Access } from "../x86/regs.js";
import type { X86TranslateResult, X86Vcpu } from "../x86/vcpu.js";
import { MemoryImage } from "./image.js";

const USAGE = "usage: vmmu translate --arch x86_64 --image FILE [--image-base HEX] --cr3 HEX "
  + "[--cr0 HEX] [--cr4 HEX] [--efer HEX] [--access read|write|fetch [--user]] [--max-phys-bits N] [VA ...]";

const HELP = `${USAGE}

Translates each VA (hex, 0x optional; one per line on stdin if none are given)
over FILE, a raw guest-physical memory image such as QEMU's pmemsave writes,
whose first byte is gpa --image-base (default 0). Prints one JSON line per VA:
  {"va":"0x…","pa":"0x…"|null,"pageSize":N|null,"fault":null|{"vector","errorCode","level","kind"[,"gpa"]}}
Default: the debugger view (present and page-size bits only, like QEMU gva2gpa).
--access read|write|fetch [--user]: check rights as the CPU would (CPL 3 with
--user); accessed/dirty bits are never written.
Defaults: --cr0 0x80010001 (PE|WP|PG), --cr4 0x20 (PAE), --efer 0xd00 (LME|LMA|NXE),
--max-phys-bits 52. A line that is not an address gets an "error" field.
Exit status: 0, 1 if any input line was not an address, 2 on a usage or image error.
`;

/** Options of one `vmmu translate` run. */
export interface TranslateOptions {
  image: string;
  imageBase: bigint;
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  /** Rights-checked walk for this access; undefined = debugger view. */
  access?: X86Access;
  user: boolean;
  maxPhysAddrBits: number;
  /** Addresses from the command line; empty = read stdin. */
  vas: string[];
}

/** A command-line mistake: reported as one line with exit code 2. */
export class UsageError extends Error {}

class HelpRequest extends Error {}

const HEX64 = /^(?:0x)?([0-9a-f]{1,16})$/i;

/** Parses a 64-bit hex number, `0x` optional (leading zeros beyond 16 digits are fine). Undefined if it is not one. */
export function parseHex64(text: string): bigint | undefined {
  const m = HEX64.exec(text.replace(/^(0x)?0+(?=[0-9a-f])/i, "$1"));
  return m ? BigInt("0x" + m[1]) : undefined;
}

const VALUE_FLAGS = new Set(["--arch", "--image", "--image-base", "--cr0", "--cr3", "--cr4", "--efer", "--access", "--max-phys-bits"]);

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

  const arch = values.get("--arch") ?? "x86_64";
  if (arch !== "x86_64") throw new UsageError(`--arch '${arch}' is not supported (x86_64 is)`);
  const image = values.get("--image");
  if (image === undefined || image === "") throw new UsageError("--image FILE is required");
  const cr3 = hexOpt("--cr3");
  if (cr3 === undefined) throw new UsageError("--cr3 HEX is required");
  const imageBase = hexOpt("--image-base", 0n)!;
  if ((imageBase & 0xfffn) !== 0n) throw new UsageError(`--image-base 0x${imageBase.toString(16)} is not 4 KiB aligned`);

  const accessText = values.get("--access");
  let access: X86Access | undefined;
  if (accessText !== undefined) {
    if (accessText !== "read" && accessText !== "write" && accessText !== "fetch") {
      throw new UsageError(`--access must be read, write or fetch, not '${accessText}'`);
    }
    access = accessText;
  } else if (user) {
    throw new UsageError("--user needs --access (the debugger view checks no rights)");
  }

  const physText = values.get("--max-phys-bits");
  const maxPhysAddrBits = physText === undefined ? 52 : Number(physText);
  if (!/^\d+$/.test(physText ?? "52") || maxPhysAddrBits < 36 || maxPhysAddrBits > 52) {
    throw new UsageError(`--max-phys-bits must be an integer in 36..52, not '${physText}'`);
  }

  return {
    image, imageBase, cr3, user, access, maxPhysAddrBits, vas,
    cr0: hexOpt("--cr0", CR0.PE | CR0.WP | CR0.PG)!,
    cr4: hexOpt("--cr4", CR4.PAE)!,
    efer: hexOpt("--efer", EFER.LME | EFER.LMA | EFER.NXE)!,
  };
}

/**
 * Runs `vmmu translate`. Returns 0, 1 if some input line was not an address,
 * or 2 on a usage or image error (reported as one line on stderr).
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
    image = MemoryImage.open(opts.image, opts.imageBase);
  } catch (err) {
    return fail(`cannot open image: ${err instanceof Error ? err.message : String(err)}`);
  }
  try {
    if (image.size === 0n) return fail(`image '${opts.image}' is empty`);
    let machine: Machine<X86Vcpu>;
    try {
      machine = await createMachine({
        arch: "x86_64",
        memoryBytes: image.memoryBytes,
        ramBase: opts.imageBase,
        maxPhysAddrBits: opts.maxPhysAddrBits,
        eagerBytes: 0n,
        tlbEntries: 16,
        populate: image.populate,
      });
      image.attach(machine.memory);
      machine.vcpu(0).setControl({ cr0: opts.cr0, cr3: opts.cr3, cr4: opts.cr4, efer: opts.efer });
    } catch (err) {
      return fail(err instanceof Error ? err.message.replace(/^vmmu: /, "") : String(err));
    }
    return await translateAll(machine, opts);
  } finally {
    image.close();
  }
}

function fail(message: string): number {
  process.stderr.write(`vmmu translate: ${message}\n`);
  return 2;
}

async function translateAll(machine: Machine<X86Vcpu>, opts: TranslateOptions): Promise<number> {
  const vcpu = machine.vcpu(0);
  const { access, user } = opts;
  const translate: (va: bigint) => X86TranslateResult = access === undefined
    ? (va) => vcpu.peek(va)
    : (va) => vcpu.walk(va, access, user, { setAD: false });
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
      out.push(formatResult(va, translate(va)));
    }
  };

  if (opts.vas.length > 0) {
    for (const v of opts.vas) {
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
  return bad > 0 ? 1 : 0;
}

/** One output line (no newline) for the translation of `va`. */
export function formatResult(va: bigint, r: X86TranslateResult): string {
  const head = `{"va":"0x${va.toString(16)}",`;
  if ("pa" in r) return `${head}"pa":"0x${r.pa.toString(16)}","pageSize":${r.pageSize},"fault":null}`;
  const f = r.fault;
  const gpa = f.gpa !== undefined && f.kind === "abort" ? `,"gpa":"0x${f.gpa.toString(16)}"` : "";
  return `${head}"pa":null,"pageSize":null,"fault":{"vector":${f.vector},"errorCode":${f.errorCode},"level":${f.level},"kind":"${f.kind}"${gpa}}}`;
}

/** Buffers lines and writes them in chunks, honouring backpressure; stops quietly on EPIPE. */
class LineWriter {
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
