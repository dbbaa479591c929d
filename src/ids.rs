//! Random identifiers and secrets: prefixed, base62, from the OS's CSPRNG.

use rand::{rngs::OsRng, Rng};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` base62 characters from the OS's random source: 5.95 bits of entropy each.
pub fn random_base62(len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// A new public identifier such as `prj_3kT...`: 20 random characters (119 bits), so
/// identifiers cannot be guessed or enumerated.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base62(20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_base62_and_distinct() {
        let a = new_id("prj");
        let b = new_id("prj");
        assert!(a.starts_with("prj_"));
        assert_eq!(a.len(), 24);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
