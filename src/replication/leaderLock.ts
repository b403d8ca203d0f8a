import pg from 'pg';
import type { Logger } from '../log.js';

/**
 * Leader election through a Postgres session advisory lock, keyed by the slot name: whoever holds it
 * streams the slot; the others stand by and retry. The lock lives as long as the holder's session, so
 * a crashed or cut-off leader releases it when Postgres notices the session is gone (TCP keepalive on
 * both sides bounds that). No extra infrastructure.
 */
export class LeaderLock {
  private client: pg.Client | null = null;
  private lost: (() => void) | null = null;
  private released = false;

  constructor(
    private readonly clientConfig: pg.ClientConfig,
    private readonly slot: string,
    private readonly log: Logger,
  ) {}

  /** Tries once; true when this process is now the leader. Connection errors propagate. */
  async tryAcquire(onLost: () => void): Promise<boolean> {
    if (!this.client) {
      const client = new pg.Client({ ...this.clientConfig, application_name: 'pg-webhook-bridge leader lock' });
      client.on('error', (error) => this.handleLoss(error));
      client.on('end', () => this.handleLoss(new Error('leader lock connection ended')));
      await client.connect();
      if (this.released) {
        // release() ran while this connection was being made (a stop during start-up): close it.
        client.removeAllListeners();
        client.on('error', () => undefined);
        await client.end().catch(() => undefined);
        return false;
      }
      this.client = client;
    }
    const { rows } = await this.client.query(`select pg_try_advisory_lock(hashtext('pg-webhook-bridge'), hashtext($1)) as locked`, [this.slot]);
    if (rows[0].locked === true) this.lost = onLost;
    return rows[0].locked === true;
  }

  private handleLoss(error: Error): void {
    const client = this.client;
    this.client = null;
    client?.removeAllListeners();
    client?.on('error', () => undefined);
    const lost = this.lost;
    this.lost = null;
    if (lost) {
      this.log.error({ err: error }, 'lost the leader lock connection: stopping the stream so another replica can take over');
      lost();
    }
  }

  /** Releases the lock by closing its session; no lock is taken afterwards. */
  async release(): Promise<void> {
    this.released = true;
    this.lost = null;
    const client = this.client;
    this.client = null;
    client?.removeAllListeners();
    client?.on('error', () => undefined);
    await client?.end().catch(() => undefined);
  }
}
