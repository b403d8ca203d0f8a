import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/duration.js';

describe('parseDuration', () => {
  it('reads a whole number and one unit', () => {
    expect(parseDuration('30d')).toBe(30 * 86_400_000); // 2,592,000,000
    expect(parseDuration('12h')).toBe(43_200_000);
    expect(parseDuration('45m')).toBe(2_700_000);
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('2w')).toBe(1_209_600_000);
    expect(parseDuration(' 7D ')).toBe(604_800_000);
    expect(parseDuration('0h')).toBe(0);
  });

  it('refuses anything else', () => {
    for (const text of ['', 'd', '30', '1.5h', '-1d', '30 days', 'a month', '1h30m', '1e3s', '9999999999d']) expect(parseDuration(text), text).toBeNull();
  });
});
