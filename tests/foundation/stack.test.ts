// The stack's promises: `up` twice reuses what runs, and a missing prerequisite is one line that
// says what to do (no stack trace).
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { stackStatus, stackUp } from '../../stack/services.js';
import { freePort } from '../support/private-server.js';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const tsx = join(root, 'node_modules', '.bin', 'tsx');

async function stackCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(tsx, [join(root, 'stack', 'cli.ts'), ...args], { env: { ...process.env, ...env }, cwd: root });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('stack', () => {
  it('up twice reuses the running servers', async () => {
    const before = await stackStatus();
    await stackUp();
    const after = await stackStatus();
    expect(after.every((s) => s.healthy)).toBe(true);
    expect(after.map((s) => s.pid)).toEqual(before.map((s) => s.pid));
  });

  it('a taken port is one line naming the port and the variable to change', async () => {
    const port = await freePort();
    const squatter = net.createServer().listen(port, '127.0.0.1');
    const dir = mkdtempSync(join(tmpdir(), 'stack-port-'));
    try {
      const result = await stackCli(['up', 'redis'], { STACK_DIR: dir, STACK_REDIS_PORT: String(port) });
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toContain(`port ${port} for redis is taken`);
      expect(result.stderr).toContain('STACK_REDIS_PORT');
    } finally {
      squatter.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no Java is one line saying how to install it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stack-java-'));
    try {
      // A PATH with node but without java.
      mkdirSync(join(dir, 'bin'));
      symlinkSync(process.execPath, join(dir, 'bin', 'node'));
      const result = await stackCli(['up', 'kafka'], {
        STACK_DIR: dir,
        STACK_KAFKA_PORT: String(await freePort()),
        STACK_KAFKA_CONTROLLER_PORT: String(await freePort()),
        PATH: join(dir, 'bin'),
      });
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(/Java is not installed.*apt-get install openjdk-17/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.runIf(process.getuid?.() === 0)('a missing package without root is one line saying what to install', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stack-apt-'));
    try {
      // As an unprivileged user, on a PATH where redis-server cannot be found. The user runs a copy of
      // prepare.sh, since the checkout may sit in a folder only root can enter (a home of root, mktemp -d).
      const path = join(dir, 'bin');
      mkdirSync(path);
      mkdirSync(join(dir, 'checkout', 'stack'), { recursive: true });
      copyFileSync(join(root, 'stack', 'prepare.sh'), join(dir, 'checkout', 'stack', 'prepare.sh'));
      for (const tool of ['bash', 'sed', 'head', 'id', 'mkdir', 'dirname', 'java', 'mvn', 'npm', 'node']) {
        const { stdout } = await run('bash', ['-c', `command -v ${tool}`]);
        symlinkSync(stdout.trim(), join(path, tool));
      }
      await run('chown', ['-R', 'nobody', dir]);
      const result = await run('runuser', [
        '-u',
        'nobody',
        '--',
        'env',
        `PATH=${path}`,
        `STACK_DIR=${dir}/data`,
        'bash',
        join(dir, 'checkout', 'stack', 'prepare.sh'),
      ]).catch((error) => error as { code: number; stderr: string });
      expect((result as { code?: number }).code).toBe(1);
      const stderr = (result as { stderr: string }).stderr.trim();
      expect(stderr.split('\n')).toHaveLength(1);
      expect(stderr).toMatch(/missing Debian packages: redis-server.*install them as root/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
