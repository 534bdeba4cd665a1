//! Prints the JSON Schema of the `ext-authz` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_ext_authz::ExtAuthz>();
}
