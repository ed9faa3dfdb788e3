-- Which Kubernetes service account a uid belongs to: the cluster, namespace and name that first
-- presented it. A uid names one KSA of one cluster; a token presenting it for another is refused.
CREATE TABLE ksa_uids (
    project_id  TEXT NOT NULL,
    uid         TEXT NOT NULL,
    cluster_uid TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (project_id, uid)
);
CREATE INDEX ksa_uids_by_cluster ON ksa_uids (cluster_uid);

-- The audit trail's retention deletes by time.
CREATE INDEX audit_events_by_time ON audit_events (time);
