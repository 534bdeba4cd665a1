//! Prints the JSON Schema of the `ip-restriction` configuration (`cargo xtask build` stores it in the module).

fn main() {
    tollgate_sdk::schema::print::<tollgate_ip_restriction::IpRestrictionFilter>();
}
