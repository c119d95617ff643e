// A memory image on disk for the CLI: a raw guest-physical image (QEMU
// `pmemsave`: byte i is gpa base + i; base 0 for an x86 PC, 0x40000000 for
// arm64 `-M virt`) or a QEMU `dump-guest-memory` ELF core (its PT_LOAD
// segments carry their gpas), detected by src/forensics/image.ts. For the
// wasm walker it is paged into a machine one 4 KiB frame at a time through
// the core's populate hook (assembly/phys.ts), so multi-GiB images are never
// read whole; holes between an ELF core's segments read as zero there.

import type { GuestMemory } from "../memory.js";
import { openImageFile, type FileImage } from "../forensics/file.js";

/** An image the CLI cannot use as asked: reported as one line, exit 2. */
export class ImageError extends Error {}

/** An open image; pass `populate` to createMachine at `ramBase`/`memoryBytes`, then `attach` the machine's memory. */
export class MemoryImage {
  /** Frames read so far (backed or found all zero). */
  framesRead = 0;
  private memory?: GuestMemory;
  private readonly zeroFrames = new Set<number>();

  private constructor(readonly image: FileImage) {}

  /**
   * Opens `path` (format detected). `base` is the gpa of a raw image's first
   * byte (default 0; required for a raw image when `arch` is arm64); an ELF
   * core takes none and must be of `arch` when it is given. Throws the fs error if the
   * file is unreadable, an ImageError if it does not fit.
   */
  static open(path: string, base: bigint | undefined, arch?: "x86_64" | "arm64"): MemoryImage {
    let image: FileImage;
    try {
      image = openImageFile(path, { format: "auto", cachePages: 0 });
    } catch (err) {
      if (err instanceof RangeError || err instanceof TypeError) throw new ImageError(err.message.replace(/^vmmu: openImage: /, `'${path}': `));
      throw err;
    }
    const fail = (why: string): never => { image.close(); throw new ImageError(why); };
    if (image.format === "elf") {
      if (base !== undefined) fail(`--image-base applies to raw images; '${path}' is an ELF core, whose segments carry their physical addresses`);
      if (arch !== undefined && image.arch !== arch) fail(`'${path}' is an ${image.arch === "arm64" ? "aarch64" : image.arch} core, not ${arch} (--arch ${image.arch})`);
    } else {
      if (base === undefined && arch === "arm64") fail("--image-base HEX is required with --arch arm64 for a raw image (arm64 RAM usually starts at 0x40000000)");
      const b = base ?? 0n;
      if (b !== 0n) {
        image.close();
        image = openImageFile(path, { format: "raw", base: b, cachePages: 0 });
      }
    }
    return new MemoryImage(image);
  }

  /** "raw" or "elf". */
  get format(): "raw" | "elf" {
    return this.image.format;
  }

  /** gpa of the machine's RAM slot: the raw base, or the core's lowest segment. */
  get ramBase(): bigint {
    return this.image.lowGpa;
  }

  /** RAM size for the machine: from ramBase to the end of the highest range, 4 KiB aligned. */
  get memoryBytes(): bigint {
    return this.image.highGpa - this.image.lowGpa;
  }

  /** Binds the machine memory the hook writes frames into. */
  attach(memory: GuestMemory): void {
    this.memory = memory;
  }

  /**
   * The populate hook: reads the frame at `slotOffset` from the image (zero
   * outside its ranges) and, unless it is all zero, writes it into guest RAM.
   * Zero frames are remembered and never read again.
   */
  readonly populate = (slotOffset: bigint): void => {
    const memory = this.memory;
    if (!memory) return;
    const frame = Number(slotOffset >> 12n);
    if (this.zeroFrames.has(frame)) return;
    const gpa = this.ramBase + slotOffset;
    const page = this.image.page(gpa >> 12n);
    this.framesRead++;
    if (isZero(new Int32Array(page.buffer, page.byteOffset, 1024))) {
      this.zeroFrames.add(frame);
      return;
    }
    memory.write(gpa, page);
  };

  /** Closes the file. */
  close(): void {
    this.image.close();
  }
}

function isZero(words: Int32Array): boolean {
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  return true;
}
