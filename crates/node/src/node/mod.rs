//! The node: joins the room, keeps the membership table, answers peers' requests, and offers
//! the operations the control socket (and the demo, and tests) use.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tunnel_net::{ConnectError, Endpoint, EndpointConfig, NetEvent, Stream};
use tunnel_proto::message::{ByteBuf, Hello, Op, PeerMessage, RemoteError, RemoteErrorKind, Reply, StreamKind};
use tunnel_proto::room::RoomError;
use tunnel_proto::{NodeId, RoomKeys, SecretKey, PROTOCOL_VERSION};

use crate::audit::{AuditError, AuditLog, Entry};

mod dest;
mod exec;
mod gather;
pub(crate) mod lookup;
pub(crate) mod membership;
mod operator;
mod recent;
pub(crate) mod requests;
pub(crate) mod rpc;
mod ssh;
mod status;
mod streams;

use crate::identity::{load_or_create_identity, IdentityError};
use crate::node::membership::{Membership, PeerInfo, ResolveError};
use crate::node::recent::{Recent, Seen};
use crate::node::rpc::{Rpc, RpcError};
use crate::policy::{Mode, Policy, Refusal};
use crate::settings::{Settings, SettingsError};
pub use dest::{Dest, JobLaunch};
pub(crate) use gather::ReadEnd;
pub use status::{NodeStatus, RelayLine};

