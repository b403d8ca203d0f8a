import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { HEADER_TIMESTAMP, HEADER_WEBHOOK_TIMESTAMP } from '../deliver/sign.js';
import { BridgeError } from '../errors.js';
import { verifySignature, type VerifyOptions } from '../verify.js';

/**
 * `pg-webhook-bridge verify --secret S --file request.txt [--tolerance-ms N]`: checks a saved request
 * the way a receiver would (verifySignature) and says `valid (<scheme>)` or `invalid: <why>`.
 *
 * Two file forms:
 * - raw HTTP/1.1: an optional request line (`POST /hook HTTP/1.1`), `Name: value` header lines, one
 *   blank line, then the body bytes exactly as received. Content-Length (when present) bounds the
 *   body, so a newline an editor appended is ignored; a chunked body is de-chunked.
 * - JSON: `{"headers": {...} or [[name, value], ...], "body": "<raw body text>"}`; `rawBody` or
 *   `bodyBase64` may stand for `body`.
 */

/** Env fallback for --secret: a secret on the command line shows in `ps` and the shell history. */
export const VERIFY_SECRET_ENV = 'PG_WEBHOOK_BRIDGE_VERIFY_SECRET';

export interface SavedRequest {
  headers: Record<string, string | string[]>;
  body: Buffer;
}

/** The request file cannot be read as a request; the message says where and why. */
export class RequestFileError extends BridgeError {
  constructor(message: string) {
    super('ERR_REQUEST_FILE', message);
  }
}

const REQUEST_LINE = /^[A-Z]+ \S+ HTTP\/\d(?:\.\d)?$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
const HEAD_END = /\r?\n\r?\n/;

/** Parses either file form. Throws RequestFileError. */
export function parseSavedRequest(content: Buffer): SavedRequest {
  // latin1: one character per byte, so string offsets are byte offsets into `content`.
  const text = content.toString('latin1');
  const start = text.startsWith('\xef\xbb\xbf') ? 3 : 0;
  if (text.slice(start).trimStart().startsWith('{')) return parseJsonRequest(content.subarray(start).toString('utf8'));
  return parseRawRequest(content.subarray(start));
}

function parseRawRequest(content: Buffer): SavedRequest {
  const text = content.toString('latin1');
  const end = HEAD_END.exec(text);
  if (!end) throw new RequestFileError('no blank line between the headers and the body (raw HTTP form: headers, blank line, body)');
  const lines = content.subarray(0, end.index).toString('utf8').split(/\r?\n/);
  let body = content.subarray(end.index + end[0].length);
  const headers: Record<string, string | string[]> = {};
  let last: string | undefined;
  lines.forEach((line, index) => {
    if (index === 0 && REQUEST_LINE.test(line)) return;
    if (/^[ \t]/.test(line) && last !== undefined) {
      // obs-fold: a continuation of the previous header's value
      const value = headers[last];
      const folded = line.trim();
      if (Array.isArray(value)) value[value.length - 1] += ` ${folded}`;
      else headers[last] = `${value} ${folded}`;
      return;
    }
    const match = HEADER_LINE.exec(line);
    if (!match) throw new RequestFileError(`line ${index + 1} is not a header ("Name: value"): ${JSON.stringify(line.slice(0, 80))}`);
    const name = match[1]!.toLowerCase();
    addHeader(headers, name, match[2]!);
    last = name;
  });
  if (String(headers['transfer-encoding'] ?? '').toLowerCase() === 'chunked') body = dechunk(body);
  const declared = headers['content-length'];
  if (typeof declared === 'string' && /^\d+$/.test(declared)) {
    const length = Number(declared);
    if (body.length < length) throw new RequestFileError(`the body has ${body.length} bytes but Content-Length says ${length}: the file is cut short`);
    body = body.subarray(0, length);
  }
  return { headers, body };
}

function addHeader(headers: Record<string, string | string[]>, name: string, value: string): void {
  const existing = headers[name];
  if (existing === undefined) headers[name] = value;
  else if (Array.isArray(existing)) existing.push(value);
  else headers[name] = [existing, value];
}

/** Transfer-Encoding: chunked -> the bytes it carries. */
function dechunk(encoded: Buffer): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const lineEnd = encoded.indexOf('\r\n', offset);
    if (lineEnd === -1) throw new RequestFileError('chunked body: a chunk size line is missing its CRLF');
    const size = Number.parseInt(encoded.subarray(offset, lineEnd).toString('latin1').split(';')[0]!.trim(), 16);
    if (!Number.isInteger(size) || size < 0) throw new RequestFileError('chunked body: a chunk size is not hexadecimal');
    if (size === 0) return Buffer.concat(parts);
    const dataStart = lineEnd + 2;
    if (dataStart + size > encoded.length) throw new RequestFileError('chunked body: the file ends inside a chunk');
    parts.push(encoded.subarray(dataStart, dataStart + size));
    offset = dataStart + size + 2; // the chunk's trailing CRLF
  }
}

