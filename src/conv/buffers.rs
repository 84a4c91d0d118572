//! A small cache of large float32 and byte buffers, reused between requests.
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
//! free functions [`take`] and [`give`] (and their byte and unzeroed forms), which use the
//! current thread's cache, and allocate and free plainly on any other thread (benches,
//! tests, a library user).
//!
//! Pictures (bytes) come from the cache too, unzeroed: a buffer that its caller
//! overwrites whole (a picture's rows, a strip's input rows) is not cleared first.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Smallest buffer worth keeping, in bytes.
pub const MIN_BYTES: usize = 1 << 20;

/// A free buffer of either element type the cache holds.
enum Buf {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Buf {
    fn bytes(&self) -> usize {
        match self {
            Self::F32(v) => v.capacity() * std::mem::size_of::<f32>(),
            Self::U8(v) => v.capacity(),
        }
    }
}

/// Plain element types whose buffers the cache keeps: every bit pattern is a value, and
/// there is nothing to drop.
trait Plain: Copy + Default + Sized {
    fn wrap(v: Vec<Self>) -> Buf;
    fn unwrap(b: &mut Buf) -> Option<&mut Vec<Self>>;
}

impl Plain for f32 {
    fn wrap(v: Vec<Self>) -> Buf {
        Buf::F32(v)
    }
    fn unwrap(b: &mut Buf) -> Option<&mut Vec<Self>> {
        match b {
            Buf::F32(v) => Some(v),
            Buf::U8(_) => None,
        }
    }
}

impl Plain for u8 {
    fn wrap(v: Vec<Self>) -> Buf {
        Buf::U8(v)
    }
    fn unwrap(b: &mut Buf) -> Option<&mut Vec<Self>> {
        match b {
            Buf::U8(v) => Some(v),
            Buf::F32(_) => None,
        }
    }
}

/// A buffer handed back: empty, with how many of its elements were written (initialised)
/// when it came back, and when.
struct Free {
    buf: Buf,
    init: usize,
    at: Instant,
}

struct Cache {
    capacity_bytes: usize,
    idle: Duration,
    free: Vec<Free>,
}

/// A bounded cache of large buffers; clones share it.
#[derive(Clone)]
pub struct BufferCache(Arc<Mutex<Cache>>);

thread_local! {
    /// The cache of the pool this thread belongs to, if any.
    static CURRENT: RefCell<Option<BufferCache>> = const { RefCell::new(None) };
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

    /// A cached buffer of `T` of a fitting size (between `len` and `2·len` elements, so a
    /// small request never pins a huge buffer), emptied, with its initialised length.
    fn find<T: Plain>(&self, len: usize) -> Option<(Vec<T>, usize)> {
        if len * std::mem::size_of::<T>() < MIN_BYTES {
            return None;
        }
        let mut c = self.lock();
        let best = c
            .free
            .iter_mut()
            .enumerate()
            .filter_map(|(i, f)| {
                let cap = T::unwrap(&mut f.buf)?.capacity();
                (cap >= len && cap / 2 <= len).then_some((i, cap))
            })
            .min_by_key(|&(_, cap)| cap)
            .map(|(i, _)| i);
        let mut f = c.free.swap_remove(best?);
        let v = std::mem::take(T::unwrap(&mut f.buf).expect("the kind just matched"));
        Some((v, f.init))
    }

    /// An empty vector with capacity for at least `len` floats: a cached buffer of a
    /// fitting size (between `len` and `2·len`, so a small request never pins a huge
    /// buffer), or a new allocation.
    pub fn take(&self, len: usize) -> Vec<f32> {
        self.find(len)
            .map_or_else(|| Vec::with_capacity(len), |(v, _)| v)
    }

    /// A vector of `len` bytes whose contents are **unspecified** (what an earlier request
    /// left, or zeros): for a caller that overwrites every byte. A warm cached buffer is
    /// not zeroed again (a 36 MB picture: one memset and 9 000 page faults saved).
    pub fn take_bytes_unzeroed(&self, len: usize) -> Vec<u8> {
        unzeroed(self.find(len), len)
    }

    /// [`Self::take_bytes_unzeroed`] for floats.
    pub fn take_unzeroed(&self, len: usize) -> Vec<f32> {
        unzeroed(self.find(len), len)
    }

    fn put<T: Plain>(&self, mut v: Vec<T>) {
        let size = v.capacity() * std::mem::size_of::<T>();
        if size < MIN_BYTES {
            return;
        }
        let init = v.len();
        v.clear();
        let mut c = self.lock();
        if size > c.capacity_bytes {
            return;
        }
        let limit = c.capacity_bytes - size;
        shrink_to(&mut c, limit);
        c.free.push(Free {
            buf: T::wrap(v),
            init,
            at: Instant::now(),
        });
    }

    /// Hands a buffer back for reuse (dropped if small, or if the cache is full even after
    /// evicting its oldest buffers).
    pub fn give(&self, v: Vec<f32>) {
        self.put(v);
    }

    /// [`Self::give`] for bytes.
    pub fn give_bytes(&self, v: Vec<u8>) {
        self.put(v);
    }

    /// Frees the buffers unused for longer than the idle time.
    pub fn trim_idle(&self) {
        let freed: Vec<Free> = {
            let mut c = self.lock();
            let idle = c.idle;
            let (old, keep) = std::mem::take(&mut c.free)
                .into_iter()
                .partition(|f| f.at.elapsed() >= idle);
            c.free = keep;
            old
        };
        // Freed outside the lock: returning pages to the OS takes a while.
        drop(freed);
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.lock().free.iter().map(|f| f.buf.bytes()).sum()
    }
}

/// `len` elements of a found buffer (its initialised part kept as it is, the rest zeroed)
/// or of a new zeroed allocation.
fn unzeroed<T: Plain>(found: Option<(Vec<T>, usize)>, len: usize) -> Vec<T> {
    let Some((mut v, init)) = found else {
        return vec![T::default(); len];
    };
    let keep = init.min(len);
    // SAFETY: `v` is empty with capacity ≥ len ≥ keep, and its first `init` elements were
    // written before it was handed back (`put` records `len()` before `clear`, which only
    // resets the length of a `T` with nothing to drop). Any bit pattern is a valid `T`
    // (`Plain`: f32, u8), so those elements are initialised values.
    #[allow(unsafe_code)]
    unsafe {
        v.set_len(keep);
    }
    v.resize(len, T::default());
    v
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

/// [`BufferCache::take_unzeroed`] on the current thread's cache (zeros on a thread
/// without one). The contents are unspecified: the caller overwrites every element.
pub fn take_unzeroed(len: usize) -> Vec<f32> {
    match current() {
        Some(c) => c.take_unzeroed(len),
        None => vec![0.0; len],
    }
}

/// [`BufferCache::take_bytes_unzeroed`] on the current thread's cache (zeros on a thread
/// without one). The contents are unspecified: the caller overwrites every byte.
pub fn take_bytes_unzeroed(len: usize) -> Vec<u8> {
    match current() {
        Some(c) => c.take_bytes_unzeroed(len),
        None => vec![0; len],
    }
}

/// [`BufferCache::give`] to the current thread's cache; dropped on a thread without one.
pub fn give(v: Vec<f32>) {
    if let Some(c) = current() {
        c.give(v);
    }
}

/// [`BufferCache::give_bytes`] to the current thread's cache; dropped on a thread without
/// one.
pub fn give_bytes(v: Vec<u8>) {
    if let Some(c) = current() {
        c.give_bytes(v);
    }
}

/// Hands an array's buffer back for reuse ([`give`]).
pub fn recycle(a: ndarray::Array4<f32>) {
    give(a.into_raw_vec_and_offset().0);
}

/// Evicts the oldest buffers until at most `limit` bytes remain.
fn shrink_to(c: &mut Cache, limit: usize) {
    c.free.sort_by_key(|f| f.at);
    let mut total: usize = c.free.iter().map(|f| f.buf.bytes()).sum();
    while total > limit {
        let f = c.free.remove(0);
        total -= f.buf.bytes();
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

    #[test]
    fn unzeroed_buffers_keep_what_was_written_and_zero_the_rest() {
        let cache = BufferCache::new(64 << 20, Duration::from_secs(5));
        let n = 3 << 20;
        // A fresh buffer is zeros.
        let mut a = cache.take_bytes_unzeroed(n);
        assert_eq!(a.len(), n);
        assert!(a.iter().all(|&b| b == 0));
        a.fill(7);
        a.truncate(n - 100);
        let ptr = a.as_ptr();
        cache.give_bytes(a);
        // Same allocation: the written part as it was, beyond it zeros.
        let b = cache.take_bytes_unzeroed(n);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b[..n - 100].iter().all(|&x| x == 7));
        assert!(b[n - 100..].iter().all(|&x| x == 0));
        cache.give_bytes(b);
        // Bytes are never handed out as floats, nor floats as bytes.
        let f = cache.take_unzeroed(n / 4);
        assert_ne!(f.as_ptr().cast::<u8>(), ptr);
        assert!(f.iter().all(|&x| x == 0.0));
        cache.give(f);
        assert_eq!(cache.cached_bytes(), 2 * n);
        let g = cache.take(n / 4);
        assert!(g.is_empty() && g.capacity() >= n / 4);
        let h = cache.take_bytes_unzeroed(n);
        assert_eq!(h.as_ptr(), ptr);
    }
}
