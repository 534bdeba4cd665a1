//! Prints the JSON Schema of the `request-id` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_request_id::RequestIdFilter>();
}
