//! The background jobs' durable store: one redb file (`<jobs.data_dir>/jobs.redb`) written by
//! one thread of its own, so the actor that owns the jobs never waits on a disk.
//!
//! Writes are batched: every change that arrives while the writer commits goes into its
//! next transaction (group commit). `jobs.fsync` says when a commit reaches the disk:
//!
//! - `always`: every commit is made durable (fsync) before the changes in it are
//!   acknowledged, so an accepted submission survives a crash and a power cut;
//! - `interval`: commits are acknowledged at once and made durable at most
//!   `jobs.fsync_interval_ms` later. redb keeps no non-durable commit across a crash (of
//!   the process too: the reopened file goes back to the last durable commit), so a crash
//!   loses up to that interval of acknowledged changes.
//!
//! A change written behind ([`Store::write_later`]: a job started, ended, expired) waits up
//! to [`LATER_WAIT`] for the next acknowledged write (a submission, a cancellation, a flush)
//! and is committed with it, so that it costs no commit (and no fsync) of its own while
//! submissions arrive; the changes to one job in one commit are written once, the last one.
//!
//! redb's commits are atomic: after a crash the file holds the last commit whole, never a
//! part of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tracing::{error, warn};

use super::record::JobRecord;

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The store's node name, made once: it names this dispatcher in its jobs' ids.
const NODE_KEY: &str = "node";
/// The next job number, so that a number is never given twice, even after its job expired.
const NEXT_SEQ_KEY: &str = "next_seq";
/// Changes at most in one transaction.
const MAX_BATCH: usize = 8192;
/// The longest a change written behind waits for an acknowledged write to share its
/// commit. It bounds how much later than before a job's start (its attempt count) or end
/// is durable: a few ms, about the time of one commit under load.
pub const LATER_WAIT: Duration = Duration::from_millis(5);

/// When commits reach the disk (`jobs.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit, before its changes are acknowledged.
    Always,
    /// At most this long after a commit.
    Interval(Duration),
}

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be made.
    #[error("jobs.data_dir {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// redb refused (another process has the file open, the disk is full, ...).
    #[error("job store {path}: {source}")]
    Db {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<redb::Error>,
    },
    /// The writer thread is gone.
    #[error("job store writer stopped")]
    Stopped,
}

/// One change to the store.
#[derive(Debug)]
pub enum Change {
    /// Writes (or rewrites) a job.
    Put(Box<JobRecord>),
    /// Forgets job `seq`.
    Delete(u64),
}

/// A batch of changes sent to the writer, acknowledged once committed.
struct Batch {
    changes: Vec<Change>,
    next_seq: u64,
    ack: Option<oneshot::Sender<Result<(), String>>>,
    /// Commit durably now, whatever the policy (a flush at shutdown).
    durable: bool,
}

/// What the store held when it was opened.
#[derive(Debug)]
pub struct Loaded {
    /// This dispatcher's node name.
    pub node: String,
    /// The next job number to give.
    pub next_seq: u64,
    /// Every stored job.
    pub records: Vec<JobRecord>,
    /// Records that could not be read (logged, left in the file).
    pub unreadable: usize,
}

/// The handle through which the jobs actor writes; the writer thread stops (after a last
/// durable commit) once every handle is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    /// `None`: kept in memory only (`jobs.data_dir` empty); writes are acknowledged at once.
    tx: Option<Sender<Batch>>,
    /// Transactions committed so far.
    commits: Arc<AtomicU64>,
    /// Writes somebody waits for ([`Store::write`]) sent so far, through every handle.
    waited: Arc<AtomicU64>,
}

impl Store {
    /// A store that keeps nothing: background jobs live in memory only and are lost when the
    /// dispatcher stops (`jobs.data_dir` empty).
    pub fn memory() -> (Store, Loaded) {
        let loaded = Loaded {
            node: new_node_name(),
            next_seq: 1,
            records: Vec::new(),
            unreadable: 0,
        };
        let (commits, waited) = Default::default();
        let store = Store {
            tx: None,
            commits,
            waited,
        };
        (store, loaded)
    }

    /// Whether jobs survive a restart.
    pub fn is_durable(&self) -> bool {
        self.tx.is_some()
    }

