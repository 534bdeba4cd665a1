//! The proxy-wasm pairs encoding used for header maps and property maps:
//! `u32 count`, then `count` times `(u32 key_len, u32 value_len)`, then each
//! key and value followed by a NUL byte. All integers little-endian.

/// Encodes `pairs` in the proxy-wasm pairs format.
pub fn encode<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut count = 0u32;
    let mut size = 4usize;
    for (k, v) in pairs.clone() {
        count += 1;
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&count.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes the pairs format. `None` when the data is malformed (truncated,
/// sizes past the end, missing NUL terminators). Empty input is zero pairs.
pub fn decode(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut p = 4usize.checked_add(count.checked_mul(8)?)?;
    if p > data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let klen = word(4 + i * 8)?;
        let vlen = word(8 + i * 8)?;
        let k = data.get(p..p.checked_add(klen)?)?;
        p += klen;
        if data.get(p) != Some(&0) {
            return None;
        }
        p += 1;
        let v = data.get(p..p.checked_add(vlen)?)?;
        p += vlen;
        if data.get(p) != Some(&0) {
            return None;
        }
        p += 1;
        out.push((k, v));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x-empty", b"")];
        let enc = encode(pairs.iter().copied());
        assert_eq!(&enc[..4], &2u32.to_le_bytes());
        assert_eq!(enc.len(), 4 + 16 + (5 + 1 + 2 + 1) + (7 + 1 + 1));
        assert_eq!(decode(&enc), Some(pairs));
    }

    #[test]
    fn empty_is_zero_pairs() {
        assert_eq!(decode(&[]), Some(vec![]));
        let enc = encode(std::iter::empty::<(&[u8], &[u8])>());
        assert_eq!(enc, 0u32.to_le_bytes());
        assert_eq!(decode(&enc), Some(vec![]));
    }

    #[test]
    fn malformed_is_rejected() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"k", b"v")];
        let enc = encode(pairs.iter().copied());
        assert_eq!(decode(&enc[..enc.len() - 1]), None, "truncated");
        let mut bad = enc.clone();
        bad[0] = 200; // count far beyond the data
        assert_eq!(decode(&bad), None);
        let mut no_nul = enc.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(decode(&no_nul), None);
    }
}
