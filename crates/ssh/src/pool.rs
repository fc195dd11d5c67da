//! The connection pool: one session per inventory host, reused by every operation and
//! multiplexing channels, with bounded concurrency.
//!
//! - At most `max_connecting` handshakes run at once; the rest queue.
//! - A session carries at most `channels_per_session` channels at once (OpenSSH's default
//!   `MaxSessions` is 10); more operations on one host wait for a channel.
//! - Connect failures that may pass (network, timeouts) are retried with backoff; refusals
//!   (host key, authentication) never are. Commands are never retried.
//! - A session idle for `idle_timeout` is closed; a dead one is replaced on next use.
//! - Up to [`RUNNERS_KEPT`] idle runners (see [`crate::runner`]) stay on a session, each in a
//!   channel slot; an operation that finds no free slot closes one.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use russh::client::Msg;
use russh::Channel;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::AbortOnDropHandle;

use crate::client::{self, ClientSettings, Session};
use crate::inventory::{Host, Inventory};
use crate::runner::Runner;
use crate::SshError;

/// How many jump hosts may be chained.
const MAX_JUMPS: usize = 8;
/// Idle runners kept per session: enough for a few commands at once on one host, while most
/// of OpenSSH's 10 channel slots stay free.
pub(crate) const RUNNERS_KEPT: usize = 3;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub client: ClientSettings,
    pub max_connecting: usize,
    pub channels_per_session: usize,
    pub idle_timeout: Duration,
    pub connect_retries: u32,
    /// Whether argv commands without input run in runners (see [`crate::runner`]).
    pub runners: bool,
}

impl PoolSettings {
    pub fn new(client: ClientSettings) -> Self {
        Self {
            client,
            max_connecting: 256,
            channels_per_session: 10,
            idle_timeout: Duration::from_secs(300),
            connect_retries: 2,
            runners: true,
        }
    }
}

pub(crate) struct Conn {
    session: Arc<Session>,
    /// This session's remote forwards.
    pub(crate) forwarded: crate::client::Forwarded,
    channels: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    /// Idle runners, each holding a channel slot.
    runners: Mutex<Vec<Runner>>,
    /// Set when the host's shell could not start a runner.
    pub(crate) no_runners: AtomicBool,
}

