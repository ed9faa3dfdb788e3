//! The audit trail: every exchange, issuance and denial, in the store and as a JSON log line
//! (target `wid::audit`). Records name tokens by their id, never by their value.
//!
//! The log line is written at once; the store gets records in batches from one writer task, so
//! that a burst of issuances costs one disk sync per batch rather than one per token. Reading
//! the trail flushes first, so a reader sees every record of requests already answered.
//!
//! What a caller can put into the trail is bounded: every field is clipped, and refusals of
//! callers who proved nothing (no valid credential) are recorded one by one only up to
//! [`UNAUTHENTICATED_PER_MINUTE`] per action and minute; the rest are counted, and the count is
//! recorded once the minute is over. Records older than the retention are deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wid_store::{AuditRow, AuditSize, Store};

use crate::App;

/// What happened.
pub struct Event<'a> {
    pub action: &'static str,
    /// Who asked; `None` for a caller who proved nothing (no valid credential or subject token).
    pub caller: Option<&'a str>,
    pub provider: &'a str,
    pub target: &'a str,
    pub token_id: &'a str,
    /// `namespace/name (uid)` of the pod a token exchange was for, or empty.
    pub pod: &'a str,
    /// `Ok(())` granted, `Err(reason)` denied.
    pub outcome: Result<(), &'a str>,
}

/// How the trail names a caller who proved nothing.
pub const UNAUTHENTICATED: &str = "unauthenticated";
/// Unauthenticated refusals of one action recorded one by one per minute.
pub const UNAUTHENTICATED_PER_MINUTE: u32 = 20;
const WINDOW_SECS: i64 = 60;
/// The longest field of a record, but for the reason; longer ones are clipped.
const MAX_FIELD_BYTES: usize = 512;
const MAX_REASON_BYTES: usize = 1024;

/// `text`, or its first bytes (at a character boundary) and how many were left out.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes more)", &text[..end], text.len() - end)
}

/// Unauthenticated refusals counted rather than recorded, over one window of one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unrecorded {
    pub action: &'static str,
    pub from: i64,
    pub to: i64,
    pub count: u64,
}

#[derive(Clone, Copy, Default)]
struct Window {
    start: i64,
    recorded: u32,
    unrecorded: u64,
}

/// Which unauthenticated refusals are recorded one by one: the first
/// [`UNAUTHENTICATED_PER_MINUTE`] of each action in each minute. Keyed by action, a fixed set,
/// so that no caller can grow it.
#[derive(Default)]
pub(crate) struct Sampler {
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl Sampler {
    /// Whether an unauthenticated refusal of `action` at `now` is recorded, and the count of a
    /// window it ends, if that window counted any.
    pub fn admit(&self, action: &'static str, now: i64) -> (bool, Option<Unrecorded>) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.entry(action).or_insert(Window {
            start: now,
            ..Window::default()
        });
        let mut ended = None;
        if now - window.start >= WINDOW_SECS {
            ended = take(action, window, now);
            *window = Window {
                start: now,
                ..Window::default()
            };
        }
        if window.recorded < UNAUTHENTICATED_PER_MINUTE {
            window.recorded += 1;
            (true, ended)
        } else {
            window.unrecorded += 1;
            (false, ended)
        }
    }

    /// The counts of the windows over by `now`, taken out (so that a quiet minute after a flood
    /// still records its count).
    pub fn due(&self, now: i64) -> Vec<Unrecorded> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        windows
            .iter_mut()
            .filter(|(_, w)| now - w.start >= WINDOW_SECS)
            .filter_map(|(action, w)| {
                let ended = take(action, w, now);
                *w = Window {
                    start: now,
                    ..Window::default()
                };
                ended
            })
            .collect()
    }
}

fn take(action: &'static str, window: &Window, now: i64) -> Option<Unrecorded> {
    (window.unrecorded > 0).then_some(Unrecorded {
        action,
        from: window.start,
        to: now,
        count: window.unrecorded,
    })
}

/// The trail's own numbers, for the metrics.
#[derive(Default)]
pub struct AuditMetrics {
    pub records: prometheus_client::metrics::gauge::Gauge,
    pub bytes: prometheus_client::metrics::gauge::Gauge,
    pub unrecorded: prometheus_client::metrics::counter::Counter,
    pub expired: prometheus_client::metrics::counter::Counter,
    pub spooled: prometheus_client::metrics::counter::Counter,
    pub replayed: prometheus_client::metrics::counter::Counter,
}

