//! The plan-mode allow-list: each program with how it reads its options and what it refuses.
//! Reviewed against each program's manual (GNU coreutils, findutils, grep, sed, gawk/mawk,
//! util-linux, procps, iproute2, systemd, git). Programs left out on purpose: `egrep`/`fgrep`
//! (shell scripts that run `grep`: use `grep -E`/`grep -F`), `xargs`, `env` with a command,
//! `less`/`more` (they run `$LESSOPEN`, `!cmd`, editors), `tee`, `dd`, anything with a shell escape.

use super::scan::{scan, Parsed, Spec};
use super::scripts;

const WRITES: &str = "it writes files";
const RUNS: &str = "it runs a program";

/// Read-only programs plan mode allows (each still has its arguments checked).
pub(crate) const PLAN_PROGRAMS: &[&str] = &[
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

/// Checks `args` for `name`, one of [`PLAN_PROGRAMS`] (resolved: `awk` may be `mawk`).
pub(crate) fn check(name: &str, args: &[String]) -> Result<(), String> {
    match name {
        "find" => scripts::find_expression(args),
        "git" => git(args),
        "ip" => ip(args),
        "sed" => sed(args),
        "awk" | "gawk" | "mawk" | "nawk" => awk(args),
        "systemctl" => systemctl(args),
        _ => {
            let parsed = scan(&spec(name), args)?;
            operands(name, &parsed)
        }
    }
}

/// The trees a command reads recursively, file contents included (`grep -r`, `diff -r`):
/// `None` when it reads none. `"."` stands for the working directory.
pub(crate) fn recursive_reads(name: &str, args: &[String]) -> Option<Vec<String>> {
    let parsed = scan(&spec(name), args).ok()?;
    let recursive = match name {
        "grep" => {
            ["r", "R", "recursive", "dereference-recursive"].iter().any(|o| parsed.has(o))
                || parsed.values(&["d", "directories"]).any(|v| v == "recurse")
        }
        "diff" => parsed.has("r") || parsed.has("recursive"),
        _ => false,
    };
    if !recursive {
        return None;
    }
    let mut trees = parsed.operands.clone();
    let pattern_given = ["e", "f", "regexp", "file"].iter().any(|o| parsed.has(o));
    if name == "grep" && !pattern_given && !trees.is_empty() {
        trees.remove(0);
    }
    if trees.is_empty() {
        trees.push(".".into());
    }
    Some(trees)
}

/// How each program reads its options. Programs not named have no option that writes or runs
/// anything, so only their refusal-free defaults apply (GNU parsing, nothing refused).
fn spec(name: &str) -> Spec {
    match name {
        "sort" => Spec {
            short_values: "kSt",
            deny_short: &[('o', WRITES), ('T', "it writes temporary files where it is told")],
            long_values: &[
                "key",
                "buffer-size",
                "field-separator",
                "parallel",
                "files0-from",
                "random-source",
                "sort",
                "batch-size",
            ],
            deny_long: &[
                ("output", WRITES),
                ("compress-program", RUNS),
                ("temporary-directory", "it writes temporary files where it is told"),
            ],
            ..Spec::GNU
        },
        "diff" => Spec {
            short_values: "CUFIDSWxX",
            deny_short: &[('l', RUNS)],
            long_values: &[
                "context",
                "unified",
                "ignore-matching-lines",
                "show-function-line",
                "label",
                "ifdef",
                "starting-file",
                "exclude",
                "exclude-from",
                "from-file",
                "to-file",
                "width",
                "tabsize",
                "line-format",
                "old-line-format",
                "new-line-format",
                "unchanged-line-format",
                "old-group-format",
                "new-group-format",
                "unchanged-group-format",
                "changed-group-format",
                "horizon-lines",
                "color",
                "palette",
            ],
            deny_long: &[("paginate", RUNS)],
            ..Spec::GNU
        },
        "file" => Spec {
            short_values: "efFmP",
            deny_short: &[('C', WRITES), ('p', "it changes access times")],
            long_values: &["exclude", "exclude-quiet", "files-from", "separator", "magic-file", "parameter"],
            deny_long: &[("compile", WRITES), ("preserve-date", "it changes access times")],
            ..Spec::GNU
        },
        "getent" => Spec {
            short_values: "",
            deny_short: &[('s', "it loads the NSS module it names")],
            deny_long: &[("service", "it loads the NSS module it names")],
            ..Spec::GNU
        },
        "env" => Spec {
            short_values: "uC",
            long_values: &["unset", "chdir"],
            deny_short: &[('S', RUNS)],
            deny_long: &[
                ("split-string", RUNS),
                ("block-signal", RUNS),
                ("default-signal", RUNS),
                ("ignore-signal", RUNS),
            ],
            ..Spec::GNU
        },
        "date" => Spec {
            short_values: "dfr",
            short_optional: "I",
            long_values: &["date", "file", "reference", "resolution"],
            long_optional: &["iso-8601", "rfc-3339"],
            deny_short: &[('s', "it sets the clock")],
            deny_long: &[("set", "it sets the clock")],
            ..Spec::GNU
        },
        "hostname" => Spec {
            deny_short: &[('F', "it sets the host name"), ('b', "it sets the host name")],
            deny_long: &[("file", "it sets the host name"), ("boot", "it sets the host name")],
            ..Spec::GNU
        },
        "dmesg" => Spec {
            short_values: "Ffls",
            deny_short: &[
                ('c', "it clears the kernel log"),
                ('C', "it clears the kernel log"),
                ('D', "it changes the console"),
                ('E', "it changes the console"),
                ('n', "it changes the console"),
            ],
            long_values: &["facility", "file", "level", "buffer-size", "time-format", "since", "until"],
            long_optional: &["color"],
            deny_long: &[
                ("read-clear", "it clears the kernel log"),
                ("clear", "it clears the kernel log"),
                ("console-off", "it changes the console"),
                ("console-on", "it changes the console"),
                ("console-level", "it changes the console"),
            ],
            ..Spec::GNU
        },
        "sysctl" => Spec {
            short_values: "r",
            short_optional: "p",
            long_values: &["pattern"],
            deny_short: &[('w', "it writes settings"), ('p', "it loads settings"), ('f', "it loads settings")],
            deny_long: &[
                ("write", "it writes settings"),
                ("load", "it loads settings"),
                ("system", "it loads settings"),
            ],
            ..Spec::GNU
        },
        "journalctl" => Spec {
            short_values: "oDpgcSUtTuFMi",
            short_optional: "nb",
            long_values: &[
                "priority",
                "lines",
                "output",
                "unit",
                "user-unit",
                "since",
                "until",
                "identifier",
                "exclude-identifier",
                "facility",
                "grep",
                "directory",
                "file",
                "root",
                "image",
                "image-policy",
                "namespace",
                "machine",
                "cursor",
                "after-cursor",
                "boot",
                "field",
                "output-fields",
                "case-sensitive",
                "interval",
            ],
            long_optional: &["lines", "boot", "case-sensitive"],
            deny_short: &[('f', "it never ends")],
            deny_long: &[
                ("follow", "it never ends"),
                ("vacuum-size", WRITES),
                ("vacuum-time", WRITES),
                ("vacuum-files", WRITES),
                ("rotate", WRITES),
                ("flush", WRITES),
                ("sync", WRITES),
                ("relinquish-var", WRITES),
                ("smart-relinquish-var", WRITES),
                ("setup-keys", WRITES),
                ("update-catalog", WRITES),
                ("cursor-file", WRITES),
            ],
            ..Spec::GNU
        },
        "ss" => Spec {
            short_values: "fAFN",
            deny_short: &[('K', "it kills sockets"), ('D', WRITES)],
            long_values: &["family", "query", "socket", "filter", "net"],
            deny_long: &[("kill", "it kills sockets"), ("diag", WRITES)],
            ..Spec::GNU
        },
        "uniq" => Spec {
            short_values: "fsw",
            long_values: &["skip-fields", "skip-chars", "check-chars"],
            long_optional: &["all-repeated", "group"],
            digits: true,
            ..Spec::GNU
        },
        "head" | "tail" => Spec {
            short_values: "cns",
            long_values: &["bytes", "lines", "sleep-interval", "pid", "max-unchanged-stats"],
            long_optional: &["follow"],
            digits: true,
            ..Spec::GNU
        },
        "grep" => Spec {
            short_values: "efmABCdDX",
            long_values: &[
                "regexp",
                "file",
                "max-count",
                "after-context",
                "before-context",
                "context",
                "label",
                "binary-files",
                "devices",
                "directories",
                "exclude",
                "exclude-from",
                "exclude-dir",
                "include",
                "group-separator",
            ],
            long_optional: &["color", "colour"],
            digits: true,
            ..Spec::GNU
        },
        _ => Spec::GNU,
    }
}

/// What a program's operands may be.
fn operands(name: &str, parsed: &Parsed) -> Result<(), String> {
    let ops = &parsed.operands;
    match name {
        "uniq" if ops.len() > 1 => Err(format!("with a second file ({}) writes it", ops[1])),
        "hostname" if !ops.is_empty() => Err(format!("with a name ({}) sets the host name", ops[0])),
        "date" => match ops.iter().find(|a| !a.starts_with('+')) {
            Some(a) => Err(format!("with {a} sets the clock")),
            None => Ok(()),
        },
        "env" if !ops.is_empty() && ops.iter().any(|a| !a.contains('=')) => {
            Err("with a command runs it; plan mode runs no wrapped commands".into())
        }
        "sysctl" => match ops.iter().find(|a| a.contains('=')) {
            Some(a) => Err(format!("with {a} writes a setting")),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

const SED: Spec = Spec {
    short_values: "el",
    short_flags: "nrEsuz",
    long_values: &["expression", "line-length"],
    long_flags: &[
        "quiet",
        "silent",
        "debug",
        "posix",
        "regexp-extended",
        "separate",
        "sandbox",
        "unbuffered",
        "null-data",
        "zero-terminated",
        "help",
        "version",
    ],
    deny_short: &[('i', "it edits files in place"), ('f', "its script comes from a file plan mode cannot check")],
    deny_long: &[
        ("in-place", "it edits files in place"),
        ("file", "its script comes from a file plan mode cannot check"),
        ("follow-symlinks", "it edits files in place"),
    ],
    strict: true,
    ..Spec::GNU
};

fn sed(args: &[String]) -> Result<(), String> {
    scan(&SED, args)?.inline_programs(&["e", "expression"]).into_iter().try_for_each(scripts::sed_read_only)
}

/// gawk's and mawk's options together; either program refuses the other's, harmlessly.
const AWK: Spec = Spec {
    short_values: "Fve",
    short_flags: "bcCgMNnPrsStV",
    long_values: &["field-separator", "assign", "source"],
    long_flags: &[
        "characters-as-bytes",
        "traditional",
        "copyright",
        "gen-pot",
        "bignum",
        "use-lc-numeric",
        "non-decimal-data",
        "posix",
        "re-interval",
        "no-optimize",
        "sandbox",
        "lint-old",
        "version",
        "help",
        "usage",
    ],
    long_optional: &["lint"],
    deny_short: &[
        ('f', "its program comes from a file plan mode cannot check"),
        ('i', "it loads source files"),
        ('l', "it loads extensions"),
        ('E', "its program comes from a file plan mode cannot check"),
        ('o', WRITES),
        ('p', WRITES),
        ('d', WRITES),
        ('D', "it starts a debugger"),
        ('W', "mawk's -W options include exec"),
        ('L', "lint output"),
    ],
    deny_long: &[
        ("file", "its program comes from a file plan mode cannot check"),
        ("include", "it loads source files"),
        ("load", "it loads extensions"),
        ("exec", "its program comes from a file plan mode cannot check"),
        ("pretty-print", WRITES),
        ("profile", WRITES),
        ("dump-variables", WRITES),
        ("debug", "it starts a debugger"),
    ],
    strict: true,
    permute: false,
    ..Spec::GNU
};

fn awk(args: &[String]) -> Result<(), String> {
    scan(&AWK, args)?.inline_programs(&["e", "source"]).into_iter().try_for_each(scripts::awk_read_only)
}

const SYSTEMCTL: Spec = Spec {
    short_values: "tpPsnoH M",
    short_flags: "alqfir",
    long_values: &[
        "type",
        "property",
        "state",
        "signal",
        "lines",
        "output",
        "root",
        "image",
        "job-mode",
        "kill-whom",
        "what",
        "timestamp",
        "when",
        "message",
        "boot-loader-menu",
        "boot-loader-entry",
        "image-policy",
        "check-inhibitors",
        "drop-in",
        "kill-value",
    ],
    long_flags: &[
        "all",
        "recursive",
        "reverse",
        "after",
        "before",
        "with-dependencies",
        "show-types",
        "value",
        "failed",
        "full",
        "legend",
        "no-legend",
        "no-pager",
        "no-ask-password",
        "quiet",
        "system",
        "user",
        "global",
        "plain",
        "help",
        "version",
        "no-block",
        "no-wall",
        "firmware-setup",
        "now",
        "runtime",
        "force",
        "dry-run",
        "wait",
        "preset-mode",
        "mkdir",
        "read-only",
        "marked",
        "show-transaction",
    ],
    deny_short: &[('H', "it reaches another host over ssh"), ('M', "it reaches into a container")],
    deny_long: &[("host", "it reaches another host over ssh"), ("machine", "it reaches into a container")],
    strict: true,
    ..Spec::GNU
};

fn systemctl(args: &[String]) -> Result<(), String> {
    const READ_ONLY: &[&str] = &[
        "status",
        "is-active",
        "is-enabled",
        "is-failed",
        "is-system-running",
        "list-units",
        "list-unit-files",
        "list-timers",
        "list-sockets",
        "list-dependencies",
        "list-jobs",
        "list-machines",
        "show",
        "cat",
        "get-default",
        "show-environment",
    ];
    let parsed = scan(&SYSTEMCTL, args)?;
    match parsed.operands.first() {
        None => Ok(()),
        Some(verb) if READ_ONLY.contains(&verb.as_str()) => Ok(()),
        Some(verb) => Err(format!("{verb} is not a read-only verb")),
    }
}

/// git: harmless global options only, a read-only subcommand, none of the options that write
/// (`--output`) or run programs (`--ext-diff`, `--textconv`, `-O`/`--open-files-in-pager`),
/// in any abbreviation git's own parser accepts.
fn git(args: &[String]) -> Result<(), String> {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-C" => i += 2,
            "--no-pager" | "-P" | "--no-optional-locks" | "--literal-pathspecs" | "--no-replace-objects" => i += 1,
            s if s.starts_with('-') => {
                return Err(format!(
                    "refuses the global option {s} (-c, --exec-path, --git-dir and friends can run commands)"
                ))
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
    const DENY: &[&str] = &["output", "ext-diff", "textconv", "open-files-in-pager"];
    // Exact names that merely start like a refused one.
    const SAFE: &[&str] = &["text"];
    for a in &args[i + 1..] {
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or_default();
            // `--no-ext-diff`, `--no-textconv`: turning them off is what plan mode wants.
            if name.starts_with("no-") {
                continue;
            }
            if !name.is_empty() && !SAFE.contains(&name) && DENY.iter().any(|d| d.starts_with(name)) {
                return Err(format!("refuses {a} ({RUNS} or writes a file)"));
            }
        } else if sub == "grep" && a.starts_with('-') && !a.starts_with("--") && a[1..].contains('O') {
            return Err(format!("refuses {a} (-O opens the files in a pager: {RUNS})"));
        }
    }
    Ok(())
}

/// ip: `ip [OPTIONS] OBJECT [show|list|get]`. iproute2 matches options by prefix in an order of
/// its own, so only the spellings listed here are accepted.
fn ip(args: &[String]) -> Result<(), String> {
    const FLAGS: &[&str] = &[
        "-4",
        "-6",
        "-0",
        "-B",
        "-M",
        "-s",
        "-stats",
        "-statistics",
        "-d",
        "-details",
        "-h",
        "-human",
        "-human-readable",
        "-j",
        "-json",
        "-p",
        "-pretty",
        "-o",
        "-oneline",
        "-t",
        "-timestamp",
        "-ts",
        "-tshort",
        "-r",
        "-resolve",
        "-a",
        "-all",
        "-c",
        "-color",
        "-br",
        "-brief",
        "-iec",
        "-N",
        "-numeric",
    ];
    const VALUES: &[&str] = &["-f", "-family", "-n", "-netns", "-l", "-loops", "-rc", "-rcvbuf"];
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if VALUES.contains(&a.as_str()) {
            i += 2;
        } else if FLAGS.contains(&a.as_str()) || a.starts_with("-color=") {
            i += 1;
        } else if a.starts_with('-') {
            return Err(format!("refuses the option {a} (not one plan mode knows; -batch runs commands from a file)"));
        } else {
            break;
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