impl Conn {
    /// The session, for requests that outlive a borrow of the connection.
    pub(crate) fn session_handle(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// An idle runner that stayed quiet while idle; any that did not are closed.
    pub(crate) fn idle_runner(&self) -> Option<Runner> {
        loop {
            let mut runner = self.runners.lock().expect("runners lock").pop()?;
            if runner.quiet() {
                return Some(runner);
            }
            runner.close();
        }
    }

    /// Keeps `runner` for the next command, or closes it if enough are kept.
    pub(crate) fn park(&self, runner: Runner) {
        *self.last_used.lock().expect("last_used lock") = Instant::now();
        let extra = {
            let mut idle = self.runners.lock().expect("runners lock");
            if idle.len() < RUNNERS_KEPT {
                idle.push(runner);
                None
            } else {
                Some(runner)
            }
        };
        if let Some(runner) = extra {
            runner.close();
        }
    }

    fn idle_runners(&self) -> usize {
        self.runners.lock().expect("runners lock").len()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

struct PoolInner {
    settings: PoolSettings,
    client: Arc<ClientSettings>,
    inventory: RwLock<Arc<Inventory>>,
    slots: Mutex<HashMap<String, Slot>>,
    connecting: Semaphore,
}

/// The SSH client of a node. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
    _reaper: Arc<AbortOnDropHandle<()>>,
}

/// A channel slot on a live session: hold it while the channel is open.
pub(crate) struct Lease {
    pub(crate) host: Arc<Host>,
    pub(crate) conn: Arc<Conn>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    /// The channel slot, to be held by something that outlives the lease (a runner).
    pub(crate) fn take_permit(&mut self) -> OwnedSemaphorePermit {
        self.permit.take().expect("a lease's permit is taken once")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.conn.last_used.lock().expect("last_used lock") = Instant::now();
    }
}

impl Pool {
    pub fn new(settings: PoolSettings, mut inventory: Inventory) -> Self {
        inventory.sort();
        let inner = Arc::new(PoolInner {
            client: Arc::new(settings.client.clone()),
            connecting: Semaphore::new(settings.max_connecting.max(1)),
            settings,
            inventory: RwLock::new(Arc::new(inventory)),
            slots: Mutex::new(HashMap::new()),
        });
        let reaper = AbortOnDropHandle::new(tokio::spawn(reap(Arc::downgrade(&inner))));
        Self { inner, _reaper: Arc::new(reaper) }
    }

    pub(crate) fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        self.inner.inventory.read().expect("inventory lock").clone()
    }

    /// Replaces the inventory; sessions to hosts still listed are kept.
    pub fn set_inventory(&self, mut inventory: Inventory) {
        inventory.sort();
        *self.inner.inventory.write().expect("inventory lock") = Arc::new(inventory);
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        let slots: Vec<Slot> = self.inner.slots.lock().expect("slots lock").values().cloned().collect();
        slots.iter().filter(|s| s.try_lock().map(|g| g.is_some()).unwrap_or(true)).count()
    }

    pub(crate) fn host(&self, name: &str) -> Result<Arc<Host>, SshError> {
        self.inventory().get(name).cloned().map(Arc::new).ok_or_else(|| SshError::UnknownHost(name.to_owned()))
    }

    /// A channel slot on a session to `name`, connecting if needed.
    pub(crate) async fn lease(&self, name: &str) -> Result<Lease, SshError> {
        let host = self.host(name)?;
        self.lease_host(host, 0).await
    }

    pub(crate) fn lease_host(
        &self,
        host: Arc<Host>,
        depth: usize,
    ) -> futures_util::future::BoxFuture<'_, Result<Lease, SshError>> {
        Box::pin(async move {
            let conn = self.conn(&host, depth).await?;
            let permit = match conn.channels.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Every slot is taken: an idle runner gives its slot up.
                    let idle = conn.runners.lock().expect("runners lock").pop();
                    if let Some(runner) = idle {
                        runner.retire().await;
                    }
                    conn.channels.clone().acquire_owned().await.expect("channel semaphore never closes")
                }
            };
            Ok(Lease { host, conn, permit: Some(permit) })
        })
    }

    /// Opens a channel through `lease`'s session; a dead pooled session is replaced once.
    pub(crate) async fn open<F, Fut>(&self, lease: &mut Lease, open: F) -> Result<Channel<Msg>, SshError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<Channel<Msg>, russh::Error>>,
    {
        match open(lease.conn.session.clone()).await {
            Ok(channel) => Ok(channel),
            Err(first) => {
                // The server may have closed a pooled session we thought alive.
                self.forget(&lease.host, &lease.conn);
                *lease = self.lease_host(lease.host.clone(), 0).await?;
                open(lease.conn.session.clone()).await.map_err(|e| SshError::Channel {
                    host: lease.host.name.clone(),
                    reason: format!("cannot open a channel: {e} (before: {first})"),
                })
            }
        }
    }

    fn slot(&self, key: &str) -> Slot {
        self.inner.slots.lock().expect("slots lock").entry(key.to_owned()).or_default().clone()
    }

    fn forget(&self, host: &Host, conn: &Arc<Conn>) {
        let slot = self.slot(&self.key(host));
        let Ok(mut current) = slot.try_lock() else { return };
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }

    /// One session per inventory host; what it connects to is part of the key, so a host
    /// whose entry changed gets a new session.
    fn key(&self, host: &Host) -> String {
        let user = host.user.as_deref().unwrap_or(&self.inner.client.default_user);
        let via = host.proxy_jump.as_deref().unwrap_or("-");
        format!("{} = {user}@{}:{} via {via}", host.name, host.address, host.port)
    }

    pub(crate) async fn conn(&self, host: &Arc<Host>, depth: usize) -> Result<Arc<Conn>, SshError> {
        let slot = self.slot(&self.key(host));
        let mut current = slot.lock().await;
        if let Some(conn) = current.as_ref().filter(|c| !c.session.is_closed()) {
            return Ok(conn.clone());
        }
        *current = None;
        let started = Instant::now();
        let (session, forwarded) = self.connect_with_retries(host, depth).await?;
        tracing::debug!(host = %host.name, took_ms = started.elapsed().as_millis() as u64, "connected");
        let conn = Arc::new(Conn {
            session: Arc::new(session),
            forwarded,
            channels: Arc::new(Semaphore::new(self.inner.settings.channels_per_session.max(1))),
            last_used: Mutex::new(Instant::now()),
            runners: Mutex::new(Vec::new()),
            no_runners: AtomicBool::new(false),
        });
        *current = Some(conn.clone());
        Ok(conn)
    }

    async fn connect_with_retries(
        &self,
        host: &Arc<Host>,
        depth: usize,
    ) -> Result<(Session, crate::client::Forwarded), SshError> {
        let via = match &host.proxy_jump {
            None => None,
            Some(_) if depth >= MAX_JUMPS => {
                return Err(SshError::Config {
                    host: host.name.clone(),
                    reason: format!("more than {MAX_JUMPS} jump hosts (a ProxyJump loop?)"),
                })
            }
            Some(spec) => {
                let jump = Arc::new(self.jump_host(host, spec)?);
                let lease = self.lease_host(jump, depth + 1).await?;
                Some(lease.conn.session.clone())
            }
        };
        let mut attempt = 0;
        loop {
            let result = {
                let _turn = self.inner.connecting.acquire().await.expect("connect semaphore never closes");
                client::connect(host.clone(), self.inner.client.clone(), via.clone()).await
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.settings.connect_retries => {
                    attempt += 1;
                    tracing::debug!(host = %host.name, error = %e, attempt, "connect failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The host a `ProxyJump` value names: an inventory host, or `[user@]host[:port]`.
    /// For a chain `a,b`, the last hop is `b`, itself reached through `a`.
    fn jump_host(&self, of: &Host, spec: &str) -> Result<Host, SshError> {
        let (before, last) = match spec.rsplit_once(',') {
            Some((before, last)) => (Some(before.trim().to_owned()), last.trim()),
            None => (None, spec.trim()),
        };
        let mut jump = match self.inventory().get(last) {
            Some(h) => h.clone(),
            None => {
                let (user, rest) = match last.split_once('@') {
                    Some((u, r)) => (Some(u.to_owned()), r),
                    None => (None, last),
                };
                let (address, port) = match rest.rsplit_once(':') {
                    Some((a, p)) => (
                        a,
                        p.parse::<u16>().map_err(|_| SshError::Config {
                            host: of.name.clone(),
                            reason: format!("ProxyJump {spec:?}: port {p:?}"),
                        })?,
                    ),
                    None => (rest, 22),
                };
                let mut h = Host::new(address, format!("ProxyJump of {}", of.name));
                (h.user, h.port) = (user, port);
                h
            }
        };
        if before.is_some() {
            jump.proxy_jump = before;
        }
        Ok(jump)
    }
}

/// Closes sessions idle for longer than the pool's idle timeout.
async fn reap(pool: std::sync::Weak<PoolInner>) {
    loop {
        let every = match pool.upgrade() {
            Some(p) => (p.settings.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let slots: Vec<Slot> = pool.slots.lock().expect("slots lock").values().cloned().collect();
        let max = pool.settings.channels_per_session.max(1);
        for slot in slots {
            let Ok(mut current) = slot.try_lock() else { continue };
            let idle = current.as_ref().is_some_and(|c| {
                c.channels.available_permits() + c.idle_runners() == max
                    && c.last_used.lock().expect("last_used lock").elapsed() >= pool.settings.idle_timeout
            });
            if idle {
                if let Some(conn) = current.take() {
                    let bye = conn.session.disconnect(russh::Disconnect::ByApplication, "idle", "en");
                    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
                }
            }
        }
        pool.slots.lock().expect("slots lock").retain(|_, s| s.try_lock().map(|g| g.is_some()).unwrap_or(true));
    }
}
