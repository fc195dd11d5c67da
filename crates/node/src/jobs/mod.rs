//! Jobs: commands that outlive the call that started them, kept by the node that runs them.
//!
//! A job starts as an exec on a [`tunnel_proto::message::StreamKind::Job`] stream (served by
//! `services::exec`, under the same policy). Until it is detached its output is only kept in
//! memory; a command that ends first leaves nothing behind. Detached, it gets the next number
//! on this node, a directory under `<state>/jobs` ([`store`]) and its output mirrored there
//! ([`output`]), and it runs on with nobody attached. Callers then follow it with the job
//! operations ([`answer`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tunnel_proto::job::{JobInfo, JobOutput, JobStart, JobState, OutputFrom};
use tunnel_proto::message::ExecExit;
use tunnel_proto::NodeId;

pub(crate) mod answer;
pub(crate) mod fleet;
pub(crate) mod output;
pub(crate) mod store;

use output::OutputLog;
use store::Record;

/// Most bytes one `JobOutput` answer carries (the answer is one message).
pub(crate) const OUTPUT_READ_MAX: u32 = 128 * 1024;
/// The longest a job operation waits for news before it answers anyway.
pub(crate) const WAIT_MAX: Duration = Duration::from_secs(20);
/// After `SIGTERM`, how long a cancelled job has before `SIGKILL`.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// This node's jobs.
pub(crate) struct Jobs {
    node: NodeId,
    /// `<state>/jobs`; `None` on a node without a state directory, which keeps no jobs.
    root: Option<PathBuf>,
    next: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Live>>>,
    /// When pruning last started (ms since the epoch).
    pruned_ms: AtomicI64,
}

/// Pruning reads every job's record: at most this often.
const PRUNE_EVERY_MS: i64 = 60_000;

/// A detached job whose command still runs.
pub(crate) struct Live {
    info: watch::Sender<JobInfo>,
    log: Mutex<OutputLog>,
    cancel: CancellationToken,
    /// The command's process group.
    group: Option<rustix::process::Pid>,
    dir: PathBuf,
    /// See [`JobRun::orphaned_as`].
    orphaned: Option<&'static str>,
}

impl Jobs {
    /// Opens the jobs under `state_dir`: those the last run left running are marked lost, and
    /// old ones pruned.
    pub(crate) fn open(node: NodeId, state_dir: Option<&Path>) -> Self {
        let root = state_dir.map(|d| d.join("jobs"));
        let mut highest = 0;
        if let Some(root) = &root {
            if let Err(e) = std::fs::create_dir_all(root) {
                tracing::warn!(dir = %root.display(), error = %e, "cannot keep jobs");
            }
            highest = store::recover(root);
        }
        let jobs = Self {
            node,
            root,
            next: AtomicU64::new(highest + 1),
            live: Mutex::new(HashMap::new()),
            pruned_ms: AtomicI64::new(i64::MIN),
        };
        jobs.prune_soon();
        jobs
    }

