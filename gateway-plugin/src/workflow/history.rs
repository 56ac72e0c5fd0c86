//! Durable execution histories: one JSON-lines file per execution under the
//! engine's directory, each event appended and fsynced before the engine
//! acts on it, so a restarted engine knows exactly what completed.
//!
//! Events carry a `type` (`ExecutionStarted`, `TaskStateEntered`,
//! `TaskScheduled`, `TaskSucceeded`, `TaskFailed`, `TaskStateExited`,
//! `WaitStateEntered`, `WaitStateExited`, ..., `ExecutionSucceeded`,
//! `ExecutionFailed`, `ExecutionTimedOut`, `ExecutionResumed`), an `id`, a
//! `timestamp` (epoch seconds) and, for state events, the state's `key`
//! (`scope` + state name + visit: `Fanout#1[0]/Ship#1`), which replay
//! matches on.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::document::now_seconds;

/// Largest history kept per execution (events); beyond it the execution
/// fails with `States.Runtime`, as Step Functions' 25,000-event limit.
pub const MAX_EVENTS: usize = 25_000;

/// The histories of one engine.
#[derive(Debug)]
pub struct HistoryStore {
    directory: PathBuf,
    /// Events per execution so far; appends are serialized by this lock.
    counts: Mutex<std::collections::HashMap<String, usize>>,
}

/// Whether `execution` is a valid execution id: 1-80 of `[A-Za-z0-9_-]`
/// (ids become file names, so nothing else may reach the file system).
pub fn is_valid_id(execution: &str) -> bool {
    !execution.is_empty()
        && execution.len() <= 80
        && execution
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// The file name of an execution.
fn file_name(execution: &str) -> String {
    format!("{execution}.jsonl")
}

fn invalid(execution: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{execution:?} is not an execution id"),
    )
}

impl HistoryStore {
    pub fn open(directory: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(directory)?;
        Ok(Self {
            directory: directory.to_path_buf(),
            counts: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn path(&self, execution: &str) -> PathBuf {
        self.directory.join(file_name(execution))
    }

    /// Appends `event` (with `id` and `timestamp` added) and syncs it.
    pub fn append(&self, execution: &str, mut event: Value) -> std::io::Result<Value> {
        if !is_valid_id(execution) {
            return Err(invalid(execution));
        }
        let mut counts = self.counts.lock();
        let count = match counts.get(execution) {
            Some(count) => *count,
            None => self.read(execution).map_or(0, |events| events.len()),
        };
        if count >= MAX_EVENTS {
            return Err(std::io::Error::other("execution history is full"));
        }
        event["id"] = json!(count + 1);
        event["timestamp"] = json!(now_seconds());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(execution))?;
        let mut line = event.to_string();
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        counts.insert(execution.to_string(), count + 1);
        Ok(event)
    }

    /// Every event of `execution`; a torn last line (a crash mid-write) is
    /// left out.
    pub fn read(&self, execution: &str) -> std::io::Result<Vec<Value>> {
        if !is_valid_id(execution) {
            return Err(invalid(execution));
        }
        let file = std::fs::File::open(self.path(execution))?;
        Ok(std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect())
    }

    /// The ids of every execution with a history.
    pub fn executions(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(".jsonl")
                    .map(str::to_string)
            })
            .collect();
        ids.sort();
        ids
    }
}
