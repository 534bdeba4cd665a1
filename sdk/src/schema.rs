//! The JSON Schema of a filter's configuration (feature `schema`, native builds only).
//!
//! A configuration type derives `schemars::JsonSchema` next to `Deserialize`
//! (`#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]`); its doc comments become
//! the schema's descriptions. Each filter has an `examples/schema.rs` that calls [`print`];
//! `cargo xtask build` runs it and stores the schema in the module's custom section
//! [`SECTION`], where `tollgate schema`, `tollgate package` and `tollgate validate` read it.
//! The guest never carries schemars: the derive exists only in native builds with the feature.

use schemars::JsonSchema;
use serde_json::Value;

use crate::HttpFilter;

/// The custom section of a built module that holds its configuration's JSON Schema (UTF-8 JSON).
pub const SECTION: &str = "tollgate.config_schema";

/// The JSON Schema (draft 2020-12) of `F`'s configuration, titled with the filter's name.
pub fn of<F: HttpFilter>() -> Value
where
    F::Config: JsonSchema,
{
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<F::Config>();
    let mut value = schema.to_value();
    if let Some(object) = value.as_object_mut() {
        object.insert("title".into(), Value::from(F::NAME));
    }
    value
}

/// Prints [`of`] as JSON on stdout (the body of each filter's `examples/schema.rs`).
pub fn print<F: HttpFilter>()
where
    F::Config: JsonSchema,
{
    match serde_json::to_string(&of::<F>()) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("{}: cannot write the schema: {e}", F::NAME);
            std::process::exit(1);
        }
    }
}
