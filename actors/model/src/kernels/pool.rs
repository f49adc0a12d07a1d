//! A small spinning thread pool for the kernels.
//!
//! A decode step makes ~150 short parallel calls (tens of microseconds each). A pool whose
//! workers sleep between calls pays a futex wake-up on every one of them, which costs more than
//! the work; like llama.cpp's CPU thread pool, these workers spin on an epoch counter for a
//! while (`SPIN`), then yield their core for a while (`WAIT`), and only then park, so
//! back-to-back calls start at once.
//!
//! Protocol: the caller publishes a job (a `&dyn Fn(usize)` and a task count), bumps the epoch,
//! unparks parked workers, then takes tasks itself from a shared counter. It returns once every
//! worker has reported the epoch done, so the job reference never outlives the call. A panic in a
//! task is caught on the worker and re-raised on the caller.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it starts yielding its core.
const SPIN: Duration = Duration::from_micros(100);
/// How long an idle worker waits (spinning, then yielding) before parking.
const WAIT: Duration = Duration::from_millis(2);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    epoch: AtomicUsize,
    job: Mutex<Option<SendJob>>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    finished: AtomicUsize,
    parked: Vec<AtomicBool>,
    panicked: AtomicBool,
}

#[derive(Clone, Copy)]
struct SendJob(Job);
// SAFETY: the job is `Sync` and outlives every use (the caller waits for all workers).
unsafe impl Send for SendJob {}

/// A pool of `threads − 1` workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    busy: Mutex<()>,
}

impl Pool {
    /// A pool running jobs on `threads` threads in all (the caller included).
    pub fn new(threads: usize) -> Self {
        let n_workers = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            parked: (0..n_workers).map(|_| AtomicBool::new(false)).collect(),
            panicked: AtomicBool::new(false),
        });
        let workers = (0..n_workers)
            .map(|i| {
                let s = shared.clone();
                thread::Builder::new()
                    .name(format!("kernel-{i}"))
                    .spawn(move || worker(s, i))
                    .expect("spawn kernel worker")
                    .thread()
                    .clone()
            })
            .collect();
        Self {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// Threads that run a job (workers + the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0..n_tasks)` across the pool and returns when all tasks are done.
    ///
    /// # Panics
    /// Re-raises a panic from any task.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        // One job at a time; a second caller waits (or runs inline if it is a nested call).
        let Ok(_guard) = self.busy.try_lock() else {
            (0..n_tasks).for_each(f);
            return;
        };
        let s = &self.shared;
        // SAFETY: erasing the lifetime is sound because this function does not return before
        // every worker has finished with the job (the `finished` wait below).
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        *s.job.lock().unwrap() = Some(SendJob(job));
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.finished.store(0, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for (i, w) in self.workers.iter().enumerate() {
            if s.parked[i].load(Ordering::SeqCst) {
                w.unpark();
            }
        }
        let caller = catch_unwind(AssertUnwindSafe(|| take_tasks(s, f)));
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < self.workers.len() {
            spins += 1;
            if spins.is_multiple_of(1024) {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *s.job.lock().unwrap() = None;
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel task panicked on a worker thread");
        }
    }
}

fn take_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: Arc<Shared>, index: usize) {
    let mut seen = 0usize;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = start.elapsed();
            if idle > WAIT {
                s.parked[index].store(true, Ordering::SeqCst);
                if s.epoch.load(Ordering::SeqCst) == seen {
                    thread::park();
                }
                s.parked[index].store(false, Ordering::SeqCst);
            } else if idle > SPIN {
                // Let Burn's own CPU threads (large ops between kernels) have the core.
                thread::yield_now();
            }
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap();
        if let Some(SendJob(job)) = job {
            // SAFETY: the caller keeps the job alive until `finished` counts this worker.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| take_tasks(&s, f))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.finished.fetch_add(1, Ordering::Release);
    }
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Sets the kernel pool's size; only the first call (or first use) decides.
pub fn init(threads: usize) -> bool {
    let mut fresh = false;
    POOL.get_or_init(|| {
        fresh = true;
        Pool::new(threads)
    });
    fresh
}

/// The kernel pool (all available cores unless [`init`] said otherwise).
pub fn global() -> &'static Pool {
    POOL.get_or_init(|| Pool::new(thread::available_parallelism().map_or(1, |n| n.get())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once_many_times() {
        let pool = Pool::new(3);
        for n in [0usize, 1, 2, 7, 64] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn survives_parking_and_panics() {
        let pool = Pool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(8, &|i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        // Let the worker park, then wake it with a new job.
        let start = Instant::now();
        while !pool.shared.parked[0].load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "worker never parked"
            );
            thread::yield_now();
        }
        pool.run(8, &|i| {
            total.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 56);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|i| {
                if i == 5 {
                    panic!("task 5 fails");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works after a panic.
        let n = AtomicUsize::new(0);
        pool.run(4, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }
}
