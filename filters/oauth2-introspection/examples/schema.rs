//! Prints the JSON Schema of the `oauth2-introspection` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_oauth2_introspection::Introspection>();
}
