//! Typed attribute maps: `Map(Utf8, AnyValue)` built from and read back into
//! OTLP `KeyValue`s. A leaf shared by the OTLP and X-Ray codecs, the head
//! and the metrics table.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder,
    Float64Array, Float64Builder, Int64Array, Int64Builder, MapArray, StringArray, StringBuilder,
    StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::DataType;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::schema::{any_value, any_value_fields, attribute_entries_field};

/// Builds one `Map(Utf8, AnyValue)` column, a row at a time.
#[derive(Debug)]
pub struct AttributesBuilder {
    offsets: Vec<i32>,
    keys: StringBuilder,
    values: AnyValueBuilder,
}

impl Default for AttributesBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AttributesBuilder {
    pub fn new() -> Self {
        Self {
            offsets: vec![0],
            keys: StringBuilder::new(),
            values: AnyValueBuilder::default(),
        }
    }

    /// Appends one row holding `attributes`.
    pub fn append_row(&mut self, attributes: &[KeyValue]) {
        self.append_row_except(attributes, |_| false);
    }

    /// Appends one row holding the `attributes` that `skip` does not match.
    pub fn append_row_except(&mut self, attributes: &[KeyValue], skip: impl Fn(&KeyValue) -> bool) {
        for key_value in attributes.iter().filter(|key_value| !skip(key_value)) {
            self.keys.append_value(&key_value.key);
            let value = key_value.value.as_ref().and_then(|any| any.value.as_ref());
            self.values.append(value);
        }
        self.offsets.push(self.keys.len() as i32);
    }

    pub fn finish(&mut self) -> MapArray {
        let keys: ArrayRef = Arc::new(self.keys.finish());
        let values: ArrayRef = Arc::new(self.values.finish());
        let DataType::Struct(entry_fields) = attribute_entries_field().data_type().clone() else {
            unreachable!("attribute entries are a struct");
        };
        let entries = StructArray::new(entry_fields, vec![keys, values], None);
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.offsets, vec![0]).into());
        MapArray::new(attribute_entries_field(), offsets, entries, None, false)
    }
}

#[derive(Debug, Default)]
struct AnyValueBuilder {
    str: StringBuilder,
    int: Int64Builder,
    double: Float64Builder,
    bool: BooleanBuilder,
    bytes: BinaryBuilder,
    json: StringBuilder,
}

impl AnyValueBuilder {
    fn append(&mut self, value: Option<&Value>) {
        let mut str_value = None;
        let mut int_value = None;
        let mut double_value = None;
        let mut bool_value = None;
        let mut bytes_value = None;
        let mut json_value = None;
        match value {
            Some(Value::StringValue(text)) => str_value = Some(text.as_str()),
            Some(Value::IntValue(int)) => int_value = Some(*int),
            Some(Value::DoubleValue(double)) => double_value = Some(*double),
            Some(Value::BoolValue(flag)) => bool_value = Some(*flag),
            Some(Value::BytesValue(bytes)) => bytes_value = Some(bytes.as_slice()),
            Some(nested @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
                json_value = Some(nested_to_json(nested));
            }
            // String-table indexes belong to the profiles signal; a trace
            // has no table to resolve them against, so the value is empty.
            Some(Value::StringValueStrindex(_)) | None => {}
        }
        self.str.append_option(str_value);
        self.int.append_option(int_value);
        self.double.append_option(double_value);
        self.bool.append_option(bool_value);
        self.bytes.append_option(bytes_value);
        self.json.append_option(json_value);
    }

    fn finish(&mut self) -> StructArray {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.str.finish()),
            Arc::new(self.int.finish()),
            Arc::new(self.double.finish()),
            Arc::new(self.bool.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.json.finish()),
        ];
        StructArray::new(any_value_fields(), children, None)
    }
}

/// Arrays and key-value lists are kept as OTLP JSON (`{"arrayValue": ...}`).
fn nested_to_json(value: &Value) -> String {
    let any = AnyValue {
        value: Some(value.clone()),
    };
    // Serializing plain data structures to a String cannot fail.
    serde_json::to_string(&any).unwrap_or_default()
}

/// Reads row `row` of an attribute map column back into OTLP `KeyValue`s.
pub fn read_attributes(map: &MapArray, row: usize) -> Vec<KeyValue> {
    let entries = map.value(row);
    let Some(keys) = entries.column(0).as_any().downcast_ref::<StringArray>() else {
        return Vec::new();
    };
    let Some(values) = entries.column(1).as_any().downcast_ref::<StructArray>() else {
        return Vec::new();
    };
    let Some(reader) = AnyValueReader::new(values) else {
        return Vec::new();
    };
    (0..entries.len())
        .map(|index| KeyValue {
            key: keys.value(index).to_string(),
            value: Some(AnyValue {
                value: reader.read(index),
            }),
            ..Default::default()
        })
        .collect()
}

/// Compares rows of one attribute map column by value, for sharing
/// repeated rows (the head stores each distinct resource once).
pub struct MapRowComparator<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StructArray,
    reader: AnyValueReader<'a>,
}

