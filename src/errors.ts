/**
 * Every error the bridge raises on purpose carries a stable `code` (for logs, metrics and tests) and,
 * where one exists, the original `cause`. Messages say what failed and how to fix it.
 */
export class BridgeError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Invalid or missing configuration; raised before any connection is made. */
export class ConfigError extends BridgeError {
  readonly problems: string[];

  constructor(problems: string[], options?: { cause?: unknown }) {
    super('ERR_CONFIG', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, options);
    this.problems = problems;
  }
}

/** The replication connection, slot or publication is unusable. */
export class ReplicationError extends BridgeError {}

/** A pgoutput message could not be decoded: fatal, the stream stops without acknowledging. */
export class DecodeError extends BridgeError {
  readonly lsn: string | undefined;

  constructor(message: string, lsn?: string, options?: { cause?: unknown }) {
    super('ERR_DECODE', lsn ? `${message} (at LSN ${lsn})` : message, options);
    this.lsn = lsn;
  }
}

/** One delivery attempt failed; `retryable` says whether another attempt may succeed. */
export class DeliveryError extends BridgeError {
  readonly statusCode: number | undefined;
  readonly retryable: boolean;

  constructor(code: string, message: string, { statusCode, retryable, cause }: { statusCode?: number; retryable: boolean; cause?: unknown }) {
    super(code, message, { cause });
    this.statusCode = statusCode;
    this.retryable = retryable;
  }
}

/** A preflight check found problems; each line names the problem and its fix. */
export class PreflightError extends BridgeError {
  readonly problems: string[];

  constructor(problems: string[]) {
    super('ERR_PREFLIGHT', `preflight failed:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}

/**
 * What a catch block works with: the thrown value itself when it is an Error (its `code` and `cause`
 * intact), otherwise an Error that says what was thrown and keeps it as `cause`.
 */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  const described = typeof thrown === 'string' ? thrown : safeDescribe(thrown);
  return new Error(`non-Error thrown: ${described}`, { cause: thrown });
}

function safeDescribe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
