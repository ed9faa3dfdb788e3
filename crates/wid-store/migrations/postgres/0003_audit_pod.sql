-- The pod a token exchange was for (namespace/name and uid, from the KSA token's
-- kubernetes.io claims): an address reused by another pod stays told apart in the trail.
ALTER TABLE audit_events ADD COLUMN pod TEXT NOT NULL DEFAULT '';
