//! The tools this server offers: names, descriptions, schemas and annotations, grouped so a
//! client's tool list stays small (`--tools core,...`).

use std::sync::Arc;

use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;

use crate::params::*;
use crate::params_fleet::*;
use crate::schema::{compact, Side};

/// A set of tools that arrive together with one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolGroup {
    /// Peers, commands, files, info, modes and the audit log.
    Core,
    /// Commands left running as jobs (an `exec` past its `job_after_secs`).
    Jobs,
    /// One operation on many nodes with grouped answers.
    Fleet,
    /// Mapreduce over many nodes (not offered by default: few agents need it).
    Mapreduce,
    /// Commands nodes run on a cron schedule (not offered by default).
    Schedules,
    /// git in repositories on nodes and SSH hosts (not offered by default).
    Git,
    /// Prompts handed to the AI agent a node is configured with (not offered by default).
    Tasks,
    /// The SSH hosts reachable through the mesh (`ssh:HOST` targets work in every tool).
    Ssh,
    /// Port forwards through peers and SSH hosts.
    Forward,
}

/// The groups `tunnel mcp` offers unless told otherwise.
pub const DEFAULT_TOOLS: &str = "core,jobs,fleet,ssh,forward";

impl ToolGroup {
    const ALL: [ToolGroup; 9] = [
        ToolGroup::Core,
        ToolGroup::Jobs,
        ToolGroup::Fleet,
        ToolGroup::Mapreduce,
        ToolGroup::Schedules,
        ToolGroup::Git,
        ToolGroup::Tasks,
        ToolGroup::Ssh,
        ToolGroup::Forward,
    ];

    fn name(self) -> &'static str {
        match self {
            ToolGroup::Core => "core",
            ToolGroup::Jobs => "jobs",
            ToolGroup::Fleet => "fleet",
            ToolGroup::Mapreduce => "mapreduce",
            ToolGroup::Schedules => "schedules",
            ToolGroup::Git => "git",
            ToolGroup::Tasks => "tasks",
            ToolGroup::Ssh => "ssh",
            ToolGroup::Forward => "forward",
        }
    }

    /// `core,fleet,...` or `all`. Unknown names are an error that lists the known ones.
    pub fn parse_list(list: &str) -> Result<Vec<ToolGroup>, String> {
        let mut groups = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                return Ok(Self::ALL.to_vec());
            }
            match Self::ALL.iter().find(|g| g.name() == name) {
                Some(g) if !groups.contains(g) => groups.push(*g),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = Self::ALL.iter().map(|g| g.name()).collect();
                    return Err(format!("unknown tool group {name:?}; this version has: {}, or all", known.join(", ")));
                }
            }
        }
        if groups.is_empty() {
            return Err("--tools names no tool group".into());
        }
        Ok(groups)
    }
}

/// Annotations are hints for clients; they are set to what each tool really does.
struct Hints {
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    open_world: bool,
}

const READS: Hints = Hints { read_only: true, destructive: false, idempotent: true, open_world: false };

fn tool<P: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &'static str,
    hints: Hints,
) -> Tool {
    let output = compact((*schema_for_output::<O>()).clone(), Side::Output);
    confirming::<P>(name, title, description, hints).with_raw_output_schema(Arc::new(output))
}

/// A tool whose answer only confirms what was asked (the text says it all), so it advertises
/// no outputSchema; its structured content is there all the same.
fn confirming<P: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &'static str,
    hints: Hints,
) -> Tool {
    let input = compact((*with_connect_timeout(schema_for_type::<P>())).clone(), Side::Input);
    Tool::new(name, description, Arc::new(input)).with_title(title).with_annotations(annotations(&hints))
}

/// The hints that differ from the spec's defaults (not read-only, destructive, not
/// idempotent, open world); the title is the tool's own, not repeated here.
fn annotations(hints: &Hints) -> ToolAnnotations {
    let mut a = ToolAnnotations::new();
    if hints.read_only {
        a = a.read_only(true);
    } else {
        if !hints.destructive {
            a = a.destructive(false);
        }
        if hints.idempotent {
            a = a.idempotent(true);
        }
    }
    if !hints.open_world {
        a = a.open_world(false);
    }
    a
}

/// The argument every tool that reaches a target takes, handled in one place
/// (`server::take_connect_timeout`) rather than by each tool.
pub(crate) const CONNECT_TIMEOUT_ARG: &str = "connect_timeout_secs";

