//! Mapreduce across peers, coordinated by the node that was asked.
//!
//! ```text
//!  input ─split on lines─> partitions ─map CMD (stdin) on targets, retried elsewhere─> outputs
//!     R = 1: outputs in partition order ─> reduce CMD on this node ─> answer
//!     R > 1: `key<TAB>value` lines by key hash ─> R reducer inputs ─> reduce CMD on targets
//!            (retried elsewhere) ─> outputs in reducer order ─> answer
//! ```
//! Every command runs through the executing node's exec service: its policy, its audit.
//! Deterministic commands give the same answer on every run, whichever peers ran what.

mod attempt;
pub mod partition;
mod schedule;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::fleet::targets::Target;
use crate::Node;
use schedule::{Scheduler, Task};

/// Most bytes one map or reduce command may print; more fails the attempt (nothing is cut
/// silently from a job's data).
pub const TASK_OUTPUT_MAX: u64 = 512 << 20;

/// Most reducers a job may ask for.
pub const MAX_REDUCERS: u32 = 1024;
/// Most partitions a job may ask for.
pub const MAX_PARTITIONS: u32 = 100_000;

/// A job as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Shell command each partition is piped through.
    pub map: String,
    /// Shell command the map output is piped through.
    pub reduce: String,
    /// Partitions of the input; 0 means one per target.
    pub partitions: u32,
    /// 1: reduce on this node; more: shuffle by key to that many reducers on the targets.
    pub reducers: u32,
    /// Further attempts a failed partition (or reducer) gets, each on another target if any.
    pub retries: u32,
    /// Per attempt.
    pub timeout_ms: u64,
    /// Bytes of the answer returned; the rest is counted and flagged.
    pub output_cap: u64,
    /// With one reducer: the caller runs the reduce itself (the CLI, in its own process and
    /// with the rights of the person who typed it), so the answer is the map outputs in
    /// partition order. `false` reduces on this node, under its policy (MCP does).
    pub caller_reduces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Map,
    Reduce,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub phase: Phase,
    pub done: u32,
    pub running: u32,
    /// Attempts that failed and were queued again.
    pub retried: u32,
    pub total: u32,
}

/// How one partition (or reducer) went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    pub index: u32,
    pub input_bytes: u64,
    /// For partitions: the 1-based first line and the line count.
    pub first_line: u64,
    pub lines: u64,
    pub output_bytes: u64,
    /// The target whose attempt succeeded.
    pub target: String,
    pub attempts: u32,
    pub duration_ms: u64,
    /// Why earlier attempts failed, one line each.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub truncated: bool,
    pub map_ms: u64,
    pub reduce_ms: u64,
    pub partitions: Vec<TaskStats>,
    pub reducers: Vec<TaskStats>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("{0}")]
    Spec(String),
    #[error("{what} failed {attempts} times, out of retries: {}", .failures.join("; "))]
    Exhausted { what: String, attempts: u32, failures: Vec<String> },
    #[error("{what} could not run: no target is left to run it ({})", .failures.join("; "))]
    NoTargets { what: String, failures: Vec<String> },
}

impl JobSpec {
    fn check(&self) -> Result<(), JobError> {
        let bad = |m: &str| Err(JobError::Spec(m.into()));
        if self.map.trim().is_empty() {
            return bad("the map command is empty");
        }
        if self.reduce.trim().is_empty() {
            return bad("the reduce command is empty");
        }
        if self.reducers == 0 || self.reducers > MAX_REDUCERS {
            return Err(JobError::Spec(format!("reducers must be from 1 to {MAX_REDUCERS}")));
        }
        if self.partitions > MAX_PARTITIONS {
            return Err(JobError::Spec(format!("at most {MAX_PARTITIONS} partitions")));
        }
        if self.timeout_ms == 0 {
            return bad("the timeout must be positive");
        }
        Ok(())
    }
}

