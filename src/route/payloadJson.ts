import { RawJson } from '../decode/values.js';

/**
 * JSON.stringify for payloads, except that json/jsonb column values (RawJson) are written as the text
 * Postgres printed: a receiver gets 12345678901234567890 in a jsonb document exactly, not rounded to a
 * double. Row values are null, booleans, finite numbers, strings, arrays and RawJson; anything else
 * (plain objects built by callers) is serialised like JSON.stringify would.
 */
export function stringifyPayload(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  return out.join('');
}

function write(value: unknown, out: string[]): void {
  if (value instanceof RawJson) {
    out.push(value.text);
  } else if (Array.isArray(value)) {
    out.push('[');
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(',');
      // As JSON.stringify: holes and undefined inside arrays become null.
      const element = value[i];
      if (element === undefined || typeof element === 'function' || typeof element === 'symbol') out.push('null');
      else write(element, out);
    }
    out.push(']');
  } else if (value !== null && typeof value === 'object' && !(value instanceof Date) && typeof (value as { toJSON?: unknown }).toJSON !== 'function') {
    out.push('{');
    let first = true;
    for (const key of Object.keys(value)) {
      const child = (value as Record<string, unknown>)[key];
      // As JSON.stringify: keys with undefined values are left out.
      if (child === undefined || typeof child === 'function' || typeof child === 'symbol') continue;
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(key), ':');
      write(child, out);
    }
    out.push('}');
  } else {
    // Strings, numbers (NaN/Infinity -> null), booleans, null, Dates and other toJSON() objects.
    out.push(JSON.stringify(value) ?? 'null');
  }
}
