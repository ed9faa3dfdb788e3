-- The token-issuing half: signing keys and the audit trail.

-- Private keys (PKCS#8 DER). The database file is mode 0600 in a 0700 directory. A key is
-- active while rotate_time is NULL; once rotated out it stays published until retire_time.
-- `purpose` keeps the keys of different token kinds apart: a signature made for one kind can
-- never pass as another (id_token: RS256 ID tokens; access_token: ES256 access and federated
-- tokens; account_signing: RS256 signBlob and signJwt, published only per account).
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    purpose       TEXT NOT NULL,
    algorithm     TEXT NOT NULL,
    private_pkcs8 BLOB NOT NULL,
    create_time   INTEGER NOT NULL,
    rotate_time   INTEGER,
    retire_time   INTEGER
);
CREATE UNIQUE INDEX one_active_key_per_purpose ON signing_keys (purpose) WHERE rotate_time IS NULL;

CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    action   TEXT NOT NULL,
    caller   TEXT NOT NULL,
    provider TEXT NOT NULL,
    target   TEXT NOT NULL,
    token_id TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    reason   TEXT NOT NULL
);
