//! Prints the JSON Schema of the `rate-limit` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_rate_limit::RateLimitFilter>();
}
