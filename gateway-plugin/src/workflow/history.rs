//! Durable execution histories: one JSON-lines file per execution under the
//! engine's directory, each event appended and fsynced before the engine
//! acts on it, so a restarted engine knows exactly what completed.
//!
//! Each line is one [`Recorded`] event: an `id` (1, 2, ...), a `timestamp`
//! (epoch seconds) and the [`Event`] itself, whose `type` names it
//! (`ExecutionStarted`, `TaskStateEntered`, `TaskScheduled`, ...). State
//! events carry the state's `key` (`scope` + state name + visit:
//! `Fanout#1[0]/Ship#1`), which replay matches on.
//!
//! Versions: the layout written today is version 1, and a version-1 line
//! has no `version` field (the files written before the field was defined
//! are version 1 as they stand). A later layout writes `"version": N`; the
//! reader takes every version up to [`VERSION`] and refuses a newer one
//! with [`HistoryError::NewerVersion`] instead of misreading it.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::document::now_seconds;

/// Largest history kept per execution (events); beyond it the execution
/// fails with `States.Runtime`, as Step Functions' 25,000-event limit.
pub const MAX_EVENTS: usize = 25_000;

/// The newest event layout this engine reads and the one it writes.
pub const VERSION: u32 = 1;

/// The kind of a state, as its `Type` in the definition and as the prefix
/// of its `…StateEntered` / `…StateExited` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Task,
    Choice,
    Wait,
    Parallel,
    Map,
    Pass,
    Succeed,
    Fail,
}

impl StateKind {
    const ALL: [Self; 8] = [
        Self::Task,
        Self::Choice,
        Self::Wait,
        Self::Parallel,
        Self::Map,
        Self::Pass,
        Self::Succeed,
        Self::Fail,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "Task",
            Self::Choice => "Choice",
            Self::Wait => "Wait",
            Self::Parallel => "Parallel",
            Self::Map => "Map",
            Self::Pass => "Pass",
            Self::Succeed => "Succeed",
            Self::Fail => "Fail",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// Which end of a state an event marks; with the kind it makes the event's
/// `type`, `TaskStateEntered` or `MapStateExited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Entered,
    Exited,
}

impl Edge {
    fn suffix(self) -> &'static str {
        match self {
            Self::Entered => "StateEntered",
            Self::Exited => "StateExited",
        }
    }
}

/// The `type` of a state event: `{kind}StateEntered` or `{kind}StateExited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateType {
    pub kind: StateKind,
    pub edge: Edge,
}

impl Serialize for StateType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!(
            "{}{}",
            self.kind.as_str(),
            self.edge.suffix()
        ))
    }
}

impl<'de> Deserialize<'de> for StateType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        [Edge::Entered, Edge::Exited]
            .into_iter()
            .find_map(|edge| {
                let kind = StateKind::parse(text.strip_suffix(edge.suffix())?)?;
                Some(Self { kind, edge })
            })
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {text:?}")))
    }
}

/// A state was entered (`type` `{kind}StateEntered`) with its raw input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntered {
    #[serde(rename = "type")]
    pub event_type: StateType,
    pub key: String,
    pub state: String,
    pub input: Value,
}

/// A state ended (`type` `{kind}StateExited`): its output and the state
/// that follows (none at the end of its machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateExited {
    #[serde(rename = "type")]
    pub event_type: StateType,
    pub key: String,
    pub state: String,
    pub output: Value,
    pub next: Option<String>,
}

/// One step of an execution, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    ExecutionStarted {
        state_machine: String,
        input: Value,
        trace_id: String,
        segment_id: String,
        parent_id: Option<String>,
        sampled: bool,
        sampling_rule: Option<String>,
    },
    /// A restarted engine took the execution up again, `gap_seconds` after
    /// event `after_event`.
    ExecutionResumed {
        gap_seconds: f64,
        after_event: u64,
    },
    /// A Wait state will end at `until` (epoch seconds), also after a
    /// restart.
    WaitStateStarted {
        key: String,
        until: f64,
    },
    TaskScheduled {
        key: String,
        state: String,
        resource: String,
        attempt: u32,
    },
    TaskSucceeded {
        key: String,
        state: String,
        output: Value,
    },
    TaskFailed {
        key: String,
        state: String,
        attempt: u32,
        error: String,
        cause: String,
    },
    ExecutionSucceeded {
        output: Value,
    },
    ExecutionFailed {
        error: String,
        cause: String,
    },
    ExecutionTimedOut {
        error: String,
        cause: String,
    },
    #[serde(untagged)]
    StateEntered(StateEntered),
    #[serde(untagged)]
    StateExited(StateExited),
}

