//! Command rules: resolving the program a command will really run, the plan-mode allow-list
//! with its argument checks, and the hard deny list.
//!
//! The program is resolved through `PATH` and canonicalized, so `/bin/../bin/sh`, a symlink
//! named `cat` that points at a shell, or `busybox sh` cannot pass for something else.
//! Wrappers (`env`, `sudo`, `nice`, `timeout`, `xargs`, `busybox`, ...) are unwrapped for the
//! deny lists; in plan mode they are not allowed at all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::Refusal;

/// A command as a caller sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run directly, never through a shell.
    Argv(Argv),
    /// Run as `sh -c STRING`.
    Shell(String),
}

impl CommandLine {
    pub fn argv(words: Vec<String>) -> Self {
        Self::Argv(Argv { words, program: OnceLock::new() })
    }
}

/// A command's words, and the file its program resolves to, found once (when first asked):
/// every check and the spawn then judge and run the same file, whatever `PATH` or the file
/// system do meanwhile, and the lookup costs its syscalls once per request.
#[derive(Debug, Clone)]
pub struct Argv {
    words: Vec<String>,
    program: OnceLock<Option<PathBuf>>,
}

impl Argv {
    /// The program's file, as [`resolve_program`] finds it; `None` if there is none.
    pub fn program(&self) -> Option<&Path> {
        self.program.get_or_init(|| self.words.first().and_then(|w| resolve_program(w))).as_deref()
    }
}

impl std::ops::Deref for Argv {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.words
    }
}

impl PartialEq for Argv {
    fn eq(&self, other: &Self) -> bool {
        self.words == other.words
    }
}

impl Eq for Argv {}

/// Directories plan mode trusts to hold the real system tools.
const TRUSTED_DIRS: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/local/sbin"];

/// Programs that run another program given in their arguments.
const WRAPPERS: &[&str] = &[
    "env", "sudo", "doas", "nice", "nohup", "timeout", "stdbuf", "setsid", "ionice", "taskset", "chrt", "xargs",
    "busybox", "strace", "ltrace", "time", "flock", "unshare", "nsenter", "chroot", "runuser", "su", "watch",
    "command", "exec", "eval", "parallel",
];

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "busybox"];