/// `schema` plus [`CONNECT_TIMEOUT_ARG`] when the tool takes a `target`.
fn with_connect_timeout(schema: Arc<rmcp::model::JsonObject>) -> Arc<rmcp::model::JsonObject> {
    let mut schema = (*schema).clone();
    let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else { return Arc::new(schema) };
    if props.contains_key("target") {
        props.insert(
            CONNECT_TIMEOUT_ARG.into(),
            serde_json::json!({
                "type": "number",
                "description": "Seconds to wait for an unreachable node (default 15)."
            }),
        );
    }
    Arc::new(schema)
}

/// Every tool of the chosen groups, in a stable order.
pub(crate) fn tools(groups: &[ToolGroup]) -> Vec<Arc<Tool>> {
    let mut out = Vec::new();
    if groups.contains(&ToolGroup::Core) {
        out.extend([
            tool::<NoParams, PeersOut>(
                "peers",
                "List nodes",
                "Lists this machine (`local`) and the peers in the room: tags, OS, safety mode, round-trip time. Start here.",
                READS,
            ),
            tool::<ExecParams, ExecOut>(
                "exec",
                "Run a command",
                "Runs a command on a node; returns exit code, stdout and stderr (if it outlasts `job_after_secs`: the output so far and a `job` id). The node's safety mode decides (plan: read-only argv only).",
                Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
            ),
            tool::<ReadParams, ReadOut>(
                "read_file",
                "Read a file",
                "Reads a file on a node: text, or base64 for binary; `truncated` means more follows `offset`.",
                READS,
            ),
            confirming::<WriteParams>(
                "write_file",
                "Write a file",
                "Replaces or creates a file on a node, atomically. Needs edit or bypass mode; edit keeps a backup of the old file.",
                Hints { read_only: false, destructive: true, idempotent: true, open_world: false },
            ),
            tool::<ListParams, ListOut>(
                "list_dir",
                "List a directory",
                "Lists a directory on a node: name, kind, size, mode and mtime of each entry.",
                READS,
            ),
            tool::<TargetParams, InfoOut>(
                "get_info",
                "Describe a node",
                "Describes a node: host, OS, kernel, uptime, version, safety mode and policy rules.",
                READS,
            ),
            confirming::<SetModeParams>(
                "set_mode",
                "Change a node's safety mode",
                "Sets a node's safety mode. A peer obeys only its admins; this machine's node can only be made safer here.",
                Hints { read_only: false, destructive: false, idempotent: true, open_world: false },
            ),
            tool::<AuditParams, AuditOut>(
                "audit_tail",
                "Read the audit log",
                "Newest audit records of a node: each operation run or refused, who asked, and the rule.",
                READS,
            ),
        ]);
    }
    if groups.contains(&ToolGroup::Jobs) {
        out.extend(job_tools());
    }
    if groups.contains(&ToolGroup::Fleet) {
        out.extend(fleet_tools());
    }
    if groups.contains(&ToolGroup::Mapreduce) {
        out.push(tool::<MapreduceParams, MapreduceOut>(
            "mapreduce",
            "Map and reduce across nodes",
            "Splits `input` by lines, pipes parts through `map` on the nodes (failures retried elsewhere), then all output through `reduce`.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ));
    }
    if groups.contains(&ToolGroup::Schedules) {
        out.push(tool::<crate::params_jobs::ScheduleParams, crate::params_jobs::SchedulesOut>(
            "schedules",
            "Schedule commands",
            "Commands nodes run on cron schedules: add, list, rm, run_now, or runs (each run is a job).",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ));
    }
    if groups.contains(&ToolGroup::Git) {
        out.push(tool::<crate::ops_git::GitParams, crate::ops_git::GitOut>(
            "git",
            "Run git",
            "Runs git in a repository on a node; status and log come back structured.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ));
    }
    if groups.contains(&ToolGroup::Tasks) {
        out.push(tool::<crate::params_jobs::TaskParams, crate::params_jobs::JobOut>(
            "task",
            "Delegate a task",
            "Hands a prompt to a node's configured AI agent, run as a job.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ));
    }
    if groups.contains(&ToolGroup::Ssh) {
        out.push(tool::<NoParams, crate::ops_ssh::SshHostsOut>(
            "ssh_hosts",
            "List SSH hosts",
            "Lists SSH hosts the nodes reach, with tags and the node that reaches each. Target them as `ssh:NAME` in any tool.",
            READS,
        ));
    }
    if groups.contains(&ToolGroup::Forward) {
        out.extend(forward_tools());
    }
    out.into_iter().map(Arc::new).collect()
}

fn forward_tools() -> [Tool; 3] {
    use crate::ops_forward::{CloseParams, ForwardOut, ForwardsOut, OpenParams};
    [
        tool::<OpenParams, ForwardOut>(
            "tunnel_open",
            "Open a port forward",
            "Opens a TCP port forward through a peer or SSH host (no inbound port needed) until `tunnel_close`.",
            Hints { read_only: false, destructive: false, idempotent: false, open_world: true },
        ),
        tool::<NoParams, ForwardsOut>(
            "tunnel_list",
            "List port forwards",
            "Lists this node's port forwards: state, connections, bytes, errors.",
            READS,
        ),
        confirming::<CloseParams>(
            "tunnel_close",
            "Close a port forward",
            "Closes a port forward by id; answers with its final figures.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: false },
        ),
    ]
}

fn job_tools() -> [Tool; 5] {
    use crate::params_jobs::*;
    [
        tool::<JobsParams, JobsOut>("jobs", "List jobs", "Lists the jobs (commands left running) on nodes.", READS),
        tool::<JobParams, JobOut>("job_status", "Show a job", "Shows a job's state, exit code and output size.", READS),
        tool::<JobOutputParams, JobOutputOut>(
            "job_output",
            "Read a job's output",
            "Reads a job's output (stdout and stderr as written) from `offset`, or its `tail`.",
            READS,
        ),
        tool::<JobWaitParams, JobOut>(
            "job_wait",
            "Wait for a job",
            "Waits for a job to end, with progress, up to `timeout_secs`.",
            READS,
        ),
        confirming::<JobParams>(
            "job_cancel",
            "Stop a job",
            "Stops a job and every process it started.",
            Hints { read_only: false, destructive: true, idempotent: true, open_world: false },
        ),
    ]
}

fn fleet_tools() -> [Tool; 3] {
    [
        tool::<FleetExecParams, FleetExecOut>(
            "fleet_exec",
            "Run a command on many nodes",
            "Runs one command on many nodes; identical results grouped, failures counted; slow ones go on as a job, as in exec.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ),
        tool::<FleetReadParams, FleetOut>(
            "fleet_read",
            "Read a file on many nodes",
            "Reads one file on many nodes, grouped by content: spots configuration drift.",
            READS,
        ),
        tool::<FleetWriteParams, FleetOut>(
            "fleet_write",
            "Write a file on many nodes",
            "Writes one file on many nodes, atomically on each (edit or bypass mode); answers grouped by outcome.",
            Hints { read_only: false, destructive: true, idempotent: true, open_world: false },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(v: &impl serde::Serialize) -> usize {
        serde_json::to_vec(v).expect("encodes").len()
    }

    /// What a client receives (the `tools` array) and what a model is shown (name,
    /// description, inputSchema), printed per tool so a change can see where the bytes went.
    fn measure(list: &str) -> (usize, usize) {
        let tools = tools(&ToolGroup::parse_list(list).expect("groups"));
        let shown_of = |t: &Tool| size(&t.name) + size(&t.description) + size(&t.input_schema);
        println!("--tools {list}:");
        for t in &tools {
            let output = t.output_schema.as_ref().map_or(0, size);
            println!("  {:<14} {:>5} bytes, shown {:>5}, outputSchema {:>5}", t.name, size(&**t), shown_of(t), output);
        }
        let (whole, shown) = (size(&tools), tools.iter().map(|t| shown_of(t)).sum());
        println!("  {} tools: {whole} bytes, shown to a model {shown}", tools.len());
        (whole, shown)
    }

    /// An agent pays for the tool list in every session. The default groups are held to
    /// 20 KB (10 KB shown to a model); `all` (every group: mapreduce, schedules, git, tasks too) to
    /// 26 KB (13 KB).
    #[test]
    fn tool_lists_fit_their_budgets() {
        for (list, whole_max, shown_max) in [(DEFAULT_TOOLS, 20 * 1024, 10 * 1024), ("all", 26 * 1024, 13 * 1024)] {
            let (whole, shown) = measure(list);
            assert!(whole <= whole_max, "--tools {list}: the tools array is {whole} bytes, over {whole_max}");
            assert!(
                shown <= shown_max,
                "--tools {list}: name+description+inputSchema is {shown} bytes, over {shown_max}"
            );
        }
    }

    /// Compaction keeps what a call needs: every tool's required arguments are properties.
    #[test]
    fn compacted_schemas_still_describe_every_argument() {
        for t in tools(&ToolGroup::ALL) {
            let props = t.input_schema.get("properties").and_then(|p| p.as_object());
            for r in t.input_schema.get("required").and_then(|r| r.as_array()).into_iter().flatten() {
                let known = props.is_some_and(|p| p.contains_key(r.as_str().expect("a name")));
                assert!(known, "{}: required {r} is no property", t.name);
            }
            assert_eq!(t.input_schema.get("type").and_then(|v| v.as_str()), Some("object"), "{}", t.name);
            if let Some(out) = &t.output_schema {
                assert_eq!(out.get("type").and_then(|v| v.as_str()), Some("object"), "{}", t.name);
            }
        }
    }
}
