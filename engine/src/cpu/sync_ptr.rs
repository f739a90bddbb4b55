//! A raw pointer that parallel tasks may share when each writes a disjoint part of one buffer
//! (rows, tiles, tiles of C) that safe slicing cannot express, e.g. rows picked by an index.

/// `*mut T` that is `Send + Sync`. Every use must document why the tasks' writes are disjoint
/// and in bounds.
#[derive(Clone, Copy, Debug)]
pub struct SyncPtr<T>(pub *mut T);

// SAFETY: the pointer itself is plain data; soundness rests on each use writing disjoint,
// in-bounds elements (documented at every use).
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// A method, not field access, so closures capture the whole `Sync` wrapper.
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}
