//! Header-name comparisons a word at a time.
//!
//! The filter compares names on every request: each request header against the names and
//! prefixes its configuration reads, and each read name when a template or condition looks its
//! value up. Slice equality and `eq_ignore_ascii_case` go through `memcmp` or a byte loop, about
//! 20 wasm instructions per byte (a 13-byte `authorization` lookup cost ~270); here eight bytes
//! are loaded at once and lowercased together (SWAR), a dozen instructions per word.

/// The ASCII letters of each byte of `word` lowercased; other bytes (`0x80..` included)
/// unchanged.
#[inline]
fn lower_word(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte, on the low seven bits (no carry crosses a byte: at most 0x7f + 0x3f):
    // the high bit of `at_least_a` is set when the byte is >= 'A' (0x41 + 0x3f = 0x80), that
    // of `past_z` when it is > 'Z' (0x5b + 0x25 = 0x80).
    let low = word & LOW7;
    let at_least_a = low + 0x3f3f_3f3f_3f3f_3f3f;
    let past_z = low + 0x2525_2525_2525_2525;
    // Upper case: >= 'A', not > 'Z', and an ASCII byte (its own high bit clear).
    let upper = at_least_a & !past_z & !word & HIGH;
    // 0x80 >> 2 = 0x20, the case bit.
    word | (upper >> 2)
}

/// Eight bytes of `bytes` from `at` as a little-endian word (`at + 8 <= bytes.len()`; 0 past
/// the end, which callers never reach).
#[inline]
fn word8(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_le_bytes(*w))
}

/// Four bytes of `bytes` from `at`, zero-extended (as [`word8`]).
#[inline]
fn word4(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |w| u64::from(u32::from_le_bytes(*w)))
}

/// Whether `name` equals `lower` (lowercase) ignoring ASCII case. `fold` lowercases a word of
/// `name` (the identity for an exact comparison).
#[inline]
fn equal_by_words(name: &[u8], lower: &[u8], fold: impl Fn(u64) -> u64) -> bool {
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len >= 8 {
        // Whole words, then the last eight bytes (overlapping the previous word).
        let mut at = 0;
        while at + 8 < len {
            if fold(word8(name, at)) != word8(lower, at) {
                return false;
            }
            at += 8;
        }
        fold(word8(name, len - 8)) == word8(lower, len - 8)
    } else if len >= 4 {
        fold(word4(name, 0)) == word4(lower, 0)
            && fold(word4(name, len - 4)) == word4(lower, len - 4)
    } else {
        name.iter()
            .zip(lower)
            .all(|(n, l)| fold(u64::from(*n)) == u64::from(*l))
    }
}

/// Whether `name` is `lower` (a lowercase name) ignoring ASCII case.
///
/// ```
/// use tollgate_headers::bytes::eq_lowercase;
/// assert!(eq_lowercase(b"X-Request-Id", b"x-request-id"));
/// assert!(!eq_lowercase(b"x-request-ie", b"x-request-id"));
/// assert!(!eq_lowercase(b"x-request", b"x-request-id"));
/// ```
#[inline]
pub fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    equal_by_words(name, lower, lower_word)
}

/// Whether `name` starts with `prefix` (lowercase) ignoring ASCII case.
///
/// ```
/// use tollgate_headers::bytes::starts_with_lowercase;
/// assert!(starts_with_lowercase(b"X-Debug-Trace", b"x-debug-"));
/// assert!(!starts_with_lowercase(b"x-deb", b"x-debug-"));
/// ```
#[inline]
pub fn starts_with_lowercase(name: &[u8], prefix: &[u8]) -> bool {
    name.get(..prefix.len())
        .is_some_and(|start| eq_lowercase(start, prefix))
}

/// Whether `a` and `b` are the same bytes.
///
/// ```
/// use tollgate_headers::bytes::same;
/// assert!(same(b"authorization", b"authorization"));
/// assert!(!same(b"authorization", b"authorizatioN"));
/// ```
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    equal_by_words(a, b, |word| word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, in every position of names of every length up to 20, against the
    /// standard library's answers.
    #[test]
    fn agrees_with_the_standard_library() {
        let base: Vec<u8> = b"x-Request-ID-abcdefgh".to_vec();
        for len in 0..=20 {
            let name = &base[..len];
            let lower = name.to_ascii_lowercase();
            assert!(eq_lowercase(name, &lower), "{name:?}");
            assert_eq!(same(name, &lower), name == lower.as_slice(), "{name:?}");
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut other = name.to_vec();
                    other[at] = byte;
                    assert_eq!(
                        eq_lowercase(&other, &lower),
                        other.eq_ignore_ascii_case(&lower),
                        "{other:?} vs {lower:?}"
                    );
                    assert_eq!(same(&other, name), other == name, "{other:?}");
                }
            }
            for cut in 0..=len {
                assert!(starts_with_lowercase(name, &lower[..cut]));
            }
            assert!(!starts_with_lowercase(name, b"x-request-id-abcdefghz"));
        }
    }

    #[test]
    fn lowercases_only_ascii_capitals() {
        for byte in 0..=255u8 {
            let word = u64::from_le_bytes([byte; 8]);
            assert_eq!(
                lower_word(word),
                u64::from_le_bytes([byte.to_ascii_lowercase(); 8]),
                "{byte:#x}"
            );
        }
    }
}
