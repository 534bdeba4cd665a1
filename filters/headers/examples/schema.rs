//! Prints the JSON Schema of the `headers` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_headers::HeadersFilter>();
}
