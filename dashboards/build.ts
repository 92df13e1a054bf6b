// The front end's build: esbuild bundles dashboards/frontend into dashboards/dist (git-ignored, like every dist/). The
// server calls ensureFrontendBuilt() at start, so `npm start` and `npm test` build it when it is missing
// or older than its sources, and no third command is needed. `tsx dashboards/build.ts [--force]` builds it
// alone; the app builds it before it listens, so no page ever waits for one.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

export const FRONTEND_DIR = join(import.meta.dirname, 'frontend');
export const BUILD_DIR = join(import.meta.dirname, 'dist');
const OUTPUTS = ['app.js', 'app.css'];

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

export interface BuildReport {
  built: boolean;
  /** Bytes per output file (minified, before compression). */
  bytes: Record<string, number>;
}

let pending: Promise<BuildReport> | undefined;

/** Builds the bundle when missing or stale; concurrent callers in one process share one build. */
export function ensureFrontendBuilt(force = false): Promise<BuildReport> {
  pending ??= buildIfStale(force).finally(() => {
    pending = undefined;
  });
  return pending;
}

async function buildIfStale(force: boolean): Promise<BuildReport> {
  const outputs = OUTPUTS.map((name) => join(BUILD_DIR, name));
  const fresh =
    !force &&
    outputs.every((path) => existsSync(path)) &&
    Math.min(...outputs.map((p) => statSync(p).mtimeMs)) >= newestSource(FRONTEND_DIR);
  if (!fresh) {
    mkdirSync(BUILD_DIR, { recursive: true });
    await build({
      // main.ts imports app.css, so esbuild writes app.css beside app.js.
      entryPoints: { app: join(FRONTEND_DIR, 'main.ts') },
      outdir: BUILD_DIR,
      bundle: true,
      minify: true,
      format: 'esm',
      target: 'es2020',
      sourcemap: false,
      legalComments: 'none',
      logLevel: 'silent',
    }).catch((error: Error) => {
      throw new Error(`dashboards: the front end did not build: ${error.message}`);
    });
  }
  return { built: !fresh, bytes: Object.fromEntries(OUTPUTS.map((name) => [name, statSync(join(BUILD_DIR, name)).size])) };
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const report = await ensureFrontendBuilt(process.argv.includes('--force'));
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
