//! Prints the JSON Schema of the `hmac-auth` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_hmac_auth::HmacAuth>();
}
