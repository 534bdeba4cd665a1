//! What HTTP allows in a header name and value, checked where headers come
//! from files (callout stubs: `--stub CLUSTER=FILE`, suites' `clusters:`,
//! the callouts of native recordings).
//!
//! A name is a token (RFC 9110 section 5.6.2), optionally after the `:` of a
//! pseudo-header. A value holds no control character but horizontal tab
//! (section 5.5): in particular no CR, LF or NUL, which Envoy refuses in any
//! header (`HeaderUtility`'s valid header string) and which would let a stub
//! inject headers into what the filter, or the upstream, receives.

/// Whether `b` may appear in a token (a table: every header of every
/// recording read goes through here).
fn tchar(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = (i as u8).is_ascii_alphanumeric();
            i += 1;
        }
        let punctuation = b"!#$%&'*+-.^_`|~";
        let mut j = 0;
        while j < punctuation.len() {
            t[punctuation[j] as usize] = true;
            j += 1;
        }
        t
    };
    TABLE[usize::from(b)]
}

/// Whether `b` may appear in a header name's token.
pub(crate) fn is_token_byte(b: u8) -> bool {
    tchar(b)
}

/// A printable name for a refused byte.
fn byte_name(b: u8) -> String {
    match b {
        b'\r' => "a carriage return (CR)".into(),
        b'\n' => "a line feed (LF)".into(),
        0 => "a NUL byte".into(),
        _ => format!("the control byte 0x{b:02x}"),
    }
}

/// Checks one header; the error names the header and the offending byte, on
/// one line, without echoing the value.
pub fn check(name: &str, value: &str) -> Result<(), String> {
    let bare = name.strip_prefix(':').unwrap_or(name);
    if bare.is_empty() || !bare.bytes().all(tchar) {
        return Err(format!(
            "header name {name:?} is not a valid HTTP header name"
        ));
    }
    if let Some((i, b)) = value
        .bytes()
        .enumerate()
        .find(|&(_, b)| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!(
            "header {name:?}: the value has {} at byte {i}; header values cannot hold CR, LF, NUL or other control characters",
            byte_name(b)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_are_tokens_and_values_hold_no_control_characters() {
        assert!(check("x-user", "alice \t(admin)").is_ok());
        assert!(check(":status", "200").is_ok());
        assert!(check("x-obs", "caf\u{e9}").is_ok());
        for (name, value) in [
            ("x-a", "ok\r\nx-injected: 1"),
            ("x-a", "ok\nx-injected: 1"),
            ("x-a", "ok\r"),
            ("x-a", "a\0b"),
            ("x-a", "a\u{7f}"),
            ("x-a", "a\u{1b}[31m"),
        ] {
            let e = check(name, value).expect_err(value);
            assert!(e.contains("header \"x-a\""), "{e}");
            assert!(!e.contains('\n') && !e.contains('\r'), "one line: {e:?}");
        }
        for name in ["", "x a", "x:a", "x-a\r\nx-b", "x\u{e9}"] {
            let e = check(name, "v").expect_err(name);
            assert!(!e.contains('\n') && !e.contains('\r'), "one line: {e:?}");
        }
    }
}
