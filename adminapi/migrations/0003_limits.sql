-- Switchboard admin schema, version 3: rate limits and quotas (JSON).
-- Keys: {"rpm":N,"tpm":N,"quotas":[{"period":"day|month","max_usd":X,"max_tokens":N}]}
-- Orgs: the same, plus "models":[{"model":"name","rpm":N,"tpm":N}]
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE orgs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
