// The disposed flag one machine shares with its memory and vCPUs: one object,
// read at the top of each public call, so a call after Machine.dispose() is a
// clear error rather than a use of released wasm instances.

/** The message of every call on a disposed machine, its memory or its vCPUs. */
export const DISPOSED_MESSAGE = "vmmu: machine is disposed";

export class Lifetime {
  disposed = false;

  /** Throws `vmmu: machine is disposed` once the machine has been disposed. */
  check(): void {
    if (this.disposed) throw new Error(DISPOSED_MESSAGE);
  }
}

/**
 * Stands in for a released wasm instance's exports: every export is a
 * function that throws the disposed error, so no path can reach the
 * released instance (or keep it alive).
 */
export const DISPOSED_EXPORTS: never = new Proxy({}, {
  get: () => () => { throw new Error(DISPOSED_MESSAGE); },
}) as never;
