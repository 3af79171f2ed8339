//! Group commit for the embedded store.
//!
//! redb has one writer at a time, and a durable commit waits for the disk
//! (`fsync`: about 3 ms here, against some 10 µs for the rest of a small
//! transaction). Committing every write durably on its own therefore caps
//! local mode at a few hundred writes a second, however many requests and
//! workflow steps are waiting.
//!
//! So one thread owns the writer. It takes every write queued meanwhile
//! (a *group*) and runs each in a transaction of its own, committed with
//! `Durability::None`: visible at once, but not yet on disk. A write that
//! fails is dropped alone, with nothing written, exactly as before. Then one
//! empty transaction commits with `Durability::Immediate`, which makes the
//! whole group durable with a single `fsync`, and only then is each caller
//! answered. An acknowledged write is on disk; a crash loses only writes
//! nobody was told about.
//!
//! Under no load a group is one write and nothing changes; under load a
//! group is as large as what queued during the previous `fsync`, so the
//! disk's latency is paid once per group rather than once per write.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use redb::{Database, Durability, WriteTransaction};

use crate::ports::store::StoreError;

/// At most this many writes share one durable commit, so the first caller
/// of a long queue is not held back by everyone behind it.
const MAX_GROUP: usize = 256;

/// How a write's caller is answered once its group is durable (or not).
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One write: runs in its transaction (or learns why there is none) and
/// says whether to commit it, and how to answer its caller.
type Job = Box<dyn FnOnce(Result<&WriteTransaction, StoreError>) -> (bool, Reply) + Send>;

/// The writer thread and the queue to it. Dropping the last handle closes
/// the queue and waits for the thread, so the database file is released
/// when the store is (a restarted process can open it again at once).
pub(super) struct Writer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Result<Writer, StoreError> {
        let (jobs, queue) = channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || run(&db, &queue))
            .map_err(|e| internal(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `work` and waits until it is durable (or failed, having
    /// written nothing).
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |txn| {
            let outcome = txn.and_then(work);
            let commit = outcome.is_ok();
            let reply: Reply = Box::new(move |durable| {
                // A failed write is answered with its own error; a
                // successful one only if its group reached the disk.
                let _ = answer.send(outcome.and_then(|value| durable.map(|()| value)));
            });
            (commit, reply)
        });
        let stopped = || internal("the store's writer has stopped");
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // The thread ends as soon as the queue is closed and drained.
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, queue: &Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut replies = vec![run_one(db, first)];
        while replies.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => replies.push(run_one(db, job)),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        // StoreError is not Clone: every caller gets the failure's text.
        let durable = make_durable(db).map_err(|e| e.to_string());
        for reply in replies {
            reply(durable.clone().map_err(StoreError::Internal));
        }
    }
}

/// Runs one write in its own transaction, committed without waiting for
/// the disk; a failed write's transaction is dropped, writing nothing.
fn run_one(db: &Database, job: Job) -> Reply {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return job(Err(internal(e))).1,
    };
    if let Err(e) = txn.set_durability(Durability::None) {
        return job(Err(internal(e))).1;
    }
    let (commit, reply) = job(Ok(&txn));
    if !commit {
        drop(txn); // aborts
        return reply;
    }
    match txn.commit() {
        Ok(()) => reply,
        Err(e) => {
            let error = internal(e);
            Box::new(move |_| reply(Err(error)))
        }
    }
}

/// Makes every commit so far durable: one empty transaction committed with
/// `Durability::Immediate` persists the non-durable ones before it.
fn make_durable(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(internal)?;
    txn.commit().map_err(internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn insert(key: u64) -> impl FnOnce(&WriteTransaction) -> Result<(), StoreError> {
        move |txn| {
            let mut table = txn.open_table(TABLE).map_err(internal)?;
            if table.get(key).map_err(internal)?.is_some() {
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            table.insert(key, key * 10).map_err(internal)?;
            Ok(())
        }
    }

    /// Concurrent writes share durable commits, each still succeeds or fails
    /// alone, and every acknowledged one is in the file after it is reopened.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn acknowledged_writes_are_durable_and_a_failed_one_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.redb");
        let writer = Arc::new(Writer::start(Arc::new(Database::create(&path).unwrap())).unwrap());
        let mut tasks = Vec::new();
        for key in 0..200u64 {
            let writer = writer.clone();
            // Every tenth write collides with an earlier key and must fail
            // without taking its group down with it.
            let key = if key % 10 == 9 { key - 1 } else { key };
            tasks.push(tokio::spawn(async move {
                (key, writer.write(insert(key)).await)
            }));
        }
        let mut acknowledged = Vec::new();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                (key, Ok(())) => acknowledged.push(key),
                (_, Err(StoreError::AlreadyExists(_))) => refused += 1,
                (key, Err(other)) => panic!("write {key}: {other}"),
            }
        }
        assert_eq!(refused, 20);
        assert_eq!(acknowledged.len(), 180);
        drop(writer); // joins the thread, closing the database
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        for key in acknowledged {
            assert_eq!(table.get(key).unwrap().map(|v| v.value()), Some(key * 10));
        }
        assert_eq!(table.len().unwrap(), 180);
    }
}
