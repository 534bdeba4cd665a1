//! Prints the JSON Schema of the `basic-auth` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_basic_auth::BasicAuthFilter>();
}
