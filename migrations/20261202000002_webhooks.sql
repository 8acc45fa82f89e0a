-- Completion webhooks. An integration may name a URL; its signing secret is sealed by the
-- vault like the credentials (same key ring, the integration's id and tenant as associated
-- data).
ALTER TABLE integrations ADD COLUMN webhook_url text;
ALTER TABLE integrations ADD COLUMN webhook_secret jsonb;
ALTER TABLE integrations ADD CONSTRAINT integrations_webhook_secret_sealed CHECK (
    webhook_secret IS NULL OR (jsonb_typeof(webhook_secret) = 'object' AND webhook_secret ? 'kid' AND webhook_secret ? 'ct')
);

CREATE TYPE webhook_status AS ENUM ('pending', 'delivered', 'failed');

-- The durable queue of events to deliver. A row is written in the same transaction that ends
-- a run (by the trigger below, whichever path ended it: a worker, a cancel, the reaper), so
-- no event is lost between the end of a run and its delivery. Workers claim due rows with
-- SKIP LOCKED; `id` is the Standard Webhooks `webhook-id`, the same on every attempt, so a
-- receiver can drop a duplicate.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    integration_id   bigint NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    tenant_id        bigint NOT NULL,
    run_id           uuid REFERENCES sync_runs(id) ON DELETE SET NULL,
    url              text NOT NULL,
    payload          jsonb NOT NULL,
    status           webhook_status NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_integration_idx ON webhook_deliveries (integration_id, created_at DESC);

CREATE FUNCTION enqueue_run_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text;
BEGIN
    SELECT webhook_url INTO target FROM integrations WHERE id = NEW.integration_id;
    IF target IS NULL THEN
        RETURN NEW;
    END IF;
    INSERT INTO webhook_deliveries (integration_id, tenant_id, run_id, url, payload)
    VALUES (NEW.integration_id, NEW.tenant_id, NEW.id, target, jsonb_build_object(
        'type', 'run.finished',
        'timestamp', to_char(COALESCE(NEW.finished_at, now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', jsonb_build_object(
            'run_id', NEW.id,
            'integration_id', NEW.integration_id,
            'tenant_id', NEW.tenant_id,
            'trigger', NEW.trigger,
            'dry_run', NEW.dry_run,
            'status', NEW.status,
            'counts', jsonb_build_object(
                'synced', NEW.records_synced,
                'skipped', NEW.records_skipped,
                'failed', NEW.records_failed),
            'error', NEW.error,
            'started_at', NEW.started_at,
            'finished_at', NEW.finished_at,
            'trace_id', NEW.trace_id)));
    RETURN NEW;
END
$$;

CREATE TRIGGER sync_runs_enqueue_webhook
    AFTER UPDATE OF status ON sync_runs
    FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running')
          AND NEW.status IN ('succeeded', 'partial', 'failed', 'cancelled'))
    EXECUTE FUNCTION enqueue_run_webhook();
