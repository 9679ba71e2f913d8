//! The seams issue 12 ("Broker control") fills: revocation, rate limits and refresh on 401.
//!
//! The proxy consults [`Control`] on every request that would use a brokered value: a
//! revoked name gets `403 revoked`, a refused admission `429` with `Retry-After`, and an
//! upstream `401` calls the refresh hook. By default nothing is revoked, everything is
//! admitted and refresh does nothing.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

/// A rate limiter's refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Per-secret admission (a token bucket in issue 12).
pub trait RateLimiter: Send + Sync {
    fn admit(&self, name: &str) -> Result<(), RetryAfter>;
}

/// Called when an upstream answered 401 to a request that carried `name`'s value.
pub trait Refresher: Send + Sync {
    fn unauthorized(&self, name: &str);
}

/// Shared between the broker and whoever controls it (the run, a control socket).
#[derive(Default)]
pub struct Control {
    revoked: RwLock<HashSet<String>>,
    limiter: Option<Box<dyn RateLimiter>>,
    refresher: Option<Box<dyn Refresher>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("revoked", &self.revoked())
            .finish_non_exhaustive()
    }
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    pub fn with_limiter(mut self, limiter: Box<dyn RateLimiter>) -> Control {
        self.limiter = Some(limiter);
        self
    }

    pub fn with_refresher(mut self, refresher: Box<dyn Refresher>) -> Control {
        self.refresher = Some(refresher);
        self
    }

    /// Revoke `name`: from now on its requests get `403 revoked`.
    pub fn revoke(&self, name: &str) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
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

    pub fn unauthorized(&self, name: &str) {
        if let Some(r) = &self.refresher {
            r.unauthorized(name);
        }
    }
}
