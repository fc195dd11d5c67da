//! Landlock on Linux: the ruleset built in the node, applied by a thread kept confined for it
//! or in a forked child.

#![allow(unsafe_code)] // the kernel ABI probe and the pre-exec hook

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset as LlRuleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::spawner::Spawner;
use crate::{tree, SandboxError, Spec, Stamp, Support, Writes};

/// The newest ABI whose rights we use; older kernels get what they support of it.
const TARGET_ABI: ABI = ABI::V6;
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
/// `<linux/capability.h>`.
const CAP_SYS_PTRACE: libc::c_ulong = 19;

/// A prepared confinement: how the command will be started confined.
pub(crate) enum Ruleset {
    /// By the thread kept for this ruleset (see `spawner`).
    Thread(Arc<Spawner>),
    /// In a forked child that applies it between fork and exec: a shield needs a mount
    /// namespace of its own, which one thread of many cannot unshare.
    Fork {
        landlock: RulesetCreated,
        /// Mounts to make in a new mount namespace before the ruleset applies.
        shield: Mounts,
        /// Drop `CAP_SYS_PTRACE` from the bounding set (an isolated command): a root command
        /// then cannot read the memory of a process that is not dumpable (the node, whose key
        /// is in it). `/proc/PID/environ` stays readable to same-user commands: neither this
        /// nor Landlock scopes that read.
        drop_ptrace: bool,
    },
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
/// (building one walks directories and opens hundreds of paths; reusing one costs a few
/// `statx`).
const CACHED_MAX: usize = 16;

struct Cached {
    spec: Spec,
    stamps: Vec<Stamp>,
    kept: Kept,
}

/// What the cache keeps of a ruleset.
enum Kept {
    /// The thread confined by it, for a spec without a shield.
    Thread(Arc<Spawner>),
    /// The ruleset, duplicated for each forked child.
    Ruleset(RulesetCreated),
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

pub(crate) fn prepare(spec: &Spec) -> Result<Ruleset, SandboxError> {
    match kept(spec, shield_of(spec)?) {
        Ok(ruleset) => ruleset,
        Err(shield) => build_and_keep(spec, shield),
    }
}

/// The kept ruleset for `spec`, if there is one and every path it was computed from is
/// unchanged (a few `statx`, no walk), or why there can be none.
pub(crate) fn prepare_kept(spec: &Spec) -> Option<Result<Ruleset, SandboxError>> {
    match shield_of(spec) {
        Ok(shield) => kept(spec, shield).ok(),
        Err(e) => Some(Err(e)),
    }
}

/// What every ruleset needs first: a kernel with Landlock, and the mounts of `spec`'s shield.
fn shield_of(spec: &Spec) -> Result<Option<Mounts>, SandboxError> {
    let kernel = support();
    if kernel == Support::None {
        return Err(SandboxError::Unsupported(kernel));
    }
    if spec.shield.is_empty() {
        return Ok(None);
    }
    Mounts::new(&spec.shield).map(Some)
}

/// The kept ruleset for `spec` while it holds (a stale one is dropped); else `shield` back, for
/// a build.
fn kept(spec: &Spec, shield: Option<Mounts>) -> Result<Result<Ruleset, SandboxError>, Option<Mounts>> {
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(at) = cache.iter().position(|c| c.spec == *spec) else { return Err(shield) };
    if !cache[at].stamps.iter().all(Stamp::holds) {
        cache.remove(at);
        return Err(shield);
    }
    Ok(match (&cache[at].kept, shield) {
        (Kept::Thread(spawner), None) => Ok(Ruleset::Thread(spawner.clone())),
        (Kept::Ruleset(ruleset), Some(shield)) => ruleset
            .try_clone()
            .map(|landlock| Ruleset::Fork { landlock, shield, drop_ptrace: spec.isolate })
            .map_err(build),
        _ => unreachable!("the same spec, with or without a shield"),
    })
}

fn build_and_keep(spec: &Spec, shield: Option<Mounts>) -> Result<Ruleset, SandboxError> {
    let mut stamps = Vec::new();
    let landlock = build_ruleset(spec, &mut stamps)?;
    let (ruleset, kept) = match shield {
        Some(shield) => {
            let kept = landlock.try_clone().ok().map(Kept::Ruleset);
            (Ruleset::Fork { landlock, shield, drop_ptrace: spec.isolate }, kept)
        }
        None => {
            let isolate = spec.isolate;
            let spawner = Spawner::start(move || restrict_this_thread(landlock, isolate))
                .map_err(|e| SandboxError::Build(format!("confining the spawning thread: {e}")))?;
            (Ruleset::Thread(spawner.clone()), Some(Kept::Thread(spawner)))
        }
    };
    if let Some(kept) = kept {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() == CACHED_MAX {
            cache.remove(0);
        }
        cache.push(Cached { spec: spec.clone(), stamps, kept });
    }
    Ok(ruleset)
}

fn build_ruleset(spec: &Spec, stamps: &mut Vec<Stamp>) -> Result<RulesetCreated, SandboxError> {
    let mut handled = BitFlags::<AccessFs>::EMPTY;
    if !spec.unreadable.is_empty() {
        handled |= AccessFs::ReadFile;
    }
    let write_rights = match &spec.writes {
        Writes::Anywhere => BitFlags::EMPTY,
        // Device ioctls (a terminal's TIOCSTI, say) are writes too for a read-only command.
        Writes::Nothing => AccessFs::from_write(TARGET_ABI),
        Writes::Beneath { .. } => AccessFs::from_write(TARGET_ABI) & !AccessFs::IoctlDev,
    };
    handled |= write_rights;
    // Rights handled only to be granted on `/`. Where writes are free: linking or renaming a
    // file into another directory, which every Landlock ruleset refuses (EXDEV) unless it
    // handles and grants it (`git push` to a local repository, `mv` between directories); and
    // block-device nodes, so that the ruleset handles something even on a kernel without the
    // former: a ruleset that handles nothing does not refuse mount and umount (what keeps a
    // shield in place).
    let everywhere = match &spec.writes {
        Writes::Anywhere => AccessFs::Refer | AccessFs::MakeBlock,
        Writes::Nothing | Writes::Beneath { .. } => BitFlags::EMPTY,
    };
    handled |= everywhere;
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
    let dev_null = |stamps: &mut Vec<Stamp>| tree::grants(&[PathBuf::from("/dev/null")], &[], stamps);
    let null_rights = AccessFs::WriteFile | AccessFs::Truncate;
    match &spec.writes {
        Writes::Anywhere => {}
        Writes::Nothing => created = add(created, dev_null(stamps), null_rights)?,
        Writes::Beneath { roots, except } => {
            created = add(created, tree::grants(roots, except, stamps), write_rights)?;
            created = add(created, dev_null(stamps), null_rights)?;
        }
    }
    if !everywhere.is_empty() {
        created = add(created, tree::grants(&slash(), &[], stamps), everywhere)?;
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

/// The shield's mounts, with their paths ready for the child (which must not allocate).
pub(crate) struct Mounts {
    hide: Vec<CString>,
    read_only: Vec<CString>,
    /// For a user other than root: the uid and gid maps of its own user namespace.
    maps: Option<(Vec<u8>, Vec<u8>)>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Asked once: can this (non-root) user make a user namespace with a mount namespace?
pub(crate) fn shield_support() -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    is_root()
        || *PROBED.get_or_init(|| {
            let mut probe = std::process::Command::new("/bin/true");
            probe.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
            // SAFETY: the hook only makes one syscall.
            unsafe {
                probe.pre_exec(|| match libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
            probe.status().is_ok_and(|s| s.success())
        })
}

/// Writes `bytes` to the file at `path`: in the child, so plain syscalls only.
fn write_proc(path: &CStr, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path; `bytes` outlives the write; the descriptor is closed.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != bytes.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

const TMPFS: &CStr = c"tmpfs";
const ROOT: &CStr = c"/";

impl Mounts {
    fn new(shield: &crate::Shield) -> Result<Self, SandboxError> {
        if !shield_support() {
            return Err(SandboxError::NoShield);
        }
        let maps = (!is_root()).then(|| {
            // SAFETY: getuid and getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            (format!("{uid} {uid} 1").into_bytes(), format!("{gid} {gid} 1").into_bytes())
        });
        let c = |p: &PathBuf| CString::new(p.as_os_str().as_bytes()).map_err(build);
        // A path inside a hidden one is gone once that is covered, and needs nothing more.
        let hidden = |p: &&PathBuf| shield.hide.iter().any(|h| p.starts_with(h) && *p != h);
        let mut hide: Vec<&PathBuf> = shield.hide.iter().filter(|p| !hidden(p)).collect();
        hide.dedup();
        let read_only = shield.read_only.iter().filter(|p| !shield.hide.iter().any(|h| p.starts_with(h)));
        Ok(Self {
            hide: hide.into_iter().map(c).collect::<Result<_, _>>()?,
            read_only: read_only.map(c).collect::<Result<_, _>>()?,
            maps,
        })
    }

    /// In the child: a mount namespace of its own where nothing propagates back to the host,
    /// then the mounts.
    fn apply(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null
        // where mount(2) takes no value.
        unsafe {
            match &self.maps {
                None => check(libc::unshare(libc::CLONE_NEWNS))?,
                Some((uid_map, gid_map)) => {
                    check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                    // A node is not dumpable, so its /proc files (and this child's, until exec)
                    // belong to root: the maps could not be written. exec is microseconds away
                    // and resets this anyway.
                    check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
                    write_proc(c"/proc/self/setgroups", b"deny")?;
                    write_proc(c"/proc/self/uid_map", uid_map)?;
                    write_proc(c"/proc/self/gid_map", gid_map)?;
                }
            }
            check(libc::mount(null, ROOT.as_ptr(), null, libc::MS_REC | libc::MS_SLAVE, null.cast()))?;
            for p in &self.hide {
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                check(libc::mount(TMPFS.as_ptr(), p.as_ptr(), TMPFS.as_ptr(), flags, c"mode=0".as_ptr().cast()))?;
            }
            for p in &self.read_only {
                check(libc::mount(p.as_ptr(), p.as_ptr(), null, libc::MS_BIND | libc::MS_REC, null.cast()))?;
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                check(libc::mount(null, p.as_ptr(), null, flags, null.cast()))?;
            }
        }
        Ok(())
    }
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

/// Starts `command` confined by `ruleset`: on the ruleset's own thread, or for a shield from a
/// forked child that confines itself (see [`Ruleset`]).
pub(crate) fn spawn_confined<C: Send + 'static, T: Send + 'static>(
    ruleset: Ruleset,
    mut command: C,
    std_of: fn(&mut C) -> &mut std::process::Command,
    spawn: impl FnOnce(C) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match ruleset {
        Ruleset::Thread(spawner) => spawner.run(move || spawn(command)),
        Ruleset::Fork { landlock, shield, drop_ptrace } => {
            confine(std_of(&mut command), landlock, shield, drop_ptrace);
            spawn(command)
        }
    }
}

/// Confines the calling thread and whatever it starts from now on: `CAP_SYS_PTRACE` out of
/// the bounding set (when asked), then the Landlock ruleset. Plain syscalls and no allocation,
/// so it also serves between fork and exec.
fn restrict_this_thread(landlock: RulesetCreated, drop_ptrace: bool) -> std::io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory. Without
    // CAP_SETPCAP (not root) it fails with EPERM, and such a process has no capability to drop.
    if drop_ptrace && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(err);
        }
    }
    match landlock.restrict_self() {
        Ok(s) if s.ruleset != RulesetStatus::NotEnforced => Ok(()),
        Ok(_) => Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
        Err(_) => Err(std::io::Error::last_os_error()),
    }
}

fn confine(command: &mut std::process::Command, landlock: RulesetCreated, shield: Mounts, drop_ptrace: bool) {
    let mut slot = Some(landlock);
    let hook = move || -> std::io::Result<()> {
        // Between fork and exec only async-signal-safe work: plain syscalls (unshare, mount,
        // prctl, landlock_restrict_self), no allocation.
        let ruleset = slot.take().ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        shield.apply()?;
        restrict_this_thread(ruleset, drop_ptrace)
    };
    // SAFETY: the hook runs in the child between fork and exec and only makes syscalls.
    unsafe {
        command.pre_exec(hook);
    }
}
