//! Raw command-line flags (step one: no I/O). `tunnel_node::Settings::resolve` does step two.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tunnel_node::Flags;

pub(crate) use crate::args_work::{GitArgs, JobsArgs, JobsCommand, ScheduleCommand, TaskArgs};

#[derive(Parser)]
#[command(name = "tunnel", version, about = "End-to-end encrypted peer mesh for operating fleets of machines")]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct Global {
    /// Config file (default: $TUNNEL_CONFIG, else ~/.config/tunnel/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Where the node keeps its key and state (default: $TUNNEL_STATE_DIR, else ~/.local/share/tunnel).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Where the control socket lives (default: $TUNNEL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tunnel, else the state dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) runtime_dir: Option<PathBuf>,
    /// How long to wait for a peer that cannot be reached (relay down, peer away) before
    /// failing with the reason, in seconds (default 15; 0 fails at once).
    #[arg(long, global = true, value_name = "SECS")]
    pub(crate) connect_timeout: Option<f64>,
}

impl Global {
    /// A connection to the running node that carries `--connect-timeout`, if given.
    pub(crate) async fn control(&self) -> anyhow::Result<tunnel_node::control::ControlClient> {
        let settings = tunnel_node::Settings::resolve(self.flags(), |k| std::env::var(k).ok())?;
        let mut client = tunnel_node::control::ControlClient::connect(&settings.socket_path()).await?;
        if let Some(secs) = self.connect_timeout {
            let bound = std::time::Duration::try_from_secs_f64(secs)
                .map_err(|_| anyhow::anyhow!("--connect-timeout {secs}: give a number of seconds, 0 or more"))?;
            client.set_connect_timeout(bound).await?;
        }
        Ok(client)
    }

