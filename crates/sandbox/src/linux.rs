//! Landlock on Linux: the ruleset built in the node, applied in the child.

#![allow(unsafe_code)] // the kernel ABI probe and the pre-exec hook

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Mutex;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset as LlRuleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::{tree, SandboxError, Spec, Support, Writes};

/// The newest ABI whose rights we use; older kernels get what they support of it.
const TARGET_ABI: ABI = ABI::V6;
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
/// `<linux/capability.h>`.
const CAP_SYS_PTRACE: libc::c_ulong = 19;

pub(crate) struct Ruleset {
    landlock: RulesetCreated,
    /// Drop `CAP_SYS_PTRACE` from the bounding set: a root command then cannot read another
    /// process's memory or environment (the node is not dumpable), which Landlock's own ptrace
    /// scoping does not stop for `/proc/PID/environ` reads.
    drop_ptrace: bool,
}

pub(crate) fn support() -> Support {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call only returns the ABI
    // version (or an error); it touches no memory of ours.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    match u32::try_from(v) {
        Ok(abi) if abi >= 1 => Support::Landlock(abi),
        _ => Support::None,
    }
}

fn build(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Build(e.to_string())
}

/// Rulesets built lately, reused while every path they were computed from is unchanged
/// (building one walks directories and opens hundreds of paths; reusing one is a `dup`).
const CACHED_MAX: usize = 16;

struct Cached {
    spec: Spec,
    stamps: Vec<tree::Stamp>,
    ruleset: RulesetCreated,
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

pub(crate) fn prepare(spec: &Spec) -> Result<Ruleset, SandboxError> {
    let kernel = support();
    if kernel == Support::None {
        return Err(SandboxError::Unsupported(kernel));
    }
    let drop_ptrace = spec.isolate;
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = cache.iter().position(|c| c.spec == *spec) {
            if cache[at].stamps.iter().all(tree::Stamp::holds) {
                let landlock = cache[at].ruleset.try_clone().map_err(build)?;
                return Ok(Ruleset { landlock, drop_ptrace });
            }
            cache.remove(at);
        }
    }
    let mut stamps = Vec::new();
    let landlock = build_ruleset(spec, &mut stamps)?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(ruleset) = landlock.try_clone() {
        if cache.len() == CACHED_MAX {
            cache.remove(0);
        }
        cache.push(Cached { spec: spec.clone(), stamps, ruleset });
    }
    Ok(Ruleset { landlock, drop_ptrace })
}

fn build_ruleset(spec: &Spec, stamps: &mut Vec<tree::Stamp>) -> Result<RulesetCreated, SandboxError> {
    let mut handled = BitFlags::<AccessFs>::EMPTY;
    if !spec.unreadable.is_empty() {
        handled |= AccessFs::ReadFile;
    }
    let write_rights = match &spec.writes {
        Writes::Anywhere => BitFlags::EMPTY,
        // Device ioctls (a terminal's TIOCSTI, say) are writes too for a read-only command.
        Writes::Nothing => AccessFs::from_write(TARGET_ABI),
        Writes::AllBut(_) | Writes::Beneath { .. } => AccessFs::from_write(TARGET_ABI) & !AccessFs::IoctlDev,
    };
    handled |= write_rights;
    if spec.exec_only.is_some() {
        handled |= AccessFs::Execute;
    }
    let mut ruleset =
        LlRuleset::default().set_compatibility(CompatLevel::BestEffort).handle_access(handled).map_err(build)?;
    if spec.isolate {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(build)?
            .scope(Scope::from_all(TARGET_ABI))
            .map_err(build)?;
    }
    let mut created = ruleset.create().map_err(build)?;
    let slash = || vec![PathBuf::from("/")];
    if !spec.unreadable.is_empty() {
        created = add(created, tree::grants(&slash(), &spec.unreadable, stamps), AccessFs::ReadFile.into())?;
    }
    let dev_null = |stamps: &mut Vec<tree::Stamp>| tree::grants(&[PathBuf::from("/dev/null")], &[], stamps);
    let null_rights = AccessFs::WriteFile | AccessFs::Truncate;
    match &spec.writes {
        Writes::Anywhere => {}
        Writes::Nothing => created = add(created, dev_null(stamps), null_rights)?,
        Writes::AllBut(protected) => created = add(created, tree::grants(&slash(), protected, stamps), write_rights)?,
        Writes::Beneath { roots, except } => {
            created = add(created, tree::grants(roots, except, stamps), write_rights)?;
            created = add(created, dev_null(stamps), null_rights)?;
        }
    }
    for program in spec.exec_only.iter().flatten() {
        let interp = crate::elf::interpreter(program).map_err(|why| SandboxError::Program(program.clone(), why))?;
        for path in std::iter::once(program.clone()).chain(interp) {
            let grants = tree::grants(std::slice::from_ref(&path), &[], stamps).map_err(build)?;
            if grants.is_empty() {
                return Err(SandboxError::Program(program.clone(), format!("{} is missing", path.display())));
            }
            created = add(created, Ok(grants), AccessFs::Execute.into())?;
        }
    }
    Ok(created)
}

/// Adds a rule granting `rights` (those that apply to a file, for a file) on each of `grants`.
fn add(
    mut created: RulesetCreated,
    grants: Result<Vec<tree::Grant>, String>,
    rights: BitFlags<AccessFs>,
) -> Result<RulesetCreated, SandboxError> {
    let file_rights = AccessFs::from_file(TARGET_ABI);
    for g in grants.map_err(build)? {
        let rights = if g.is_dir { rights } else { rights & file_rights };
        if !rights.is_empty() {
            created = created.add_rule(PathBeneath::new(g.fd, rights)).map_err(build)?;
        }
    }
    Ok(created)
}

pub(crate) fn confine(command: &mut std::process::Command, ruleset: Ruleset) {
    let drop_ptrace = ruleset.drop_ptrace;
    let mut slot = Some(ruleset.landlock);
    let hook = move || -> std::io::Result<()> {
        // Between fork and exec only async-signal-safe work: plain syscalls (prctl,
        // landlock_restrict_self), no allocation.
        let ruleset = slot.take().ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory. Without
        // CAP_SETPCAP (not root) it fails with EPERM, and such a process has no capability to drop.
        if drop_ptrace && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(err);
            }
        }
        match ruleset.restrict_self() {
            Ok(s) if s.ruleset != RulesetStatus::NotEnforced => Ok(()),
            Ok(_) => Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    };
    // SAFETY: the hook runs in the child between fork and exec and only makes syscalls.
    unsafe {
        command.pre_exec(hook);
    }
}
