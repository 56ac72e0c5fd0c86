//! The workflow engine: durable state machines modelled on Amazon States
//! Language, run on the function runtime and traced end to end.
//!
//! - [`definition`] — the machine model and its validation;
//! - [`paths`] — InputPath, Parameters, ResultSelector, ResultPath,
//!   OutputPath;
//! - [`choice`] — Choice rules;
//! - [`history`] — the durable per-execution event log;
//! - [`tasks`] — what Task states call, and the clock;
//! - [`engine`] — executions, retries, catches, replay after a restart,
//!   tracing;
//! - [`api`] — StartExecution, DescribeExecution, GetExecutionHistory over
//!   HTTP.

pub mod api;
pub mod choice;
pub mod definition;
pub mod engine;
pub mod history;
pub mod paths;
pub mod tasks;

pub use definition::{DefinitionError, Machine, parse};
pub use engine::{Description, Engine, EngineError};
pub use history::{Event, HistoryError, HistoryStore, Recorded};
pub use tasks::{Clock, RecordingClock, RuntimeTasks, SystemClock, TaskError, TaskRunner};