impl AuditMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "wid_audit_records",
            "Records in the audit trail",
            self.records.clone(),
        );
        registry.register(
            "wid_audit_bytes",
            "Bytes of the audit trail's records (their text fields)",
            self.bytes.clone(),
        );
        registry.register(
            "wid_audit_unrecorded_refusals",
            "Refusals of unauthenticated callers counted but not recorded one by one",
            self.unrecorded.clone(),
        );
        registry.register(
            "wid_audit_expired_records",
            "Records deleted by the retention",
            self.expired.clone(),
        );
        registry.register(
            "wid_audit_spooled_records",
            "Records kept on local disk because the database could not take them",
            self.spooled.clone(),
        );
        registry.register(
            "wid_audit_replayed_records",
            "Spooled records stored in the database since",
            self.replayed.clone(),
        );
    }

    pub(crate) fn add(&self, size: AuditSize, sign: i64) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX) * sign;
        self.records.inc_by(n(size.records));
        self.bytes.inc_by(n(size.bytes));
    }
}

impl App {
    /// Records an event. A store failure is logged, not returned: the answer is already decided,
    /// and the log line still carries the record.
    pub async fn audit(&self, event: Event<'_>) {
        if event.caller.is_none() && event.outcome.is_err() {
            let (record, ended) = self.audit_sampler.admit(event.action, crate::tokens::now());
            if let Some(unrecorded) = ended {
                self.record_unrecorded(&unrecorded).await;
            }
            if !record {
                self.metrics.audit.unrecorded.inc();
                return;
            }
        }
        let (outcome, reason) = match event.outcome {
            Ok(()) => ("GRANTED", ""),
            Err(reason) => ("DENIED", reason),
        };
        let field = |text: &str| clip(text, MAX_FIELD_BYTES);
        self.record(AuditRow {
            time: crate::iam::now_rfc3339(),
            action: event.action.to_owned(),
            caller: field(event.caller.unwrap_or(UNAUTHENTICATED)),
            provider: field(event.provider),
            target: field(event.target),
            token_id: field(event.token_id),
            outcome: outcome.to_owned(),
            reason: clip(reason, MAX_REASON_BYTES),
            pod: field(event.pod),
        })
        .await;
    }

    /// The record of a window's unauthenticated refusals that were only counted.
    async fn record_unrecorded(&self, unrecorded: &Unrecorded) {
        let time = wid_api::time::rfc3339;
        self.record(AuditRow {
            time: crate::iam::now_rfc3339(),
            action: unrecorded.action.to_owned(),
            caller: UNAUTHENTICATED.to_owned(),
            outcome: "DENIED".to_owned(),
            reason: format!(
                "{} more refusals of unauthenticated callers from {} to {} were counted, not recorded one by one",
                unrecorded.count,
                time(unrecorded.from),
                time(unrecorded.to)
            ),
            ..AuditRow::default()
        })
        .await;
    }

    /// Logs a record, then waits until it is stored: in the database, or, while that cannot
    /// take it, in the local spool. An answer that follows has its record kept.
    async fn record(&self, row: AuditRow) {
        // Every field a string, quoted in text logs: a value cannot pass for another field.
        tracing::info!(
            target: "wid::audit",
            action = row.action.as_str(),
            caller = row.caller.as_str(),
            provider = row.provider.as_str(),
            target_account = row.target.as_str(),
            token_id = row.token_id.as_str(),
            outcome = row.outcome.as_str(),
            reason = row.reason.as_str(),
            pod = row.pod.as_str(),
            "audit"
        );
        let (stored, kept) = tokio::sync::oneshot::channel();
        if self
            .audit_tx
            .send(AuditMessage::Record(Box::new(row), stored))
            .await
            .is_err()
            || kept.await.is_err()
        {
            tracing::error!("the audit writer is gone; a record was only logged");
        }
    }
}