fn is_version_1(version: &u32) -> bool {
    *version == 1
}

fn version_1() -> u32 {
    1
}

/// An event as it sits in the history: numbered and timed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub id: u64,
    pub timestamp: f64,
    #[serde(default = "version_1", skip_serializing_if = "is_version_1")]
    pub version: u32,
    #[serde(flatten)]
    pub event: Event,
}

/// Why a history could not be read or extended.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0:?} is not an execution id")]
    InvalidId(String),
    #[error("execution {0:?} does not exist")]
    NotFound(String),
    #[error("execution history is full ({MAX_EVENTS} events)")]
    Full,
    #[error("history of {execution:?}, line {line}: {message}")]
    Unreadable {
        execution: String,
        line: usize,
        message: String,
    },
    #[error(
        "history of {execution:?}, line {line}: version {version} is newer than this engine reads ({VERSION})"
    )]
    NewerVersion {
        execution: String,
        line: usize,
        version: u32,
    },
    #[error("history: {0}")]
    Io(#[from] std::io::Error),
}

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

/// Whether the file ends in the middle of a line: a crash tore its last
/// append. The next append starts a new line, so the torn one is the only
/// line lost.
fn ends_mid_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    if file.seek(SeekFrom::End(0))? == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl HistoryStore {
    pub fn open(directory: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(directory)?;
        Ok(Self {
            directory: directory.to_path_buf(),
            counts: Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn path(&self, execution: &str) -> Result<PathBuf, HistoryError> {
        if !is_valid_id(execution) {
            return Err(HistoryError::InvalidId(execution.to_string()));
        }
        Ok(self.directory.join(file_name(execution)))
    }

    /// Appends `event` as the next numbered, timestamped line and syncs it.
    pub fn append(&self, execution: &str, event: Event) -> Result<Recorded, HistoryError> {
        let path = self.path(execution)?;
        let mut counts = self.counts.lock();
        let known = counts.get(execution).copied();
        let count = match known {
            Some(count) => count,
            None => match self.read(execution) {
                Ok(events) => events.len(),
                Err(HistoryError::NotFound(_)) => 0,
                Err(error) => return Err(error),
            },
        };
        if count >= MAX_EVENTS {
            return Err(HistoryError::Full);
        }
        let recorded = Recorded {
            id: count as u64 + 1,
            timestamp: now_seconds(),
            version: VERSION,
            event,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut line = String::new();
        if known.is_none() && ends_mid_line(&mut file)? {
            line.push('\n');
        }
        line.push_str(&serde_json::to_string(&recorded).map_err(std::io::Error::other)?);
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        counts.insert(execution.to_string(), count + 1);
        Ok(recorded)
    }

    /// Every event of `execution`. A line that is not JSON is a torn write
    /// (a crash mid-append) and is left out; a JSON line that is not an
    /// event of a version this engine reads is an error.
    pub fn read(&self, execution: &str) -> Result<Vec<Recorded>, HistoryError> {
        let path = self.path(execution)?;
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(HistoryError::NotFound(execution.to_string()));
            }
            Err(error) => return Err(error.into()),
        };
        let mut events = Vec::new();
        // Lines as bytes: a line torn inside a multi-byte character is not
        // UTF-8, and is skipped like any other torn line.
        for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line?;
            let Ok(value) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let version = value.get("version").and_then(Value::as_u64).unwrap_or(1);
            if version > u64::from(VERSION) {
                return Err(HistoryError::NewerVersion {
                    execution: execution.to_string(),
                    line: index + 1,
                    version: u32::try_from(version).unwrap_or(u32::MAX),
                });
            }
            let recorded =
                serde_json::from_value(value).map_err(|error| HistoryError::Unreadable {
                    execution: execution.to_string(),
                    line: index + 1,
                    message: error.to_string(),
                })?;
            events.push(recorded);
        }
        Ok(events)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workflow-history-v1")
    }

    /// Histories written before events were typed (the demo's, and one with
    /// the rarer kinds) read as typed events and write back as the same JSON.
    #[test]
    fn version_1_histories_read_and_write_back_unchanged() {
        let store = HistoryStore::open(&fixtures()).unwrap();
        let executions = store.executions();
        assert_eq!(executions, ["failed", "resumed", "retried"]);
        for execution in &executions {
            let text = std::fs::read_to_string(fixtures().join(file_name(execution))).unwrap();
            let events = store.read(execution).unwrap();
            assert_eq!(events.len(), text.lines().count(), "{execution}");
            for (line, recorded) in text.lines().zip(&events) {
                assert_eq!(recorded.version, 1);
                let original: Value = serde_json::from_str(line).unwrap();
                assert_eq!(serde_json::to_value(recorded).unwrap(), original, "{line}");
            }
        }
        let resumed = store.read("resumed").unwrap();
        assert!(matches!(
            &resumed[5].event,
            Event::StateExited(StateExited {
                event_type: StateType { kind: StateKind::Pass, edge: Edge::Exited },
                next: None,
                key,
                ..
            }) if key == "Fan#1[0]/Shape#1"
        ));
        assert!(matches!(
            resumed[6].event,
            Event::ExecutionResumed { after_event: 6, .. }
        ));
        assert!(matches!(resumed[7].event, Event::ExecutionTimedOut { .. }));
        let failed = store.read("failed").unwrap();
        assert!(matches!(
            failed.last().unwrap().event,
            Event::ExecutionFailed { .. }
        ));
    }

    #[test]
    fn a_newer_version_or_an_unknown_event_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        let first = r#"{"id":1,"timestamp":1.0,"type":"ExecutionSucceeded","output":null}"#;
        std::fs::write(
            dir.path().join("newer.jsonl"),
            format!("{first}\n{{\"id\":2,\"timestamp\":2.0,\"version\":2,\"type\":\"Later\"}}\n"),
        )
        .unwrap();
        let error = store.read("newer").unwrap_err();
        assert!(
            matches!(
                error,
                HistoryError::NewerVersion {
                    line: 2,
                    version: 2,
                    ..
                }
            ),
            "{error}"
        );
        std::fs::write(
            dir.path().join("odd.jsonl"),
            format!("{first}\n{{\"id\":2,\"timestamp\":2.0,\"type\":\"SleepStateEntered\",\"key\":\"k\",\"state\":\"s\",\"input\":1}}\n"),
        )
        .unwrap();
        let error = store.read("odd").unwrap_err();
        assert!(
            matches!(error, HistoryError::Unreadable { line: 2, .. }),
            "{error}"
        );
        assert!(matches!(
            store.read("absent"),
            Err(HistoryError::NotFound(_))
        ));
        assert!(matches!(
            store.read("../x"),
            Err(HistoryError::InvalidId(_))
        ));
    }

    /// A history file of `bytes` whose torn tail is left out, and the event
    /// a restarted engine then appends to it.
    fn append_after(bytes: &[u8]) -> (tempfile::TempDir, HistoryStore, Recorded) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("torn.jsonl"), bytes).unwrap();
        let store = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(store.read("torn").unwrap().len(), 1);
        let appended = store
            .append(
                "torn",
                Event::ExecutionResumed {
                    gap_seconds: 1.0,
                    after_event: 1,
                },
            )
            .unwrap();
        (dir, store, appended)
    }

    #[test]
    fn a_line_torn_inside_a_character_is_skipped() {
        let first = r#"{"id":1,"timestamp":1.0,"type":"ExecutionSucceeded","output":"Zoë"}"#;
        let cut = first.find('ë').unwrap() + 1;
        let mut bytes = format!("{first}\n").into_bytes();
        bytes.extend_from_slice(&first.as_bytes()[..cut]);
        let (_dir, store, appended) = append_after(&bytes);
        assert_eq!(store.read("torn").unwrap().last(), Some(&appended));
    }

    /// A crash mid-append leaves a torn last line: it is left out, and the
    /// next append (by a restarted engine) starts a line of its own instead
    /// of being glued to the torn one and lost with it.
    #[test]
    fn an_append_after_a_torn_line_is_kept() {
        let first = r#"{"id":1,"timestamp":1.0,"type":"ExecutionSucceeded","output":1}"#;
        let (_dir, store, appended) =
            append_after(format!("{first}\n{{\"id\":2,\"times").as_bytes());
        assert_eq!(appended.id, 2);
        let events = store.read("torn").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], appended);
    }
}
