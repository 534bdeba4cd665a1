//! Prints the JSON Schema of the `jwt-auth` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_jwt_auth::JwtAuth>();
}
