//! Reading the files a user hands the harness (recordings, configurations,
//! suite bodies) without trusting them: only regular files are read where a
//! file is expected (never `/dev/zero`, a FIFO or a terminal, which never
//! end), and no read goes past a cap ([`max_input_bytes`]: 1 GiB unless the
//! `tollgate` command's `--max-input-bytes` ([`set_max_input_bytes`]) or the
//! `TOLLGATE_MAX_INPUT_BYTES` environment variable says otherwise).
//!
//! YAML is scanned for its nesting depth ([`check_yaml_depth`]) before any
//! parser sees it: recordings, suites, stubs and manifests alike.
//!
//! Streamed readers ([`open_regular`]) get the same file check; their lines
//! are bounded by the same cap.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The default cap on one input read: 1 GiB.
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 1 << 30;

/// The environment variable that changes the cap (a number of bytes).
pub const MAX_INPUT_ENV: &str = "TOLLGATE_MAX_INPUT_BYTES";

/// The cap the command line set (`--max-input-bytes`); 0 when none was.
static CAP_SET: AtomicU64 = AtomicU64::new(0);

/// Sets the cap on every input read from here on, for the whole process
/// (the `tollgate` command's `--max-input-bytes`); it wins over
/// `TOLLGATE_MAX_INPUT_BYTES`. At least 1 byte.
pub fn set_max_input_bytes(max: u64) {
    CAP_SET.store(max.max(1), Ordering::Relaxed);
}

/// The cap on one input read: what [`set_max_input_bytes`] set, else
/// `TOLLGATE_MAX_INPUT_BYTES` when set to a number, else
/// [`DEFAULT_MAX_INPUT_BYTES`].
pub fn max_input_bytes() -> u64 {
    let set = CAP_SET.load(Ordering::Relaxed);
    if set > 0 {
        return set;
    }
    std::env::var(MAX_INPUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_INPUT_BYTES)
}

/// Why an input could not be read: the I/O error, or a refusal said as one
/// (`InvalidInput`: not a regular file; `FileTooLarge`: past the cap).
fn refusal(kind: std::io::ErrorKind, message: String) -> std::io::Error {
    std::io::Error::new(kind, message)
}

/// Opens `path` for reading when it is a regular file (symbolic links
/// followed); a device, FIFO, socket or directory is refused, naming what it is.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = kind_of(&meta);
        return Err(refusal(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({what}); give a file"),
        ));
    }
    Ok(file)
}

/// Opens `path` to be read as a stream (JSON lines): a regular file or a
/// FIFO (a pipe feeding records); a device (`/dev/zero`), socket or
/// directory is refused, naming what it is. Lines are bounded by the cap.
pub fn open_stream(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() && !meta.file_type().is_fifo() {
        let what = kind_of(&meta);
        return Err(refusal(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file or a pipe ({what}); give a file"),
        ));
    }
    Ok(file)
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads the regular file at `path` whole, refusing it past `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(too_large(len, max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow while it is read: never past the cap.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// Reads the regular file at `path` whole, refusing it past [`max_input_bytes`].
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    read_capped(path, max_input_bytes())
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| {
        refusal(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn too_large(len: u64, max: u64) -> std::io::Error {
    refusal(
        std::io::ErrorKind::FileTooLarge,
        format!(
            "{len} bytes or more, past the input cap of {max} bytes (--max-input-bytes or {MAX_INPUT_ENV} reads more)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused_naming_what_they_are() {
        let e = read(Path::new("/dev/zero")).expect_err("a device");
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read(Path::new("/")).expect_err("a directory");
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn a_file_past_the_cap_is_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("big");
        std::fs::write(&path, [b'x'; 100]).expect("write");
        assert_eq!(read_capped(&path, 100).expect("at the cap").len(), 100);
        let e = read_capped(&path, 99).expect_err("past the cap");
        assert!(
            e.to_string().contains("past the input cap of 99 bytes"),
            "{e}"
        );
    }
}

/// The deepest nesting of YAML collections the harness reads (block and flow
/// together). Real manifests, suites and recordings nest a few tens deep; a
/// document nested past this is refused before the parser spends time on it
/// (its cost grows with the square of the depth).
pub const MAX_YAML_DEPTH: usize = 128;

/// Refuses a YAML document nested deeper than `max`, naming the line: a scan
/// of the text (linear in its length) before it is parsed. Counts block
/// levels by indentation and `- ` entries, and flow levels by brackets outside
/// quoted scalars and comments.
pub fn check_yaml_depth(text: &str, max: usize) -> Result<(), String> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that spans lines: its quote character.
    let mut quoted: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if quoted.is_none() && flow == 0 {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let mut block = indents.len();
        let mut rest = trimmed;
        if quoted.is_none() && flow == 0 {
            // `- - - x`: each entry marker opens a level.
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")) {
                block += 1;
                rest = r.trim_start();
            }
        }
        let mut prev = ' ';
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match quoted {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    if q == '\'' && chars.peek() == Some(&'\'') {
                        chars.next();
                    } else {
                        quoted = None;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '"' | '\'' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':') => {
                        quoted = Some(c)
                    }
                    '[' | '{' => {
                        flow += 1;
                        if block + flow > max {
                            return Err(too_deep(n, max));
                        }
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if block + flow > max {
            return Err(too_deep(n, max));
        }
    }
    Ok(())
}

fn too_deep(line: usize, max: usize) -> String {
    format!(
        "line {}: nested more than {max} levels deep (refused before parsing: such nesting costs the parser time with the square of its depth)",
        line + 1
    )
}

#[cfg(test)]
mod yaml_depth_tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        let doc =
            "a:\n  b:\n    - c: [1, {d: 'x]'}]\n    - \"#[[[\"\n# [[[[\ne: >\n  text [[[[ here\n";
        check_yaml_depth(doc, 8).expect("a shallow document");
    }

    #[test]
    fn deep_flow_block_and_sequence_nesting_are_refused_with_the_line() {
        let flow = format!("a: {}{}", "[".repeat(200), "]".repeat(200));
        let e = check_yaml_depth(&flow, MAX_YAML_DEPTH).expect_err("deep flow");
        assert!(e.starts_with("line 1: nested more than 128 levels"), "{e}");
        let block: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let e = check_yaml_depth(&block, MAX_YAML_DEPTH).expect_err("deep block");
        assert!(e.starts_with("line 129:"), "{e}");
        let seq = format!("{}x\n", "- ".repeat(200));
        assert!(check_yaml_depth(&seq, MAX_YAML_DEPTH).is_err());
    }
}
