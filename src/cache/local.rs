//! Per-thread copies of the token a thread keeps serving.
//!
//! A `HeaderValue` cloned from the cached token shares one reference count with every other
//! clone: when two worker threads serve the same token, each request's clone and drop bounce that
//! count's cache line between their cores (measured: two workers then serve 1.57× what one does,
//! against 1.89× with a copy per worker). So a thread that serves the same token twice in a row
//! makes its own copy and serves clones of it from then on. One copy per thread, replaced when the
//! thread moves on to another token: the memory is bounded by the number of threads, and a
//! thread serving a different seller each time never copies.

use std::cell::RefCell;

use http::HeaderValue;

use super::CachedToken;

/// The last token a thread served, by generation, and the thread's own copy of it once made.
struct LastServed {
    generation: u64,
    copy: Option<HeaderValue>,
}

thread_local! {
    static LAST_SERVED: RefCell<LastServed> = const {
        RefCell::new(LastServed { generation: 0, copy: None })
    };
}

/// The header value to give a request for `token` on this thread: a clone of the thread's own copy
/// when it has one, else of the cached value. Generations are unique in the process, so a copy
/// is never served for another token, whichever layer asks.
#[inline]
pub(super) fn header_for(token: &CachedToken) -> HeaderValue {
    LAST_SERVED
        .try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return token.header.clone();
            };
            if last.generation != token.generation {
                *last = LastServed {
                    generation: token.generation,
                    copy: None,
                };
                return token.header.clone();
            }
            if let Some(copy) = &last.copy {
                return copy.clone();
            }
            let copy = own_copy(&token.header);
            last.copy = Some(copy.clone());
            copy
        })
        // During the thread's teardown: no copy.
        .unwrap_or_else(|_| token.header.clone())
}

/// A copy of `header` in an allocation of its own, as sensitive as the original.
fn own_copy(header: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(header.as_bytes()) {
        Ok(mut copy) => {
            copy.set_sensitive(header.is_sensitive());
            copy
        }
        // Cannot happen (the bytes came from a valid value); the shared value does as well.
        Err(_) => header.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn token(value: &'static str, generation: u64) -> CachedToken {
        let mut header = HeaderValue::from_static(value);
        header.set_sensitive(true);
        let now = Instant::now();
        CachedToken {
            header,
            soft: now,
            hard: now,
            generation,
            bundle: None,
        }
    }

    #[test]
    fn a_thread_copies_a_token_it_serves_twice_and_never_serves_a_copy_for_another() {
        // Generations far from those the crate hands out, so other tests cannot collide.
        let a = token("Atz.sprdt|a", u64::MAX - 1);
        let b = token("Atz.sprdt|b", u64::MAX - 2);
        let first = header_for(&a);
        assert_eq!(first, a.header);
        // The first serving is the cached value itself (a static value: same pointer).
        assert_eq!(first.as_bytes().as_ptr(), a.header.as_bytes().as_ptr());
        let second = header_for(&a);
        let third = header_for(&a);
        assert_eq!((&second, &third), (&a.header, &a.header));
        assert!(second.is_sensitive() && third.is_sensitive());
        // From the second serving on: the thread's own copy, the same one each time.
        assert_ne!(second.as_bytes().as_ptr(), a.header.as_bytes().as_ptr());
        assert_eq!(second.as_bytes().as_ptr(), third.as_bytes().as_ptr());
        // Another token is served as itself, and the copy of the first is dropped.
        assert_eq!(header_for(&b), b.header);
        assert_eq!(header_for(&a), a.header);
        assert_ne!(
            header_for(&a).as_bytes().as_ptr(),
            a.header.as_bytes().as_ptr()
        );
        // Another thread has copies of its own.
        let theirs = std::thread::scope(|s| {
            s.spawn(|| {
                header_for(&a);
                header_for(&a).as_bytes().as_ptr() as usize
            })
            .join()
            .unwrap()
        });
        assert_ne!(theirs, header_for(&a).as_bytes().as_ptr() as usize);
    }
}