    /// Prunes old jobs off the runtime's threads, unless that was done within the last minute.
    fn prune_soon(&self) {
        let Some(root) = self.root.clone() else { return };
        let now = store::now_ms();
        let last = self.pruned_ms.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= PRUNE_EVERY_MS;
        if due && self.pruned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tokio::task::spawn_blocking(move || store::prune(&root, now, store::RETENTION, store::TOTAL_BYTES));
        }
    }

    fn live(&self, id: u64) -> Option<Arc<Live>> {
        self.live.lock().expect("jobs lock").get(&id).cloned()
    }

    /// A job's state: from memory while it runs, else from its record.
    pub(crate) async fn info(&self, id: u64) -> Result<JobInfo, String> {
        if let Some(live) = self.live(id) {
            return Ok(live.info.borrow().clone());
        }
        let dir = self.dir_of(id)?;
        blocking(move || store::read_record(&dir).map(|r| r.info)).await.map_err(|_| no_such_job(id))
    }

    fn dir_of(&self, id: u64) -> Result<PathBuf, String> {
        let root = self.root.as_ref().ok_or("this node keeps no jobs (it has no state directory)")?;
        Ok(store::job_dir(root, id))
    }

    /// The newest jobs first, those `visible` lets through, at most `limit`.
    pub(crate) async fn list(&self, limit: usize, visible: impl Fn(&JobInfo) -> bool) -> (Vec<JobInfo>, bool) {
        let Some(root) = self.root.clone() else { return (Vec::new(), false) };
        let mut jobs: Vec<JobInfo> = blocking(move || {
            Ok(store::job_dirs(&root)
                .into_iter()
                .filter_map(|(_, dir)| store::read_record(&dir).ok())
                .map(|r| r.info)
                .collect())
        })
        .await
        .unwrap_or_default();
        for job in &mut jobs {
            if let Some(live) = self.live(job.id) {
                *job = live.info.borrow().clone();
            }
        }
        jobs.retain(|j| visible(j));
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        let truncated = jobs.len() > limit;
        jobs.truncate(limit);
        (jobs, truncated)
    }

    /// The job's state once it ended, or after `wait`, whichever is first.
    pub(crate) async fn wait(&self, id: u64, wait: Duration) -> Result<JobInfo, String> {
        if let Some(live) = self.live(id) {
            let mut rx = live.info.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|i| !i.state.is_running())).await;
            return Ok(rx.borrow().clone());
        }
        self.info(id).await
    }

    /// Up to `max` bytes of output from `from`; when there is none past it yet and the job
    /// runs, waits up to `wait` for some (or for the end).
    pub(crate) async fn output(
        &self,
        id: u64,
        from: OutputFrom,
        max: u32,
        wait: Duration,
    ) -> Result<JobOutput, String> {
        let max = max.clamp(1, OUTPUT_READ_MAX) as usize;
        if let Some(live) = self.live(id) {
            let mut rx = live.info.subscribe();
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let job = rx.borrow_and_update().clone();
                let (offset, data) = live.log.lock().expect("job log lock").read(from, max);
                if !data.is_empty() || !job.state.is_running() {
                    return Ok(JobOutput { job, offset, data: data.into() });
                }
                if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                    return Ok(JobOutput { job, offset, data: data.into() });
                }
            }
        }
        let job = self.info(id).await?;
        let dir = self.dir_of(id)?;
        let (offset, data) = blocking(move || output::read_files(&dir, from, max)).await?;
        Ok(JobOutput { job, offset, data: data.into() })
    }

    /// Stops a running job and waits (bounded) for it to end; an ended job is left as it is.
    pub(crate) async fn cancel(&self, id: u64) -> Result<JobInfo, String> {
        if let Some(live) = self.live(id) {
            live.cancel.cancel();
            return self.wait(id, CANCEL_GRACE + Duration::from_secs(2)).await;
        }
        self.info(id).await
    }

    /// The node is stopping: every running job is killed (nobody would be left to keep its
    /// output) and recorded as lost, saying why.
    pub(crate) fn stop_all(&self) {
        for live in self.live.lock().expect("jobs lock").drain().map(|(_, l)| l) {
            if let Some(group) = live.group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::Kill);
            }
            let reason = live.orphaned.unwrap_or("the node stopped while the job ran; the job was killed");
            live.info.send_modify(|i| store::mark_lost(i, reason));
            let info = live.info.borrow().clone();
            store::save_lost(&live.dir, Record::ended(info));
        }
    }
}

/// One exec that may become a job: what it keeps of the output until then, and the job after.
pub(crate) struct JobRun {
    start: JobStart,
    caller: NodeId,
    command: String,
    /// The output, until the job is detached (then it is the live job's).
    pending: Option<OutputLog>,
    live: Option<Arc<Live>>,
    write_failed: bool,
    orphaned: Option<&'static str>,
}

impl JobRun {
    pub(crate) fn new(start: JobStart, caller: NodeId, command: String) -> Self {
        Self {
            start,
            caller,
            command,
            pending: Some(OutputLog::new(output::OUTPUT_CAP)),
            live: None,
            write_failed: false,
            orphaned: None,
        }
    }

    /// For a job with no process of its own: why it is lost if its node stops while it runs
    /// (said at a graceful stop and at the restart after a crash).
    pub(crate) fn orphaned_as(self, reason: &'static str) -> Self {
        Self { orphaned: Some(reason), ..self }
    }

    pub(crate) fn after(&self) -> Duration {
        Duration::from_millis(self.start.after_ms)
    }

