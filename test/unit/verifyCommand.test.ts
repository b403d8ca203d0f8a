import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatDuration, parseSavedRequest, RequestFileError, verifySavedRequest } from '../../src/commands/verify.js';
import { signRequest } from '../../src/deliver/sign.js';
import * as entry from '../../src/index.js';
import { runCli } from '../helpers/bridge.js';

const NOW = 1_770_737_450_123;
const SECRET = 'plain-secret-for-verify';
const SW_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const BODY = JSON.stringify({
  event: 'person.created',
  data: { id: 'a1', firstName: 'Zoë', note: 'line\nbreak' },
  timestamp: '2026-02-10T15:30:50.123Z',
  id: 'evt-1',
});

/** A request as the daemon sends it, written out in raw HTTP/1.1 form. */
function rawRequest(body: string, secret: string, options: { nowMs?: number; eol?: string; requestLine?: boolean; drop?: string[] } = {}): Buffer {
  const headers = signRequest(body, secret, 'evt-1', options.nowMs ?? NOW, 'pg-webhook-bridge/0.0.0-test');
  const eol = options.eol ?? '\r\n';
  const lines = options.requestLine === false ? [] : ['POST /hooks/crm HTTP/1.1'];
  lines.push('Host: receiver.example');
  for (const [name, value] of Object.entries(headers)) if (!options.drop?.includes(name)) lines.push(`${name}: ${value}`);
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  return Buffer.from(`${lines.join(eol)}${eol}${eol}${body}`, 'utf8');
}

function withoutHeader(raw: Buffer, name: string): Buffer {
  return Buffer.from(
    raw
      .toString('utf8')
      .split(/(?<=\n)/)
      .filter((line) => !line.toLowerCase().startsWith(`${name}:`))
      .join(''),
    'utf8',
  );
}

