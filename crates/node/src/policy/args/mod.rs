//! Plan mode's argument checks, the first line of defence locally (under the kernel sandbox)
//! and the only one on `ssh:` hosts, which run nothing of ours.
//!
//! Options are read the way the programs' own parsers read them ([`scan`]): values attached
//! (`-oFILE`, `--output=FILE`) or in the next word, short flags combined (`-uo FILE`), GNU
//! long options abbreviated to any unambiguous prefix (`--outp`), `--` ending the options.
//! Each allow-listed program has a [`Spec`] ([`programs`]) naming the options that write,
//! execute or name a helper program; programs whose operands are program text or verbs (sed,
//! awk, systemctl, ...) are *strict*: an option their spec does not know is refused, since its
//! value could be mistaken for the text that is checked.

mod programs;
mod scan;
mod scripts;

pub(crate) use programs::{check, recursive_reads, PLAN_PROGRAMS};
