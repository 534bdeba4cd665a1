//! Prints the JSON Schema of the `global-rate-limit` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_global_rate_limit::GlobalRateLimitFilter>();
}