    /// Transactions the writer has committed (each one fsync with `jobs.fsync = "always"`).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Writes somebody waited for ([`Store::write`]) so far: each is a batch the writer
    /// acknowledges.
    pub fn waited_writes(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    /// Opens (or creates) the store in `dir` and starts its writer.
    pub fn open(dir: &Path, fsync: Fsync) -> Result<(Store, Loaded), StoreError> {
        Self::open_waiting(dir, fsync, LATER_WAIT)
    }

    /// [`Store::open`], a change written behind waiting up to `later_wait` for an
    /// acknowledged write to share its commit.
    pub(crate) fn open_waiting(
        dir: &Path,
        fsync: Fsync,
        later_wait: Duration,
    ) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("jobs.redb");
        let db_error = |source: redb::Error| StoreError::Db {
            path: path.clone(),
            source: Box::new(source),
        };
        let db = Database::create(&path).map_err(|e| db_error(e.into()))?;
        let loaded = load(&db).map_err(db_error)?;
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            path,
            rx,
            fsync,
            later_wait,
            commits: commits.clone(),
        };
        thread::Builder::new()
            .name("nmid-job-store".into())
            .spawn(move || writer.run(db))
            .map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let store = Store {
            tx: Some(tx),
            commits,
            waited: Default::default(),
        };
        Ok((store, loaded))
    }

    /// Writes `changes` with the next job number `next_seq`; the answer comes once they are
    /// committed (durably with `jobs.fsync = "always"`).
    pub fn write(
        &self,
        changes: Vec<Change>,
        next_seq: u64,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (ack, done) = oneshot::channel();
        self.waited.fetch_add(1, Ordering::Relaxed);
        self.send(changes, next_seq, Some(ack), false);
        done
    }

    /// Writes `changes` without waiting for them (a failure is logged by the writer).
    pub fn write_later(&self, changes: Vec<Change>, next_seq: u64) {
        self.send(changes, next_seq, None, false);
    }

    /// Makes everything written so far durable; the answer comes once it is.
    pub fn flush(&self, next_seq: u64) -> oneshot::Receiver<Result<(), String>> {
        let (ack, done) = oneshot::channel();
        self.send(Vec::new(), next_seq, Some(ack), true);
        done
    }

    fn send(
        &self,
        changes: Vec<Change>,
        next_seq: u64,
        ack: Option<oneshot::Sender<Result<(), String>>>,
        durable: bool,
    ) {
        let Some(tx) = &self.tx else {
            if let Some(ack) = ack {
                let _ = ack.send(Ok(()));
            }
            return;
        };
        let batch = Batch {
            changes,
            next_seq,
            ack,
            durable,
        };
        if let Err(mpsc::SendError(batch)) = tx.send(batch) {
            if let Some(ack) = batch.ack {
                let _ = ack.send(Err(StoreError::Stopped.to_string()));
            }
        }
    }
}

/// Reads the node name (made on first open), the next job number and every job.
fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let write = db.begin_write()?;
    let (node, stored_next) = {
        let mut meta = write.open_table(META)?;
        let node = match meta.get(NODE_KEY)? {
            Some(node) => String::from_utf8_lossy(node.value()).into_owned(),
            None => String::new(),
        };
        let node = match node.is_empty() {
            true => {
                let made = new_node_name();
                meta.insert(NODE_KEY, made.as_bytes())?;
                made
            }
            false => node,
        };
        let next = meta.get(NEXT_SEQ_KEY)?.and_then(|v| {
            let bytes: [u8; 8] = v.value().try_into().ok()?;
            Some(u64::from_be_bytes(bytes))
        });
        write.open_table(JOBS)?;
        (node, next.unwrap_or(1))
    };
    write.commit()?;
    let read = db.begin_read()?;
    let jobs = read.open_table(JOBS)?;
    let mut records = Vec::new();
    let mut unreadable = 0;
    let mut next_seq = stored_next.max(1);
    for entry in jobs.iter()? {
        let (seq, bytes) = entry?;
        next_seq = next_seq.max(seq.value() + 1);
        match JobRecord::decode(bytes.value()) {
            Ok(record) => records.push(record),
            Err(cause) => {
                unreadable += 1;
                warn!(seq = seq.value(), %cause, "job store: a record could not be read; left in the file");
            }
        }
    }
    Ok(Loaded {
        node,
        next_seq,
        records,
        unreadable,
    })
}

/// A node name no other store is likely to have: 12 hex digits of a hash of the time, the
/// process and a stack address.
fn new_node_name() -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hash.update(now.map_or(0, |d| d.as_nanos()).to_be_bytes());
    hash.update(std::process::id().to_be_bytes());
    let local = 0u8;
    hash.update((&local as *const u8 as usize).to_be_bytes());
    let digest = hash.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The writer thread's ends: its file, its channel, its policy.
