-- Switchboard admin schema, version 2: usage accounting.

-- One row per request that reached routing (kept `usage.retention_days`).
CREATE TABLE request_log (
    uid               TEXT PRIMARY KEY,    -- unique per record: accounting twice is a no-op
    ts_ms             INTEGER NOT NULL,    -- request start, unix milliseconds
    request_id        TEXT NOT NULL,
    org               TEXT NOT NULL,       -- org name
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,       -- as requested
    route             TEXT NOT NULL,
    target            TEXT NOT NULL,       -- '' when no target answered
    upstream_model    TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    stream            INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    outcome           TEXT NOT NULL,
    attempts          INTEGER NOT NULL,
    cache_hit         INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,    -- 1e-9 USD
    latency_us        INTEGER NOT NULL,
    ttft_us           INTEGER NOT NULL,
    upstream_us       INTEGER NOT NULL
) WITHOUT ROWID;
-- Newest first, and retention. (Filters by key, model, ... scan within the time range.)
CREATE INDEX request_log_ts ON request_log (ts_ms);

-- Per-minute rollups (kept): what usage reports and quotas read.
CREATE TABLE usage_minute (
    minute            INTEGER NOT NULL,    -- unix minutes
    org               TEXT NOT NULL,       -- org name
    key_id            TEXT NOT NULL,
    model             TEXT NOT NULL,
    route             TEXT NOT NULL,
    target            TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,    -- status >= 400 or not completed
    cache_hits        INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,    -- requests with estimated token counts
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,
    latency_us        INTEGER NOT NULL,    -- sum, for averages
    PRIMARY KEY (minute, org, key_id, model, route, target)
) WITHOUT ROWID;
CREATE INDEX usage_minute_key ON usage_minute (key_id, minute);
CREATE INDEX usage_minute_org ON usage_minute (org, minute);
