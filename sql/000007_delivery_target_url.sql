-- The targetUrl each stored delivery was routed for. When a webhook's targetUrl changes, deliveries
-- routed for the previous URL are set aside (dead, with a reason) instead of going to the new one;
-- `deliveries redeliver` clears it (null: the webhook's current URL), as it is for rows stored before
-- this column existed.
alter table :schema.deliveries add column if not exists target_url text;
