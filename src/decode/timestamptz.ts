/**
 * timestamptz text (as the walsender prints it, in its session's TimeZone) -> ISO-8601 UTC with
 * milliseconds, the form the payload promises whatever the server's time zone. Pure.
 */

/** "00" .. "99", so formatting a timestamp allocates only the result. */
const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? `0${i}` : `${i}`));
const SECONDS_PER_DAY = 86_400;

/**
 * ISO DateStyle output: `Y...Y-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]][ BC]`, in the session's time zone,
 * so offsets like +05:45, -03:30 or LMT's +00:19:32 occur. Result: UTC, exactly 3 fraction digits,
 * microseconds truncated (never rounded into the next second or day).
 *
 * BC years become ISO 8601 / ECMAScript extended astronomical years: 1 BC is year 0, 44 BC is -43,
 * so `0044-03-15 12:00:00+00 BC` -> "-000043-03-15T12:00:00.000Z". Years past 9999 (Postgres goes to
 * 294276) get the same 6-digit form with "+". All of them parse with `new Date()` where JS can
 * represent them. 'infinity' and '-infinity' stay as they are; anything unparseable stays text.
 */
export function timestamptzToIso(text: string): string {
  const len = text.length;
  let i = 0;
  let year = 0;
  for (let d = text.charCodeAt(0) - 48; d >= 0 && d <= 9; d = text.charCodeAt(++i) - 48) year = year * 10 + d;
  // Also rejects 'infinity', '-infinity' and non-ISO DateStyles ('11/26/2026 ...', 'Thu 26 Nov ...').
  if (i < 4 || len < i + 18 || text.charCodeAt(i) !== 0x2d) return text;
  if (text.charCodeAt(i + 3) !== 0x2d || text.charCodeAt(i + 6) !== 0x20 || text.charCodeAt(i + 9) !== 0x3a || text.charCodeAt(i + 12) !== 0x3a) {
    return text;
  }
  let month = twoDigits(text, i + 1);
  let day = twoDigits(text, i + 4);
  const hour = twoDigits(text, i + 7);
  const minute = twoDigits(text, i + 10);
  const second = twoDigits(text, i + 13);
  i += 15;

  let millis = 0;
  if (text.charCodeAt(i) === 0x2e) {
    let places = 0;
    for (let d = text.charCodeAt(++i) - 48; d >= 0 && d <= 9; d = text.charCodeAt(++i) - 48) {
      if (places < 3) {
        millis = millis * 10 + d;
        places++;
      }
    }
    for (; places < 3; places++) millis *= 10;
  }

  const sign = text.charCodeAt(i);
  if (sign !== 0x2b && sign !== 0x2d) return text;
  const offsetHours = twoDigits(text, i + 1);
  let offsetMinutes = 0;
  let offsetSeconds = 0;
  i += 3;
  if (text.charCodeAt(i) === 0x3a) {
    offsetMinutes = twoDigits(text, i + 1);
    i += 3;
    if (text.charCodeAt(i) === 0x3a) {
      offsetSeconds = twoDigits(text, i + 1);
      i += 3;
    }
  }
  if (i !== len) {
    if (i + 3 !== len || text.charCodeAt(i) !== 0x20 || text.charCodeAt(i + 1) !== 0x42 || text.charCodeAt(i + 2) !== 0x43) return text; // " BC"
    year = 1 - year;
  }
  if ((month | day | hour | minute | second | offsetHours | offsetMinutes | offsetSeconds) < 0) return text;

  const offset = offsetHours * 3600 + offsetMinutes * 60 + offsetSeconds;
  let secondOfDay = hour * 3600 + minute * 60 + second - (sign === 0x2b ? offset : -offset);
  // Offsets stay below a day, so UTC is at most one calendar day away.
  if (secondOfDay < 0) {
    secondOfDay += SECONDS_PER_DAY;
    if (--day === 0) {
      if (--month === 0) {
        month = 12;
        year--;
      }
      day = daysInMonth(year, month);
    }
  } else if (secondOfDay >= SECONDS_PER_DAY) {
    secondOfDay -= SECONDS_PER_DAY;
    if (++day > daysInMonth(year, month)) {
      day = 1;
      if (++month === 13) {
        month = 1;
        year++;
      }
    }
  }

  const h = (secondOfDay / 3600) | 0;
  const m = ((secondOfDay % 3600) / 60) | 0;
  const s = secondOfDay % 60;
  return `${formatYear(year)}-${TWO_DIGITS[month]}-${TWO_DIGITS[day]}T${TWO_DIGITS[h]}:${TWO_DIGITS[m]}:${TWO_DIGITS[s]}.${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
}

/** Two ASCII digits at `at` as a number, or a negative number when they are not digits. */
function twoDigits(text: string, at: number): number {
  const a = text.charCodeAt(at) - 48;
  const b = text.charCodeAt(at + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

/** Proleptic Gregorian, astronomical years (year 0 = 1 BC is a leap year), as Postgres counts. */
function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** ECMAScript date-time years: 0000-9999 plain, otherwise signed with six digits. */
function formatYear(year: number): string {
  if (year >= 0 && year <= 9999) return year < 10 ? `000${year}` : year < 100 ? `00${year}` : year < 1000 ? `0${year}` : `${year}`;
  return (year < 0 ? '-' : '+') + String(Math.abs(year)).padStart(6, '0');
}
