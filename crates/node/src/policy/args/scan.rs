//! One option scanner for every allow-listed program, driven by its [`Spec`].

/// How a program reads its options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Short options that take a value (attached, or the next word).
    pub(crate) short_values: &'static str,
    /// Short options whose value can only be attached (`-d` in `-d`, `-dFILE`).
    pub(crate) short_optional: &'static str,
    /// Short options that take nothing. Only consulted when `strict`.
    pub(crate) short_flags: &'static str,
    /// Long options that take a value (`--name=V` or `--name V`).
    pub(crate) long_values: &'static [&'static str],
    /// Long options whose value can only be attached (`--name[=V]`).
    pub(crate) long_optional: &'static [&'static str],
    /// Long options that take nothing. Only consulted when `strict`, and for abbreviations.
    pub(crate) long_flags: &'static [&'static str],
    /// Short options refused, with why.
    pub(crate) deny_short: &'static [(char, &'static str)],
    /// Long options refused, with why; any abbreviation of them is refused too.
    pub(crate) deny_long: &'static [(&'static str, &'static str)],
    /// Refuse options this spec does not know.
    pub(crate) strict: bool,
    /// Options may follow operands (GNU getopt's default); else the first operand ends them.
    pub(crate) permute: bool,
    /// Long options may be abbreviated to a unique prefix (getopt_long).
    pub(crate) abbreviate: bool,
    /// `-NUM` is an option (head, tail, grep context).
    pub(crate) digits: bool,
}

impl Spec {
    pub(crate) const GNU: Spec = Spec {
        short_values: "",
        short_optional: "",
        short_flags: "",
        long_values: &[],
        long_optional: &[],
        long_flags: &[],
        deny_short: &[],
        deny_long: &[],
        strict: false,
        permute: true,
        abbreviate: true,
        digits: false,
    };
}

/// One option as the program will see it: its canonical name and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opt {
    /// `"o"` for `-o`, `"output"` for `--output` (abbreviations resolved).
    pub(crate) name: String,
    pub(crate) value: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) opts: Vec<Opt>,
    pub(crate) operands: Vec<String>,
}

impl Parsed {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.opts.iter().any(|o| o.name == name)
    }

    pub(crate) fn values<'a>(&'a self, names: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.opts.iter().filter(move |o| names.contains(&o.name.as_str())).filter_map(|o| o.value.as_deref())
    }

    /// The programs a sed- or awk-like command runs: the values of `names` (`-e PROGRAM`),
    /// else its first operand.
    pub(crate) fn inline_programs<'a>(&'a self, names: &'a [&str]) -> Vec<&'a str> {
        let given: Vec<&str> = self.values(names).collect();
        if given.is_empty() {
            self.operands.first().map(String::as_str).into_iter().collect()
        } else {
            given
        }
    }
}

/// Reads `args` (without the program name) as `spec` says; an `Err` names the refused option.
pub(crate) fn scan(spec: &Spec, args: &[String]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (written, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let name = resolve_long(spec, written)?;
            let value = if attached.is_some() {
                attached
            } else if spec.long_values.contains(&name.as_str()) {
                Some(args.get(i).cloned().ok_or_else(|| format!("--{written} needs a value"))?).inspect(|_| i += 1)
            } else {
                None
            };
            out.opts.push(Opt { name, value });
        } else if arg.len() > 1 && arg.starts_with('-') {
            let body = &arg[1..];
            if spec.digits && body.bytes().all(|b| b.is_ascii_digit()) {
                out.opts.push(Opt { name: body.to_owned(), value: None });
                continue;
            }
            for (at, c) in body.char_indices() {
                if let Some((_, why)) = spec.deny_short.iter().find(|(d, _)| *d == c) {
                    return Err(format!("refuses -{c} ({why})"));
                }
                let rest = &body[at + c.len_utf8()..];
                if spec.short_values.contains(c) {
                    let value = if rest.is_empty() {
                        let v = args.get(i).cloned().ok_or_else(|| format!("-{c} needs a value"))?;
                        i += 1;
                        v
                    } else {
                        rest.to_owned()
                    };
                    out.opts.push(Opt { name: c.to_string(), value: Some(value) });
                    break;
                }
                if spec.short_optional.contains(c) {
                    out.opts.push(Opt { name: c.to_string(), value: (!rest.is_empty()).then(|| rest.to_owned()) });
                    break;
                }
                if spec.strict && !spec.short_flags.contains(c) && !(spec.digits && c.is_ascii_digit()) {
                    return Err(format!("refuses -{c}: not an option plan mode knows for this program"));
                }
                out.opts.push(Opt { name: c.to_string(), value: None });
            }
        } else {
            out.operands.push(arg.clone());
            if !spec.permute {
                out.operands.extend(args[i..].iter().cloned());
                break;
            }
        }
    }
    Ok(out)
}

