//! Owns group commits: the queue one task drains in groups ([`Batcher`], also behind the webhook
//! intake), the writer connection such a task keeps from one group to the next ([`Kept`]), and
//! SQLite's group commit for metering (reserve, settle): writes queued at the same moment
//! run inside one transaction on the writer connection, and every caller is answered only after
//! that transaction commits.
//!
//! Why: SQLite makes one commit at a time and each commit waits for the disk (`fsync`, about
//! 0.2 ms here). With one commit per reserve and per settle, 32 runners queued behind each other
//! and the slowest waited 100 ms. Now the cost of a commit is shared by every write that queued
//! during the previous one. Each write still sees the ones before it (same transaction, in order),
//! so the quota check under the row lock holds exactly as before. PostgreSQL commits
//! concurrently and groups its log flushes itself, so it keeps one transaction per call.
//!
//! Within a group, the two hottest writes (a paid unit, a settle) are set-based: all of the
//! group's paid units are one multi-row insert and all its settles one update (see
//! `usage::write_sets`). A statement is a round trip to SQLite's worker thread, and on this
//! machine a round trip (two thread wake-ups) cost more than the commit: a group of 32 with a
//! savepoint around each write was about 100 round trips and the machine sat half idle while
//! the runners waited. Any other write runs in a savepoint of its own, so one that fails rolls
//! back alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection as _, Postgres, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{Db, Store, StoreError, StoreResult};

/// At most this many writes share a transaction (bounds how long one commit keeps others out).
const MAX_GROUP: usize = 256;

type Boxed<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;
/// Answers a write's caller once its group's commit is known.
pub(super) type Done = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;
/// A write in a savepoint of its own: runs on the group's connection; says whether it
/// succeeded, and how to answer.
type Any = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, (bool, Done)> + Send>;

/// One queued write.
pub(super) enum Op {
    /// Written with the group's other writes of its kind in one statement.
    Set(super::usage::SetWrite),
    Any(Any),
}

/// The answer to send once the group's commit is known: the write's own error, else the
/// commit's, else its value.
pub(super) fn answer_after_commit<T: Send + 'static>(
    reply: oneshot::Sender<StoreResult<T>>,
    result: Result<T, sqlx::Error>,
) -> Done {
    Box::new(move |commit| {
        let _ = reply.send(match (result, commit) {
            (Err(e), _) => Err(e.into()),
            (Ok(_), Err(e)) => Err(copy_of(e)),
            (Ok(value), Ok(())) => Ok(value),
        });
    })
}

