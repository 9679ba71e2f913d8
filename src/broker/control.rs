//! Broker control (docs/contract.md, "Broker control"): revocation, rate limits and the
//! refresh hook.
//!
//! The proxy consults [`Control`] on every request that would use a brokered value: a
//! revoked name gets `403 revoked`, a refused admission `429` with `Retry-After`, and an
//! upstream `401` calls the refresh hook. By default nothing is revoked, everything is
//! admitted and refresh does nothing. [`Governed`] is the rate limiter of a run: one
//! `governor` bucket per secret.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A rate limiter's refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Per-secret admission.
pub trait RateLimiter: Send + Sync {
    fn admit(&self, name: &str) -> Result<(), RetryAfter>;
}

/// One token bucket per secret (`governor`'s GCRA): `count` requests at once, then one
/// every `per / count`. A secret without a rate is always admitted.
pub struct Governed {
    buckets: HashMap<String, governor::DefaultDirectRateLimiter>,
}

impl Governed {
    /// `rates`: (secret, count, per). A count of 0 or a zero period admits nothing and is
    /// refused by the profile's check before it gets here; here it means "no limit".
    pub fn new(rates: &[(String, u32, Duration)]) -> Governed {
        let buckets = rates
            .iter()
            .filter_map(|(name, count, per)| {
                let burst = NonZeroU32::new(*count)?;
                let quota = governor::Quota::with_period(*per / *count)?.allow_burst(burst);
                Some((name.clone(), governor::RateLimiter::direct(quota)))
            })
            .collect();
        Governed { buckets }
    }
}

impl RateLimiter for Governed {
    fn admit(&self, name: &str) -> Result<(), RetryAfter> {
        use governor::clock::{Clock, DefaultClock};
        match self.buckets.get(name) {
            None => Ok(()),
            Some(b) => b.check().map_err(|not_until| {
                RetryAfter(not_until.wait_time_from(DefaultClock::default().now()))
            }),
        }
    }
}

/// Fetches a secret's value again from its source, checked as at the start (`pattern`,
/// `min_length`). Blocking: the broker calls it on a thread of its own.
pub trait Refresher: Send + Sync {
    fn refetch(&self, name: &str) -> Result<secrecy::SecretString, String>;
}

/// Shared between the broker and whoever controls it (the run, a control socket).
pub struct Control {
    revoked: RwLock<HashSet<String>>,
    /// `revoke --all` (or the ttl): tunnels close too, and no new one opens.
    all: tokio::sync::watch::Sender<bool>,
    /// Bumped at every revocation: streams that carry a name watch it.
    changes: tokio::sync::watch::Sender<u64>,
    limiter: Option<Box<dyn RateLimiter>>,
    /// Per secret: refusals since its last admitted request (logged with the next one).
    refused_since: Mutex<HashMap<String, u64>>,
    refresher: Option<Arc<dyn Refresher>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("revoked", &self.revoked())
            .finish_non_exhaustive()
    }
}

impl Default for Control {
    fn default() -> Control {
        Control {
            revoked: RwLock::default(),
            all: tokio::sync::watch::channel(false).0,
            changes: tokio::sync::watch::channel(0).0,
            limiter: None,
            refused_since: Mutex::default(),
            refresher: None,
        }
    }
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Cut the child off: every name in `names` revoked, and tunnels closed.
    pub fn revoke_all(&self, names: &[String]) {
        for n in names {
            self.revoke(n);
        }
        self.all.send_replace(true);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether everything was revoked (tunnels included).
    pub fn all_revoked(&self) -> bool {
        *self.all.borrow()
    }

    /// Resolves when everything is revoked (a tunnel's end).
    pub fn all_revoked_wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.all.subscribe();
        async move {
            let _ = rx.wait_for(|all| *all).await;
        }
    }

    pub fn with_limiter(mut self, limiter: Box<dyn RateLimiter>) -> Control {
        self.limiter = Some(limiter);
        self
    }

    pub fn with_refresher(mut self, refresher: Arc<dyn Refresher>) -> Control {
        self.refresher = Some(refresher);
        self
    }

    /// Revoke `name`: from now on its requests get `403 revoked`, and open streams that
    /// carry it close.
    pub fn revoke(&self, name: &str) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        self.changes.send_modify(|n| *n += 1);
    }

    /// Resolves when one of `names` is revoked, or everything is (a WebSocket stream's end).
    pub fn revocation_of(
        self: &Arc<Self>,
        names: Vec<String>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let mut rx = self.changes.subscribe();
        async move {
            loop {
                if me.all_revoked() || names.iter().any(|n| me.is_revoked(n)) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    pub fn is_revoked(&self, name: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// The revoked names, sorted.
    pub fn revoked(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn admit(&self, name: &str) -> Result<(), RetryAfter> {
        match &self.limiter {
            Some(l) => l.admit(name),
            None => Ok(()),
        }
    }

    /// Note a refusal for `name`: true when it is the first since an admitted request
    /// (that one is logged; the rest are counted).
    pub fn refused(&self, name: &str) -> bool {
        let mut m = self.refused_since.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(name.to_string()).or_default();
        *n += 1;
        *n == 1
    }

    /// `name` was admitted: the refusals counted since the last admission, not logged one
    /// by one (the first of them was).
    pub fn admitted(&self, name: &str) -> u64 {
        let mut m = self.refused_since.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(name).map_or(0, |n| n.saturating_sub(1))
    }

    /// The refresher, when the run has one.
    pub fn refresher(&self) -> Option<Arc<dyn Refresher>> {
        self.refresher.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 60/min: 60 at once, then about one a second; other secrets are not held back.
    #[test]
    fn a_rate_lets_its_count_through_at_once_then_one_per_period() {
        let g = Governed::new(&[("K".into(), 60, Duration::from_secs(60))]);
        for i in 0..60 {
            assert!(g.admit("K").is_ok(), "request {i}");
        }
        let wait = g.admit("K").expect_err("the 61st").0;
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(g.admit("OTHER").is_ok());
        std::thread::sleep(wait);
        assert!(g.admit("K").is_ok(), "one more after a second");
        assert!(g.admit("K").is_err());
    }

    /// The first refusal after an admission is the one to log; the rest are counted and
    /// reported with the next admitted request.
    #[test]
    fn refusals_are_logged_once_and_counted() {
        let c = Control::new();
        assert!(c.refused("K"));
        assert!(!c.refused("K"));
        assert!(!c.refused("K"));
        assert_eq!(c.admitted("K"), 2);
        assert_eq!(c.admitted("K"), 0);
        assert!(c.refused("K"), "first again after an admission");
    }
}
