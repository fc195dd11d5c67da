//! Policy: what this node lets callers do. Enforced here, by the node that executes, never
//! only by the caller.
//!
//! Modes: `plan` (read-only: list/read/stat and allow-listed read-only commands run as argv,
//! no shell; the default), `edit` (writes and exec allowed; overwritten files are backed up),
//! `bypass` (everything but the hard deny list), `disabled` (nothing). The hard deny list
//! applies in every mode. Every refusal names the rule that refused.

mod args;
mod commands;
mod env;
mod forward;
pub(crate) mod git_guard;
mod paths;
mod secrets;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tunnel_proto::NodeId;

pub use commands::{resolve_program, CommandLine};
pub use env::{check_env, plan_base, TRUSTED_PATH};
pub use forward::ForwardRule;
pub use paths::{canonical_target, PathAccess};
pub use secrets::{SecretSources, Secrets, DEFAULT_SECRET_PATHS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Plan,
    Edit,
    Bypass,
    Disabled,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plan => "plan",
            Self::Edit => "edit",
            Self::Bypass => "bypass",
            Self::Disabled => "disabled",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plan" => Ok(Self::Plan),
            "edit" => Ok(Self::Edit),
            "bypass" => Ok(Self::Bypass),
            "disabled" => Ok(Self::Disabled),
            other => Err(format!("unknown mode {other:?}: use plan, edit, bypass or disabled")),
        }
    }
}

impl From<Refusal> for tunnel_proto::message::RemoteError {
    fn from(r: Refusal) -> Self {
        Self { kind: tunnel_proto::message::RemoteErrorKind::Refused, message: r.to_string() }
    }
}

/// A refusal: which rule said no, and about what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by policy: {rule}")]
pub struct Refusal {
    pub rule: String,
}

impl Refusal {
    pub(crate) fn new(rule: impl Into<String>) -> Self {
        Self { rule: rule.into() }
    }
}

/// The rules of one node, from its config.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    /// When non-empty, paths must be under one of these (after canonicalization).
    pub allow_paths: Vec<PathBuf>,
    pub deny_paths: Vec<PathBuf>,
    /// When non-empty, only these programs (by resolved name) may run, in any mode.
    pub allow_commands: Vec<String>,
    pub deny_commands: Vec<String>,
    /// Node ids that may operate here; `None` means every room member.
    pub allow: Option<Vec<NodeId>>,
    /// Node ids that may change this node's mode remotely.
    pub admins: Vec<NodeId>,
    /// Largest file a peer may write here.
    pub max_file_bytes: u64,
    /// Where forwards may go (and `-R` listeners bind) in `plan` mode.
    pub forward_allow: Vec<ForwardRule>,
    /// What never leaves this node through the mesh, and what the mesh never rewrites.
    pub secrets: Secrets,
    /// Refuse plan-mode commands where the kernel cannot confine them.
    pub plan_requires_sandbox: bool,
    /// In `edit`, commands may write only beneath these (when set).
    pub edit_sandbox: Option<Vec<PathBuf>>,
    /// The AI agent `tunnel task` runs here with a prompt as its last argument (edit, bypass).
    pub task_agent: Option<Vec<String>>,
    /// Its read-only invocation, the only one run in plan mode.
    pub task_agent_plan: Option<Vec<String>>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: Mode::Plan,
            allow_paths: vec![],
            deny_paths: vec![],
            allow_commands: vec![],
            deny_commands: vec![],
            allow: None,
            admins: vec![],
            max_file_bytes: 64 << 30,
            forward_allow: vec![],
            secrets: Secrets::default(),
            plan_requires_sandbox: false,
            edit_sandbox: None,
            task_agent: None,
            task_agent_plan: None,
        }
    }
}

