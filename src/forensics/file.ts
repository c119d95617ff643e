// Node-only: a memory image file opened for openImage() (image.ts), read with
// positional reads one page at a time, never whole. Used by the CLI; the
// library bundle stays free of Node builtins (README "Memory forensics and
// debuggers" shows the same three lines for an embedder).

import * as fs from "node:fs";
import { openImage, type MemoryImage, type OpenImageOptions } from "./image.js";

/** A MemoryImage over an open file, with the file's path and close(). */
export interface FileImage extends MemoryImage {
  readonly path: string;
  /** Closes the file; reads after it throw. */
  close(): void;
}

/** Opens `path` read-only as a memory image (format detected as openImage does). Throws the fs error if unreadable. */
export function openImageFile(path: string, opts: OpenImageOptions = {}): FileImage {
  const fd = fs.openSync(path, "r");
  let open = true;
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    const image = openImage({
      size: st.size,
      read(offset, out) {
        if (!open) throw new Error(`vmmu: image ${path} is closed`);
        return fs.readSync(fd, out, 0, out.length, offset);
      },
    }, opts) as FileImage;
    Object.defineProperties(image, {
      path: { value: path },
      close: { value: () => { if (open) { open = false; fs.closeSync(fd); } } },
    });
    return image;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
