-- What a real fleet needs beyond the seed: runs with leases, cursors, fleet-wide rate-limit
-- state and hashed API tokens.

CREATE TYPE run_trigger AS ENUM ('manual', 'scheduled');
CREATE TYPE run_status AS ENUM ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled');
CREATE TYPE sync_entity AS ENUM ('product', 'customer', 'order', 'invoice', 'inventory');

-- One row per job. A run in `running` always has a lease that expires, so a crashed worker
-- never leaves it running forever: another worker may take it over once the lease lapses.
CREATE TABLE sync_runs (
    id                uuid PRIMARY KEY,
    integration_id    bigint NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    tenant_id         bigint NOT NULL,
    trigger           run_trigger NOT NULL,
    -- Entities this run covers; empty means every entity enabled on the integration.
    entity_scope      sync_entity[] NOT NULL DEFAULT '{}',
    status            run_status NOT NULL DEFAULT 'queued',
    attempt           integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    records_synced    integer NOT NULL DEFAULT 0 CHECK (records_synced >= 0),
    records_skipped   integer NOT NULL DEFAULT 0 CHECK (records_skipped >= 0),
    records_failed    integer NOT NULL DEFAULT 0 CHECK (records_failed >= 0),
    -- For scheduled runs: the slot this run fills. Unique per integration, so two schedulers
    -- can never enqueue the same due sync twice.
    scheduled_for     timestamptz,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    -- When the job was last published (outbox: NULL means not yet confirmed by the broker).
    published_at      timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    lease_owner       text,
    lease_expires_at  timestamptz,
    heartbeat_at      timestamptz,
    error             text,
    trace_id          text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_runs_running_has_lease CHECK (
        status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT sync_runs_terminal_has_finish CHECK (
        (status IN ('succeeded', 'partial', 'failed', 'cancelled')) = (finished_at IS NOT NULL)
    ),
    CONSTRAINT sync_runs_scheduled_slot CHECK ((trigger = 'scheduled') = (scheduled_for IS NOT NULL))
);
CREATE UNIQUE INDEX sync_runs_scheduled_slot_key ON sync_runs (integration_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX sync_runs_integration_queued_idx ON sync_runs (integration_id, queued_at DESC);
CREATE INDEX sync_runs_unpublished_idx ON sync_runs (queued_at) WHERE status = 'queued' AND published_at IS NULL;
CREATE INDEX sync_runs_running_lease_idx ON sync_runs (lease_expires_at) WHERE status = 'running';
CREATE TRIGGER sync_runs_updated_at BEFORE UPDATE ON sync_runs
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- One sync per integration at a time: the holder of this row's unexpired lease.
CREATE TABLE integration_leases (
    integration_id  bigint PRIMARY KEY REFERENCES integrations(id) ON DELETE CASCADE,
    run_id          uuid NOT NULL REFERENCES sync_runs(id) ON DELETE CASCADE,
    owner           text NOT NULL,
    acquired_at     timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);

-- Where an incremental import or a resumable export stands, per (integration, entity, direction).
CREATE TABLE sync_cursors (
    integration_id  bigint NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    entity          sync_entity NOT NULL,
    direction       log_direction NOT NULL,
    -- Opaque to the worker: each connector decides what it stores (a timestamp, a page token).
    cursor          jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, entity, direction)
);
CREATE TRIGGER sync_cursors_updated_at BEFORE UPDATE ON sync_cursors
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- Creates that may have reached the ERP but whose result we have not recorded: written before
-- the call, removed in the transaction that records the result. After a crash, the retry
-- sends the same idempotency key and the same body (the ERP replays its first answer), or, for
-- an ERP without keys, looks the record up by our reference before creating it again.
CREATE TABLE sync_intents (
    integration_id   bigint NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    entity           sync_entity NOT NULL,
    internal_id      text NOT NULL,
    idempotency_key  text NOT NULL,
    request          jsonb NOT NULL,
    run_id           uuid REFERENCES sync_runs(id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, entity, internal_id)
);

-- Fleet-wide rate-limit state per (connector type, ERP account), shared by every worker.
-- Requests are paced: each takes the next free start slot (`next_slot_at`) and moves it on by
-- the limit's interval, so no window of the limit's length ever holds more requests than the
-- limit, whichever way the ERP aligns its windows. A daily quota is counted alongside, and a
-- 429's Retry-After blocks the whole account for every worker.
CREATE TABLE rate_limits (
    connector_type      integration_type NOT NULL,
    -- The ERP account the limit applies to: realm, tenant org, company DB or environment
    -- (plus a class suffix where an ERP limits some calls separately, e.g. QuickBooks batch).
    account_key         text NOT NULL,
    next_slot_at        timestamptz NOT NULL DEFAULT now(),
    day_started_on      date NOT NULL DEFAULT (now() AT TIME ZONE 'utc')::date,
    day_count           integer NOT NULL DEFAULT 0 CHECK (day_count >= 0),
    blocked_until       timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector_type, account_key)
);

-- Concurrency permits for the same key; a permit expires so a crashed worker cannot hold one
-- forever.
CREATE TABLE rate_limit_permits (
    id              uuid PRIMARY KEY,
    connector_type  integration_type NOT NULL,
    account_key     text NOT NULL,
    holder          text NOT NULL,
    acquired_at     timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    FOREIGN KEY (connector_type, account_key) REFERENCES rate_limits (connector_type, account_key) ON DELETE CASCADE
);
CREATE INDEX rate_limit_permits_key_idx ON rate_limit_permits (connector_type, account_key, expires_at);

-- Tenant-scoped bearer tokens for the admin API. Only a SHA-256 of the token is stored; the
-- prefix lets an admin recognise a token in a listing without it being usable.
CREATE TABLE api_tokens (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES platform.tenants(id) ON DELETE CASCADE,
    name          text NOT NULL,
    token_prefix  text NOT NULL,
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);
