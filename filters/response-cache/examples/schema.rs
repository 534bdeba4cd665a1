//! Prints the JSON Schema of the `response-cache` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_response_cache::ResponseCacheFilter>();
}
