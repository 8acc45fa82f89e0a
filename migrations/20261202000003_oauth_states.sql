-- Consents in flight (the OAuth authorization-code grant): one row per `oauth/start`, taken
-- (deleted) by the callback that carries its state, so a state works once. Only a SHA-256 of
-- the state is kept; the PKCE verifier is sealed by the vault like the credentials.
CREATE TABLE oauth_states (
    state_hash      bytea PRIMARY KEY CHECK (octet_length(state_hash) = 32),
    integration_id  bigint NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    tenant_id       bigint NOT NULL,
    code_verifier   jsonb NOT NULL CHECK (code_verifier ? 'kid' AND code_verifier ? 'ct'),
    redirect_uri    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);
