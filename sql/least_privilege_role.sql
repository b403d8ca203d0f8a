-- pg-webhook-bridge: a least-privilege login role for the daemon (contract section 8).
--
-- NOT a migration: `migrate` applies only the numbered NNNNNN_*.sql files and never this one.
--
-- Recommended split: an admin (owner of the watched tables, or a superuser) runs `migrate`, which
-- creates the bridge's schema, its tables and the publication; the daemon then runs as the role made
-- here, which can stream changes and keep its own state but cannot change any schema:
--
--   pg-webhook-bridge --database-url "$ADMIN_URL" migrate
--   psql "$ADMIN_URL" -v role=webhook_bridge_daemon -f sql/least_privilege_role.sql
--   psql "$ADMIN_URL" -c '\password webhook_bridge_daemon'
--   DATABASE_URL="postgres://webhook_bridge_daemon:...@db:5432/crm" pg-webhook-bridge start
--
-- Run it as a superuser: only a superuser can give a role the REPLICATION attribute (on Postgres 16+
-- also a CREATEROLE role that itself has REPLICATION; on Amazon RDS/Aurora grant `rds_replication`
-- instead, on Cloud SQL set the role's REPLICATION through `cloudsqlsuperuser`).
--
-- Variables (psql -v name=value) and their defaults:
--   role         webhook_bridge_daemon  the login role the daemon connects as (names starting with
--                                       pg_ are reserved by Postgres)
--   schema       webhook_bridge         the bridge's schema (config key `schema`)
--   publication  pg_webhook_bridge      the publication `migrate` made (`replication.publication`)
--   password     (unset)                when given, becomes the role's password; prefer \password
--                                       (a -v value shows in the process list and shell history)
--
-- What the role gets, and why:
--   LOGIN REPLICATION (not SUPERUSER)  create the permanent slot (pg_create_logical_replication_slot)
--                                      and stream it (START_REPLICATION); publications need nothing
--                                      more on the sending side
--   CONNECT on this database           the query pool and the replication connection
--   USAGE on the bridge's schema,      its durable delivery store and per-webhook state; no CREATE:
--   SELECT/INSERT/UPDATE/DELETE on     only `migrate` (the admin) changes the schema
--   its state tables, USAGE/SELECT
--   on their sequences
--   USAGE on each published table's    read the watched tables and the webhooks table (the daemon
--   schema, SELECT on each published   never writes the user's tables); the publication lists both
--   table
--   EXECUTE on                         heartbeats that let the slot advance while tables are idle;
--   pg_logical_emit_message            granted to PUBLIC by default (14 to 18), granted here only
--                                      where an admin revoked it
--
-- Idempotent: run it again after `migrate` adds a table (a new numbered file, or a table added to
-- `source.tables`), and the role follows. It refuses to touch an existing superuser role.
--
-- CLI commands that write the user's webhooks table (`webhooks add`, `webhooks remove`) need a role
-- that may write it (the admin, or the application that owns the table); `check`, `webhooks list`,
-- `webhooks enable|disable` and `deliveries list|redeliver` work as this role.

\set ON_ERROR_STOP on

\if :{?role}
\else
\set role webhook_bridge_daemon
\endif
\if :{?schema}
\else
\set schema webhook_bridge
\endif
\if :{?publication}
\else
\set publication pg_webhook_bridge
\endif

-- The DO block below cannot see psql variables (no interpolation inside dollar quotes): hand them over
-- as session settings.
set pgwb.role = :'role';
set pgwb.schema = :'schema';
set pgwb.publication = :'publication';

do $grant$
declare
  r text := current_setting('pgwb.role');
  s text := current_setting('pgwb.schema');
  p text := current_setting('pgwb.publication');
  t record;
begin
  if not exists (select from pg_publication where pubname = p) then
    raise exception 'publication "%" does not exist', p
      using hint = 'run "pg-webhook-bridge migrate" as an admin first, or pass -v publication=<replication.publication>';
  end if;
  if not exists (select from pg_namespace where nspname = s) then
    raise exception 'schema "%" does not exist', s
      using hint = 'run "pg-webhook-bridge migrate" as an admin first, or pass -v schema=<schema>';
  end if;
  if exists (select from pg_roles where rolname = r and rolsuper) then
    raise exception 'role "%" is a superuser; the daemon role must not be', r
      using hint = 'pass -v role=<another name>';
  end if;

  if not exists (select from pg_roles where rolname = r) then
    execute format('create role %I login replication', r);
  else
    execute format('alter role %I login replication', r);
  end if;

  execute format('grant connect on database %I to %I', current_database(), r);

  -- The bridge's own state: every table of its schema except the user's webhooks table (read below,
  -- through the publication) and the migrations ledger (only `migrate` uses it).
  execute format('grant usage on schema %I to %I', s, r);
  for t in
    select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = s and c.relkind in ('r', 'p', 'S') and c.relname not in ('webhooks', 'migrations')
  loop
    if t.relkind = 'S' then
      execute format('grant usage, select on sequence %I.%I to %I', s, t.relname, r);
    else
      execute format('grant select, insert, update, delete on table %I.%I to %I', s, t.relname, r);
    end if;
  end loop;

  -- Watched tables and the webhooks table: read only.
  for t in select distinct schemaname, tablename from pg_publication_tables where pubname = p loop
    execute format('grant usage on schema %I to %I', t.schemaname, r);
    execute format('grant select on table %I.%I to %I', t.schemaname, t.tablename, r);
  end loop;

  -- Heartbeats. Every overload (the signature changed in 17); only where PUBLIC lost the right.
  for t in select oid::regprocedure as proc from pg_proc where proname = 'pg_logical_emit_message' and pronamespace = 'pg_catalog'::regnamespace loop
    if not has_function_privilege(r, t.proc, 'execute') then
      execute format('grant execute on function %s to %I', t.proc, r);
    end if;
  end loop;
end
$grant$;

\if :{?password}
alter role :"role" password :'password';
\endif

reset pgwb.role;
reset pgwb.schema;
reset pgwb.publication;
