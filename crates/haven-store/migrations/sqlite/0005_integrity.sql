-- Scrub's verdict on a blob's stored copy: 0 intact, 1 damaged (its bytes
-- no longer match the hash taken at upload), 2 missing (its pack or range
-- is gone). Damaged and missing blobs are quarantined, never deleted: the
-- next backup of a device that still has them uploads them again.
ALTER TABLE blobs ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0;
CREATE INDEX blobs_damaged ON blobs (account_id, id) WHERE damaged <> 0;

-- Runs of scrub and GC with their figures (JSON), for operators.
CREATE TABLE jobs (
    id       INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    started  INTEGER NOT NULL,
    finished INTEGER NOT NULL,
    report   TEXT NOT NULL
);
