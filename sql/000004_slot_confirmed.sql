-- The highest position this bridge has allowed itself to confirm on its slot, written BEFORE the
-- slot is told. The slot can therefore never be ahead of it in normal operation; a slot that is ahead
-- was recreated under the same name, advanced by hand or consumed by someone else, and the changes in
-- between never reached the bridge: it stops loudly instead of carrying on past the gap.
alter table :schema.slot_state add column if not exists confirmed_lsn pg_lsn;
