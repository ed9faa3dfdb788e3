//! The audit trail: every exchange, issuance and denial, in the store and as a JSON log line
//! (target `wid::audit`). Records name tokens by their id, never by their value.
//!
//! The log line is written at once; the store gets records in batches from one writer task, so
//! that a burst of issuances costs one disk sync per batch rather than one per token. Reading
//! the trail flushes first, so a reader sees every record of requests already answered.

use wid_store::{AuditRow, Store};

use crate::App;

/// What happened.
pub struct Event<'a> {
    pub action: &'a str,
    pub caller: &'a str,
    pub provider: &'a str,
    pub target: &'a str,
    pub token_id: &'a str,
    /// `namespace/name (uid)` of the pod a token exchange was for, or empty.
    pub pod: &'a str,
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
            pod: event.pod.to_owned(),
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
            pod = %row.pod,
            "audit"
        );
        if self
            .audit_tx
            .send(AuditMessage::Record(Box::new(row)))
            .await
            .is_err()
        {
            tracing::error!("the audit writer is gone; a record was only logged");
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
        self.flush_audit().await;
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
                pod: r.pod,
            })
            .collect();
        Ok(wid_api::keys::ListAuditEventsResponse { events })
    }
}

/// What the audit writer receives.
pub enum AuditMessage {
    Record(Box<AuditRow>),
    /// Answered once every record sent before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Records queued before senders wait.
pub const AUDIT_QUEUE: usize = 10_000;
/// The most records in one transaction.
const AUDIT_BATCH: usize = 512;

impl<S: Store> App<S> {
    /// Waits until every record sent so far is stored.
    pub async fn flush_audit(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.audit_tx.send(AuditMessage::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer task: stores records in batches until every sender is gone.
pub async fn write_audit_forever<S: Store>(
    store: S,
    mut rx: tokio::sync::mpsc::Receiver<AuditMessage>,
) {
    let mut batch: Vec<AuditRow> = Vec::with_capacity(AUDIT_BATCH);
    let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                AuditMessage::Record(row) => batch.push(*row),
                AuditMessage::Flush(done) => waiting.push(done),
            }
            if batch.len() < AUDIT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.append_audit_batch(&batch).await {
                tracing::error!(error = %e, records = batch.len(), "cannot store audit records; they are in the log");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