impl Policy {
    /// One line per rule in force, for `tunnel info`.
    pub fn summary(&self) -> Vec<String> {
        let list = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let mut out = vec![format!("mode {}", self.mode)];
        if !self.allow_paths.is_empty() {
            out.push(format!("allow_paths {}", list(&self.allow_paths)));
        }
        if !self.deny_paths.is_empty() {
            out.push(format!("deny_paths {}", list(&self.deny_paths)));
        }
        if !self.allow_commands.is_empty() {
            out.push(format!("allow_commands {}", self.allow_commands.join(", ")));
        }
        if !self.deny_commands.is_empty() {
            out.push(format!("deny_commands {}", self.deny_commands.join(", ")));
        }
        match &self.allow {
            Some(ids) => out.push(format!("allow {} node ids", ids.len())),
            None => out.push("allow every room member".into()),
        }
        out.push(format!("admins {}", self.admins.len()));
        out.push(format!("max_file_bytes {}", self.max_file_bytes));
        if !self.forward_allow.is_empty() {
            let rules: Vec<String> = self.forward_allow.iter().map(ToString::to_string).collect();
            out.push(format!("forward_allow {}", rules.join(", ")));
        }
        let support = tunnel_sandbox::support();
        let edit = match (&self.edit_sandbox, support) {
            (_, tunnel_sandbox::Support::None) => "edit commands unconfined",
            (Some(_), _) => "edit commands write only beneath edit_sandbox",
            (None, _) if tunnel_sandbox::shield_support() => {
                "edit commands shielded (node state hidden, config, unit and binary read-only)"
            }
            (None, _) => "edit commands unconfined (no mount namespace for this user; set edit_sandbox)",
        };
        let plan = if support == tunnel_sandbox::Support::None {
            "plan commands by argument checks only"
        } else {
            "plan commands confined"
        };
        out.push(format!("sandbox: {support}: {plan}; {edit}"));
        if self.plan_requires_sandbox {
            out.push("plan_requires_sandbox".into());
        }
        if let Some(roots) = &self.edit_sandbox {
            out.push(format!("edit_sandbox {}", list(roots)));
        }
        out
    }
}

impl Policy {
    pub fn check_caller(&self, caller: &NodeId) -> Result<(), Refusal> {
        match &self.allow {
            Some(ids) if !ids.contains(caller) => {
                Err(Refusal::new(format!("node {} is not in this node's allow list", caller.short())))
            }
            _ => Ok(()),
        }
    }

    /// Who may read this node's audit log from elsewhere: its admins, and the nodes of its
    /// allow list when it has one. Without one, every room member may operate here, but what
    /// each did is for the admins to see.
    pub fn check_audit_reader(&self, caller: &NodeId) -> Result<(), Refusal> {
        self.check_overseer(caller, "read this node's audit log")
    }

    /// Whether `caller` may see and stop jobs other nodes started here.
    pub fn check_jobs_of_others(&self, caller: &NodeId) -> Result<(), Refusal> {
        self.check_overseer(caller, "see or stop jobs other nodes started here")
    }

    /// What only this node's admins, and its allow list when it has one, may do.
    fn check_overseer(&self, caller: &NodeId, what: &str) -> Result<(), Refusal> {
        let listed = self.allow.as_ref().is_some_and(|ids| ids.contains(caller));
        if self.admins.contains(caller) || listed {
            return Ok(());
        }
        let who = if self.allow.is_some() { "its admins and allow list" } else { "its admins" };
        Err(Refusal::new(format!("node {} may not {what}: only {who} may", caller.short())))
    }

    pub fn check_set_mode(&self, caller: Option<&NodeId>) -> Result<(), Refusal> {
        match caller {
            None => Ok(()), // the local operator, through the control socket
            Some(id) if self.admins.contains(id) => Ok(()),
            Some(id) => Err(Refusal::new(format!(
                "node {} is not an admin of this node; only admins change its mode",
                id.short()
            ))),
        }
    }

    /// Whether a command may run, and how: the resolved program for argv commands.
    pub fn check_command(&self, cmd: &CommandLine) -> Result<(), Refusal> {
        commands::hard_deny(cmd)?;
        match self.mode {
            Mode::Disabled => return Err(Refusal::new("mode disabled refuses everything")),
            Mode::Plan => commands::plan_allows(cmd)?,
            Mode::Edit | Mode::Bypass => {}
        }
        self.check_command_lists(&commands::program_names(cmd))
    }

