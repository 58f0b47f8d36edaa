-- Blobs are numbered (blobs.no) and reference rows name a blob by that
-- number instead of its 32-byte id: a row of snapshot_refs or
-- snapshot_unrefs and its index entry shrink from about 40 to about 8
-- bytes, and blobs_by_pack holds a number per blob instead of an id. The
-- id moves to a unique index, blobs_by_id, which lookups by id read.
-- AUTOINCREMENT: a number is never given twice, so no row can come to
-- name a newer blob that took a deleted one's number.
CREATE TABLE blobs_numbered (
    no         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL,
    id         BLOB NOT NULL,
    kind       INTEGER NOT NULL,
    pack       INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    length     INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    damaged    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO blobs_numbered (account_id, id, kind, pack, offset, length, hash, damaged)
    SELECT account_id, id, kind, pack, offset, length, hash, damaged FROM blobs
    ORDER BY account_id, id;
-- A reference to a blob the index lacks (which commits refuse, so nothing
-- should have left one) keeps a row for it, as missing (damaged = 2, pack
-- 0): the next backup that has the blob uploads it again.
INSERT INTO blobs_numbered (account_id, id, kind, pack, offset, length, hash, damaged)
    SELECT DISTINCT r.account_id, r.blob_id, 0, 0, 0, 0, x'', 2
    FROM (SELECT account_id, blob_id FROM snapshot_refs
          UNION SELECT account_id, blob_id FROM snapshot_unrefs) r
    WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.account_id = r.account_id AND b.id = r.blob_id);
DROP TABLE blobs;
ALTER TABLE blobs_numbered RENAME TO blobs;
CREATE UNIQUE INDEX blobs_by_id ON blobs (account_id, id);
CREATE INDEX blobs_by_pack ON blobs (pack);
CREATE INDEX blobs_damaged ON blobs (account_id, id) WHERE damaged <> 0;

CREATE TABLE snapshot_refs_numbered (
    snap INTEGER NOT NULL,
    blob INTEGER NOT NULL,
    PRIMARY KEY (snap, blob)
) WITHOUT ROWID;
INSERT INTO snapshot_refs_numbered (snap, blob)
    SELECT r.snap, b.no FROM snapshot_refs r
    JOIN blobs b ON b.account_id = r.account_id AND b.id = r.blob_id
    ORDER BY r.snap, b.no;
DROP TABLE snapshot_refs;
ALTER TABLE snapshot_refs_numbered RENAME TO snapshot_refs;
CREATE INDEX snapshot_refs_by_blob ON snapshot_refs (blob);

CREATE TABLE snapshot_unrefs_numbered (
    snap INTEGER NOT NULL,
    blob INTEGER NOT NULL,
    PRIMARY KEY (snap, blob)
) WITHOUT ROWID;
INSERT INTO snapshot_unrefs_numbered (snap, blob)
    SELECT r.snap, b.no FROM snapshot_unrefs r
    JOIN blobs b ON b.account_id = r.account_id AND b.id = r.blob_id
    ORDER BY r.snap, b.no;
DROP TABLE snapshot_unrefs;
ALTER TABLE snapshot_unrefs_numbered RENAME TO snapshot_unrefs;
