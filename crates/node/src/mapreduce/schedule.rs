//! Runs tasks (partitions or reducers) on targets, one at a time per target, retrying a
//! failed task on a target that has not failed it yet. A lost target gets no more work.
//! The phase fails only when a task is out of retries, or no target is left.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Dest;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{attempt, JobError, JobProgress, Phase, TaskStats};
use crate::fleet::targets::Target;
use crate::Node;

pub(super) struct Task {
    /// How the task is named in errors: `partition 3 of 8 (lines 2001-3000, 65536 bytes)`.
    pub(super) what: String,
    pub(super) input: Bytes,
}

pub(super) struct Done {
    pub(super) output: Vec<u8>,
    pub(super) truncated: bool,
    pub(super) stats: TaskStats,
}

pub(super) struct Scheduler<'a> {
    node: &'a Node,
    targets: Vec<(Dest, String)>,
    command: &'a str,
    timeout: Duration,
    retries: u32,
    cap: u64,
}

struct TaskState {
    attempts: u32,
    tried: Vec<usize>,
    failures: Vec<String>,
}

impl<'a> Scheduler<'a> {
    pub(super) fn new(
        node: &'a Node,
        targets: &[Target],
        command: &'a str,
        timeout: Duration,
        retries: u32,
        cap: u64,
    ) -> Self {
        let targets = targets.iter().filter_map(|t| Some((t.dest()?, t.name.clone()))).collect();
        Self { node, targets, command, timeout, retries, cap }
    }

    /// Runs every task; output over the cap fails the attempt.
    pub(super) async fn run(
        &self,
        tasks: Vec<Task>,
        phase: Phase,
        progress: &mpsc::Sender<JobProgress>,
    ) -> Result<Vec<Done>, JobError> {
        self.run_inner(tasks, phase, progress, false).await
    }

    /// Runs every task; output over the cap is cut and flagged (the job's final answer).
    pub(super) async fn run_capped(
        &self,
        tasks: Vec<Task>,
        phase: Phase,
        progress: &mpsc::Sender<JobProgress>,
    ) -> Result<Vec<Done>, JobError> {
        self.run_inner(tasks, phase, progress, true).await
    }

    async fn run_inner(
        &self,
        tasks: Vec<Task>,
        phase: Phase,
        progress: &mpsc::Sender<JobProgress>,
        cut_allowed: bool,
    ) -> Result<Vec<Done>, JobError> {
        let total = tasks.len();
        let mut state: Vec<TaskState> =
            (0..total).map(|_| TaskState { attempts: 0, tried: vec![], failures: vec![] }).collect();
        let mut done: Vec<Option<Done>> = (0..total).map(|_| None).collect();
        let mut pending: VecDeque<usize> = (0..total).collect();
        let mut busy = vec![false; self.targets.len()];
        let mut lost = vec![false; self.targets.len()];
        let mut running = JoinSet::new();
        let (mut finished, mut retried) = (0u32, 0u32);
        loop {
            // Hand out work: each pending task to a free live target that has not failed it,
            // or to any free live target once every live one has.
            let mut waiting = VecDeque::new();
            while let Some(task) = pending.pop_front() {
                let live = |t: &usize| !lost[*t];
                let untried_live = (0..self.targets.len()).filter(live).any(|t| !state[task].tried.contains(&t));
                let pick = (0..self.targets.len())
                    .filter(|t| live(t) && !busy[*t])
                    .find(|t| !untried_live || !state[task].tried.contains(t));
                let Some(target) = pick else {
                    waiting.push_back(task);
                    continue;
                };
                busy[target] = true;
                state[task].attempts += 1;
                let (node, (peer, _)) = (self.node.clone(), self.targets[target].clone());
                let (command, input, timeout, cap) =
                    (self.command.to_owned(), tasks[task].input.clone(), self.timeout, self.cap);
                running.spawn(crate::node::lookup::inherit(async move {
                    let started = Instant::now();
                    let outcome = attempt::run(&node, peer, &command, input, timeout, cap).await;
                    (task, target, outcome, started.elapsed())
                }));
            }
            pending = waiting;
            let report =
                JobProgress { phase, done: finished, running: running.len() as u32, retried, total: total as u32 };
            let _ = progress.try_send(report);
            if running.is_empty() {
                if let Some(&task) = pending.front() {
                    return Err(JobError::NoTargets {
                        what: tasks[task].what.clone(),
                        failures: state[task].failures.clone(),
                    });
                }
                break;
            }
            let Some(joined) = running.join_next().await else { break };
            let (task, target, outcome, took) = match joined {
                Ok(r) => r,
                Err(e) => return Err(JobError::Spec(format!("internal error in the job: {e}"))),
            };
            busy[target] = false;
            let name = &self.targets[target].1;
            let failure = match outcome {
                Ok(out) if out.truncated && !cut_allowed => {
                    Some(format!("printed {} bytes, over the {} a task may return", out.stdout_bytes, self.cap))
                }
                Ok(out) => {
                    let s = &state[task];
                    done[task] = Some(Done {
                        truncated: out.truncated,
                        stats: TaskStats {
                            index: task as u32,
                            input_bytes: tasks[task].input.len() as u64,
                            first_line: 0,
                            lines: 0,
                            output_bytes: out.stdout_bytes,
                            target: name.clone(),
                            attempts: s.attempts,
                            duration_ms: took.as_millis() as u64,
                            failures: s.failures.clone(),
                        },
                        output: out.stdout,
                    });
                    finished += 1;
                    None
                }
                Err(f) => {
                    lost[target] |= f.lost;
                    Some(f.cause)
                }
            };
            if let Some(cause) = failure {
                let s = &mut state[task];
                s.tried.push(target);
                s.failures.push(format!("on {name}: {cause}"));
                if s.attempts > self.retries {
                    return Err(JobError::Exhausted {
                        what: tasks[task].what.clone(),
                        attempts: s.attempts,
                        failures: s.failures.clone(),
                    });
                }
                retried += 1;
                pending.push_back(task);
            }
        }
        let _ = progress.try_send(JobProgress { phase, done: finished, running: 0, retried, total: total as u32 });
        Ok(done.into_iter().map(|d| d.expect("every task finished")).collect())
    }
}
