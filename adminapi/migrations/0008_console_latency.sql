-- Switchboard admin schema: latency histograms for the console's p50/p99.
-- One row per (minute, target, bucket): how many requests of that target
-- took a latency in that bucket (bucket b holds latencies from 2^(b/8) us up
-- to 2^((b+1)/8) us, so a quantile read back is within 9 %). Written with the
-- per-minute rollups, in the same transaction.
CREATE TABLE usage_latency (
    minute  INTEGER NOT NULL,   -- unix minutes
    target  TEXT NOT NULL,
    bucket  INTEGER NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (minute, target, bucket)
) WITHOUT ROWID;
