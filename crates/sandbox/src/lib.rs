//! tunnel-sandbox: confinement the kernel enforces on a command a node runs for the mesh.
//!
//! A [`Spec`] says what the command may do: which files it must not read, where it may write,
//! which programs it may execute, whether it may use TCP. [`prepare`] turns it into a Landlock
//! ruleset in the node (opening the paths, resolving the program's ELF interpreter) and
//! [`spawn`] starts the command under it: from a thread of the node confined by that ruleset
//! and by nothing else, or, when the spec has a shield, from a forked child that confines
//! itself before `exec`. The node itself is never restricted, and the command cannot shed the
//! rules (`PR_SET_NO_NEW_PRIVS` is set first, so a setuid program cannot regain rights either).
//!
//! Landlock rules only grant. "Everything but these paths" is built by granting the right on
//! every sibling at each level of the excluded paths (`tree`), so the excluded paths and
//! nothing else stay out of reach. A ruleset, and the thread confined by it, is kept for the
//! next command with the same spec while every directory it was computed from is unchanged.
//!
//! Where the kernel has no Landlock (not Linux, or an old or unconfigured kernel),
//! [`support`] says so and [`prepare`] fails with [`SandboxError::Unsupported`]; the node
//! decides what to do then.

#[cfg(target_os = "linux")]
mod elf;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod spawner;
#[cfg(unix)]
mod stamp;
#[cfg(target_os = "linux")]
mod tree;

use std::fmt;
use std::path::PathBuf;

#[cfg(unix)]
pub use stamp::Stamp;

/// What a confined command may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Canonical files and directories the command must not read (everything else it may).
    pub unreadable: Vec<PathBuf>,
    pub writes: Writes,
    /// When set, the only programs the command may execute (canonical paths); their ELF
    /// interpreters are allowed too. Scripts cannot be allowed this way.
    pub exec_only: Option<Vec<PathBuf>>,
    /// Refuse TCP connect and bind, and signals and abstract sockets beyond the sandbox, and
    /// drop `CAP_SYS_PTRACE`.
    pub isolate: bool,
    /// Paths shielded in a private mount namespace (root only).
    pub shield: Shield,
}

/// What a command sees of some paths, in a mount namespace of its own: the host's mounts with
/// `hide` covered by an empty read-only directory and `read_only` made read-only. Unlike
/// Landlock grants, this restricts exactly these paths and nothing around them. The command
/// cannot undo it: Landlock refuses mount and umount to a sandboxed process. Root makes the
/// namespace directly; any other user inside a user namespace of its own that maps only its
/// own uid and gid (so ownership and permissions stay what they are; files of other users show
/// as `nobody`). Where neither works ([`shield_support`] says), [`prepare`] fails with
/// [`SandboxError::NoShield`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shield {
    /// Directories covered (canonical, existing).
    pub hide: Vec<PathBuf>,
    /// Files and directories made read-only (canonical, existing).
    pub read_only: Vec<PathBuf>,
}

impl Shield {
    pub fn is_empty(&self) -> bool {
        self.hide.is_empty() && self.read_only.is_empty()
    }
}

/// Where a confined command may write (its inherited stdout and stderr always work).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Writes {
    /// Nowhere but `/dev/null`.
    #[default]
    Nothing,
    /// Only beneath `roots`, and not in `except` beneath them. Entries cannot be made, removed
    /// or renamed directly in a directory under a root that holds an `except` path either
    /// (Landlock grants rights on whole subtrees, and that directory's subtree holds it).
    Beneath { roots: Vec<PathBuf>, except: Vec<PathBuf> },
    /// Anywhere: writes are not confined.
    Anywhere,
}

/// What this machine's kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Landlock with this ABI version.
    Landlock(u32),
    /// None: not Linux, or a kernel without Landlock.
    None,
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Landlock(abi) => write!(f, "landlock (ABI {abi})"),
            Self::None if cfg!(target_os = "linux") => f.write_str("none (kernel without Landlock)"),
            Self::None => f.write_str("none (Landlock is Linux only)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    #[error("this kernel cannot confine commands: {0}")]
    Unsupported(Support),
    #[error("this node cannot make a mount namespace (not root, and no user namespaces)")]
    NoShield,
    #[error("program {0} cannot be confined: {1}")]
    Program(PathBuf, String),
    #[error("building the sandbox: {0}")]
    Build(String),
}

/// The kernel's sandbox support, asked of the kernel itself.
pub fn support() -> Support {
    #[cfg(target_os = "linux")]
    {
        linux::support()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Support::None
    }
}

/// Whether a [`Shield`] can be made here: root, or user namespaces open to this user.
pub fn shield_support() -> bool {
    #[cfg(target_os = "linux")]
    {
        linux::shield_support()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A ruleset ready to apply in a child.
pub struct Prepared {
    #[cfg(target_os = "linux")]
    inner: linux::Ruleset,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prepared(..)")
    }
}

/// Builds the ruleset for `spec` in the calling (parent) process.
pub fn prepare(spec: &Spec) -> Result<Prepared, SandboxError> {
    #[cfg(target_os = "linux")]
    {
        linux::prepare(spec).map(|inner| Prepared { inner })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = spec;
        Err(SandboxError::Unsupported(Support::None))
    }
}

/// [`prepare`] for a spec whose ruleset is kept and still holds: quick (a few `statx`, no
/// directory walk), so it may run where blocking is not welcome. `None` otherwise.
pub fn prepare_kept(spec: &Spec) -> Option<Result<Prepared, SandboxError>> {
    #[cfg(target_os = "linux")]
    {
        linux::prepare_kept(spec).map(|r| r.map(|inner| Prepared { inner }))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = spec;
        None
    }
}

/// Starts a process confined by `prepared`: `spawn(command)` runs where whatever it starts
/// inherits the confinement (the thread kept confined for this ruleset, or, for a shield, the
/// usual fork with a hook that confines the child). `std_of` reaches the std command inside
/// `command`. If the kernel refuses the confinement, nothing starts and the error says so.
/// `spawn` should only start the process: it holds the thread that starts every command
/// confined alike.
pub fn spawn<C: Send + 'static, T: Send + 'static>(
    prepared: Prepared,
    command: C,
    std_of: fn(&mut C) -> &mut std::process::Command,
    spawn: impl FnOnce(C) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    #[cfg(target_os = "linux")]
    {
        linux::spawn_confined(prepared.inner, command, std_of, spawn)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (prepared, std_of);
        spawn(command)
    }
}