/// A queue that one task drains in groups, started on first use (inside the caller's runtime):
/// the webhook intake's and metering's group commits both run on it.
///
/// The task is owned through its queue: it ends once the last sender is gone (the store, with
/// every clone of it, dropped at shutdown) after writing and answering what was queued, so it
/// never outlives its store and never drops a write a caller waits for. Aborting it instead
/// would cut a group mid-transaction.
pub(super) struct Batcher<T>(OnceLock<mpsc::Sender<T>>);

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("started", &self.0.get().is_some()).finish()
    }
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher(OnceLock::new())
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Queues `item`; the task calls `write` with whatever has queued, at most `max` at a time,
    /// and with what the previous write kept (see [`Kept`]). When the task is gone (a store
    /// outliving the runtime that started it), `write` runs here with `item` alone. Waits while
    /// the queue is full (back-pressure, not an unbounded queue).
    pub(super) async fn submit<W, F, S>(&self, item: T, max: usize, write: W)
    where
        W: Fn(Vec<T>, Option<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Option<S>> + Send,
        S: Send + 'static,
    {
        if let Err(mpsc::error::SendError(item)) = self.queue(max, &write).send(item).await {
            write(vec![item], None).await;
        }
    }

    /// Queues `item` unless the queue is full or gone; never waits (work that may be skipped).
    pub(super) fn offer<W, F, S>(&self, item: T, max: usize, write: W)
    where
        W: Fn(Vec<T>, Option<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Option<S>> + Send,
        S: Send + 'static,
    {
        let _ = self.queue(max, &write).try_send(item);
    }

    fn queue<W, F, S>(&self, max: usize, write: &W) -> &mpsc::Sender<T>
    where
        W: Fn(Vec<T>, Option<S>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Option<S>> + Send,
        S: Send + 'static,
    {
        self.0.get_or_init(|| {
            let (sender, mut queue) = mpsc::channel(4_096);
            let write = write.clone();
            tokio::spawn(async move {
                let mut group = Vec::with_capacity(max);
                let mut kept = None;
                while queue.recv_many(&mut group, max).await > 0 {
                    kept = write(std::mem::take(&mut group), kept.take()).await;
                    // Nothing more queued: what the write kept goes back now, so nobody waits
                    // for it while this task waits for work.
                    if queue.is_empty() {
                        kept = None;
                    }
                }
            });
            sender
        })
    }
}

/// How long a batching task keeps the writer's connection from one group to the next while
/// more are queued (then it goes back to its pool, where other writers queue first come first
/// served: the event workers' claims, the other batching task).
const KEEP: Duration = Duration::from_millis(5);

/// A writer connection a batching task keeps between its groups.
///
/// Why: sqlx pings a connection on its way back to the pool, in a task of its own, and the next
/// group waits for that before it can have it: on SQLite a round trip to its worker thread and
/// two task wake-ups, about 300 µs against a group's 750 µs insert, spent on every group of a
/// webhook burst. Kept at most [`KEEP`] and never while the queue is empty.
pub(super) enum Kept {
    Sqlite(PoolConnection<Sqlite>, Instant),
    Postgres(PoolConnection<Postgres>, Instant),
}

impl Kept {
    /// `kept` while it may serve another group; else it goes back to its pool now (before this
    /// task asks the pool again, so it queues behind whoever waits there).
    pub(super) fn still(kept: Option<Kept>) -> Option<Kept> {
        kept.filter(|kept| {
            let (Kept::Sqlite(_, at) | Kept::Postgres(_, at)) = kept;
            at.elapsed() < KEEP
        })
    }

    /// [`Kept::still`], else a connection from `db`'s writer pool.
    pub(super) async fn take(db: &Db, kept: Option<Kept>) -> Result<Kept, sqlx::Error> {
        Ok(match (Kept::still(kept), db) {
            (Some(kept), _) => kept,
            (None, Db::Sqlite(pool)) => Kept::Sqlite(pool.acquire().await?, Instant::now()),
            (None, Db::Postgres(pool)) => Kept::Postgres(pool.acquire().await?, Instant::now()),
        })
    }
}

impl Store {
    /// Runs `work` on SQLite's writer in the transaction of whatever writes are queued with it;
    /// its result once that transaction has committed. The work must not wait on anything but
    /// the connection (it holds up the whole group).
    pub(super) async fn grouped<T, W>(&self, pool: &SqlitePool, work: W) -> StoreResult<T>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(&'c mut SqliteConnection) -> Boxed<'c, Result<T, sqlx::Error>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<StoreResult<T>>();
        let op: Any = Box::new(move |conn| {
            Box::pin(async move {
                let result = work(conn).await;
                (result.is_ok(), answer_after_commit(reply, result))
            })
        });
        self.submit_grouped(pool, Op::Any(op), answer).await
    }

    /// Queues `op` for SQLite's writer; its answer once its group has committed.
    pub(super) async fn submit_grouped<T>(
        &self,
        pool: &SqlitePool,
        op: Op,
        answer: oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        let pool = pool.clone();
        let write = move |ops, kept| {
            let pool = pool.clone();
            async move { write_group(&pool, ops, kept).await }
        };
        self.group.submit(op, MAX_GROUP, write).await;
        // Dropped unanswered: the group failed before this write ran (nothing of it committed).
        answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the write was not committed".into())))
    }
}

/// One transaction for `ops` on the writer connection (`kept`, or one from `pool`): the
/// set-based writes first, then each other write in its savepoint; then every caller is
/// answered. A write that fails is rolled back alone and answered with its error; if the
/// transaction itself fails (cannot begin, or cannot commit: a full disk), every caller gets that
/// error and nothing of the group is kept. The connection, for the next group, if all went well.
pub(super) async fn write_group(pool: &SqlitePool, ops: Vec<Op>, kept: Option<Kept>) -> Option<Kept> {
    let mut answers: Vec<Done> = Vec::with_capacity(ops.len());
    let (mut sets, mut rest) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            Op::Set(write) => sets.push(write),
            Op::Any(any) => rest.push(any),
        }
    }
    let mut conn = None;
    let outcome: Result<(), StoreError> = async {
        let (conn, _) = match Kept::still(kept) {
            Some(Kept::Sqlite(held, at)) => conn.insert((held, at)),
            _ => conn.insert((pool.acquire().await?, Instant::now())),
        };
        crate::in_transaction!(&mut **conn, |tx| {
            if !sets.is_empty() {
                super::usage::write_sets(&mut tx, std::mem::take(&mut sets), &mut answers).await?;
            }
            for op in rest {
                savepoint(&mut tx).await?;
                let (ok, done) = op(&mut tx).await;
                answers.push(done);
                end_savepoint(&mut tx, ok).await?;
            }
            Ok::<_, StoreError>(())
        })
    }
    .await;
    for done in answers {
        done(outcome.as_ref().map(|_| ()));
    }
    // After a failure the connection goes back to its pool, which closes it if its transaction
    // could not be ended.
    conn.filter(|_| outcome.is_ok()).map(|(conn, at)| Kept::Sqlite(conn, at))
}

