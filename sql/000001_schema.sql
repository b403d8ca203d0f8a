-- The bridge's own schema and the subscribers table (Twenty's webhook columns).
-- :schema is replaced by the configured schema name at migrate time.
create schema if not exists :schema;

create table if not exists :schema.webhooks (
  id uuid primary key default gen_random_uuid(),
  "targetUrl" text not null,
  operations text[] not null default '{*.*}',
  description text,
  -- two v4 UUIDs: 244 random bits from pg_strong_random, no extension needed
  secret text not null default replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
  "createdAt" timestamptz not null default now(),
  "updatedAt" timestamptz not null default now(),
  "deletedAt" timestamptz
);
