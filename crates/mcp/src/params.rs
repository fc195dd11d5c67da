//! The tools' typed inputs and outputs. Their JSON Schemas (inputSchema, outputSchema) are
//! generated from these types, so what is advertised is what is parsed and produced.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TargetParams {
    pub(crate) target: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecParams {
    /// Node name, id prefix, `local`, or `ssh:HOST`.
    pub(crate) target: String,
    /// Program and arguments, run without a shell. Give `argv` or `shell`.
    #[serde(default)]
    pub(crate) argv: Option<Vec<String>>,
    /// Command line for `sh -c` (edit or bypass mode only).
    #[serde(default)]
    pub(crate) shell: Option<String>,
    #[serde(default)]
    pub(crate) stdin: Option<String>,
    #[serde(default)]
    pub(crate) cwd: Option<String>,
    #[serde(default)]
    pub(crate) env: Option<BTreeMap<String, String>>,
    /// Seconds before it is killed, with its children (default 3600).
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 86400))]
    pub(crate) timeout_secs: Option<f64>,
    /// Cap in bytes on stdout and on stderr.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub(crate) max_output_bytes: Option<u64>,
    /// Seconds until a command still running goes on as a job (default 25).
    #[serde(default)]
    pub(crate) job_after_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    pub(crate) target: String,
    pub(crate) path: String,
    /// First byte to read.
    #[serde(default)]
    pub(crate) offset: Option<u64>,
    /// Most bytes returned.
    #[serde(default)]
    pub(crate) max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteParams {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) content: String,
    #[serde(default)]
    pub(crate) encoding: Encoding,
    /// Octal permissions, e.g. "0644" (default: unchanged).
    #[serde(default)]
    pub(crate) mode: Option<String>,
    /// Fail if the file exists.
    #[serde(default)]
    pub(crate) create_only: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    pub(crate) target: String,
    pub(crate) path: String,
    /// Most entries (default 1000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 10000))]
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModeName {
    /// refuse all
    Disabled,
    /// read-only
    Plan,
    /// writes, with backups
    Edit,
    /// all but the deny list
    Bypass,
}

impl ModeName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ModeName::Disabled => "disabled",
            ModeName::Plan => "plan",
            ModeName::Edit => "edit",
            ModeName::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetModeParams {
    pub(crate) target: String,
    pub(crate) mode: ModeName,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Whose log (default `local`); a peer answers its admins and allow list only.
    #[serde(default)]
    pub(crate) target: Option<String>,
    /// Newest records to return (default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub(crate) limit: Option<u32>,
    /// Only events starting with this, e.g. `exec`.
    #[serde(default)]
    pub(crate) event_prefix: Option<String>,
}

// ---- outputs ----

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct NodeRef {
    pub(crate) name: String,
    pub(crate) id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PeerOut {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) tags: Vec<String>,
    /// OS family, distribution, kernel and architecture.
    pub(crate) os: String,
    /// The peer's safety mode: what it lets others do there.
    pub(crate) mode: String,
    pub(crate) version: String,
    /// Round trip of the last ping in milliseconds, if one was measured.
    pub(crate) rtt_ms: Option<f64>,
    /// Why the last attempt to reach it failed, if it did.
    pub(crate) error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PeersOut {
    /// This machine's node; target it as `local`.
    pub(crate) this_node: NodeRef,
    /// False when no relay is configured: only `local` can be targeted.
    pub(crate) connected: bool,
    pub(crate) peers: Vec<PeerOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ExecOut {
    pub(crate) target: String,
    /// The exit code, absent when the command was killed by a signal.
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    /// The timeout killed the command and everything it started.
    pub(crate) timed_out: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Bytes the command wrote to stdout (more than returned when truncated).
    pub(crate) stdout_bytes: u64,
    pub(crate) stderr_bytes: u64,
    /// Some output was cut at the cap; the byte counts say how much there was.
    pub(crate) truncated: bool,
    pub(crate) duration_ms: u64,
    /// Set when the command still runs, as this job: follow it with the job tools.
    pub(crate) job: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReadOut {
    pub(crate) target: String,
    pub(crate) path: String,
    /// The file's size in bytes.
    pub(crate) size: u64,
    pub(crate) offset: u64,
    pub(crate) bytes_returned: u64,
    /// More of the file follows what was returned; read on with `offset`.
    pub(crate) truncated: bool,
    pub(crate) encoding: Encoding,
    pub(crate) content: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WriteOut {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    /// Where the node saved the file this write replaced (edit mode), if it existed.
    pub(crate) backup: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct EntryOut {
    pub(crate) name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub(crate) kind: String,
    pub(crate) size: u64,
    /// Permission bits in octal, such as "0644".
    pub(crate) mode: String,
    pub(crate) mtime_ms: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ListOut {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) entries: Vec<EntryOut>,
    /// The directory has more entries than returned.
    pub(crate) truncated: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct InfoOut {
    pub(crate) target: String,
    pub(crate) hostname: String,
    pub(crate) os_family: String,
    pub(crate) distro: String,
    pub(crate) kernel: String,
    pub(crate) arch: String,
    pub(crate) shell: String,
    pub(crate) uptime_secs: u64,
    pub(crate) version: String,
    pub(crate) mode: String,
    /// The policy rules in force, one line each.
    pub(crate) policy: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SetModeOut {
    pub(crate) target: String,
    pub(crate) mode: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AuditRecordOut {
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    pub(crate) event: String,
    /// `allowed`, `refused`, `ok`, `failed` or `info`.
    pub(crate) decision: String,
    /// Name of the node that asked, if a peer did.
    pub(crate) caller: Option<String>,
    /// The policy rule behind a refusal.
    pub(crate) rule: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) bytes: Option<u64>,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) detail: serde_json::Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AuditOut {
    /// Whose log: `local` or the peer asked.
    pub(crate) target: String,
    pub(crate) records: Vec<AuditRecordOut>,
    /// Older matching records were left out to keep the answer small.
    pub(crate) truncated: bool,
}
