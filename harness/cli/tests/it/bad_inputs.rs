//! Bad inputs are refused with a one-line error naming the file, before they
//! cost memory or time: devices where a file is expected (`/dev/zero` as a
//! recording, as `--config @...`, as a suite's body file), files past the
//! input cap, YAML nested past the depth limit.

use std::path::PathBuf;
use std::process::Command;
use tollgate_host::bare;

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tollgate-bad-inputs-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("tollgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn noop(dir: &std::path::Path) -> String {
    let path = dir.join("noop.wasm");
    std::fs::write(&path, bare::noop_module().expect("assembles")).expect("write");
    path.display().to_string()
}

const HAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");

#[test]
fn a_device_is_refused_as_a_recording_a_config_and_a_body_file() {
    let dir = temp_dir("devices");
    let wasm = noop(&dir);
    for recording in ["/dev/zero", "/dev/zero.jsonl"] {
        if recording.ends_with(".jsonl") {
            // A device under a JSON-lines name is refused too (streamed reading).
            let link = dir.join("zero.jsonl");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
            let link = link.display().to_string();
            for stream in [false, true] {
                let mut args = vec!["replay", link.as_str(), "--filter", wasm.as_str()];
                if stream {
                    args.push("--stream");
                }
                let (ok, err) = tollgate(&args, &[]);
                assert!(!ok && err.contains("a character device"), "{err}");
            }
            continue;
        }
        let (ok, err) = tollgate(&["replay", recording, "--filter", &wasm], &[]);
        assert!(
            !ok && err.contains("/dev/zero") && err.contains("a character device"),
            "{err}"
        );
        // The cause is printed once.
        assert_eq!(err.matches("a character device").count(), 1, "{err}");
    }
    let (ok, err) = tollgate(
        &["replay", HAR, "--filter", &wasm, "--config", "@/dev/zero"],
        &[],
    );
    assert!(
        !ok && err.contains("--config") && err.contains("a character device"),
        "{err}"
    );
    let (ok, err) = tollgate(
        &[
            "bench",
            HAR,
            "--filter",
            &wasm,
            "--config",
            "@/dev/zero",
            "--iterations",
            "1",
        ],
        &[],
    );
    assert!(
        !ok && err.contains("--config") && err.contains("a character device"),
        "{err}"
    );

    // A suite whose request body file is a device: the test fails naming it.
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        "filters:\n  - path: noop.wasm\ntests:\n  - name: zero body\n    request:\n      body: {file: /dev/zero}\n",
    )
    .expect("write");
    let report = tollgate_replay::suite::run_file(&suite).expect("the suite loads");
    let failures = &report.tests[0].failures;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("/dev/zero") && f.contains("a character device")),
        "{failures:?}"
    );
}

#[test]
fn an_input_past_the_cap_is_refused_and_the_cap_is_configurable() {
    let dir = temp_dir("cap");
    let wasm = noop(&dir);
    let (ok, err) = tollgate(
        &["replay", HAR, "--filter", &wasm],
        &[("TOLLGATE_MAX_INPUT_BYTES", "1000")],
    );
    assert!(
        !ok && err.contains("past the input cap of 1000 bytes"),
        "{err}"
    );
    let (ok, err) = tollgate(&["replay", HAR, "--filter", &wasm], &[]);
    assert!(ok, "{err}");
}

#[test]
fn yaml_nested_past_the_depth_limit_is_refused_before_parsing() {
    let dir = temp_dir("deep");
    let wasm = noop(&dir);
    // 200 kB of flow nesting, and block nesting, as a native recording.
    let flow = format!(
        "tollgate_traffic: 1\nexchanges: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let block: String = std::iter::once("tollgate_traffic: 1\nexchanges:\n".to_string())
        .chain((0..300).map(|i| format!("{}k{i}:\n", " ".repeat(i + 2))))
        .collect();
    for (name, text) in [("flow.yaml", flow), ("block.yaml", block)] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let p = path.display().to_string();
        let (ok, err) = tollgate(&["replay", &p, "--filter", &wasm], &[]);
        assert!(
            !ok && err.contains(name) && err.contains("nested more than 128 levels"),
            "{err}"
        );
    }
    // A suite too.
    let suite = dir.join("suite.yaml");
    std::fs::write(
        &suite,
        format!("filters: {}{}\n", "[".repeat(5000), "]".repeat(5000)),
    )
    .expect("write");
    let e = tollgate_replay::suite::Suite::load(&suite)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("nested more than 128 levels"), "{e}");
}

