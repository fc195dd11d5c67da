//! Jobs: commands that outlive the call that started them. A job lives on the node that runs
//! it; callers start one by opening a [`crate::message::StreamKind::Job`] stream (an exec that
//! turns into a job after [`JobStart::after_ms`]) and follow it with the job operations of
//! [`crate::message::Op`].
//!
//! A job is named `SEQ@NODE`: its number on the node that runs it, and that node (its id, or
//! a name that resolves to it). [`JobRef`] parses and prints that form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::ByteBuf;
use crate::NodeId;

/// How an exec stream becomes a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStart {
    /// Milliseconds the command runs as a plain exec before it is detached as a job (the
    /// caller then gets [`crate::message::ExecEvent::Detached`]); 0 detaches at once. A
    /// command that ends sooner is an ordinary exec and leaves no job behind.
    pub after_ms: u64,
    /// What the caller called the target (`web-1`, `ssh:db`), for listings.
    pub label: String,
}

/// A delegated task: the AI agent the receiving node is configured with, run as a job with
/// this prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub request_id: u64,
    pub prompt: String,
    /// Where the agent works; default the node's working directory.
    pub cwd: Option<String>,
    pub label: String,
}

/// A job's state. `Lost`: the node stopped while the job ran; its process is gone and its
/// end is unknown. Never reported as `Running` after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Exited,
    TimedOut,
    Cancelled,
    Failed,
    Lost,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }

    pub fn is_running(self) -> bool {
        self == Self::Running
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node tells about one of its jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u64,
    /// The node that runs the job.
    pub node: NodeId,
    /// The node that started it.
    pub caller: NodeId,
    /// The target as the caller named it.
    pub label: String,
    /// The command, secrets redacted, for display.
    pub command: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the job failed or was lost, when it did.
    pub reason: Option<String>,
    /// Output bytes the command wrote (stdout and stderr together, as they came).
    pub output_bytes: u64,
    /// Output before this offset is no longer kept (over the node's per-job cap, the oldest
    /// output goes first).
    pub kept_from: u64,
    /// Output bytes a job keeps at most.
    pub output_cap: u64,
}

impl JobInfo {
    pub fn reference(&self) -> JobRef {
        JobRef { seq: self.id, node: self.node.short() }
    }
}

/// Where a `JobOutput` read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputFrom {
    /// At this offset into everything the job wrote.
    Offset(u64),
    /// This many bytes before the end of what it wrote so far.
    Tail(u64),
}

/// A slice of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    pub job: JobInfo,
    /// The offset of `data`'s first byte.
    pub offset: u64,
    pub data: ByteBuf,
}

impl JobOutput {
    /// Where the next read continues.
    pub fn next_offset(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// `SEQ@NODE`: a job, and the node that runs it (a node id prefix or a peer name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobRef {
    pub seq: u64,
    pub node: String,
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.seq, self.node)
    }
}

impl FromStr for JobRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a job id: expected NUMBER@NODE, as `tunnel exec --detach` prints");
        let (seq, node) = s.split_once('@').ok_or_else(bad)?;
        let seq = seq.parse().map_err(|_| bad())?;
        if node.is_empty() || node.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Self { seq, node: node.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs_round_trip_and_bad_ones_say_what_is_expected() {
        let r: JobRef = "12@zs25oojy".parse().unwrap();
        assert_eq!(r, JobRef { seq: 12, node: "zs25oojy".into() });
        assert_eq!(r.to_string(), "12@zs25oojy");
        for bad in ["12", "@web", "x@web", "12@", "12@a b", "-1@web"] {
            let e = bad.parse::<JobRef>().unwrap_err();
            assert!(e.contains("NUMBER@NODE"), "{bad}: {e}");
        }
    }
}
