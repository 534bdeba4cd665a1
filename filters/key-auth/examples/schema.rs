//! Prints the JSON Schema of the `key-auth` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_key_auth::KeyAuthFilter>();
}
