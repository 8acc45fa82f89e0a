-- A run waiting on purpose (a retry tier, an ERP's Retry-After, a daily quota) says until
-- when, so the scheduler's reaper does not mistake a long wait for a lost message.
ALTER TABLE sync_runs ADD COLUMN resume_at timestamptz;
COMMENT ON COLUMN sync_runs.resume_at IS
    'When a queued run that was handed back to the broker is due to come back (retry, Retry-After); the reaper waits until then plus its grace';

-- Which key material each vault key id stands for, as a one-way fingerprint recorded by the
-- first process that sealed or opened a credential with it. A worker whose key under the same
-- id has another fingerprint holds the wrong material: its decryption failures are its own
-- fault, not the integration's.
CREATE TABLE vault_key_fingerprints (
    key_id         text PRIMARY KEY,
    fingerprint    text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
