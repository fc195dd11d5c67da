//! A thread confined by one ruleset that starts the processes that ruleset confines.
//!
//! Landlock (and a capability dropped from the bounding set) belongs to a thread, and a process
//! the thread starts inherits it; with no pre-exec hook std starts that process with
//! `posix_spawn` (vfork semantics) instead of forking the whole node. Making such a thread for
//! every command cost more than the command: about 80 µs to start it, 110 µs to apply a
//! ruleset of a few hundred rules, 40 µs to join it. A ruleset the cache keeps (the same spec
//! over unchanged paths) keeps its thread instead, which applied it once and does nothing but
//! run the spawns handed to it. No other thread of the node is ever confined.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread and has it confine itself with `confine`; fails (and leaves no thread)
    /// if that fails.
    pub(crate) fn start(confine: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<Arc<Self>> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        std::thread::Builder::new().name("tunnel-spawn".into()).spawn(move || {
            let confined = confine();
            let ok = confined.is_ok();
            let _ = ready_tx.send(confined);
            if !ok {
                return;
            }
            // Ends when the last handle (the cache's, or a command's in flight) is gone.
            while let Ok(job) = queue.recv() {
                // A panicking job fails its own call (its answer is dropped), not the thread.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Arc::new(Self { jobs })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the spawning thread ended before it was confined")),
        }
    }

    /// Runs `job` on the confined thread and returns its result.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (answer_tx, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move || {
                let _ = answer_tx.send(job());
            }))
            .map_err(|_| std::io::Error::other("the spawning thread is gone"))?;
        answer.recv().unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_one_thread_that_survives_a_panic_and_a_failed_confinement_leaves_none() {
        let spawner = Spawner::start(|| Ok(())).unwrap();
        let first = spawner.run(|| Ok(std::thread::current().id())).unwrap();
        let err = spawner.run::<()>(|| panic!("boom")).unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(spawner.run(|| Ok(std::thread::current().id())).unwrap(), first, "the same thread, still there");
        assert_ne!(first, std::thread::current().id());
        let refused = Spawner::start(|| Err(std::io::Error::from_raw_os_error(libc::EPERM))).err().unwrap();
        assert_eq!(refused.raw_os_error(), Some(libc::EPERM));
    }
}