impl<'a> MapRowComparator<'a> {
    /// `None` when `map` does not have the attribute map layout.
    pub fn new(map: &'a MapArray) -> Option<Self> {
        let entries = map.entries();
        let keys = entries.column(0).as_any().downcast_ref::<StringArray>()?;
        let values = entries.column(1).as_any().downcast_ref::<StructArray>()?;
        Some(Self {
            map,
            keys,
            values,
            reader: AnyValueReader::new(values)?,
        })
    }

    /// Whether rows `a` and `b` hold the same entries in the same order.
    pub fn rows_equal(&self, a: usize, b: usize) -> bool {
        if self.map.is_null(a) != self.map.is_null(b) {
            return false;
        }
        let offsets = self.map.value_offsets();
        let (a_start, a_end) = (offsets[a] as usize, offsets[a + 1] as usize);
        let (b_start, b_end) = (offsets[b] as usize, offsets[b + 1] as usize);
        if a_end - a_start != b_end - b_start {
            return false;
        }
        (0..a_end - a_start).all(|entry| {
            let (a, b) = (a_start + entry, b_start + entry);
            self.keys.value(a) == self.keys.value(b)
                && self.values.is_valid(a) == self.values.is_valid(b)
                && self.reader.values_equal(a, b)
        })
    }
}

struct AnyValueReader<'a> {
    str: &'a StringArray,
    int: &'a Int64Array,
    double: &'a Float64Array,
    bool: &'a BooleanArray,
    bytes: &'a BinaryArray,
    json: &'a StringArray,
}

impl<'a> AnyValueReader<'a> {
    /// `None` when the struct does not have the schema's children.
    fn new(values: &'a StructArray) -> Option<Self> {
        Some(Self {
            str: child(values, any_value::STR)?,
            int: child(values, any_value::INT)?,
            double: child(values, any_value::DOUBLE)?,
            bool: child(values, any_value::BOOL)?,
            bytes: child(values, any_value::BYTES)?,
            json: child(values, any_value::JSON)?,
        })
    }

    /// Whether entries `a` and `b` hold the same value (a NaN differs from
    /// itself, which only costs sharing).
    fn values_equal(&self, a: usize, b: usize) -> bool {
        fn same<T: PartialEq>(
            valid: impl Fn(usize) -> bool,
            value: impl Fn(usize) -> T,
            a: usize,
            b: usize,
        ) -> bool {
            valid(a) == valid(b) && (!valid(a) || value(a) == value(b))
        }
        same(|i| self.str.is_valid(i), |i| self.str.value(i), a, b)
            && same(|i| self.int.is_valid(i), |i| self.int.value(i), a, b)
            && same(|i| self.double.is_valid(i), |i| self.double.value(i), a, b)
            && same(|i| self.bool.is_valid(i), |i| self.bool.value(i), a, b)
            && same(|i| self.bytes.is_valid(i), |i| self.bytes.value(i), a, b)
            && same(|i| self.json.is_valid(i), |i| self.json.value(i), a, b)
    }

    fn read(&self, index: usize) -> Option<Value> {
        if self.str.is_valid(index) {
            return Some(Value::StringValue(self.str.value(index).to_string()));
        }
        if self.int.is_valid(index) {
            return Some(Value::IntValue(self.int.value(index)));
        }
        if self.double.is_valid(index) {
            return Some(Value::DoubleValue(self.double.value(index)));
        }
        if self.bool.is_valid(index) {
            return Some(Value::BoolValue(self.bool.value(index)));
        }
        if self.bytes.is_valid(index) {
            return Some(Value::BytesValue(self.bytes.value(index).to_vec()));
        }
        if self.json.is_valid(index) {
            let parsed: Option<AnyValue> = serde_json::from_str(self.json.value(index)).ok();
            return parsed.and_then(|any| any.value);
        }
        None
    }
}

/// Child `name` of a struct array, if present with type `T`.
pub fn child<'a, T: 'static>(parent: &'a StructArray, name: &str) -> Option<&'a T> {
    parent.column_by_name(name)?.as_any().downcast_ref::<T>()
}

/// The string value of attribute `key`, if present and a string.
pub fn find_str<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find_value(attributes, key)? {
        Value::StringValue(text) => Some(text.as_str()),
        _ => None,
    }
}

/// The integer value of attribute `key`: an int, or a string holding one.
pub fn find_int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match find_value(attributes, key)? {
        Value::IntValue(int) => Some(*int),
        Value::StringValue(text) => text.parse().ok(),
        Value::DoubleValue(double) if double.fract() == 0.0 => Some(*double as i64),
        _ => None,
    }
}

/// The boolean value of attribute `key`, if present and a boolean.
pub fn find_bool(attributes: &[KeyValue], key: &str) -> Option<bool> {
    match find_value(attributes, key)? {
        Value::BoolValue(flag) => Some(*flag),
        _ => None,
    }
}

/// The value of attribute `key`, if present and set.
pub fn find_value<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|key_value| key_value.key == key)
        .and_then(|key_value| key_value.value.as_ref())
        .and_then(|any| any.value.as_ref())
}
