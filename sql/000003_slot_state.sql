-- Which slots this bridge created. A recorded slot that has gone missing means changes were lost
-- (someone dropped it, or Postgres removed it): the bridge stops loudly instead of silently creating
-- a new slot at the current position.
create table if not exists :schema.slot_state (
  slot_name text primary key,
  created_at timestamptz not null default now(),
  created_lsn pg_lsn
);
