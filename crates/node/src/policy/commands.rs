//! Command rules: resolving the program a command will really run, the plan-mode allow-list
//! with its argument checks, and the hard deny list.
//!
//! The program is resolved through `PATH` and canonicalized, so `/bin/../bin/sh`, a symlink
//! named `cat` that points at a shell, or `busybox sh` cannot pass for something else.
//! Wrappers (`env`, `sudo`, `nice`, `timeout`, `xargs`, `busybox`, ...) are unwrapped for the
//! deny lists; in plan mode they are not allowed at all.

use std::path::{Path, PathBuf};

use super::Refusal;

/// A command as a caller sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Run directly, never through a shell.
    Argv(Vec<String>),
    /// Run as `sh -c STRING`.
    Shell(String),
}

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

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Every program name a command involves: the name it was called by, what that resolves to,
/// and the same for every command a wrapper runs. Shell form is `sh`.
pub(crate) fn program_names(cmd: &CommandLine) -> Vec<String> {
    let mut names = Vec::new();
    let mut argv: &[String] = match cmd {
        CommandLine::Shell(_) => return vec!["sh".into()],
        CommandLine::Argv(a) => a,
    };
    while let Some(first) = argv.first() {
        names.push(basename(first).to_owned());
        if let Some(resolved) = resolve_program(first) {
            if let Some(name) = resolved.file_name().and_then(|n| n.to_str()) {
                names.push(name.to_owned());
            }
        }
        match wrapped(argv) {
            Some(rest) => argv = rest,
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
            let mut argv: &[String] = argv;
            loop {
                hard_deny_argv(argv)?;
                match wrapped(argv) {
                    Some(rest) => argv = rest,
                    None => return Ok(()),
                }
            }
        }
    }
}

fn deny(what: &str) -> Refusal {
    Refusal::new(format!("hard deny list: {what}"))
}

const BLOCK_DEVICES: &[&str] = &["sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "loop", "disk", "mapper/"];

fn hard_deny_argv(argv: &[String]) -> Result<(), Refusal> {
    let Some(first) = argv.first() else { return Ok(()) };
    let names: Vec<String> = std::iter::once(basename(first).to_owned())
        .chain(resolve_program(first).and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned)))
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
        hard_deny_argv(&words)?;
        // `sudo rm -rf /` and friends.
        let mut rest: &[String] = &words;
        while let Some(inner) = wrapped(rest) {
            hard_deny_argv(inner)?;
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
    let Some(program) = resolve_program(first) else {
        return Err(Refusal::new(format!("mode plan: program {first:?} not found")));
    };
    let trusted = program.parent().is_some_and(|dir| TRUSTED_DIRS.iter().any(|t| dir == Path::new(t)));
    let name = program.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !trusted || !PLAN_PROGRAMS.contains(&name) {
        return Err(Refusal::new(format!(
            "mode plan allows only read-only system programs; {first} is {}",
            program.display()
        )));
    }
    plan_args(name, &argv[1..]).map_err(|why| Refusal::new(format!("mode plan: {name} {why}")))
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
    if !trusted || !PLAN_PROGRAMS.contains(&name) || name == "git" {
        return Err(Refusal::new(format!("mode plan allows only read-only system programs on SSH hosts; not {first}")));
    }
    plan_args(name, &argv[1..]).map_err(|why| Refusal::new(format!("mode plan: {name} {why}")))
}

/// Read-only programs plan mode allows (each still has its arguments checked).
const PLAN_PROGRAMS: &[&str] = &[
    "uname",
    "uptime",
    "df",
    "du",
    "free",
    "ps",
    "cat",
    "ls",
    "head",
    "tail",
    "grep",
    "egrep",
    "fgrep",
    "wc",
    "id",
    "whoami",
    "who",
    "w",
    "ip",
    "ss",
    "systemctl",
    "journalctl",
    "git",
    "find",
    "sed",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "stat",
    "file",
    "lsblk",
    "lscpu",
    "nproc",
    "hostname",
    "date",
    "sort",
    "uniq",
    "cut",
    "tr",
    "md5sum",
    "sha1sum",
    "sha256sum",
    "sha512sum",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "pwd",
    "echo",
    "true",
    "false",
    "printenv",
    "env",
    "getent",
    "lsof",
    "findmnt",
    "dmesg",
    "sysctl",
    "diff",
    "cmp",
    "tac",
    "nl",
    "column",
];

