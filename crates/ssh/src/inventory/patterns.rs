//! Name patterns: OpenSSH's `*`/`?` globs and Ansible's `[01:20]` host ranges.

/// Most hosts one range pattern may expand to; a typo like `[0:99999999]` is an error, not
/// an out-of-memory.
pub(crate) const MAX_RANGE_HOSTS: usize = 100_000;

/// OpenSSH pattern matching: `*` any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Expands Ansible ranges: `web-[01:03]` is `web-01`, `web-02`, `web-03` (leading zeros keep
/// the width), `db-[a:c]` is `db-a` .. `db-c`, and `[0:10:5]` steps by 5. Several ranges in one
/// name multiply.
pub fn expand_ranges(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else { return Ok(vec![pattern.to_owned()]) };
    let close = pattern[open..].find(']').map(|i| open + i).ok_or_else(|| format!("{pattern:?}: '[' without ']'"))?;
    let (head, range, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let items = range_items(range).map_err(|e| format!("{pattern:?}: {e}"))?;
    let tails = expand_ranges(tail)?;
    if items.len().saturating_mul(tails.len()) > MAX_RANGE_HOSTS {
        return Err(format!("{pattern:?} expands to more than {MAX_RANGE_HOSTS} hosts"));
    }
    Ok(items.iter().flat_map(|item| tails.iter().map(move |t| format!("{head}{item}{t}"))).collect())
}

fn range_items(range: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = range.split(':').collect();
    let (start, end, step) = match parts.as_slice() {
        [s, e] => (*s, *e, 1usize),
        [s, e, step] => (*s, *e, step.parse::<usize>().map_err(|_| format!("step {step:?} is not a number"))?),
        _ => return Err(format!("range [{range}] is not [start:end] or [start:end:step]")),
    };
    if step == 0 {
        return Err("a range step of 0".into());
    }
    if let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) {
        if a > b {
            return Err(format!("range [{range}] ends before it starts"));
        }
        if (b - a) / step as u64 >= MAX_RANGE_HOSTS as u64 {
            return Err(format!("range [{range}] has more than {MAX_RANGE_HOSTS} values"));
        }
        let width = if start.len() > 1 && start.starts_with('0') { start.len() } else { 0 };
        return Ok((a..=b).step_by(step).map(|n| format!("{n:0width$}")).collect());
    }
    let (a, b) = (single_letter(start), single_letter(end));
    match (a, b) {
        (Some(a), Some(b)) if a <= b => Ok((a..=b).step_by(step).map(String::from).collect()),
        _ => Err(format!("range [{range}] is neither numbers nor single letters in order")),
    }
}

fn single_letter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}
