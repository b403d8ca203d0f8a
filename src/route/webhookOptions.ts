import { createRequire } from 'node:module';
import type * as Cel from '@bufbuild/cel';
import type * as CelExt from '@bufbuild/cel/ext';
import { OversizedValue } from '../decode/types.js';
import { RawJson } from '../decode/values.js';
import { stringifyPayload } from './payloadJson.js';
import type { Subscriber, WebhookEvent } from './types.js';

/** Longest coalescing window `webhooks set --coalesce` accepts, in seconds. */
export const MAX_COALESCE_SECONDS = 300;
/** Longest filter expression accepted: a filter is a condition, not a program. */
const MAX_FILTER_LENGTH = 4_096;

export const COLUMNS_CONFLICT = 'give --include-columns or --exclude-columns, not both';

/** A webhook's options as stored (`<schema>.webhook_options`); null: not set. */
export interface WebhookOptionsInput {
  onFields: readonly string[] | null;
  filter: string | null;
  includeColumns: readonly string[] | null;
  excludeColumns: readonly string[] | null;
  coalesceSeconds: number | null;
}

/** Why options kept an event from a webhook: the `reason` label of pgwb_events_filtered_total. */
export type FilterReason = 'on_fields' | 'filter' | 'filter_error' | 'columns';

type Program = (bindings: Record<string, unknown>) => unknown;

/** Options compiled once per load: sets for the names, a planned CEL program for the filter. */
export interface WebhookOptions {
  /** Updated events go through only when one of these fields changed. */
  readonly onFields: ReadonlySet<string> | null;
  readonly filter: { readonly source: string; readonly program: Program } | null;
  /** Why the stored filter does not compile (a library change, a hand-written row): the webhook then receives nothing. */
  readonly filterProblem: string | null;
  /** Keys of `data`/`record` kept (include) or removed (exclude). */
  readonly columns: { readonly include: boolean; readonly names: ReadonlySet<string> } | null;
  /** Coalescing window for updates of one record, in seconds; 0: off. Delivery applies it, not routing. */
  readonly coalesceSeconds: number;
}

const require = createRequire(import.meta.url);
let celLibrary: { cel: typeof Cel; env: Cel.CelEnv } | null = null;

/**
 * The CEL library, loaded on first use: it takes ~0.3 s to load, which CLI commands that never see a
 * filter (and `--help`) should not pay. The strings extension (lowerAscii, indexOf, split, ...) is
 * part of the common CEL dialect.
 */
function cel(): { cel: typeof Cel; env: Cel.CelEnv } {
  if (celLibrary === null) {
    const library = require('@bufbuild/cel') as typeof Cel;
    const { strings } = require('@bufbuild/cel/ext') as typeof CelExt;
    celLibrary = { cel: library, env: library.celEnv({ funcs: strings }) };
  }
  return celLibrary;
}

/** Parses and plans a CEL expression, or says where and why it does not compile. */
export function compileFilter(source: string): { ok: true; program: Program } | { ok: false; problem: string } {
  if (source.length > MAX_FILTER_LENGTH) return { ok: false, problem: `filter is longer than ${MAX_FILTER_LENGTH} characters` };
  try {
    const { cel: library, env } = cel();
    const program = library.plan(env, library.parse(source)) as Program;
    return { ok: true, program };
  } catch (error) {
    // The parser reports "<input>:line:column: found X but expecting Y".
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, problem: `filter does not compile: ${message.replace(/^<input>:(\d+):(\d+): /, 'at line $1, column $2: ')}` };
  }
}

/**
 * What `webhooks set` refuses, one line each; [] when the options are usable. Names are column or field
 * names as the body has them, so only their shape is checked here.
 */
export function validateOptions(input: WebhookOptionsInput): string[] {
  const problems: string[] = [];
  if (input.includeColumns !== null && input.excludeColumns !== null) problems.push(COLUMNS_CONFLICT);
  if (input.filter !== null) {
    const compiled = compileFilter(input.filter);
    if (!compiled.ok) problems.push(compiled.problem);
  }
  const c = input.coalesceSeconds;
  if (c !== null && (!Number.isInteger(c) || c < 1 || c > MAX_COALESCE_SECONDS)) {
    problems.push(`--coalesce must be a whole number of seconds from 0 (off) to ${MAX_COALESCE_SECONDS}`);
  }
  for (const [flag, names] of [
    ['--on-fields', input.onFields],
    ['--include-columns', input.includeColumns],
    ['--exclude-columns', input.excludeColumns],
  ] as const) {
    if (names !== null && names.some((n) => n.length === 0 || n.length > 200)) problems.push(`${flag}: names must be 1 to 200 characters`);
  }
  return problems;
}

/** Compiles stored options; null when none is set (the webhook stays on the fast path). */
export function compileOptions(input: WebhookOptionsInput): WebhookOptions | null {
  const { onFields, filter, includeColumns, excludeColumns, coalesceSeconds } = input;
  if (onFields === null && filter === null && includeColumns === null && excludeColumns === null && coalesceSeconds === null) return null;
  let compiled: WebhookOptions['filter'] = null;
  let filterProblem: string | null = null;
  if (filter !== null) {
    const result = compileFilter(filter);
    if (result.ok) compiled = { source: filter, program: result.program };
    else filterProblem = result.problem;
  }
  const columnNames = includeColumns ?? excludeColumns;
  return {
    onFields: onFields === null ? null : new Set(onFields),
    filter: compiled,
    filterProblem,
    columns: columnNames === null ? null : { include: includeColumns !== null, names: new Set(columnNames) },
    coalesceSeconds: coalesceSeconds ?? 0,
  };
}

