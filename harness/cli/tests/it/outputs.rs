//! `tollgate` writing files, run as a process: the same file as input and
//! output, a failed run, Ctrl-C (SIGINT) and SIGTERM in the middle of a
//! write, a recording that cannot start, SIGTERM to `tollgate envoy` (its
//! Envoys end with it). The earlier file must stay byte for
//! byte, no half-written file and no temporary file may be left.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_traffic::native::write_line;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Leniency, load_with};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-outputs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test folder");
    d
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn exchange(i: usize, body: usize) -> Exchange {
    Exchange {
        id: format!("entry {i}"),
        request: HttpRequest {
            method: if i.is_multiple_of(2) { "GET" } else { "POST" }.into(),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            path: format!("/v1/items/{i}?access_token=SECRET{i:06}&page=2"),
            headers: vec![
                (
                    "referer".into(),
                    format!("https://shop.example.com/?session=SESS{i:06}"),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: Vec::new(),
        },
        response: Some(HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: vec![b'x'; body],
        }),
        details: Default::default(),
    }
}

/// `n` exchanges as JSON lines.
fn lines(n: usize, body: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        write_line(&mut out, &exchange(i, body)).expect("in memory");
    }
    out
}

/// A spawned `tollgate` that a failing test does not leave running: SIGTERM
/// (so `record` stops its Envoy), then SIGKILL.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signals our own child, not yet reaped.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.0.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("tollgate runs")
}