fn flag_in(args: &[String], refused: &[&str]) -> Option<String> {
    args.iter()
        .find(|a| refused.iter().any(|r| *a == r || (r.starts_with("--") && a.starts_with(&format!("{r}=")))))
        .cloned()
}

fn positionals(args: &[String]) -> Vec<&String> {
    args.iter().filter(|a| !a.starts_with('-')).collect()
}

fn plan_args(name: &str, args: &[String]) -> Result<(), String> {
    let refuse_flags = |refused: &[&str]| match flag_in(args, refused) {
        Some(f) => Err(format!("refuses {f} (it writes or executes)")),
        None => Ok(()),
    };
    match name {
        "find" => {
            refuse_flags(&["-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"])
        }
        "sed" => {
            if let Some(f) = args.iter().find(|a| {
                a.starts_with("-i")
                    || a.starts_with("--in-place")
                    || (a.starts_with('-') && !a.starts_with("--") && a.contains('i'))
            }) {
                return Err(format!("refuses {f} (in-place edit)"));
            }
            refuse_flags(&["-f", "--file"])?;
            let scripts = sed_scripts(args);
            scripts.iter().try_for_each(|s| sed_script_is_read_only(s))
        }
        "awk" | "gawk" | "mawk" | "nawk" => {
            refuse_flags(&["-f", "--file", "-i", "--include", "-l", "--load", "-E", "--exec"])?;
            let program = args.iter().find(|a| !a.starts_with('-')).map(String::as_str).unwrap_or("");
            if program.contains("system") || program.contains('|') || program.contains('>') || program.contains("@load")
            {
                return Err("refuses programs with system(), pipes or output redirection".into());
            }
            Ok(())
        }
        "git" => git_read_only(args),
        "systemctl" => match positionals(args).first() {
            None => Ok(()),
            Some(verb)
                if [
                    "status",
                    "is-active",
                    "is-enabled",
                    "is-failed",
                    "list-units",
                    "list-unit-files",
                    "list-timers",
                    "show",
                    "cat",
                ]
                .contains(&verb.as_str()) =>
            {
                Ok(())
            }
            Some(verb) => Err(format!("{verb} is not a read-only verb")),
        },
        "journalctl" => refuse_flags(&[
            "-f",
            "--follow",
            "--vacuum-size",
            "--vacuum-time",
            "--vacuum-files",
            "--rotate",
            "--flush",
            "--sync",
            "--relinquish-var",
            "--smart-relinquish-var",
            "--setup-keys",
            "--update-catalog",
        ]),
        "ip" => ip_read_only(args),
        "ss" => refuse_flags(&["-K", "--kill", "-D", "--diag"]),
        "hostname" => match positionals(args).first() {
            None => refuse_flags(&["-F", "--file", "-b", "--boot"]),
            Some(_) => Err("with a name sets the host name".into()),
        },
        "date" => {
            refuse_flags(&["-s", "--set"])?;
            match positionals(args).iter().find(|a| !a.starts_with('+')) {
                Some(a) => Err(format!("with {a} sets the clock")),
                None => Ok(()),
            }
        }
        "sort" => refuse_flags(&["-o", "--output"]),
        "uniq" if positionals(args).len() > 1 => Err("with two files writes the second".into()),
        "env" if !positionals(args).is_empty() => {
            Err("with a command runs it; plan mode runs no wrapped commands".into())
        }
        "dmesg" => refuse_flags(&[
            "-c",
            "--read-clear",
            "-C",
            "--clear",
            "-D",
            "--console-off",
            "-E",
            "--console-on",
            "-n",
            "--console-level",
        ]),
        "sysctl" => {
            refuse_flags(&["-w", "--write", "-p", "--load", "--system"])?;
            match args.iter().find(|a| a.contains('=')) {
                Some(a) => Err(format!("with {a} writes a setting")),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn git_read_only(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    // Global options before the subcommand: only harmless ones.
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-C" => i += 2,
            "--no-pager" | "-P" | "--no-optional-locks" => i += 1,
            s if s.starts_with('-') => {
                return Err(format!("refuses the global option {s} (-c and friends can run commands)"))
            }
            _ => break,
        }
    }
    let Some(sub) = args.get(i) else { return Ok(()) };
    const READ_ONLY: &[&str] =
        &["status", "log", "diff", "show", "rev-parse", "ls-files", "blame", "describe", "shortlog", "grep"];
    if !READ_ONLY.contains(&sub.as_str()) {
        return Err(format!("{sub} is not a read-only subcommand"));
    }
    match args[i + 1..].iter().find(|a| {
        a.starts_with("--output")
            || a.starts_with("--ext-diff")
            || a.starts_with("--textconv")
            || a.starts_with("--open-files-in-pager")
            || a.as_str() == "-O"
    }) {
        Some(a) => Err(format!("refuses {a} (it writes or executes)")),
        None => Ok(()),
    }
}

fn ip_read_only(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-b" | "-batch" | "-force" => return Err(format!("refuses {a}")),
            "-f" | "-family" | "-n" | "-netns" | "-rc" | "-rcvbuf" => i += 2,
            s if s.starts_with('-') => i += 1,
            _ => break,
        }
    }
    let Some(object) = args.get(i) else { return Ok(()) };
    const OBJECTS: &[&str] = &[
        "addr",
        "address",
        "a",
        "link",
        "l",
        "route",
        "r",
        "ro",
        "neigh",
        "neighbour",
        "neighbor",
        "n",
        "rule",
        "ru",
        "maddr",
        "m",
        "netconf",
    ];
    if !OBJECTS.contains(&object.as_str()) {
        return Err(format!("{object} is not a read-only object"));
    }
    match args.get(i + 1).map(String::as_str) {
        None | Some("show" | "list" | "ls" | "lst" | "get") => Ok(()),
        Some(s) if s.starts_with('-') || s == "dev" => Ok(()),
        Some(verb) => Err(format!("{object} {verb} changes the system")),
    }
}

