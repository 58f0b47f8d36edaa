-- Packs are numbered (packs.no) and a blob row names its pack by that
-- number instead of the pack's 32-byte id: each blob row and its entry
-- in blobs_by_pack shrink by about 31 bytes each, and blobs_by_pack no
-- longer carries the account (a pack number belongs to one account).
-- On a copy of the benchmark's database (84,825 blobs), migrated and
-- vacuumed, blobs and blobs_by_pack went from 17.7 MB to 10.5 MB.
-- AUTOINCREMENT: a number is never given twice, so a row can never name
-- a newer pack that happens to reuse a deleted pack's number.
CREATE TABLE packs_numbered (
    no         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    id         BLOB NOT NULL,
    object_key TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    session_id TEXT,
    UNIQUE (account_id, id)
);
INSERT INTO packs_numbered (account_id, id, object_key, size, created, session_id)
    SELECT account_id, id, object_key, size, created, session_id FROM packs ORDER BY rowid;
DROP TABLE packs;
ALTER TABLE packs_numbered RENAME TO packs;
CREATE INDEX packs_by_session ON packs (account_id, session_id);

-- A blob whose pack row is gone (which nothing should leave behind) keeps
-- its row as missing (damaged = 2) under pack 0, which no pack has: the
-- next backup that has it uploads it again, as after scrub.
CREATE TABLE blobs_numbered (
    account_id INTEGER NOT NULL,
    id         BLOB NOT NULL,
    kind       INTEGER NOT NULL,
    pack       INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    damaged    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, id)
) WITHOUT ROWID;
INSERT INTO blobs_numbered (account_id, id, kind, pack, offset, length, hash, damaged)
    SELECT b.account_id, b.id, b.kind, COALESCE(p.no, 0), b.offset, b.length, b.hash,
           CASE WHEN p.no IS NULL THEN 2 ELSE b.damaged END
    FROM blobs b LEFT JOIN packs p ON p.account_id = b.account_id AND p.id = b.pack_id
    ORDER BY b.account_id, b.id;
DROP TABLE blobs;
ALTER TABLE blobs_numbered RENAME TO blobs;
CREATE INDEX blobs_by_pack ON blobs (pack);
CREATE INDEX blobs_damaged ON blobs (account_id, id) WHERE damaged <> 0;