#[test]
fn an_empty_recording_is_an_error_in_every_format() {
    let dir = temp_dir("empty");
    let wasm = noop(&dir);
    let har = dir.join("empty.har");
    std::fs::write(
        &har,
        r#"{"log":{"version":"1.2","creator":{"name":"t","version":"1"},"entries":[]}}"#,
    )
    .expect("write");
    let jsonl = dir.join("empty.jsonl");
    std::fs::write(&jsonl, "").expect("write");
    let folder = dir.join("taps");
    std::fs::create_dir_all(&folder).expect("folder");
    for path in [&har, &jsonl, &folder] {
        let p = path.display().to_string();
        for stream in [false, true] {
            let mut args = vec!["replay", p.as_str(), "--filter", wasm.as_str()];
            if stream {
                args.push("--stream");
            }
            let (ok, err) = tollgate(&args, &[]);
            assert!(
                !ok && err.contains(&p) && err.contains("the recording has no exchanges"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn inspect_checks_import_types_as_linking_does() {
    let dir = temp_dir("inspect");
    // `proxy_log` is (i32 i32 i32) -> i32; imported here with one parameter too few.
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "proxy_log" (func (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .expect("assembles");
    let path = dir.join("wrong-type.wasm");
    std::fs::write(&path, wasm).expect("write");
    let p = path.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["inspect", &p])
        .output()
        .expect("tollgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("env.proxy_log (imported as (param i32 i32) (result i32), the host's is (param i32 i32 i32) (result i32))"),
        "{stdout}"
    );
    assert!(!stdout.contains("all imports are provided"), "{stdout}");
    // And replay refuses it the same way, before linking fails.
    let har = HAR;
    let (ok, err) = tollgate(&["replay", har, "--filter", &p], &[]);
    assert!(!ok && err.contains("env.proxy_log (imported as"), "{err}");
}

#[test]
fn validate_refuses_a_deeply_nested_manifest_and_a_device_before_parsing() {
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/istio/wasmplugins.crd.yaml"
    );
    let dir = temp_dir("validate");
    // About 1 MB, nested 500,000 levels deep on its 3rd line: the YAML parser
    // would take minutes; the pre-scan refuses it at once, naming the line.
    let manifest = dir.join("deep.yaml");
    let depth = 500_000;
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    )
    .expect("write");
    assert!(std::fs::metadata(&manifest).expect("written").len() > 1_000_000);
    let began = std::time::Instant::now();
    let path = manifest.display().to_string();
    let (ok, err) = tollgate(&["validate", &path, "--crd", crd], &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!("{path}: line 3: nested more than 128 levels deep")),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // Bounds in tests are generous; the refusal itself takes milliseconds.
    assert!(
        began.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );

    // A device never ends: refused as not a file, naming it.
    let (ok, err) = tollgate(&["validate", "/dev/zero", "--crd", crd], &[]);
    assert!(
        !ok && err.contains("/dev/zero") && err.contains("a character device"),
        "{err}"
    );
    // As the CRD too; and the input cap holds for what validate reads.
    let (ok, err) = tollgate(&["validate", &path, "--crd", "/dev/zero"], &[]);
    assert!(!ok && err.contains("a character device"), "{err}");
    let (ok, err) = tollgate(
        &["validate", &path, "--crd", crd],
        &[("TOLLGATE_MAX_INPUT_BYTES", "1000")],
    );
    assert!(
        !ok && err.contains("past the input cap of 1000 bytes"),
        "{err}"
    );
}
