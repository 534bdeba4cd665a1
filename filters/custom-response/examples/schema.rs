//! Prints the JSON Schema of the `custom-response` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_custom_response::CustomResponseFilter>();
}
