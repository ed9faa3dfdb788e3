//! Audit records the database could not take, kept on local disk until it can.
//!
//! Each process appends to a file of its own in `DATA_DIR/audit-spool/` (JSON lines, 0600,
//! synced before the records' requests are answered), holding an exclusive lock on it for as
//! long as it lives. A replay moves every spooled record into the database: this process's own
//! file, and the files of processes that died (their locks are free), which any process sharing
//! the directory takes over; a process restarted after kill -9 replays its predecessor's. A line
//! cut short by a crash mid-write was never acknowledged and is skipped.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wid_store::{AuditRow, Store};

/// The spool's file format: one record per line. Its own type, since the spool is a format on
/// disk that outlives a version of the store's rows.
#[derive(Serialize, Deserialize)]
struct Line {
    time: String,
    action: String,
    caller: String,
    provider: String,
    target: String,
    token_id: String,
    outcome: String,
    reason: String,
    pod: String,
}

impl From<&AuditRow> for Line {
    fn from(r: &AuditRow) -> Line {
        Line {
            time: r.time.clone(),
            action: r.action.clone(),
            caller: r.caller.clone(),
            provider: r.provider.clone(),
            target: r.target.clone(),
            token_id: r.token_id.clone(),
            outcome: r.outcome.clone(),
            reason: r.reason.clone(),
            pod: r.pod.clone(),
        }
    }
}

impl From<Line> for AuditRow {
    fn from(l: Line) -> AuditRow {
        AuditRow {
            time: l.time,
            action: l.action,
            caller: l.caller,
            provider: l.provider,
            target: l.target,
            token_id: l.token_id,
            outcome: l.outcome,
            reason: l.reason,
            pod: l.pod,
        }
    }
}

/// The spool directory's name in the data directory.
pub const SPOOL_DIR: &str = "audit-spool";

/// This process's spool file, made at its first use.
pub struct Spool {
    dir: PathBuf,
    own: Option<(PathBuf, File)>,
    /// Whether any file may hold records (checked at start, set by each append).
    pending: bool,
}

impl Spool {
    pub fn new(data_dir: &Path) -> Spool {
        let dir = data_dir.join(SPOOL_DIR);
        let pending = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        Spool {
            dir,
            own: None,
            pending,
        }
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    /// Appends `rows`, synced to disk.
    pub fn append(&mut self, rows: &[AuditRow]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut text, &Line::from(row)).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        let file = self.own_file()?;
        file.write_all(&text)?;
        file.sync_data()?;
        self.pending = true;
        Ok(())
    }

    fn own_file(&mut self) -> std::io::Result<&mut File> {
        if self.own.is_none() {
            wid_runtime::private_files::ensure_private_dir(&self.dir)
                .map_err(std::io::Error::other)?;
            let name = format!("{}.jsonl", wid_runtime::secrets::random_hex::<8>());
            let path = self.dir.join(name);
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .read(true)
                .mode(0o600)
                .open(&path)?;
            file.try_lock().map_err(std::io::Error::other)?;
            self.own = Some((path, file));
        }
        match &mut self.own {
            Some((_, file)) => Ok(file),
            None => Err(std::io::Error::other("no spool file")),
        }
    }

    /// Moves every spooled record it can into the store; returns how many. Stops at the first
    /// failure of the store, keeping what is left for the next replay.
    pub async fn replay(&mut self, store: &Store) -> Result<usize, wid_store::StoreError> {
        let mut moved = 0;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        for path in entries {
            let own = self.own.as_ref().is_some_and(|(p, _)| *p == path);
            if own {
                moved += self.replay_own(store).await?;
            } else if let Some(n) = replay_orphan(store, &path).await? {
                moved += n;
            }
        }
        // What is left belongs to live processes, which replay their own.
        self.pending = false;
        Ok(moved)
    }

    async fn replay_own(&mut self, store: &Store) -> Result<usize, wid_store::StoreError> {
        let Some((path, file)) = &self.own else {
            return Ok(0);
        };
        let rows = read_lines(path);
        if !rows.is_empty() {
            store.append_audit_batch(&rows).await?;
        }
        if let Err(e) = file.set_len(0) {
            tracing::error!(error = %e, "cannot empty the audit spool; its records may be stored twice");
        }
        Ok(rows.len())
    }
}

/// Replays a file whose process is gone (its lock is free), then deletes it; `None` for a
/// live process's file.
async fn replay_orphan(store: &Store, path: &Path) -> Result<Option<usize>, wid_store::StoreError> {
    let Ok(file) = std::fs::OpenOptions::new().read(true).open(path) else {
        return Ok(None);
    };
    if file.try_lock().is_err() {
        return Ok(None);
    }
    let rows = read_lines(path);
    if !rows.is_empty() {
        store.append_audit_batch(&rows).await?;
        tracing::info!(records = rows.len(), file = %path.display(), "stored the audit records of a process that stopped");
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::error!(error = %e, file = %path.display(), "cannot remove a replayed audit spool");
    }
    Ok(Some(rows.len()))
}

/// The records of a spool file; a line that does not parse (cut short by a crash) is skipped.
fn read_lines(path: &Path) -> Vec<AuditRow> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Line>(&line).ok())
        .map(AuditRow::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(token_id: &str) -> AuditRow {
        AuditRow {
            time: "2026-12-06T00:00:00Z".into(),
            action: "generate_access_token".into(),
            token_id: token_id.into(),
            outcome: "GRANTED".into(),
            ..AuditRow::default()
        }
    }

    fn spool_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(SPOOL_DIR)).map_or(0, |d| d.count())
    }

    #[tokio::test]
    async fn spooled_records_reach_the_store_once_whoever_spooled_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(&dir.path().join("wid.db"))
            .await
            .expect("store");
        let mut first = Spool::new(dir.path());
        first.append(&[row("a"), row("b")]).expect("append");
        // A crash mid-write leaves a torn last line, never acknowledged.
        let own = first.own.as_ref().map(|(p, _)| p.clone()).expect("own");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&own)
            .and_then(|mut f| f.write_all(b"{\"time\":\"2026"))
            .expect("torn line");

        // Another process sharing the directory leaves a live process's spool alone.
        let mut second = Spool::new(dir.path());
        assert!(second.pending(), "a spool left at start is pending");
        assert_eq!(second.replay(&store).await.expect("replay"), 0);

        // Once the first is gone (kill -9: its lock goes with it), its records are stored
        // and its file removed.
        drop(first);
        assert_eq!(second.replay(&store).await.expect("replay"), 2);
        assert_eq!(spool_files(dir.path()), 0);

        // A process's own spool is stored and emptied.
        second.append(&[row("c")]).expect("append");
        assert_eq!(second.replay(&store).await.expect("replay"), 1);
        assert_eq!(
            second.replay(&store).await.expect("replay"),
            0,
            "stored once"
        );
        let mut ids: Vec<String> = store
            .list_audit(10)
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.token_id)
            .collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c"]);
    }
}
