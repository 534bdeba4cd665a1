//! Opened sessions, per VM: a session cookie seen again is not decoded, decrypted and parsed
//! again (base64, XChaCha20-Poly1305 and the session's JSON were most of a session request's
//! wasm instructions).
//!
//! - A memo, not a store: an entry maps the cookie's exact text to what opening it with the
//!   configuration's keys gave, a pure function of both. The session is judged against the
//!   clock (`session_max_s`, expiry, refresh) on every request as before, so a hit behaves
//!   exactly as a miss; only a cookie that opened is kept (a forged or stale one is opened, and
//!   refused, every time).
//! - Bounded: two generations of at most `size` entries each; when the newer is full it becomes
//!   the older and the older is dropped, and a hit in the older moves to the newer. At most
//!   `2 x size` cookies and their sessions (with `max_cookie_bytes`-sized keys) per VM.
//! - Per configuration: a new configuration (new keys) starts with an empty cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::Session;

/// The opened sessions of one configuration in this VM.
#[derive(Debug, Default)]
pub struct SessionCache {
    inner: RefCell<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    newer: HashMap<String, Rc<Session>>,
    older: HashMap<String, Rc<Session>>,
}

impl SessionCache {
    /// The session `cookie` opened to before, if it is still remembered.
    pub fn get(&self, cookie: &str) -> Option<Rc<Session>> {
        let mut g = self.inner.borrow_mut();
        if let Some(hit) = g.newer.get(cookie) {
            return Some(Rc::clone(hit));
        }
        let (key, hit) = g.older.remove_entry(cookie)?;
        g.newer.insert(key, Rc::clone(&hit));
        Some(hit)
    }

    /// Remembers that `cookie` opened to `session`, keeping at most `size` entries per
    /// generation (0: nothing is kept).
    pub fn insert(&self, cookie: &str, session: Rc<Session>, size: usize) {
        if size == 0 {
            return;
        }
        let mut g = self.inner.borrow_mut();
        if g.newer.len() >= size {
            g.older = std::mem::take(&mut g.newer);
        }
        g.newer.insert(cookie.to_owned(), session);
    }

    /// How many cookies are remembered (both generations).
    pub fn len(&self) -> usize {
        let g = self.inner.borrow();
        g.newer.len() + g.older.len()
    }

    /// Whether no cookie is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Configurations compare by their fields: their caches never differ in meaning.
impl PartialEq for SessionCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SessionCache {}

/// A copied configuration starts with an empty cache.
impl Clone for SessionCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sub: &str) -> Rc<Session> {
        Rc::new(Session {
            sub: sub.into(),
            claims: Default::default(),
            login_at: 1,
            expires_at: 2,
            refresh: None,
        })
    }

    #[test]
    fn a_remembered_cookie_gives_its_session_and_others_nothing() {
        let cache = SessionCache::default();
        cache.insert("c1", session("alice"), 4);
        assert_eq!(
            cache.get("c1").map(|s| s.sub.clone()).as_deref(),
            Some("alice")
        );
        assert!(cache.get("c2").is_none());
        assert!(cache.get("c").is_none());
        assert!(cache.get("c1 ").is_none());
    }

    #[test]
    fn at_most_two_generations_of_size_entries_are_kept_and_hits_survive() {
        let cache = SessionCache::default();
        for i in 0..3 {
            cache.insert(&format!("c{i}"), session("s"), 3);
        }
        // c0 is used again while the next generation fills: it moves to the newer one.
        cache.insert("c3", session("s"), 3);
        assert!(cache.get("c0").is_some());
        for i in 4..8 {
            cache.insert(&format!("c{i}"), session("s"), 3);
            assert!(cache.len() <= 6, "{} entries", cache.len());
        }
        assert!(
            cache.get("c1").is_none(),
            "an old, unused cookie is dropped"
        );
        assert!(cache.get("c7").is_some());
    }

    #[test]
    fn size_zero_keeps_nothing() {
        let cache = SessionCache::default();
        cache.insert("c", session("s"), 0);
        assert!(cache.is_empty());
        assert!(cache.get("c").is_none());
    }
}
