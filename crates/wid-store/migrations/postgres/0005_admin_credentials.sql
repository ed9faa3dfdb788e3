-- The bootstrap admin credentials every replica accepts: the SHA-256 of each secret (hex), never
-- the secret, which stays in the file of the replica that made or was given it.
CREATE TABLE admin_credentials (
    sha256      TEXT PRIMARY KEY,
    create_time TEXT NOT NULL
);

-- The issuers replicas sign as (each its --issuer, or its own URL): a token any of them signed
-- is the service's own at every replica.
CREATE TABLE issuers (
    issuer      TEXT PRIMARY KEY,
    create_time TEXT NOT NULL
);
