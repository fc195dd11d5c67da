//! Program text plan mode reads before allowing it: sed scripts, awk programs, find
//! expressions.

const FIND_REFUSED: &[(&str, &str)] = &[
    ("-exec", "it runs a program"),
    ("-execdir", "it runs a program"),
    ("-ok", "it runs a program"),
    ("-okdir", "it runs a program"),
    ("-delete", "it deletes files"),
    ("-fprint", "it writes files"),
    ("-fprint0", "it writes files"),
    ("-fprintf", "it writes files"),
    ("-fls", "it writes files"),
];

/// find's expression: its predicates are whole words, never abbreviated or combined, so any
/// word equal to a refused predicate refuses the command (even where find would take it as a
/// value, which only costs a false refusal). `-D` and `-O` options come first, as find reads them.
pub(super) fn find_expression(args: &[String]) -> Result<(), String> {
    for a in args {
        if let Some((p, why)) = FIND_REFUSED.iter().find(|(p, _)| a == p) {
            return Err(format!("refuses {p} ({why})"));
        }
    }
    Ok(())
}

/// An awk program: no `system()`, no pipes to or from commands (`|`, `|&`; `||` is fine), no
/// output redirection (`>`, `>>`; `>=` is fine), no `@load`/`@include` or indirect calls
/// (gawk's `@`). Text in string literals is judged too: a false refusal is cheaper than a miss.
pub(super) fn awk_read_only(program: &str) -> Result<(), String> {
    let b = program.as_bytes();
    if program.contains("system") {
        return Err("refuses programs that call system()".into());
    }
    if program.contains('@') {
        return Err("refuses @load, @include and indirect calls".into());
    }
    for (i, c) in b.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| b[j]);
        let next = b.get(i + 1).copied();
        match c {
            b'|' if prev != Some(b'|') && next != Some(b'|') => {
                return Err("refuses pipes to or from commands (|)".into())
            }
            b'>' if next != Some(b'=') => {
                return Err("refuses output redirection (>, >>); write comparisons as a < b or a >= b".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Walks a sed script command by command and refuses `w`, `W`, `e`, `s///w` and `s///e`.
pub(super) fn sed_read_only(script: &str) -> Result<(), String> {
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
