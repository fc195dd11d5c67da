//! Where an operation runs: a peer (this node included), or an SSH host through the peer
//! that reaches it. The same exec and file frames flow either way; only the stream kind
//! that opens the operation differs.

use tunnel_proto::job::{JobStart, TaskSpec};
use tunnel_proto::message::{ExecSpec, ReadSpec, StreamKind, WriteSpec};
use tunnel_proto::NodeId;

/// What becomes a job: a command (after `job.after_ms`), or a delegated task (at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLaunch {
    Exec { spec: ExecSpec, job: JobStart },
    Task(TaskSpec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub peer: NodeId,
    /// An SSH host `peer` reaches; `None`: the peer itself.
    pub ssh: Option<String>,
}

impl From<NodeId> for Dest {
    fn from(peer: NodeId) -> Self {
        Self { peer, ssh: None }
    }
}

impl Dest {
    pub fn exec_kind(&self, spec: ExecSpec) -> StreamKind {
        match &self.ssh {
            None => StreamKind::Exec(spec),
            Some(host) => StreamKind::SshExec { host: host.clone(), spec },
        }
    }

    /// Work that becomes a job on the node that runs it.
    pub fn job_kind(&self, launch: JobLaunch) -> Result<StreamKind, String> {
        match (&self.ssh, launch) {
            (None, JobLaunch::Exec { spec, job }) => Ok(StreamKind::Job { spec, job }),
            (None, JobLaunch::Task(task)) => Ok(StreamKind::Task(task)),
            (Some(host), JobLaunch::Exec { spec, job }) => Ok(StreamKind::SshJob { host: host.clone(), spec, job }),
            (Some(host), JobLaunch::Task(_)) => {
                Err(format!("ssh:{host}: tasks run the AI agent of a peer; an SSH host runs none of ours"))
            }
        }
    }

    pub fn read_kind(&self, spec: ReadSpec) -> StreamKind {
        match &self.ssh {
            None => StreamKind::ReadFile(spec),
            Some(host) => StreamKind::SshRead { host: host.clone(), spec },
        }
    }

    pub fn write_kind(&self, spec: WriteSpec) -> StreamKind {
        match &self.ssh {
            None => StreamKind::WriteFile(spec),
            Some(host) => StreamKind::SshWrite { host: host.clone(), spec },
        }
    }
}
