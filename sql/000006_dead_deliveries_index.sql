-- The hourly purge of dead deliveries (delivery.purgeDeadAfterDays) finds the rows that died before a
-- time without reading the whole store: pending rows, the bulk of a backlog, are not in this index.
create index if not exists deliveries_dead_updated_idx
  on :schema.deliveries (updated_at) where status = 'dead';
