//! Owns the webhook intake's group commit: events verified at the same moment are stored by one
//! multi-row insert (one durable commit for all of them), and each caller is answered only after
//! that commit, so a 2xx still means the event is on disk.
//!
//! Why: every stored event used to be its own commit, and commits are what a database does one
//! at a time (SQLite has one writer; PostgreSQL flushes its log per commit). Under a burst the
//! callers queued on the write lock and the slowest waited 90 ms. Now one task writes: while it
//! commits one group the next arrivals gather in its queue and go in together, so the cost of a
//! commit is shared by however many events arrived during the previous one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::group::{Kept, copy_of};
use super::{Db, Store, StoreError, StoreResult};
use crate::domain::clock::Timestamp;

/// At most this many events per insert: 10 values each stays far below SQLite's 32,766 bound
/// parameters, and a group of 1 MiB events stays bounded in memory.
const MAX_GROUP: usize = 128;

/// A verified event, as the webhook endpoint stores it.
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub livemode: bool,
    pub created: Timestamp,
    pub customer_id: Option<String>,
    pub payload: &'a str,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub received_at: Timestamp,
    /// The same moment in milliseconds of the wall clock (see [`Store::claim_customer_events`]).
    pub received_ms: i64,
}

/// The same, owned, with where to send the answer: true when it was inserted, false when that
/// id was stored already.
pub(super) struct Pending {
    id: String,
    kind: String,
    livemode: bool,
    created: Timestamp,
    customer_id: Option<String>,
    payload: String,
    status: String,
    error: Option<String>,
    received_at: Timestamp,
    received_ms: i64,
    reply: Option<oneshot::Sender<StoreResult<bool>>>,
}

impl Pending {
    fn from(e: NewEvent<'_>) -> (Pending, oneshot::Receiver<StoreResult<bool>>) {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            id: e.id.to_owned(),
            kind: e.kind.to_owned(),
            livemode: e.livemode,
            created: e.created,
            customer_id: e.customer_id,
            payload: e.payload.to_owned(),
            status: e.status.to_owned(),
            error: e.error.map(str::to_owned),
            received_at: e.received_at,
            received_ms: e.received_ms,
            reply: Some(reply),
        };
        (pending, answer)
    }
}

impl Store {
    /// Stores a verified event; a redelivery of a stored id changes nothing. True when inserted.
    /// Answers once the group it went in with has committed.
    pub async fn store_event(&self, e: NewEvent<'_>) -> StoreResult<bool> {
        let (pending, answer) = Pending::from(e);
        let (db, outage) = (self.writer().clone(), self.intake_outage.clone());
        let write = move |group, kept| write_group(db.clone(), outage.clone(), group, kept);
        self.intake.submit(pending, MAX_GROUP, write).await;
        // Dropped unanswered: the task ended with the event in hand (its runtime is shutting
        // down); not known to be stored, so the answer is a 503 and Stripe delivers it again.
        answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the intake stopped".into())))
    }
}

/// After the database was found unreachable (a try that waited and failed), groups are answered
/// 503 at once for this long instead of each waiting out the pool's 2 s connection timeout:
/// groups are written one after another, so during an outage their waits would add up (the
/// fourth of four concurrent deliveries waited 10 s). Then one group tries again; what queues
/// behind it waits for that try alone. Stripe delivers a refused event again, so a 503 loses
/// nothing.
const OUTAGE_HOLD: Duration = Duration::from_secs(1);

/// When the intake last found the database unreachable (shared by a store's clones).
pub(super) type Outage = Arc<Mutex<Option<Instant>>>;

