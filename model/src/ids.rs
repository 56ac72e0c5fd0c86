//! Trace and span identifiers.
//!
//! Ids arrive from the network as byte strings of any length. They are parsed
//! into these newtypes with `TryFrom` before anything else looks at them, so a
//! wrong length or an all-zero id (invalid per W3C trace context and OTLP) is a
//! typed error the receivers can report, never a panic.

use std::fmt;

/// Why a byte string or hex string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must be {expected} bytes, got {actual}")]
    WrongLength {
        kind: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{kind} must not be all zeroes")]
    AllZero { kind: &'static str },
    #[error("{kind} is not hex: {input:?}")]
    NotHex { kind: &'static str, input: String },
}

macro_rules! define_id {
    ($name:ident, $len:expr, $kind:expr) => {
        #[doc = concat!("A non-zero ", $kind, " of ", stringify!($len), " bytes.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// The id's length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses lowercase or uppercase hex of exactly `2 * LEN` digits.
            pub fn from_hex(input: &str) -> Result<Self, IdError> {
                let mut bytes = [0u8; $len];
                if input.len() != 2 * $len {
                    return Err(IdError::WrongLength {
                        kind: $kind,
                        expected: $len,
                        actual: input.len() / 2,
                    });
                }
                hex::decode_to_slice(input, &mut bytes).map_err(|_| IdError::NotHex {
                    kind: $kind,
                    input: input.chars().take(64).collect(),
                })?;
                Self::try_from(&bytes[..])
            }

            /// Lowercase hex, as OTLP JSON and the Tempo API spell ids.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = IdError;

            fn try_from(bytes: &[u8]) -> Result<Self, IdError> {
                let array: [u8; $len] = bytes.try_into().map_err(|_| IdError::WrongLength {
                    kind: $kind,
                    expected: $len,
                    actual: bytes.len(),
                })?;
                if array == [0u8; $len] {
                    return Err(IdError::AllZero { kind: $kind });
                }
                Ok(Self(array))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

define_id!(TraceId, 16, "trace id");
define_id!(SpanId, 8, "span id");

impl TraceId {
    /// Parses a trace id as query APIs accept it: hex, with leading zeroes
    /// optional (Tempo and Jaeger accept 64-bit ids left-padded to 128 bits).
    pub fn parse_lenient(input: &str) -> Result<Self, IdError> {
        if input.is_empty() || input.len() > 32 {
            return Err(IdError::WrongLength {
                kind: "trace id",
                expected: 16,
                actual: input.len().div_ceil(2),
            });
        }
        let padded = format!("{input:0>32}");
        Self::from_hex(&padded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ids() {
        let cases: &[(&[u8], Option<IdError>)] = &[
            (&[1; 16], None),
            (&[0; 16], Some(IdError::AllZero { kind: "trace id" })),
            (
                &[1; 15],
                Some(IdError::WrongLength {
                    kind: "trace id",
                    expected: 16,
                    actual: 15,
                }),
            ),
            (
                &[],
                Some(IdError::WrongLength {
                    kind: "trace id",
                    expected: 16,
                    actual: 0,
                }),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                TraceId::try_from(*bytes).err(),
                expected.clone(),
                "{bytes:?}"
            );
        }
        assert!(SpanId::try_from(&[0u8; 8][..]).is_err());
        assert!(SpanId::try_from(&[7u8; 8][..]).is_ok());
    }

    #[test]
    fn hex_round_trip_and_lenient_parse() {
        let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        assert_eq!(id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
        let short = TraceId::parse_lenient("8448eb211c80319c").unwrap();
        assert_eq!(short.to_hex(), "00000000000000008448eb211c80319c");
        assert!(TraceId::parse_lenient("xyz").is_err());
        assert!(TraceId::parse_lenient("").is_err());
        assert!(TraceId::parse_lenient(&"a".repeat(33)).is_err());
        assert!(TraceId::from_hex("0000000000000000000000000000000g").is_err());
    }
}