/// Opens the savepoint a write runs in (one at a time: they do not nest).
pub(super) async fn savepoint(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SAVEPOINT hydra_op").execute(conn).await.map(|_| ())
}

/// Ends [`savepoint`]: keeps what the write did when it succeeded (`ok`), else undoes it alone.
/// An error here means the transaction itself is gone (SQLite ends it on an I/O error).
pub(super) async fn end_savepoint(conn: &mut SqliteConnection, ok: bool) -> Result<(), sqlx::Error> {
    if !ok {
        sqlx::query("ROLLBACK TO hydra_op").execute(&mut *conn).await?;
    }
    sqlx::query("RELEASE hydra_op").execute(conn).await.map(|_| ())
}

/// The error a whole group failed with, for each of its callers.
pub(super) fn copy_of(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        other => StoreError::Other(anyhow::anyhow!("{other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::Batcher;

    /// The task answers what was queued and ends with its owner: nothing it was given is
    /// dropped, and nothing keeps running after the store is gone (the task's own copy of the
    /// write function, and what it holds, is let go only when the task ends).
    #[tokio::test]
    async fn the_batching_task_writes_what_was_queued_and_ends_with_its_owner() {
        let batcher = Arc::new(Batcher::<u32>::default());
        let written = Arc::new(AtomicUsize::new(0));
        let write = {
            let written = written.clone();
            move |group: Vec<u32>, _: Option<()>| {
                let written = written.clone();
                async move {
                    tokio::task::yield_now().await;
                    written.fetch_add(group.len(), Ordering::SeqCst);
                    None
                }
            }
        };
        let submits: Vec<_> = (0..50)
            .map(|i| {
                let (batcher, write) = (batcher.clone(), write.clone());
                tokio::spawn(async move { batcher.submit(i, 8, write).await })
            })
            .collect();
        for submit in submits {
            submit.await.expect("a submit task");
        }
        drop(write);
        drop(batcher);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&written) > 1 {
            assert!(tokio::time::Instant::now() < deadline, "the task ends once its queue has no sender");
            tokio::task::yield_now().await;
        }
        assert_eq!(written.load(Ordering::SeqCst), 50, "every queued item was written");
    }
}