/// Stores a group in one insert and answers each caller; the writer connection, for the next
/// group, if all went well.
async fn write_group(db: Db, outage: Outage, mut group: Vec<Pending>, kept: Option<Kept>) -> Option<Kept> {
    let down_just_now =
        outage.lock().map(|at| at.is_some_and(|at| at.elapsed() < OUTAGE_HOLD)).unwrap_or(false);
    if down_just_now {
        let e = StoreError::Unavailable("the database was unreachable a moment ago".into());
        answer_all(&mut group, &e);
        return None;
    }
    let started = Instant::now();
    let (mut conn, result) = match Kept::take(&db, kept).await {
        Ok(mut conn) => {
            let result = insert_group(&mut conn, &group).await;
            (Some(conn), result)
        }
        Err(e) => (None, Err(e.into())),
    };
    // Only a failure that waited (for a connection that never came) holds the next groups: a
    // quick refusal (a full disk) costs the next group nothing to try again.
    let waited = started.elapsed() >= OUTAGE_HOLD / 2;
    if let Ok(mut at) = outage.lock() {
        *at = (waited && matches!(result, Err(StoreError::Unavailable(_)))).then(Instant::now);
    }
    match (result, conn.as_mut()) {
        (Ok(inserted), _) => {
            answer_group(&mut group, &inserted);
            return conn;
        }
        // One event the database refuses must not fail the others: each alone, then (not when
        // the database is unreachable: each would wait as long again).
        (Err(e), Some(conn)) if group.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
            for one in &mut group {
                let result = insert_group(conn, std::slice::from_ref(one)).await.map(|ids| !ids.is_empty());
                if let Some(reply) = one.reply.take() {
                    let _ = reply.send(result);
                }
            }
        }
        (Err(e), _) => answer_all(&mut group, &e),
    }
    // After a failure the connection goes back to its pool (which closes a broken one).
    None
}

/// Every caller of the group gets the error (none of it was stored).
fn answer_all(group: &mut [Pending], e: &StoreError) {
    for one in group {
        if let Some(reply) = one.reply.take() {
            let _ = reply.send(Err(copy_of(e)));
        }
    }
}

/// True for the first of each inserted id (a group may carry one event twice: Stripe retries).
fn answer_group(group: &mut [Pending], inserted: &HashSet<String>) {
    let mut answered = HashSet::new();
    for one in group {
        let new = inserted.contains(&one.id) && answered.insert(one.id.clone());
        if let Some(reply) = one.reply.take() {
            // A caller that went away (its client hung up) needs no answer: the event is stored.
            let _ = reply.send(Ok(new));
        }
    }
}

/// The start both inserts share: the columns the intake writes, in the order both give them.
macro_rules! insert_events {
    () => {
        "INSERT INTO stripe_events \
         (id, type, livemode, created, customer_id, payload, status, last_error, received_at, received_ms) "
    };
}

/// PostgreSQL's insert: one array per column, so one statement for every group size.
const PG_INSERT: &str = concat!(
    insert_events!(),
    "SELECT * FROM UNNEST($1::text[], $2::text[], $3::boolean[], $4::bigint[], \
     $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[]) \
     ON CONFLICT (id) DO NOTHING RETURNING id"
);

