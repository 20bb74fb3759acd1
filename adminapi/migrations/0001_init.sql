-- Switchboard admin schema, version 1.
CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    models      TEXT NOT NULL,           -- JSON array of model names, ["*"] = all
    expires_at  INTEGER,                 -- unix seconds, NULL = never
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE providers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,           -- JSON: base_url, keys (secrets), headers, ca_file, timeouts, models
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE routes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,    -- the public model name
    spec        TEXT NOT NULL,           -- JSON: strategy, targets, retry
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'read')),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,        -- unix milliseconds
    actor       TEXT NOT NULL,           -- admin token id, or 'seed' / 'bootstrap'
    action      TEXT NOT NULL,           -- create / update / delete / revoke / rotate
    resource    TEXT NOT NULL,           -- org / key / provider / route / admin_token
    resource_id TEXT NOT NULL,
    change      TEXT NOT NULL            -- JSON, secrets redacted
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
CREATE INDEX audit_log_resource ON audit_log (resource, resource_id, at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('snapshot_version', '0');
