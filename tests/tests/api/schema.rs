//! The OpenAPI document (`infra/openapi.json`), and checks of JSON values and replies
//! against the schemas it documents.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::Value;

use crane::http::OPENAPI;

use crate::harness::*;

pub(crate) fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("infra/openapi.json is valid JSON")
}

pub(crate) const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (method, path) the document describes.
pub(crate) fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect()
}

/// Follow `$ref`s (local, `#/...`) until a schema without one.
pub(crate) fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = node.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    panic!("$ref chain too long at {node}");
}

pub(crate) fn schema(doc: &Value, name: &str) -> Value {
    doc["components"]["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("components/schemas/{name} is missing"))
        .clone()
}

/// `schema` with every object schema closed: a schema with `type: object` and `properties`
/// but no `additionalProperties` gets `additionalProperties: false`. The document's
/// readers rely on that rule (a response carries no property the document does not
/// describe); JSON Schema itself leaves such objects open, so it is added here.
fn closed(mut schema: Value) -> Value {
    fn close(node: &mut Value) {
        match node {
            Value::Object(o) => {
                let object = o.get("type").and_then(Value::as_str) == Some("object");
                let has_properties = o.get("properties").is_some_and(Value::is_object);
                if object && has_properties && !o.contains_key("additionalProperties") {
                    o.insert("additionalProperties".into(), Value::Bool(false));
                }
                o.values_mut().for_each(close);
            }
            Value::Array(a) => a.iter_mut().for_each(close),
            _ => {}
        }
    }
    close(&mut schema);
    schema
}

/// A JSON Schema 2020-12 validator (OpenAPI 3.1's dialect) of `schema`, a schema of the
/// document: its local `$ref`s (`#/components/...`) resolve against the document's
/// components, and its object schemas are [`closed`].
pub(crate) fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let Value::Object(mut root) = closed(schema.clone()) else {
        panic!("a schema must be an object: {schema}");
    };
    root.insert("components".into(), closed(doc["components"].clone()));
    jsonschema::draft202012::options()
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("the documented schema {schema} does not compile: {e}"))
}

/// Every way `v` fails `schema` (empty if it conforms), one line each with its place.
pub(crate) fn schema_errors(doc: &Value, schema: &Value, v: &Value) -> Vec<String> {
    validator(doc, schema)
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

pub(crate) fn assert_conforms(doc: &Value, schema: &Value, v: &Value, what: &str) {
    let errors = schema_errors(doc, schema, v);
    assert!(
        errors.is_empty(),
        "{what} does not conform to its documented schema:\n  {}\nbody: {v}",
        errors.join("\n  ")
    );
}

/// The documented response object of `method path` for `status`.
pub(crate) fn documented_response<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    status: StatusCode,
) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = op["responses"]
        .get(status.as_str())
        .unwrap_or_else(|| panic!("{method} {path} does not document status {status}"));
    resolve(doc, resp)
}

/// Assert the reply is what the document promises for `method path`: a documented status,
/// JSON, a body that conforms to the documented schema and, for errors, a documented code.
pub(crate) fn assert_documented(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let resp = documented_response(doc, method, path, reply.status);
    assert_reply_matches(
        doc,
        resp,
        reply,
        &format!("{method} {path} {}", reply.status),
    );
}

pub(crate) fn assert_reply_matches(doc: &Value, resp: &Value, reply: &Reply, what: &str) {
    assert!(reply.is_json(), "{what}: not a JSON response");
    let schema = resp
        .pointer("/content/application~1json/schema")
        .unwrap_or_else(|| panic!("{what}: no application/json schema documented"));
    assert_conforms(doc, schema, &reply.body, what);
    if let Some(code) = reply.body["error"]["code"].as_str() {
        assert_code_documented(doc, code);
    }
}

/// Every error code the server sends is listed in the `Error` schema's description.
pub(crate) fn assert_code_documented(doc: &Value, code: &str) {
    let codes = doc
        .pointer("/components/schemas/Error/properties/error/properties/code/description")
        .and_then(Value::as_str)
        .expect("Error.error.code has a description");
    assert!(
        codes.contains(&format!("`{code}`")),
        "error code '{code}' is not listed in the Error schema"
    );
}
