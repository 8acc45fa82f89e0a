-- Bidirectional sync: which side wins a conflict, per entity (unnamed entities keep their
-- default: see docs/connectors/README.md), and the log action that records one.
ALTER TABLE integrations ADD COLUMN conflict_policy jsonb NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(conflict_policy) = 'object');
ALTER TYPE log_action ADD VALUE IF NOT EXISTS 'conflict';
