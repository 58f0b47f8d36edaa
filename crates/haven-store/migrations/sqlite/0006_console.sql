-- Signed-in browser sessions of the web console (hash of the cookie).
CREATE TABLE console_sessions (
    hash       BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    csrf       TEXT NOT NULL,
    created    INTEGER NOT NULL,
    expires    INTEGER NOT NULL
);

-- One-time sign-in links made by `haven console` (hash of the token).
CREATE TABLE console_links (
    hash       BLOB PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    expires    INTEGER NOT NULL,
    used       INTEGER
);