    pub(crate) fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            state_dir: self.state_dir.clone(),
            runtime_dir: self.runtime_dir.clone(),
            ..Flags::default()
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run this machine's peer: join the room and serve until SIGTERM or ctrl-c.
    Run(RunArgs),
    /// List the peers in the room (asks the running node).
    Peers(PeersArgs),
    /// Print this node's id.
    Id,
    /// Measure the round trip to a peer through the mesh.
    Ping(PingArgs),
    /// Run a command on a peer; its output streams here and its exit code becomes ours.
    Exec(ExecArgs),
    /// Copy a file to or from a peer: `tunnel cp PEER:PATH LOCAL` or `tunnel cp LOCAL PEER:PATH`.
    Cp(CpArgs),
    /// List a directory on a peer: `tunnel ls PEER:PATH`.
    Ls(LsArgs),
    /// Show what a peer is: host, OS, uptime, version, safety mode and policy.
    Info(InfoArgs),
    /// Change a peer's safety mode (`tunnel mode PEER MODE`), or this node's (`tunnel mode local MODE`).
    Mode(ModeArgs),
    /// Print a new random room token.
    Token,
    /// Start a relay and three peers in this process and show them working together.
    Demo,
    /// Put this machine's node into service (systemd, or launchd on macOS): config, binary,
    /// unit; enabled and started. `--dry-run` shows every file and command first.
    Install(InstallArgs),
    /// Add tunnel's MCP server to an AI client's config (or --uninstall it); --list shows clients.
    InstallMcp(InstallMcpArgs),
    /// Stop and remove the service; `--purge` also removes the node key, audit log and config.
    Uninstall(UninstallArgs),
    /// What this machine's node is doing: relay connection (and why not), room, peers, mode.
    Status(StatusArgs),
    /// Serve the fleet to AI clients over MCP (stdio, or --transport http).
    Mcp(McpArgs),
    /// Run a command, read or write a file on many peers at once; answers come back grouped.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Split a file into partitions, pipe each through a map command on the peers (retried
    /// elsewhere on failure), and reduce the results: `tunnel mapreduce all --input words.txt
    /// --map 'wc -w' --reduce "awk '{s+=$1} END {print s}'"`.
    Mapreduce(MapreduceArgs),
    /// Read or check this node's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Commands left running as jobs (`tunnel exec --detach`): list them, read their output,
    /// wait for them, cancel them. A job lives on the peer that runs it: `SEQ@PEER`.
    Jobs(JobsArgs),
    /// Commands a peer runs by itself on a cron schedule, each run a job: `tunnel schedule add
    /// web-1 --cron "*/15 * * * *" -- backup.sh`. A schedule lives on its peer: `NAME@PEER`.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// git in a repository on a peer or SSH host: `tunnel git web-1:/srv/app status`. Verbs:
    /// status, log, diff, show (plan mode allows these), fetch, pull, commit, push.
    Git(GitArgs),
    /// Hand a prompt to the AI agent a peer is configured with (`task_agent`), run as a job
    /// there; prints the job's id (`tunnel jobs logs -f ID` follows it).
    Task(TaskArgs),
    /// Files this node saved before peers overwrote them (edit mode).
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// The agentless arm: SSH hosts reached through peers (`ssh:HOST` targets).
    #[command(subcommand)]
    Ssh(SshCommand),
    /// Forward TCP ports through a peer or an SSH host: `tunnel forward web1 -L 8080:db:5432`,
    /// `-R 9000:localhost:3000`, `-D 1080`. Forwards run in the node; `list` and `close` them.
    Forward(ForwardArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct ForwardArgs {
    #[command(subcommand)]
    pub(crate) command: Option<ForwardCommand>,
    /// The peer, or `ssh:HOST`, the forward goes through.
    #[arg(required = true)]
    pub(crate) via: Option<String>,
    /// Listen here; each connection is made to HOST:HOSTPORT from VIA's network.
    #[arg(short = 'L', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
    pub(crate) local: Vec<String>,
    /// Listen on VIA (a peer); each connection is made to HOST:HOSTPORT from here.
    #[arg(short = 'R', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
    pub(crate) remote: Vec<String>,
    /// A SOCKS5 proxy here; connections leave from VIA (names resolve there).
    #[arg(short = 'D', value_name = "[BIND:]PORT")]
    pub(crate) dynamic: Vec<String>,
    /// Allow a listen address other than loopback (reachable from other machines).
    #[arg(long)]
    pub(crate) public: bool,
    /// Username the SOCKS5 proxy requires; the password comes from TUNNEL_SOCKS_PASSWORD or
    /// --socks-password-file, never the command line.
    #[arg(long, value_name = "USER")]
    pub(crate) socks_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub(crate) socks_password_file: Option<std::path::PathBuf>,
    /// Keep the forward in this terminal: it closes when this command ends (Ctrl-C).
    #[arg(long)]
    pub(crate) foreground: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum ForwardCommand {
    /// The node's forwards: id, kind, endpoints, state, connections, bytes each way, errors.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Close a forward: its port is freed and its connections end.
    Close { id: u64 },
}

#[derive(Subcommand)]
pub(crate) enum SshCommand {
    /// List the SSH hosts this node and its peers announce, and the peer that reaches each.
    Hosts(PeersArgs),
}

#[derive(Subcommand)]
pub(crate) enum BackupsCommand {
    /// List the saved files, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put a saved file back: give the original path (its newest backup) or a backup's path.
    Restore { path: String },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the last records: this machine's, or a peer's (its admins and allow list only).
    Tail {
        /// Whose log: a peer (asked through the running node), or this machine's by default.
        target: Option<String>,
        /// Only events that start with this, such as `exec` or `fs.write`.
        #[arg(long, default_value = "")]
        event: String,
        /// How many records.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// One JSON object per line instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; names the first broken record and exits non-zero.
    Verify,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// Join the room only to operate others: serve no operations to peers.
    #[arg(long)]
    pub(crate) no_agent: bool,
    /// Start even if the relay cannot be reached, and keep retrying (what the service does);
    /// `tunnel status` shows why it is not connected. Without it a failed first connection
    /// is an error.
    #[arg(long)]
    pub(crate) keep_trying: bool,
}

/// How a node joins its room: `tunnel run`, and `tunnel mcp` when it runs its own node.
#[derive(Args)]
pub(crate) struct NodeArgs {
    /// Relay URL, e.g. wss://relay.example (env TUNNEL_RELAY).
    #[arg(long)]
    pub(crate) relay: Option<String>,
    /// Room name (env TUNNEL_ROOM).
    #[arg(long)]
    pub(crate) room: Option<String>,
    /// Room token: every peer in the room shares it; the relay never sees it (env TUNNEL_TOKEN).
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// Access token of a private relay (env TUNNEL_ACCESS_TOKEN).
    #[arg(long)]
    pub(crate) access_token: Option<String>,
    /// PEM file of the CA that signed a wss:// relay's certificate, trusted besides the
    /// system's roots (env TUNNEL_RELAY_CA; config `relay_ca`).
    #[arg(long, value_name = "FILE")]
    pub(crate) relay_ca: Option<std::path::PathBuf>,
    /// This peer's name (env TUNNEL_NAME; default: the host name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Comma-separated tags, e.g. web,prod (env TUNNEL_TAGS).
    #[arg(long)]
    pub(crate) tags: Option<String>,
    /// Safety mode: plan (read-only, the default), edit, bypass or disabled (env TUNNEL_MODE).
    #[arg(long)]
    pub(crate) mode: Option<String>,
    /// Direct paths to peers: auto (the default: direct when possible, else the relay),
    /// relay-only (no UDP at all) or direct-only (env TUNNEL_DIRECT; config `direct`).
    #[arg(long, value_name = "MODE")]
    pub(crate) direct: Option<String>,
    /// Local UDP port for direct paths; 0 (the default) picks any (env TUNNEL_UDP_PORT;
    /// config `udp_port`).
    #[arg(long, value_name = "PORT")]
    pub(crate) udp_port: Option<u16>,
}

impl NodeArgs {
    pub(crate) fn flags(self, global: &Global) -> Flags {
        Flags {
            relay: self.relay,
            room: self.room,
            token: self.token,
            access_token: self.access_token,
            relay_ca: self.relay_ca,
            name: self.name,
            tags: self.tags,
            mode: self.mode,
            direct: self.direct,
            udp_port: self.udp_port,
            ..global.flags()
        }
    }
}

#[derive(Args)]
pub(crate) struct InstallArgs {
    /// A service of your own (systemd --user, or a LaunchAgent) instead of the system's.
    #[arg(long)]
    pub(crate) user: bool,
    /// Relay URL, e.g. wss://relay.example (else taken from the config).
    #[arg(long)]
    pub(crate) relay: Option<String>,
    /// Room name (else taken from the config).
    #[arg(long)]
    pub(crate) room: Option<String>,
    /// File holding the room token (kept out of command lines; else taken from the config).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// File holding a private relay's access token.
    #[arg(long, value_name = "FILE")]
    pub(crate) access_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the relay's certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) relay_ca: Option<PathBuf>,
    /// This peer's name (default: the host name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Comma-separated tags, e.g. web,prod.
    #[arg(long)]
    pub(crate) tags: Option<String>,
    /// Safety mode: plan (the default), edit, bypass or disabled.
    #[arg(long)]
    pub(crate) mode: Option<String>,
    /// Where the binary goes (default /usr/local/bin, or ~/.local/bin with --user).
    #[arg(long, value_name = "DIR")]
    pub(crate) prefix: Option<PathBuf>,
    /// Print every file it would write and command it would run; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Stage under DIR instead of /: write the files there and run no command (packaging, tests).
    #[arg(long, value_name = "DIR", hide = true)]
    pub(crate) root: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct InstallMcpArgs {
    /// claude-desktop, claude-code, cursor, vscode, windsurf, zed, codex, gemini, cline,
    /// continue or goose.
    pub(crate) client: Option<String>,
    /// Which clients are on this machine and whether tunnel is in each.
    #[arg(long, conflicts_with = "client")]
    pub(crate) list: bool,
    /// Remove tunnel's entry instead.
    #[arg(long)]
    pub(crate) uninstall: bool,
    /// Show the change as a diff; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Tool groups the client gets (`tunnel mcp --tools`).
    #[arg(long, value_name = "GROUPS")]
    pub(crate) tools: Option<String>,
    /// The server's key in the client's config.
    #[arg(long, default_value = "tunnel")]
    pub(crate) name: String,
    /// Put the relay, room and token into the client's config (its `env`), for a machine with
    /// no tunnel service; the token then sits in that file. Default: attach to this machine's node.
    #[arg(long)]
    pub(crate) embed_settings: bool,
}

#[derive(Args)]
pub(crate) struct UninstallArgs {
    /// The --user service.
    #[arg(long)]
    pub(crate) user: bool,
    /// Also remove the node key, audit log and config.
    #[arg(long)]
    pub(crate) purge: bool,
    /// Do not ask before --purge removes things.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Print what it would do; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[arg(long, value_name = "DIR", hide = true)]
    pub(crate) root: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// One JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct McpArgs {
    /// stdio (what AI clients start) or http (streamable HTTP at /mcp).
    #[arg(long, value_enum, default_value_t = Transport::Stdio)]
    pub(crate) transport: Transport,
    /// Address for --transport http.
    #[arg(long, default_value = "127.0.0.1:8001", value_name = "ADDR:PORT")]
    pub(crate) listen: std::net::SocketAddr,
    /// Bearer token HTTP clients must send (required for --transport http).
    #[arg(long, env = "TUNNEL_MCP_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,
    /// Another Host name HTTP clients may use (besides loopback and the listen address); repeatable.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub(crate) allow_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (--transport http); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,
    /// Tool groups to offer: a comma-separated list (core, jobs, fleet, mapreduce, ssh,
    /// forward), or all.
    #[arg(long, default_value = tunnel_mcp::DEFAULT_TOOLS)]
    pub(crate) tools: String,
    /// Seconds `exec` waits for a command before it answers with the output so far and a job
    /// id, leaving the command running (a call may set `job_after_secs`).
    #[arg(long, default_value_t = 25.0, value_name = "SECS", value_parser = positive_secs)]
    pub(crate) job_after: f64,
    /// Default cap, in bytes, on what one tool call returns per output (a call may ask for another).
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub(crate) max_output: u64,
    /// With a `tunnel run` on this machine, relay each call to it over its socket instead of
    /// handing it the session to serve in its process: a little slower, but the session then
    /// outlives a restart of `tunnel run`.
    #[arg(long)]
    pub(crate) no_handoff: bool,
    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    Stdio,
    Http,
}

#[derive(Args)]
pub(crate) struct PeersArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// Peer name or node id prefix.
    pub(crate) peer: String,
    /// Run this string with `sh -c` (refused in plan mode) instead of an argv after `--`.
    #[arg(long, value_name = "STRING")]
    pub(crate) shell: Option<String>,
    /// Kill the command (and everything it started) after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<f64>,
    /// Extra environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory on the peer (absolute).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,
    /// Cut stdout and stderr after this many bytes each.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_output: Option<u64>,
    /// Run it as a job on the peer and print the job's id at once (`tunnel jobs` follows it).
    #[arg(long, conflicts_with = "job_after")]
    pub(crate) detach: bool,
    /// If it still runs after this many seconds, leave it running as a job and print its id.
    #[arg(long, value_name = "SECS")]
    pub(crate) job_after: Option<f64>,
    /// The command and its arguments, run directly (never through a shell).
    #[arg(last = true, value_name = "ARGV")]
    pub(crate) argv: Vec<String>,
}

#[derive(Args)]
pub(crate) struct CpArgs {
    /// PEER:PATH or a local path (either may name a file that is not UTF-8).
    pub(crate) src: std::ffi::OsString,
    pub(crate) dst: std::ffi::OsString,
    /// Copy directories recursively.
    #[arg(short = 'r', long)]
    pub(crate) recursive: bool,
}

#[derive(Args)]
pub(crate) struct LsArgs {
    /// PEER:PATH (absolute path).
    pub(crate) target: std::ffi::OsString,
    /// Most entries to list.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) limit: u32,
}

#[derive(Args)]
pub(crate) struct InfoArgs {
    pub(crate) peer: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ModeArgs {
    /// Peer name or id prefix, or `local` for this node.
    pub(crate) peer: String,
    /// plan, edit, bypass or disabled.
    pub(crate) mode: String,
}

#[derive(Args)]
pub(crate) struct PingArgs {
    /// Peer name or node id prefix.
    pub(crate) peer: String,
    /// Number of pings.
    #[arg(short = 'c', long, default_value_t = 3)]
    pub(crate) count: u32,
}

#[derive(Subcommand)]
pub(crate) enum FleetCommand {
    /// Run a command on every selected peer: `tunnel fleet exec tag:web -- uptime`.
    Exec(FleetExecArgs),
    /// Read a file on every selected peer: `tunnel fleet read all /etc/os-release`.
    Read(FleetReadArgs),
    /// Write a local file to a path on every selected peer.
    Write(FleetWriteArgs),
    /// Show which peers a target selects.
    Ls(FleetLsArgs),
}

/// Targets, pacing and how answers are shown: shared by the fleet commands.
#[derive(Args)]
pub(crate) struct FleetCommon {
    /// all, tag:T, os:FAMILY, names (web-[01-20]) or node id prefixes, joined by commas.
    pub(crate) target: String,
    /// Peers worked on at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub(crate) concurrency: u32,
    /// Per peer: seconds until it counts as timed out (a command is killed then).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub(crate) timeout: f64,
    /// Group answers by their whole output, or by exit code only.
    #[arg(long, value_enum, default_value_t = GroupByArg::Output)]
    pub(crate) group_by: GroupByArg,
    /// Before grouping, replace what this regex matches with `*` (e.g. '\d+' for counters).
    #[arg(long, value_name = "REGEX")]
    pub(crate) normalize: Option<String>,
    /// Bytes of output (or file content) kept per peer.
    #[arg(long, default_value_t = 16384, value_name = "BYTES")]
    pub(crate) max_output: u64,
    /// Print every peer's full result and the grouping as JSON.
    #[arg(long, conflicts_with = "stream")]
    pub(crate) json: bool,
    /// Print each peer's result as one JSON line the moment it arrives, then the grouping as
    /// a last line (for `jq` and scripts).
    #[arg(long)]
    pub(crate) stream: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GroupByArg {
    Output,
    Exit,
}

#[derive(Args)]
pub(crate) struct FleetExecArgs {
    #[command(flatten)]
    pub(crate) common: FleetCommon,
    /// Run this string with `sh -c` (refused in plan mode) instead of an argv after `--`.
    #[arg(long, value_name = "STRING")]
    pub(crate) shell: Option<String>,
    /// Extra environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory on each peer (absolute).
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<String>,
    /// Run it as a job on every target and print the fleet job's id at once.
    #[arg(long, conflicts_with = "job_after")]
    pub(crate) detach: bool,
    /// Targets still running it after this many seconds leave it running as jobs, followed
    /// by one fleet job whose id is printed (`tunnel jobs wait ID`).
    #[arg(long, value_name = "SECS")]
    pub(crate) job_after: Option<f64>,
    /// The command and its arguments, run directly (never through a shell).
    #[arg(last = true, value_name = "ARGV")]
    pub(crate) argv: Vec<String>,
}

#[derive(Args)]
pub(crate) struct FleetReadArgs {
    #[command(flatten)]
    pub(crate) common: FleetCommon,
    /// Absolute path of the file on each peer.
    pub(crate) path: String,
}

#[derive(Args)]
pub(crate) struct FleetWriteArgs {
    #[command(flatten)]
    pub(crate) common: FleetCommon,
    /// The local file to send.
    pub(crate) file: PathBuf,
    /// Absolute path to write on each peer.
    pub(crate) path: String,
    /// Permission bits of the written file, in octal (default: keep the old file's, or 0644).
    #[arg(long, value_name = "OCTAL")]
    pub(crate) mode: Option<String>,
}

#[derive(Args)]
pub(crate) struct FleetLsArgs {
    /// all, tag:T, os:FAMILY, names or node id prefixes, joined by commas.
    pub(crate) target: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct MapreduceArgs {
    /// The peers that run the map (and the reducers when --reducers > 1).
    pub(crate) target: String,
    /// The input: a local file, `-` for stdin, or PEER:PATH for a file on a peer.
    #[arg(long, value_name = "FILE")]
    pub(crate) input: String,
    /// Shell command each partition is piped through.
    #[arg(long, value_name = "CMD")]
    pub(crate) map: String,
    /// Shell command the map output is piped through.
    #[arg(long, value_name = "CMD")]
    pub(crate) reduce: String,
    /// Partitions of the input (default: one per target).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) partitions: u32,
    /// 1: reduce here over the map outputs in partition order; more: shuffle `key<TAB>value`
    /// lines by key to that many reducers on the targets.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub(crate) reducers: u32,
    /// Further attempts a failed partition gets, each on another target.
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub(crate) retries: u32,
    /// Seconds one map or reduce attempt may take.
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    pub(crate) timeout: f64,
    /// Print the answer and per-partition statistics as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A number of seconds more than 0 and at most a day.
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?}: give seconds, more than 0 and at most 86400")),
    }
}
