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

use tokio::sync::oneshot;

use super::group::copy_of;
use super::{Db, Store, StoreError, StoreResult};
use crate::domain::clock::Timestamp;

/// At most this many events per insert: 9 values each stays far below SQLite's 32,766 bound
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
        let db = self.writer().clone();
        let write = move |group| write_group(db.clone(), group);
        self.intake.submit(pending, MAX_GROUP, write).await;
        // Dropped unanswered: the task ended with the event in hand (its runtime is shutting
        // down); not known to be stored, so the answer is a 503 and Stripe delivers it again.
        answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the intake stopped".into())))
    }
}

/// Stores a group in one insert and answers each caller.
async fn write_group(db: Db, mut group: Vec<Pending>) {
    match insert_group(&db, &group).await {
        Ok(inserted) => answer_group(&mut group, &inserted),
        // One event the database refuses must not fail the others: each alone, then.
        Err(_) if group.len() > 1 => {
            for one in &mut group {
                let result = insert_group(&db, std::slice::from_ref(one)).await.map(|ids| !ids.is_empty());
                if let Some(reply) = one.reply.take() {
                    let _ = reply.send(result);
                }
            }
        }
        Err(e) => {
            for one in &mut group {
                if let Some(reply) = one.reply.take() {
                    let _ = reply.send(Err(copy_of(&e)));
                }
            }
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

/// One multi-row insert; the ids it inserted. It runs outside a transaction, so it commits on
/// its last step and is read to its end (see [`super::first`]).
async fn insert_group(db: &Db, group: &[Pending]) -> StoreResult<HashSet<String>> {
    let ids: Vec<(String,)> = crate::with_db!(db, |pool| {
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO stripe_events (id, type, livemode, created, customer_id, payload, status, last_error, received_at) ",
        );
        insert.push_values(group, |mut row, e| {
            row.push_bind(&e.id)
                .push_bind(&e.kind)
                .push_bind(e.livemode)
                .push_bind(e.created)
                .push_bind(&e.customer_id)
                .push_bind(&e.payload)
                .push_bind(&e.status)
                .push_bind(&e.error)
                .push_bind(e.received_at);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
        // Group sizes vary: not kept as prepared statements, which would fill the cache.
        insert.build_query_as().persistent(false).fetch_all(pool).await
    })?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}
