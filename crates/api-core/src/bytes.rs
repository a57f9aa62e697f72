//! Two small things done to bytes in several places: hex text, and a
//! comparison of secrets that takes the same time wherever they differ.

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Whether two secrets are equal, without an early exit, so timing
/// reveals nothing of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_comparison() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem") && !same_secret(b"token", b"token2"));
    }
}
