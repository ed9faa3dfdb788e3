-- The token-issuing half: signing keys and the audit trail.

-- Private keys (PKCS#8 DER). Only the service's database role reads them. A key is
-- active while rotate_time is NULL; once rotated out it stays published until retire_time.
-- `purpose` keeps the keys of different token kinds apart: a signature made for one kind can
-- never pass as another (id_token: RS256 ID tokens; access_token: ES256 access and federated
-- tokens; account_signing: RS256 signBlob and signJwt, published only per account).
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    purpose       TEXT NOT NULL,
    algorithm     TEXT NOT NULL,
    private_pkcs8 BYTEA NOT NULL,
    create_time   BIGINT NOT NULL,
    rotate_time   BIGINT,
    retire_time   BIGINT
);
CREATE UNIQUE INDEX one_active_key_per_purpose ON signing_keys (purpose) WHERE rotate_time IS NULL;

CREATE TABLE audit_events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time     TEXT NOT NULL,
    action   TEXT NOT NULL,
    caller   TEXT NOT NULL,
    provider TEXT NOT NULL,
    target   TEXT NOT NULL,
    token_id TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    reason   TEXT NOT NULL
);
