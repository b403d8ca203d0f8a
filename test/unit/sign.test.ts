import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { signRequest } from '../../src/deliver/sign.js';
import { verifySignature } from '../../src/verify.js';

const UA = 'pg-webhook-bridge/0.0.0-test';

// Published test vector of the Standard Webhooks specification (reference libraries' tests).
const SW_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const SW_ID = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
const SW_TIMESTAMP_S = 1614265330;
const SW_BODY = '{"test": 2432232314}';
const SW_SIGNATURE = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';

const BODY = JSON.stringify({
  event: 'person.updated',
  data: { id: '0b6f2c1e-2a4f-4f38-9d67-1a8f4c1b9d11', firstName: 'Zoë', email: 'zoe@example.com' },
  timestamp: '2026-02-10T15:30:50.123Z',
  id: 'evt_0000000001A2B3C4_0',
  updatedFields: ['email'],
});

describe('signRequest', () => {
  it('matches the Standard Webhooks published vector', () => {
    const headers = signRequest(SW_BODY, SW_SECRET, SW_ID, SW_TIMESTAMP_S * 1000, UA);
    expect(headers['webhook-id']).toBe(SW_ID);
    expect(headers['webhook-timestamp']).toBe(String(SW_TIMESTAMP_S));
    expect(headers['webhook-signature']).toBe(SW_SIGNATURE);
  });

  it('uses whole seconds for webhook-timestamp and exact ms for the Twenty timestamp', () => {
    const headers = signRequest(SW_BODY, SW_SECRET, SW_ID, SW_TIMESTAMP_S * 1000 + 999, UA);
    expect(headers['webhook-timestamp']).toBe(String(SW_TIMESTAMP_S));
    expect(headers['webhook-signature']).toBe(SW_SIGNATURE);
    expect(headers['x-twenty-webhook-timestamp']).toBe(String(SW_TIMESTAMP_S * 1000 + 999));
  });

  it('computes the Twenty signature as hex HMAC-SHA256 of "<ms>:<body>" keyed by the UTF-8 secret', () => {
    const secret = 'sëcret-with-ünicode';
    const nowMs = 1_770_737_450_123;
    const headers = signRequest(BODY, secret, 'evt_1', nowMs, UA);
    // Independent computation over one Buffer (not the incremental updates sign.ts uses).
    const expected = createHmac('sha256', Buffer.from(secret, 'utf8'))
      .update(Buffer.from(`${nowMs}:${BODY}`, 'utf8'))
      .digest('hex');
    expect(headers['x-twenty-webhook-timestamp']).toBe('1770737450123');
    expect(headers['x-twenty-webhook-signature']).toBe(expected);
    expect(headers['x-twenty-webhook-signature']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('sets the fixed headers and no Standard Webhooks headers for a plain secret', () => {
    const headers = signRequest(BODY, 'plain', 'evt_2', Date.now(), UA);
    expect(headers['content-type']).toBe('application/json');
    expect(headers['user-agent']).toBe(UA);
    expect(headers['webhook-id']).toBe('evt_2');
    expect(headers['x-twenty-webhook-nonce']).toMatch(/^[0-9a-f]{32}$/);
    expect(headers).not.toHaveProperty('webhook-signature');
    expect(headers).not.toHaveProperty('webhook-timestamp');
  });

  it('sends no signature headers for an empty secret, keeping webhook-id and user-agent', () => {
    const headers = signRequest(BODY, '', 'evt_3', Date.now(), UA);
    expect(headers).toEqual({ 'content-type': 'application/json', 'user-agent': UA, 'webhook-id': 'evt_3' });
  });

  it('draws a new nonce for every attempt', () => {
    const nonces = new Set<string>();
    for (let i = 0; i < 2_000; i++) nonces.add(signRequest(BODY, 'plain', 'evt', 1, UA)['x-twenty-webhook-nonce']);
    expect(nonces.size).toBe(2_000);
  });

  it('is verified by the standardwebhooks package', () => {
    const headers = signRequest(BODY, SW_SECRET, 'evt_3', Date.now(), UA);
    const payload = new Webhook(SW_SECRET).verify(BODY, headers);
    expect(payload).toEqual(JSON.parse(BODY));
  });

  it('is refused by the standardwebhooks package when the body changes', () => {
    const headers = signRequest(BODY, SW_SECRET, 'evt_4', Date.now(), UA);
    expect(() => new Webhook(SW_SECRET).verify(BODY.replace('zoe', 'eve'), headers)).toThrow();
  });
});

describe('verifySignature', () => {
  const NOW = 1_770_737_450_123;

  it('accepts the Twenty scheme', () => {
    const headers = signRequest(BODY, 'plain-secret', 'evt', NOW, UA);
    expect(verifySignature(BODY, headers, 'plain-secret', { nowMs: NOW })).toMatchObject({ valid: true, scheme: 'twenty' });
    expect(verifySignature(Buffer.from(BODY), headers, 'plain-secret', { nowMs: NOW })).toMatchObject({
      valid: true,
      scheme: 'twenty',
    });
  });

  it('accepts the Standard Webhooks scheme, including the published vector', () => {
    const vectorHeaders = {
      'webhook-id': SW_ID,
      'webhook-timestamp': String(SW_TIMESTAMP_S),
      'webhook-signature': SW_SIGNATURE,
    };
    expect(verifySignature(SW_BODY, vectorHeaders, SW_SECRET, { nowMs: SW_TIMESTAMP_S * 1000 })).toEqual({
      valid: true,
      scheme: 'standard',
      id: SW_ID,
      idSigned: true,
    });

    const headers = signRequest(BODY, SW_SECRET, 'evt', NOW, UA);
    delete headers['x-twenty-webhook-signature'];
    expect(verifySignature(BODY, headers, SW_SECRET, { nowMs: NOW })).toMatchObject({ valid: true, scheme: 'standard' });
  });

  it('accepts a Standard Webhooks signature among several space-separated entries', () => {
    const headers = {
      'webhook-id': SW_ID,
      'webhook-timestamp': String(SW_TIMESTAMP_S),
      'webhook-signature': `v1a,abc v1,${Buffer.alloc(32).toString('base64')} ${SW_SIGNATURE}`,
    };
    expect(verifySignature(SW_BODY, headers, SW_SECRET, { nowMs: SW_TIMESTAMP_S * 1000 })).toMatchObject({
      valid: true,
      scheme: 'standard',
    });
  });

  it('reads header names case-insensitively, as plain objects and as Headers', () => {
    const signed = signRequest(BODY, 'plain-secret', 'evt', NOW, UA);
    const titled = {
      'X-Twenty-Webhook-Timestamp': signed['x-twenty-webhook-timestamp'],
      'X-Twenty-Webhook-Signature': signed['x-twenty-webhook-signature'],
    };
    expect(verifySignature(BODY, titled, 'plain-secret', { nowMs: NOW }).valid).toBe(true);
    expect(verifySignature(BODY, new Headers(titled), 'plain-secret', { nowMs: NOW }).valid).toBe(true);
  });

  it('refuses a tampered body', () => {
    const headers = signRequest(BODY, SW_SECRET, 'evt', NOW, UA);
    const result = verifySignature(BODY.replace('zoe', 'eve'), headers, SW_SECRET, { nowMs: NOW });
    expect(result.valid).toBe(false);
    expect(result).toMatchObject({ reason: expect.stringContaining('signature mismatch') });
  });

  it('refuses a stale or future timestamp', () => {
    const headers = signRequest(BODY, SW_SECRET, 'evt', NOW, UA);
    const later = verifySignature(BODY, headers, SW_SECRET, { nowMs: NOW + 300_001 });
    expect(later).toMatchObject({ valid: false, reason: expect.stringContaining('tolerance') });
    const earlier = verifySignature(BODY, headers, SW_SECRET, { nowMs: NOW - 301_000 });
    expect(earlier.valid).toBe(false);
    expect(verifySignature(BODY, headers, SW_SECRET, { nowMs: NOW + 299_000 }).valid).toBe(true);
    expect(verifySignature(BODY, headers, SW_SECRET, { nowMs: NOW + 10_000, toleranceMs: 5_000 }).valid).toBe(false);
  });

  it('refuses a wrong secret', () => {
    const headers = signRequest(BODY, SW_SECRET, 'evt', NOW, UA);
    const other = 'whsec_' + Buffer.alloc(24, 7).toString('base64');
    expect(verifySignature(BODY, headers, other, { nowMs: NOW }).valid).toBe(false);
    expect(verifySignature(BODY, headers, 'plain-secret', { nowMs: NOW }).valid).toBe(false);
  });

  it('refuses missing and garbage headers without throwing', () => {
    const good = signRequest(BODY, SW_SECRET, 'evt', NOW, UA);
    const cases: unknown[] = [
      {},
      { 'x-twenty-webhook-signature': good['x-twenty-webhook-signature'] },
      { ...good, 'x-twenty-webhook-timestamp': 'NaN', 'webhook-timestamp': 'soon' },
      { ...good, 'x-twenty-webhook-timestamp': '1e12', 'webhook-timestamp': '-1' },
      { ...good, 'x-twenty-webhook-timestamp': '9'.repeat(400), 'webhook-timestamp': '9'.repeat(400) },
      { ...good, 'x-twenty-webhook-signature': 'zz'.repeat(32), 'webhook-signature': 'v1,!!!' },
      { ...good, 'x-twenty-webhook-signature': 'ab', 'webhook-signature': 'v1,' + 'A'.repeat(10_000) },
      { ...good, 'x-twenty-webhook-signature': ['a', 'b'], 'webhook-signature': ['v1', ''] },
      { ...good, 'x-twenty-webhook-signature': 42, 'webhook-signature': { v1: 'x' }, 'webhook-id': null },
      { ...good, 'x-twenty-webhook-signature': undefined, 'webhook-signature': ' '.repeat(1000) },
      {
        get(): string {
          throw new Error('hostile getter');
        },
      },
      null,
      'headers',
    ];
    for (const headers of cases) {
      const result = verifySignature(BODY, headers as Record<string, string>, SW_SECRET, { nowMs: NOW });
      expect(result.valid).toBe(false);
      expect(result).toHaveProperty('reason');
    }
    expect(verifySignature(undefined as unknown as string, good, SW_SECRET, { nowMs: NOW }).valid).toBe(false);
    expect(verifySignature(BODY, good, undefined as unknown as string, { nowMs: NOW }).valid).toBe(false);
  });

  it('refuses whsec_ secrets whose key is empty, short, long or not strict base64, so an empty-key forgery never passes', () => {
    const seconds = String(Math.floor(NOW / 1000));
    const emptyKeySignature = createHmac('sha256', Buffer.alloc(0)).update(`evt.${seconds}.${BODY}`).digest('base64');
    const forged = { 'webhook-id': 'evt', 'webhook-timestamp': seconds, 'webhook-signature': `v1,${emptyKeySignature}` };
    for (const secret of ['whsec_', 'whsec_a', 'whsec_!!!!', 'whsec_====']) {
      const result = verifySignature(BODY, forged, secret, { nowMs: NOW });
      expect(result, secret).toMatchObject({ valid: false, reason: expect.stringMatching(/whsec_ secret/) });
    }
    for (const bytes of [16, 23, 65]) {
      const secret = `whsec_${Buffer.alloc(bytes, 3).toString('base64')}`;
      const key = Buffer.alloc(bytes, 3);
      const signature = createHmac('sha256', key).update(`evt.${seconds}.${BODY}`).digest('base64');
      const headers = { 'webhook-id': 'evt', 'webhook-timestamp': seconds, 'webhook-signature': `v1,${signature}` };
      expect(verifySignature(BODY, headers, secret, { nowMs: NOW }), `${bytes} bytes`).toMatchObject({
        valid: false,
        reason: expect.stringMatching(/24 to 64 byte/),
      });
    }
    expect(verifySignature(BODY, signRequest(BODY, 'plain', 'evt', NOW, UA), '', { nowMs: NOW })).toMatchObject({ valid: false });
  });

  it('returns the id the signature covers: the body id (Twenty scheme), webhook-id (Standard scheme)', () => {
    const bodyId = JSON.parse(BODY).id as string;
    // A replayed request may carry any webhook-id header: the Twenty signature does not cover it.
    const twenty = signRequest(BODY, 'plain-secret', 'header-id-changed-by-a-replayer', NOW, UA);
    expect(verifySignature(BODY, twenty, 'plain-secret', { nowMs: NOW })).toEqual({ valid: true, scheme: 'twenty', id: bodyId, idSigned: true });
    const standard = signRequest(BODY, SW_SECRET, 'evt_standard', NOW, UA);
    delete standard['x-twenty-webhook-signature'];
    expect(verifySignature(BODY, standard, SW_SECRET, { nowMs: NOW })).toEqual({ valid: true, scheme: 'standard', id: 'evt_standard', idSigned: true });
    // A body in Twenty's own format has no id: the webhook-id header is the only one, and says it is unsigned.
    const twentyFormat = JSON.stringify({ targetUrl: 'https://x.example/', eventName: 'person.created', record: { id: 'r1' } });
    const noBodyId = signRequest(twentyFormat, 'plain-secret', 'evt_header', NOW, UA);
    expect(verifySignature(twentyFormat, noBodyId, 'plain-secret', { nowMs: NOW })).toEqual({
      valid: true,
      scheme: 'twenty',
      id: 'evt_header',
      idSigned: false,
    });
    delete noBodyId['webhook-id'];
    expect(verifySignature(twentyFormat, noBodyId, 'plain-secret', { nowMs: NOW })).toEqual({ valid: true, scheme: 'twenty', id: null, idSigned: false });
  });

  it('requireStandard refuses a request signed only with the Twenty scheme, and a plain secret', () => {
    const both = signRequest(BODY, SW_SECRET, 'evt_both', NOW, UA);
    expect(verifySignature(BODY, both, SW_SECRET, { nowMs: NOW, requireStandard: true })).toEqual({
      valid: true,
      scheme: 'standard',
      id: 'evt_both',
      idSigned: true,
    });
    const twentyOnly = { ...both };
    delete twentyOnly['webhook-signature'];
    expect(verifySignature(BODY, twentyOnly, SW_SECRET, { nowMs: NOW })).toMatchObject({ valid: true, scheme: 'twenty' });
    expect(verifySignature(BODY, twentyOnly, SW_SECRET, { nowMs: NOW, requireStandard: true })).toMatchObject({
      valid: false,
      reason: expect.stringMatching(/missing webhook-signature header \(the Standard Webhooks scheme was required\)/),
    });
    // A broken Standard signature is not rescued by a good Twenty one.
    const badStandard = { ...both, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')}` };
    expect(verifySignature(BODY, badStandard, SW_SECRET, { nowMs: NOW })).toMatchObject({ valid: true, scheme: 'twenty' });
    expect(verifySignature(BODY, badStandard, SW_SECRET, { nowMs: NOW, requireStandard: true })).toMatchObject({ valid: false, reason: 'signature mismatch' });
    const plain = signRequest(BODY, 'plain-secret', 'evt', NOW, UA);
    expect(verifySignature(BODY, plain, 'plain-secret', { nowMs: NOW, requireStandard: true })).toMatchObject({
      valid: false,
      reason: expect.stringMatching(/not a whsec_ secret/),
    });
  });

  it('defaults to a five-minute tolerance around the current time', () => {
    const headers = signRequest(BODY, 'plain-secret', 'evt', Date.now() - 60_000, UA);
    expect(verifySignature(BODY, headers, 'plain-secret').valid).toBe(true);
    const old = signRequest(BODY, 'plain-secret', 'evt', Date.now() - 301_000, UA);
    expect(verifySignature(BODY, old, 'plain-secret').valid).toBe(false);
  });
});
