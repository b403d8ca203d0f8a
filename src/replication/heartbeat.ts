import type { Queryable } from '../database.js';

/** Prefix of the heartbeat messages the bridge writes to WAL; the decoder recognises them by it. */
export const HEARTBEAT_PREFIX = 'pg_webhook_bridge_heartbeat';

/**
 * Writes a non-transactional logical message into WAL: the stream sees it even while the watched tables
 * are idle, so the slot position can advance past other databases' WAL.
 */
export async function emitHeartbeat(db: Queryable): Promise<void> {
  await db.query('select pg_logical_emit_message(false, $1, $2)', [HEARTBEAT_PREFIX, '']);
}
