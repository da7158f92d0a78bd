//! The parallel-for hook: how `forward` spreads matmul rows and attention
//! heads over threads without the core spawning any.
//!
//! The core only calls [`Parallel::run`]. [`Serial`] runs tasks in order on
//! the calling thread. With the `std` feature, [`ThreadPool`] keeps worker
//! threads alive across calls. A task writes only its own output elements and
//! each element is computed by the same kernel code whatever the split, so
//! the output bits do not depend on the number of threads.

/// Runs `f(0), f(1), ..., f(tasks - 1)`, possibly at the same time on several
/// threads, and returns when all have finished.
pub trait Parallel: Sync {
    /// Number of threads that may run tasks at once, the caller included.
    fn threads(&self) -> usize;

    /// Runs every task and waits for all of them.
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync));
}

/// Runs every task in order on the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Parallel for Serial {
    fn threads(&self) -> usize {
        1
    }

    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        for i in 0..tasks {
            f(i);
        }
    }
}

#[cfg(feature = "std")]
pub use pool::ThreadPool;

#[cfg(feature = "std")]
mod pool {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    use super::Parallel;

    /// One `run` call shared with the workers.
    struct Job {
        /// The caller's closure with its lifetime erased. It is called only
        /// for task indices taken below `tasks`, and `run` returns only after
        /// every such call has finished, so no call outlives the closure.
        f: *const (dyn Fn(usize) + Sync),
        tasks: usize,
        next: AtomicUsize,
        finished: AtomicUsize,
    }

    // SAFETY: `f` points to a `Sync` closure, which may be called from any
    // thread; the pointer is only dereferenced while `run` keeps the closure
    // alive (see `Job::f`).
    unsafe impl Send for Job {}
    // SAFETY: as above; the other fields are atomics or immutable.
    unsafe impl Sync for Job {}

    impl Job {
        /// Runs tasks until none is left.
        fn work(&self) {
            loop {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= self.tasks {
                    return;
                }
                // SAFETY: `i < tasks`, so `run` has not returned yet and the
                // closure is alive (see `Job::f`).
                unsafe { (*self.f)(i) };
                self.finished.fetch_add(1, Ordering::Release);
            }
        }
    }

    struct Shared {
        state: Mutex<State>,
        wake: Condvar,
        /// A copy of `State::generation` that idle workers poll without the
        /// lock before they sleep on `wake`.
        published: AtomicU64,
    }

    /// How long an idle worker polls for the next job before it sleeps.
    /// A forward pass starts a job per matmul, a few microseconds apart. A
    /// wake-up through the condition variable took about as long as a whole
    /// Q8_0 matmul of the 110M shape, so 2 threads decoded Q8_0 no faster
    /// than 1 (1.05x; 1.24x to 1.33x with polling).
    const SPIN: Duration = Duration::from_micros(200);

    struct State {
        generation: u64,
        job: Option<Arc<Job>>,
        shutdown: bool,
    }

    /// A fixed set of worker threads that run [`Parallel`] tasks. The thread
    /// calling `run` works too, so `ThreadPool::new(n)` starts `n - 1`
    /// threads. Dropping the pool stops and joins them.
    pub struct ThreadPool {
        shared: Arc<Shared>,
        workers: Vec<JoinHandle<()>>,
        threads: usize,
    }

    impl ThreadPool {
        /// Starts a pool for `threads` threads in all (at least 1).
        pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
            let threads = threads.max(1);
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    generation: 0,
                    job: None,
                    shutdown: false,
                }),
                wake: Condvar::new(),
                published: AtomicU64::new(0),
            });
            let mut workers = Vec::new();
            for i in 1..threads {
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name(std::format!("specdec-worker-{i}"))
                    .spawn(move || worker(&shared))?;
                workers.push(handle);
            }
            Ok(ThreadPool {
                shared,
                workers,
                threads,
            })
        }
    }

    fn worker(shared: &Shared) {
        let mut seen = 0u64;
        loop {
            let idle = Instant::now();
            while shared.published.load(Ordering::Acquire) == seen && idle.elapsed() < SPIN {
                std::hint::spin_loop();
            }
            let job = {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                while state.generation == seen && !state.shutdown {
                    state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.shutdown {
                    return;
                }
                seen = state.generation;
                state.job.clone()
            };
            if let Some(job) = job {
                job.work();
            }
        }
    }

    impl Parallel for ThreadPool {
        fn threads(&self) -> usize {
            self.threads
        }

        fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
            if tasks <= 1 || self.threads == 1 {
                for i in 0..tasks {
                    f(i);
                }
                return;
            }
            let f: *const (dyn Fn(usize) + Sync + '_) = f;
            // SAFETY: only the lifetime changes, which `Job::f` explains: this
            // function does not return before every task below `tasks` has
            // finished, so the closure outlives every call.
            let f: *const (dyn Fn(usize) + Sync) = unsafe { core::mem::transmute(f) };
            let job = Arc::new(Job {
                f,
                tasks,
                next: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
            });
            {
                let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                state.generation += 1;
                state.job = Some(Arc::clone(&job));
                self.shared
                    .published
                    .store(state.generation, Ordering::Release);
            }
            self.shared.wake.notify_all();
            job.work();
            while job.finished.load(Ordering::Acquire) < tasks {
                std::thread::yield_now();
            }
            // Drop the pool's reference so a late worker finds no job.
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = None;
        }
    }

    impl Drop for ThreadPool {
        fn drop(&mut self) {
            {
                let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                state.shutdown = true;
                // A worker that is polling checks `shutdown` once it stops.
                self.shared.published.store(u64::MAX, Ordering::Release);
            }
            self.shared.wake.notify_all();
            for handle in self.workers.drain(..) {
                let _ = handle.join();
            }
        }
    }
}
