//! `tunnel git TARGET:PATH VERB [ARGS]`: git on a peer or an SSH host, with structured answers
//! (branch, upstream, ahead/behind, changed files, commits) beside git's own text.
//!
//! It is an exec of `git -C PATH ...` on the target, so the target's policy decides, as for
//! any command: plan mode runs only reading verbs (and refuses a repository whose config runs
//! programs), edit and bypass the rest. Before anything is sent, arguments that make git run
//! other programs (`-c`, `--upload-pack`, `--exec`, external diff drivers, ...) are refused
//! here too, whatever the mode. Credentials are the host's own (its credential helper or SSH
//! agent); git never prompts.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tunnel_proto::message::{ExecCommand, ExecEvent, ExecSpec};

use crate::Node;

/// Verbs, and whether each only reads.
const VERBS: &[(&str, bool)] = &[
    ("status", true),
    ("log", true),
    ("diff", true),
    ("show", true),
    ("fetch", false),
    ("pull", false),
    ("commit", false),
    ("push", false),
];

/// Options that make git run a program of the caller's choosing, or look elsewhere than PATH.
const REFUSED: &[&str] = &[
    "-c",
    "--config-env",
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--ext-diff",
    "--textconv",
    "--output",
    "-C",
    "--git-dir",
    "--work-tree",
    "--exec-path",
    "--open-files-in-pager",
];

const TIMEOUT: Duration = Duration::from_secs(300);
const OUTPUT_CAP: u64 = 4 << 20;
const LOG_DEFAULT: &str = "-n20";

/// One git request, as the CLI and MCP send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitRequest {
    /// A peer, `local`, or `ssh:HOST`.
    pub target: String,
    /// The repository (or a directory in it) on the target.
    pub path: String,
    pub verb: String,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitFile {
    pub path: String,
    /// Index and work-tree status letters (`M.`, `.M`, `A.`, `??` for untracked, `UU` in conflict).
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitCommit {
    pub hash: String,
    pub author: String,
    pub date: String,
    pub subject: String,
}

/// What came back: git's exit and text, and what could be read from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GitResult {
    pub verb: String,
    pub exit_code: Option<i32>,
    /// What git printed (stdout, then stderr).
    pub text: String,
    pub branch: Option<String>,
    pub upstream: Option<String>,
    pub ahead: Option<u32>,
    pub behind: Option<u32>,
    pub files: Vec<GitFile>,
    pub commits: Vec<GitCommit>,
}

/// Checks a request before it is sent: a known verb, no option that runs programs.
pub fn check(req: &GitRequest) -> Result<(), String> {
    if !VERBS.iter().any(|(v, _)| *v == req.verb) {
        let known: Vec<&str> = VERBS.iter().map(|(v, _)| *v).collect();
        return Err(format!("git {}: not a verb tunnel runs; use one of {}", req.verb, known.join(", ")));
    }
    if !req.path.starts_with('/') {
        return Err(format!("git: the repository path must be absolute, got {:?}", req.path));
    }
    for a in &req.args {
        let name = a.split('=').next().unwrap_or(a);
        let short_c = a.starts_with("-c") && !a.starts_with("--");
        if short_c || REFUSED.contains(&name) {
            return Err(format!("git {}: {a} is refused: it can make git run other programs", req.verb));
        }
    }
    Ok(())
}

fn reads_only(verb: &str) -> bool {
    VERBS.iter().any(|(v, reads)| *v == verb && *reads)
}

/// The argv run on the target.
fn argv_of(req: &GitRequest) -> Vec<String> {
    let mut argv: Vec<String> = ["git", "-C", &req.path, "--no-pager"].map(String::from).into();
    argv.push(req.verb.clone());
    match req.verb.as_str() {
        // Machine-readable first; the text is rebuilt from it.
        "status" => argv.extend(["--porcelain=v2", "--branch"].map(String::from)),
        "log" => {
            argv.push("--format=%H%x1f%an%x1f%aI%x1f%s".into());
            if !req.args.iter().any(|a| a.starts_with("-n") || a.starts_with("--max-count")) {
                argv.push(LOG_DEFAULT.into());
            }
        }
        _ => {}
    }
    argv.extend(req.args.iter().cloned());
    argv
}