    fn check_command_lists(&self, names: &[String]) -> Result<(), Refusal> {
        if let Some(denied) = names.iter().find(|n| self.deny_commands.iter().any(|d| d == *n)) {
            return Err(Refusal::new(format!("deny_commands lists {denied}")));
        }
        if !self.allow_commands.is_empty() {
            if let Some(other) = names.iter().find(|n| !self.allow_commands.iter().any(|a| a == *n)) {
                return Err(Refusal::new(format!("allow_commands does not list {other}")));
            }
        }
        Ok(())
    }

    /// Whether a file of `size` bytes may be written (`max_file_bytes`).
    pub fn check_write_size(&self, size: u64) -> Result<(), Refusal> {
        if size > self.max_file_bytes {
            return Err(Refusal::new(format!("max_file_bytes is {} (write of {size} bytes)", self.max_file_bytes)));
        }
        Ok(())
    }

    /// Which of `addrs` (what `name` resolved to) a forwarded connection may go to on `port`:
    /// all of them in `edit` and `bypass`, those a `forward_allow` rule matches in `plan`.
    /// For a destination resolved elsewhere (an SSH host's `direct-tcpip`), `addrs` holds
    /// the name's own address if it is an IP literal, else nothing.
    pub fn check_forward(&self, name: &str, port: u16, addrs: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
        match self.mode {
            Mode::Disabled => Err(Refusal::new("mode disabled refuses everything")),
            Mode::Edit | Mode::Bypass => Ok(addrs.to_vec()),
            Mode::Plan => {
                let allowed = |a: Option<IpAddr>| self.forward_allow.iter().any(|r| r.allows(name, a, port));
                if addrs.is_empty() && allowed(None) {
                    return Ok(vec![]);
                }
                let kept: Vec<IpAddr> = addrs.iter().copied().filter(|a| allowed(Some(*a))).collect();
                if kept.is_empty() {
                    return Err(Refusal::new(format!(
                        "mode plan forwards only to forward_allow destinations, and none matches {}",
                        host_port(name, port)
                    )));
                }
                Ok(kept)
            }
        }
    }

    /// Whether a remote forward's listener may bind `bind:port` here. Anything but loopback
    /// needs the caller's explicit `public`; `plan` needs a matching `forward_allow` rule.
    pub fn check_listen(&self, bind: IpAddr, port: u16, public: bool) -> Result<(), Refusal> {
        if self.mode == Mode::Disabled {
            return Err(Refusal::new("mode disabled refuses everything"));
        }
        if !bind.is_loopback() && !public {
            return Err(Refusal::new(format!(
                "binding {} reaches beyond this machine and needs the caller's --public",
                host_port(&bind.to_string(), port)
            )));
        }
        if self.mode == Mode::Plan && !self.forward_allow.iter().any(|r| r.allows(&bind.to_string(), Some(bind), port))
        {
            return Err(Refusal::new(format!(
                "mode plan listens only where forward_allow allows, and nothing matches {}",
                host_port(&bind.to_string(), port)
            )));
        }
        Ok(())
    }

    /// Whether a command may run on an SSH host this node reaches (the jump node's policy
    /// governs its hosts). In plan mode only allow-listed read-only programs, as argv.
    pub fn check_remote_command(&self, cmd: &CommandLine, cwd: Option<&str>) -> Result<(), Refusal> {
        commands::hard_deny(cmd)?;
        match self.mode {
            Mode::Disabled => return Err(Refusal::new("mode disabled refuses everything")),
            Mode::Plan => {
                commands::plan_allows_remote(cmd)?;
                if let CommandLine::Argv(argv) = cmd {
                    self.check_remote_args(argv, cwd)?;
                }
            }
            Mode::Edit | Mode::Bypass => {}
        }
        self.check_command_lists(&commands::program_names(cmd))
    }

