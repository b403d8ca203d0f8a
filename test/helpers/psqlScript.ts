/**
 * Applying the psql scripts under sql/ that are not migrations (sql/least_privilege_role.sql): through
 * the real `psql` when one is installed, otherwise through a tiny expander of the psql subset those
 * scripts use, so the tests also run on a machine that has nothing but the npm packages.
 *
 * The subset: `\set NAME VALUE`, `\if :{?NAME}` / `\else` / `\endif`, `\set ON_ERROR_STOP on`, and
 * the interpolations `:'NAME'` (literal), `:"NAME"` (identifier) and `:NAME` (as is), which, as in
 * psql, happen only outside string literals, quoted identifiers, dollar quotes and comments, and
 * leave `::` casts and unknown names alone. Anything else is refused rather than guessed.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import pg from 'pg';

const SYSTEM_PSQL_CANDIDATES = ['/usr/bin/psql', '/usr/local/bin/psql'];

/** Path of a psql binary, or null. PSQL=<path> overrides; PSQL=none forces the expander. */
export function findPsql(): string | null {
  const forced = process.env.PSQL;
  if (forced === 'none') return null;
  if (forced) return forced;
  return SYSTEM_PSQL_CANDIDATES.find((p) => existsSync(p)) ?? null;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export function quoteIdentifier(value: string): string {
  return `"${value.replace(/"/g, '""')}"`;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;
const DOLLAR_TAG = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/;

/** Expands a psql script into plain SQL that one simple-protocol query can run. */
export function expandPsqlScript(script: string, variables: Record<string, string> = {}): string {
  const vars = new Map(Object.entries(variables));
  // One entry per open \if: whether its current branch runs, and whether any branch already ran.
  const branches: Array<{ running: boolean; taken: boolean }> = [];
  const active = (): boolean => branches.every((b) => b.running);
  let out = '';
  const emit = (text: string): void => {
    if (active()) out += text;
  };
  let i = 0;
  let lineStart = true;
  while (i < script.length) {
    const rest = script.slice(i);
    const ch = script[i];
    if (lineStart && /^[ \t]*\\/.test(rest)) {
      const end = script.indexOf('\n', i);
      const line = script.slice(i, end === -1 ? script.length : end).trim();
      metaCommand(line, vars, branches, active);
      i = end === -1 ? script.length : end + 1;
      lineStart = true;
      continue;
    }
    lineStart = false;
    let chunk: string;
    if (rest.startsWith('--')) {
      const end = rest.indexOf('\n');
      chunk = end === -1 ? rest : rest.slice(0, end);
    } else if (rest.startsWith('/*')) {
      const end = rest.indexOf('*/', 2);
      if (end === -1) throw new Error('unterminated /* comment');
      chunk = rest.slice(0, end + 2);
    } else if (ch === "'" || ch === '"') {
      let j = 1;
      for (;;) {
        const k = rest.indexOf(ch, j);
        if (k === -1) throw new Error(`unterminated ${ch === "'" ? 'string literal' : 'quoted identifier'}`);
        if (rest[k + 1] === ch) j = k + 2;
        else {
          chunk = rest.slice(0, k + 1);
          break;
        }
      }
    } else if (ch === '$' && DOLLAR_TAG.test(rest)) {
      const tag = DOLLAR_TAG.exec(rest)![0];
      const end = rest.indexOf(tag, tag.length);
      if (end === -1) throw new Error(`unterminated dollar quote ${tag}`);
      chunk = rest.slice(0, end + tag.length);
    } else if (rest.startsWith('::')) {
      chunk = '::';
    } else if (ch === ':') {
      const { text, length } = interpolate(rest, vars);
      emit(text);
      i += length;
      continue;
    } else {
      chunk = ch;
    }
    emit(chunk);
    i += chunk.length;
    if (chunk.endsWith('\n')) lineStart = true;
  }
  if (branches.length > 0) throw new Error('\\if without \\endif');
  return out;
}

function interpolationForm(rest: string): { kind: 'literal' | 'ident' | 'raw'; name: string; length: number } | null {
  const quoted = /^:(['"])([A-Za-z_][A-Za-z0-9_]*)\1/.exec(rest);
  if (quoted) return { kind: quoted[1] === "'" ? 'literal' : 'ident', name: quoted[2], length: quoted[0].length };
  const raw = NAME.exec(rest.slice(1));
  return raw ? { kind: 'raw', name: raw[0], length: raw[0].length + 1 } : null;
}

/** `:'name'`, `:"name"` or `:name` at the start of `rest`; an unknown name stays as written (as in psql). */
function interpolate(rest: string, vars: Map<string, string>): { text: string; length: number } {
  const form = interpolationForm(rest);
  if (!form) return { text: ':', length: 1 };
  const value = vars.get(form.name);
  if (value === undefined) return { text: rest.slice(0, form.length), length: form.length };
  const text = form.kind === 'literal' ? quoteLiteral(value) : form.kind === 'ident' ? quoteIdentifier(value) : value;
  return { text, length: form.length };
}

function metaCommand(line: string, vars: Map<string, string>, branches: Array<{ running: boolean; taken: boolean }>, active: () => boolean): void {
  const [command, ...args] = line.split(/\s+/);
  switch (command) {
    case '\\if': {
      const running = active() && evaluate(args.join(' '), vars);
      branches.push({ running, taken: running || !active() });
      return;
    }
    case '\\else': {
      const top = branches.at(-1);
      if (!top) throw new Error('\\else without \\if');
      top.running = !top.taken;
      top.taken = true;
      return;
    }
    case '\\endif':
      if (!branches.pop()) throw new Error('\\endif without \\if');
      return;
    case '\\set':
      if (!active()) return;
      if (!args[0] || !NAME.test(args[0])) throw new Error(`\\set needs a variable name: ${line}`);
      vars.set(
        args[0],
        args
          .slice(1)
          .map((a) => (a.startsWith("'") && a.endsWith("'") && a.length >= 2 ? a.slice(1, -1).replace(/''/g, "'") : a))
          .join(''),
      );
      return;
    default:
      throw new Error(`psql meta-command not supported by the test expander: ${line}`);
  }
}

function evaluate(expression: string, vars: Map<string, string>): boolean {
  const defined = /^:\{\?([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(expression.trim());
  if (defined) return vars.has(defined[1]);
  const word = expression.trim().toLowerCase();
  if (['true', 'on', '1', 'yes'].includes(word)) return true;
  if (['false', 'off', '0', 'no'].includes(word)) return false;
  throw new Error(`\\if expression not supported by the test expander: ${expression}`);
}

/** Runs a psql script file: `psql -X -f` when `via` is 'psql', our expander and one query otherwise. */
export async function applyPsqlScript(url: string, file: string, variables: Record<string, string>, via: 'psql' | 'expander'): Promise<string> {
  if (via === 'expander') {
    const sql = expandPsqlScript(readFileSync(file, 'utf8'), variables);
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => undefined);
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end().catch(() => undefined);
    }
    return '';
  }
  const psql = findPsql();
  if (!psql) throw new Error('no psql binary found');
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-f', file];
  for (const [name, value] of Object.entries(variables)) args.push('-v', `${name}=${value}`);
  return new Promise((resolve, reject) => {
    execFile(psql, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '10', LC_MESSAGES: 'C' } }, (error, stdout, stderr) => {
      if (error) reject(new Error(`psql -f ${file} failed: ${stderr || error.message}`, { cause: error }));
      else resolve(stdout + stderr);
    });
  });
}
