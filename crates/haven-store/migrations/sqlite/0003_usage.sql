-- "Is this blob referenced by any snapshot?" for usage and freed-if-deleted.
CREATE INDEX snapshot_refs_by_blob ON snapshot_refs (account_id, blob_id);
CREATE INDEX packs_by_session ON packs (account_id, session_id);
