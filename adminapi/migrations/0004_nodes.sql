-- Switchboard admin schema, version 4: BYOI nodes.
CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,    -- the token, hashed like API keys
    expires_at  INTEGER NOT NULL,        -- unix seconds
    max_uses    INTEGER NOT NULL,        -- 0 = any number of nodes
    uses        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    secret_hash     TEXT NOT NULL,       -- the node's secret, hashed like API keys
    gateway_token   TEXT NOT NULL,       -- sealed: what gateways present to the agent
    enrolled_with   TEXT NOT NULL,       -- enrollment token id
    shared          INTEGER NOT NULL DEFAULT 0,
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    advert          TEXT,                -- JSON: the last heartbeat's models, capacity, reach, mode, version
    last_seen_at    INTEGER,             -- unix seconds of the last heartbeat that changed something
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
