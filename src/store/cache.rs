//! Owns the access cache: each tenant's access facts (the columns the access answer reads) held
//! in memory so the access check — asked before every workflow run — rarely reaches the database.
//!
//! Freshness rules:
//! - every store function that writes one of those columns forgets the tenant after its commit
//!   ([`Store::tenant_changed`](super::Store::tenant_changed)), so a write on this process is
//!   never followed by a stale answer here;
//! - a load that started before a tenant was forgotten is not kept (a reader that read the row
//!   just before another writer committed would otherwise cache the old row after the forget);
//! - on PostgreSQL the same forget reaches the other replicas by LISTEN/NOTIFY, and the cache is
//!   used only while this process is listening (no listener, or a lost connection: every answer
//!   is read from the database);
//! - each entry lives at most [`TTL`]: what changes the database outside the service (an
//!   operator's SQL, a command-line process on the same SQLite file) shows within it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::access::BillingState;

/// How long an entry is trusted without being forgotten.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept at most; past it the cache starts over (bounded memory with any tenant count).
const CAPACITY: usize = 50_000;

/// What the access answer reads of a tenant; the default for a tenant not announced yet
/// (answered as a new free tenant).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessFacts {
    pub state: BillingState,
    pub seats: Option<i64>,
    /// Lookup keys of the features Stripe's Entitlements grant, parsed once at load.
    pub granted: Vec<String>,
}

#[derive(Debug)]
enum Slot {
    Known {
        facts: Arc<AccessFacts>,
        loaded: Instant,
    },
    /// Forgotten at this generation: loads that started earlier are not kept.
    Forgotten {
        at: u64,
    },
}

#[derive(Debug)]
pub struct AccessCache {
    slots: Mutex<HashMap<String, Slot>>,
    generation: AtomicU64,
    /// Loads that started before this generation are not kept (set when everything is forgotten).
    floor: AtomicU64,
    enabled: AtomicBool,
}

impl AccessCache {
    /// A cache that is on from the start (SQLite: one process writes) or off until a listener
    /// turns it on (PostgreSQL).
    pub fn new(enabled: bool) -> AccessCache {
        AccessCache {
            slots: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            enabled: AtomicBool::new(enabled),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock leaves only a cache: carry on with what is there.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tenant's facts if cached and fresh.
    pub fn get(&self, tenant: &str) -> Option<Arc<AccessFacts>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        match self.slots().get(tenant) {
            Some(Slot::Known { facts, loaded }) if loaded.elapsed() < TTL => Some(facts.clone()),
            _ => None,
        }
    }

    /// Call before reading the database; hand the value to [`AccessCache::put`].
    pub fn begin_load(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps facts read by a load that began at `started`, unless the tenant (or everything)
    /// was forgotten since.
    pub fn put(&self, tenant: &str, facts: Arc<AccessFacts>, started: u64) {
        if !self.enabled.load(Ordering::Acquire) || started < self.floor.load(Ordering::Acquire) {
            return;
        }
        let mut slots = self.slots();
        if let Some(Slot::Forgotten { at }) = slots.get(tenant)
            && *at > started
        {
            return;
        }
        if slots.len() >= CAPACITY && !slots.contains_key(tenant) {
            slots.clear();
            self.floor.store(self.generation.fetch_add(1, Ordering::AcqRel) + 1, Ordering::Release);
            return;
        }
        slots.insert(tenant.to_owned(), Slot::Known { facts, loaded: Instant::now() });
    }

    /// The tenant changed: its entry goes, and loads already under way are not kept.
    pub fn forget(&self, tenant: &str) {
        let at = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.slots().insert(tenant.to_owned(), Slot::Forgotten { at });
    }

    /// Everything may have changed (notifications lost, or many tenants written at once).
    pub fn forget_all(&self) {
        let at = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.floor.store(at, Ordering::Release);
        self.slots().clear();
    }

    /// Turns the cache on or off (off also forgets everything).
    pub fn set_enabled(&self, on: bool) {
        if !on {
            self.enabled.store(false, Ordering::Release);
        }
        self.forget_all();
        if on {
            self.enabled.store(true, Ordering::Release);
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(seats: i64) -> Arc<AccessFacts> {
        Arc::new(AccessFacts { seats: Some(seats), ..AccessFacts::default() })
    }

    #[test]
    fn a_forgotten_tenant_is_read_again() {
        let cache = AccessCache::new(true);
        let started = cache.begin_load();
        cache.put("t1", facts(3), started);
        assert_eq!(cache.get("t1").unwrap().seats, Some(3));
        cache.forget("t1");
        assert!(cache.get("t1").is_none());
        let started = cache.begin_load();
        cache.put("t1", facts(4), started);
        assert_eq!(cache.get("t1").unwrap().seats, Some(4));
    }

    #[test]
    fn a_load_that_began_before_a_forget_is_not_kept() {
        let cache = AccessCache::new(true);
        // A reader reads the old row; a writer commits and forgets; the reader then puts.
        let started = cache.begin_load();
        cache.forget("t1");
        cache.put("t1", facts(3), started);
        assert!(cache.get("t1").is_none(), "the old row must not be cached after the write");
        // Another tenant's forget does not block it; forgetting everything does.
        let started = cache.begin_load();
        cache.forget("t2");
        cache.put("t1", facts(5), started);
        assert_eq!(cache.get("t1").unwrap().seats, Some(5));
        let started = cache.begin_load();
        cache.forget_all();
        cache.put("t3", facts(1), started);
        assert!(cache.get("t3").is_none());
    }

    #[test]
    fn an_off_cache_answers_nothing_and_keeps_nothing() {
        let cache = AccessCache::new(false);
        cache.put("t1", facts(3), cache.begin_load());
        assert!(cache.get("t1").is_none());
        cache.set_enabled(true);
        cache.put("t1", facts(3), cache.begin_load());
        assert!(cache.get("t1").is_some());
        cache.set_enabled(false);
        assert!(cache.get("t1").is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = AccessCache::new(true);
        for i in 0..(CAPACITY + 10) {
            cache.put(&format!("t{i}"), facts(1), cache.begin_load());
        }
        assert!(cache.slots().len() <= CAPACITY);
    }
}
