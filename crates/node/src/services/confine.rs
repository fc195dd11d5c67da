//! The kernel's half of policy: what confinement a command gets before it runs.
//!
//! - `plan`: no writes (but its own stdout/stderr and `/dev/null`), no program but the one
//!   policy allowed (and its ELF loader), no reads of the secret list, no TCP, no signals or
//!   abstract sockets beyond itself. Whatever its options say.
//! - `edit`: in a mount namespace of its own (inside a user namespace when the node is not
//!   root) where the node's state and runtime directories (key, audit log, backups, control
//!   socket) are hidden and its config, service unit and binary are read-only; nothing else
//!   changes. With `edit_sandbox`, writes only beneath those roots (Landlock). Where no such
//!   namespace can be made (not root, user namespaces closed), `edit` commands run as the
//!   node's user, unconfined unless `edit_sandbox` is set.
//! - `bypass`: none.
//!
//! Where the kernel has no Landlock, `plan` falls back to the argument checks alone (or refuses,
//! with `plan_requires_sandbox`) and `edit` runs unconfined; `tunnel info` says which.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tunnel_sandbox::{Prepared, SandboxError, Shield, Spec, Stamp, Writes};

use crate::policy::{CommandLine, Mode, Policy, Refusal};

/// What confinement needs from the policy, taken out of its lock.
pub(crate) struct Plan {
    mode: Mode,
    secrets: crate::policy::Secrets,
    plan_requires_sandbox: bool,
    edit_sandbox: Option<Vec<PathBuf>>,
}

impl Plan {
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The same, confined as in edit mode: for a program the operator vouched for in plan
    /// mode (a task agent's read-only invocation), which must write its own state.
    pub(crate) fn confined_as_edit(self) -> Self {
        Self { mode: Mode::Edit, ..self }
    }

    pub(crate) fn of(policy: &Policy) -> Self {
        Self {
            mode: policy.mode,
            secrets: policy.secrets.clone(),
            plan_requires_sandbox: policy.plan_requires_sandbox,
            edit_sandbox: policy.edit_sandbox.clone(),
        }
    }
}

/// The sandbox for `cmd` (already allowed by policy in `plan.mode`); `None` to run it as is.
/// Blocking: it walks the directories around the protected paths.
pub(crate) fn prepare(plan: &Plan, cmd: &CommandLine) -> Result<Option<Prepared>, Refusal> {
    match spec_of(plan, cmd)? {
        Some(spec) => decide(plan, tunnel_sandbox::prepare(&spec)),
        None => Ok(None),
    }
}

/// [`prepare`] when nothing needs a walk of the disk: the protected paths were looked up
/// lately and the sandbox for them is kept. Quick enough for an async task (a few `statx`),
/// and saves the hop to a blocking thread and back. `None` when [`prepare`] must run.
pub(crate) fn prepare_kept(plan: &Plan, cmd: &CommandLine) -> Option<Result<Option<Prepared>, Refusal>> {
    if matches!(plan.mode, Mode::Bypass | Mode::Disabled) {
        return Some(Ok(None));
    }
    if !plan.secrets.on_disk_is_fresh() {
        return None;
    }
    match spec_of(plan, cmd) {
        Ok(Some(spec)) => tunnel_sandbox::prepare_kept(&spec).map(|prepared| decide(plan, prepared)),
        other => Some(other.map(|_| None)),
    }
}

/// What the kernel must confine `cmd` to; `None` for nothing.
fn spec_of(plan: &Plan, cmd: &CommandLine) -> Result<Option<Spec>, Refusal> {
    let spec = match plan.mode {
        Mode::Plan => {
            let CommandLine::Argv(argv) = cmd else {
                return Err(Refusal::new("mode plan does not allow shell commands; send the command as argv"));
            };
            let program = argv.program().ok_or_else(|| Refusal::new("mode plan: the program is not found"))?;
            let mut unreadable = plan.secrets.unreadable();
            unreadable.extend(block_devices());
            Spec {
                unreadable,
                writes: Writes::Nothing,
                exec_only: Some(vec![program.to_owned()]),
                isolate: true,
                shield: Shield::default(),
            }
        }
        Mode::Edit => Spec {
            writes: match &plan.edit_sandbox {
                Some(roots) => Writes::Beneath { roots: roots.clone(), except: plan.secrets.unwritable() },
                None => Writes::Anywhere,
            },
            shield: if tunnel_sandbox::shield_support() {
                Shield { hide: plan.secrets.own(), read_only: plan.secrets.read_only() }
            } else {
                Shield::default()
            },
            ..Spec::default()
        },
        Mode::Bypass | Mode::Disabled => return Ok(None),
    };
    // edit, no shield possible, no edit_sandbox: nothing to confine (see the module doc).
    Ok((spec != Spec { writes: Writes::Anywhere, ..Spec::default() }).then_some(spec))
}

/// What a command gets once the kernel answered: its sandbox, none (where the kernel has no
/// Landlock and plan mode may fall back), or a refusal.
fn decide(plan: &Plan, prepared: Result<Prepared, SandboxError>) -> Result<Option<Prepared>, Refusal> {
    match prepared {
        Ok(prepared) => Ok(Some(prepared)),
        Err(SandboxError::Unsupported(support)) => {
            if plan.mode == Mode::Plan && plan.plan_requires_sandbox {
                return Err(Refusal::new(format!(
                    "plan_requires_sandbox is set and this node cannot confine commands (sandbox: {support})"
                )));
            }
            warn_once(&support);
            Ok(None)
        }
        Err(e) => Err(Refusal::new(format!("mode {}: {e}", plan.mode))),
    }
}

