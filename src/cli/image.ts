// A raw guest-physical memory image on disk (QEMU `pmemsave` format: byte i
// is gpa base + i; base 0 for an x86 PC, 0x40000000 for arm64 `-M virt`),
// paged into a machine of either architecture one 4 KiB frame at a time
// through the core's populate hook (assembly/phys.ts), so multi-GiB images
// are never read whole.

import * as fs from "node:fs";
import type { GuestMemory } from "../memory.js";

const FRAME = 4096;

/** An open memory image; pass `populate` to createMachine, then `attach` the machine's memory. */
export class MemoryImage {
  /** File size in bytes. */
  readonly size: bigint;
  /** Frames read so far (backed or found all zero). */
  framesRead = 0;
  private memory?: GuestMemory;
  private readonly zeroFrames = new Set<number>();
  private readonly buf = new Uint8Array(FRAME);
  private readonly words = new Int32Array(this.buf.buffer);

  private constructor(private fd: number, readonly path: string, readonly base: bigint) {
    this.size = BigInt(fs.fstatSync(fd).size);
  }

  /** Opens `path` read-only as the image of guest RAM starting at gpa `base`. Throws the fs error if unreadable. */
  static open(path: string, base: bigint): MemoryImage {
    const fd = fs.openSync(path, "r");
    try {
      if (!fs.fstatSync(fd).isFile()) throw new Error(`${path} is not a regular file`);
      return new MemoryImage(fd, path, base);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** RAM size for the machine: the file size rounded up to 4 KiB. */
  get memoryBytes(): bigint {
    return (this.size + 0xfffn) & ~0xfffn;
  }

  /** Binds the machine memory the hook writes frames into. */
  attach(memory: GuestMemory): void {
    this.memory = memory;
  }

  /**
   * The populate hook: reads the frame at `slotOffset` from the file and, unless
   * it is all zero, writes it into guest RAM. A short read at the end of the
   * file is zero-padded. Zero frames are remembered and never read again.
   */
  readonly populate = (slotOffset: bigint): void => {
    const memory = this.memory;
    if (!memory) return;
    const frame = Number(slotOffset >> 12n);
    if (this.zeroFrames.has(frame)) return;
    const buf = this.buf;
    let got = 0;
    while (got < FRAME) {
      const n = fs.readSync(this.fd, buf, got, FRAME - got, frame * FRAME + got);
      if (n === 0) break;
      got += n;
    }
    buf.fill(0, got);
    this.framesRead++;
    if (isZero(this.words)) {
      this.zeroFrames.add(frame);
      return;
    }
    memory.write(this.base + slotOffset, buf);
  };

  /** Closes the file. */
  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

function isZero(words: Int32Array): boolean {
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}
