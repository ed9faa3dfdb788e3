//! Other replicas' writes, as they reach this one (PostgreSQL): every write is followed by a
//! notification on one channel, and each replica listens on its own connection, clearing its
//! cache on each (see [`crate::cache`] for when cached entries are answered).
//!
//! A heartbeat tells whether the listener still hears: every [`HEARTBEAT_PERIOD`] each replica
//! notifies the channel itself, through its pool (so that a failure also says the database is
//! unreachable), and expects to hear the channel (its own heartbeat at least) on its listener.
//! PostgreSQL delivers notifications in the order their transactions committed, so hearing one
//! means every write notified before it was heard. A replica ignores its own writes'
//! notifications: it cleared its cache when it wrote. Silence
//! for [`SILENCE`] stops the cache answering; for [`GIVE_UP`], the session is dropped and a new
//! one begun, whose start is a resync.

use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;

use crate::{Result, Store, StoreError};

/// The channel every replica notifies and listens on.
const CHANNEL: &str = "wid_changes";
/// A write of rows the cache holds.
pub(crate) const ROWS: &str = "rows";
/// A write of signing keys.
pub(crate) const KEYS: &str = "keys";
/// A replica's heartbeat.
const HEARTBEAT: &str = "heartbeat";

/// How often each replica notifies itself.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(250);
pub const SILENCE: Duration = Duration::from_millis(1500);
pub const GIVE_UP: Duration = Duration::from_secs(5);
/// The wait before connecting the listener again after a failure.
const RETRY: Duration = Duration::from_millis(500);

impl Store {
    /// Tells every replica (this one included) that `what` was written. A failure is logged:
    /// the others' entries then live at most [`crate::cache::SHARED_TTL`].
    pub(crate) async fn notify(&self, what: &str) {
        if let Err(e) = self.send(what).await {
            tracing::warn!(error = %e, "cannot tell the other replicas of a write");
        }
    }

    /// Notifies the channel of `kind`, signed with this replica's name, through the pool.
    async fn send(&self, kind: &str) -> Result<()> {
        let payload = format!("{kind}:{}", self.changes.me);
        self.cache
            .bounded(async {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(&self.db.pool)
                    .await?;
                Ok(())
            })
            .await
    }

    /// Follows the other replicas' writes for as long as the store lives (PostgreSQL only:
    /// returns at once otherwise).
    pub async fn follow_changes(self) {
        let Some(url) = self.changes.url.clone() else {
            return;
        };
        let listen = async {
            loop {
                match self.listen_once(&url).await {
                    Ok(()) => {
                        tracing::warn!("lost the connection that hears other replicas' writes")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hear other replicas' writes; retrying")
                    }
                }
                self.cache.set_listening(false);
                tokio::time::sleep(RETRY).await;
            }
        };
        tokio::join!(self.heartbeat_forever(), listen);
    }

    /// Notifies the channel every [`HEARTBEAT_PERIOD`], recording whether the database answered.
    async fn heartbeat_forever(&self) {
        let mut ticks = tokio::time::interval(HEARTBEAT_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let sent = self.send(HEARTBEAT).await;
            let reachable = sent.is_ok();
            if reachable != self.cache.reachable() {
                match &sent {
                    Ok(()) => tracing::info!("the database answers again"),
                    Err(e) => tracing::error!(error = %e, "the database is unreachable"),
                }
            }
            self.cache.set_unreachable(!reachable);
        }
    }

    /// One listening session: a resync at its start, then every notification until the
    /// connection is lost (`Ok`) or silent for too long.
    async fn listen_once(&self, url: &str) -> Result<()> {
        let mut listener = self.cache.bounded(listener(url)).await?;
        self.cache.resync();
        self.keys_changed();
        tracing::info!("hearing other replicas' writes");
        let mut last_heard = Instant::now();
        let mut checks = tokio::time::interval(HEARTBEAT_PERIOD);
        loop {
            tokio::select! {
                received = listener.try_recv() => {
                    let Some(notification) = received? else {
                        return Ok(());
                    };
                    last_heard = Instant::now();
                    self.cache.set_listening(true);
                    self.changed(notification.payload());
                }
                _ = checks.tick() => {
                    let silent = last_heard.elapsed();
                    if silent > SILENCE {
                        self.cache.set_listening(false);
                    }
                    if silent > GIVE_UP {
                        return Err(StoreError::Unavailable(format!(
                            "heard nothing for {} s", silent.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// What a notification (`KIND:REPLICA`) changes here: nothing for a heartbeat or this
    /// replica's own write; else the cache, and the keys after a key write.
    fn changed(&self, payload: &str) {
        let (kind, from) = payload.split_once(':').unwrap_or((payload, ""));
        if kind == HEARTBEAT || from == self.changes.me {
            return;
        }
        self.cache.invalidate();
        if kind == KEYS {
            self.keys_changed();
        }
    }

    fn keys_changed(&self) {
        self.changes.keys.send_modify(|n| *n += 1);
    }

    /// Changes each time the signing keys may have changed (at any replica).
    pub fn key_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.keys.subscribe()
    }
}

async fn listener(url: &str) -> Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
