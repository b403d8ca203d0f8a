import type { Logger } from '../log.js';
import { SubscriberIndex } from '../route/router.js';
import { parseSubscriberRow } from '../route/subscribers.js';
import type { Subscriber } from '../route/types.js';
import { compileOptions, type WebhookOptions } from '../route/webhookOptions.js';
import type { Queryable } from '../store/types.js';
import { hasWorkspaceColumn, loadWebhookRows, optionsOfRow } from '../store/webhookState.js';

export interface InvalidWebhook {
  id: string;
  problem: string;
}

/**
 * The current subscribers: valid, not soft-deleted, not disabled by the bridge. Reloaded whenever the
 * stream shows a change to the webhooks table and on a timer (state changes made by the CLI).
 */
export class WebhookRegistry {
  index = new SubscriberIndex([]);
  disabled = new Set<string>();
  invalid: InvalidWebhook[] = [];
  private readonly reported = new Set<string>();
  /**
   * Disabled by this process: `null` until its `disabled_at` is committed, then the number of reloads
   * started by that moment. Only a reload started after the commit can read it from the table; until
   * one has, the webhook stays disabled here whatever the table said to earlier reloads.
   */
  private readonly disabledHere = new Map<string, number | null>();
  /** Reloads overlap (the timer's and the stream's): one that began earlier must not undo a later one. */
  private reloadsStarted = 0;
  private newestApplied = 0;
  private workspaceColumn: Promise<boolean> | null = null;
  /** Compiled options by webhook: recompiled only when the stored options change. */
  private compiled = new Map<string, { key: string; options: WebhookOptions | null }>();

  constructor(
    private readonly db: Queryable,
    private readonly schema: string,
    private readonly webhooksTable: string,
    private readonly log: Logger,
  ) {}

  async reload(): Promise<void> {
    const generation = ++this.reloadsStarted;
    this.workspaceColumn ??= hasWorkspaceColumn(this.db, this.webhooksTable).catch((error: unknown) => {
      this.workspaceColumn = null;
      throw error;
    });
    const rows = await loadWebhookRows(this.db, this.schema, this.webhooksTable, await this.workspaceColumn);
    if (generation < this.newestApplied) return;
    this.newestApplied = generation;
    const active: Subscriber[] = [];
    const disabled = new Set<string>();
    const invalid: InvalidWebhook[] = [];
    const compiled = new Map<string, { key: string; options: WebhookOptions | null }>();
    for (const row of rows) {
      const parsed = parseSubscriberRow(row);
      if (!parsed.ok) {
        invalid.push({ id: parsed.id, problem: parsed.problem });
        const key = `${parsed.id}:${parsed.problem}`;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          this.log.warn({ webhookId: parsed.id, problem: parsed.problem }, `webhook ${parsed.id} skipped: ${parsed.problem}`);
        }
        continue;
      }
      if (parsed.ignoredOperations.length > 0) {
        const key = `${parsed.subscriber.id}:ignored:${JSON.stringify(parsed.ignoredOperations)}`;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          this.log.debug(
            { webhookId: parsed.subscriber.id, ignoredOperations: parsed.ignoredOperations },
            `webhook ${parsed.subscriber.id}: operations that are not "object.action" patterns are ignored`,
          );
        }
      }
      const here = this.disabledHere.get(parsed.subscriber.id);
      if (row.disabled_at != null || (here !== undefined && (here === null || generation <= here))) {
        disabled.add(parsed.subscriber.id);
        continue;
      }
      const options = this.optionsFor(parsed.subscriber.id, row, compiled);
      active.push(options === null ? parsed.subscriber : { ...parsed.subscriber, options });
    }
    this.compiled = compiled;
    for (const [id, recordedBy] of this.disabledHere) if (recordedBy !== null && generation > recordedBy) this.disabledHere.delete(id);
    this.index = new SubscriberIndex(active);
    this.disabled = disabled;
    this.invalid = invalid;
  }

  /** The webhook's compiled options, reused while the stored ones are unchanged; recorded in `next`. */
  private optionsFor(
    webhookId: string,
    row: Record<string, unknown>,
    next: Map<string, { key: string; options: WebhookOptions | null }>,
  ): WebhookOptions | null {
    const input = optionsOfRow(row);
    const key = JSON.stringify(input);
    const known = this.compiled.get(webhookId);
    if (known !== undefined && known.key === key) {
      next.set(webhookId, known);
      return known.options;
    }
    const options = compileOptions(input);
    next.set(webhookId, { key, options });
    if (options?.filterProblem != null) {
      const reportKey = `${webhookId}:filter:${key}`;
      if (!this.reported.has(reportKey)) {
        this.reported.add(reportKey);
        this.log.error(
          { webhookId, problem: options.filterProblem },
          `webhook ${webhookId} receives nothing: its stored filter does not compile (${options.filterProblem}); fix it with "pg-webhook-bridge webhooks set ${webhookId} --filter ..."`,
        );
      }
    }
    return options;
  }

  get active(): readonly Subscriber[] {
    return this.index.subscribers;
  }

  /** The bridge disabled a webhook itself: stop routing to it now; `recorded` once the table says so. */
  markDisabled(webhookId: string, recorded: boolean): void {
    this.disabledHere.set(webhookId, recorded ? this.reloadsStarted : null);
    this.disabled.add(webhookId);
    this.index = new SubscriberIndex(this.index.subscribers.filter((s) => s.id !== webhookId));
  }
}
