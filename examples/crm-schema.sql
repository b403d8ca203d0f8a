-- A small CRM in Twenty's shape: camelCase columns, uuid keys, soft delete through "deletedAt".
-- Used by `npm run demo`, the tests and the benchmark.
create table if not exists public.person (
  id uuid primary key default gen_random_uuid(),
  "firstName" text,
  "lastName" text,
  email text,
  phone text,
  "jobTitle" text,
  city text,
  "companyId" uuid,
  "createdAt" timestamptz not null default now(),
  "updatedAt" timestamptz not null default now(),
  "deletedAt" timestamptz
);
create table if not exists public.company (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  "domainName" text,
  employees integer,
  "annualRecurringRevenue" numeric(20, 2),
  address jsonb,
  "idealCustomerProfile" boolean not null default false,
  "createdAt" timestamptz not null default now(),
  "updatedAt" timestamptz not null default now(),
  "deletedAt" timestamptz
);
create table if not exists public.note (
  id uuid primary key default gen_random_uuid(),
  title text,
  "bodyV2" text,
  position double precision,
  "createdAt" timestamptz not null default now(),
  "updatedAt" timestamptz not null default now(),
  "deletedAt" timestamptz
);
create table if not exists public.task (
  id uuid primary key default gen_random_uuid(),
  title text,
  status text not null default 'TODO',
  "dueAt" timestamptz,
  "assigneeId" uuid,
  "createdAt" timestamptz not null default now(),
  "updatedAt" timestamptz not null default now(),
  "deletedAt" timestamptz
);
