// Output formats, and how a streamed result becomes one response. chdb's stream hands out chunks that
// are each formatted on their own: a `…WithNames` chunk repeats the header, an ArrowStream chunk is a
// whole stream (schema … end marker). Row formats concatenate as they are; the header formats are
// stitched (header once, the end marker once); formats whose output is one document (JSON, Arrow file,
// Parquet, Pretty…) are produced whole, bounded by the result-byte limit.

import { WarehouseEndpointError } from './errors.js';

export type Stitching = 'concat' | 'header-lines' | 'rowbinary-header' | 'arrow-stream' | 'whole';

export interface OutputFormat {
  name: string;
  contentType: string;
  stitching: Stitching;
  /** A streamable text format with one row per line (rows are counted by newlines). */
  text: boolean;
  /** Header lines of a `…WithNames(AndTypes)` text format. */
  headerLines?: number;
}

const TEXT = 'text/plain; charset=UTF-8';
const TSV = 'text/tab-separated-values; charset=UTF-8';
const CSV = 'text/csv; charset=UTF-8; header=present';
const JSON_TYPE = 'application/json; charset=UTF-8';
const NDJSON = 'application/x-ndjson; charset=UTF-8';
const BINARY = 'application/octet-stream';

const FORMATS: Omit<OutputFormat, 'text'>[] = [
  { name: 'TabSeparated', contentType: TSV, stitching: 'concat' },
  { name: 'TSV', contentType: TSV, stitching: 'concat' },
  { name: 'TabSeparatedRaw', contentType: TSV, stitching: 'concat' },
  { name: 'TSVRaw', contentType: TSV, stitching: 'concat' },
  { name: 'TabSeparatedWithNames', contentType: TSV, stitching: 'header-lines', headerLines: 1 },
  { name: 'TSVWithNames', contentType: TSV, stitching: 'header-lines', headerLines: 1 },
  { name: 'TabSeparatedWithNamesAndTypes', contentType: TSV, stitching: 'header-lines', headerLines: 2 },
  { name: 'TSVWithNamesAndTypes', contentType: TSV, stitching: 'header-lines', headerLines: 2 },
  { name: 'TabSeparatedRawWithNames', contentType: TSV, stitching: 'header-lines', headerLines: 1 },
  { name: 'TSVRawWithNames', contentType: TSV, stitching: 'header-lines', headerLines: 1 },
  { name: 'TabSeparatedRawWithNamesAndTypes', contentType: TSV, stitching: 'header-lines', headerLines: 2 },
  { name: 'TSVRawWithNamesAndTypes', contentType: TSV, stitching: 'header-lines', headerLines: 2 },
  { name: 'CSV', contentType: 'text/csv; charset=UTF-8; header=absent', stitching: 'concat' },
  // CSV header names are quoted and cannot hold a raw newline unless a column is named with one; the
  // stitcher checks every repeated header is byte-identical to the first and fails the query otherwise.
  { name: 'CSVWithNames', contentType: CSV, stitching: 'header-lines', headerLines: 1 },
  { name: 'CSVWithNamesAndTypes', contentType: CSV, stitching: 'header-lines', headerLines: 2 },
  { name: 'JSONEachRow', contentType: NDJSON, stitching: 'concat' },
  { name: 'JSONLines', contentType: NDJSON, stitching: 'concat' },
  { name: 'NDJSON', contentType: NDJSON, stitching: 'concat' },
  { name: 'JSONStringsEachRow', contentType: NDJSON, stitching: 'concat' },
  { name: 'JSONCompactEachRow', contentType: NDJSON, stitching: 'concat' },
  { name: 'JSONCompactStringsEachRow', contentType: NDJSON, stitching: 'concat' },
  { name: 'JSONCompactEachRowWithNames', contentType: NDJSON, stitching: 'header-lines', headerLines: 1 },
  { name: 'JSONCompactEachRowWithNamesAndTypes', contentType: NDJSON, stitching: 'header-lines', headerLines: 2 },
  { name: 'JSONCompactStringsEachRowWithNames', contentType: NDJSON, stitching: 'header-lines', headerLines: 1 },
  { name: 'JSONCompactStringsEachRowWithNamesAndTypes', contentType: NDJSON, stitching: 'header-lines', headerLines: 2 },
  { name: 'RowBinary', contentType: BINARY, stitching: 'concat' },
  { name: 'RowBinaryWithNames', contentType: BINARY, stitching: 'rowbinary-header' },
  { name: 'RowBinaryWithNamesAndTypes', contentType: BINARY, stitching: 'rowbinary-header' },
  { name: 'Native', contentType: BINARY, stitching: 'concat' },
  { name: 'ArrowStream', contentType: BINARY, stitching: 'arrow-stream' },
  { name: 'Arrow', contentType: BINARY, stitching: 'whole' },
  { name: 'Parquet', contentType: BINARY, stitching: 'whole' },
  { name: 'ORC', contentType: BINARY, stitching: 'whole' },
  { name: 'Avro', contentType: BINARY, stitching: 'whole' },
  { name: 'JSON', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONStrings', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONCompact', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONCompactStrings', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONColumns', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONColumnsWithMetadata', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'JSONObjectEachRow', contentType: JSON_TYPE, stitching: 'whole' },
  { name: 'Values', contentType: TEXT, stitching: 'whole' },
  { name: 'Vertical', contentType: TEXT, stitching: 'whole' },
  { name: 'Pretty', contentType: TEXT, stitching: 'whole' },
  { name: 'PrettyCompact', contentType: TEXT, stitching: 'whole' },
  { name: 'PrettyCompactMonoBlock', contentType: TEXT, stitching: 'whole' },
  { name: 'PrettySpace', contentType: TEXT, stitching: 'whole' },
  { name: 'PrettyNoEscapes', contentType: TEXT, stitching: 'whole' },
  { name: 'Markdown', contentType: 'text/markdown; charset=UTF-8', stitching: 'whole' },
  { name: 'XML', contentType: 'application/xml; charset=UTF-8', stitching: 'whole' },
  { name: 'TSKV', contentType: TSV, stitching: 'concat' },
  { name: 'LineAsString', contentType: TEXT, stitching: 'concat' },
  { name: 'RawBLOB', contentType: BINARY, stitching: 'concat' },
  { name: 'Null', contentType: TEXT, stitching: 'concat' },
];

const BY_NAME = new Map(
  FORMATS.map((format) => [
    format.name.toLowerCase(),
    {
      ...format,
      text:
        format.contentType !== BINARY && (format.stitching === 'concat' || format.stitching === 'header-lines') && format.name !== 'Null',
    },
  ]),
);

/** Rows in a whole result of a line-per-row text format. */
export function textRows(format: OutputFormat, bytes: Buffer): number {
  let lines = 0;
  for (let at = bytes.indexOf(0x0a); at >= 0; at = bytes.indexOf(0x0a, at + 1)) lines++;
  return Math.max(0, lines - (format.headerLines ?? 0));
}

/** The output format named (ClickHouse reads format names case-insensitively). */
export function outputFormat(name: string): OutputFormat {
  const format = BY_NAME.get(name.toLowerCase());
  if (!format) {
    throw new WarehouseEndpointError(
      'UNKNOWN_FORMAT',
      `Unknown or unsupported output format ${name}: this endpoint serves ${FORMATS.map((f) => f.name).join(', ')}`,
    );
  }
  return format;
}

/** Formats chdb can insert from raw bytes (its whitelist), keyed by the lower-cased name. */
const INSERT_FORMATS = new Map(
  ['JSONEachRow', 'JSONCompactEachRow', 'CSV', 'CSVWithNames', 'TSV', 'TabSeparated', 'TSVWithNames', 'TabSeparatedWithNames'].map(
    (name) => [name.toLowerCase(), name],
  ),
);

export function insertFormat(
  name: string,
): 'JSONEachRow' | 'JSONCompactEachRow' | 'CSV' | 'CSVWithNames' | 'TSV' | 'TabSeparated' | 'TSVWithNames' | 'TabSeparatedWithNames' {
  const format =
    INSERT_FORMATS.get(name.toLowerCase()) ??
    (name.toLowerCase() === 'jsonlines' || name.toLowerCase() === 'ndjson' ? 'JSONEachRow' : undefined);
  if (!format) {
    throw new WarehouseEndpointError(
      'UNKNOWN_FORMAT',
      `inserts through this endpoint take ${[...INSERT_FORMATS.values()].join(', ')}; got ${name}`,
    );
  }
  return format as ReturnType<typeof insertFormat>;
}

const ARROW_END_OF_STREAM = Buffer.from('ffffffff00000000', 'hex');

/** Length of the first encapsulated Arrow IPC message (the schema) at the start of a stream. */
function arrowSchemaLength(chunk: Buffer): number {
  if (chunk.readUInt32LE(0) === 0xffffffff) return 8 + chunk.readInt32LE(4);
  return 4 + chunk.readInt32LE(0); // pre-0.15 framing, no continuation marker
}

function readVarUInt(buffer: Buffer, offset: number): [number, number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = buffer[offset++];
    if (byte === undefined) throw new WarehouseEndpointError('UNKNOWN_EXCEPTION', 'truncated RowBinary header in a result chunk');
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, offset];
    shift += 7;
  }
}

