//! The tools this server offers: names, descriptions, schemas and annotations, grouped so a
//! client's tool list stays small (`--tools core,...`).

use std::sync::Arc;

use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::{Tool, ToolAnnotations};
use schemars::JsonSchema;

use crate::params::*;
use crate::params_fleet::*;

/// A set of tools that arrive together with one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolGroup {
    /// Peers, commands, files, info, modes and the audit log.
    Core,
    /// One operation on many nodes with grouped answers, and mapreduce.
    Fleet,
    /// The SSH hosts reachable through the mesh (`ssh:HOST` targets work in every tool).
    Ssh,
    /// Port forwards through peers and SSH hosts.
    Forward,
}

impl ToolGroup {
    const ALL: [ToolGroup; 4] = [ToolGroup::Core, ToolGroup::Fleet, ToolGroup::Ssh, ToolGroup::Forward];

    fn name(self) -> &'static str {
        match self {
            ToolGroup::Core => "core",
            ToolGroup::Fleet => "fleet",
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
    let annotations = ToolAnnotations::with_title(title)
        .read_only(hints.read_only)
        .destructive(hints.destructive)
        .idempotent(hints.idempotent)
        .open_world(hints.open_world);
    Tool::new(name, description, with_connect_timeout(schema_for_type::<P>()))
        .with_title(title)
        .with_raw_output_schema(schema_for_output::<O>())
        .with_annotations(annotations)
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
                "type": "number", "minimum": 0, "maximum": 3600,
                "description": "Seconds to wait for a target that cannot be reached now (relay down, peer away) \
                                before failing with the reason (default 15)."
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
                "Lists the nodes this machine can operate: itself (target `local`) and every peer in the room, \
                 with tags, OS, safety mode (what each lets you do), round-trip time and any link error. \
                 Plain SSH hosts behind them are listed by `ssh_hosts`. Changes nothing.",
                READS,
            ),
            tool::<ExecParams, ExecOut>(
                "exec",
                "Run a command",
                "Runs a command on a node and returns its exit code and output. `argv` runs a program directly \
                 (no shell); `shell` runs a command line with `sh -c`. The target node's policy decides: in `plan` \
                 mode only allow-listed read-only programs run (no shell), `edit` and `bypass` run anything but \
                 the hard deny list, `disabled` runs nothing. The command can change the target machine. It is \
                 killed with everything it started on timeout (default 120 s) or when the call is cancelled. \
                 stdout and stderr are each cut at `max_output_bytes` with `truncated: true` and the full byte \
                 counts. Every run and refusal is in the target's audit log.",
                Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
            ),
            tool::<ReadParams, ReadOut>(
                "read_file",
                "Read a file",
                "Reads a file on a node, from `offset`, at most `max_bytes` (more follows when `truncated` is \
                 true). Text comes back as UTF-8, anything else as base64. The path is checked by the target's \
                 policy on its canonical form (symlinks and `..` resolved); reads are allowed in every mode but \
                 `disabled`. Changes nothing.",
                READS,
            ),
            tool::<WriteParams, WriteOut>(
                "write_file",
                "Write a file",
                "Replaces (or creates) a file on a node with `content`, atomically: readers see the old file or \
                 the new one, never a mix. Needs the target in `edit` or `bypass` mode and the path allowed by its \
                 policy; in `edit` mode the replaced file is backed up first (`backup` in the result, restorable \
                 with `tunnel backups restore`). `create_only` refuses to replace an existing file.",
                Hints { read_only: false, destructive: true, idempotent: true, open_world: false },
            ),
            tool::<ListParams, ListOut>(
                "list_dir",
                "List a directory",
                "Lists a directory on a node: name, kind, size, permissions and modification time of each entry, \
                 at most `limit` (default 1000). Checked by the target's path policy. Changes nothing.",
                READS,
            ),
            tool::<TargetParams, InfoOut>(
                "get_info",
                "Describe a node",
                "Describes a node: hostname, OS, kernel, architecture, shell, uptime, tunnel version, safety mode \
                 and the policy rules in force there. Changes nothing.",
                READS,
            ),
            tool::<SetModeParams, SetModeOut>(
                "set_mode",
                "Change a node's safety mode",
                "Changes a node's safety mode: `disabled` (refuse everything), `plan` (read-only), `edit` \
                 (writes allowed, overwritten files backed up) or `bypass` (everything but the hard deny list). \
                 A peer accepts the change only from nodes in its `admins` list. This machine's own node can be \
                 made safer from here, but never less safe: raising it is for its operator (`tunnel mode local \
                 edit`). Audited on the target.",
                Hints { read_only: false, destructive: false, idempotent: true, open_world: false },
            ),
            tool::<AuditParams, AuditOut>(
                "audit_tail",
                "Read the audit log",
                "Returns the newest records of this machine's audit log: every operation its node executed or \
                 refused (who asked, what, the decision and the policy rule, exit codes, bytes), and membership \
                 events. The log is hash-chained; `tunnel audit verify` checks it. Changes nothing.",
                READS,
            ),
        ]);
    }
    if groups.contains(&ToolGroup::Fleet) {
        out.extend(fleet_tools());
    }
    if groups.contains(&ToolGroup::Ssh) {
        out.push(tool::<NoParams, crate::ops_ssh::SshHostsOut>(
            "ssh_hosts",
            "List SSH hosts",
            "Lists the plain SSH hosts (machines that run nothing of ours) the nodes reach from their \
             inventories: the target to use (`ssh:NAME`), tags, and the node that reaches each. Every tool \
             that takes a target accepts them: `exec`, `read_file` and `write_file` with `ssh:NAME`, the fleet \
             tools and mapreduce with `ssh:NAME`, `ssh:tag:T` or `ssh:all`, mixed with nodes. The reaching \
             node's policy governs them (plan: read-only argv commands and reads only) and audits every \
             operation; keys never leave it. Changes nothing.",
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
            "Makes a TCP service on another network reachable, or exposes one from here, without opening any              inbound port: `local` listens on this machine and connects each client to `to` from `target`'s              network (its LAN included; `target` may be `ssh:HOST`, then the SSH host connects); `remote`              listens on the peer `target` and connects each client to `to` from this machine; `socks` is a              SOCKS5 proxy here whose connections leave from `target` (names resolve there). Listen port 0              picks a free port; the answer says which. The forward runs in the node until `tunnel_close`. The              exit node's policy decides every connection (edit or bypass mode, or its forward_allow list) and              audits it; a destination it refuses is reported now.",
            Hints { read_only: false, destructive: false, idempotent: false, open_world: true },
        ),
        tool::<NoParams, ForwardsOut>(
            "tunnel_list",
            "List port forwards",
            "Lists this node's port forwards: id, kind, where each listens and where it goes, its state              (`listening`, or `waiting for PEER: why` while a peer is away), active and total connections, bytes              each way and errors with the last one. Changes nothing.",
            READS,
        ),
        tool::<CloseParams, ForwardOut>(
            "tunnel_close",
            "Close a port forward",
            "Closes a forward by id: its listening port is freed at once and its open connections end.              Answers with the forward's final figures.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: false },
        ),
    ]
}

