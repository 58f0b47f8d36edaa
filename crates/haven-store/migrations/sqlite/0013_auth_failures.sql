-- Failed sign-ins, recoveries, password proofs and sign-ups, per account
-- (`account:EMAIL`) and per address (`addr:IP`), for the rate limit. Rows
-- older than the window are deleted as new ones arrive.
CREATE TABLE auth_failures (
    key TEXT NOT NULL,
    at  INTEGER NOT NULL
);
CREATE INDEX auth_failures_by_key ON auth_failures (key, at);
CREATE INDEX auth_failures_by_time ON auth_failures (at);