impl App {
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
    /// A record, and who waits until it is kept.
    Record(Box<AuditRow>, tokio::sync::oneshot::Sender<()>),
    /// Answered once every record sent before it is stored.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Records queued before senders wait.
pub const AUDIT_QUEUE: usize = 10_000;
/// The most records in one transaction.
const AUDIT_BATCH: usize = 512;
/// How often a spool that holds records is replayed into the database.
const REPLAY_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl App {
    /// Waits until every record sent so far is stored, and the spool replayed if it can be.
    pub async fn flush_audit(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.audit_tx.send(AuditMessage::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The writer task: stores records in batches until every sender is gone, counting what it
/// stored in `metrics`; what the database cannot take goes to the spool, and back from it once
/// the database answers.
pub async fn write_audit_forever(
    store: Store,
    mut rx: tokio::sync::mpsc::Receiver<AuditMessage>,
    metrics: Arc<crate::Metrics>,
    mut spool: crate::audit_spool::Spool,
) {
    let mut batch: Vec<AuditRow> = Vec::with_capacity(AUDIT_BATCH);
    let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
    let mut replays = tokio::time::interval(REPLAY_PERIOD);
    loop {
        let first = tokio::select! {
            message = rx.recv() => match message {
                Some(message) => message,
                None => break,
            },
            _ = replays.tick(), if spool.pending() => {
                replay(&store, &mut spool, &metrics).await;
                continue;
            }
        };
        let mut flush = false;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                AuditMessage::Record(row, done) => {
                    batch.push(*row);
                    waiting.push(done);
                }
                AuditMessage::Flush(done) => {
                    flush = true;
                    waiting.push(done);
                }
            }
            if batch.len() < AUDIT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            keep(&store, &mut spool, &batch, &metrics).await;
            batch.clear();
        }
        if flush && spool.pending() {
            replay(&store, &mut spool, &metrics).await;
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores `batch` in the database, or in the spool if the database cannot take it.
async fn keep(
    store: &Store,
    spool: &mut crate::audit_spool::Spool,
    batch: &[AuditRow],
    metrics: &crate::Metrics,
) {
    // Known down: the spool at once, rather than each batch waiting out a timeout.
    let stored = match store.reachable() {
        true => store.append_audit_batch(batch).await,
        false => Err(wid_store::StoreError::Unavailable("unreachable".into())),
    };
    match stored {
        Ok(()) => return metrics.audit.add(AuditSize::of(batch), 1),
        Err(e) => {
            tracing::warn!(error = %e, records = batch.len(), "cannot store audit records; spooling them to local disk")
        }
    }
    match spool.append(batch) {
        Ok(()) => {
            metrics.audit.spooled.inc_by(batch.len() as u64);
        }
        Err(e) => {
            tracing::error!(error = %e, records = batch.len(), "cannot spool audit records; they are only in the log")
        }
    }
}

async fn replay(store: &Store, spool: &mut crate::audit_spool::Spool, metrics: &crate::Metrics) {
    if !store.reachable() {
        return;
    }
    match spool.replay(store).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(records = n, "stored spooled audit records");
            metrics.audit.replayed.inc_by(n as u64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot store spooled audit records yet"),
    }
}

/// Keeps the trail within its retention, once a minute: records the counts of windows of
/// unauthenticated refusals that are over, and deletes records older than the retention.
pub async fn expire_forever(app: Arc<App>) {
    match app.store.audit_size().await {
        Ok(size) => app.metrics.audit.add(size, 1),
        Err(e) => tracing::warn!(error = %e, "cannot read the audit trail's size"),
    }
    loop {
        let now = crate::tokens::now();
        for unrecorded in app.audit_sampler.due(now) {
            app.record_unrecorded(&unrecorded).await;
        }
        let retention = i64::try_from(app.config.audit_retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = wid_api::time::rfc3339(now.saturating_sub(retention));
        match app.store.delete_audit_before(&cutoff).await {
            Ok(deleted) => {
                app.metrics.audit.add(deleted, -1);
                app.metrics.audit.expired.inc_by(deleted.records);
                if deleted.records > 0 {
                    tracing::info!(records = deleted.records, before = %cutoff, "expired audit records");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot expire audit records"),
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_clipped_at_character_boundaries() {
        assert_eq!(clip("short", 10), "short");
        let clipped = clip(&"é".repeat(10), 5);
        assert_eq!(clipped, "éé…(16 bytes more)");
        let long = "k".repeat(11_500);
        assert!(clip(&long, MAX_FIELD_BYTES).len() < MAX_FIELD_BYTES + 32);
    }

    #[test]
    fn unauthenticated_refusals_are_sampled_per_action_and_minute() {
        let sampler = Sampler::default();
        let admitted = |at: i64| {
            (0..100)
                .filter(|_| sampler.admit("token_exchange", at).0)
                .count()
        };
        assert_eq!(admitted(1000), UNAUTHENTICATED_PER_MINUTE as usize);
        // Another action has its own window.
        assert!(sampler.admit("sign_jwt", 1000).0);
        // Nothing is due within the minute; after it, the count of the 80 left out.
        assert!(sampler.due(1059).is_empty());
        let due = sampler.due(1060);
        assert_eq!(
            due,
            vec![Unrecorded {
                action: "token_exchange",
                from: 1000,
                to: 1060,
                count: 80
            }]
        );
        assert!(sampler.due(1200).is_empty(), "taken out once");
        // A window that ends by a new refusal hands its count over at once.
        for _ in 0..30 {
            sampler.admit("sign_blob", 2000);
        }
        let (recorded, ended) = sampler.admit("sign_blob", 2061);
        assert!(recorded);
        assert_eq!(ended.map(|u| u.count), Some(10));
    }
}
