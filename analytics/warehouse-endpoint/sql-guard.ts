// What a role may run, checked on the statement's tokens before the engine sees it. The engine enforces
// the same again where it can (read-only connections refuse writes and DDL, limits are session settings
// no read-only user may SET), but some things only a look at the SQL can catch: a second statement after
// `;` (chdb runs them all), table functions that read files or the network (allowed at readonly=2),
// `INTO OUTFILE`, and a `SETTINGS` clause that raises a limit (readonly=2 allows changing settings).

import { OFFER_TABLES } from '../offers/tables.js';
import { WarehouseEndpointError } from './errors.js';
import type { WarehouseRole } from './users.js';

/** Tables the `offers` role may insert into: the offer loop's own list (analytics/offers/tables.ts). */
export const OFFERS_INSERT_TABLES: readonly string[] = OFFER_TABLES;

interface Token {
  kind: 'word' | 'quoted' | 'string' | 'number' | 'punct';
  text: string;
  /** Lower-cased word, or the punctuation itself. */
  value: string;
  start: number;
  end: number;
  /** Parenthesis depth at the token. */
  depth: number;
}

function fail(message: string): never {
  throw new WarehouseEndpointError('SYNTAX_ERROR', message);
}

/** Splits SQL into tokens, dropping comments; strings and quoted names stay single tokens. */
export function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  let depth = 0;
  let i = 0;
  const n = sql.length;
  const push = (kind: Token['kind'], start: number, end: number, value?: string) => {
    const text = sql.slice(start, end);
    tokens.push({ kind, text, value: value ?? text.toLowerCase(), start, end, depth });
  };
  while (i < n) {
    const c = sql[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '#' && (sql[i + 1] === ' ' || sql[i + 1] === '!')) {
      while (i < n && sql[i] !== '\n') i++;
    } else if (c === '/' && sql[i + 1] === '*') {
      // ClickHouse nests block comments.
      let level = 0;
      do {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          level++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          level--;
          i += 2;
        } else i++;
      } while (level > 0 && i < n);
      if (level > 0) fail('unterminated comment');
    } else if (c === "'" || c === '"' || c === '`') {
      const start = i++;
      while (i < n) {
        if (sql[i] === '\\') i += 2;
        else if (sql[i] === c && sql[i + 1] === c) i += 2;
        else if (sql[i] === c) break;
        else i++;
      }
      if (i >= n) fail(`unterminated ${c === "'" ? 'string' : 'quoted name'}`);
      i++;
      const inner = sql.slice(start + 1, i - 1);
      push(c === "'" ? 'string' : 'quoted', start, i, c === "'" ? inner : inner.toLowerCase());
    } else if (c === '$' && /^\$\w*\$/.test(sql.slice(i))) {
      // Heredoc string: $tag$ … $tag$
      const tag = /^\$\w*\$/.exec(sql.slice(i))![0];
      const close = sql.indexOf(tag, i + tag.length);
      if (close < 0) fail('unterminated heredoc string');
      push('string', i, close + tag.length);
      i = close + tag.length;
    } else if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      const start = i;
      while (i < n && /[\w$\u0080-\uffff]/.test(sql[i]!)) i++;
      push('word', start, i);
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      const start = i;
      while (i < n && /[\w.]/.test(sql[i]!)) {
        if ((sql[i] === 'e' || sql[i] === 'E') && (sql[i + 1] === '-' || sql[i + 1] === '+')) i++;
        i++;
      }
      push('number', start, i);
    } else {
      if (c === '(' || c === '[') depth++;
      if (c === ')' || c === ']') depth = Math.max(0, depth - 1);
      const two = sql.slice(i, i + 2);
      const len = ['!=', '<>', '<=', '>=', '==', '||', '::', '->'].includes(two) ? 2 : 1;
      push('punct', i, i + len);
      i += len;
    }
  }
  return tokens;
}

/** Table functions (and plain functions) that read or write files, other servers or the network. */
const OUTSIDE_WORLD_FUNCTIONS = new Set(
  [
    'file',
    'filecluster',
    'url',
    'urlcluster',
    's3',
    's3cluster',
    'gcs',
    'oss',
    'cosn',
    'hdfs',
    'hdfscluster',
    'azureblobstorage',
    'azureblobstoragecluster',
    'remote',
    'remotesecure',
    'cluster',
    'clusterallreplicas',
    'mysql',
    'postgresql',
    'mongodb',
    'redis',
    'sqlite',
    'odbc',
    'jdbc',
    'executable',
    'executablepool',
    'input',
    'dictionary',
    'ytsaurus',
    'arrowflight',
    'arrowflight',
    'prometheusquery',
    'prometheusqueryrange',
    'timeseriesdata',
    'mergetreeindex',
    'mergetreeprojection',
    'generaterandom', // not outside, but unbounded work; analysts have numbers()
  ].map((name) => name.toLowerCase()),
);
const OUTSIDE_WORLD_PREFIXES = ['iceberg', 'deltalake', 'hudi', 'paimon', 's3', 'hdfs', 'azure', 'remote', 'filesystem'];

