import type pg from 'pg';
import { ReplicationError } from '../errors.js';
import { quoteIdent } from '../database.js';

export interface SlotInfo {
  slotName: string;
  plugin: string;
  slotType: string;
  database: string;
  temporary: boolean;
  active: boolean;
  activePid: number | null;
  confirmedFlushLsn: string | null;
  restartLsn: string | null;
  walStatus: string | null;
  lagBytes: string | null;
}

export async function readSlot(client: pg.ClientBase | pg.Pool, slot: string): Promise<SlotInfo | null> {
  const { rows } = await client.query(
    `select slot_name, plugin, slot_type, database, temporary, active, active_pid,
            confirmed_flush_lsn::text as confirmed_flush_lsn, restart_lsn::text as restart_lsn, wal_status,
            (pg_current_wal_lsn() - confirmed_flush_lsn)::text as lag_bytes
       from pg_replication_slots where slot_name = $1`,
    [slot],
  );
  const r = rows[0];
  if (!r) return null;
  return {
    slotName: r.slot_name,
    plugin: r.plugin,
    slotType: r.slot_type,
    database: r.database,
    temporary: r.temporary,
    active: r.active,
    activePid: r.active_pid,
    confirmedFlushLsn: r.confirmed_flush_lsn,
    restartLsn: r.restart_lsn,
    walStatus: r.wal_status,
    lagBytes: r.lag_bytes,
  };
}

/**
 * Creates the permanent pgoutput slot when it is missing, the first time only. An existing slot of
 * another plugin or database, one that Postgres invalidated, or one this bridge created that has since
 * disappeared, is an error: never dropped, never silently replaced, because a new slot would start at
 * the current position and lose the changes in between.
 */
export async function ensureSlot(client: pg.ClientBase | pg.Pool, slot: string, schema: string): Promise<SlotInfo & { recordedConfirmedLsn: string }> {
  const state = `${quoteIdent(schema)}.slot_state`;
  let info = await readSlot(client, slot);
  const recorded = await client.query(`select created_at, created_lsn::text as lsn from ${state} where slot_name = $1`, [slot]);
  if (!info && recorded.rowCount) {
    const { created_at: createdAt } = recorded.rows[0];
    throw new ReplicationError(
      'ERR_SLOT_DROPPED',
      `replication slot "${slot}" (created by this bridge at ${new Date(createdAt).toISOString()}) no longer exists: it was dropped or removed, and changes committed since the bridge last acknowledged are lost. Recover: "pg-webhook-bridge slot reset" creates a new slot at the current position (the gap cannot be recovered)`,
    );
  }
  if (!info) {
    try {
      await client.query(`select pg_create_logical_replication_slot($1, 'pgoutput', false)`, [slot]);
    } catch (error) {
      // 42710 duplicate_object: another replica created it at the same moment; fine.
      if ((error as { code?: string }).code !== '42710') {
        throw new ReplicationError(
          'ERR_SLOT_CREATE',
          `could not create replication slot "${slot}": ${(error as Error).message}; the role needs REPLICATION (ALTER ROLE ... REPLICATION) and wal_level=logical`,
          { cause: error },
        );
      }
    }
    info = await readSlot(client, slot);
  }
  if (!info) throw new ReplicationError('ERR_SLOT_MISSING', `replication slot "${slot}" vanished right after creation`);
  const startLsn = info.confirmedFlushLsn ?? info.restartLsn;
  await client.query(`insert into ${state} (slot_name, created_lsn, confirmed_lsn) values ($1, $2::pg_lsn, $2::pg_lsn) on conflict (slot_name) do nothing`, [
    slot,
    startLsn,
  ]);
  const { rows } = await client.query('select current_database() as db');
  assertSlotUsable(info, rows[0].db);
  // Recorded before any confirmation (set here on the first start after the column was added).
  const { rows: positions } = await client.query(
    `update ${state} set confirmed_lsn = coalesce(confirmed_lsn, $2::pg_lsn) where slot_name = $1
     returning confirmed_lsn::text as recorded, $2::pg_lsn > confirmed_lsn as ahead`,
    [slot, startLsn],
  );
  const { recorded: recordedLsn, ahead } = positions[0];
  if (ahead) throw slotAheadError(slot, recordedLsn, startLsn);
  return { ...info, recordedConfirmedLsn: recordedLsn };
}

/** The slot is past what this bridge ever confirmed: recreated, advanced or consumed by someone else. */
export function slotAheadError(slot: string, recorded: string, slotLsn: string | null): ReplicationError {
  return new ReplicationError(
    'ERR_SLOT_AHEAD',
    `replication slot "${slot}" is at ${slotLsn}, past ${recorded}, the furthest this bridge ever confirmed: it was dropped and recreated under the same name, advanced by hand, or read by another consumer, and the changes in between never reached the bridge (they are lost). Recover: "pg-webhook-bridge slot reset" creates a new slot at the current position (the gap cannot be recovered)`,
  );
}

/** `slot reset`: forget the old slot (dropping it if it still exists) and create a new one now. */
export async function resetSlot(client: pg.ClientBase | pg.Pool, slot: string, schema: string): Promise<SlotInfo> {
  const info = await readSlot(client, slot);
  if (info?.active) throw new ReplicationError('ERR_SLOT_ACTIVE', `replication slot "${slot}" is in use by PID ${info.activePid}: stop the bridge first`);
  if (info) await client.query('select pg_drop_replication_slot($1)', [slot]);
  await client.query(`delete from ${quoteIdent(schema)}.slot_state where slot_name = $1`, [slot]);
  return ensureSlot(client, slot, schema);
}

export function assertSlotUsable(info: SlotInfo, database: string): void {
  if (info.plugin !== 'pgoutput' || info.slotType !== 'logical') {
    throw new ReplicationError(
      'ERR_SLOT_PLUGIN',
      `replication slot "${info.slotName}" uses plugin ${info.plugin}, not pgoutput; choose another name with replication.slot`,
    );
  }
  if (info.database !== database) {
    throw new ReplicationError(
      'ERR_SLOT_DATABASE',
      `replication slot "${info.slotName}" belongs to database "${info.database}", not "${database}"; choose another name with replication.slot`,
    );
  }
  if (info.walStatus === 'lost') {
    throw new ReplicationError(
      'ERR_SLOT_LOST',
      `replication slot "${info.slotName}" was invalidated by Postgres (wal_status=lost): the WAL it needed is gone and changes in the gap cannot be recovered. Recover: "pg-webhook-bridge slot reset" creates a new slot at the current position (raise max_slot_wal_keep_size to avoid a repeat)`,
    );
  }
}
