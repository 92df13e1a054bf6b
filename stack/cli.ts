// npm run stack:up | stack:status | stack:down [service ...]
// Errors come out as one line that says what to do, never a stack trace.

import { readFileSync } from 'node:fs';
import { ConfigError } from '../common/config.js';
import { SERVICE_NAMES, type ServiceName, StackError, stackDir, stackDown, stackStatus, stackUp } from './services.js';

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const unknown = rest.filter((name) => !SERVICE_NAMES.includes(name as ServiceName));
  if (unknown.length > 0) throw new StackError(`unknown service ${unknown.join(', ')}; the services are ${SERVICE_NAMES.join(', ')}`);
  const names = rest.length > 0 ? (rest as ServiceName[]) : SERVICE_NAMES;
  switch (command) {
    case 'up': {
      const started = Date.now();
      await stackUp(names);
      console.log(`stack up in ${((Date.now() - started) / 1000).toFixed(1)}s (data in ${stackDir()})`);
      await printStatus();
      return;
    }
    case 'down':
      await stackDown(names);
      console.log('stack down');
      return;
    case 'status': {
      const healthy = await printStatus();
      process.exitCode = healthy ? 0 : 3;
      return;
    }
    default:
      throw new StackError('usage: stack/cli.ts up|status|down [service ...]');
  }
}

async function printStatus(): Promise<boolean> {
  const statuses = await stackStatus();
  for (const s of statuses) {
    const state = s.running ? (s.healthy ? 'healthy' : 'running, not healthy') : 'stopped';
    const rss = s.pid ? `${rssMiB(s.pid)} MiB RSS` : '';
    console.log(
      `${s.name.padEnd(18)} ${state.padEnd(21)} port ${String(s.port).padEnd(6)} ${s.pid ? `pid ${s.pid}` : ''} ${rss} ${s.detail ?? ''}`.trimEnd(),
    );
  }
  return statuses.every((s) => s.healthy);
}

function rssMiB(pid: number): string {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
    return (kb / 1024).toFixed(0);
  } catch {
    return '?';
  }
}

main().catch((error: unknown) => {
  if (error instanceof StackError || error instanceof ConfigError) {
    console.error(`stack: ${error.message}`);
  } else {
    console.error(`stack: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.exit(1);
});
