//! SHA-256 digests as lowercase hex: the one helper behind content hashes, idempotency keys
//! and key fingerprints, so every crate spells a digest the same way.

use sha2::{Digest, Sha256};

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// The full SHA-256 of `bytes`, 64 hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The first 128 bits of the SHA-256 of `bytes`, 32 hex digits: short enough for keys and
/// column values, long enough that a collision is not a concern.
pub fn short_sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..16])
}

/// [`short_sha256_hex`] of a JSON value's compact serialization, fed straight into the digest
/// (no intermediate string): the content hash kept with every mapping.
pub fn json_short_hash(value: &serde_json::Value) -> String {
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = Hasher(Sha256::new());
    // Serializing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut hasher, value);
    hex(&hasher.0.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_the_reference_implementation() {
        // python3 -c "import hashlib; print(hashlib.sha256(b'abc').hexdigest())"
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(short_sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn the_json_hash_is_the_first_half_of_the_sha256_of_the_compact_json() {
        // Stored with every mapping: it must never change, or every record is sent again.
        // Reference: python3 -c "import hashlib; print(hashlib.sha256(
        //   b'{\"a\":1,\"b\":[\"x\",null]}').hexdigest()[:32])"
        let value = serde_json::json!({"a": 1, "b": ["x", null]});
        assert_eq!(json_short_hash(&value), "18c018603b12c4beed8593acb6ad65cd");
        assert_eq!(
            json_short_hash(&value),
            short_sha256_hex(br#"{"a":1,"b":["x",null]}"#)
        );
    }
}
