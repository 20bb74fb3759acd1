-- Switchboard admin schema, version 5: records whose counts were clamped to
-- the documented maxima (the upstream or node reported nonsense).
ALTER TABLE request_log ADD COLUMN clamped INTEGER NOT NULL DEFAULT 0;
