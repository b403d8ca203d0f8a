-- pg-webhook-bridge: a least-privilege login role for the daemon.
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
--   role            webhook_bridge_daemon  the login role the daemon connects as (names starting with
--                                          pg_ are reserved by Postgres)
--   schema          webhook_bridge         the bridge's schema (config key `schema`)
--   publication     pg_webhook_bridge      the publication `migrate` made (`replication.publication`)
--   webhooks_table  <schema>.webhooks      the subscribers table (`webhooks.table`), schema-qualified
--   password        (unset)                when given, becomes the role's password; prefer \password
--                                          (a -v value shows in the process list and shell history)
--
-- What the role gets, and why (each grant is something the daemon's own SQL, src/**, runs; nothing
-- else is granted):
--   LOGIN REPLICATION (not SUPERUSER)  create the permanent slot (pg_create_logical_replication_slot)
--                                      and stream it (START_REPLICATION); pgoutput checks no table
--                                      privilege, so the watched tables need no grant at all
--   CONNECT on this database           the query pool and the replication connection
--   USAGE on the bridge's schema       its state tables; no CREATE: only `migrate` changes the schema
--   deliveries: SELECT INSERT UPDATE   the durable store: store, claim, retry, dead, complete;
--               DELETE                 `deliveries list|redeliver`, `status`
--   deliveries_id_seq: USAGE           ids of stored deliveries (nextval)
--   webhook_state: SELECT INSERT       per-webhook health, auto-disable (410, failing too long),
--                  UPDATE              `webhooks enable|disable`; rows are upserted, never deleted
--   webhook_options: SELECT INSERT     per-webhook filters and column selection, read with the
--                    UPDATE            webhooks; `webhooks set` upserts them (never deleted)
--   event_log: SELECT INSERT DELETE    the event log: segments written once, read by lagging webhooks,
--                                      deleted once no cursor needs them (retention)
--   event_log_id_seq: USAGE            ids of segments (nextval)
--   log_cursors: SELECT INSERT UPDATE  where each lagging webhook reads from; deleted once it keeps
--                DELETE                up again
--   slot_state: SELECT INSERT UPDATE   which slot this bridge created and the furthest position it
--               DELETE                 confirmed; DELETE only for `slot reset` (which needs REPLICATION
--                                      to drop the old slot, so it runs as this role)
--   SELECT on the webhooks table,      the subscribers; the daemon never writes them
--   USAGE on its schema
--   EXECUTE on                         heartbeats that let the slot advance while tables are idle;
--   pg_logical_emit_message            granted to PUBLIC by default (14 to 18), granted here only
--                                      where an admin revoked it
-- This list is for source.mode = "tables"; Twenty mode also reads core.workspace, core."dataSource",
-- core."objectMetadata" and core."fieldMetadata", and adds workspace tables to the publication, none
-- of which is granted here (docs/configuration.md, "Twenty mode", gives the grants and what a role
-- that does not own Twenty's tables can and cannot do).
-- Nothing on the watched tables, nothing on the migrations ledger (only `migrate` reads it). Run again
-- over a role made by an older version of this script, it revokes what it no longer grants (SELECT on
-- the watched tables).
--
-- What REPLICATION reaches beyond this database, and how to fence it in with pg_hba.conf: a
-- REPLICATION role may open a PHYSICAL replication connection wherever pg_hba.conf has a
-- `replication` line matching it (the `host replication all ...` lines initdb writes match every
-- role): it can then take a base backup of the whole cluster (every database, every role's password
-- hash) or stream all of its WAL (pg_basebackup, pg_receivewal). It may also open a LOGICAL
-- replication connection to any database it may connect to (CONNECT is granted to PUBLIC by default)
-- and read every change there through a slot of its own: pgoutput checks no table privilege. A logical
-- walsender is matched in pg_hba.conf by its database name, a physical one only by the `replication`
-- keyword, so these lines, ABOVE every other line that could match the role, limit it to its own
-- database, logical replication included (first match wins; put your database, role and network):
--
--   hostssl  crm          webhook_bridge_daemon  10.0.0.0/8  scram-sha-256
--   host     all          webhook_bridge_daemon  all         reject
--   host     replication  webhook_bridge_daemon  all         reject
--
-- and reload (select pg_reload_conf()). Two reaches no pg_hba.conf line limits, since they are SQL on
-- an ordinary connection: it can drop (pg_drop_replication_slot) any replication slot of the cluster
-- that no session is using, a standby's physical slot included, and it can create and read logical
-- slots in its own database. Treat its password like a read-everything credential of this database.
--
-- Idempotent: run it again after `migrate` adds a table (a new numbered file), and the role follows.
-- It refuses to touch an existing superuser role, and a table in the bridge's schema it does not know
-- (a bridge newer than this script).
--
-- CLI commands that write the user's webhooks table (`webhooks add`, `webhooks remove`) need a role
-- that may write it (the admin, or the application that owns the table); `check`, `status`,
-- `webhooks list`, `webhooks enable|disable|set`, `deliveries list|redeliver` and `slot reset` work as
-- this role.

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
\if :{?webhooks_table}
\else
\set webhooks_table ''
\endif

-- The DO block below cannot see psql variables (no interpolation inside dollar quotes): hand them over
-- as session settings.
set pgwb.role = :'role';
set pgwb.schema = :'schema';
set pgwb.publication = :'publication';
set pgwb.webhooks_table = :'webhooks_table';

do $grant$
declare
  r text := current_setting('pgwb.role');
  s text := current_setting('pgwb.schema');
  p text := current_setting('pgwb.publication');
  w text := coalesce(nullif(current_setting('pgwb.webhooks_table'), ''), format('%I.webhooks', current_setting('pgwb.schema')));
  webhooks regclass;
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
  webhooks := to_regclass(w);
  if webhooks is null then
    raise exception 'webhooks table % does not exist', w
      using hint = 'run "pg-webhook-bridge migrate" as an admin first, or pass -v webhooks_table=<webhooks.table>';
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

  -- The bridge's own state, table by table: exactly the statements the daemon and the CLI commands
  -- that run as this role use (see the list at the top). Whatever was granted before is revoked first.
  execute format('grant usage on schema %I to %I', s, r);
  for t in
    select c.oid::regclass as rel, c.relname, needs.privileges, needs.relname is not null as known
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      left join (values ('deliveries', 'select, insert, update, delete'),
                        ('webhook_state', 'select, insert, update'),
                        ('webhook_options', 'select, insert, update'),
                        ('slot_state', 'select, insert, update, delete'),
                        ('event_log', 'select, insert, delete'),
                        ('log_cursors', 'select, insert, update, delete'),
                        -- only `migrate` reads the ledger; `webhooks` here is the default subscribers
                        -- table when webhooks_table names another one
                        ('migrations', null),
                        ('webhooks', null)) as needs(relname, privileges) on needs.relname = c.relname
     where n.nspname = s and c.relkind in ('r', 'p') and c.oid <> webhooks and not c.relispartition
  loop
    if not t.known then
      raise exception 'table %.% is not known to this script, so the daemon role would get nothing on it', s, t.relname
        using hint = 'use sql/least_privilege_role.sql from the same version of pg-webhook-bridge as the one that ran migrate';
    end if;
    execute format('revoke all on table %s from %I', t.rel, r);
    if t.privileges is not null then
      execute format('grant %s on table %s to %I', t.privileges, t.rel, r);
    end if;
  end loop;
  -- Sequences behind serial/identity columns of the tables the role inserts into: nextval needs USAGE.
  for t in
    select distinct d.objid::regclass as seq, has_table_privilege(r, d.refobjid, 'insert') as inserts
      from pg_depend d join pg_class c on c.oid = d.objid and c.relkind = 'S'
      join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = s and d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
  loop
    execute format('revoke all on sequence %s from %I', t.seq, r);
    if t.inserts then
      execute format('grant usage on sequence %s to %I', t.seq, r);
    end if;
  end loop;

  -- The subscribers table: read only.
  execute format('grant usage on schema %I to %I', (select nspname from pg_namespace where oid = (select relnamespace from pg_class where oid = webhooks)), r);
  execute format('grant select on table %s to %I', webhooks, r);

  -- The watched tables: nothing (older versions of this script granted SELECT).
  for t in select distinct schemaname, tablename from pg_publication_tables where pubname = p loop
    if format('%I.%I', t.schemaname, t.tablename)::regclass <> webhooks then
      execute format('revoke select on table %I.%I from %I', t.schemaname, t.tablename, r);
    end if;
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
reset pgwb.webhooks_table;