function parseJsonRequest(text: string): SavedRequest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new RequestFileError(`the file starts with "{" but is not valid JSON: ${(cause as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new RequestFileError('the JSON form is an object: {"headers": {...}, "body": "..."}');
  const { headers: rawHeaders, body, rawBody, bodyBase64 } = parsed as Record<string, unknown>;
  const headers: Record<string, string | string[]> = {};
  if (Array.isArray(rawHeaders)) {
    for (const pair of rawHeaders) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
        throw new RequestFileError('"headers" as an array holds [name, value] pairs of strings');
      }
      addHeader(headers, pair[0].toLowerCase(), pair[1]);
    }
  } else if (typeof rawHeaders === 'object' && rawHeaders !== null) {
    for (const [name, value] of Object.entries(rawHeaders)) {
      const values = Array.isArray(value) ? value : [value];
      if (!values.every((v) => typeof v === 'string')) throw new RequestFileError(`header "${name}" must be a string (or an array of strings)`);
      for (const v of values as string[]) addHeader(headers, name.toLowerCase(), v);
    }
  } else {
    throw new RequestFileError('"headers" is missing: {"headers": {"x-twenty-webhook-signature": "...", ...}, "body": "..."}');
  }
  if (typeof bodyBase64 === 'string') return { headers, body: Buffer.from(bodyBase64, 'base64') };
  const raw = body !== undefined ? body : rawBody;
  if (typeof raw === 'string') return { headers, body: Buffer.from(raw, 'utf8') };
  if (raw === undefined) throw new RequestFileError('"body" is missing: the raw request body as a JSON string');
  throw new RequestFileError(
    `"body" must be the raw body as a JSON string (the exact bytes that were signed), not ${Array.isArray(raw) ? 'an array' : typeof raw === 'object' ? 'an object' : `a ${typeof raw}`}: re-serialising parsed JSON does not reproduce those bytes`,
  );
}

export type VerifyCommandResult = { valid: true; line: string } | { valid: false; line: string };

/** The whole command without I/O: file content in, the line to print out. */
export function verifySavedRequest(content: Buffer, secret: string, options: VerifyOptions = {}): VerifyCommandResult {
  let request: SavedRequest;
  try {
    request = parseSavedRequest(content);
  } catch (error) {
    if (error instanceof RequestFileError) return { valid: false, line: `invalid: malformed request file: ${error.message}` };
    throw error;
  }
  const result = verifySignature(request.body, request.headers, secret, options);
  if (result.valid) return { valid: true, line: `valid (${result.scheme})` };
  return { valid: false, line: `invalid: ${explain(result.reason, request, secret, options)}` };
}

/** Adds what a person needs to act on the two failures a saved request most often hits. */
function explain(reason: string, request: SavedRequest, secret: string, options: VerifyOptions): string {
  if (reason.includes('timestamp outside the tolerance')) {
    const age = signedAgeMs(request.headers, options.nowMs ?? Date.now());
    if (age !== null) {
      const when = age >= 0 ? `signed ${formatDuration(age)} ago` : `signed ${formatDuration(-age)} in the future`;
      reason += ` (${when}, tolerance ${formatDuration(options.toleranceMs ?? 300_000)}; for an old saved request pass --tolerance-ms)`;
    }
  } else if (reason.includes('signature mismatch')) {
    const trimmed = trimTrailingNewlines(request.body);
    if (trimmed.length !== request.body.length && verifySignature(trimmed, request.headers, secret, options).valid) {
      reason += ' (the body would match without the newline at the end of the file: was it added when saving?)';
    }
  }
  return reason;
}

function signedAgeMs(headers: SavedRequest['headers'], nowMs: number): number | null {
  const first = (name: string): string | undefined => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const ms = first(HEADER_TIMESTAMP);
  if (ms !== undefined && /^\d{1,15}$/.test(ms)) return nowMs - Number(ms);
  const seconds = first(HEADER_WEBHOOK_TIMESTAMP);
  if (seconds !== undefined && /^\d{1,12}$/.test(seconds)) return nowMs - Number(seconds) * 1_000;
  return null;
}

/** 95_000 -> "1 min 35 s"; 7_500_000 -> "2 h 5 min"; 400 -> "400 ms". */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const units: Array<[string, number]> = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['min', 60_000],
    ['s', 1_000],
  ];
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    } else if (parts.length > 0) break;
  }
  return parts.join(' ');
}

function trimTrailingNewlines(body: Buffer): Buffer {
  let end = body.length;
  while (end > 0 && (body[end - 1] === 0x0a || body[end - 1] === 0x0d)) end--;
  return body.subarray(0, end);
}

export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description('check the signature of a saved request (headers + body) like a receiver: prints "valid (scheme)" or "invalid: reason"')
    .option('--secret <secret>', `the webhook's secret (or env ${VERIFY_SECRET_ENV}, which keeps it out of ps and shell history)`)
    .requiredOption(
      '--file <path>',
      'the saved request: raw HTTP (request line optional, headers, blank line, body) or JSON {"headers": {...}, "body": "..."}; - reads stdin',
    )
    .option('--tolerance-ms <ms>', 'largest accepted age (either way) of the signed timestamp', '300000')
    .action((opts: { secret?: string; file: string; toleranceMs: string }) => {
      const secret = opts.secret ?? process.env[VERIFY_SECRET_ENV];
      if (!secret) throw new BridgeError('ERR_USAGE', `give the webhook's secret with --secret or ${VERIFY_SECRET_ENV}`);
      if (!/^\d+$/.test(opts.toleranceMs))
        throw new BridgeError('ERR_USAGE', `--tolerance-ms must be a whole number of milliseconds, e.g. 300000 (got ${JSON.stringify(opts.toleranceMs)})`);
      let content: Buffer;
      try {
        content = readFileSync(opts.file === '-' ? 0 : opts.file);
      } catch (cause) {
        throw new BridgeError('ERR_USAGE', `cannot read ${opts.file}: ${(cause as Error).message}`, { cause });
      }
      const result = verifySavedRequest(content, secret, { toleranceMs: Number(opts.toleranceMs) });
      console.log(result.line);
      if (!result.valid) process.exitCode = 1;
    });
}
