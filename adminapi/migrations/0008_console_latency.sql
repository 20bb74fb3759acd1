-- Switchboard admin schema: what the console's overview reads.

-- Latency histograms: how many requests of a target took a latency in each
-- bucket (bucket b holds latencies from 2^(b/8) us up to 2^((b+1)/8) us, so
-- a quantile read back is within 9 %). Per minute, and per hour for the
-- day and month views. Written with the per-minute rollups, in the same
-- transaction.
CREATE TABLE usage_latency (
    minute  INTEGER NOT NULL,   -- unix minutes
    target  TEXT NOT NULL,
    bucket  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (minute, target, bucket)
) WITHOUT ROWID;

CREATE TABLE usage_latency_hour (
    hour    INTEGER NOT NULL,   -- unix hours
    target  TEXT NOT NULL,
    bucket  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (hour, target, bucket)
) WITHOUT ROWID;

CREATE TABLE usage_latency_day (
    day     INTEGER NOT NULL,   -- unix days
    target  TEXT NOT NULL,
    bucket  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (day, target, bucket)
) WITHOUT ROWID;

-- Hourly rollups without the key (the overview splits by org, model, route
-- or target; usage reports without a key read them for whole hours): a
-- month is at most 720 hours of a few rows each, whatever the number of keys.
CREATE TABLE usage_hour (
    hour              INTEGER NOT NULL,   -- unix hours
    org               TEXT NOT NULL,
    model             TEXT NOT NULL,
    route             TEXT NOT NULL,
    target            TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    cache_hits        INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,
    latency_us        INTEGER NOT NULL,
    PRIMARY KEY (hour, org, model, route, target)
) WITHOUT ROWID;

-- Daily, the same (the 30-day view).
CREATE TABLE usage_day (
    day               INTEGER NOT NULL,   -- unix days
    org               TEXT NOT NULL,
    model             TEXT NOT NULL,
    route             TEXT NOT NULL,
    target            TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    cache_hits        INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,
    latency_us        INTEGER NOT NULL,
    PRIMARY KEY (day, org, model, route, target)
) WITHOUT ROWID;

-- What was accounted before this version (latencies were not histogrammed).
INSERT INTO usage_hour (hour, org, model, route, target, requests, errors, cache_hits, estimated,
                        prompt_tokens, completion_tokens, total_tokens, cost_nanos, latency_us)
SELECT minute / 60, org, model, route, target,
       CAST(MIN(TOTAL(MAX(requests, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(errors, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(cache_hits, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(estimated, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(prompt_tokens, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(completion_tokens, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(total_tokens, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(cost_nanos, 0)), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(MAX(latency_us, 0)), 9223372036854775807) AS INTEGER)
FROM usage_minute GROUP BY minute / 60, org, model, route, target;

INSERT INTO usage_day (day, org, model, route, target, requests, errors, cache_hits, estimated,
                       prompt_tokens, completion_tokens, total_tokens, cost_nanos, latency_us)
SELECT hour / 24, org, model, route, target,
       CAST(MIN(TOTAL(requests), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(errors), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(cache_hits), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(estimated), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(prompt_tokens), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(completion_tokens), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(total_tokens), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(cost_nanos), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(latency_us), 9223372036854775807) AS INTEGER)
FROM usage_hour GROUP BY hour / 24, org, model, route, target;