/// The sed scripts in `args`: each `-e SCRIPT`/`--expression=SCRIPT`, else the first operand.
fn sed_scripts(args: &[String]) -> Vec<String> {
    let mut scripts = Vec::new();
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "-e" || a == "--expression" {
            scripts.extend(args.get(i + 1).cloned());
            i += 2;
        } else if let Some(s) = a.strip_prefix("--expression=") {
            scripts.push(s.to_owned());
            i += 1;
        } else {
            i += 1;
        }
    }
    if scripts.is_empty() {
        scripts.extend(args.iter().find(|a| !a.starts_with('-')).cloned());
    }
    scripts
}

/// Walks a sed script command by command and refuses `w`, `W`, `e` and `s///w|e`.
fn sed_script_is_read_only(script: &str) -> Result<(), String> {
    let c: Vec<char> = script.chars().collect();
    let mut i = 0;
    let skip_delimited = |i: &mut usize, parts: usize| -> Result<(), String> {
        let delim = *c.get(*i).ok_or("ends inside a command")?;
        *i += 1;
        for _ in 0..parts {
            while *i < c.len() && c[*i] != delim {
                if c[*i] == '\\' {
                    *i += 1;
                }
                *i += 1;
            }
            *i += 1;
        }
        Ok(())
    };
    while i < c.len() {
        // Separators and addresses.
        while i < c.len() && (c[i].is_whitespace() || c[i] == ';' || c[i] == '}' || c[i] == '{' || c[i] == '!') {
            i += 1;
        }
        loop {
            match c.get(i) {
                Some(ch) if ch.is_ascii_digit() || *ch == '$' || *ch == ',' || *ch == '~' || *ch == '+' => i += 1,
                Some('/') => skip_delimited(&mut i, 1)?,
                Some('\\') => {
                    i += 1;
                    skip_delimited(&mut i, 1)?;
                }
                Some('I' | 'M') if i > 0 && c[i - 1] == '/' => i += 1,
                _ => break,
            }
        }
        while i < c.len() && (c[i].is_whitespace() || c[i] == '!') {
            i += 1;
        }
        let Some(&cmd) = c.get(i) else { break };
        i += 1;
        match cmd {
            'w' | 'W' => return Err("refuses sed scripts that write files (w)".into()),
            'e' => return Err("refuses sed scripts that run commands (e)".into()),
            's' => {
                skip_delimited(&mut i, 2)?;
                while let Some(&f) = c.get(i) {
                    match f {
                        'w' => return Err("refuses s///w (writes a file)".into()),
                        'e' => return Err("refuses s///e (runs the pattern space)".into()),
                        'g' | 'p' | 'i' | 'I' | 'm' | 'M' => i += 1,
                        d if d.is_ascii_digit() => i += 1,
                        _ => break,
                    }
                }
            }
            'y' => skip_delimited(&mut i, 2)?,
            'a' | 'i' | 'c' | ':' | 'b' | 't' | 'T' | 'r' | 'R' => {
                // Text or a label/file name runs to the end of the line.
                while i < c.len() && c[i] != '\n' && !(matches!(cmd, ':' | 'b' | 't' | 'T') && c[i] == ';') {
                    i += 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
