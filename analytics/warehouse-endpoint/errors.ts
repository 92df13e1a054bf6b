// Errors as ClickHouse's HTTP interface sends them: a status, `X-ClickHouse-Exception-Code`, and a body
// `Code: N. DB::Exception: message. (NAME)`, which @clickhouse/client and clickhouse-connect parse
// into their typed errors. The codes and names are ClickHouse's own (src/Common/ErrorCodes.cpp), so a
// client branching on `error.type === 'READONLY'` behaves the same here as against a server.

/** The ClickHouse error codes this endpoint raises itself (the engine's own pass through unchanged). */
export const CLICKHOUSE_ERRORS = {
  SYNTAX_ERROR: 62,
  UNKNOWN_FORMAT: 73,
  UNKNOWN_DATABASE: 81,
  UNKNOWN_SETTING: 115,
  TIMEOUT_EXCEEDED: 159,
  READONLY: 164,
  REQUIRED_PASSWORD: 194,
  TOO_MANY_SIMULTANEOUS_QUERIES: 202,
  QUERY_IS_TOO_LARGE: 230,
  BAD_ARGUMENTS: 36,
  NOT_IMPLEMENTED: 48,
  TOO_MANY_ROWS_OR_BYTES: 396,
  ACCESS_DENIED: 497,
  AUTHENTICATION_FAILED: 516,
  UNKNOWN_EXCEPTION: 1002,
} as const;

export type ClickHouseErrorName = keyof typeof CLICKHOUSE_ERRORS;

/** ClickHouse's own mapping from error code to HTTP status (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp). */
function statusOfCode(code: number): number {
  if (code === 194) return 401;
  if ([192, 193, 516, 497, 512].includes(code)) return 403;
  if ([36, 427, 26, 27, 38, 39, 40, 41, 42, 44, 566, 72, 76, 15, 16, 47, 167, 168, 169, 62, 117, 53, 70].includes(code)) return 400;
  if ([60, 46, 47, 50, 56, 81, 115, 79, 63, 73, 170, 211, 511].includes(code)) return 404;
  if (code === 230) return 413;
  if (code === 48) return 501;
  if (code === 209 || code === 76) return 503;
  if (code === 159) return 408;
  if (code === 202) return 429; // ClickHouse answers 500 here; 429 tells clients and proxies to back off and retry
  return 500;
}

export class WarehouseEndpointError extends Error {
  readonly code: number;
  readonly type: string;
  readonly status: number;

  constructor(type: ClickHouseErrorName, message: string, status?: number) {
    super(message);
    this.name = 'WarehouseEndpointError';
    this.type = type;
    this.code = CLICKHOUSE_ERRORS[type];
    this.status = status ?? statusOfCode(this.code);
  }

  /** The response body ClickHouse would send. */
  body(): string {
    return `Code: ${this.code}. DB::Exception: ${this.message}. (${this.type})\n`;
  }
}

const ENGINE_ERROR = /Code: (\d+)\. DB::Exception: (.*?)\s*\(([A-Z0-9_]+)\)/s;

/** What an engine error becomes on the wire: the engine already speaks ClickHouse, so its text passes through. */
export interface WireError {
  code: number;
  type: string;
  status: number;
  body: string;
  message: string;
}

export function toWireError(error: unknown): WireError {
  if (error instanceof WarehouseEndpointError) {
    return { code: error.code, type: error.type, status: error.status, body: error.body(), message: error.message };
  }
  const text = error instanceof Error ? error.message : String(error);
  const match = ENGINE_ERROR.exec(text);
  if (match) {
    const code = Number(match[1]);
    // The engine's message may be nested ("Code: 164. DB::Exception: Code: 164. …"); the first code is the one.
    const body = text.slice(text.indexOf(match[0])).trim();
    return { code, type: match[3]!, status: statusOfCode(code), body: `${body}\n`, message: match[2]!.trim() };
  }
  const unknown = new WarehouseEndpointError('UNKNOWN_EXCEPTION', text.replace(/\s+/g, ' ').trim() || 'unknown error');
  return { code: unknown.code, type: unknown.type, status: 500, body: unknown.body(), message: unknown.message };
}
