//! Harness overhead against a minimal raw wasmtime host.
fn main() {
    divan::main();
}
