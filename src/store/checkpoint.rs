//! Owns SQLite's WAL checkpoints: taken on a connection of their own, off the writer's path.
//!
//! Why: by default the connection whose commit takes the write-ahead log past 1,000 pages copies
//! them back into the database file and syncs it, inside that commit. On the writer connection
//! that held up every reserve, settle and webhook queued behind it for as long, several times a
//! second under a webhook burst (the stored events are most of what is written): the intake's
//! p99 was 8 ms, against 5.7 ms with no checkpoint at all. Now the writer checkpoints only as a
//! backstop ([`WRITER_BACKSTOP_PAGES`]); each time its connection goes back to its pool a
//! checkpoint is asked for (at most every [`EVERY`], never waiting), and one task takes it with
//! `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own, which in WAL mode neither waits
//! for the writer nor holds it up. (On a connection of the shared pool it kept readers waiting:
//! the renewal storm's event workers read more slowly.) What the writer commits is durable in
//! the log either way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqlitePool;

use super::group::Batcher;

/// How often a checkpoint is asked for while the writer writes. Every checkpoint ends by
/// syncing the database file, and a commit's sync that meets it waits: measured in ten
/// alternating pairs of intake-only runs, every 200 ms put the intake's p99 at 5.2-7.9 ms and
/// every second at 4.1-6.7 ms (lower in every pair), the rate unchanged. The log
/// grows to the same size either way: under a steady stream of writes a passive checkpoint never
/// catches the writer, so the log starts over only when the writer's backstop finishes the job.
const EVERY: Duration = Duration::from_secs(1);
/// The writer's own `wal_autocheckpoint`: past this many pages (about 40 MiB) its commit
/// checkpoints what the task has not copied yet, which is little, and the log starts over.
pub(super) const WRITER_BACKSTOP_PAGES: &str = "10000";

/// The checkpoints the writer pool's release hook asks for (owned by that hook).
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    queue: Batcher<()>,
    asked: Mutex<Option<Instant>>,
}

impl Checkpoints {
    /// The writer's connection came back: ask for a checkpoint on `pool` (the checkpoints' own
    /// connection) unless one was asked for within [`EVERY`]. Never waits.
    pub(super) fn writer_released(&self, pool: &SqlitePool) {
        {
            let mut asked = self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.is_some_and(|at| at.elapsed() < EVERY) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let pool = pool.clone();
        self.queue.offer((), 1, move |_, _: Option<()>| {
            let pool = pool.clone();
            async move {
                checkpoint(&pool).await;
                None
            }
        });
    }
}

/// One passive checkpoint: one that finds readers on older frames copies what it can, and the
/// next carries on.
async fn checkpoint(pool: &SqlitePool) {
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(pool).await {
        tracing::warn!(error = %e, "a WAL checkpoint failed; the writer checkpoints past its backstop");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::domain::access::Tier;
    use crate::domain::catalogue::Metric;
    use crate::store::Store;

    /// Whether the database file alone (without its log) holds reservation `id`: only a
    /// checkpoint puts it there. Read from a copy, so the store's files are left alone.
    async fn in_the_database_file(dir: &std::path::Path, id: &str) -> bool {
        let copy = dir.join(format!("copy-{id}.db"));
        if std::fs::copy(dir.join("wal.db"), &copy).is_err() {
            return false;
        }
        let Ok(alone) = Store::connect(&format!("sqlite://{}", copy.display())).await else { return false };
        let found = crate::with_db!(&alone, |pool| {
            sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM usage_reservations WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
        });
        alone.close().await;
        matches!(found, Ok((1,)))
    }

    /// What the writer commits reaches the database file by the task's checkpoints; the
    /// writer's own would come only past its backstop of 10,000 pages, far beyond these few.
    #[tokio::test]
    async fn the_writers_log_is_checkpointed_by_the_task() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::store::migrated_sqlite(dir.path(), "wal.db").await;
        store.ensure_tenant("t1", 0).await.expect("a tenant");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for n in 0.. {
            let id = format!("r{n}");
            store.reserve_paid("t1", Metric::Fix, &id, Tier::Team, 10, 1_000).await.expect("a paid unit");
            if n > 0 && in_the_database_file(dir.path(), "r0").await {
                return;
            }
            // Each write adds about 18 KB to the log: 500 stay far below the writer's backstop.
            assert!(n < 500, "r0 never reached the database file in {n} writes");
            assert!(
                tokio::time::Instant::now() < deadline,
                "r0 never reached the database file ({n} writes)"
            );
            tokio::task::yield_now().await;
        }
    }
}
