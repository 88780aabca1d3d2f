//! A step's output kept as its JSON text.
//!
//! A tool's output is written into the run's log, kept in its state, and read back by
//! views and by later steps. Most of those only copy it: the log and the views embed the
//! text as it is, and only a step that references the output, or a compensation that
//! needs it, parses it. Kept as a tree of JSON values instead, a large output (a list of
//! a hundred todos) was built node by node, measured, written, and freed node by node
//! for every run.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value held as its compact text, shared: copies of a run's state share it.
///
/// Serialised with `serde_json` it is written as the JSON value it holds. Formats other
/// than JSON (DynamoDB items) go through [`serde_json::Value`] first (see
/// `adapters::aws::item`). Two outputs are equal when their JSON values are.
#[derive(Clone)]
pub struct Output(Arc<RawValue>);

impl Output {
    /// The output of a JSON value, written compactly (object members in the value's order).
    pub fn from_value(value: &Value) -> Self {
        // A `Value` always serialises: its map keys are strings.
        Self::to_output(value).unwrap_or_default()
    }

    /// The output of something serialisable, written compactly; an error if it does not
    /// serialise as JSON (a map with keys that are not strings).
    pub fn to_output<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Written by serde_json, so not parsed again to be checked.
        serde_json::value::to_raw_value(value).map(|raw| Self(Arc::from(raw)))
    }

    /// The output of JSON text; an error if it is not one JSON value.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(|raw| Self(Arc::from(raw)))
    }

    /// `null`.
    pub fn null() -> Self {
        Self(Arc::from(RawValue::NULL.to_owned()))
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether the text is empty (never: the shortest JSON value is one byte).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// The JSON value, parsed from the text. Text nested deeper than `serde_json`'s limit
    /// of 128 levels does not parse; it reads as `null`.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::null()
    }
}

impl From<Value> for Output {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl From<&Value> for Output {
    fn from(value: &Value) -> Self {
        Self::from_value(value)
    }
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || self.json() == other.json()
            || self.value() == other.value()
    }
}

impl PartialEq<Value> for Output {
    fn eq(&self, other: &Value) -> bool {
        self.value() == *other
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn given_a_value_when_made_an_output_then_its_text_is_the_compact_json_and_it_reads_back() {
        let value = json!({"todos": [{"id": 1, "title": "a \"b\""}], "total": 1.5, "z": null});
        let output = Output::from_value(&value);
        assert_eq!(output.json(), serde_json::to_string(&value).expect("json"));
        assert_eq!(output.len(), output.json().len());
        assert_eq!(output.value(), value);
        assert_eq!(output, value);
    }

    #[test]
    fn given_an_output_inside_a_struct_when_written_and_read_then_it_is_embedded_as_json() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Holder {
            n: u32,
            output: Output,
        }
        let holder = Holder {
            n: 7,
            output: Output::from_value(&json!([1, {"a": "x"}])),
        };
        let text = serde_json::to_string(&holder).expect("json");
        assert_eq!(text, r#"{"n":7,"output":[1,{"a":"x"}]}"#);
        let back: Holder = serde_json::from_str(&text).expect("reads");
        assert_eq!(back, holder);
        // Through a JSON value too (the way DynamoDB items are written and read).
        let as_value = serde_json::to_value(&holder).expect("value");
        assert_eq!(as_value, json!({"n": 7, "output": [1, {"a": "x"}]}));
        let back: Holder = serde_json::from_value(as_value).expect("from a value");
        assert_eq!(back, holder);
    }

    #[test]
    fn given_text_when_made_an_output_then_only_one_json_value_is_accepted() {
        assert_eq!(
            Output::from_json("{\"a\": [1, 2]}".into())
                .expect("json")
                .value(),
            json!({"a": [1, 2]})
        );
        for bad in ["", "{", "1 2", "nul", "{\"a\":}"] {
            assert!(Output::from_json(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn given_outputs_of_the_same_value_written_differently_when_compared_then_they_are_equal() {
        let spaced = Output::from_json("{ \"b\": 1, \"a\": [ true ] }".into()).expect("json");
        let compact = Output::from_value(&json!({"a": [true], "b": 1}));
        assert_eq!(spaced, compact);
        assert_ne!(compact, Output::from_value(&json!({"a": [false], "b": 1})));
        assert_eq!(Output::default(), Value::Null);
        assert_eq!(Output::null().json(), "null");
    }

    #[test]
    fn given_a_serialisable_struct_when_made_an_output_then_it_is_its_json() {
        #[derive(Serialize)]
        struct Page<'a> {
            items: &'a [u32],
            total: u64,
        }
        let output = Output::to_output(&Page {
            items: &[1, 2],
            total: 9,
        })
        .expect("serialises");
        assert_eq!(output.json(), r#"{"items":[1,2],"total":9}"#);
        let keys_not_strings: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(Output::to_output(&keys_not_strings).is_err());
    }
}