describe('verifySavedRequest', () => {
  it('accepts a raw HTTP/1.1 request signed with the Twenty scheme (CRLF, request line)', () => {
    expect(verifySavedRequest(rawRequest(BODY, SECRET), SECRET, { nowMs: NOW })).toEqual({ valid: true, line: 'valid (twenty)' });
  });

  it('accepts LF line ends, no request line, and a UTF-8 byte-order mark', () => {
    const raw = rawRequest(BODY, SECRET, { eol: '\n', requestLine: false });
    expect(verifySavedRequest(raw, SECRET, { nowMs: NOW }).line).toBe('valid (twenty)');
    expect(verifySavedRequest(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), raw]), SECRET, { nowMs: NOW }).line).toBe('valid (twenty)');
  });

  it('accepts the Standard Webhooks published vector, with only the standard headers', () => {
    const raw = Buffer.from(
      'webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek\nwebhook-timestamp: 1614265330\nwebhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n\n{"test": 2432232314}',
    );
    expect(verifySavedRequest(raw, SW_SECRET, { nowMs: 1614265330_000 }).line).toBe('valid (standard)');
    const twentyStripped = withoutHeader(withoutHeader(rawRequest(BODY, SW_SECRET), 'x-twenty-webhook-signature'), 'x-twenty-webhook-timestamp');
    expect(verifySavedRequest(twentyStripped, SW_SECRET, { nowMs: NOW }).line).toBe('valid (standard)');
  });

  it('accepts the JSON form: headers as an object or as pairs, body as text, rawBody or base64', () => {
    const headers = signRequest(BODY, SECRET, 'evt-1', NOW, 'ua');
    const forms = [
      { headers, body: BODY },
      { headers: Object.entries(headers), body: BODY },
      { headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v])), rawBody: BODY },
      { headers, bodyBase64: Buffer.from(BODY).toString('base64') },
    ];
    for (const form of forms) {
      expect(verifySavedRequest(Buffer.from(JSON.stringify(form, null, 2)), SECRET, { nowMs: NOW }).line, JSON.stringify(form).slice(0, 60)).toBe(
        'valid (twenty)',
      );
    }
  });

  it('refuses a tampered body, a wrong secret and a missing signature, saying why', () => {
    const raw = rawRequest(BODY, SECRET).toString('utf8');
    // Same byte length, so Content-Length still fits and only the signature can tell.
    const tampered = Buffer.from(raw.replace('Zoë', 'Zoey'), 'utf8');
    expect(verifySavedRequest(tampered, SECRET, { nowMs: NOW })).toEqual({ valid: false, line: 'invalid: signature mismatch' });
    expect(verifySavedRequest(Buffer.from(raw), 'another-secret', { nowMs: NOW }).line).toBe('invalid: signature mismatch');
    expect(verifySavedRequest(withoutHeader(Buffer.from(raw), 'x-twenty-webhook-signature'), SECRET, { nowMs: NOW }).line).toBe(
      'invalid: missing signature header',
    );
    expect(verifySavedRequest(withoutHeader(Buffer.from(raw), 'x-twenty-webhook-timestamp'), SECRET, { nowMs: NOW }).line).toBe(
      'invalid: missing x-twenty-webhook-timestamp header',
    );
  });

  it('refuses a stale timestamp, saying how old it is; --tolerance-ms widens the window', () => {
    const raw = rawRequest(BODY, SECRET, { nowMs: NOW - 2 * 3_600_000 - 5 * 60_000 });
    const stale = verifySavedRequest(raw, SECRET, { nowMs: NOW });
    expect(stale.valid).toBe(false);
    expect(stale.line).toBe('invalid: timestamp outside the tolerance (signed 2 h 5 min ago, tolerance 5 min; for an old saved request pass --tolerance-ms)');
    expect(verifySavedRequest(raw, SECRET, { nowMs: NOW, toleranceMs: 3 * 3_600_000 }).line).toBe('valid (twenty)');
    const future = verifySavedRequest(rawRequest(BODY, SECRET, { nowMs: NOW + 60_000 }), SECRET, { nowMs: NOW, toleranceMs: 1_000 });
    expect(future.line).toMatch(/signed 1 min in the future, tolerance 1 s/);
  });

  it('bounds the body by Content-Length (an editor-added newline is harmless) and hints when there is none', () => {
    const withNewline = Buffer.concat([rawRequest(BODY, SECRET), Buffer.from('\n')]);
    expect(verifySavedRequest(withNewline, SECRET, { nowMs: NOW }).line).toBe('valid (twenty)');
    const noLength = withoutHeader(withNewline, 'content-length');
    expect(verifySavedRequest(noLength, SECRET, { nowMs: NOW }).line).toBe(
      'invalid: signature mismatch (the body would match without the newline at the end of the file: was it added when saving?)',
    );
    const cut = rawRequest(BODY, SECRET).subarray(0, -10);
    expect(verifySavedRequest(cut, SECRET, { nowMs: NOW }).line).toMatch(
      /^invalid: malformed request file: the body has \d+ bytes but Content-Length says \d+: the file is cut short$/,
    );
  });

  it('de-chunks a Transfer-Encoding: chunked body', () => {
    const headers = signRequest(BODY, SECRET, 'evt-1', NOW, 'ua');
    const bytes = Buffer.from(BODY);
    const chunked = `${(20).toString(16)}\r\n${bytes.subarray(0, 20).toString('latin1')}\r\n${(bytes.length - 20).toString(16)};ext=1\r\n${bytes.subarray(20).toString('latin1')}\r\n0\r\n\r\n`;
    const head = [...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), 'Transfer-Encoding: chunked'].join('\r\n');
    const raw = Buffer.concat([Buffer.from(`${head}\r\n\r\n`), Buffer.from(chunked, 'latin1')]);
    expect(verifySavedRequest(raw, SECRET, { nowMs: NOW }).line).toBe('valid (twenty)');
  });

  it('reads folded and repeated headers', () => {
    const request = parseSavedRequest(Buffer.from('POST / HTTP/1.1\r\nX-Note: one\r\n  two\r\nX-Twice: a\r\nx-twice: b\r\n\r\nbody'));
    expect(request.headers).toEqual({ 'x-note': 'one two', 'x-twice': ['a', 'b'] });
    expect(request.body.toString()).toBe('body');
  });

  it('explains a malformed file instead of throwing', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /no blank line between the headers and the body/],
      ['x-twenty-webhook-signature: abc\r\n', /no blank line/],
      ['POST / HTTP/1.1\r\nthis is not a header\r\n\r\n{}', /line 2 is not a header \("Name: value"\): "this is not a header"/],
      ['{"headers": {"a": "b"}, "body": {"event": "x"}}', /"body" must be the raw body as a JSON string .*not an object/],
      ['{"headers": {"a": 1}, "body": ""}', /header "a" must be a string/],
      ['{"body": "x"}', /"headers" is missing/],
      ['{"headers": {}, ', /starts with "\{" but is not valid JSON/],
      ['Transfer-Encoding: chunked\r\n\r\nzz\r\n', /chunk size is not hexadecimal/],
    ];
    for (const [content, expected] of cases) {
      const result = verifySavedRequest(Buffer.from(content), SECRET, { nowMs: NOW });
      expect(result.valid, content).toBe(false);
      expect(result.line, content).toMatch(/^invalid: malformed request file: /);
      expect(result.line, content).toMatch(expected);
    }
    expect(() => parseSavedRequest(Buffer.from('nonsense'))).toThrow(RequestFileError);
  });

  it('formats durations for people', () => {
    expect(formatDuration(400)).toBe('400 ms');
    expect(formatDuration(95_000)).toBe('1 min 35 s');
    expect(formatDuration(7_500_000)).toBe('2 h 5 min');
    expect(formatDuration(3 * 86_400_000 + 3_600_000 + 1)).toBe('3 d 1 h');
    expect(formatDuration(3_600_000 + 5_000)).toBe('1 h');
  });
});

