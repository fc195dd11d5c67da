//! Schedules: a command a node runs by itself at times a cron expression names, each run a
//! job under the node's policy at that moment. A schedule lives on the node that runs it and
//! is named `NAME@NODE`, like a job.

use serde::{Deserialize, Serialize};

use crate::job::JobInfo;
use crate::message::{ByteBuf, ExecCommand};
use crate::NodeId;

/// What a caller asks a node to run, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Letters, digits, `-`, `_` and `.`; unique on the node.
    pub name: String,
    pub command: ExecCommand,
    pub cwd: Option<String>,
    /// Five fields (minute hour day month weekday), or six with seconds first.
    pub cron: String,
    /// An IANA zone (`Europe/Berlin`) the cron times are in; `None`: the node's own zone.
    pub timezone: Option<String>,
    /// After the node was down through run times: run once when it is back (`true`), or
    /// skip them (`false`). Either way the missed runs are reported.
    pub catch_up: bool,
    /// Each run is killed after this long.
    pub timeout_ms: Option<u64>,
}

/// A schedule as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub spec: ScheduleSpec,
    pub node: NodeId,
    pub created_by: NodeId,
    pub created_ms: i64,
    /// When it runs next; `None` when the expression never matches again.
    pub next_ms: Option<i64>,
    pub last: Option<ScheduleRun>,
}

/// One time a schedule came due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub at_ms: i64,
    /// The job the run started (its state as of the answer).
    pub job: Option<JobInfo>,
    /// Why nothing ran: refused by the policy of the moment, failed to start, or skipped.
    pub error: Option<String>,
    /// Run times that passed while the node was down, before this one.
    pub missed: u32,
    /// The end of the run's output.
    pub tail: ByteBuf,
}