    /// Keeps output, in memory and (once detached) on disk.
    pub(crate) fn record(&mut self, bytes: &[u8]) {
        if let Some(log) = &mut self.pending {
            let _ = log.append(bytes); // no files yet: cannot fail
            return;
        }
        let Some(live) = &self.live else { return };
        let written = {
            let mut log = live.log.lock().expect("job log lock");
            let written = log.append(bytes);
            let (total, kept_from) = (log.total(), log.kept_from());
            live.info.send_modify(|i| {
                i.output_bytes = total;
                i.kept_from = kept_from;
            });
            written
        };
        if let Err(e) = written {
            if !std::mem::replace(&mut self.write_failed, true) {
                let dir = live.dir.display();
                tracing::warn!(%dir, error = %e, "a job's output could not be saved; it is kept in memory");
            }
        }
    }

    /// Makes this exec a job: its number, directory, record and output files. `pid` is the
    /// command's process (and group).
    pub(crate) fn detach(&mut self, jobs: &Jobs, pid: Option<u32>, started_ms: i64) -> Result<JobInfo, String> {
        let root = jobs.root.as_ref().ok_or("this node keeps no jobs (it has no state directory)")?;
        let mut log = self.pending.take().expect("detached once");
        let id = jobs.next.fetch_add(1, Ordering::Relaxed);
        let dir = store::job_dir(root, id);
        let info = JobInfo {
            id,
            node: jobs.node,
            caller: self.caller,
            label: self.start.label.clone(),
            command: self.command.clone(),
            started_ms,
            ended_ms: None,
            state: JobState::Running,
            exit_code: None,
            signal: None,
            reason: None,
            output_bytes: log.total(),
            kept_from: log.kept_from(),
            output_cap: log.cap(),
        };
        let pid = pid.map(|p| p as i32);
        let record = Record {
            info: info.clone(),
            pid,
            pid_start: pid.and_then(store::process_start),
            orphaned: self.orphaned.map(str::to_owned),
        };
        let made = std::fs::create_dir(&dir)
            .and_then(|()| log.mirror_to(&dir))
            .and_then(|()| store::write_record(&dir, &record));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            self.pending = Some(log);
            return Err(format!("cannot keep the job in {}: {e}", dir.display()));
        }
        let live = Arc::new(Live {
            info: watch::Sender::new(info.clone()),
            log: Mutex::new(log),
            cancel: CancellationToken::new(),
            group: pid.and_then(rustix::process::Pid::from_raw),
            dir: dir.clone(),
            orphaned: self.orphaned,
        });
        jobs.live.lock().expect("jobs lock").insert(id, live.clone());
        self.live = Some(live);
        Ok(info)
    }

    /// Resolves when someone cancels the detached job; never before it is detached.
    pub(crate) async fn cancelled(&self) {
        match &self.live {
            Some(live) => live.cancel.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Records how the detached job ended and lets it go; returns its final state.
    pub(crate) fn finish(self, jobs: &Jobs, result: &Result<ExecExit, String>) -> Option<JobInfo> {
        let live = self.live?;
        // Gone already: the node stopped it first (`stop_all`) and recorded it.
        jobs.live.lock().expect("jobs lock").remove(&live.info.borrow().id)?;
        live.info.send_modify(|i| {
            i.ended_ms = Some(store::now_ms());
            match result {
                Ok(exit) => {
                    i.exit_code = exit.code;
                    i.signal = exit.signal;
                    i.state = if exit.cancelled {
                        JobState::Cancelled
                    } else if exit.timed_out {
                        JobState::TimedOut
                    } else {
                        JobState::Exited
                    };
                }
                Err(e) => {
                    i.state = JobState::Failed;
                    i.reason = Some(e.clone());
                }
            }
        });
        let info = live.info.borrow().clone();
        let record = Record::ended(info.clone());
        if let Err(e) = store::write_record(&live.dir, &record) {
            tracing::warn!(job = info.id, error = %e, "could not record a job's end");
        }
        jobs.prune_soon();
        Some(info)
    }
}

fn no_such_job(id: u64) -> String {
    format!("no job {id} on this node (it never ran here, or was pruned)")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("reading the jobs failed: {e}")),
    }
}
