//! Turning argv into the one command string SSH carries.
//!
//! The SSH protocol sends a command as a string, which the remote user's shell parses. To
//! keep "argv never goes through a shell" true in effect, every word is single-quoted, so the
//! remote shell rebuilds exactly the argv we were given: no expansion, globbing or operators.

/// What to run on an SSH host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCommand {
    /// A command line the host's shell parses as it is.
    Line(String),
    /// argv, with environment assignments and a working directory, every word quoted. Only
    /// these may go to a host's runner (see `runner`): their text is safe to embed in a script
    /// by construction.
    Argv { argv: Vec<String>, env: Vec<(String, String)>, cwd: Option<String> },
}

impl From<&str> for RemoteCommand {
    fn from(line: &str) -> Self {
        Self::Line(line.to_owned())
    }
}

impl RemoteCommand {
    /// argv with `env` assignments and a working directory; checks argv is not empty and each
    /// variable name is a shell name.
    pub fn argv(argv: Vec<String>, env: Vec<(String, String)>, cwd: Option<String>) -> Result<Self, String> {
        if argv.is_empty() {
            return Err("empty command".into());
        }
        if let Some((key, _)) = env.iter().find(|(key, _)| !is_shell_name(key)) {
            return Err(format!("environment variable name {key:?} is not a shell name"));
        }
        Ok(Self::Argv { argv, env, cwd })
    }

    /// The text of an SSH `exec` request.
    pub fn line(&self) -> String {
        match self {
            Self::Line(line) => line.clone(),
            Self::Argv { argv, env, cwd } => {
                let exec = cwd.is_some() || !env.is_empty();
                build(argv, env, cwd.as_deref(), exec)
            }
        }
    }

    /// For argv: the line with the program always started by `exec`, to run as the last thing
    /// in a subshell. `None` for a free-form line, or when a NUL byte (which no shell can
    /// hold) is in it.
    pub(crate) fn exec_line(&self) -> Option<String> {
        match self {
            Self::Line(_) => None,
            Self::Argv { argv, env, cwd } => Some(build(argv, env, cwd.as_deref(), true)).filter(|l| !l.contains('\0')),
        }
    }
}

fn is_shell_name(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.as_bytes()[0].is_ascii_digit()
}

/// `'word'` with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line for `argv`, with `env` assignments and a working directory in front.
fn build(argv: &[String], env: &[(String, String)], cwd: Option<&str>, exec: bool) -> String {
    let mut out = String::new();
    if let Some(dir) = cwd {
        out.push_str(&format!("cd {} && ", quote(dir)));
    }
    for (key, value) in env {
        out.push_str(&format!("{key}={} ", quote(value)));
    }
    if exec {
        out.push_str("exec ");
    }
    out.push_str(&argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_real_shell() {
        let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$HOME", "`id`", "*", "", ";rm -rf /", "\n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line =
            RemoteCommand::argv(argv.clone(), vec![("X_Y".into(), "v $w".into())], Some("/".into())).unwrap().line();
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b|it's|$HOME|`id`|*||;rm -rf /|\n|");
        assert!(RemoteCommand::argv(argv, vec![("A;B".into(), "x".into())], None).unwrap_err().contains("A;B"));
        assert!(RemoteCommand::argv(vec![], vec![], None).is_err());
    }
}