/// The target that always means this node.
pub const LOCAL_TARGET: &str = "local";
/// How long a ping waits for its answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the round trip to every peer we talk to is measured again.
const RTT_EVERY: Duration = Duration::from_secs(30);
/// How long a lookup waits for peers that have not said who they are yet.
const DISCOVER_WAIT: Duration = Duration::from_secs(3);
/// Hellos asked for at once while discovering.
const DISCOVER_PARALLEL: usize = 256;
/// Largest exec event frame accepted from a peer.
const EXEC_FRAME_MAX: usize = 1 << 20;
/// How often audit records are forced to disk.
const AUDIT_SYNC_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Room(#[from] RoomError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Everything a node needs to join its room.
pub struct NodeConfig {
    /// `None`: a local-only node (no mesh; operations target this machine).
    pub relay_url: Option<String>,
    pub room: String,
    pub token: String,
    pub access_token: Option<String>,
    /// Whom to trust for a `wss://` relay besides the system's roots.
    pub relay_trust: tunnel_net::ClientTrust,
    /// Fail [`Node::start`] when the first relay connection fails (a person at a terminal);
    /// `false` keeps retrying in the background (a service: `tunnel status` shows why).
    pub fail_fast: bool,
    /// How this node runs, as `tunnel status` says it: `systemd service`, `tunnel run
    /// (foreground)`, ... The program that starts the node knows; the node does not guess.
    pub runs_as: String,
    pub name: String,
    pub tags: Vec<String>,
    /// What this node says it runs (`os:` targets match it); normally [`crate::detect_os`].
    pub os: tunnel_proto::message::OsInfo,
    pub secret: SecretKey,
    /// Serve operations to peers. `false` (`--no-agent`): this node only operates others.
    pub agent: bool,
    /// Where the audit log lives; `None` for ephemeral nodes (the demo, in-process tests).
    pub state_dir: Option<std::path::PathBuf>,
    /// What peers may do here. `agent: false` overrides it with mode `disabled`.
    pub policy: Policy,
    /// The SSH arm: hosts this node reaches for the mesh.
    pub ssh: crate::ssh::SshSettings,
    /// Direct paths to peers (QUIC over UDP), or the relay only.
    pub direct: tunnel_net::DirectConfig,
}

impl NodeConfig {
    /// From resolved settings, loading (or creating) the persistent node key.
    pub fn from_settings(s: &Settings) -> Result<Self, NodeError> {
        let room = s.room_settings()?;
        Ok(Self {
            relay_url: Some(room.relay.to_owned()),
            room: room.room.to_owned(),
            token: room.token.to_owned(),
            access_token: s.access_token.clone(),
            relay_trust: s.relay_trust.clone(),
            direct: s.direct.clone(),
            ..Self::local_only(s)?
        })
    }

    /// A node with no relay: this machine's identity, policy and audit log, acting only on
    /// itself. What `tunnel mcp` runs when no relay is configured.
    pub fn local_only(s: &Settings) -> Result<Self, NodeError> {
        Ok(Self {
            relay_url: None,
            // A room nobody else can be in; the keys are never used on a wire.
            room: "local".into(),
            token: tunnel_proto::room::generate_token(&mut rand::rngs::OsRng),
            access_token: None,
            relay_trust: Default::default(),
            fail_fast: true,
            runs_as: "embedded".into(),
            name: s.name.clone(),
            tags: s.tags.clone(),
            os: crate::services::os_info::detect(),
            secret: load_or_create_identity(&s.state_dir)?,
            agent: true,
            state_dir: Some(s.state_dir.clone()),
            policy: s.policy.clone(),
            ssh: s.ssh.clone(),
            direct: Default::default(),
        })
    }
}

/// A running node. Cheap to clone; stops when [`Node::shutdown`] is called.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    name: String,
    room: String,
    runs_as: String,
    started: std::time::SystemTime,
    agent: bool,
    members: Mutex<Membership>,
    rpc: Rpc,
    recent: Mutex<Recent>,
    audit: Option<AuditLog>,
    policy: RwLock<Policy>,
    state_dir: Option<std::path::PathBuf>,
    /// The SSH client and inventory, when this node has SSH hosts configured.
    ssh: Option<ssh::SshArm>,
    forwards: crate::forward::Forwards,
    jobs: crate::jobs::Jobs,
    schedules: crate::schedules::Schedules,
    operator: operator::OperatorMarks,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Node {
    /// Joins the room. Fails with a clear error if the first relay connection fails.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let room = RoomKeys::derive(&config.room, &config.token)?;
        // Not dumpable: no process without CAP_SYS_PTRACE (a command it runs included) reads its
        // memory, where its key is, through /proc.
        #[cfg(target_os = "linux")]
        let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
        let mut config = config;
        if let Some(allow) = &mut config.policy.allow {
            // The local operator reaches this node through its own id (the loopback).
            allow.push(config.secret.public());
        }
        let audit = config.state_dir.as_deref().map(AuditLog::open).transpose()?;
        let ssh = ssh::SshArm::start(&config.ssh).await;
        for file in ssh.iter().flat_map(ssh::SshArm::identity_files) {
            config.policy.secrets.add_identity_file(&file);
        }
        let ssh_hosts = ssh.as_ref().map(ssh::SshArm::announcement).unwrap_or_default();
        let mut capabilities = vec!["ping".to_owned()];
        if config.agent {
            capabilities.extend(["echo", "exec"].map(String::from));
            if ssh.is_some() {
                capabilities.push("ssh".into());
            }
        }
        let hello = Hello {
            tags: config.tags.clone(),
            os: config.os.clone(),
            tunnel_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: if config.agent { config.policy.mode } else { Mode::Disabled }.to_string(),
            capabilities,
            ssh_hosts,
            ..Hello::new(config.name.clone())
        };
        let (endpoint, events) = Endpoint::start(EndpointConfig {
            relay_url: config.relay_url,
            access_token: config.access_token,
            room,
            secret: config.secret,
            hello,
            relay_trust: config.relay_trust,
            fail_fast: config.fail_fast,
            direct: config.direct,
            peer_idle: tunnel_net::PEER_IDLE_DEFAULT,
        })
        .await?;
        let jobs = crate::jobs::Jobs::open(endpoint.id(), config.state_dir.as_deref());
        let mut due_now = Vec::new();
        let schedules = crate::schedules::Schedules::open(config.state_dir.as_deref(), &mut due_now);
        let node = Self {
            inner: Arc::new(Inner {
                endpoint,
                name: config.name,
                room: config.room,
                runs_as: config.runs_as,
                started: std::time::SystemTime::now(),
                agent: config.agent,
                members: Mutex::new(Membership::default()),
                rpc: Rpc::new(),
                recent: Mutex::new(Recent::default()),
                audit,
                policy: RwLock::new(if config.agent {
                    config.policy
                } else {
                    Policy { mode: Mode::Disabled, ..config.policy }
                }),
                state_dir: config.state_dir,
                ssh,
                forwards: crate::forward::Forwards::default(),
                jobs,
                schedules,
                operator: operator::OperatorMarks::default(),
                cancel: CancellationToken::new(),
                task: Mutex::new(None),
            }),
        };
        let task = tokio::spawn(node.clone().event_loop(events));
        tokio::spawn(node.clone().watch_ssh_inventory());
        tokio::spawn(crate::schedules::run_loop(node.clone(), due_now));
        *node.inner.task.lock().expect("task lock") = Some(task);
        info!(id = %node.id(), name = %node.name(), "joined the room");
        node.audit(info_event("node.start", serde_json::Value::Null));
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.inner.endpoint.id()
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.inner.members.lock().expect("members lock").list(|id| self.inner.endpoint.path(id))
    }

    /// Makes a session with every present peer that has not said who it is (each session
    /// starts with both sides' `Hello`), waiting up to `within` for the answers.
    ///
    /// Sessions are made on demand, not when a peer appears: in a room of a thousand peers,
    /// each greeting every other would be half a million handshakes nobody needs.
    pub async fn discover(&self, within: Duration) {
        let unknown = {
            let mut members = self.inner.members.lock().expect("members lock");
            // The endpoint knows who is present before the event loop has told membership.
            for id in self.inner.endpoint.peers() {
                members.present(id);
            }
            members.without_hello()
        };
        if unknown.is_empty() {
            return;
        }
        let mut pings = JoinSet::new();
        let mut queue = unknown.into_iter();
        let greet_all = async {
            loop {
                while pings.len() < DISCOVER_PARALLEL {
                    let Some(id) = queue.next() else { break };
                    let node = self.clone();
                    pings.spawn(async move { node.ping_id(id).await });
                }
                if pings.join_next().await.is_none() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, greet_all).await;
    }

    /// Everyone a fleet target may select: this node and the peers present, after asking
    /// the ones that have not said who they are.
    pub async fn candidates(&self) -> Vec<crate::fleet::targets::Candidate> {
        self.discover(DISCOVER_WAIT).await;
        let hello = self.inner.endpoint.hello();
        let me = crate::fleet::targets::Candidate {
            id: self.id(),
            name: self.inner.name.clone(),
            ssh_hosts: self.own_ssh_hosts(),
            tags: hello.tags,
            os: Some(hello.os),
            is_self: true,
        };
        let mut all = self.inner.members.lock().expect("members lock").candidates();
        all.push(me);
        all
    }

    /// The peers a target expression selects (see [`crate::fleet::targets`]).
    pub async fn select(
        &self,
        expr: &str,
    ) -> Result<Vec<crate::fleet::targets::Target>, crate::fleet::targets::TargetError> {
        crate::fleet::targets::select(expr, &self.candidates().await)
    }

    /// Resolves a peer by name or node id prefix. `local`, this node's own name or a prefix
    /// of its id name this node itself (operations on it run locally, under its own policy).
    pub fn resolve(&self, target: &str) -> Result<NodeId, RpcError> {
        let me = self.id();
        let is_me = target == LOCAL_TARGET
            || target == self.inner.name
            || (target.len() >= 4 && me.to_string().starts_with(&target.to_ascii_lowercase()));
        let found = self.inner.members.lock().expect("members lock").resolve(target);
        match found {
            Err(ResolveError::NotFound { .. }) if is_me => Ok(me),
            Ok(peer) if is_me && target != LOCAL_TARGET => Err(ResolveError::Ambiguous {
                target: target.to_owned(),
                candidates: format!(
                    "this node ({}) and peer {}; use `local` or more of the node id",
                    me.short(),
                    peer.short()
                ),
            }
            .into()),
            _ if target == LOCAL_TARGET => Ok(me),
            found => Ok(found?),
        }
    }

    /// Sends a request and waits for the answer.
    pub async fn request(&self, peer: NodeId, op: Op, timeout: Duration) -> Result<Reply, RpcError> {
        if !matches!(op, Op::Ping { .. }) {
            self.inner.members.lock().expect("members lock").used(&peer);
        }
        self.reachable(peer).await?;
        let name = self.inner.members.lock().expect("members lock").name_of(&peer);
        let cause = || {
            let link = self.inner.members.lock().expect("members lock").error_of(&peer);
            link.or_else(|| self.unreachable_because(None))
        };
        self.inner.rpc.call(&self.inner.endpoint, peer, &name, op, timeout, cause).await
    }

    /// Round trip to a peer through the mesh; also recorded for `tunnel peers`.
    pub async fn ping(&self, target: &str) -> Result<(NodeId, String, Duration), RpcError> {
        let peer = self.find(target).await?;
        let rtt = self.ping_id(peer).await?;
        let name = self.inner.members.lock().expect("members lock").name_of(&peer);
        Ok((peer, name, rtt))
    }

    async fn ping_id(&self, peer: NodeId) -> Result<Duration, RpcError> {
        let payload: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let started = Instant::now();
        match self.request(peer, Op::Ping { payload: ByteBuf::from(payload.clone()) }, PING_TIMEOUT).await? {
            Reply::Pong { payload: echoed } if echoed.0 == payload => {
                let rtt = started.elapsed();
                self.inner.members.lock().expect("members lock").rtt(&peer, rtt);
                Ok(rtt)
            }
            _ => Err(RpcError::Remote {
                peer: peer.short(),
                error: RemoteError {
                    kind: RemoteErrorKind::Failed,
                    message: "ping answered with the wrong payload".into(),
                },
            }),
        }
    }

    /// Opens a stream to a peer.
    pub async fn open_stream(&self, peer: NodeId, kind: StreamKind) -> Result<Stream, RpcError> {
        self.inner.members.lock().expect("members lock").used(&peer);
        self.reachable(peer).await?;
        Ok(self.inner.endpoint.open_stream(&peer, kind).await?)
    }

    /// The error for a stream to `peer` that broke, with the link's own reason if it has one.
    pub(crate) fn lost(&self, peer: NodeId, why: String) -> RpcError {
        let members = self.inner.members.lock().expect("members lock");
        let reason = match members.error_of(&peer) {
            Some(cause) => format!("{why}: {cause}"),
            None => why,
        };
        RpcError::Lost { peer: members.name_of(&peer), reason }
    }

    /// The port forwards this node runs.
    pub fn forwards(&self) -> &crate::forward::Forwards {
        &self.inner.forwards
    }

    /// The jobs this node runs and keeps.
    pub(crate) fn jobs(&self) -> &crate::jobs::Jobs {
        &self.inner.jobs
    }

    /// The schedules this node runs.
    pub(crate) fn schedules(&self) -> &crate::schedules::Schedules {
        &self.inner.schedules
    }

    /// Resolves when the node is shutting down.
    pub(crate) async fn stopping(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Leaves the room and stops the node's tasks.
    pub async fn shutdown(&self) {
        self.inner.jobs.stop_all();
        self.inner.forwards.close_all().await;
        self.inner.endpoint.shutdown();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.inner.endpoint.closed()).await;
        self.inner.cancel.cancel();
        let task = self.inner.task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.audit(info_event("node.stop", serde_json::Value::Null));
        if let Some(log) = &self.inner.audit {
            if let Err(e) = log.sync() {
                warn!(error = %e, "audit log sync failed");
            }
        }
    }

    pub(crate) fn state_dir(&self) -> Option<&std::path::Path> {
        self.inner.state_dir.as_deref()
    }

    /// This node's current safety mode.
    pub fn mode(&self) -> Mode {
        self.inner.policy.read().expect("policy lock").mode
    }

    /// Runs a check against the current policy.
    pub(crate) fn policy_check<T>(&self, f: impl FnOnce(&Policy) -> Result<T, Refusal>) -> Result<T, Refusal> {
        f(&self.inner.policy.read().expect("policy lock"))
    }

    /// Claims a request id for running once; false if this peer already sent it.
    pub(crate) fn begin_request(&self, from: NodeId, id: u64) -> bool {
        let mut recent = self.inner.recent.lock().expect("recent lock");
        let new = matches!(recent.begin(from, id, Instant::now()), Seen::New);
        if new {
            // Streams carry their own answers; remember only that the id was used.
            let used = RemoteError { kind: RemoteErrorKind::Refused, message: format!("request {id} already ran") };
            recent.finish(from, id, Err(used));
        }
        new
    }

    /// Audits an operation a peer asked for.
    pub(crate) fn audit_op(
        &self,
        caller: NodeId,
        event: &str,
        decision: &str,
        rule: Option<String>,
        detail: serde_json::Value,
        outcome: Option<Entry>,
    ) {
        let name = self.inner.members.lock().expect("members lock").name_of(&caller);
        self.audit(Entry {
            event: event.into(),
            caller: Some(caller.to_string()),
            caller_name: Some(name),
            decision: decision.into(),
            rule,
            detail,
            ..outcome.unwrap_or_default()
        });
    }

    /// Records an event in the audit log. A record that cannot be written is logged loudly:
    /// the operation already happened, and hiding the failure would be worse.
    pub(crate) fn audit(&self, entry: Entry) {
        if let Some(log) = &self.inner.audit {
            if let Err(e) = log.append(entry) {
                warn!(error = %e, "AUDIT RECORD LOST");
            }
        }
    }

    async fn event_loop(self, mut events: mpsc::Receiver<NetEvent>) {
        let mut work = JoinSet::new();
        let mut rtt = tokio::time::interval(RTT_EVERY);
        rtt.tick().await;
        let mut audit_sync = tokio::time::interval(AUDIT_SYNC_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = self.inner.cancel.cancelled() => break,
                Some(_) = work.join_next(), if !work.is_empty() => {}
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev, &mut work),
                    None => break,
                },
                _ = audit_sync.tick() => {
                    if let Some(log) = &self.inner.audit {
                        if let Err(e) = log.sync() {
                            warn!(error = %e, "audit log sync failed");
                        }
                    }
                }
                _ = rtt.tick() => {
                    let ids = self.inner.members.lock().expect("members lock").in_use(2 * RTT_EVERY);
                    for id in ids {
                        let node = self.clone();
                        work.spawn(async move { let _ = node.ping_id(id).await; });
                    }
                }
            }
        }
        work.shutdown().await;
    }

    /// Handles one event without waiting on anything: work goes to tasks.
    fn on_event(&self, ev: NetEvent, work: &mut JoinSet<()>) {
        match ev {
            NetEvent::PeerPresent(id) => {
                // No greeting here: sessions are made when someone needs one (`discover`).
                self.inner.members.lock().expect("members lock").present(id);
                self.inner.rpc.resend_now(Some(id));
                self.audit(peer_event("peer.present", &id, None));
            }
            NetEvent::PeerAbsent(id) => {
                let name = {
                    let mut members = self.inner.members.lock().expect("members lock");
                    let name = members.name_of(&id);
                    members.absent(&id);
                    name
                };
                info!(peer = %name, id = %id.short(), "peer left");
                self.audit(peer_event("peer.absent", &id, Some(name)));
            }
            NetEvent::Message { from, msg } => self.on_message(from, msg, work),
            NetEvent::Stream(stream) => self.serve_stream(stream, work),
            NetEvent::LinkFailed { peer, reason } => {
                self.audit(Entry { rule: Some(reason.clone()), ..peer_event("peer.link_failed", &peer, None) });
                self.inner.members.lock().expect("members lock").link_error(&peer, reason);
            }
            NetEvent::PathChanged { peer, direct, reason } => {
                let detail = serde_json::json!({ "addr": direct.map(|a| a.to_string()), "reason": reason });
                let event = if direct.is_some() { "path.direct_up" } else { "path.direct_down" };
                self.audit(Entry { detail, ..peer_event(event, &peer, None) });
            }
            NetEvent::RelayConnected { observed_addr } => {
                debug!(%observed_addr, "relay connected");
                self.inner.rpc.resend_now(None);
                self.audit(info_event("path.relay_up", serde_json::json!({ "observed_addr": observed_addr })));
            }
            NetEvent::RelayDisconnected { reason } => {
                warn!(%reason, "relay connection lost; reconnecting");
                self.audit(info_event("path.relay_down", serde_json::json!({ "reason": reason })));
            }
            NetEvent::RelayConnectFailed(e) => {
                warn!(error = %e, "relay reconnect failed; retrying")
            }
        }
    }

    fn on_message(&self, from: NodeId, msg: PeerMessage, work: &mut JoinSet<()>) {
        match msg {
            PeerMessage::Hello(hello) => {
                if hello.version != PROTOCOL_VERSION {
                    warn!(peer = %hello.name, version = hello.version, "peer speaks another protocol version");
                }
                info!(peer = %hello.name, id = %from.short(), "peer ready");
                self.audit(peer_event("peer.hello", &from, Some(hello.name.clone())));
                self.inner.members.lock().expect("members lock").hello(from, *hello);
                self.inner.rpc.resend_now(Some(from));
            }
            PeerMessage::Request { id, op } => {
                let seen = self.inner.recent.lock().expect("recent lock").begin(from, id, Instant::now());
                let node = self.clone();
                match seen {
                    Seen::Running => {}
                    Seen::Done(result) => {
                        work.spawn(async move {
                            let _ =
                                node.inner.endpoint.send(&from, PeerMessage::Response { id, result: *result }).await;
                        });
                    }
                    Seen::New => {
                        work.spawn(async move {
                            let result = node.handle_request(from, op).await;
                            node.inner.recent.lock().expect("recent lock").finish(from, id, result.clone());
                            let _ = node.inner.endpoint.send(&from, PeerMessage::Response { id, result }).await;
                        });
                    }
                }
            }
            PeerMessage::Response { id, result } => self.inner.rpc.complete(from, id, result),
            PeerMessage::Cancel { .. } | PeerMessage::Progress { .. } => {}
            // Stream frames are handled inside tunnel-net and never reach the node.
            PeerMessage::Open { .. }
            | PeerMessage::Data { .. }
            | PeerMessage::Credit { .. }
            | PeerMessage::Close { .. }
            | PeerMessage::PathOffer(_) => {}
        }
    }
}

/// A record of something that happened to this node (not an operation anyone asked for).
fn info_event(event: &str, detail: serde_json::Value) -> Entry {
    Entry { event: event.into(), decision: "info".into(), detail, ..Default::default() }
}

fn peer_event(event: &str, id: &NodeId, name: Option<String>) -> Entry {
    Entry { caller: Some(id.to_string()), caller_name: name, ..info_event(event, serde_json::Value::Null) }
}
