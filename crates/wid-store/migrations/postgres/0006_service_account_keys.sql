-- Service-account keys, off unless a project allows them, each with an expiry no later than the
-- project's limit. Only the public half is kept: the private key leaves the service once, in
-- the create response.
ALTER TABLE projects ADD COLUMN allow_service_account_keys BIGINT NOT NULL DEFAULT 0;
-- Seconds; 0 while keys are not allowed.
ALTER TABLE projects ADD COLUMN key_max_lifetime_seconds BIGINT NOT NULL DEFAULT 0;

CREATE TABLE service_account_keys (
    -- 40 hex digits, as Google's key ids.
    key_id             TEXT PRIMARY KEY NOT NULL,
    account_unique_id  TEXT NOT NULL,
    -- The self-signed X.509 certificate of the public key (PEM), valid from valid_after to
    -- valid_before: what TYPE_X509_PEM_FILE and the x509 key document serve.
    certificate_pem    TEXT NOT NULL,
    -- SHA-256 (hex) of the public key (its DER SubjectPublicKeyInfo): one key, one account.
    public_key_sha256  TEXT NOT NULL,
    -- GOOGLE_PROVIDED or USER_PROVIDED.
    key_origin         TEXT NOT NULL,
    key_algorithm      TEXT NOT NULL,
    -- Unix seconds.
    valid_after        BIGINT NOT NULL,
    valid_before       BIGINT NOT NULL,
    disabled           BIGINT NOT NULL DEFAULT 0,
    last_used          BIGINT
);
CREATE INDEX service_account_keys_by_account ON service_account_keys (account_unique_id);
CREATE UNIQUE INDEX service_account_keys_by_public_key ON service_account_keys (public_key_sha256);
