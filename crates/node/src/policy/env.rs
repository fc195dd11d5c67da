//! The environment a command gets: the node's, not the caller's.
//!
//! In `plan` a command starts from a fixed minimal environment (a trusted `PATH`, the node's
//! `HOME`, `USER`, `LOGNAME`, `LANG`, `LC_*`, `TZ`), and callers may set only `LANG`, `LC_*`,
//! `TZ`, `COLUMNS` and `TERM`. In `edit` callers may not set variables that make a program load
//! or run something they chose (`LD_*`, `BASH_ENV`, pagers, editors, git's program hooks, ...).
//! `bypass` passes everything.

use super::{Mode, Refusal};

/// `PATH` for plan-mode commands: the system's own directories only.
pub const TRUSTED_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn locale(name: &str) -> bool {
    name == "LANG" || name == "LANGUAGE" || name == "TZ" || name.starts_with("LC_")
}

fn plan_may_set(name: &str) -> bool {
    locale(name) || name == "COLUMNS" || name == "TERM"
}

/// Variables that make a program load or run what they name.
fn runs_something(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PROMPT_COMMAND",
        "PS4",
        "IFS",
        "EDITOR",
        "VISUAL",
        "BROWSER",
        "LESSOPEN",
        "LESSCLOSE",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONHOME",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCPATH",
        "NLSPATH",
        "MANOPT",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_EDITOR",
        "GIT_SEQUENCE_EDITOR",
        "GIT_EXTERNAL_DIFF",
        "GIT_ASKPASS",
        "GIT_PROXY_COMMAND",
        "GIT_EXEC_PATH",
        "GIT_TEMPLATE_DIR",
        "GIT_CONFIG",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
        "GIT_DIFF_OPTS",
    ];
    EXACT.contains(&name)
        || name.starts_with("LD_")
        || name.starts_with("BASH_FUNC_")
        || name.starts_with("GIT_CONFIG_")
        || name.starts_with("GIT_TRACE")
        || name.ends_with("PAGER")
        || name.starts_with("MALLOC_")
        || name.starts_with("GLIBC_")
}

/// Whether a caller may set `env` for a command in `mode`.
pub fn check_env(mode: Mode, env: &[(String, String)]) -> Result<(), Refusal> {
    for (name, _) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(Refusal::new(format!("{name:?} is not a variable name")));
        }
        match mode {
            Mode::Plan if !plan_may_set(name) => {
                return Err(Refusal::new(format!(
                    "mode plan sets the environment itself; callers may set only LANG, LC_*, TZ, COLUMNS and TERM, not {name}"
                )))
            }
            Mode::Edit if runs_something(name) => {
                return Err(Refusal::new(format!("mode edit: {name} makes programs load or run what it names")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The environment a plan-mode command starts from, taken from the node's own `vars`.
pub fn plan_base(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out = vec![("PATH".to_owned(), TRUSTED_PATH.to_owned())];
    for (k, v) in vars {
        if matches!(k.as_str(), "HOME" | "USER" | "LOGNAME") || locale(&k) {
            out.push((k, v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn plan_edit_and_bypass() {
        assert!(
            check_env(Mode::Plan, &env(&[("LANG", "C"), ("LC_ALL", "C"), ("TZ", "UTC"), ("TERM", "xterm")])).is_ok()
        );
        for bad in ["PATH", "LD_PRELOAD", "PAGER", "GIT_DIR", "HOME", "FOO"] {
            assert!(check_env(Mode::Plan, &env(&[(bad, "x")])).is_err(), "{bad}");
        }
        for bad in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "ENV",
            "GIT_SSH_COMMAND",
            "MANPAGER",
            "PAGER",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "GIT_CONFIG_KEY_0",
        ] {
            assert!(check_env(Mode::Edit, &env(&[(bad, "x")])).is_err(), "{bad}");
            assert!(check_env(Mode::Bypass, &env(&[(bad, "x")])).is_ok(), "{bad}");
        }
        assert!(check_env(Mode::Edit, &env(&[("FOO", "1"), ("GIT_AUTHOR_NAME", "a")])).is_ok());
        let base =
            plan_base(env(&[("HOME", "/root"), ("PATH", "/evil"), ("TUNNEL_TOKEN", "t"), ("LC_ALL", "C")]).into_iter());
        assert_eq!(base, env(&[("PATH", TRUSTED_PATH), ("HOME", "/root"), ("LC_ALL", "C")]));
    }
}