/** Whether any option decides what a webhook gets (coalescing alone does not change routing). */
export function optionsShapeEvents(options: WebhookOptions | null | undefined): options is WebhookOptions {
  return options != null && (options.onFields !== null || options.filter !== null || options.filterProblem !== null || options.columns !== null);
}

export type OptionsOutcome = { body: string } | { filtered: FilterReason; problem?: string };

/** CEL bindings of an event, made once per event for all its filtered webhooks (see celBindings). */
export type CelBindings = Record<string, unknown>;

/**
 * The event's top-level keys as CEL sees them: rows become maps (any column name is a valid key, and
 * the library reads plain objects only), json values their parsed form, oversized values null.
 * `updatedFields` is an empty list on events other than updates, so one filter fits every event.
 */
export function celBindings(event: WebhookEvent): CelBindings {
  const bindings: CelBindings = {};
  const { fields } = event.payload;
  for (const key in fields) bindings[key] = toCel(fields[key]);
  bindings.updatedFields ??= [];
  return bindings;
}

function toCel(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value ?? null;
  if (value instanceof RawJson) return JSON.parse(value.text);
  if (value instanceof OversizedValue) return null;
  if (Array.isArray(value)) return value.map(toCel);
  const map = new Map<string, unknown>();
  for (const key of Object.keys(value)) map.set(key, toCel((value as Record<string, unknown>)[key]));
  return map;
}

/**
 * Pure: the body one webhook gets for an event under its options, or why it gets nothing. In order:
 * changed fields (updates only), the row filter (on the whole event, so it can test columns the
 * webhook does not receive), column selection. `bindings` is called at most once.
 */
export function applyOptions(event: WebhookEvent, subscriber: Subscriber, options: WebhookOptions, bindings: () => CelBindings): OptionsOutcome {
  if (options.filterProblem !== null) return { filtered: 'filter_error', problem: options.filterProblem };
  const { fields, recordKey } = event.payload;
  const updatedFields = fields.updatedFields as readonly string[] | undefined;
  // Without the old row (REPLICA IDENTITY not FULL) an update does not say what changed: sent.
  if (options.onFields !== null && event.action === 'updated' && updatedFields !== undefined && !updatedFields.some((f) => options.onFields!.has(f))) {
    return { filtered: 'on_fields' };
  }
  if (options.filter !== null) {
    let result: unknown;
    try {
      result = options.filter.program(bindings());
    } catch (error) {
      result = error;
    }
    if (result instanceof Error || cel().cel.isCelError(result)) return { filtered: 'filter_error', problem: result.message };
    if (typeof result !== 'boolean') return { filtered: 'filter_error', problem: `the filter gave ${celTypeName(result)}, not true or false` };
    if (!result) return { filtered: 'filter' };
  }
  if (options.columns === null) return { body: event.bodyFor === null ? event.body : event.bodyFor(subscriber) };
  const { include, names } = options.columns;
  const keep = (name: string): boolean => names.has(name) === include;
  const narrowed: Record<string, unknown> = { ...fields };
  const record = fields[recordKey] as Record<string, unknown> | null | undefined;
  if (record != null) {
    const kept: Record<string, unknown> = Object.create(Object.getPrototypeOf(record) as object | null) as Record<string, unknown>;
    for (const key of Object.keys(record)) if (keep(key)) kept[key] = record[key];
    narrowed[recordKey] = kept;
  }
  if (updatedFields !== undefined) {
    const kept = updatedFields.filter(keep);
    if (event.action === 'updated' && updatedFields.length > 0 && kept.length === 0) return { filtered: 'columns' };
    narrowed.updatedFields = kept;
  }
  if (Array.isArray(fields.unavailableFields)) narrowed.unavailableFields = (fields.unavailableFields as string[]).filter(keep);
  if (event.payload.namesWebhook) {
    narrowed.targetUrl = subscriber.targetUrl;
    narrowed.webhookId = subscriber.id;
  }
  return { body: event.payload.rawJson ? stringifyPayload(narrowed) : JSON.stringify(narrowed) };
}

function celTypeName(value: unknown): string {
  if (value === null) return 'null';
  if (value instanceof Map) return 'a map';
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value}`;
}

/** Compact text of options for `webhooks list`: `on-fields=name,email filter=... coalesce=2s`. */
export function describeOptions(input: WebhookOptionsInput): string {
  const parts: string[] = [];
  if (input.onFields !== null) parts.push(`on-fields=${input.onFields.join(',')}`);
  if (input.filter !== null) parts.push(`filter=${input.filter}`);
  if (input.includeColumns !== null) parts.push(`include-columns=${input.includeColumns.join(',')}`);
  if (input.excludeColumns !== null) parts.push(`exclude-columns=${input.excludeColumns.join(',')}`);
  if (input.coalesceSeconds !== null) parts.push(`coalesce=${input.coalesceSeconds}s`);
  return parts.join(' ');
}