fn fleet_tools() -> [Tool; 4] {
    [
        tool::<FleetExecParams, FleetOut>(
            "fleet_exec",
            "Run a command on many nodes",
            "Runs one command on every node `target` selects (`all`, `tag:web`, `os:linux`, `web-[01-20]`, \
             names and id prefixes joined by commas) and answers with the results grouped: nodes with \
             identical status, exit code and output form one group with a count, a sample output and a \
             compact member list, largest first, so thousands of nodes fit in a short answer. Nodes that \
             fail, refuse (their policy decides, as for `exec`), time out or cannot be reached are counted and \
             listed in `failures`, never dropped. `group_by: exit` ignores output; `normalize` (a regex) masks \
             what differs harmlessly. Progress is reported per finished node; cancelling kills what still runs.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ),
        tool::<FleetReadParams, FleetOut>(
            "fleet_read",
            "Read a file on many nodes",
            "Reads the same file on every selected node and groups the nodes by its content (whole-file \
             SHA-256), answering with a sample of each distinct version and who has it. Good for spotting \
             configuration drift. Each node's path policy applies. Changes nothing.",
            READS,
        ),
        tool::<FleetWriteParams, FleetOut>(
            "fleet_write",
            "Write a file on many nodes",
            "Writes the same content to a path on every selected node, atomically on each. Needs the nodes in \
             `edit` or `bypass` mode; in `edit` mode a replaced file is backed up first. Answers with the nodes \
             grouped by outcome and the failures listed.",
            Hints { read_only: false, destructive: true, idempotent: true, open_world: false },
        ),
        tool::<MapreduceParams, MapreduceOut>(
            "mapreduce",
            "Map and reduce across nodes",
            "Splits the input on line boundaries into partitions, pipes each through the `map` shell command \
             on the selected nodes (a failed or lost partition is retried on another node up to `retries` \
             times), then pipes the map output through `reduce`: on this machine over everything in partition \
             order (reducers = 1), or split by the key before a tab among `reducers` nodes. Deterministic \
             commands give the same answer every run. Needs shell rights (edit or bypass) where commands run; \
             the error names the partition and why when retries run out.",
            Hints { read_only: false, destructive: true, idempotent: false, open_world: true },
        ),
    ]
}
