-- A snapshot's references may be stored as how they differ from those of
-- an earlier snapshot of the same device, its refs_base: snapshot_refs
-- then holds the ids it adds and snapshot_unrefs the ids it drops. With
-- refs_base NULL, snapshot_refs holds its whole set. Every id a snapshot
-- references is in snapshot_refs under it or under a snapshot of its
-- chain of bases, so "is this blob referenced?" still asks snapshot_refs
-- alone. See docs/DESIGN-NOTES.md, "Reference sets".
ALTER TABLE snapshots ADD COLUMN refs_base TEXT;
CREATE INDEX snapshots_by_refs_base ON snapshots (account_id, refs_base) WHERE refs_base IS NOT NULL;
CREATE TABLE snapshot_unrefs (
    account_id  INTEGER NOT NULL,
    snapshot_id TEXT NOT NULL,
    blob_id     BLOB NOT NULL,
    PRIMARY KEY (account_id, snapshot_id, blob_id)
) WITHOUT ROWID;
