//! A small cache of large float32 buffers, reused between requests.
//!
//! A fresh multi-megabyte allocation is mapped from the OS and every one of its pages
//! faults on first write: on the reference VM that cost more than the convolution itself
//! (a 4K output plane, 33 MB, took 8 000 page faults per request; glibc maps blocks that
//! large afresh every time and returns them on free). Outputs are therefore taken from
//! this cache and handed back once the response is encoded, so steady traffic reuses warm
//! pages, while the cache stays bounded:
//! - only buffers of at least [`MIN_BYTES`] are kept (smaller ones are cheap to allocate);
//! - at most `capacity_bytes` in total (config `buffer_cache_bytes`; 0 turns it off);
//! - a buffer unused for `idle` (config `buffer_cache_idle_secs`) is freed by
//!   [`BufferCache::trim_idle`], which the server calls every second, so an idle server
//!   gives the memory back.
//!
//! The cache is a value, [`BufferCache`], owned by the compute pool it serves (so two
//! servers in one process, as in the tests, keep their own). The pool installs it on each
//! of its threads ([`BufferCache::install_on_current_thread`]); the algorithms call the
//! free functions [`take`] and [`give`], which use the current thread's cache, and
//! allocate and free plainly on any other thread (benches, tests, a library user).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Smallest buffer worth keeping, in bytes.
pub const MIN_BYTES: usize = 1 << 20;

struct Cache {
    capacity_bytes: usize,
    idle: Duration,
    /// Free buffers (length 0) with the time they were handed back.
    free: Vec<(Vec<f32>, Instant)>,
}

/// A bounded cache of large buffers; clones share it.
#[derive(Clone)]
pub struct BufferCache(Arc<Mutex<Cache>>);

thread_local! {
    /// The cache of the pool this thread belongs to, if any.
    static CURRENT: RefCell<Option<BufferCache>> = const { RefCell::new(None) };
}

fn bytes(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

impl BufferCache {
    /// A cache of at most `capacity_bytes` (0: keeps nothing) whose buffers are freed
    /// after `idle` unused.
    pub fn new(capacity_bytes: usize, idle: Duration) -> Self {
        Self(Arc::new(Mutex::new(Cache {
            capacity_bytes,
            idle,
            free: Vec::new(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves only a list of buffers behind: still valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes this the cache [`take`] and [`give`] use on the calling thread (the compute
    /// pool calls it as each of its threads starts).
    pub fn install_on_current_thread(&self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// An empty vector with capacity for at least `len` floats: a cached buffer of a
    /// fitting size (between `len` and `2·len`, so a small request never pins a huge
    /// buffer), or a new allocation.
    pub fn take(&self, len: usize) -> Vec<f32> {
        if len * std::mem::size_of::<f32>() >= MIN_BYTES {
            let mut c = self.lock();
            let best = c
                .free
                .iter()
                .enumerate()
                .filter(|(_, (v, _))| v.capacity() >= len && v.capacity() / 2 <= len)
                .min_by_key(|(_, (v, _))| v.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return c.free.swap_remove(i).0;
            }
        }
        Vec::with_capacity(len)
    }

    /// Hands a buffer back for reuse (dropped if small, or if the cache is full even after
    /// evicting its oldest buffers).
    pub fn give(&self, mut v: Vec<f32>) {
        let size = bytes(&v);
        if size < MIN_BYTES {
            return;
        }
        v.clear();
        let mut c = self.lock();
        if size > c.capacity_bytes {
            return;
        }
        let limit = c.capacity_bytes - size;
        shrink_to(&mut c, limit);
        c.free.push((v, Instant::now()));
    }

    /// Frees the buffers unused for longer than the idle time.
    pub fn trim_idle(&self) {
        let freed: Vec<(Vec<f32>, Instant)> = {
            let mut c = self.lock();
            let idle = c.idle;
            let (old, keep) = std::mem::take(&mut c.free)
                .into_iter()
                .partition(|(_, t)| t.elapsed() >= idle);
            c.free = keep;
            old
        };
        // Freed outside the lock: returning pages to the OS takes a while.
        drop(freed);
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.lock().free.iter().map(|(v, _)| bytes(v)).sum()
    }
}

fn current() -> Option<BufferCache> {
    CURRENT.with(|c| c.borrow().clone())
}

/// [`BufferCache::take`] on the current thread's cache; a plain allocation on a thread
/// without one.
pub fn take(len: usize) -> Vec<f32> {
    match current() {
        Some(c) => c.take(len),
        None => Vec::with_capacity(len),
    }
}

/// [`BufferCache::give`] to the current thread's cache; dropped on a thread without one.
pub fn give(v: Vec<f32>) {
    if let Some(c) = current() {
        c.give(v);
    }
}

/// Hands an array's buffer back for reuse ([`give`]).
pub fn recycle(a: ndarray::Array4<f32>) {
    give(a.into_raw_vec_and_offset().0);
}

/// Evicts the oldest buffers until at most `limit` bytes remain.
fn shrink_to(c: &mut Cache, limit: usize) {
    c.free.sort_by_key(|(_, t)| *t);
    let mut total: usize = c.free.iter().map(|(v, _)| bytes(v)).sum();
    while total > limit {
        let (v, _) = c.free.remove(0);
        total -= bytes(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_bounded_and_trimmed() {
        let cache = BufferCache::new(8 << 20, Duration::from_millis(50));
        let n = 1 << 19; // 2 MiB of floats
        let a = cache.take(n);
        assert!(a.capacity() >= n);
        let ptr = a.as_ptr();
        cache.give(a);
        assert_eq!(cache.cached_bytes(), 2 << 20);
        // A fitting request gets the same allocation back; a much smaller one does not.
        let small = cache.take(n / 4);
        assert!(small.as_ptr() != ptr);
        let b = cache.take(n - 10);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty());
        cache.give(b);
        // Small buffers are not kept; the total stays under the bound (oldest evicted).
        cache.give(Vec::with_capacity(1000));
        for _ in 0..6 {
            cache.give(Vec::with_capacity(n));
        }
        assert!(cache.cached_bytes() <= 8 << 20);
        assert!(cache.cached_bytes() >= 6 << 20);
        std::thread::sleep(Duration::from_millis(80));
        cache.trim_idle();
        assert_eq!(cache.cached_bytes(), 0);
        let off = BufferCache::new(0, Duration::from_secs(5));
        off.give(Vec::with_capacity(n));
        assert_eq!(off.cached_bytes(), 0);
    }

    #[test]
    fn the_free_functions_use_the_threads_own_cache() {
        let n = 1 << 19;
        // No cache on this thread: a plain allocation, dropped on give.
        give(Vec::with_capacity(n));
        let cache = BufferCache::new(8 << 20, Duration::from_secs(5));
        let on_thread = cache.clone();
        std::thread::spawn(move || {
            on_thread.install_on_current_thread();
            let v = take(n);
            give(v);
        })
        .join()
        .unwrap();
        assert_eq!(cache.cached_bytes(), 2 << 20);
        // Another cache, on another thread, does not see it.
        let other = BufferCache::new(8 << 20, Duration::from_secs(5));
        assert_eq!(other.cached_bytes(), 0);
    }
}
