//! Inputs and outputs of the fleet tools (`--tools fleet`): fan-out with reduction, and
//! mapreduce. Answers are bounded: groups of identical results, and a capped list of failures.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::params::Encoding;

/// How a fleet answer groups targets.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GroupByName {
    /// Same status, exit code and output.
    #[default]
    Output,
    /// Same status and exit code; output ignored.
    Exit,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetExecParams {
    /// Which nodes: `all`, `tag:T`, `os:FAMILY` (linux, macos, ubuntu, ...), names (also ranges
    /// like `web-[01-20]`), node id prefixes or `local`, joined by commas.
    pub(crate) target: String,
    /// The program and its arguments, run directly (no shell). Give exactly one of `argv` and `shell`.
    #[serde(default)]
    pub(crate) argv: Option<Vec<String>>,
    /// A shell command line, run with `sh -c` (only nodes in `edit` or `bypass` mode run it).
    #[serde(default)]
    pub(crate) shell: Option<String>,
    /// Working directory on each target.
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Seconds per target before it counts as timed out and its command is killed (default 60).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Targets worked on at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    /// Bytes of stdout and of stderr kept per target (default 16384).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_output_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) group_by: GroupByName,
    /// A regex whose matches are replaced with `*` before grouping (e.g. `\d+` to ignore numbers).
    #[serde(default)]
    pub(crate) normalize: Option<String>,
    /// Most failed targets listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetReadParams {
    /// Which nodes (see `fleet_exec`).
    pub(crate) target: String,
    /// Absolute path of the file on each target.
    pub(crate) path: String,
    /// Bytes of content returned per group sample (default 16384); files are grouped by
    /// their full SHA-256 either way.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_bytes: Option<u64>,
    /// Seconds per target (default 60).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Targets worked on at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    #[serde(default)]
    pub(crate) group_by: GroupByName,
    /// A regex whose matches are replaced with `*` before grouping.
    #[serde(default)]
    pub(crate) normalize: Option<String>,
    /// Most failed targets listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetWriteParams {
    /// Which nodes (see `fleet_exec`).
    pub(crate) target: String,
    /// Absolute path to write on each target.
    pub(crate) path: String,
    /// The whole new content of the file.
    pub(crate) content: String,
    /// How `content` is encoded (default `utf8`).
    #[serde(default)]
    pub(crate) encoding: Encoding,
    /// Permission bits as an octal string such as "0644".
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// Seconds per target (default 60).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Targets worked on at once (default 64).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4096))]
    pub(crate) concurrency: Option<u32>,
    /// Most failed targets listed one by one (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub(crate) max_failures: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MapreduceParams {
    /// Which nodes run the map (and the reducers when `reducers` > 1); see `fleet_exec`.
    pub(crate) target: String,
    /// The input text. Give exactly one of `input` and `input_file`.
    #[serde(default)]
    pub(crate) input: Option<String>,
    /// The input as a file on a node, `NODE:/path` (or `/path` on this machine), read
    /// through that node's policy.
    #[serde(default)]
    pub(crate) input_file: Option<String>,
    /// Shell command each partition of the input is piped through.
    pub(crate) map: String,
    /// Shell command the map output is piped through. With `reducers` = 1 it runs on this
    /// machine over all map output in partition order; with more, map output lines
    /// `key<TAB>value` are split by key among that many reducers on the targets.
    pub(crate) reduce: String,
    /// Partitions of the input, split on line boundaries (default: one per target).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub(crate) partitions: Option<u32>,
    /// Reducers (default 1).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub(crate) reducers: Option<u32>,
    /// Further attempts a failed partition gets, each on another target (default 2).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub(crate) retries: Option<u32>,
    /// Seconds one map or reduce attempt may take (default 600).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Bytes of the answer returned (default: the server's `--max-output`).
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
    /// Identical results grouped, largest group first.
    pub(crate) groups: Vec<GroupOut>,
    pub(crate) groups_omitted: u64,
    pub(crate) targets_omitted: u64,
    /// Targets that did not succeed, one by one (up to `max_failures`).
    pub(crate) failures: Vec<FailureOut>,
    pub(crate) failures_omitted: u64,
    pub(crate) duration_ms: u64,
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
