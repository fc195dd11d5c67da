//! The ELF interpreter a program names (`PT_INTERP`), so the sandbox can let exactly that
//! program run: the kernel checks Landlock's execute right on the program *and* on its
//! interpreter (the dynamic loader), but not on the shared libraries the loader maps.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Most bytes of a program's header read to find its interpreter.
const HEADER_MAX: usize = 64 * 1024;
const PT_INTERP: u32 = 3;

/// The canonical path of `program`'s ELF interpreter; `Ok(None)` for a static binary.
/// A script (`#!`) or anything else that is not ELF is an error: the sandbox would have to let
/// its interpreter run every script, so such programs are not confined that way.
pub(crate) fn interpreter(program: &Path) -> Result<Option<PathBuf>, String> {
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(program)
        .and_then(|f| f.take(HEADER_MAX as u64).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let interp = parse_interp(&head).map_err(|why| format!("{}: {why}", program.display()))?;
    match interp {
        None => Ok(None),
        Some(raw) => {
            let path = Path::new(std::str::from_utf8(raw).map_err(|_| "interpreter path is not UTF-8")?);
            std::fs::canonicalize(path).map(Some).map_err(|e| format!("interpreter {}: {e}", path.display()))
        }
    }
}

/// The `PT_INTERP` bytes (without the trailing NUL) of an ELF image whose first bytes are
/// `head`; `None` if it has no such segment.
fn parse_interp(head: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    if head.starts_with(b"#!") {
        return Err("is a script, not a binary");
    }
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return Err("is not an ELF binary");
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return Err("has an unknown ELF class"),
    };
    let big = match head[5] {
        1 => false,
        2 => true,
        _ => return Err("has an unknown ELF byte order"),
    };
    let num = |at: usize, len: usize| -> Result<u64, &'static str> {
        let bytes = head.get(at..at + len).ok_or("has a truncated header")?;
        let mut v = 0u64;
        for i in 0..len {
            let b = if big { bytes[i] } else { bytes[len - 1 - i] };
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    };
    let (phoff, phentsize, phnum) =
        if wide { (num(32, 8)?, num(54, 2)?, num(56, 2)?) } else { (num(28, 4)?, num(42, 2)?, num(44, 2)?) };
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).map_err(|_| "has a bad program header offset")?;
        if num(at, 4)? as u32 != PT_INTERP {
            continue;
        }
        let (offset, size) =
            if wide { (num(at + 8, 8)?, num(at + 32, 8)?) } else { (num(at + 4, 4)?, num(at + 16, 4)?) };
        let start = usize::try_from(offset).map_err(|_| "has a bad interpreter offset")?;
        let end = start.checked_add(usize::try_from(size).map_err(|_| "has a bad interpreter size")?);
        let raw = end.and_then(|end| head.get(start..end)).ok_or("names its interpreter past the header")?;
        let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
        return Ok(Some(raw));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_of_a_system_binary() {
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let interp = interpreter(&sh).unwrap().expect("/bin/sh is dynamically linked");
        assert!(interp.file_name().unwrap().to_str().unwrap().starts_with("ld-"), "{}", interp.display());
    }

    #[test]
    fn refuses_scripts_and_garbage_without_panicking() {
        assert_eq!(parse_interp(b"#!/bin/sh\necho hi\n"), Err("is a script, not a binary"));
        assert_eq!(parse_interp(b"hello"), Err("is not an ELF binary"));
        let mut fake = vec![0u8; 64];
        fake[..4].copy_from_slice(b"\x7fELF");
        fake[4] = 2;
        fake[5] = 1;
        fake[32] = 0xff; // program headers far past the end
        fake[56] = 1;
        assert!(parse_interp(&fake).is_err());
        for len in 0..64 {
            let _ = parse_interp(&fake[..len]);
        }
    }
}