/// Runs one git request on its target.
pub async fn run(node: &Node, req: &GitRequest) -> Result<GitResult, String> {
    check(req)?;
    let dest = node.find_dest(&req.target).await.map_err(|e| e.to_string())?;
    let spec = ExecSpec {
        request_id: rand::random(),
        command: ExecCommand::Argv(argv_of(req)),
        // No prompts: a missing credential fails instead of hanging the call. (Reading verbs
        // send none: they prompt for nothing, and plan mode sets git's environment itself.)
        env: if reads_only(&req.verb) { Vec::new() } else { vec![("GIT_TERMINAL_PROMPT".into(), "0".into())] },
        cwd: None,
        timeout_ms: Some(TIMEOUT.as_millis() as u64),
        output_cap: OUTPUT_CAP,
        stdin: false,
    };
    let out = node.exec_gathered(dest, spec, None, OUTPUT_CAP as usize).await.map_err(|e| e.to_string())?;
    let exit = match out.last {
        Some(ExecEvent::Exit(exit)) => exit,
        Some(ExecEvent::Refused(why)) => return Err(format!("refused by {}'s policy: {why}", req.target)),
        Some(ExecEvent::Failed(why)) => return Err(format!("git could not run on {}: {why}", req.target)),
        _ => return Err(format!("{}: the command ended without an exit status", req.target)),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut result = GitResult { verb: req.verb.clone(), exit_code: exit.code, ..Default::default() };
    match req.verb.as_str() {
        "status" if exit.code == Some(0) => parse_status(&stdout, &mut result),
        "log" if exit.code == Some(0) => {
            parse_log(&stdout, &mut result);
            if result.commits.is_empty() {
                // The caller's own format (`--oneline`) won over ours: its text is the answer.
                result.text = stdout;
            }
        }
        _ => result.text = stdout,
    }
    if !stderr.is_empty() {
        result.text.push_str(&stderr);
    }
    Ok(result)
}

/// `git status --porcelain=v2 --branch`.
fn parse_status(out: &str, r: &mut GitResult) {
    for line in out.lines() {
        let mut words = line.split(' ');
        match words.next() {
            Some("#") => match (words.next(), words.next()) {
                (Some("branch.head"), Some(b)) => r.branch = Some(b.to_owned()),
                (Some("branch.upstream"), Some(u)) => r.upstream = Some(u.to_owned()),
                (Some("branch.ab"), Some(a)) => {
                    r.ahead = a.trim_start_matches('+').parse().ok();
                    r.behind = words.next().and_then(|b| b.trim_start_matches('-').parse().ok());
                }
                _ => {}
            },
            // Ordinary (8 fields before the path), renamed (9, then `path<TAB>orig`), unmerged (10).
            Some(kind @ ("1" | "2" | "u")) => {
                let status = words.next().unwrap_or_default().to_owned();
                let skip = match kind {
                    "1" => 6,
                    "2" => 7,
                    _ => 8,
                };
                let path: Vec<&str> = words.skip(skip).collect();
                let path = path.join(" ");
                let path = path.split('\t').next().unwrap_or_default().to_owned();
                r.files.push(GitFile { path, status });
            }
            Some("?") => r.files.push(GitFile { path: line[2..].to_owned(), status: "??".into() }),
            _ => {}
        }
    }
    let mut text = match (&r.branch, &r.upstream) {
        (Some(b), Some(u)) => format!("on {b}, tracking {u}"),
        (Some(b), None) => format!("on {b}, no upstream"),
        _ => "no branch".into(),
    };
    match (r.ahead, r.behind) {
        (Some(0), Some(0)) => text.push_str(", up to date"),
        (Some(a), Some(b)) => text.push_str(&format!(", {a} ahead, {b} behind")),
        _ => {}
    }
    text.push('\n');
    if r.files.is_empty() {
        text.push_str("nothing changed\n");
    }
    for f in &r.files {
        text.push_str(&format!("{} {}\n", f.status, f.path));
    }
    r.text = text;
}

/// `git log --format=%H%x1f%an%x1f%aI%x1f%s`.
fn parse_log(out: &str, r: &mut GitResult) {
    for line in out.lines() {
        let f: Vec<&str> = line.split('\u{1f}').collect();
        if let [hash, author, date, subject] = f[..] {
            r.commits.push(GitCommit {
                hash: hash.to_owned(),
                author: author.to_owned(),
                date: date.to_owned(),
                subject: subject.to_owned(),
            });
            r.text.push_str(&format!("{} {} {} {}\n", &hash[..hash.len().min(10)], date, author, subject));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(verb: &str, args: &[&str]) -> GitRequest {
        GitRequest {
            target: "web".into(),
            path: "/srv/app".into(),
            verb: verb.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn options_that_run_programs_are_refused_whatever_the_verb() {
        for args in [
            &["-c", "core.pager=sh"][..],
            &["-ccore.fsmonitor=x"],
            &["--upload-pack=touch /tmp/x"],
            &["--receive-pack", "x"],
            &["--exec=x"],
            &["--ext-diff"],
            &["--textconv"],
            &["--config-env=core.pager=X"],
            &["--git-dir=/elsewhere"],
            &["-C", "/elsewhere"],
        ] {
            let e = check(&req("fetch", args)).unwrap_err();
            assert!(e.contains("refused"), "{args:?}: {e}");
        }
        assert!(check(&req("rebase", &[])).unwrap_err().contains("not a verb"));
        assert!(check(&GitRequest { path: "srv".into(), ..req("status", &[]) }).is_err());
        assert!(check(&req("commit", &["-am", "a message"])).is_ok());
        assert!(check(&req("log", &["--oneline", "-n5"])).is_ok());
    }

    #[test]
    fn status_and_log_are_read_into_structure() {
        let mut r = GitResult::default();
        let status = "# branch.oid abc\n# branch.head main\n# branch.upstream origin/main\n# branch.ab +2 -1\n\
                      1 .M N... 100644 100644 100644 aaa bbb src/lib.rs\n\
                      2 R. N... 100644 100644 100644 aaa bbb R100 new name.rs\told.rs\n\
                      ? notes.txt\n";
        parse_status(status, &mut r);
        assert_eq!((r.branch.as_deref(), r.upstream.as_deref()), (Some("main"), Some("origin/main")));
        assert_eq!((r.ahead, r.behind), (Some(2), Some(1)));
        let files: Vec<(&str, &str)> = r.files.iter().map(|f| (f.status.as_str(), f.path.as_str())).collect();
        assert_eq!(files, [(".M", "src/lib.rs"), ("R.", "new name.rs"), ("??", "notes.txt")]);
        assert!(r.text.starts_with("on main, tracking origin/main, 2 ahead, 1 behind\n"), "{}", r.text);
        let mut r = GitResult::default();
        parse_log("0123456789abcdef\u{1f}Ann\u{1f}2026-12-02T10:00:00+00:00\u{1f}first: it works\n", &mut r);
        assert_eq!(r.commits.len(), 1);
        assert_eq!(r.commits[0].subject, "first: it works");
    }
}
