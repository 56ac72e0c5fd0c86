//! The AWS REST-JSON protocol helpers, shared with the other crates that
//! serve X-Ray API routes (see `tracelake-aws-json`).

pub use tracelake_aws_json::*;
