// `npm start`: the platform's main job. Brings the local stack up (reusing what runs) and reports
// its health. Roles (--role all|sale|ingest|offers|dashboards) arrive with the modules that fill them.

import { ConfigError, config } from './common/config.js';
import { StackError, stackStatus, stackUp } from './stack/services.js';

async function main(): Promise<void> {
  config(); // a bad variable stops the start here, with its name
  const started = Date.now();
  await stackUp();
  const statuses = await stackStatus();
  console.log(`flash-sale stack ready in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  for (const s of statuses) console.log(`  ${s.name.padEnd(18)} ${s.healthy ? 'healthy' : 'NOT HEALTHY'}  127.0.0.1:${s.port}`);
  if (!statuses.every((s) => s.healthy)) process.exitCode = 1;
}

main().catch((error: unknown) => {
  const oneLine = error instanceof StackError || error instanceof ConfigError;
  console.error(oneLine ? `start: ${(error as Error).message}` : error);
  process.exit(1);
});
