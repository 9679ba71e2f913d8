//! Test helpers that need `unsafe`: a counting global allocator for the lib's test binary,
//! and a forked, single-threaded copy of the test process to run child-side code in.
#![allow(clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts every allocation of the lib's test binary, so a test can see whether the
/// command's start (which shares its parent's memory) allocated.
struct Counting;
pub(crate) static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
// SAFETY: forwards to the system allocator unchanged; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System`; the caller's contract is `System.realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` in a forked, single-threaded copy of this test process (as `pidns` runs in
/// std's forked child), which writes `f`'s `[u64; 3]` to a pipe; returns it.
///
/// # Safety
/// `f` must make only syscalls (everything built before the fork): the copy may have been
/// made while another thread of the test process held a lock.
pub(crate) unsafe fn in_forked_child(f: &mut dyn FnMut() -> [u64; 3]) -> [u64; 3] {
    let (r, w) = super::pipe_cloexec().expect("test set-up");
    // SAFETY: the child calls `f`, which makes only syscalls (the caller's contract), then
    // writes to a pipe and `_exit`s.
    let pid = unsafe { super::fork_raw() }.expect("test set-up");
    if pid == 0 {
        let out = f();
        let mut buf = [0u8; 24];
        for (i, v) in out.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
        }
        super::write_best_effort(w, &buf);
        super::exit_now(0);
    }
    super::close(w);
    let mut buf = [0u8; 24];
    let got = super::read_some(r, &mut buf);
    super::close(r);
    let (_, status) = super::wait_for(pid).expect("test set-up");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(got, 24, "the forked child reported nothing");
    let v = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().expect("test set-up"));
    [v(0), v(1), v(2)]
}
