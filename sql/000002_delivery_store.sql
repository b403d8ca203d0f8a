-- Durable delivery store. Only deliveries that could not be completed in memory land here: failed
-- ones, and those still pending when their transaction had to be acknowledged.
create table if not exists :schema.deliveries (
  id bigserial primary key,
  webhook_id uuid not null,
  event_id text not null,
  event_name text not null,
  -- object + primary key: deliveries of one record to one webhook go out in commit order
  record_key text not null,
  commit_lsn pg_lsn not null,
  change_index integer not null,
  body text not null,
  status text not null default 'pending' check (status in ('pending', 'dead')),
  attempts integer not null default 0,
  run_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  last_error text,
  last_status_code integer,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- a replay after a crash stores nothing twice
  constraint deliveries_event_webhook_key unique (event_id, webhook_id)
);

-- head-of-line lookups: the oldest pending delivery of each (webhook, record)
create index if not exists deliveries_pending_order_idx
  on :schema.deliveries (webhook_id, record_key, commit_lsn, change_index) where status = 'pending';
-- claims walk each webhook's pending deliveries in commit order and stop at the first due heads
create index if not exists deliveries_pending_position_idx
  on :schema.deliveries (webhook_id, commit_lsn, change_index) where status = 'pending';

-- The bridge's own view of each webhook: never written into the user's webhooks table.
create table if not exists :schema.webhook_state (
  webhook_id uuid primary key,
  disabled_at timestamptz,
  disabled_reason text,
  last_success_at timestamptz,
  failing_since timestamptz,
  last_error text,
  last_error_at timestamptz,
  updated_at timestamptz not null default now()
);