    /// A host that runs nothing of ours cannot be sandboxed: at least no argument may name a
    /// secret there (relative ones taken from `cwd`, or from any home when there is none), and
    /// no recursive read may walk over one.
    fn check_remote_args(&self, argv: &[String], cwd: Option<&str>) -> Result<(), Refusal> {
        let places = |word: &str| -> Vec<PathBuf> {
            let path = word.rsplit_once('=').map_or(word, |(_, v)| v);
            if path.is_empty() || path.starts_with('-') {
                return vec![];
            }
            let bases: Vec<&str> = match cwd {
                _ if path.starts_with('/') => vec![""],
                Some(dir) => vec![dir],
                // The login directory: some user's home.
                None => vec!["/root", "/home/*"],
            };
            bases.iter().map(|base| lexical(&std::path::Path::new(base).join(path))).collect()
        };
        for word in &argv[1..] {
            for place in places(word) {
                self.secrets.check_remote_read(&place)?;
            }
        }
        for tree in args::recursive_reads(commands::basename(&argv[0]), &argv[1..]).unwrap_or_default() {
            for place in places(&tree) {
                self.secrets.check_remote_tree(&place)?;
            }
        }
        Ok(())
    }

    /// Whether an SSH host's file may be accessed as `access`. Paths there cannot be
    /// canonicalized from here, so they must be absolute and free of `..`; the mode decides
    /// reads and writes, and the deny/allow path lists apply to the path as written.
    pub fn check_remote_path(&self, path: &str, access: PathAccess) -> Result<(), Refusal> {
        match (self.mode, access) {
            (Mode::Disabled, _) => return Err(Refusal::new("mode disabled refuses everything")),
            (Mode::Plan, PathAccess::Write) => {
                return Err(Refusal::new(format!("mode plan does not allow writes (path {path})")))
            }
            _ => {}
        }
        let p = std::path::Path::new(path);
        if !p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(Refusal::new(format!("path {path:?} on an SSH host must be absolute, without `..`")));
        }
        if let Some(denied) = self.deny_paths.iter().find(|d| p.starts_with(d)) {
            return Err(Refusal::new(format!("deny_paths contains {} (path {path})", denied.display())));
        }
        if !self.allow_paths.is_empty() && !self.allow_paths.iter().any(|a| p.starts_with(a)) {
            return Err(Refusal::new(format!("path {path} is outside allow_paths")));
        }
        if access == PathAccess::Read {
            self.secrets.check_remote_read(p)?;
        }
        Ok(())
    }

    /// [`Policy::check_path`] for a file operation through the mesh: also never a secret for
    /// reading, nor the node's own state or (in `plan` and `edit`) its config, unit or binary
    /// for writing. `operator` (the local CLI) is not held to the secret list.
    pub fn check_file(&self, path: impl AsRef<Path>, access: PathAccess, operator: bool) -> Result<PathBuf, Refusal> {
        let canonical = self.check_path(path, access)?;
        if !operator {
            match access {
                PathAccess::Read => self.secrets.check_read(&canonical)?,
                PathAccess::Write => self.secrets.check_write(&canonical, self.mode)?,
            }
        }
        Ok(canonical)
    }

    /// Whether `path` may be accessed as `access`; returns the canonical path to use.
    pub fn check_path(&self, path: impl AsRef<Path>, access: PathAccess) -> Result<PathBuf, Refusal> {
        let path = path.as_ref();
        match (self.mode, access) {
            (Mode::Disabled, _) => return Err(Refusal::new("mode disabled refuses everything")),
            (Mode::Plan, PathAccess::Write) => {
                return Err(Refusal::new(format!("mode plan does not allow writes (path {})", path.display())))
            }
            _ => {}
        }
        let canonical =
            canonical_target(path).map_err(|e| Refusal::new(format!("path {:?}: {e}", path.display().to_string())))?;
        if let Some(denied) = self.deny_paths.iter().find(|d| canonical.starts_with(d)) {
            return Err(Refusal::new(format!(
                "deny_paths contains {} (path {})",
                denied.display(),
                canonical.display()
            )));
        }
        if !self.allow_paths.is_empty() && !self.allow_paths.iter().any(|a| canonical.starts_with(a)) {
            return Err(Refusal::new(format!("path {} is outside allow_paths", canonical.display())));
        }
        Ok(canonical)
    }
}

