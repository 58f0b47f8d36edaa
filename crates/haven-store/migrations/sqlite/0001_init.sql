CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE accounts (
    id                   INTEGER PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    kdf                  TEXT NOT NULL,
    auth_hash            BLOB NOT NULL,
    wrapped_key          BLOB NOT NULL,
    recovery_auth_hash   BLOB NOT NULL,
    recovery_wrapped_key BLOB NOT NULL,
    is_admin             INTEGER NOT NULL DEFAULT 0,
    created              INTEGER NOT NULL
);

CREATE TABLE invites (
    code_hash BLOB PRIMARY KEY,
    email     TEXT,
    created   INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    used_by   INTEGER REFERENCES accounts(id)
);

CREATE TABLE devices (
    id         INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    name       TEXT NOT NULL,
    created    INTEGER NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    device_id  INTEGER NOT NULL REFERENCES devices(id),
    created    INTEGER NOT NULL
);

CREATE TABLE packs (
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    id         BLOB NOT NULL,
    object_key TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (account_id, id)
);

-- One row per blob an account has; the first pack that stored it wins.
CREATE TABLE blobs (
    account_id INTEGER NOT NULL,
    id         BLOB NOT NULL,
    kind       INTEGER NOT NULL,
    pack_id    BLOB NOT NULL,
    offset     INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    PRIMARY KEY (account_id, id)
) WITHOUT ROWID;

CREATE TABLE snapshots (
    account_id     INTEGER NOT NULL REFERENCES accounts(id),
    id             TEXT NOT NULL,
    device_id      INTEGER NOT NULL REFERENCES devices(id),
    time           INTEGER NOT NULL,
    files          INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    snapshot_blob  BLOB NOT NULL,
    parent         TEXT,
    client_version TEXT NOT NULL,
    blobs          INTEGER NOT NULL,
    created        INTEGER NOT NULL,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX snapshots_by_device ON snapshots (account_id, device_id, time);

-- The set of blobs each snapshot references (for commit checks, GC, quota).
CREATE TABLE snapshot_refs (
    account_id  INTEGER NOT NULL,
    snapshot_id TEXT NOT NULL,
    blob_id     BLOB NOT NULL,
    PRIMARY KEY (account_id, snapshot_id, blob_id)
) WITHOUT ROWID;
