//! The small downstream the reference stack calls: a key-value table
//! (DynamoDB-like) and a message queue (SQS-like). Neither sends segments,
//! as the AWS services they stand for do not: callers record them as `aws`
//! subsegments and tracelake infers their nodes.

pub mod queue;
pub mod table;

pub use queue::{Message, QueueService, QueueSpec};
pub use table::{TableService, TableSpec};
