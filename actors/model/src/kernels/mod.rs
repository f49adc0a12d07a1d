//! Compute kernels on packed GGUF blocks.

pub mod affine;
pub mod attention;
pub mod cpu;
pub mod norm;
pub mod packed;
pub mod pool;

/// A raw pointer into an output buffer that parallel tasks write disjoint parts of.
pub(crate) struct SharedMut<T>(*mut T);

// SAFETY: the constructors' callers guarantee that tasks write disjoint elements and that the
// buffer outlives the tasks (`pool::Pool::run` returns only after all of them).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn new(buf: &mut [T]) -> Self {
        Self(buf.as_mut_ptr())
    }

    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}
