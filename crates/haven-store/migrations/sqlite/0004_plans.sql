-- Plans: NULL means the server's default plan.
ALTER TABLE accounts ADD COLUMN plan TEXT;
ALTER TABLE invites ADD COLUMN plan TEXT;

-- Quota a running backup reserved before it uploads.
ALTER TABLE sessions ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0;

-- Partial backups (categories left out for lack of space) and what each
-- backup holds per category, as JSON [{name, files, bytes}].
ALTER TABLE snapshots ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN categories TEXT NOT NULL DEFAULT '[]';

-- A device's category switches and the figures of its last scan.
CREATE TABLE device_categories (
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    device_id  INTEGER NOT NULL REFERENCES devices(id),
    name       TEXT NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1,
    files      INTEGER NOT NULL DEFAULT 0,
    bytes      INTEGER NOT NULL DEFAULT 0,
    new_bytes  INTEGER NOT NULL DEFAULT 0,
    scanned    INTEGER,
    PRIMARY KEY (account_id, device_id, name)
);

-- Every backup attempt of every device.
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    started     INTEGER NOT NULL,
    finished    INTEGER NOT NULL,
    result      TEXT NOT NULL,
    code        TEXT,
    message     TEXT NOT NULL,
    fix         TEXT NOT NULL,
    snapshot_id TEXT,
    uploaded    INTEGER NOT NULL
);
CREATE INDEX attempts_by_device ON attempts (account_id, device_id, finished);
CREATE INDEX blobs_by_pack ON blobs (account_id, pack_id);