/// One multi-row insert; the ids it inserted. It runs outside a transaction, so it commits on
/// its last step and is read to its end (see [`super::first`]).
async fn insert_group(conn: &mut Kept, group: &[Pending]) -> StoreResult<HashSet<String>> {
    let ids: Vec<(String,)> = match conn {
        Kept::Sqlite(conn, _) => {
            let mut insert = sqlx::QueryBuilder::new(insert_events!());
            insert.push_values(group, |mut row, e| {
                row.push_bind(&e.id)
                    .push_bind(&e.kind)
                    .push_bind(e.livemode)
                    .push_bind(e.created)
                    .push_bind(&e.customer_id)
                    .push_bind(&e.payload)
                    .push_bind(&e.status)
                    .push_bind(&e.error)
                    .push_bind(e.received_at)
                    .push_bind(e.received_ms);
            });
            insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            // Group sizes vary: not kept as prepared statements, which would fill the cache
            // (preparing is cheap next to SQLite's commit; not so on PostgreSQL, below).
            insert.build_query_as().persistent(false).fetch_all(&mut **conn).await?
        }
        // One array per column: the same statement for every group size, so PostgreSQL keeps it
        // prepared instead of parsing and planning a new VALUES list for each group.
        Kept::Postgres(conn, _) => {
            let column = |f: fn(&Pending) -> Option<&str>| group.iter().map(f).collect::<Vec<_>>();
            sqlx::query_as(PG_INSERT)
                .bind(column(|e| Some(&e.id)))
                .bind(column(|e| Some(&e.kind)))
                .bind(group.iter().map(|e| e.livemode).collect::<Vec<_>>())
                .bind(group.iter().map(|e| e.created).collect::<Vec<_>>())
                .bind(column(|e| e.customer_id.as_deref()))
                .bind(column(|e| Some(&e.payload)))
                .bind(column(|e| Some(&e.status)))
                .bind(column(|e| e.error.as_deref()))
                .bind(group.iter().map(|e| e.received_at).collect::<Vec<_>>())
                .bind(group.iter().map(|e| e.received_ms).collect::<Vec<_>>())
                .fetch_all(&mut **conn)
                .await?
        }
    };
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::NewEvent;
    use crate::store::{Db, Store};

    async fn store_at(store: &Store, id: &str, received_ms: i64) {
        let new = NewEvent {
            id,
            kind: "invoice.paid",
            livemode: false,
            created: 1,
            customer_id: Some("cus_1".into()),
            payload: "{}",
            status: "received",
            error: None,
            received_at: received_ms / 1_000,
            received_ms,
        };
        store.store_event(new).await.expect("stored");
    }

    async fn store_one(store: &Store, id: &str) {
        store_at(store, id, 1_000).await;
    }

    /// What a read of Stripe covers is judged to the millisecond: of two events stored within
    /// one second, a read sent between them covers the first alone (by whole seconds it was
    /// neither or both), and an event with no stored millisecond is never taken as covered.
    #[tokio::test]
    async fn a_reads_cover_is_judged_to_the_millisecond() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::store::migrated_sqlite(dir.path(), "intake.db").await;
        store_at(&store, "evt_early", 1_000_100).await;
        store_at(&store, "evt_late", 1_000_150).await;
        store_at(&store, "evt_unknown", 1_000_050).await;
        crate::with_db!(&store, |pool| {
            sqlx::query("UPDATE stripe_events SET received_ms = NULL WHERE id = 'evt_unknown'")
                .execute(pool)
                .await
                .map(|_| ())
        })
        .expect("an event from before received_ms");
        let covered = |before| {
            let store = store.clone();
            async move {
                let claimed = store.claim_customer_events("cus_1", 1_001, 1_060, 10, Some(before)).await;
                claimed.expect("a claim").into_iter().map(|e| e.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(covered(1_000_120).await, ["evt_early"]);
        assert_eq!(covered(1_000_151).await, ["evt_late"]);
        assert!(covered(i64::MAX).await.is_empty(), "evt_unknown waits for a read of its own");
    }

    /// The intake keeps the writer's connection from one group to the next only briefly: a
    /// burst that never lets its queue empty (more callers than a group takes) does not hold
    /// out the other writers until it ends, and once it ends the connection is back in its
    /// pool. Kept for good, the acquire below would wait out the pool's 2 s and fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_keeps_the_writer_connection_only_briefly_and_gives_it_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::store::migrated_sqlite(dir.path(), "intake.db").await;
        let Db::Sqlite(writer) = store.writer().clone() else { unreachable!("a SQLite store") };
        let (stop, stored) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let callers: Vec<_> = (0..2 * super::MAX_GROUP + 50)
            .map(|caller| {
                let (store, stop, stored) = (store.clone(), stop.clone(), stored.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        store_one(&store, &format!("evt_{caller}_{n}")).await;
                        stored.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while stored.load(Ordering::Relaxed) < 2_000 {
            assert!(tokio::time::Instant::now() < deadline, "the burst never got going");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = writer.acquire().await;
        let burst_went_on = !stop.load(Ordering::Relaxed);
        assert!(during.is_ok(), "the burst held the writer connection out of its pool: {:?}", during.err());
        assert!(burst_went_on);
        drop(during);
        stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.await.expect("a caller");
        }
        while writer.num_idle() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "the writer connection never went back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
