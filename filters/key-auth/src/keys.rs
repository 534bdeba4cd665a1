//! Finding an API key in a request (header, query parameter, cookie) and removing it.

use crate::config::KeySource;

/// The longest key accepted; longer ones are refused as malformed before hashing.
pub const MAX_KEY_LEN: usize = 1024;

/// What a source holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing (or only empty values).
    Nothing,
    /// Exactly one key.
    Key(String),
    /// Several values, or an unusable one (too long, bad percent-encoding): refused.
    Malformed,
}

/// The values of header `name` among `headers` (case-insensitive).
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// One key out of several candidate values: empty values count as absent.
fn single(values: Vec<Option<String>>) -> Found {
    let mut found = Vec::new();
    for value in values {
        match value {
            None => return Found::Malformed,
            Some(v) => {
                let v = v.trim_matches([' ', '\t']).to_string();
                if !v.is_empty() {
                    found.push(v);
                }
            }
        }
    }
    match found.len() {
        0 => Found::Nothing,
        1 => match found.pop() {
            Some(key) if key.len() <= MAX_KEY_LEN => Found::Key(key),
            _ => Found::Malformed,
        },
        _ => Found::Malformed,
    }
}

/// Looks for the key of `source` in the request `headers` (pseudo-headers included).
///
/// ```
/// use tollgate_key_auth::config::KeySource;
/// use tollgate_key_auth::keys::{find, Found};
/// let headers = vec![(":path".to_string(), "/a?x=1&api_key=k%2B1".to_string())];
/// assert_eq!(find(&KeySource::Query("api_key".into()), &headers), Found::Key("k+1".into()));
/// ```
pub fn find(source: &KeySource, headers: &[(String, String)]) -> Found {
    match source {
        KeySource::Header(name) => single(
            header_values(headers, name.as_str())
                .into_iter()
                .map(|v| Some(v.to_string()))
                .collect(),
        ),
        KeySource::Query(name) => {
            let path = header_values(headers, ":path")
                .first()
                .copied()
                .unwrap_or("");
            let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
            let query = query.split('#').next().unwrap_or("");
            single(
                query
                    .split('&')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (percent_decode(k).as_deref() == Some(name.as_str()))
                            .then(|| percent_decode(v))
                    })
                    .collect(),
            )
        }
        KeySource::Cookie(name) => single(
            header_values(headers, "cookie")
                .into_iter()
                .flat_map(|v| v.split(';'))
                .filter_map(|c| {
                    let (k, v) = c.split_once('=').unwrap_or((c, ""));
                    (k.trim() == name).then(|| Some(v.trim().trim_matches('"').to_string()))
                })
                .collect(),
        ),
    }
}

use tollgate_sdk::http::percent_decode;
pub use tollgate_sdk::http::{cookie_without, path_without_param};

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_source() -> Result<(), tollgate_sdk::headers::HeaderError> {
        let src = KeySource::Header(tollgate_sdk::HeaderName::new("x-api-key")?);
        assert_eq!(
            find(&src, &h(&[("X-Api-Key", " k1 ")])),
            Found::Key("k1".into())
        );
        assert_eq!(find(&src, &h(&[("x-api-key", "")])), Found::Nothing);
        assert_eq!(find(&src, &h(&[])), Found::Nothing);
        assert_eq!(
            find(&src, &h(&[("x-api-key", "a"), ("x-api-key", "b")])),
            Found::Malformed
        );
        assert_eq!(
            find(&src, &h(&[("x-api-key", &"k".repeat(MAX_KEY_LEN + 1))])),
            Found::Malformed
        );
        Ok(())
    }

    #[test]
    fn query_source() {
        let src = KeySource::Query("api_key".into());
        let q = |p: &str| find(&src, &h(&[(":path", p)]));
        assert_eq!(q("/a?api_key=k1"), Found::Key("k1".into()));
        assert_eq!(q("/a?x=1&api%5Fkey=k%201"), Found::Key("k 1".into()));
        assert_eq!(q("/a?api_key="), Found::Nothing);
        assert_eq!(q("/a?api_key"), Found::Nothing);
        assert_eq!(q("/a?apikey=1"), Found::Nothing);
        assert_eq!(q("/api_key=1"), Found::Nothing);
        assert_eq!(q("/a?api_key=1&api_key=2"), Found::Malformed);
        assert_eq!(q("/a?api_key=%zz"), Found::Malformed);
        assert_eq!(q("/a?api_key=%ff"), Found::Malformed);
    }

    #[test]
    fn cookie_source() {
        let src = KeySource::Cookie("api_key".into());
        let c = |v: &[(&str, &str)]| find(&src, &h(v));
        assert_eq!(c(&[("cookie", "a=1; api_key=k1")]), Found::Key("k1".into()));
        assert_eq!(
            c(&[("cookie", "a=1"), ("Cookie", "api_key=\"k1\"")]),
            Found::Key("k1".into())
        );
        assert_eq!(c(&[("cookie", "my_api_key=k1")]), Found::Nothing);
        assert_eq!(c(&[("cookie", "api_key=1; api_key=2")]), Found::Malformed);
    }

    #[test]
    fn removal_keeps_everything_else() {
        assert_eq!(
            path_without_param("/a?api_key=1&api_key=2&b", "api_key").as_deref(),
            Some("/a?b")
        );
        assert_eq!(
            path_without_param("/a?api%5Fkey=1#frag", "api_key").as_deref(),
            Some("/a#frag")
        );
        assert_eq!(path_without_param("/a", "api_key"), None);
        assert_eq!(cookie_without("a=1", "api_key"), None);
        assert_eq!(
            cookie_without("api_key=1;a=1;", "api_key").as_deref(),
            Some("a=1")
        );
    }
}
