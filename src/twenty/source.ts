import type { Logger } from '../log.js';
import type { Queryable } from '../database.js';
import { EMPTY_CATALOG, loadTwentyCatalog, metadataFingerprint } from './catalog.js';
import { addMissingTables, type PublicationSyncResult } from './publication.js';
import type { TwentyCatalog } from './types.js';

/** What the watcher reports after each check, for metrics. */
export interface TwentySourceObserver {
  catalogLoaded(catalog: TwentyCatalog): void;
  /** Tables the bridge should stream but could not add to the publication or make FULL. */
  unmanagedTables(count: number): void;
}

/**
 * Follows Twenty's metadata while the daemon runs: a new workspace, object or field is found within
 * one check interval, its table joins the publication (made REPLICA IDENTITY FULL first), and routing
 * uses the new catalog. A cheap fingerprint query runs each interval; the full load only when the
 * metadata changed, and also after a failed table, so that a fixed privilege takes effect.
 */
export class TwentySource {
  catalog: TwentyCatalog = EMPTY_CATALOG;
  private fingerprint: string | null = null;
  private lastProblems = new Set<string>();
  private retryTables = false;
  private running: Promise<void> | null = null;

  constructor(
    private readonly db: Queryable,
    private readonly publication: string,
    private readonly observer: TwentySourceObserver,
    private readonly log: Logger,
  ) {}

  /** Loads the catalog (if the metadata changed) and brings the publication up to date. */
  refresh(): Promise<void> {
    // One check at a time: the timer may fire while a slow load still runs.
    this.running ??= this.check().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async check(): Promise<void> {
    const fingerprint = await metadataFingerprint(this.db);
    if (fingerprint === this.fingerprint && !this.retryTables) return;
    const catalog = await loadTwentyCatalog(this.db);
    const sync = await addMissingTables(this.db, this.publication, catalog.objects);
    this.report(sync);
    this.catalog = catalog;
    this.fingerprint = fingerprint;
    this.observer.catalogLoaded(catalog);
    this.log.debug({ workspaces: catalog.workspaceCount, tables: catalog.objects.length }, 'Twenty metadata loaded');
  }

  private report(sync: PublicationSyncResult): void {
    for (const table of sync.added) this.log.info({ table }, `table ${table} joined the publication: its changes are streamed from now on`);
    this.retryTables = sync.problems.length > 0;
    this.observer.unmanagedTables(sync.problems.length);
    const problems = new Set(sync.problems);
    for (const problem of problems) {
      if (this.lastProblems.has(problem)) continue;
      this.log.error(
        { problem },
        `cannot stream a Twenty table: ${problem}. The bridge's role must own Twenty's tables (or be a member of their owner) to add them to the publication and set REPLICA IDENTITY FULL; "pg-webhook-bridge check" lists what is missing`,
      );
    }
    this.lastProblems = problems;
  }
}
