import { defineConfig } from 'vitest/config';

// Integration suites share one local stack (started once in tests/global-setup.ts) and use their own
// keys, topics and tables, so files may run in parallel; heavy race and crash tests say so themselves.
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['tests/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: true,
    maxWorkers: 2,
    pool: 'forks',
    reporters: ['default'],
    // Expected failures (rebalances, killed servers) would otherwise flood the output.
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'error', NODE_ENV: 'test' },
  },
});
