//! Inputs and outputs of the fleet tools (`--tools fleet`): fan-out with reduction, and
//! mapreduce. Answers are bounded: groups of identical results, and a capped list of failures.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::params::Encoding;

/// Group by status, exit code and `output` (default), or by `exit` alone.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GroupByName {
    #[default]
    Output,
    Exit,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetExecParams {
    /// Comma-separated: `all`, `tag:T`, `os:linux`, names or ranges (`web-[01-20]`), id
    /// prefixes, `local`, `ssh:HOST`, `ssh:all`.
    pub(crate) target: String,
    /// Program and arguments, run without a shell. Give `argv` or `shell`.
    #[serde(default)]
    pub(crate) argv: Option<Vec<String>>,
    /// Command line for `sh -c` (edit or bypass mode only).
    #[serde(default)]
    pub(crate) shell: Option<String>,
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Seconds per node (default 3600).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Nodes at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    /// Cap in bytes per output (default 16384).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_output_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) group_by: GroupByName,
    /// Regex masked before grouping, e.g. `\d+`.
    #[serde(default)]
    pub(crate) normalize: Option<String>,
    /// Failures listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
    // (As in `exec`; the tool's description says so, to keep the list small.)
    #[serde(default)]
    pub(crate) job_after_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetReadParams {
    pub(crate) target: String,
    pub(crate) path: String,
    /// Bytes per sample (default 16384); grouping uses the whole file.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_bytes: Option<u64>,
    /// Seconds per node (default 60).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Nodes at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    #[serde(default)]
    pub(crate) group_by: GroupByName,
    /// Regex masked before grouping.
    #[serde(default)]
    pub(crate) normalize: Option<String>,
    /// Failures listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetWriteParams {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) content: String,
    #[serde(default)]
    pub(crate) encoding: Encoding,
    /// Octal permissions, e.g. "0644".
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// Seconds per node (default 60).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Nodes at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    /// Failures listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MapreduceParams {
    /// Nodes that map (and reduce if `reducers` > 1), as for `fleet_exec`.
    pub(crate) target: String,
    /// Input text. Give `input` or `input_file`.
    #[serde(default)]
    pub(crate) input: Option<String>,
    /// Input file, `NODE:/path` or `/path` here.
    #[serde(default)]
    pub(crate) input_file: Option<String>,
    /// Shell command each part is piped through.
    pub(crate) map: String,
    /// Shell command the map output is piped through; with `reducers` > 1, per key (text
    /// before a tab).
    pub(crate) reduce: String,
    /// Parts (default: one per node).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub(crate) partitions: Option<u32>,
    /// Reducers (default 1: here).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub(crate) reducers: Option<u32>,
    /// Retries of a failed part elsewhere (default 2).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub(crate) retries: Option<u32>,
    /// Seconds per attempt (default 600).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Cap in bytes on the answer.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_output_bytes: Option<u64>,
}

// ---- outputs ----

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct GroupOut {
    pub(crate) count: u64,
    /// ok, failed, refused, timed_out or unreachable.
    pub(crate) status: String,
    pub(crate) exit_code: Option<i32>,
    /// One member's output (or file content), cut at a sample size.
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) error: Option<String>,
    /// The members, compacted: `web-[001-250], db-1`.
    pub(crate) members: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FailureOut {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
    /// The end of its stderr.
    pub(crate) stderr: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FleetOut {
    pub(crate) target: String,
    pub(crate) total: u64,
    /// Targets per status.
    pub(crate) by_status: BTreeMap<String, u64>,
    /// Identical results grouped, largest first.
    pub(crate) groups: Vec<GroupOut>,
    pub(crate) groups_omitted: u64,
    pub(crate) targets_omitted: u64,
    /// Failed targets, one by one (up to `max_failures`).
    pub(crate) failures: Vec<FailureOut>,
    pub(crate) failures_omitted: u64,
    pub(crate) duration_ms: u64,
}

/// `fleet_exec`'s answer: [`FleetOut`], and the fleet job following nodes still running.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct FleetExecOut {
    #[serde(flatten)]
    pub(crate) fleet: FleetOut,
    pub(crate) job: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RetriedOut {
    /// `partition` or `reducer`.
    pub(crate) kind: String,
    /// 1-based.
    pub(crate) number: u32,
    pub(crate) attempts: u32,
    /// Where it finally ran.
    pub(crate) target: String,
    pub(crate) failures: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct MapreduceOut {
    pub(crate) target: String,
    pub(crate) output: String,
    /// Bytes the reduce printed (more than returned when truncated).
    pub(crate) output_bytes: u64,
    pub(crate) truncated: bool,
    pub(crate) input_bytes: u64,
    pub(crate) partitions: u32,
    pub(crate) reducers: u32,
    /// Partitions and reducers that needed more than one attempt.
    pub(crate) retried: Vec<RetriedOut>,
    pub(crate) map_ms: u64,
    pub(crate) reduce_ms: u64,
}