function rowBinaryHeaderLength(chunk: Buffer, withTypes: boolean): number {
  let [columns, offset] = readVarUInt(chunk, 0);
  const strings = withTypes ? columns * 2 : columns;
  for (let i = 0; i < strings; i++) {
    const [length, next] = readVarUInt(chunk, offset);
    offset = next + length;
  }
  return offset;
}

function headerLinesLength(chunk: Buffer, lines: number): number {
  let offset = 0;
  for (let i = 0; i < lines; i++) {
    const newline = chunk.indexOf(0x0a, offset);
    if (newline < 0) return chunk.length;
    offset = newline + 1;
  }
  return offset;
}

/**
 * Turns the stream's chunks into one result in the format: `push` each chunk's bytes, `end` once, and
 * write what they return in order.
 */
export class ResultStitcher {
  private chunks = 0;
  private header: Buffer | undefined;

  constructor(private readonly format: OutputFormat) {}

  push(raw: Uint8Array): Buffer {
    const chunk = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    const first = this.chunks++ === 0;
    switch (this.format.stitching) {
      case 'concat':
      case 'whole':
        return chunk;
      case 'header-lines':
      case 'rowbinary-header': {
        const length =
          this.format.stitching === 'header-lines'
            ? headerLinesLength(chunk, this.format.headerLines ?? 1)
            : rowBinaryHeaderLength(chunk, this.format.name.endsWith('AndTypes'));
        const header = chunk.subarray(0, length);
        if (first) {
          this.header = Buffer.from(header);
          return chunk;
        }
        if (!this.header?.equals(header))
          throw new WarehouseEndpointError('UNKNOWN_EXCEPTION', `result chunks of ${this.format.name} disagree on their header`);
        return chunk.subarray(length);
      }
      case 'arrow-stream': {
        const body = first ? chunk : chunk.subarray(arrowSchemaLength(chunk));
        return body.subarray(body.length - 8).equals(ARROW_END_OF_STREAM) ? body.subarray(0, body.length - 8) : body;
      }
    }
  }

  /** What closes the result (the Arrow end-of-stream marker). */
  end(): Buffer {
    return this.format.stitching === 'arrow-stream' && this.chunks > 0 ? ARROW_END_OF_STREAM : Buffer.alloc(0);
  }
}
