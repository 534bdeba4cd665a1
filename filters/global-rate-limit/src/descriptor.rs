//! Descriptors from a request, by the actions of each descriptor set, with the native filter's
//! rules: an action that cannot produce its entry (a header absent without `skip_if_absent`, a
//! `header_value_match` that does not come out as expected, no peer address) leaves the whole
//! descriptor out; a descriptor with no entries is not sent.

use tollgate_sdk::Request;

use crate::config::{Action, DescriptorSet, HeaderMatcher, StringMatch};
use crate::proto::Descriptor;

/// The descriptors of `sets` for `req`, in order.
pub fn build(sets: &[DescriptorSet], req: &Request<'_>) -> Vec<Descriptor> {
    sets.iter().filter_map(|set| one(set, req)).collect()
}

fn one(set: &DescriptorSet, req: &Request<'_>) -> Option<Descriptor> {
    let mut entries = Vec::with_capacity(set.actions.len());
    for action in &set.actions {
        match action {
            Action::RequestHeaders(h) => match req.header(h.header_name.as_str()) {
                Some(value) => entries.push((h.descriptor_key.clone(), value)),
                None if h.skip_if_absent => {}
                None => return None,
            },
            Action::RemoteAddress(_) => {
                let ip = tollgate_sdk::peer::source_address()
                    .and_then(|a| tollgate_sdk::peer::ip_of(&a))?;
                entries.push(("remote_address".into(), ip.to_string()));
            }
            Action::GenericKey(g) => entries.push((
                g.descriptor_key
                    .clone()
                    .unwrap_or_else(|| "generic_key".into()),
                g.descriptor_value.clone(),
            )),
            Action::HeaderValueMatch(m) => {
                let matched = m.headers.iter().all(|h| header_matches(h, req));
                if matched != m.expect_match {
                    return None;
                }
                entries.push((
                    m.descriptor_key
                        .clone()
                        .unwrap_or_else(|| "header_match".into()),
                    m.descriptor_value.clone(),
                ));
            }
        }
    }
    if entries.is_empty() {
        return None;
    }
    Some(Descriptor {
        entries,
        hits_addend: set.hits_addend.map(|h| h.number),
    })
}

/// Envoy's `HeaderMatcher` for the supported forms: an absent header fails a value match even
/// when inverted; a presence match is inverted normally.
fn header_matches(m: &HeaderMatcher, req: &Request<'_>) -> bool {
    let value = req.header(m.name.as_str());
    match (&m.string_match, value) {
        (Some(_), None) => false,
        (Some(s), Some(v)) => string_matches(s, &v) != m.invert_match,
        (None, v) => (v.is_some() == m.present_match.unwrap_or(true)) != m.invert_match,
    }
}

fn string_matches(s: &StringMatch, value: &str) -> bool {
    let fold = |t: &str| {
        if s.ignore_case {
            t.to_ascii_lowercase()
        } else {
            t.to_string()
        }
    };
    let value = fold(value);
    if let Some(e) = &s.exact {
        return value == fold(e);
    }
    if let Some(p) = &s.prefix {
        return value.starts_with(&fold(p));
    }
    if let Some(x) = &s.suffix {
        return value.ends_with(&fold(x));
    }
    if let Some(c) = &s.contains {
        return value.contains(&fold(c));
    }
    false
}