/// `path` with `.` and `..` taken away without looking at any file system (a remote one).
fn lexical(path: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> CommandLine {
        CommandLine::argv(words.iter().map(|w| w.to_string()).collect())
    }

    fn plan() -> Policy {
        Policy::default()
    }

    fn mode(mode: Mode) -> Policy {
        Policy { mode, ..Policy::default() }
    }

    #[track_caller]
    fn refused(p: &Policy, cmd: CommandLine, needle: &str) {
        let err = p.check_command(&cmd).expect_err(&format!("{cmd:?} must be refused"));
        assert!(err.to_string().contains(needle), "{cmd:?}: {err} (wanted {needle:?})");
        assert!(err.to_string().starts_with("refused by policy: "), "{err}");
    }

    #[test]
    fn plan_allows_read_only_commands() {
        for cmd in [
            vec!["uname", "-a"],
            vec!["ls", "-la", "/"],
            vec!["cat", "/etc/hostname"],
            vec!["df", "-h"],
            vec!["ps", "aux"],
            vec!["grep", "-r", "root", "/etc/passwd"],
            vec!["find", "/etc", "-name", "hosts"],
            vec!["sed", "-n", "1,3p", "/etc/passwd"],
            vec!["sed", "s/root/ROOT/g", "/etc/passwd"],
            vec!["awk", "-F:", "{print $1}", "/etc/passwd"],
            vec!["date", "+%s"],
            vec!["date", "-d", "yesterday", "+%F"],
            vec!["env"],
            vec!["true"],
            vec!["sort", "-k2", "-n", "-t:", "/etc/passwd"],
            vec!["sort", "--key=2", "--numeric-sort", "-u", "/etc/passwd"],
            vec!["awk", "-F", ":", "-v", "min=1000", "$3 >= min {print $1}", "/etc/passwd"],
            vec!["awk", "NR < 3 || $1 == \"root\"", "/etc/passwd"],
            vec!["sed", "-n", "-e", "1,3p", "-e", "/root/p", "/etc/passwd"],
            vec!["sed", "--quiet", "--regexp-extended", "s/(r)oot/\\1/p", "/etc/passwd"],
            vec!["grep", "-rn", "-A", "2", "--include=*.conf", "root", "/etc"],
            vec!["head", "-n", "5", "/etc/passwd"],
            vec!["tail", "-20", "/etc/passwd"],
            vec!["journalctl", "-u", "ssh", "-n", "50", "--no-pager", "-o", "short-iso"],
            vec!["systemctl", "status", "--no-pager", "ssh"],
            vec!["systemctl", "--type=service", "--state=running", "list-units"],
            vec!["ip", "-br", "addr"],
            vec!["ip", "-4", "route", "show"],
            vec!["ss", "-tlnp"],
            vec!["du", "-sh", "/var"],
            vec!["df", "-h", "--output=source,pcent"],
            vec!["file", "-b", "/bin/ls"],
            vec!["diff", "-u", "/etc/hostname", "/etc/hostname"],
            vec!["uniq", "-c", "/etc/hostname"],
            vec!["getent", "passwd", "root"],
            vec!["dmesg", "-T", "--level=err"],
            vec!["sysctl", "-a"],
            vec!["hostname", "-f"],
        ] {
            assert_eq!(plan().check_command(&argv(&cmd)), Ok(()), "{cmd:?}");
        }
    }

    #[test]
    fn plan_refuses_shells_wrappers_and_writing_flags() {
        let p = plan();
        refused(&p, CommandLine::Shell("uname -a".into()), "does not allow shell");
        refused(&p, argv(&["/bin/../bin/sh", "-c", "id"]), "only read-only system programs");
        refused(&p, argv(&["env", "sh", "-c", "id"]), "runs it");
        refused(&p, argv(&["busybox", "sh"]), "mode plan");
        refused(&p, argv(&["bash", "-c", "id"]), "only read-only system programs");
        refused(&p, argv(&["find", "/", "-exec", "rm", "{}", ";"]), "-exec");
        refused(&p, argv(&["find", "/tmp", "-delete"]), "-delete");
        refused(&p, argv(&["git", "-c", "core.pager=sh", "log"]), "-c");
        refused(&p, argv(&["git", "push"]), "not a read-only subcommand");
        refused(&p, argv(&["git", "diff", "--output=/tmp/x"]), "--output");
        refused(&p, argv(&["sed", "-i", "s/a/b/", "/etc/hosts"]), "-i");
        refused(&p, argv(&["sed", "-n", "1w /tmp/out", "/etc/hosts"]), "write");
        refused(&p, argv(&["sed", "s/a/b/w /tmp/out", "/etc/hosts"]), "s///w");
        refused(&p, argv(&["sed", "1e id", "/etc/hosts"]), "run commands");
        refused(&p, argv(&["awk", "BEGIN{system(\"id\")}"]), "system()");
        refused(&p, argv(&["awk", "{print > \"/tmp/x\"}"]), "redirection");
        refused(&p, argv(&["tee", "/etc/hosts"]), "only read-only system programs");
        refused(&p, argv(&["date", "-s", "2020-01-01"]), "-s");
        refused(&p, argv(&["hostname", "evil"]), "sets the host name");
        refused(&p, argv(&["sort", "-o", "/etc/passwd", "/etc/passwd"]), "-o");
        refused(&p, argv(&["no-such-program-xyz"]), "not found");
    }

    #[test]
    fn a_symlink_cannot_pass_for_an_allowed_program() {
        let dir = std::env::temp_dir().join(format!("tunnel-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("cat");
        let _ = std::fs::remove_file(&fake);
        std::os::unix::fs::symlink(resolve_program("sh").unwrap(), &fake).unwrap();
        refused(&plan(), argv(&[fake.to_str().unwrap(), "-c", "id"]), "only read-only system programs");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_command_is_judged_and_run_as_the_file_it_named_when_it_arrived() {
        let dir = crate::test_dirs::scratch("policy-swap");
        let link = dir.join("cat");
        std::os::unix::fs::symlink(resolve_program("cat").unwrap(), &link).unwrap();
        let cmd = argv(&[link.to_str().unwrap(), "/etc/hostname"]);
        assert_eq!(plan().check_command(&cmd), Ok(()));
        // Swapped for a shell after the check: the command still names the file checked.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(resolve_program("sh").unwrap(), &link).unwrap();
        let CommandLine::Argv(words) = &cmd else { unreachable!() };
        assert_eq!(words.program(), resolve_program("cat").as_deref());
        assert_eq!(plan().check_command(&cmd), Ok(()), "judged again, the same file");
        refused(&plan(), argv(&[link.to_str().unwrap(), "-c", "id"]), "only read-only system programs");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hard_deny_applies_in_every_mode() {
        for m in [Mode::Plan, Mode::Edit, Mode::Bypass] {
            let p = mode(m);
            refused(&p, argv(&["mkfs.ext4", "/dev/sdb1"]), "hard deny");
            refused(&p, argv(&["rm", "-rf", "/"]), "hard deny");
            refused(&p, argv(&["rm", "-r", "-f", "--no-preserve-root", "/"]), "hard deny");
            refused(&p, argv(&["sudo", "rm", "-fr", "/"]), "hard deny");
            refused(&p, argv(&["env", "FOO=1", "dd", "if=/dev/zero", "of=/dev/sda"]), "hard deny");
            refused(&p, argv(&["sh", "-c", "rm -rf /"]), "hard deny");
            refused(&p, CommandLine::Shell(":(){ :|:& };:".into()), "fork bomb");
            refused(&p, CommandLine::Shell("echo hi; mkfs.xfs /dev/nvme0n1".into()), "hard deny");
        }
        assert_eq!(mode(Mode::Bypass).check_command(&argv(&["rm", "-rf", "/tmp/some-dir"])), Ok(()));
        assert_eq!(mode(Mode::Bypass).check_command(&argv(&["dd", "if=/dev/zero", "of=/tmp/x", "count=1"])), Ok(()));
    }

    #[test]
    fn deny_commands_see_through_paths_wrappers_and_shells() {
        let p = Policy {
            mode: Mode::Bypass,
            deny_commands: vec!["sh".into(), "bash".into(), "dash".into()],
            ..Policy::default()
        };
        refused(&p, argv(&["/bin/../bin/sh", "-c", "id"]), "deny_commands");
        refused(&p, argv(&["env", "sh", "-c", "id"]), "deny_commands");
        refused(&p, argv(&["busybox", "sh"]), "deny_commands");
        refused(&p, argv(&["bash", "-c", "id"]), "deny_commands");
        refused(&p, argv(&["nice", "-n", "5", "sh"]), "deny_commands");
        refused(&p, CommandLine::Shell("id".into()), "deny_commands");
        assert_eq!(p.check_command(&argv(&["id"])), Ok(()));
        let only = Policy { mode: Mode::Edit, allow_commands: vec!["id".into()], ..Policy::default() };
        assert_eq!(only.check_command(&argv(&["id"])), Ok(()));
        refused(&only, argv(&["env", "id"]), "allow_commands");
        refused(&mode(Mode::Disabled), argv(&["id"]), "disabled");
    }

    #[test]
    fn paths_are_judged_where_they_lead() {
        let root = std::env::temp_dir().join(format!("tunnel-policy-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["app", "app-evil", "secret"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let root = std::fs::canonicalize(&root).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("app/link")).unwrap();
        let p = Policy { mode: Mode::Edit, allow_paths: vec![root.join("app")], ..Policy::default() };
        let s = |rel: &str| root.join(rel).to_str().unwrap().to_owned();
        assert_eq!(p.check_path(s("app/new.txt"), PathAccess::Write), Ok(root.join("app/new.txt")));
        for escape in ["app-evil/x", "app/../secret/x", "app/link/x"] {
            let err = p.check_path(s(escape), PathAccess::Write).unwrap_err().to_string();
            assert!(err.contains("outside allow_paths"), "{escape}: {err}");
        }
        let denied = Policy { mode: Mode::Edit, deny_paths: vec![root.join("secret")], ..Policy::default() };
        assert!(denied.check_path(s("app/link/x"), PathAccess::Read).unwrap_err().to_string().contains("deny_paths"));
        let err = plan().check_path("/etc/hosts", PathAccess::Write).unwrap_err().to_string();
        assert_eq!(err, "refused by policy: mode plan does not allow writes (path /etc/hosts)");
        assert!(plan().check_path("etc/hosts", PathAccess::Read).unwrap_err().to_string().contains("absolute"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn callers_and_admins() {
        let a = NodeId::from_bytes([1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        let p = Policy { allow: Some(vec![a]), admins: vec![a], ..Policy::default() };
        assert_eq!(p.check_caller(&a), Ok(()));
        assert!(p.check_caller(&b).unwrap_err().to_string().contains("allow list"));
        assert_eq!(p.check_set_mode(None), Ok(()));
        assert_eq!(p.check_set_mode(Some(&a)), Ok(()));
        assert!(p.check_set_mode(Some(&b)).unwrap_err().to_string().contains("not an admin"));
    }

    #[test]
    fn audit_readers_are_admins_and_the_allow_list() {
        let (admin, listed, other) =
            (NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]), NodeId::from_bytes([3; 32]));
        let open = Policy { admins: vec![admin], ..Policy::default() };
        assert_eq!(open.check_audit_reader(&admin), Ok(()));
        // Everyone may operate a node with no allow list; not everyone may read its log.
        assert!(open.check_audit_reader(&listed).unwrap_err().to_string().contains("only its admins may"));
        let listing = Policy { allow: Some(vec![listed]), admins: vec![admin], ..Policy::default() };
        assert_eq!(listing.check_audit_reader(&admin), Ok(()));
        assert_eq!(listing.check_audit_reader(&listed), Ok(()));
        assert!(listing.check_audit_reader(&other).unwrap_err().to_string().contains("admins and allow list"));
    }
}
