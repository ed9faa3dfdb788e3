//! The audit trail: every exchange, issuance and denial, in the store and as a JSON log line
//! (target `wid::audit`). Records name tokens by their id, never by their value.

use wid_store::{AuditRow, Store};

use crate::App;

/// What happened.
pub struct Event<'a> {
    pub action: &'a str,
    pub caller: &'a str,
    pub provider: &'a str,
    pub target: &'a str,
    pub token_id: &'a str,
    /// `Ok(())` granted, `Err(reason)` denied.
    pub outcome: Result<(), &'a str>,
}

impl<S: Store> App<S> {
    /// Records an event. A store failure is logged, not returned: the answer is already decided,
    /// and the log line still carries the record.
    pub async fn audit(&self, event: Event<'_>) {
        let (outcome, reason) = match event.outcome {
            Ok(()) => ("GRANTED", ""),
            Err(reason) => ("DENIED", reason),
        };
        let row = AuditRow {
            time: crate::iam::now_rfc3339(),
            action: event.action.to_owned(),
            caller: event.caller.to_owned(),
            provider: event.provider.to_owned(),
            target: event.target.to_owned(),
            token_id: event.token_id.to_owned(),
            outcome: outcome.to_owned(),
            reason: reason.to_owned(),
        };
        tracing::info!(
            target: "wid::audit",
            action = %row.action,
            caller = %row.caller,
            provider = %row.provider,
            target_account = %row.target,
            token_id = %row.token_id,
            outcome = %row.outcome,
            reason = %row.reason,
            "audit"
        );
        if let Err(e) = self.store.append_audit(&row).await {
            tracing::error!(error = %e, "cannot store an audit record");
        }
    }
}

impl<S: Store> App<S> {
    pub(crate) async fn list_audit_events(
        &self,
        caller: &wid_iam::Caller,
        limit: Option<&str>,
    ) -> Result<wid_api::keys::ListAuditEventsResponse, crate::error::ApiError> {
        Self::require_service_admin(caller, "wid.auditEvents.list")?;
        let limit = match limit {
            None | Some("") => 100,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| {
                    crate::error::ApiError::invalid(
                        "limit",
                        format!("limit must be 1 to 10000, not '{text}'."),
                    )
                })?,
        };
        let events = self
            .store
            .list_audit(limit)
            .await?
            .into_iter()
            .map(|r| wid_api::keys::AuditEvent {
                time: r.time,
                action: r.action,
                caller: r.caller,
                provider: r.provider,
                target: r.target,
                token_id: r.token_id,
                outcome: r.outcome,
                reason: r.reason,
            })
            .collect();
        Ok(wid_api::keys::ListAuditEventsResponse { events })
    }
}