/// Block devices: a raw disk holds every secret on it. From `/dev` and its directories one
/// level down (the links in `/dev/disk/by-*` and `/dev/mapper` lead to these). Listed again
/// only when one of those directories changed: a device appearing or going changes its
/// directory, a directory appearing changes `/dev`.
fn block_devices() -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    static KEPT: Mutex<Option<(Vec<Stamp>, Vec<PathBuf>)>> = Mutex::new(None);
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((stamps, devices)) = kept.as_ref() {
        if stamps.iter().all(Stamp::holds) {
            return devices.clone();
        }
    }
    let list = |dir: &Path| {
        std::fs::read_dir(dir).into_iter().flatten().flatten().filter_map(|e| Some((e.path(), e.file_type().ok()?)))
    };
    // Stamped before listing: a change during the listing shows next time.
    let mut stamps = vec![Stamp::of(Path::new("/dev"))];
    let mut out = Vec::new();
    for (path, kind) in list(Path::new("/dev")) {
        if kind.is_block_device() {
            out.push(path);
        } else if kind.is_dir() {
            stamps.push(Stamp::of(&path));
            out.extend(list(&path).filter(|(_, k)| k.is_block_device()).map(|(p, _)| p));
        }
    }
    *kept = Some((stamps, out.clone()));
    out
}

fn warn_once(support: &tunnel_sandbox::Support) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            sandbox = %support,
            "commands run without kernel confinement: plan mode relies on its argument checks alone"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_sandbox::Support;

    fn plan(mode: Mode, requires: bool) -> Plan {
        Plan { mode, secrets: crate::policy::Secrets::default(), plan_requires_sandbox: requires, edit_sandbox: None }
    }

    #[test]
    fn without_landlock_plan_falls_back_or_refuses_as_configured() {
        let none = || Err(SandboxError::Unsupported(Support::None));
        assert!(matches!(decide(&plan(Mode::Plan, false), none()), Ok(None)));
        let err = decide(&plan(Mode::Plan, true), none()).unwrap_err().to_string();
        assert!(err.contains("plan_requires_sandbox") && err.contains("none"), "{err}");
        assert!(matches!(decide(&plan(Mode::Edit, true), none()), Ok(None)), "edit never needs it");
        let err = decide(&plan(Mode::Plan, false), Err(SandboxError::Build("boom".into()))).unwrap_err();
        assert!(err.to_string().contains("boom"), "a sandbox that cannot be built refuses: {err}");
    }

    #[test]
    fn plan_mode_confines_its_one_program() {
        if tunnel_sandbox::support() == Support::None {
            return;
        }
        let cmd = CommandLine::argv(vec!["cat".into(), "/etc/hostname".into()]);
        assert!(prepare(&plan(Mode::Plan, false), &cmd).unwrap().is_some());
        assert!(prepare(&plan(Mode::Bypass, false), &cmd).unwrap().is_none());
        let state = crate::test_dirs::scratch("confine-state");
        let sources = crate::policy::SecretSources { state_dir: Some(state.clone()), ..Default::default() };
        let edit = Plan { secrets: crate::policy::Secrets::new(&sources).unwrap(), ..plan(Mode::Edit, false) };
        let confined = prepare(&edit, &cmd).unwrap().is_some();
        assert_eq!(confined, tunnel_sandbox::shield_support(), "edit is confined exactly when it can be shielded");
        std::fs::remove_dir_all(&state).unwrap();
        let shell = CommandLine::Shell("id".into());
        assert!(prepare(&plan(Mode::Plan, false), &shell).is_err());
    }

    #[test]
    fn a_kept_sandbox_is_had_without_a_blocking_thread_and_only_then() {
        if tunnel_sandbox::support() == Support::None {
            return;
        }
        let state = crate::test_dirs::scratch("confine-kept");
        let sources = crate::policy::SecretSources { state_dir: Some(state.clone()), ..Default::default() };
        let planned = Plan { secrets: crate::policy::Secrets::new(&sources).unwrap(), ..plan(Mode::Plan, false) };
        let cmd = CommandLine::argv(vec!["cat".into(), "/etc/hostname".into()]);
        assert!(prepare_kept(&planned, &cmd).is_none(), "nothing looked up yet: the blocking path builds it");
        // Other tests make and remove directories beside the state directory, which makes a
        // kept sandbox stale (as it must): a few tries.
        let kept = (0..20).any(|_| {
            assert!(prepare(&planned, &cmd).unwrap().is_some());
            matches!(prepare_kept(&planned, &cmd), Some(Ok(Some(_))))
        });
        assert!(kept, "once built, the sandbox is kept");
        let shell = CommandLine::Shell("id".into());
        assert!(matches!(prepare_kept(&planned, &shell), Some(Err(_))), "refused as by prepare");
        assert!(matches!(prepare_kept(&plan(Mode::Bypass, false), &cmd), Some(Ok(None))));
        std::fs::remove_dir_all(&state).unwrap();
    }
}
