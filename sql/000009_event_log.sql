-- The event log: each committed change the bridge routes is written here once, however many webhooks
-- need it, in segments (one row per batch of events). A webhook that falls behind, fails or restarts
-- reads forward from its cursor; one that keeps up is fed from memory and never reads it. With
-- delivery.retentionHours = 0 a change is written only while some webhook is behind; above 0 every
-- change is kept that long, for `deliveries replay` and `webhooks add --from`.
create table if not exists :schema.event_log (
  id bigserial primary key,
  -- the first and last event's position: (commit LSN of its transaction, index in the transaction)
  first_lsn pg_lsn not null,
  first_index integer not null,
  last_lsn pg_lsn not null,
  last_index integer not null,
  first_commit_at timestamptz not null,
  last_commit_at timestamptz not null,
  event_count integer not null,
  -- a JSON array of events, one array each (see encodeSegment in src/store/eventLog.ts)
  events text not null,
  -- a replay after a crash may write events again: readers skip positions they have passed
  created_at timestamptz not null default now()
);
-- readers ask for the segments after a position; retention asks for the oldest
create index if not exists event_log_last_position_idx on :schema.event_log (last_lsn, last_index);
create index if not exists event_log_last_commit_idx on :schema.event_log (last_commit_at);

-- Segments are large and compress well; lz4 (Postgres 14+, when built with it) costs far less CPU
-- than the default pglz. Without it the default applies.
do $$
begin
  execute $q$alter table :schema.event_log alter column events set compression lz4$q$;
exception when others then
  null;
end
$$;

-- Where each webhook that is behind reads from: every event at or after (lsn, change_index) is still
-- to be handled for it. A webhook without a row keeps up from memory. `paused_lsn` is set while its
-- webhook is disabled or removed: such a cursor does not keep segments past retention.
create table if not exists :schema.log_cursors (
  webhook_id uuid primary key,
  lsn pg_lsn not null,
  change_index integer not null,
  paused_lsn pg_lsn,
  updated_at timestamptz not null default now()
);
