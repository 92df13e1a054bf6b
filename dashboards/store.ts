// The dashboards' own PostgreSQL tables: accounts, failed sign-ins, notebooks, query history and the
// sales created from the Sales page. Nobody else writes them. They live in one schema (default
// `public`); a test passes a schema of its own so files running in parallel never share rows.
import { randomBytes, scrypt as scryptCallback, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type pg from 'pg';
import { inTransaction } from '../common/postgres.js';

const scrypt = promisify(scryptCallback) as (password: string, salt: Buffer, keylen: number, options: object) => Promise<Buffer>;

export const ROLES = ['marketer', 'analyst', 'admin'] as const;
export type Role = (typeof ROLES)[number];

// N=2^15 costs ~50 ms per check: slow for a guesser, invisible at sign-in. maxmem must allow 128·N·r.
const SCRYPT = { N: 1 << 15, r: 8, p: 1, keylen: 32 } as const;
const scryptOptions = { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 128 * SCRYPT.N * SCRYPT.r * 2 };

/** `scrypt$N$r$p$salt$hash` (base64url): the parameters travel with the hash, so they can be raised later. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, SCRYPT.keylen, scryptOptions);
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const [kind, n, r, p, salt, hash] = encoded.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await scrypt(password, Buffer.from(salt, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: 128 * Number(n) * Number(r) * 2,
  });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

// A hash to compare against when the email is unknown, so a wrong email costs as long as a wrong password.
let decoyHash: Promise<string> | undefined;
export const decoyPasswordHash = () => (decoyHash ??= hashPassword(randomBytes(16).toString('hex')));

export interface Account {
  id: number;
  email: string;
  name: string;
  role: Role;
}

export interface SeedAccount {
  email: string;
  name: string;
  role: Role;
  password: string;
}

const quoteIdent = (name: string) => {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`not a plain PostgreSQL schema name: ${name}`);
  return `"${name}"`;
};

function ddl(schema: string): string {
  const s = quoteIdent(schema);
  return `
CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${s}.dashboard_accounts (
  id            bigserial   PRIMARY KEY,
  email         text        NOT NULL UNIQUE CHECK (email = lower(email)),
  name          text        NOT NULL,
  role          text        NOT NULL CHECK (role IN ('marketer', 'analyst', 'admin')),
  password_hash text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ${s}.dashboard_signin_failures (
  subject   text        NOT NULL,
  failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dashboard_signin_failures_subject ON ${s}.dashboard_signin_failures (subject, failed_at);
CREATE TABLE IF NOT EXISTS ${s}.dashboard_notebooks (
  id         bigserial   PRIMARY KEY,
  account_id bigint      NOT NULL REFERENCES ${s}.dashboard_accounts (id) ON DELETE CASCADE,
  title      text        NOT NULL,
  cells      jsonb       NOT NULL DEFAULT '[]',
  params     jsonb       NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dashboard_notebooks_account ON ${s}.dashboard_notebooks (account_id, updated_at DESC);
CREATE TABLE IF NOT EXISTS ${s}.dashboard_query_history (
  id          bigserial   PRIMARY KEY,
  account_id  bigint      NOT NULL REFERENCES ${s}.dashboard_accounts (id) ON DELETE CASCADE,
  notebook_id bigint,
  sql         text        NOT NULL,
  params      jsonb       NOT NULL DEFAULT '{}',
  started_at  timestamptz NOT NULL DEFAULT now(),
  duration_ms integer     NOT NULL,
  row_count   bigint,
  error       text
);
CREATE INDEX IF NOT EXISTS dashboard_query_history_account ON ${s}.dashboard_query_history (account_id, started_at DESC);
CREATE TABLE IF NOT EXISTS ${s}.dashboard_sales (
  sale_id           text        PRIMARY KEY,
  title             text        NOT NULL,
  starts_at         timestamptz NOT NULL,
  ends_at           timestamptz NOT NULL,
  follow_up_sale_id text,
  created_by        bigint      REFERENCES ${s}.dashboard_accounts (id) ON DELETE SET NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  ended_at          timestamptz
);`;
}

export interface NotebookCell {
  id: string;
  sql: string;
}

export interface Notebook {
  id: number;
  title: string;
  cells: NotebookCell[];
  params: Record<string, string>;
  updated_at: string;
}

export interface SaleRecord {
  sale_id: string;
  title: string;
  starts_at: string;
  ends_at: string;
  follow_up_sale_id: string | null;
  created_by: string | null;
  created_at: string;
  ended_at: string | null;
}

/** Everything the app reads and writes in PostgreSQL, bound to one schema. */
export class DashboardStore {
  private readonly s: string;

  constructor(
    readonly pool: pg.Pool,
    schema = 'public',
  ) {
    this.s = quoteIdent(schema);
  }

  /** Creates the tables if missing; several processes may start at once, hence the advisory lock. */
  async ensure(): Promise<void> {
    await inTransaction(this.pool, async (client) => {
      await client.query("SELECT pg_advisory_xact_lock(hashtext('flashsale.dashboards.ddl'))");
      await client.query(ddl(this.s.slice(1, -1)));
    });
  }

  /** Creates each account whose email is not taken yet; an existing account keeps its password. */
  async seedAccounts(accounts: readonly SeedAccount[]): Promise<void> {
    for (const a of accounts) {
      const exists = await this.pool.query(`SELECT 1 FROM ${this.s}.dashboard_accounts WHERE email = $1`, [a.email.toLowerCase()]);
      if (exists.rowCount) continue;
      await this.pool.query(
        `INSERT INTO ${this.s}.dashboard_accounts (email, name, role, password_hash) VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING`,
        [a.email.toLowerCase(), a.name, a.role, await hashPassword(a.password)],
      );
    }
  }

  async createAccount(a: SeedAccount): Promise<Account | null> {
    const { rows } = await this.pool.query<Account>(
      `INSERT INTO ${this.s}.dashboard_accounts (email, name, role, password_hash) VALUES ($1, $2, $3, $4)
       ON CONFLICT (email) DO NOTHING RETURNING id::int AS id, email, name, role`,
      [a.email.toLowerCase(), a.name, a.role, await hashPassword(a.password)],
    );
    return rows[0] ?? null;
  }

  async listAccounts(): Promise<Account[]> {
    const { rows } = await this.pool.query<Account>(
      `SELECT id::int AS id, email, name, role FROM ${this.s}.dashboard_accounts ORDER BY id`,
    );
    return rows;
  }

  async accountById(id: number): Promise<Account | null> {
    const { rows } = await this.pool.query<Account>(
      `SELECT id::int AS id, email, name, role FROM ${this.s}.dashboard_accounts WHERE id = $1`,
      [id],
    );
    return rows[0] ?? null;
  }

  async accountWithHash(email: string): Promise<(Account & { password_hash: string }) | null> {
    const { rows } = await this.pool.query<Account & { password_hash: string }>(
      `SELECT id::int AS id, email, name, role, password_hash FROM ${this.s}.dashboard_accounts WHERE email = $1`,
      [email.toLowerCase()],
    );
    return rows[0] ?? null;
  }

  /** Failed sign-ins per subject (`account:<email>`, `ip:<address>`) within the window. */
  async recentFailures(subjects: readonly string[], windowSeconds: number): Promise<Record<string, number>> {
    const { rows } = await this.pool.query<{ subject: string; n: number }>(
      `SELECT subject, count(*)::int AS n FROM ${this.s}.dashboard_signin_failures
       WHERE subject = ANY($1) AND failed_at > now() - make_interval(secs => $2) GROUP BY subject`,
      [subjects, windowSeconds],
    );
    return Object.fromEntries(rows.map((r) => [r.subject, r.n]));
  }

  async recordFailure(subjects: readonly string[]): Promise<void> {
    await this.pool.query(`INSERT INTO ${this.s}.dashboard_signin_failures (subject) SELECT unnest($1::text[])`, [subjects]);
    // Failures older than any window are noise: forget them as new ones come (the table stays small).
    await this.pool.query(
      `DELETE FROM ${this.s}.dashboard_signin_failures WHERE subject = ANY($1) AND failed_at < now() - interval '1 day'`,
      [subjects],
    );
  }

  /** A successful sign-in clears the account's count (not the address's: one good password must not reset a spray). */
  async clearFailures(subject: string): Promise<void> {
    await this.pool.query(`DELETE FROM ${this.s}.dashboard_signin_failures WHERE subject = $1`, [subject]);
  }

  // ---------------------------------------------------------------- notebooks

  async listNotebooks(accountId: number): Promise<Notebook[]> {
    const { rows } = await this.pool.query<Notebook>(
      `SELECT id::int AS id, title, cells, params, updated_at FROM ${this.s}.dashboard_notebooks
       WHERE account_id = $1 ORDER BY updated_at DESC`,
      [accountId],
    );
    return rows;
  }

  async notebook(accountId: number, id: number): Promise<Notebook | null> {
    const { rows } = await this.pool.query<Notebook>(
      `SELECT id::int AS id, title, cells, params, updated_at FROM ${this.s}.dashboard_notebooks WHERE account_id = $1 AND id = $2`,
      [accountId, id],
    );
    return rows[0] ?? null;
  }

  async createNotebook(accountId: number, title: string, cells: NotebookCell[], params: Record<string, string>): Promise<Notebook> {
    const { rows } = await this.pool.query<Notebook>(
      `INSERT INTO ${this.s}.dashboard_notebooks (account_id, title, cells, params) VALUES ($1, $2, $3, $4)
       RETURNING id::int AS id, title, cells, params, updated_at`,
      [accountId, title, JSON.stringify(cells), JSON.stringify(params)],
    );
    return rows[0]!;
  }

  async saveNotebook(
    accountId: number,
    id: number,
    notebook: { title: string; cells: NotebookCell[]; params: Record<string, string> },
  ): Promise<Notebook | null> {
    const { rows } = await this.pool.query<Notebook>(
      `UPDATE ${this.s}.dashboard_notebooks SET title = $3, cells = $4, params = $5, updated_at = now()
       WHERE account_id = $1 AND id = $2 RETURNING id::int AS id, title, cells, params, updated_at`,
      [accountId, id, notebook.title, JSON.stringify(notebook.cells), JSON.stringify(notebook.params)],
    );
    return rows[0] ?? null;
  }

  async deleteNotebook(accountId: number, id: number): Promise<boolean> {
    const result = await this.pool.query(`DELETE FROM ${this.s}.dashboard_notebooks WHERE account_id = $1 AND id = $2`, [accountId, id]);
    return (result.rowCount ?? 0) > 0;
  }

  async recordQuery(entry: {
    accountId: number;
    notebookId: number | null;
    sql: string;
    params: Record<string, string>;
    durationMs: number;
    rowCount: number | null;
    error: string | null;
  }): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.s}.dashboard_query_history (account_id, notebook_id, sql, params, duration_ms, row_count, error)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [
        entry.accountId,
        entry.notebookId,
        entry.sql,
        JSON.stringify(entry.params),
        Math.round(entry.durationMs),
        entry.rowCount,
        entry.error,
      ],
    );
  }

  async queryHistory(accountId: number, limit = 50) {
    const { rows } = await this.pool.query<{
      id: number;
      notebook_id: number | null;
      sql: string;
      params: Record<string, string>;
      started_at: string;
      duration_ms: number;
      row_count: number | null;
      error: string | null;
    }>(
      `SELECT id::int AS id, notebook_id::int AS notebook_id, sql, params, started_at, duration_ms, row_count::int AS row_count, error
       FROM ${this.s}.dashboard_query_history WHERE account_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2`,
      [accountId, limit],
    );
    return rows;
  }

  // ---------------------------------------------------------------- sales created here

  async recordSale(sale: {
    saleId: string;
    title: string;
    startsAt: number;
    endsAt: number;
    followUpSaleId: string | null;
    createdBy: number;
  }): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.s}.dashboard_sales (sale_id, title, starts_at, ends_at, follow_up_sale_id, created_by)
       VALUES ($1, $2, to_timestamp($3 / 1000.0), to_timestamp($4 / 1000.0), $5, $6) ON CONFLICT (sale_id) DO NOTHING`,
      [sale.saleId, sale.title, sale.startsAt, sale.endsAt, sale.followUpSaleId, sale.createdBy],
    );
  }

  async markSaleEnded(saleId: string): Promise<void> {
    await this.pool.query(`UPDATE ${this.s}.dashboard_sales SET ended_at = now() WHERE sale_id = $1 AND ended_at IS NULL`, [saleId]);
  }

  async listSales(): Promise<SaleRecord[]> {
    const { rows } = await this.pool.query<SaleRecord>(
      `SELECT s.sale_id, s.title, s.starts_at, s.ends_at, s.follow_up_sale_id, a.email AS created_by, s.created_at, s.ended_at
       FROM ${this.s}.dashboard_sales s LEFT JOIN ${this.s}.dashboard_accounts a ON a.id = s.created_by
       ORDER BY s.starts_at DESC LIMIT 200`,
    );
    return rows;
  }
}
