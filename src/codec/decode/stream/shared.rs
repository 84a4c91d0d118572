//! The samples buffer a [`super::RowDecoder`] writes while [`super::StreamRows`] readers
//! read it: a `Vec`'s allocation taken apart, reached through raw pointers only.

use std::mem::ManuallyDrop;
use std::ops::Range;

/// A `Vec`'s allocation shared by the writer and the readers of disjoint rows, through raw
/// pointers only (no reference ever covers a row being written).
pub(super) struct Shared<T> {
    ptr: *mut T,
    pub(super) len: usize,
    cap: usize,
}

// SAFETY: `Shared` owns its allocation like the `Vec` it came from (`T: Send` moves with
// it). Shared access is `slice` / `slice_mut`, whose callers (`StreamRows::rows` and
// `RowDecoder::decode`) keep to disjoint rows, ordered by the watermark's Release/Acquire.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as for `Send`; `&Shared` gives no access to the elements without the `unsafe`
// methods' contracts.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

#[allow(unsafe_code)]
impl<T> Shared<T> {
    pub(super) fn new(v: Vec<T>) -> Self {
        let mut v = ManuallyDrop::new(v);
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Elements `span`, shared.
    ///
    /// # Safety
    /// Nobody writes them while the slice lives, and they were written (initialised and
    /// published) before.
    pub(super) unsafe fn slice(&self, span: Range<usize>) -> &[T] {
        assert!(span.start <= span.end && span.end <= self.len);
        // SAFETY: in bounds (asserted) of an allocation of `len` initialised elements;
        // the caller guarantees no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.ptr.add(span.start), span.len()) }
    }

    /// Elements `span`, exclusively.
    ///
    /// # Safety
    /// Nobody else reads or writes them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice_mut(&self, span: Range<usize>) -> &mut [T] {
        assert!(span.start <= span.end && span.end <= self.len);
        // SAFETY: in bounds (asserted); the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(span.start), span.len()) }
    }

    pub(super) fn into_vec(self) -> Vec<T> {
        let me = ManuallyDrop::new(self);
        // SAFETY: the parts of the `Vec` `new` took apart, not freed (`me` is not
        // dropped); `self` by value: no slice of it lives.
        unsafe { Vec::from_raw_parts(me.ptr, me.len, me.cap) }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: as in `into_vec`: the `Vec`'s own parts, freed once, with no slice left.
        #[allow(unsafe_code)]
        drop(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.cap) });
    }
}