describe('the package entry (src/index.ts -> dist/index.js)', () => {
  it('exports verifySignature and the header names a receiver needs', () => {
    expect(Object.keys(entry).sort()).toEqual([
      'HEADER_NONCE',
      'HEADER_SIGNATURE',
      'HEADER_TIMESTAMP',
      'HEADER_WEBHOOK_ID',
      'HEADER_WEBHOOK_SIGNATURE',
      'HEADER_WEBHOOK_TIMESTAMP',
      'STANDARD_SECRET_PREFIX',
      'verifySignature',
    ]);
    const headers = signRequest(BODY, SECRET, 'evt-1', NOW, 'ua');
    expect(headers[entry.HEADER_SIGNATURE]).toMatch(/^[0-9a-f]{64}$/);
    expect(entry.verifySignature(BODY, headers, SECRET, { nowMs: NOW })).toEqual({ valid: true, scheme: 'twenty', id: 'evt-1', idSigned: true });
  });
});

describe('pg-webhook-bridge verify (the real CLI)', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwb-verify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('prints "valid (twenty)" and exits 0; prints "invalid: <reason>" and exits 1', async () => {
    const good = path.join(dir, 'request.txt');
    writeFileSync(good, rawRequest(BODY, SECRET, { nowMs: Date.now() }));
    const valid = await runCli(['verify', '--secret', SECRET, '--file', good]);
    expect(valid).toEqual({ code: 0, stdout: 'valid (twenty)\n', stderr: '' });

    const old = path.join(dir, 'old.json');
    const signedAt = Date.now() - 3_600_000;
    writeFileSync(old, JSON.stringify({ headers: signRequest(BODY, SECRET, 'evt-1', signedAt, 'ua'), body: BODY }));
    // The secret from the environment: it stays out of the process list.
    const stale = await runCli(['verify', '--file', old, '--tolerance-ms', '60000'], { PG_WEBHOOK_BRIDGE_VERIFY_SECRET: SECRET });
    expect(stale.code).toBe(1);
    expect(stale.stdout).toMatch(
      /^invalid: timestamp outside the tolerance \(signed (59 min \d+ s|1 h) ago, tolerance 1 min; for an old saved request pass --tolerance-ms\)\n$/,
    );
    expect(stale.stdout + stale.stderr).not.toContain(SECRET);
  }, 30_000); // two CLI start-ups through tsx: seconds each on a busy machine (unit projects default to 5 s)
});
