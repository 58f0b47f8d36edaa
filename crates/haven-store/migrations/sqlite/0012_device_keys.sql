-- When each sign-in was last used (tokens unused for `token_days` expire)
-- and when each device was last seen.
ALTER TABLE tokens ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET last_used = created;
ALTER TABLE devices ADD COLUMN last_seen INTEGER;

-- Sign-ins that were ended (device removed, password changed, signed in
-- again, expired), so that their device is told why instead of only
-- "unauthorized".
CREATE TABLE revoked_tokens (
    hash       BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    device_id  INTEGER NOT NULL REFERENCES devices(id),
    revoked    INTEGER NOT NULL,
    reason     TEXT NOT NULL
);

-- When a console session last proved the password (0: signed in with a
-- one-time link, which proves no password).
ALTER TABLE console_sessions ADD COLUMN password_at INTEGER NOT NULL DEFAULT 0;

-- When the server received each attempt (the device's times are its own).
ALTER TABLE attempts ADD COLUMN received INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET received = finished;
