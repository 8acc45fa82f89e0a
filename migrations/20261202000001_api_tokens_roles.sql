-- The admin API's token roles: a viewer reads, an admin also writes. Tokens made before the
-- API existed had no role; none were ever issued, so `admin` is only the column's default.
CREATE TYPE api_role AS ENUM ('admin', 'viewer');
ALTER TABLE api_tokens ADD COLUMN role api_role NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ALTER COLUMN role DROP DEFAULT;
CREATE UNIQUE INDEX api_tokens_tenant_name_key ON api_tokens (tenant_id, name) WHERE revoked_at IS NULL;

-- A run an admin asked to cancel while a worker held it: the worker stops at its next chunk
-- boundary and finishes the run `cancelled`.
ALTER TABLE sync_runs ADD COLUMN cancel_requested_at timestamptz;


-- A dry run reads, maps and diffs as a real run would, writes nothing but its report.
ALTER TABLE sync_runs ADD COLUMN dry_run boolean NOT NULL DEFAULT false;
ALTER TABLE sync_runs ADD COLUMN dry_run_report jsonb;