/// Finds the file `argv0` names, as the kernel would run it: through `PATH` when it has no
/// slash, then with every symlink and `..` resolved.
pub fn resolve_program(argv0: &str) -> Option<PathBuf> {
    if argv0.is_empty() || argv0.contains('\0') {
        return None;
    }
    if argv0.contains('/') {
        return std::fs::canonicalize(argv0).ok().filter(|p| is_executable(p));
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(argv0))
        .find(|p| is_executable(p))
        .and_then(|p| std::fs::canonicalize(p).ok())
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

pub(super) fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Every program name a command involves: the name it was called by, what that resolves to,
/// and the same for every command a wrapper runs. Shell form is `sh`.
pub(crate) fn program_names(cmd: &CommandLine) -> Vec<String> {
    let mut names = Vec::new();
    let (mut argv, mut program): (&[String], Option<PathBuf>) = match cmd {
        CommandLine::Shell(_) => return vec!["sh".into()],
        CommandLine::Argv(a) => (a, a.program().map(Path::to_owned)),
    };
    while let Some(first) = argv.first() {
        names.push(basename(first).to_owned());
        if let Some(name) = program.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
            names.push(name.to_owned());
        }
        match wrapped(argv) {
            Some(rest) => {
                argv = rest;
                program = rest.first().and_then(|w| resolve_program(w));
            }
            None => break,
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The command a wrapper runs (its arguments after its own options), if `argv` is a wrapper.
fn wrapped(argv: &[String]) -> Option<&[String]> {
    let name = basename(argv.first()?);
    if !WRAPPERS.contains(&name) {
        return None;
    }
    if name == "busybox" {
        return argv.get(1).map(|_| &argv[1..]);
    }
    // Options that take a value, per wrapper; everything else starting with '-' is a flag.
    let takes_value: &[&str] = match name {
        "env" => &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
        "sudo" | "doas" => &["-u", "-g", "-C", "-h", "-p", "-U", "-r", "-t", "-D"],
        "nice" => &["-n", "--adjustment"],
        "timeout" => &["-s", "--signal", "-k", "--kill-after"],
        "stdbuf" => &["-i", "-o", "-e"],
        "ionice" => &["-c", "-n", "-p"],
        "xargs" => &["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter", "--max-args"],
        "flock" => &["-w", "--timeout", "-E", "--conflict-exit-code"],
        "nsenter" => &["-t", "--target"],
        "runuser" | "su" => &["-u", "-g", "-G", "--user", "--group", "-s", "--shell"],
        "watch" => &["-n", "--interval", "-d"],
        _ => &[],
    };
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        if name == "env" && arg.contains('=') && !arg.starts_with('-') {
            i += 1;
        } else if arg == "--" {
            i += 1;
            break;
        } else if arg.starts_with('-') && arg.len() > 1 {
            i += if takes_value.contains(&arg.as_str()) { 2 } else { 1 };
        } else {
            break;
        }
    }
    // Wrappers with a positional before the command.
    if matches!(name, "timeout" | "flock" | "chroot" | "taskset" | "chrt") {
        i += 1;
    }
    (i < argv.len()).then(|| &argv[i..])
}

/// The hard deny list: refused in every mode.
pub(crate) fn hard_deny(cmd: &CommandLine) -> Result<(), Refusal> {
    match cmd {
        CommandLine::Shell(script) => hard_deny_script(script),
        CommandLine::Argv(argv) => {
            hard_deny_argv(argv, argv.program())?;
            let mut rest: &[String] = argv;
            while let Some(inner) = wrapped(rest) {
                hard_deny_argv(inner, resolved(inner).as_deref())?;
                rest = inner;
            }
            Ok(())
        }
    }
}

fn deny(what: &str) -> Refusal {
    Refusal::new(format!("hard deny list: {what}"))
}

const BLOCK_DEVICES: &[&str] = &["sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "loop", "disk", "mapper/"];

/// The program `argv` would run, looked up now (for commands inside wrappers and scripts).
fn resolved(argv: &[String]) -> Option<PathBuf> {
    argv.first().and_then(|w| resolve_program(w))
}

/// `argv` against the hard deny list, `program` being the file its first word resolves to.
fn hard_deny_argv(argv: &[String], program: Option<&Path>) -> Result<(), Refusal> {
    let Some(first) = argv.first() else { return Ok(()) };
    let names: Vec<String> = std::iter::once(basename(first).to_owned())
        .chain(program.and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned)))
        .collect();
    let args = &argv[1..];
    for name in &names {
        if name.starts_with("mkfs") || name == "mke2fs" || name == "wipefs" {
            return Err(deny(&format!("{name} formats file systems")));
        }
        if name == "rm" {
            let recursive = args.iter().any(|a| {
                a == "--recursive"
                    || (a.starts_with('-') && !a.starts_with("--") && (a.contains('r') || a.contains('R')))
            });
            let root = args.iter().any(|a| a == "/" || a == "/*" || a == "--no-preserve-root");
            if recursive && root {
                return Err(deny("rm -r of the root directory"));
            }
        }
        if name == "dd" {
            if let Some(dev) = args.iter().find_map(|a| a.strip_prefix("of=/dev/")) {
                if BLOCK_DEVICES.iter().any(|b| dev.starts_with(b)) {
                    return Err(deny(&format!("dd onto block device /dev/{dev}")));
                }
            }
        }
        // A shell given a script is judged by its script.
        if SHELLS.contains(&name.as_str()) {
            if let Some(pos) =
                args.iter().position(|a| a == "-c" || (a.starts_with('-') && !a.starts_with("--") && a.contains('c')))
            {
                if let Some(script) = args.get(pos + 1) {
                    hard_deny_script(script)?;
                }
            }
        }
    }
    Ok(())
}

/// Best effort over shell text: a shell can build any command, so these catch the obvious
/// forms; modes and allow/deny lists refuse shell form where it cannot be checked.
fn hard_deny_script(script: &str) -> Result<(), Refusal> {
    let compact: String = script.split_whitespace().collect::<Vec<_>>().join(" ");
    let nospace: String = script.chars().filter(|c| !c.is_whitespace()).collect();
    if nospace.contains("(){") && nospace.contains("|") && nospace.contains("&") {
        if let Some(name) = nospace.split("(){").next().and_then(|h| h.rsplit([';', '\n', '&', '|']).next()) {
            if !name.is_empty() && nospace.contains(&format!("{name}|{name}&")) {
                return Err(deny("fork bomb"));
            }
        }
    }
    for word in compact.split([' ', ';', '&', '|', '(', ')', '`']) {
        let w = basename(word);
        if w.starts_with("mkfs") || w == "mke2fs" || w == "wipefs" {
            return Err(deny(&format!("{w} formats file systems")));
        }
    }
    for part in compact.split([';', '&', '|', '\n']) {
        let words: Vec<String> = part.split_whitespace().map(|w| w.trim_matches(['"', '\'']).to_owned()).collect();
        if words.is_empty() {
            continue;
        }
        hard_deny_argv(&words, resolved(&words).as_deref())?;
        // `sudo rm -rf /` and friends.
        let mut rest: &[String] = &words;
        while let Some(inner) = wrapped(rest) {
            hard_deny_argv(inner, resolved(inner).as_deref())?;
            rest = inner;
        }
    }
    Ok(())
}

/// Plan mode: read-only programs from the system's own directories, run as argv, with the
/// flags that write or execute refused.
pub(crate) fn plan_allows(cmd: &CommandLine) -> Result<(), Refusal> {
    let argv = match cmd {
        CommandLine::Shell(_) => {
            return Err(Refusal::new("mode plan does not allow shell commands; send the command as argv"))
        }
        CommandLine::Argv(argv) => argv,
    };
    let Some(first) = argv.first() else { return Err(Refusal::new("empty command")) };
    let Some(program) = argv.program() else {
        return Err(Refusal::new(format!("mode plan: program {first:?} not found")));
    };
    let trusted = program.parent().is_some_and(|dir| TRUSTED_DIRS.iter().any(|t| dir == Path::new(t)));
    let name = program.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !trusted || !super::args::PLAN_PROGRAMS.contains(&name) {
        return Err(Refusal::new(format!(
            "mode plan allows only read-only system programs; {first} is {}",
            program.display()
        )));
    }
    super::args::check(name, &argv[1..]).map_err(|why| Refusal::new(format!("mode plan: {name} {why}")))
}

/// Plan mode for a command on an SSH host: the program is on another machine, so it is
/// judged by its name (a bare name, or a path in a trusted system directory) with the same
/// allow-list and argument checks as here.
pub(crate) fn plan_allows_remote(cmd: &CommandLine) -> Result<(), Refusal> {
    let argv = match cmd {
        CommandLine::Shell(_) => {
            return Err(Refusal::new("mode plan does not allow shell commands; send the command as argv"))
        }
        CommandLine::Argv(argv) => argv,
    };
    let Some(first) = argv.first() else { return Err(Refusal::new("empty command")) };
    let trusted = !first.contains('/')
        || Path::new(first).parent().is_some_and(|dir| TRUSTED_DIRS.iter().any(|t| dir == Path::new(t)));
    let name = basename(first);
    if name == "git" {
        return Err(Refusal::new(
            "mode plan does not run git on SSH hosts: a repository's config can make even `git status` run \
             programs, and the jump node cannot check that config there first",
        ));
    }
    if !trusted || !super::args::PLAN_PROGRAMS.contains(&name) {
        return Err(Refusal::new(format!("mode plan allows only read-only system programs on SSH hosts; not {first}")));
    }
    super::args::check(name, &argv[1..]).map_err(|why| Refusal::new(format!("mode plan: {name} {why}")))
}
