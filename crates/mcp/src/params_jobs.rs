//! Arguments and answers of the job tools.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tunnel_proto::job::JobInfo;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsParams {
    /// Whose jobs: a node or a target expression (default `all`).
    #[serde(default)]
    pub(crate) target: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobParams {
    /// Job id (`SEQ@NODE`).
    pub(crate) job: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobOutputParams {
    pub(crate) job: String,
    /// Byte offset to read from (a previous answer's `next_offset`); default 0.
    #[serde(default)]
    pub(crate) offset: Option<u64>,
    /// Read the last this many bytes instead.
    #[serde(default)]
    pub(crate) tail: Option<u64>,
    #[serde(default)]
    pub(crate) max_bytes: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobWaitParams {
    pub(crate) job: String,
    /// Most seconds to wait (default 45).
    #[serde(default)]
    pub(crate) timeout_secs: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobOut {
    pub(crate) job: String,
    pub(crate) target: String,
    pub(crate) command: String,
    /// running, exited, timed_out, cancelled, failed, or lost (the node stopped meanwhile).
    pub(crate) state: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) reason: Option<String>,
    pub(crate) started_ms: i64,
    pub(crate) ended_ms: Option<i64>,
    pub(crate) output_bytes: u64,
}

impl From<&JobInfo> for JobOut {
    fn from(j: &JobInfo) -> Self {
        Self {
            job: j.reference().to_string(),
            target: j.label.clone(),
            command: j.command.clone(),
            state: j.state.as_str().to_owned(),
            exit_code: j.exit_code,
            signal: j.signal,
            reason: j.reason.clone(),
            started_ms: j.started_ms,
            ended_ms: j.ended_ms,
            output_bytes: j.output_bytes,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobsOut {
    pub(crate) jobs: Vec<JobOut>,
    /// Nodes that did not answer, and why.
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct JobOutputOut {
    pub(crate) job: JobOut,
    pub(crate) offset: u64,
    pub(crate) next_offset: u64,
    pub(crate) output: String,
    /// More output is kept past `next_offset`.
    pub(crate) more: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ScheduleAction {
    Add,
    List,
    Rm,
    Runs,
    RunNow,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleParams {
    pub(crate) action: ScheduleAction,
    /// add: the node to run it; list: whose (default all).
    #[serde(default)]
    pub(crate) target: Option<String>,
    /// `NAME@NODE` (add: just a name, optional).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// add: cron, 5 fields or 6 with seconds first.
    #[serde(default)]
    pub(crate) cron: Option<String>,
    #[serde(default)]
    pub(crate) argv: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) shell: Option<String>,
    /// add: IANA time zone (default the node's).
    #[serde(default)]
    pub(crate) timezone: Option<String>,
    /// add: run once after missed times (default: skip).
    #[serde(default)]
    pub(crate) catch_up: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ScheduleOut {
    pub(crate) schedule: String,
    pub(crate) cron: String,
    pub(crate) timezone: Option<String>,
    pub(crate) command: String,
    pub(crate) next_ms: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ScheduleRunOut {
    pub(crate) at_ms: i64,
    pub(crate) job: Option<JobOut>,
    pub(crate) error: Option<String>,
    pub(crate) missed: u32,
    pub(crate) tail: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SchedulesOut {
    pub(crate) schedules: Vec<ScheduleOut>,
    pub(crate) runs: Vec<ScheduleRunOut>,
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskParams {
    pub(crate) target: String,
    pub(crate) prompt: String,
    #[serde(default)]
    pub(crate) cwd: Option<String>,
}
