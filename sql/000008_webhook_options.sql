-- Per-webhook options, set with `webhooks set`: which updates a webhook wants (changed fields, a CEL
-- row filter), which columns it gets, and how long to coalesce bursts of updates of one record. Kept
-- in the bridge's own schema: the webhooks table may be Twenty's core.webhook, which the bridge only
-- reads. A webhook without a row (or with every column null) gets every event it subscribes to, whole.
create table if not exists :schema.webhook_options (
  webhook_id uuid primary key,
  on_fields text[],
  filter text,
  include_columns text[],
  exclude_columns text[],
  coalesce_seconds int check (coalesce_seconds between 1 and 300),
  updated_at timestamptz not null default now()
);
