-- Upload sessions: one per backup run; they protect what they uploaded
-- until the run commits or the session expires.
CREATE TABLE sessions (
    account_id  INTEGER NOT NULL REFERENCES accounts(id),
    id          TEXT NOT NULL,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    created     INTEGER NOT NULL,
    last_active INTEGER NOT NULL,
    closed      INTEGER,
    PRIMARY KEY (account_id, id)
);

ALTER TABLE packs ADD COLUMN session_id TEXT;

-- Checkpoints of a running backup are snapshots with complete = 0; the
-- device's next complete snapshot replaces them.
ALTER TABLE snapshots ADD COLUMN complete INTEGER NOT NULL DEFAULT 1;
ALTER TABLE snapshots ADD COLUMN session_id TEXT;
