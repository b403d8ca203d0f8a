import { describe, expect, it } from 'vitest';
import { calculateDelay, DATABASE_RETRY_SCHEDULE_MS, isTransientSqlState, NO_JITTER } from '../../src/deliver/backoff.js';
import pino from 'pino';
import { isRetryableDatabaseError, withDatabaseRetry } from '../../src/deliver/databaseRetry.js';
import { coerceError } from '../../src/errors.js';

describe('calculateDelay', () => {
  it('follows the schedule by attempt and returns null once it is spent', () => {
    const schedule = [100, 250, 500];
    expect([0, 1, 2, 3, 4].map((attempt) => calculateDelay(attempt, schedule, NO_JITTER))).toEqual([null, 100, 250, 500, null]);
  });

  it('spreads each delay by the jitter ratio around the scheduled value', () => {
    expect(calculateDelay(1, [1_000], { ratio: 0.2, random: () => 0 })).toBe(800);
    expect(calculateDelay(1, [1_000], { ratio: 0.2, random: () => 0.5 })).toBe(1_000);
    expect(calculateDelay(1, [1_000], { ratio: 0.2, random: () => 1 })).toBe(1_200);
  });

  it('gives the database retry schedule 100 ms first and 5 s at most', () => {
    expect(calculateDelay(1, DATABASE_RETRY_SCHEDULE_MS, NO_JITTER)).toBe(100);
    expect(Math.max(...DATABASE_RETRY_SCHEDULE_MS)).toBe(5_000);
  });
});

describe('transient database errors', () => {
  it('retries the named SQLSTATEs and connection exceptions, nothing else', () => {
    for (const code of ['40001', '40P01', '53300', '55P03', '57P01', '57P02', '57P03', '08006', '08003']) expect(isTransientSqlState(code)).toBe(true);
    for (const code of ['23505', '42P01', '42501', '22P02']) expect(isTransientSqlState(code)).toBe(false);
  });

  it('treats lost sockets as retryable and a unique violation as not', () => {
    expect(isRetryableDatabaseError(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isRetryableDatabaseError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isRetryableDatabaseError(Object.assign(new Error('duplicate key'), { code: '23505' }))).toBe(false);
  });
});

describe('coerceError', () => {
  it('returns an Error unchanged, code included', () => {
    const error = Object.assign(new Error('boom'), { code: '57P01' });
    expect(coerceError(error)).toBe(error);
  });

  it('wraps anything else in an Error that names it and keeps it as cause', () => {
    const wrapped = coerceError('plain string');
    expect(wrapped).toBeInstanceOf(Error);
    expect(wrapped.message).toContain('plain string');
    expect(wrapped.cause).toBe('plain string');
    expect(coerceError({ code: 'X' }).message).toContain('"code":"X"');
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(coerceError(circular).cause).toBe(circular);
  });
});

describe('withDatabaseRetry', () => {
  it('sends a statement again after a transient SQLSTATE, waiting the first step of the schedule, and tells the shutdown listener', async () => {
    const log = pino({ level: 'silent' });
    let calls = 0;
    let shuttingDown = 0;
    const started = performance.now();
    const result = await withDatabaseRetry(
      log,
      'test',
      async () => {
        if (++calls === 1) throw Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' });
        return 'done';
      },
      () => shuttingDown++,
    );
    expect(result).toBe('done');
    expect(calls).toBe(2);
    expect(shuttingDown).toBe(1);
    expect(performance.now() - started).toBeGreaterThanOrEqual(DATABASE_RETRY_SCHEDULE_MS[0] - 5);
  });

  it('throws anything else at once, as an Error', async () => {
    const log = pino({ level: 'silent' });
    await expect(withDatabaseRetry(log, 'test', () => Promise.reject(Object.assign(new Error('duplicate key'), { code: '23505' })))).rejects.toMatchObject({
      code: '23505',
    });
    await expect(withDatabaseRetry(log, 'test', () => Promise.reject('a string'))).rejects.toBeInstanceOf(Error);
  });
});
