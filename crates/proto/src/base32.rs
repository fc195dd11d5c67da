//! RFC 4648 base32, lowercase, no padding: node ids are typed and read by people, so the
//! alphabet avoids case and the easily confused 0/1/8/9.

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes exactly `N` bytes. Rejects other lengths, foreign characters and non-zero
/// trailing bits, so every byte string has exactly one spelling.
pub(crate) fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != (N * 8).div_ceil(5) {
        return None;
    }
    let mut out = [0u8; N];
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut i = 0;
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_lowercase())? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[i] = (acc >> bits) as u8;
            i += 1;
        }
    }
    if acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        assert_eq!(encode(b"foobar"), "mzxw6ytboi");
        assert_eq!(encode(b"f"), "my");
        assert_eq!(decode::<6>("mzxw6ytboi"), Some(*b"foobar"));
        assert_eq!(decode::<6>("MZXW6YTBOI"), Some(*b"foobar"));
    }

    #[test]
    fn rejects_non_canonical_and_foreign() {
        // "mz" encodes 'f' with trailing bits 0; "mz" vs "my": 'z' sets a trailing bit.
        assert_eq!(decode::<1>("my"), Some(*b"f"));
        assert_eq!(decode::<1>("mz"), None);
        assert_eq!(decode::<1>("m1"), None);
        assert_eq!(decode::<1>("myy"), None);
    }
}