/** Settings no client below admin may set, by URL or in SQL: they are the limits, or switch off the read-only mode. */
export function isProtectedSetting(name: string): boolean {
  const setting = name.toLowerCase();
  return (
    setting === 'readonly' ||
    setting === 'profile' ||
    setting.startsWith('max_') ||
    setting.startsWith('min_') ||
    setting.startsWith('allow_') ||
    setting.endsWith('_overflow_mode') ||
    setting.startsWith('timeout_') ||
    setting.startsWith('memory_') ||
    setting.startsWith('priority') ||
    setting.includes('quota') ||
    setting.startsWith('os_thread_priority') ||
    setting === 'enable_filesystem_cache' ||
    setting.startsWith('http_') ||
    setting.startsWith('s3_') ||
    setting.startsWith('remote_') ||
    setting.startsWith('external_') ||
    setting.startsWith('async_insert') ||
    setting.startsWith('use_query_cache') ||
    setting === 'log_queries' ||
    setting.startsWith('send_logs')
  );
}

export type StatementKind = 'select' | 'show' | 'describe' | 'exists' | 'explain' | 'insert' | 'other';

export interface CheckedStatement {
  kind: StatementKind;
  /** Whether the statement returns a result set (streamed to the client). */
  returnsRows: boolean;
  /** `FORMAT x` named in the SQL (for an INSERT: the format of the data that follows). */
  format?: string;
  /** For `INSERT … FORMAT x` with the data after it in the same text: where the data starts. */
  dataOffset?: number;
  /** For an INSERT: the table and the columns it names. */
  insert?: { table: string; columns?: string[]; settings: Record<string, string> };
  /** Names set by a `SETTINGS` clause. */
  settings: string[];
}

const READ_KINDS: Record<string, StatementKind> = {
  select: 'select',
  with: 'select',
  '(': 'select',
  show: 'show',
  describe: 'describe',
  desc: 'describe',
  exists: 'exists',
  explain: 'explain',
};

/** Statements that are not reads (the endpoint refuses them below admin). */
const STATEMENT_WORDS = new Set(
  'insert create drop alter truncate rename delete update optimize system kill grant revoke set use attach detach exchange undrop backup restore move check watch begin commit rollback replace upsert'.split(
    ' ',
  ),
);

function settingsClauses(tokens: Token[]): { names: string[]; values: Record<string, string> } {
  const names: string[] = [];
  const values: Record<string, string> = {};
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i]!.kind !== 'word' || tokens[i]!.value !== 'settings') continue;
    let j = i + 1;
    while (j < tokens.length) {
      const name = tokens[j];
      if (!name || (name.kind !== 'word' && name.kind !== 'quoted') || tokens[j + 1]?.value !== '=') break;
      names.push(name.value);
      let k = j + 2;
      if (tokens[k]?.value === '-') k++;
      values[name.value] = tokens[k]?.kind === 'string' ? tokens[k]!.value : (tokens[k]?.text ?? '');
      j = k + 1;
      if (tokens[j]?.value !== ',') break;
      j++;
    }
  }
  return { names, values };
}