fn ids(path: &Path) -> Vec<String> {
    load_with(path, Leniency::Strict)
        .expect("the output reads back")
        .exchanges
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[test]
fn traffic_tools_read_and_write_the_same_file() {
    let d = dir("in-place");
    let rec = d.join("rec.jsonl");
    let original = lines(50, 10);
    std::fs::write(&rec, &original).expect("seed");
    let r = rec.to_str().expect("utf8");

    let out = tollgate(&["traffic", "convert", r, "-o", r]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("50 exchanges read, 50 written"), "{stderr}");
    assert_eq!(
        std::fs::read(&rec).expect("read"),
        original,
        "same format, same bytes"
    );

    let out = tollgate(&["traffic", "filter", r, "--method", "GET", "-o", r]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("50 exchanges read, 25 written"), "{stderr}");
    assert_eq!(ids(&rec).len(), 25);

    let out = tollgate(&["traffic", "anonymize", r, "--key", "k", "-o", r]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("25 exchanges read, 25 written"), "{stderr}");
    let text = std::fs::read_to_string(&rec).expect("read");
    assert_eq!(ids(&rec).len(), 25);
    assert!(
        !text.contains("SECRET") && !text.contains("SESS0"),
        "{text}"
    );
    assert!(text.contains("page=2"));
    assert_eq!(names(&d), ["rec.jsonl"], "no temporary file left");
}

#[test]
fn a_failed_run_leaves_the_earlier_output_untouched() {
    let d = dir("failed");
    let input = d.join("in.jsonl");
    let mut bad = lines(20, 10);
    bad.extend_from_slice(b"{\"request\": 42}\n");
    bad.extend_from_slice(&lines(5, 10));
    std::fs::write(&input, &bad).expect("seed");
    let out_path = d.join("out.har");
    let earlier = b"the earlier output".to_vec();
    std::fs::write(&out_path, &earlier).expect("seed");
    for cmd in ["convert", "anonymize"] {
        let out = tollgate(&[
            "traffic",
            cmd,
            input.to_str().expect("utf8"),
            "-o",
            out_path.to_str().expect("utf8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}: the bad entry fails the run");
        assert!(stderr.contains("in.jsonl"), "{stderr}");
        assert_eq!(std::fs::read(&out_path).expect("read"), earlier, "{cmd}");
        assert_eq!(
            names(&d),
            ["in.jsonl", "out.har"],
            "{cmd}: no temporary file left"
        );
    }
    // In place: the input is the output.
    let out = tollgate(&[
        "traffic",
        "convert",
        input.to_str().expect("utf8"),
        "-o",
        input.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&input).expect("read"), bad);
}

/// Runs `tollgate traffic convert FIFO -o out.jsonl`, feeds it through the
/// FIFO until its temporary output holds data, then sends `signal` while it
/// waits for more: the write is caught in the middle.
fn interrupted_mid_write(tag: &str, signal: i32) {
    let d = dir(tag);
    let fifo = d.join("live.jsonl");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let out_path = d.join("out.jsonl");
    let earlier = lines(3, 5);
    std::fs::write(&out_path, &earlier).expect("seed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["traffic", "convert"])
        .arg(&fifo)
        .arg("-o")
        .arg(&out_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .expect("tollgate starts");
    // Opening the FIFO for writing waits for tollgate to open it for reading.
    let mut feed = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let temp = loop {
        feed.write_all(&lines(50, 2000)).expect("feed");
        feed.flush().expect("feed");
        sent += 50;
        std::thread::sleep(Duration::from_millis(20));
        let temp = names(&d)
            .into_iter()
            .find(|n| n.starts_with(".out.jsonl.tollgate-") && n.ends_with(".tmp"));
        if let Some(t) = temp {
            let len = std::fs::metadata(d.join(&t)).map(|m| m.len()).unwrap_or(0);
            if len > 0 {
                break t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no temporary output after {sent} exchanges"
        );
    };
    // SAFETY: sends a signal to the child we spawned (its pid is valid until we wait).
    let rc = unsafe { libc::kill(child.0.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0);
    let status = child.0.wait().expect("tollgate ends");
    drop(feed);
    assert_eq!(
        status.signal(),
        Some(signal),
        "ended by the signal: {status:?}"
    );
    assert_eq!(
        std::fs::read(&out_path).expect("read"),
        earlier,
        "the earlier output is untouched"
    );
    assert!(!d.join(&temp).exists(), "{temp} was removed");
    assert_eq!(names(&d), ["live.jsonl", "out.jsonl"]);
}

#[test]
fn ctrl_c_in_the_middle_of_a_write_leaves_the_earlier_file_and_no_temporary_file() {
    interrupted_mid_write("sigint", libc::SIGINT);
}

#[test]
fn sigterm_in_the_middle_of_a_write_leaves_the_earlier_file_and_no_temporary_file() {
    interrupted_mid_write("sigterm", libc::SIGTERM);
}

#[test]
fn a_recording_that_cannot_start_leaves_the_earlier_recording() {
    let d = dir("record");
    let earlier = lines(4, 10);
    std::fs::write(d.join("traffic.jsonl"), &earlier).expect("seed");
    // `false` exits at once: Envoy "exited before listening".
    let out = tollgate(&[
        "record",
        "--upstream",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--out",
        d.to_str().expect("utf8"),
        "--envoy",
        "/bin/false",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("exited"), "{stderr}");
    assert_eq!(
        std::fs::read(d.join("traffic.jsonl")).expect("read"),
        earlier
    );
    assert!(
        !names(&d)
            .iter()
            .any(|n| n.ends_with(".tmp") || n.contains("partial")),
        "{:?}",
        names(&d)
    );
}

/// Architecture invariant (ARCHITECTURE.md): every output goes through
/// `tollgate-files`; a direct `File::create` / `fs::write` in the harness's
/// sources is a scratch file and says so (`scratch:`) on its line or the
/// line before.
#[test]
fn every_output_file_goes_through_atomic_write() {
    fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("list") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    // Every harness crate but `files`, which is the atomic write itself.
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["abi", "traffic", "host", "replay", "envoy", "ship", "cli"] {
        rs_files(&harness.join(krate).join("src"), &mut files);
    }
    let direct = |line: &str| {
        line.match_indices("File::create(")
            .any(|(i, _)| !line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
            || line.contains("fs::write(")
    };
    let mut offenders = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == "atomic_write.rs" || name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        let lines: Vec<&str> = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .collect();
        for (i, l) in lines.iter().enumerate() {
            let marked = l.contains("scratch:") || (i > 0 && lines[i - 1].contains("scratch:"));
            if direct(l) && !marked {
                offenders.push(format!("{}:{}: {}", f.display(), i + 1, l.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "write outputs with atomic_write:\n{}",
        offenders.join("\n")
    );
    assert!(files.len() > 20, "scanned the sources");
}

/// A one-thread HTTP/1.1 upstream answering every request `200 ok`.
fn upstream() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut writer = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    // Request line and headers.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
                    if writer.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `tollgate record` through the real Envoy, stopped by Ctrl-C: while it
/// records, the earlier `traffic.jsonl` is untouched; Ctrl-C stops it and
/// puts the new recording in place, with every exchange sent.
#[test]
fn record_keeps_the_earlier_recording_until_ctrl_c_puts_the_new_one_in_place() {
    use std::io::{BufRead, BufReader, Read};
    // Missing Envoy is a failure, never a skip (as everywhere in the project's tests).
    let envoy = tollgate_envoy::locate::envoy_binary().unwrap_or_else(|e| {
        panic!("Envoy is needed: {e}; run `cargo xtask envoy` and set ENVOY_BIN")
    });
    let d = dir("record-sigint");
    let earlier = lines(2, 10);
    let traffic = d.join("traffic.jsonl");
    std::fs::write(&traffic, &earlier).expect("seed");
    let up = upstream();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &up.to_string(),
            "--out",
        ])
        .arg(&d)
        .arg("--envoy")
        .arg(&envoy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .expect("tollgate starts");
    let mut stderr = BufReader::new(child.0.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("the recording line");
    // "recording: clients -> 127.0.0.1:PORT -> Envoy (tap) -> ..."
    let listen: std::net::SocketAddr = first
        .split(" -> ")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {first:?}"));
    for i in 0..3 {
        let mut s = std::net::TcpStream::connect(listen).expect("connect");
        write!(
            s,
            "GET /item/{i} HTTP/1.1\r\nhost: shop.test\r\nconnection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Wait until the three are in the temporary recording.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let recorded = names(&d)
            .iter()
            .filter(|n| n.starts_with(".traffic.jsonl.tollgate-"))
            .map(|n| {
                std::fs::read_to_string(d.join(n))
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum::<usize>();
        if recorded == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{recorded} of 3 exchanges recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read(&traffic).expect("read"),
        earlier,
        "untouched while recording"
    );
    // SAFETY: signals the child we spawned and have not waited for.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let status = child.0.wait().expect("tollgate ends");
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(status.success(), "{status:?}: {rest}");
    assert!(rest.contains("3 exchanges recorded"), "{rest}");
    let mut paths: Vec<String> = load_with(&traffic, Leniency::Strict)
        .expect("the new recording")
        .exchanges
        .into_iter()
        .map(|e| e.request.path)
        .collect();
    paths.sort();
    assert_eq!(paths, ["/item/0", "/item/1", "/item/2"]);
    assert!(
        !names(&d).iter().any(|n| n.ends_with(".tmp")),
        "{:?}",
        names(&d)
    );
}

/// The processes whose parent is `pid` and whose command is `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": COMM may hold spaces, so split at ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map(|(_, n)| n).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if name == comm && ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether `pid` is still a live process (a zombie waiting for its new
/// parent to reap it counts as ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z" && st != "X"))
        })
        .unwrap_or(false)
}

/// SIGTERM to `tollgate envoy --compare` while its Envoys run: the command
/// ends by that signal and takes its Envoys and its scratch folder with it
/// (their owners' `Drop` does not run when a signal ends the process; the
/// handler kills and removes them).
#[test]
fn sigterm_to_tollgate_envoy_ends_its_envoys_too() {
    let envoy = tollgate_envoy::locate::envoy_binary().unwrap_or_else(|e| {
        panic!("Envoy is needed: {e}; run `cargo xtask envoy` and set ENVOY_BIN")
    });
    let d = dir("envoy-sigterm");
    let wasm = d.join("noop.wasm");
    std::fs::write(
        &wasm,
        tollgate_host::bare::noop_module().expect("assembles"),
    )
    .expect("write");
    let har = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/demo.har");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("envoy")
        .arg(&har)
        .arg("--filter")
        .arg(&wasm)
        .args([
            "--compare",
            "--rounds",
            "50",
            "--requests-per-round",
            "100000",
        ])
        .arg("--envoy")
        .arg(&envoy)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .expect("tollgate starts");
    let tollgate = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let envoys = loop {
        let found = children_named(tollgate, "envoy");
        if !found.is_empty() {
            break found;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("tollgate ended before starting an Envoy: {status:?}: {err}");
        }
        assert!(Instant::now() < deadline, "no Envoy started within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signals the child we spawned and have not waited for.
    assert_eq!(
        unsafe { libc::kill(tollgate as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.0.wait().expect("tollgate ends");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoys.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = envoys.into_iter().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "Envoys still running after tollgate ended: {left:?}"
    );
    let scratch = format!("tollgate-envoy-{tollgate}-");
    let stale: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&scratch))
        .collect();
    assert!(stale.is_empty(), "scratch folders left behind: {stale:?}");
}

/// `tollgate replay ... | head -1`: the reader goes away after one line while
/// the report (far more than a pipe holds) is still being written. The
/// command ends quietly with status 0, as `cat` would, and says nothing on
/// standard error (no panic from `println!`).
#[test]
fn a_reader_that_stops_early_ends_replay_quietly() {
    use std::io::{BufRead, BufReader, Read};
    let d = dir("broken-pipe");
    let traffic = d.join("traffic.jsonl");
    std::fs::write(&traffic, lines(3000, 10)).expect("write");
    let wasm = d.join("noop.wasm");
    std::fs::write(
        &wasm,
        tollgate_host::bare::noop_module().expect("assembles"),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("replay")
        .arg(&traffic)
        .arg("--filter")
        .arg(&wasm)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .expect("tollgate starts");
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("the first line");
    assert!(!first.is_empty(), "no output");
    drop(out);
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr reads");
    let status = child.0.wait().expect("tollgate ends");
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.is_empty(), "{err}");
}
