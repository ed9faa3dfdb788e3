-- The IAM admin plane: projects, service accounts, IAM policies, workload identity pools and
-- providers, registered Kubernetes clusters.

CREATE TABLE projects (
    project_id     TEXT PRIMARY KEY NOT NULL,
    project_number TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    create_time    TEXT NOT NULL
);

CREATE TABLE service_accounts (
    unique_id    TEXT PRIMARY KEY NOT NULL,
    project_id   TEXT NOT NULL REFERENCES projects (project_id),
    account_id   TEXT NOT NULL,
    email        TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    description  TEXT NOT NULL,
    disabled     BIGINT NOT NULL DEFAULT 0,
    etag         TEXT NOT NULL,
    create_time  TEXT NOT NULL
);
CREATE INDEX service_accounts_by_project ON service_accounts (project_id, email);

-- Unique ids are never reused, even after deletion.
CREATE TABLE retired_unique_ids (
    unique_id TEXT PRIMARY KEY NOT NULL
);

-- One row per resource whose policy was ever set. `resource` is `sa/{uniqueId}` or
-- `project/{projectNumber}`; `policy_json` is the wire Policy without its etag.
CREATE TABLE iam_policies (
    resource    TEXT PRIMARY KEY NOT NULL,
    etag        TEXT NOT NULL,
    policy_json TEXT NOT NULL
);

CREATE TABLE workload_identity_pools (
    project_number TEXT NOT NULL REFERENCES projects (project_number),
    pool_id        TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    description    TEXT NOT NULL,
    disabled       BIGINT NOT NULL DEFAULT 0,
    create_time    TEXT NOT NULL,
    -- Bumped by every update; updates compare and swap on it.
    version        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_number, pool_id)
);

CREATE TABLE workload_identity_pool_providers (
    project_number         TEXT NOT NULL,
    pool_id                TEXT NOT NULL,
    provider_id            TEXT NOT NULL,
    display_name           TEXT NOT NULL,
    description            TEXT NOT NULL,
    disabled               BIGINT NOT NULL DEFAULT 0,
    attribute_mapping_json TEXT NOT NULL,
    attribute_condition    TEXT NOT NULL,
    issuer_uri             TEXT NOT NULL,
    allowed_audiences_json TEXT NOT NULL,
    jwks_json              TEXT,
    discovered_jwks_json   TEXT,
    jwks_fetch_time        TEXT,
    create_time            TEXT NOT NULL,
    version                BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_number, pool_id, provider_id),
    FOREIGN KEY (project_number, pool_id)
        REFERENCES workload_identity_pools (project_number, pool_id) ON DELETE CASCADE
);

CREATE TABLE clusters (
    project_id           TEXT NOT NULL REFERENCES projects (project_id),
    location             TEXT NOT NULL,
    name                 TEXT NOT NULL,
    uid                  TEXT NOT NULL UNIQUE,
    issuer_uri           TEXT NOT NULL,
    jwks_json            TEXT,
    discovered_jwks_json TEXT,
    jwks_fetch_time      TEXT,
    isolated             BIGINT NOT NULL DEFAULT 0,
    create_time          TEXT NOT NULL,
    PRIMARY KEY (project_id, location, name),
    UNIQUE (project_id, issuer_uri)
);
