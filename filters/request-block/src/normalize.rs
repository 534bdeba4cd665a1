//! What rules are matched against: the path and query as a server behind Envoy may end up
//! reading them, whatever encoding tricks the client used.
//!
//! - [`decode`]: percent-decoding repeated until nothing changes (`%252e` is `.`), lenient (a `%`
//!   not followed by two hex digits stays), overlong UTF-8 forms of ASCII (`%c0%ae`, `%e0%80%ae`)
//!   read as the ASCII character they spell, other invalid UTF-8 replaced, `\` read as `/`
//!   (servers on Windows do), NUL removed.
//! - [`normalize_path`]: [`decode`], then `;params` cut from every segment, empty segments
//!   merged (`//`), `.` and `..` segments resolved (never above the root).
//!
//! Case-insensitive rules compare lower-cased text, so mixed case needs nothing here.

/// How many rounds of percent-decoding at most (each must change something to go on).
const MAX_ROUNDS: usize = 4;

/// `text` percent-decoded until stable, overlong UTF-8 and backslashes resolved (see the
/// [module documentation](self)).
///
/// ```
/// use tollgate_request_block::normalize::decode;
/// assert_eq!(decode("%252e%252e%2fetc"), "../etc");
/// assert_eq!(decode("%c0%ae%c0%ae%c0%afx"), "../x");
/// assert_eq!(decode("a%zzb%"), "a%zzb%");
/// ```
pub fn decode(text: &str) -> String {
    let mut current = text.as_bytes().to_vec();
    for _ in 0..MAX_ROUNDS {
        let next = percent_decode_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    let mut out = String::from_utf8_lossy(&fold_overlong(&current)).into_owned();
    out.retain(|c| c != '\0');
    out.replace('\\', "/")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_once(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        // `%u002e` (IIS) spells a character too.
        if b == b'%'
            && matches!(bytes.get(i + 1), Some(b'u' | b'U'))
            && let Some(digits) = bytes.get(i + 2..i + 6)
            && let Some(code) = digits
                .iter()
                .try_fold(0u32, |acc, &d| hex(d).map(|v| acc << 4 | u32::from(v)))
            && let Some(c) = char::from_u32(code)
        {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            i += 6;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// Overlong encodings of ASCII (`C0 AE`, `E0 80 AE`, `F0 80 80 AE`) to the ASCII byte.
fn fold_overlong(bytes: &[u8]) -> Vec<u8> {
    let cont = |b: Option<&u8>| b.copied().filter(|b| b & 0xC0 == 0x80);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if (b == 0xC0 || b == 0xC1)
            && let Some(c1) = cont(bytes.get(i + 1))
        {
            out.push(((b & 0x1F) << 6) | (c1 & 0x3F));
            i += 2;
            continue;
        }
        if b == 0xE0
            && let (Some(c1), Some(c2)) = (cont(bytes.get(i + 1)), cont(bytes.get(i + 2)))
            && c1 & 0x3F < 0x02
        {
            out.push(((c1 & 0x3F) << 6) | (c2 & 0x3F));
            i += 3;
            continue;
        }
        if b == 0xF0
            && let (Some(0x80), Some(c2), Some(c3)) = (
                cont(bytes.get(i + 1)),
                cont(bytes.get(i + 2)),
                cont(bytes.get(i + 3)),
            )
            && c2 & 0x3F < 0x02
        {
            out.push(((c2 & 0x3F) << 6) | (c3 & 0x3F));
            i += 4;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The path part of a `:path` (before `?` or `#`), [`decode`]d and normalised.
///
/// ```
/// use tollgate_request_block::normalize::normalize_path;
/// assert_eq!(normalize_path("/public/%2e%2e/admin"), "/admin");
/// assert_eq!(normalize_path("//admin;jsessionid=1/./x"), "/admin/x");
/// assert_eq!(normalize_path("/a/../../..%2f..%2fadmin"), "/admin");
/// assert_eq!(normalize_path("/admin%2F"), "/admin/");
/// ```
pub fn normalize_path(raw_path: &str) -> String {
    let path = split_path(raw_path).0;
    let decoded = decode(path);
    let trailing = decoded.ends_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// `:path` split into the path and the query (without `?`; fragment dropped).
pub fn split_path(raw: &str) -> (&str, &str) {
    let raw = raw.split('#').next().unwrap_or(raw);
    raw.split_once('?').unwrap_or((raw, ""))
}

/// The query string [`decode`]d, `+` read as a space (form encoding).
pub fn decode_query(query: &str) -> String {
    decode(&query.replace('+', " "))
}
