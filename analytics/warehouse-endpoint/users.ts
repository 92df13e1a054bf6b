// Who may query the warehouse, and as which role. Passwords are kept only as scrypt hashes: the plain
// ones from configuration are hashed when the users are built, and `WAREHOUSE_USERS` carries hashes.

import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { ConfigError, config } from '../../common/config.js';

export const WAREHOUSE_ROLES = ['analyst', 'offers', 'admin'] as const;
export type WarehouseRole = (typeof WAREHOUSE_ROLES)[number];

export interface WarehouseUser {
  name: string;
  role: WarehouseRole;
  /** `scrypt$N$r$p$salt$hash` (salt and hash base64): see {@link hashWarehousePassword}. */
  passwordHash: string;
}

const scryptAsync = promisify(scrypt) as (password: string, salt: Buffer, keylen: number, options: object) => Promise<Buffer>;
const KEY_LENGTH = 32;
// N = 2^14, r = 8: ~40 ms and 16 MiB per check, what OWASP lists for scrypt; successful checks are cached (below).
const COST = { N: 16_384, r: 8, p: 1 };

/** An scrypt hash of `password` with a fresh salt, self-describing so the parameters can change later. */
export function hashWarehousePassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, KEY_LENGTH, { ...COST, maxmem: 64 << 20 });
  return `scrypt$${COST.N}$${COST.r}$${COST.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

function parseHash(encoded: string): { N: number; r: number; p: number; salt: Buffer; hash: Buffer } | undefined {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0)) return undefined;
  return { N, r, p, salt: Buffer.from(parts[4]!, 'base64'), hash: Buffer.from(parts[5]!, 'base64') };
}

export async function verifyWarehousePassword(password: string, encoded: string): Promise<boolean> {
  const parsed = parseHash(encoded);
  if (!parsed) return false;
  const actual = await scryptAsync(password, parsed.salt, parsed.hash.length, {
    N: parsed.N,
    r: parsed.r,
    p: parsed.p,
    maxmem: 256 * parsed.N * parsed.r,
  });
  return timingSafeEqual(actual, parsed.hash);
}

/**
 * Checks credentials. A client sends its password with every request, and a full scrypt per small query
 * would cost more than the query, so a *successful* check is remembered (by a SHA-256 of user, hash and
 * password, in memory only) for a while; failures are never cached, so guessing stays at scrypt speed.
 */
export class WarehouseUserDirectory {
  private readonly users: Map<string, WarehouseUser>;
  private readonly verified = new Map<string, number>();

  constructor(
    users: readonly WarehouseUser[],
    private readonly rememberMs = 10 * 60_000,
  ) {
    this.users = new Map(users.map((user) => [user.name, user]));
    for (const user of users) {
      if (!parseHash(user.passwordHash)) throw new ConfigError('WAREHOUSE_USERS', `user ${user.name} has no valid scrypt password hash`);
    }
  }

  /** The user these credentials name, or undefined when the user is unknown or the password wrong. */
  async authenticate(name: string, password: string): Promise<WarehouseUser | undefined> {
    const user = this.users.get(name);
    // An unknown user still costs one scrypt, so timing does not tell which names exist.
    unknownUserHash ??= hashWarehousePassword(randomBytes(16).toString('hex'));
    const hash = user?.passwordHash ?? unknownUserHash;
    const key = createHash('sha256').update(`${name}\0${hash}\0${password}`).digest('base64');
    const until = this.verified.get(key);
    if (user && until !== undefined && until > Date.now()) return user;
    const ok = await verifyWarehousePassword(password, hash);
    if (!ok || !user) return undefined;
    if (this.verified.size > 10_000) this.verified.clear();
    this.verified.set(key, Date.now() + this.rememberMs);
    return user;
  }
}

let unknownUserHash: string | undefined;

/**
 * The users from configuration: `analyst`, `offers` and `admin` with the passwords of
 * `WAREHOUSE_ANALYST_PASSWORD`, `WAREHOUSE_OFFERS_PASSWORD` and `WAREHOUSE_ADMIN_PASSWORD` (development
 * defaults, required in production), plus `WAREHOUSE_USERS`: `name:role:scrypt$…` entries separated by
 * commas, for named people and services (hash with `hashWarehousePassword`).
 */
export function warehouseUsersFromConfig(settings = config().warehouseEndpoint): WarehouseUser[] {
  const users: WarehouseUser[] = [
    { name: 'analyst', role: 'analyst', passwordHash: hashWarehousePassword(settings.analystPassword) },
    { name: 'offers', role: 'offers', passwordHash: hashWarehousePassword(settings.offersPassword) },
    { name: 'admin', role: 'admin', passwordHash: hashWarehousePassword(settings.adminPassword) },
  ];
  for (const entry of settings.users
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [name, role, ...hash] = entry.split(':');
    const passwordHash = hash.join(':');
    if (!name || !/^[\w.@-]+$/.test(name)) throw new ConfigError('WAREHOUSE_USERS', `has an entry without a plain user name: "${entry}"`);
    if (!WAREHOUSE_ROLES.includes(role as WarehouseRole))
      throw new ConfigError('WAREHOUSE_USERS', `user ${name} has role "${role}", not one of ${WAREHOUSE_ROLES.join(', ')}`);
    if (!parseHash(passwordHash)) throw new ConfigError('WAREHOUSE_USERS', `user ${name} needs an scrypt hash (scrypt$N$r$p$salt$hash)`);
    const existing = users.findIndex((user) => user.name === name);
    if (existing >= 0) users.splice(existing, 1);
    users.push({ name, role: role as WarehouseRole, passwordHash });
  }
  return users;
}
