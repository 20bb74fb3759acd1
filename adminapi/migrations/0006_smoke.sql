-- Switchboard admin schema, version 6: test keys (may inject faults with
-- x-switchboard-fault, for `switchboard smoke`) and request records whose
-- failures were injected.
ALTER TABLE api_keys ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_log ADD COLUMN injected INTEGER NOT NULL DEFAULT 0;
