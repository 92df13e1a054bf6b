// Waiting for something to hold, with a deadline: tests poll instead of sleeping a guessed time.

export interface UntilOptions {
  /** Between two probes (default 200 ms). */
  everyMs?: number;
  /** What would explain a time-out (a child process's output, say), appended to the error. */
  explain?: () => string;
}

/**
 * Polls until `probe` returns a value (anything but undefined) and returns it. A probe that throws counts
 * as "not yet"; at the deadline the error names what was awaited and the probe's last error.
 */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  options: UntilOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, options.everyMs ?? 200));
  }
  const cause = lastError ? `: ${(lastError as Error).message}` : '';
  throw new Error(`timed out waiting for ${what}${cause}${options.explain ? `; ${options.explain()}` : ''}`);
}
