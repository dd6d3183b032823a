-- The example warehouse model: a schema, a users table with a few rows, and the read-only role
-- kinesync connects as. Load it with:
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f examples/warehouse/schema.sql
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE IF NOT EXISTS analytics.users (
    id          bigint PRIMARY KEY,
    email       text NOT NULL,
    plan        text,
    lifetime    numeric(20, 2),
    tags        text[],
    attributes  jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO analytics.users (id, email, plan, lifetime, tags, attributes, updated_at) VALUES
    (1, 'ada@example.com',   'pro',  1234.50, '{vip,beta}', '{"country": "GB"}', '2026-11-30T09:00:00Z'),
    (2, 'grace@example.com', 'free', 0,       '{}',         '{"country": "US"}', '2026-11-30T09:05:00Z'),
    (3, 'alan@example.com',  NULL,   99.99,   '{beta}',     NULL,                '2026-11-30T09:10:00Z')
ON CONFLICT (id) DO NOTHING;

-- What kinesync needs to read the model: to connect, to see the schema, to select the table.
-- (With the sync state kept in its local SQLite file, it writes nothing to the warehouse.
-- With `[sync] state_schema = "kinesync"`, it also creates that schema and its tables: grant
-- CREATE on the database, as at the end of this file.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kinesync_reader') THEN
        CREATE ROLE kinesync_reader LOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA analytics TO kinesync_reader;
GRANT SELECT ON analytics.users TO kinesync_reader;

-- Only for the state kept in the warehouse (`[sync] state_schema`): kinesync creates its schema
-- and tables itself, and owns them. A `table` model is then diffed from the last complete
-- run's mark only if the role may run pg_control_system() (the cluster's identity, which
-- the mark is tied to): every role may, unless that was revoked from PUBLIC.
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO kinesync_reader', current_database());
END $$;
