//! Byte strings on the wire: [`ByteBuf`] (payloads, shared when cloned) and [`PathBytes`]
//! (file names as the filesystem has them). Both are written by postcard as one
//! length-prefixed run.

use serde::{Deserialize, Serialize};

/// Bytes that postcard writes as one length-prefixed run instead of element by element.
/// Shared, not copied, when cloned: a stream keeps what it sent until the peer acknowledges
/// it, and the message that carries it points at the same memory.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteBuf(pub bytes::Bytes);

impl ByteBuf {
    pub fn copy_from(data: &[u8]) -> Self {
        Self(bytes::Bytes::copy_from_slice(data))
    }
}

impl std::ops::Deref for ByteBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteBuf({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for ByteBuf {
    fn from(v: Vec<u8>) -> Self {
        Self(v.into())
    }
}

impl From<bytes::Bytes> for ByteBuf {
    fn from(b: bytes::Bytes) -> Self {
        Self(b)
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf::copy_from(v))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf::from(v))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// A file path or name as the filesystem has it: any bytes (a Unix name need not be UTF-8).
/// postcard writes it as a byte string, exactly as it writes a `String`, so UTF-8 paths read
/// the same to peers of earlier versions. In JSON it is text: bytes that are not UTF-8 show
/// as `\xHH` (for display; a non-UTF-8 name is targeted by its real bytes, from `argv`).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    #[cfg(unix)]
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt as _;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    #[cfg(unix)]
    pub fn from_path(path: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt as _;
        Self(path.as_os_str().as_bytes().to_vec())
    }

    /// The path as text: itself when UTF-8, else with each stray byte as `\xHH`.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }

    /// The path as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl std::fmt::Display for PathBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl From<&str> for PathBytes {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

impl From<String> for PathBytes {
    fn from(s: String) -> Self {
        Self(s.into_bytes())
    }
}

impl Serialize for PathBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.display())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PathBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PathBytes, E> {
                Ok(PathBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<PathBytes, E> {
                Ok(PathBytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PathBytes, E> {
                Ok(PathBytes::from(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(Visitor)
        } else {
            d.deserialize_bytes(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_bytes_on_the_wire_and_read_like_strings_did() {
        // A UTF-8 path encodes exactly as the `String` it replaced.
        let as_string = postcard::to_allocvec(&"/etc/hosts".to_owned()).unwrap();
        assert_eq!(postcard::to_allocvec(&PathBytes::from("/etc/hosts")).unwrap(), as_string);
        assert_eq!(postcard::from_bytes::<PathBytes>(&as_string).unwrap(), PathBytes::from("/etc/hosts"));
        let odd = PathBytes(b"/tmp/caf\xe9\xff.txt".to_vec());
        let wire = postcard::to_allocvec(&odd).unwrap();
        assert_eq!(postcard::from_bytes::<PathBytes>(&wire).unwrap(), odd);
        assert_eq!(odd.display(), "/tmp/caf\\xe9\\xff.txt");
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"/tmp/caf\\\\xe9\\\\xff.txt\"");
    }
}
