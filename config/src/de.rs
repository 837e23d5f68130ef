//! A serde deserializer over a merged `toml::Table` that reads text as numbers and booleans.
//!
//! Environment variables are always text, so `STEPWISE_DATABASE__POOL_SIZE=16` arrives as the
//! string `"16"`. Guessing its type up front would turn `STEPWISE_RUNTIME__INSTANCE_ID=42`
//! into a number where a string belongs; instead the value stays text and is converted here,
//! when the target field asks for a number or a boolean. Its errors keep the shape of the
//! problem (wrong type, bad value, unknown key) so the caller can phrase a message that names
//! the key, the value and its origin.

use std::fmt::Display;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use toml::Value;

/// What went wrong at one place in the tree; the path is tracked by `serde_path_to_error`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeError {
    #[error("expected {expected}")]
    InvalidType { expected: String },
    #[error("{reason}")]
    InvalidValue { reason: String },
    #[error("unknown field, expected one of {}", expected.join(", "))]
    UnknownField { expected: &'static [&'static str] },
}

impl de::Error for DeError {
    fn custom<T: Display>(msg: T) -> Self {
        DeError::InvalidValue { reason: msg.to_string() }
    }

    fn invalid_type(_: de::Unexpected, expected: &dyn de::Expected) -> Self {
        DeError::InvalidType { expected: expected.to_string() }
    }

    fn invalid_value(_: de::Unexpected, expected: &dyn de::Expected) -> Self {
        DeError::InvalidValue { reason: format!("expected {expected}") }
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        DeError::InvalidValue { reason: format!("expected one of {}", expected.join(", ")) }
    }

    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownField { expected }
    }
}

fn invalid_type(expected: &str) -> DeError {
    DeError::InvalidType { expected: expected.to_owned() }
}

/// Deserializes one node of the merged tree.
pub(crate) struct ValueDeserializer<'de>(pub(crate) &'de Value);

impl<'de> ValueDeserializer<'de> {
    /// The node as an integer of type `T`, from a TOML integer or from text.
    fn integer<T>(&self, min: T, max: T) -> Result<T, DeError>
    where
        T: TryFrom<i128> + Display,
    {
        let wide = match self.0 {
            Value::Integer(n) => i128::from(*n),
            Value::String(s) => s.parse().map_err(|_| invalid_type("an integer"))?,
            _ => return Err(invalid_type("an integer")),
        };
        T::try_from(wide)
            .map_err(|_| DeError::InvalidValue { reason: format!("expected an integer from {min} to {max}") })
    }

    /// The node as a number, from a TOML float or integer or from text.
    fn float(&self) -> Result<f64, DeError> {
        match self.0 {
            Value::Float(x) => Ok(*x),
            // Precision loss above 2^53 is acceptable for settings.
            Value::Integer(n) => Ok(*n as f64),
            Value::String(s) => s.parse().map_err(|_| invalid_type("a number")),
            _ => Err(invalid_type("a number")),
        }
    }
}

macro_rules! integer_hints {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.integer::<$ty>(<$ty>::MIN, <$ty>::MAX)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Integer(n) => visitor.visit_i64(*n),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(ValueDeserializer));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Table(table) => {
                let entries = table.iter().map(|(k, v)| (k.as_str(), ValueDeserializer(v)));
                let mut map = MapDeserializer::new(entries);
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    integer_hints! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f64(self.float()?)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::String(s) => match s.parse() {
                Ok(b) => visitor.visit_bool(b),
                Err(_) => Err(invalid_type("a boolean (true or false)")),
            },
            _ => Err(invalid_type("a boolean (true or false)")),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // TOML has no null: a key that is present always has a value.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Table(_) => self.deserialize_any(visitor),
            _ => Err(invalid_type("a table of settings")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Settings enums are plain words (`level = "debug"`), never tables.
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            _ => Err(invalid_type(&format!("one of {}", variants.join(", ")))),
        }
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, DeError> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Sample {
        flag: bool,
        ratio: f64,
        small: i8,
        big: u64,
    }

    fn sample(toml: &str) -> Result<Sample, String> {
        let value: Value = Value::Table(toml.parse().unwrap());
        Sample::deserialize(ValueDeserializer(&value)).map_err(|err| err.to_string())
    }

    #[test]
    fn text_is_read_as_the_type_the_field_asks_for() {
        let cases = [
            ("flag = true\nratio = 0.5\nsmall = -128\nbig = 7", Sample { flag: true, ratio: 0.5, small: -128, big: 7 }),
            (
                r#"flag = "false"
                ratio = "2.5"
                small = "127"
                big = "18446744073709551615""#,
                Sample { flag: false, ratio: 2.5, small: 127, big: u64::MAX },
            ),
            (
                r#"flag = "true"
                ratio = 3
                small = "-1"
                big = "0""#,
                Sample { flag: true, ratio: 3.0, small: -1, big: 0 },
            ),
        ];
        for (toml, expected) in cases {
            assert_eq!(sample(toml), Ok(expected), "{toml}");
        }
    }

    #[test]
    fn text_of_the_wrong_kind_is_rejected() {
        let valid = "flag = true\nratio = 0.5\nsmall = 1\nbig = 1\n";
        let cases = [
            ("flag = \"yes\"", "expected a boolean (true or false)"),
            ("flag = 1", "expected a boolean (true or false)"),
            ("ratio = \"half\"", "expected a number"),
            ("ratio = false", "expected a number"),
            ("small = \"200\"", "expected an integer from -128 to 127"),
            ("small = 200", "expected an integer from -128 to 127"),
            ("big = \"1e3\"", "expected an integer"),
            ("big = -1", "expected an integer from 0 to 18446744073709551615"),
        ];
        for (line, message) in cases {
            let key = line.split(' ').next().unwrap();
            let others = valid.lines().filter(|l| !l.starts_with(key));
            let toml = others.chain([line]).collect::<Vec<_>>().join("\n");
            assert_eq!(sample(&toml), Err(message.to_owned()), "{toml}");
        }
    }
}