/** The format named by a top-level `FORMAT x` (the last one), if any. */
function formatClause(tokens: Token[]): { format: string; index: number } | undefined {
  for (let i = tokens.length - 2; i >= 0; i--) {
    const token = tokens[i]!;
    if (token.kind === 'word' && token.value === 'format' && token.depth === 0) {
      const next = tokens[i + 1]!;
      if (next.kind === 'word' || next.kind === 'quoted') return { format: next.text.replace(/^[`"]|[`"]$/g, ''), index: i + 1 };
    }
  }
  return undefined;
}

function stripDatabase(name: string, database: string): string {
  const parts = name.split('.');
  if (parts.length === 2 && parts[0] === database.toLowerCase()) return parts[1]!;
  return name;
}

/**
 * Checks one statement against the role, and describes it. Refuses (a WarehouseEndpointError) what the
 * role may not run; everything it lets through still runs on a connection that enforces the limits.
 */
export function checkStatement(sql: string, role: WarehouseRole, database: string): CheckedStatement {
  // An INSERT's inline data (after `FORMAT x`) is not SQL: tokenize only up to it.
  const headEnd = insertDataStart(sql);
  const tokens = tokenize(headEnd === undefined ? sql : sql.slice(0, headEnd));
  const semicolons = tokens.filter((token) => token.value === ';');
  const trailingOnly = semicolons.length === 0 || (semicolons.length === 1 && tokens.at(-1)!.value === ';');
  const body = tokens.at(-1)?.value === ';' ? tokens.slice(0, -1) : tokens;
  const first = body[0];
  if (!first) fail('empty query');
  const { names: settingNames, values: settingValues } = settingsClauses(body);
  const format = formatClause(body);
  // A first word that is no statement ClickHouse knows is a typo: it runs on a read-only connection and
  // the engine answers with its own SYNTAX_ERROR, as a server would.
  const readKind = READ_KINDS[first.value] ?? (first.kind === 'word' && !STATEMENT_WORDS.has(first.value) ? 'select' : undefined);
  const kind: StatementKind = readKind ?? (first.value === 'insert' ? 'insert' : 'other');
  const checked: CheckedStatement = {
    kind,
    returnsRows: readKind !== undefined,
    format: format?.format,
    settings: settingNames,
  };

  if (kind === 'insert') {
    // INSERT INTO [TABLE] name [(columns)] [SETTINGS …] [VALUES | SELECT … | FORMAT x]
    let i = 1;
    if (body[i]?.value === 'into') i++;
    if (body[i]?.value === 'table') i++;
    if (body[i]?.value === 'function') {
      if (role !== 'admin') throw new WarehouseEndpointError('READONLY', `${role}: INSERT INTO FUNCTION is not allowed`);
    }
    let table = body[i]?.value ?? '';
    if (body[i + 1]?.value === '.' && body[i + 2]) {
      table = `${table}.${body[i + 2]!.value}`;
      i += 2;
    }
    i++;
    let columns: string[] | undefined;
    if (body[i]?.value === '(') {
      columns = [];
      for (i++; i < body.length && body[i]!.value !== ')'; i++)
        if (body[i]!.value !== ',') columns.push(body[i]!.text.replace(/^[`"]|[`"]$/g, ''));
      i++;
    }
    checked.insert = { table: stripDatabase(table, database), columns, settings: settingValues };
    if (headEnd !== undefined) checked.dataOffset = headEnd;
  }

  if (role === 'admin') return checked;

  if (!trailingOnly) throw new WarehouseEndpointError('SYNTAX_ERROR', 'one statement per query: remove the `;` between statements');
  const insertAllowed = role === 'offers' && kind === 'insert' && OFFERS_INSERT_TABLES.includes(checked.insert?.table ?? '');
  if (!checked.returnsRows && !insertAllowed) {
    const what = kind === 'insert' ? `INSERT into ${checked.insert?.table || 'that table'}` : `${first.text.toUpperCase()} queries`;
    const allowed = role === 'offers' ? ` (it may insert only into ${OFFERS_INSERT_TABLES.join(', ')})` : '';
    throw new WarehouseEndpointError(
      'READONLY',
      `${role}: Cannot execute query in readonly mode: the ${role} role may not run ${what}${allowed}`,
    );
  }
  for (let i = 0; i < body.length; i++) {
    const token = body[i]!;
    if (token.kind !== 'word') continue;
    if ((token.value === 'outfile' && body[i - 1]?.value === 'into') || (token.value === 'infile' && body[i - 1]?.value === 'from')) {
      throw new WarehouseEndpointError(
        'ACCESS_DENIED',
        `${role}: ${body[i - 1]!.text.toUpperCase()} ${token.text.toUpperCase()} reaches the server's files and is not allowed`,
      );
    }
    if (
      body[i + 1]?.value === '(' &&
      (OUTSIDE_WORLD_FUNCTIONS.has(token.value) || OUTSIDE_WORLD_PREFIXES.some((p) => token.value.startsWith(p)))
    ) {
      throw new WarehouseEndpointError(
        'ACCESS_DENIED',
        `${role}: the table function ${token.text}() reaches files, other servers or the network and is not allowed`,
      );
    }
  }
  for (const name of settingNames) {
    if (isProtectedSetting(name)) {
      throw new WarehouseEndpointError(
        'READONLY',
        `${role}: Cannot modify '${name}' setting in readonly mode: the endpoint sets the limits and the read-only mode itself`,
      );
    }
  }
  return checked;
}

/** Where the data of `INSERT … FORMAT x <data>` starts in the text, if the text is such an insert. */
function insertDataStart(sql: string): number | undefined {
  if (!/^\s*(--[^\n]*\n\s*|\/\*[\s\S]*?\*\/\s*)*insert\b/i.test(sql)) return undefined;
  // Find a top-level FORMAT word outside strings, comments and parentheses: scan tokens of a prefix that
  // stops at the first FORMAT keyword after which the data begins.
  const match = /\bformat\s+([A-Za-z_][\w]*)[ \t]*\r?\n?/gi;
  for (let m = match.exec(sql); m; m = match.exec(sql)) {
    let tokens: Token[];
    try {
      tokens = tokenize(sql.slice(0, m.index + m[0].length));
    } catch {
      continue; // the FORMAT was inside a string or comment
    }
    const last = tokens.at(-1);
    const beforeLast = tokens.at(-2);
    if (last?.kind === 'word' && beforeLast?.value === 'format' && beforeLast.depth === 0 && last.end <= m.index + m[0].length) {
      return m.index + m[0].length;
    }
  }
  return undefined;
}
