-- Which Kubernetes service accounts presented a uid: each cluster, namespace and name whose token
-- carried it. A uid names a KSA only while one KSA presented it; one presented by two is
-- ambiguous and names none. Presentations go with their cluster.
CREATE TABLE ksa_uids (
    project_id  TEXT NOT NULL,
    uid         TEXT NOT NULL,
    cluster_uid TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (project_id, uid, cluster_uid, namespace, name)
);
CREATE INDEX ksa_uids_by_cluster ON ksa_uids (cluster_uid);

-- The audit trail's retention deletes by time.
CREATE INDEX audit_events_by_time ON audit_events (time);