impl Node {
    /// Runs a job over `targets` and returns its answer. Progress goes to `progress` (a
    /// full channel skips a report; it never slows the job).
    pub async fn mapreduce(
        &self,
        targets: Vec<Target>,
        job: &JobSpec,
        input: Bytes,
        progress: mpsc::Sender<JobProgress>,
    ) -> Result<(Vec<u8>, JobReport), JobError> {
        job.check()?;
        if targets.is_empty() {
            return Err(JobError::Spec("no targets to run the map on".into()));
        }
        let timeout = Duration::from_millis(job.timeout_ms);
        let wanted = if job.partitions == 0 { targets.len() } else { job.partitions as usize };
        let slices = partition::split(&input, wanted);
        let started = Instant::now();
        let tasks = slices
            .iter()
            .enumerate()
            .map(|(i, s)| Task {
                what: format!(
                    "partition {} of {} (lines {}-{}, {} bytes)",
                    i + 1,
                    slices.len(),
                    s.first_line,
                    (s.first_line + s.lines).saturating_sub(1).max(s.first_line),
                    s.bytes.len()
                ),
                input: input.slice(s.bytes.clone()),
            })
            .collect();
        let map = Scheduler::new(self, &targets, &job.map, timeout, job.retries, TASK_OUTPUT_MAX);
        let mapped = map.run(tasks, Phase::Map, &progress).await?;
        let map_ms = started.elapsed().as_millis() as u64;
        let partitions = mapped
            .iter()
            .zip(&slices)
            .map(|(done, s)| TaskStats { first_line: s.first_line, lines: s.lines, ..done.stats.clone() })
            .collect();

        let reduce_started = Instant::now();
        let cap = job.output_cap;
        let (output, reducers, truncated) = if job.reducers == 1 && job.caller_reduces {
            let all: Vec<u8> = mapped.iter().flat_map(|d| d.output.iter().copied()).collect();
            let truncated = all.len() as u64 > cap;
            (all.into_iter().take(cap.min(usize::MAX as u64) as usize).collect(), vec![], truncated)
        } else if job.reducers == 1 {
            // The caller's reduce runs here, through this node's own exec service and policy.
            let me = [Target { id: self.id().to_string(), name: self.name().to_owned(), ssh: None }];
            let all: Vec<u8> = mapped.iter().flat_map(|d| d.output.iter().copied()).collect();
            let task = Task { what: "the reduce on this node".into(), input: Bytes::from(all) };
            let reduce = Scheduler::new(self, &me, &job.reduce, timeout, 0, cap.max(1));
            let mut done = reduce.run_capped(vec![task], Phase::Reduce, &progress).await?;
            let one = done.pop().expect("one reduce task");
            (one.output, vec![one.stats], one.truncated)
        } else {
            let inputs = partition::shuffle(mapped.iter().map(|d| d.output.as_slice()), job.reducers as usize);
            let n = inputs.len();
            let tasks = inputs
                .into_iter()
                .enumerate()
                .map(|(i, input)| Task { what: format!("reducer {} of {n}", i + 1), input: Bytes::from(input) })
                .collect();
            let reduce = Scheduler::new(self, &targets, &job.reduce, timeout, job.retries, TASK_OUTPUT_MAX);
            let done = reduce.run(tasks, Phase::Reduce, &progress).await?;
            let stats = done.iter().map(|d| d.stats.clone()).collect();
            let mut all: Vec<u8> = done.into_iter().flat_map(|d| d.output).collect();
            let truncated = all.len() as u64 > cap;
            all.truncate(cap.min(usize::MAX as u64) as usize);
            (all, stats, truncated)
        };
        let output_bytes = reducers.iter().map(|s: &TaskStats| s.output_bytes).sum();
        let report = JobReport {
            input_bytes: input.len() as u64,
            output_bytes,
            truncated,
            map_ms,
            reduce_ms: reduce_started.elapsed().as_millis() as u64,
            partitions,
            reducers,
        };
        Ok((output, report))
    }
}
