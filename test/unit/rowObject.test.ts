import { describe, expect, it } from 'vitest';
import { isPlainKey, newRow } from '../../src/decode/rowObject.js';

describe('row objects', () => {
  it('plain objects only when no key is an Object.prototype member', () => {
    expect(isPlainKey('firstName')).toBe(true);
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) expect(isPlainKey(name)).toBe(false);
    expect(Object.getPrototypeOf(newRow(true))).toBe(Object.prototype);
    expect(Object.getPrototypeOf(newRow(false))).toBe(null);
  });

  it('a prototype-less row keeps "__proto__" as a key and a missing "constructor" reads as undefined', () => {
    const row = newRow(false);
    row.__proto__ = 'polluted?';
    expect(JSON.stringify(row)).toBe('{"__proto__":"polluted?"}');
    expect(row.constructor).toBeUndefined();
  });
});