/// The long option `written` names: itself, or the one long option it abbreviates. An
/// abbreviation of a refused option is refused even when it is ambiguous (the program would
/// then refuse it too, or pick one we cannot foresee).
fn resolve_long(spec: &Spec, written: &str) -> Result<String, String> {
    let known = || {
        spec.long_values
            .iter()
            .chain(spec.long_optional)
            .chain(spec.long_flags)
            .copied()
            .chain(spec.deny_long.iter().map(|(n, _)| *n))
    };
    let exact = known().any(|n| n == written);
    if let Some((name, why)) =
        spec.deny_long.iter().find(|(n, _)| *n == written || (!exact && spec.abbreviate && n.starts_with(written)))
    {
        return Err(format!("refuses --{written} (--{name}: {why})"));
    }
    if exact || !spec.abbreviate {
        if !exact && spec.strict {
            return Err(format!("refuses --{written}: not an option plan mode knows for this program"));
        }
        return Ok(written.to_owned());
    }
    let matches: Vec<&str> = known().filter(|n| n.starts_with(written)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] if !spec.strict => Ok(written.to_owned()),
        [] => Err(format!("refuses --{written}: not an option plan mode knows for this program")),
        _ => Err(format!("refuses --{written}: it abbreviates more than one option ({})", matches.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SORT_LIKE: Spec = Spec {
        short_values: "kto",
        short_optional: "d",
        long_values: &["key", "output", "field-separator"],
        long_flags: &["unique", "numeric-sort"],
        deny_short: &[('o', "writes a file")],
        deny_long: &[("output", "writes a file"), ("compress-program", "runs a program")],
        ..Spec::GNU
    };

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn every_spelling_of_a_refused_option_is_seen() {
        for attempt in [
            &["-o", "f"][..],
            &["-of"],
            &["-uo", "f"],
            &["-uof"],
            &["--output=f"],
            &["--output", "f"],
            &["--outp=f"],
            &["--o", "f"],
            &["--compress=gzip"],
            &["x", "-o", "f"],
        ] {
            assert!(scan(&SORT_LIKE, &words(attempt)).is_err(), "{attempt:?}");
        }
    }

    #[test]
    fn values_are_not_options_and_options_are_not_operands() {
        let p = scan(&SORT_LIKE, &words(&["-k1o", "-t", "-o", "--key", "2", "in", "--", "-o"])).unwrap();
        assert_eq!(p.operands, ["in", "-o"]);
        assert_eq!(p.values(&["k", "key"]).collect::<Vec<_>>(), ["1o", "2"]);
        assert_eq!(p.values(&["t"]).collect::<Vec<_>>(), ["-o"]);
        assert!(scan(&SORT_LIKE, &words(&["--uniq"])).unwrap().has("unique"));
        let strict = Spec { strict: true, ..SORT_LIKE };
        assert!(scan(&strict, &words(&["-z"])).is_err());
        assert!(scan(&strict, &words(&["--zzz"])).is_err());
        let posix = Spec { permute: false, ..SORT_LIKE };
        assert_eq!(scan(&posix, &words(&["a", "-o", "f"])).unwrap().operands, ["a", "-o", "f"]);
    }
}
