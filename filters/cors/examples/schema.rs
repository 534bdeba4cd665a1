//! Prints the JSON Schema of the `cors` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_cors::CorsFilter>();
}
