-- Switchboard admin schema: prompt-cache tokens (the parts of the prompt read
-- from and written to a provider's prompt cache, priced at their own rates)
-- and the client's session id (X-Claude-Code-Session-Id / X-Session-Id) on
-- usage records; cache tokens in the per-minute rollups too.
ALTER TABLE request_log ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN session TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_minute ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_minute ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
-- And in the console's hourly and daily rollups (0008).
ALTER TABLE usage_hour ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hour ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_day ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_day ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
-- Usage by session reads the request log.
CREATE INDEX request_log_session ON request_log (session, ts_ms) WHERE session != '';
