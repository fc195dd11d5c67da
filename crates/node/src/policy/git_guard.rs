//! Plan mode lets callers run read-only git commands, but a repository's own config can make
//! even `git status` run programs (`core.fsmonitor`, clean/smudge filters, diff drivers,
//! pagers, ...). Before git runs in plan mode, its effective config is read (reading config
//! runs nothing) and any key that names a program refuses the command. Git also always runs
//! with the most common of these overridden at command-line scope, which beats repository
//! config, as a second line.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::policy::Refusal;

/// The riskiest keys, forced to safe values at command-line scope (which beats repository
/// config). They also show up in `git config --list`, where these values are accepted.
const OVERRIDES: &[(&str, &str)] =
    &[("core.fsmonitor", "false"), ("core.hooksPath", "/dev/null"), ("core.pager", "cat")];

/// The environment git runs with in plan mode: [`OVERRIDES`] as `GIT_CONFIG_*`, no pager, no
/// prompts.
pub(crate) fn git_env() -> Vec<(String, String)> {
    let mut env = vec![("GIT_CONFIG_COUNT".to_owned(), OVERRIDES.len().to_string())];
    for (i, (key, value)) in OVERRIDES.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), (*key).to_owned()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), (*value).to_owned()));
    }
    env.push(("GIT_PAGER".into(), "cat".into()));
    env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    env
}

/// Whether a config key makes git run a program.
fn runs_a_program(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "core.fsmonitor",
        "core.hookspath",
        "core.pager",
        "core.editor",
        "core.sshcommand",
        "core.askpass",
        "core.gitproxy",
        "diff.external",
        "sequence.editor",
        "gpg.program",
        "core.alternaterefscommand",
    ];
    const PREFIXES: &[&str] = &["filter.", "pager.", "credential."];
    const SUFFIXES: &[&str] = &[".command", ".textconv", ".driver", ".program", ".cmd", ".helper"];
    let key = key.to_ascii_lowercase();
    EXACT.contains(&key.as_str())
        || PREFIXES.iter().any(|p| key.starts_with(p))
        || SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// Refuses a plan-mode git command whose repository config runs programs. `dir` is where git
/// will run (after any `-C`).
pub(crate) fn check(git: &Path, dir: &Path) -> Result<(), Refusal> {
    let out = Command::new(git)
        .arg("-C")
        .arg(dir)
        .args(["config", "--list", "--includes", "--null"])
        .envs(git_env())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| Refusal::new(format!("mode plan: cannot read git config: {e}")))?;
    for entry in out.stdout.split(|b| *b == 0) {
        let text = String::from_utf8_lossy(entry);
        let (key, value) = text.split_once('\n').unwrap_or((&text, ""));
        if key.is_empty() || !runs_a_program(key) {
            continue;
        }
        let ours = OVERRIDES.iter().any(|(k, v)| key.eq_ignore_ascii_case(k) && value == *v);
        if !ours {
            return Err(Refusal::new(format!(
                "mode plan: this repository's git config sets {key}, which runs a program; git is not run here in plan mode"
            )));
        }
    }
    Ok(())
}

/// The directory git will run in: the last `-C DIR` before the subcommand, relative to `cwd`.
pub(crate) fn effective_dir(argv: &[String], cwd: &Path) -> std::path::PathBuf {
    let mut dir = cwd.to_owned();
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        match a.as_str() {
            "-C" => {
                if let Some(d) = argv.get(i + 1) {
                    dir = dir.join(d);
                }
                i += 2;
            }
            s if s.starts_with('-') => i += 1,
            _ => break,
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_run_programs() {
        for k in [
            "core.fsmonitor",
            "core.hooksPath",
            "filter.lfs.clean",
            "diff.evil.textconv",
            "diff.x.command",
            "credential.helper",
            "gpg.ssh.program",
            "pager.log",
        ] {
            assert!(runs_a_program(k), "{k}");
        }
        for k in ["user.name", "core.autocrlf", "remote.origin.url", "diff.renames", "color.ui"] {
            assert!(!runs_a_program(k), "{k}");
        }
    }

    #[test]
    fn effective_dir_follows_dash_c() {
        let argv: Vec<String> =
            ["git", "-C", "sub", "--no-pager", "-C", "deeper", "status"].iter().map(|s| s.to_string()).collect();
        assert_eq!(effective_dir(&argv, Path::new("/repo")), Path::new("/repo/sub/deeper"));
    }
}