struct Writer {
    path: PathBuf,
    rx: Receiver<Batch>,
    fsync: Fsync,
    /// How long a change written behind waits for an acknowledged write ([`LATER_WAIT`]).
    later_wait: Duration,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// The writer thread: takes every batch waiting, commits them in one transaction, then
    /// acknowledges them. A batch nobody waits for first waits up to `later_wait` for one
    /// somebody waits for, to share its commit. Under `Always` every commit is durable;
    /// under `Interval` commits are durable at most every interval (and when the interval is
    /// over with changes not yet durable, an empty durable commit makes them so). After a
    /// failed commit (a full disk) the file is opened again, as redb asks, and the next
    /// batch is tried afresh.
    fn run(self, db: Database) {
        let (rx, fsync) = (&self.rx, self.fsync);
        let mut db = Some(db);
        let mut last_durable = Instant::now();
        let mut dirty = false;
        loop {
            let first = match (fsync, dirty) {
                (Fsync::Interval(every), true) => {
                    let left = every.saturating_sub(last_durable.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(batch) => batch,
                        Err(RecvTimeoutError::Timeout) => {
                            if let Some(open) = &db {
                                if let Err(cause) = commit(open, Vec::new(), None, true) {
                                    error!(%cause, "job store: fsync failed");
                                }
                            }
                            last_durable = Instant::now();
                            dirty = false;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(batch) => batch,
                    Err(_) => break,
                },
            };
            let batches = self.gather(first);
            let durable = batches.iter().any(|b| b.durable)
                || match fsync {
                    Fsync::Always => true,
                    Fsync::Interval(every) => last_durable.elapsed() >= every,
                };
            let next_seq = batches.iter().map(|b| b.next_seq).max();
            let mut acks = Vec::new();
            let mut all = Vec::new();
            for batch in batches {
                all.extend(batch.changes);
                acks.extend(batch.ack);
            }
            let result = match &db {
                Some(open) => commit(open, all, next_seq, durable).map_err(|e| e.to_string()),
                None => Err("the job store could not be opened again after an error".to_owned()),
            };
            match &result {
                Ok(()) if durable => {
                    last_durable = Instant::now();
                    dirty = false;
                }
                Ok(()) => dirty = true,
                Err(cause) => {
                    error!(%cause, "job store: commit failed; opening the file again");
                    // The old handle holds the file's lock: dropped before the file is
                    // opened again. What was not durable is gone with it.
                    drop(db.take());
                    dirty = false;
                    db = Database::create(&self.path)
                        .inspect_err(|cause| error!(%cause, "job store: opening again failed"))
                        .ok();
                }
            }
            if result.is_ok() {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            for ack in acks {
                let _ = ack.send(result.clone());
            }
        }
        // Every handle is gone: what was written is made durable before the thread ends.
        if let (true, Some(open)) = (dirty, &db) {
            if let Err(cause) = commit(open, Vec::new(), None, true) {
                error!(%cause, "job store: last fsync failed");
            }
        }
    }

    /// The batches of the next commit: `first`, and, when nobody waits for it, those that
    /// arrive within `later_wait` until one somebody waits for; then every batch waiting.
    fn gather(&self, first: Batch) -> Vec<Batch> {
        let mut changes = first.changes.len();
        let mut waited_for = first.ack.is_some();
        let mut batches = vec![first];
        let until = Instant::now() + self.later_wait;
        while !waited_for && changes < MAX_BATCH {
            let left = until.saturating_duration_since(Instant::now());
            // Timed out or disconnected: what is here is committed now.
            let Ok(batch) = self.rx.recv_timeout(left) else {
                break;
            };
            changes += batch.changes.len();
            waited_for = batch.ack.is_some();
            batches.push(batch);
        }
        while changes < MAX_BATCH {
            let Ok(batch) = self.rx.try_recv() else { break };
            changes += batch.changes.len();
            batches.push(batch);
        }
        batches
    }
}

/// Commits `changes` in one transaction, each job's last change only (each is the whole
/// record, or its deletion), in job order.
fn commit(
    db: &Database,
    changes: Vec<Change>,
    next_seq: Option<u64>,
    durable: bool,
) -> Result<(), redb::Error> {
    let mut last: BTreeMap<u64, Change> = BTreeMap::new();
    for change in changes {
        let seq = match &change {
            Change::Put(record) => record.seq,
            Change::Delete(seq) => *seq,
        };
        last.insert(seq, change);
    }
    let mut write = db.begin_write()?;
    let durability = match durable {
        true => Durability::Immediate,
        false => Durability::None,
    };
    write.set_durability(durability)?;
    {
        let mut jobs = write.open_table(JOBS)?;
        for change in last.into_values() {
            match change {
                Change::Put(record) => {
                    jobs.insert(record.seq, record.encode().as_slice())?;
                }
                Change::Delete(seq) => {
                    jobs.remove(seq)?;
                }
            }
        }
        if let Some(next) = next_seq {
            let mut meta = write.open_table(META)?;
            meta.insert(NEXT_SEQ_KEY, next.to_be_bytes().as_slice())?;
        }
    }
    write.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::record::JobState;

    fn record(seq: u64) -> JobRecord {
        let mut record = crate::jobs::record::tests::sample();
        record.seq = seq;
        record.state = JobState::Queued;
        record
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nmid-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Opens the store in `dir` once the last writer thread on it has let its lock go.
    fn reopen(dir: &Path) -> (Store, Loaded) {
        loop {
            match Store::open(dir, Fsync::Always) {
                Ok(opened) => break opened,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// A change written behind waits for the next acknowledged write and shares its one
    /// commit; of two changes to one job in a commit, the later one is what is stored.
    #[actix_rt::test]
    async fn a_change_written_behind_shares_the_next_acknowledged_commit() {
        let dir = temp_dir("later");
        let wait = Duration::from_secs(30);
        let (store, _) = Store::open_waiting(&dir, Fsync::Always, wait).unwrap();
        let mut running = record(1);
        running.state = JobState::Running;
        store.write_later(vec![Change::Put(Box::new(running))], 3);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(store.commits(), 0, "it waits for an acknowledged write");
        let mut done = record(1);
        done.state = JobState::Succeeded;
        let changes = vec![
            Change::Put(Box::new(done.clone())),
            Change::Put(Box::new(record(2))),
        ];
        store.write(changes, 3).await.unwrap().unwrap();
        assert_eq!(store.commits(), 1, "one commit for both");
        drop(store);
        let (store, loaded) = reopen(&dir);
        assert_eq!(loaded.records, vec![done, record(2)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A change written behind with nothing after it is committed (durably) once its wait
    /// is over.
    #[actix_rt::test]
    async fn a_change_written_behind_alone_is_committed_after_its_wait() {
        let dir = temp_dir("alone");
        let (store, _) =
            Store::open_waiting(&dir, Fsync::Always, Duration::from_millis(50)).unwrap();
        store.write_later(vec![Change::Put(Box::new(record(1)))], 2);
        let started = Instant::now();
        while store.commits() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never committed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(started.elapsed() >= Duration::from_millis(40));
        drop(store);
        let (store, loaded) = reopen(&dir);
        assert_eq!(loaded.records, vec![record(1)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store whose records were written by field name (by the dispatcher before the
    /// compact encoding) loads whole.
    #[actix_rt::test]
    async fn a_store_written_by_field_name_loads() {
        let dir = temp_dir("named");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join("jobs.redb")).unwrap();
            let write = db.begin_write().unwrap();
            {
                let mut jobs = write.open_table(JOBS).unwrap();
                let named = rmp_serde::to_vec_named(&record(4)).unwrap();
                jobs.insert(4, named.as_slice()).unwrap();
            }
            write.commit().unwrap();
        }
        let (store, loaded) = reopen(&dir);
        assert_eq!((loaded.records, loaded.unreadable), (vec![record(4)], 0));
        assert_eq!(loaded.next_seq, 5);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What was written and acknowledged is there when the store is opened again, under
    /// the same node name; deleted jobs are gone and their numbers are not given again.
    #[actix_rt::test]
    async fn written_jobs_are_there_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("nmid-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, loaded) = Store::open(&dir, Fsync::Always).unwrap();
        assert!(loaded.records.is_empty());
        assert_eq!(loaded.next_seq, 1);
        let node = loaded.node.clone();
        assert_eq!(node.len(), 12);
        let changes = vec![
            Change::Put(Box::new(record(1))),
            Change::Put(Box::new(record(2))),
        ];
        store.write(changes, 3).await.unwrap().unwrap();
        store
            .write(vec![Change::Delete(2)], 3)
            .await
            .unwrap()
            .unwrap();
        drop(store);
        // The writer thread ends once its handles are gone; wait for its file lock to go.
        let (store, loaded) = loop {
            match Store::open(&dir, Fsync::Interval(Duration::from_millis(50))) {
                Ok(opened) => break opened,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(loaded.node, node);
        assert_eq!(loaded.next_seq, 3);
        assert_eq!(loaded.records, vec![record(1)]);
        store.flush(3).await.unwrap().unwrap();
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
