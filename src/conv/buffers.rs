//! A small process-wide cache of large float32 buffers, reused between requests.
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
//!   [`trim_idle`], which the server calls every second, so an idle server gives the
//!   memory back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Smallest buffer worth keeping, in bytes.
pub const MIN_BYTES: usize = 1 << 20;

struct Cache {
    capacity_bytes: usize,
    idle: Duration,
    /// Free buffers (length 0) with the time they were handed back.
    free: Vec<(Vec<f32>, Instant)>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    capacity_bytes: 0,
    idle: Duration::from_secs(5),
    free: Vec::new(),
});

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    // A panic while holding the lock leaves only a list of buffers behind: still valid.
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bytes(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

/// Sets the cache bounds (called once at start-up); 0 bytes disables the cache.
pub fn configure(capacity_bytes: usize, idle: Duration) {
    let mut c = cache();
    c.capacity_bytes = capacity_bytes;
    c.idle = idle;
    shrink_to(&mut c, capacity_bytes);
}

/// An empty vector with capacity for at least `len` floats: a cached buffer of a fitting
/// size (between `len` and `2·len`, so a small request never pins a huge buffer), or a new
/// allocation.
pub fn take(len: usize) -> Vec<f32> {
    if len * std::mem::size_of::<f32>() >= MIN_BYTES {
        let mut c = cache();
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
pub fn give(mut v: Vec<f32>) {
    let size = bytes(&v);
    if size < MIN_BYTES {
        return;
    }
    v.clear();
    let mut c = cache();
    if size > c.capacity_bytes {
        return;
    }
    let limit = c.capacity_bytes - size;
    shrink_to(&mut c, limit);
    c.free.push((v, Instant::now()));
}

/// Hands an array's buffer back for reuse.
pub fn recycle(a: ndarray::Array4<f32>) {
    give(a.into_raw_vec_and_offset().0);
}

/// Frees the buffers unused for longer than the configured idle time.
pub fn trim_idle() {
    let freed: Vec<(Vec<f32>, Instant)> = {
        let mut c = cache();
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
pub fn cached_bytes() -> usize {
    cache().free.iter().map(|(v, _)| bytes(v)).sum()
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

    /// The cache is process-wide: one test exercises it end to end, so tests running in
    /// parallel do not see each other's buffers.
    #[test]
    fn buffers_are_reused_bounded_and_trimmed() {
        configure(8 << 20, Duration::from_millis(50));
        let n = 1 << 19; // 2 MiB of floats
        let a = take(n);
        assert!(a.capacity() >= n);
        let ptr = a.as_ptr();
        give(a);
        assert_eq!(cached_bytes(), 2 << 20);
        // A fitting request gets the same allocation back; a much smaller one does not.
        let small = take(n / 4);
        assert!(small.as_ptr() != ptr);
        let b = take(n - 10);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty());
        give(b);
        // Small buffers are not kept; the total stays under the bound (oldest evicted).
        give(Vec::with_capacity(1000));
        for _ in 0..6 {
            give(Vec::with_capacity(n));
        }
        assert!(cached_bytes() <= 8 << 20);
        assert!(cached_bytes() >= 6 << 20);
        std::thread::sleep(Duration::from_millis(80));
        trim_idle();
        assert_eq!(cached_bytes(), 0);
        configure(0, Duration::from_secs(5));
        give(Vec::with_capacity(n));
        assert_eq!(cached_bytes(), 0);
    }
}
