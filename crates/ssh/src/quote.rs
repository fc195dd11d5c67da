//! Turning argv into the one command string SSH carries.
//!
//! The SSH protocol sends a command as a string, which the remote user's shell parses. To
//! keep "argv never goes through a shell" true in effect, every word is single-quoted, so the
//! remote shell rebuilds exactly the argv we were given: no expansion, globbing or operators.

/// `'word'` with each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The command line for `argv`, with `env` assignments and a working directory in front.
pub fn command_line(argv: &[String], env: &[(String, String)], cwd: Option<&str>) -> Result<String, String> {
    if argv.is_empty() {
        return Err("empty command".into());
    }
    let mut out = String::new();
    if let Some(dir) = cwd {
        out.push_str(&format!("cd {} && ", quote(dir)));
    }
    for (key, value) in env {
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || key.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!("environment variable name {key:?} is not a shell name"));
        }
        out.push_str(&format!("{key}={} ", quote(value)));
    }
    if cwd.is_some() || !env.is_empty() {
        out.push_str("exec ");
    }
    out.push_str(&argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "));
    Ok(out)
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
        let line = command_line(&argv, &[("X_Y".into(), "v $w".into())], Some("/")).unwrap();
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a b|it's|$HOME|`id`|*||;rm -rf /|\n|");
        assert!(command_line(&argv, &[("A;B".into(), "x".into())], None).unwrap_err().contains("A;B"));
        assert!(command_line(&[], &[], None).is_err());
    }
}
