-- The account's compression dictionary, sealed under its key by the
-- device that trained it. Written once; NULL until then.
ALTER TABLE accounts ADD COLUMN dictionary BLOB;
