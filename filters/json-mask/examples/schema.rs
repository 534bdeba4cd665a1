//! Prints the JSON Schema of the `json-mask` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_json_mask::JsonMaskFilter>();
}
