//! The engine: runs executions of state machines, records every step in
//! the durable history before acting on it, and resumes unfinished
//! executions after a restart by *replaying* their history.
//!
//! Replay runs the machine from the start with the original input, but a
//! state whose exit is recorded is not run again (its recorded output and
//! next state are taken), a task whose success is recorded is not invoked
//! again, recorded failed attempts count toward the retriers without being
//! retried, and a Wait that started waits only until its recorded end. A
//! task in flight when the engine died is invoked again: tasks are at least
//! once, and a task whose completion was recorded runs exactly once. The
//! history shows the restart as `ExecutionResumed` with the gap in
//! seconds.
//!
//! Tracing: each execution is one trace (the caller's when started from a
//! traced request) with one segment, named after the machine, origin
//! `AWS::StepFunctions::StateMachine`. It is sent in progress at the start
//! and complete at the end (same id, also after a resume), each state is an
//! independent subsegment sent when the state ends, and each task attempt
//! is a subsegment of its state whose id the invoked function's segment
//! names as parent — so the service map shows workflow -> function, and a
//! retried task shows its attempts in one trace.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracelake_sampler::rules::RequestProperties;
use tracelake_sampler::{SampledFlag, TraceHeader};

use super::definition::{
    Catcher, ChoiceState, Flow, Io, Machine, MapState, ParallelState, PassState, Resource, Retrier,
    State, TaskState, WaitState,
};
use super::history::{
    Edge, Event, HistoryError, HistoryStore, Recorded, StateEntered, StateExited, StateKind,
    StateType,
};
use super::paths;
use super::tasks::{Clock, TaskError, TaskRunner};
use crate::document::{Document, Http, TopLevel, new_segment_id, new_trace_id, now_seconds};
use crate::emitter::{MAX_DOCUMENT_BYTES, SegmentSink};
use crate::tracer::Tracer;

/// Longest wait, task timeout or retry delay the engine sleeps (a year):
/// values past it, from a definition or an execution's input, are capped
/// instead of overflowing a `Duration`.
const MAX_SLEEP_SECONDS: f64 = 365.0 * 86_400.0;

/// `seconds` as a sleepable duration: not negative, not NaN, capped.
fn seconds(seconds: f64) -> Duration {
    if seconds.is_nan() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(seconds.clamp(0.0, MAX_SLEEP_SECONDS))
}

/// Map iterations in flight when `MaxConcurrency` is 0 (Step Functions'
/// inline Map runs 40).
const MAP_DEFAULT_CONCURRENCY: usize = 40;

/// The service type of workflow segments.
pub const ORIGIN: &str = "AWS::StepFunctions::StateMachine";

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    StateMachineDoesNotExist(String),
    ExecutionAlreadyExists(String),
    InvalidName(String),
    ExecutionDoesNotExist(String),
    Storage(String),
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StateMachineDoesNotExist(_) => "StateMachineDoesNotExist",
            Self::ExecutionAlreadyExists(_) => "ExecutionAlreadyExists",
            Self::InvalidName(_) => "InvalidName",
            Self::ExecutionDoesNotExist(_) => "ExecutionDoesNotExist",
            Self::Storage(_) => "InternalFailure",
        }
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::StateMachineDoesNotExist(name) => {
                write!(f, "state machine {name:?} does not exist")
            }
            Self::ExecutionAlreadyExists(name) => write!(f, "execution {name:?} already exists"),
            Self::InvalidName(name) => {
                write!(f, "execution name {name:?} must be 1-80 of A-Z a-z 0-9 _ -")
            }
            Self::ExecutionDoesNotExist(name) => write!(f, "execution {name:?} does not exist"),
            Self::Storage(message) => write!(f, "history: {message}"),
        }
    }
}

impl From<HistoryError> for EngineError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::NotFound(id) | HistoryError::InvalidId(id) => {
                Self::ExecutionDoesNotExist(id)
            }
            other => Self::Storage(other.to_string()),
        }
    }
}

/// An execution's state, as `DescribeExecution` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub execution: String,
    pub state_machine: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`.
    pub status: String,
    pub start: f64,
    pub stop: Option<f64>,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
    pub trace_id: Option<String>,
}

impl Description {
    pub fn to_json(&self) -> Value {
        json!({
            "executionArn": self.execution,
            "name": self.execution,
            "stateMachineArn": self.state_machine,
            "status": self.status,
            "startDate": self.start,
            "stopDate": self.stop,
            "input": self.input.to_string(),
            "output": self.output.as_ref().map(Value::to_string),
            "error": self.error,
            "cause": self.cause,
            "traceHeader": self.trace_id.as_ref().map(|root| format!("Root={root}")),
        })
    }
}

/// A failure travelling up the machine: `Error` and `Cause`.
type Failure = TaskError;

struct Inner {
    machines: HashMap<String, Arc<Machine>>,
    store: HistoryStore,
    tasks: Arc<dyn TaskRunner>,
    clock: Arc<dyn Clock>,
    tracer: Tracer,
    finished: Mutex<HashMap<String, watch::Sender<bool>>>,
}

/// The workflow engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.inner.machines.keys().collect();
        names.sort();
        f.debug_struct("Engine").field("machines", &names).finish()
    }
}

/// What replay knows from the history.
#[derive(Debug, Default)]
struct Replay {
    exited: HashMap<String, (Value, Option<String>)>,
    succeeded: HashMap<String, Value>,
    failures: HashMap<String, Vec<TaskError>>,
    wait_until: HashMap<String, f64>,
}

impl Replay {
    fn from_events(events: &[Recorded]) -> Self {
        let mut replay = Self::default();
        for recorded in events {
            match &recorded.event {
                Event::StateExited(exited) => {
                    replay.exited.insert(
                        exited.key.clone(),
                        (exited.output.clone(), exited.next.clone()),
                    );
                }
                Event::TaskSucceeded { key, output, .. } => {
                    replay.succeeded.insert(key.clone(), output.clone());
                }
                Event::TaskFailed {
                    key, error, cause, ..
                } => replay
                    .failures
                    .entry(key.clone())
                    .or_default()
                    .push(TaskError::new(error, cause.clone())),
                Event::WaitStateStarted { key, until } => {
                    replay.wait_until.insert(key.clone(), *until);
                }
                _ => {}
            }
        }
        replay
    }
}

/// One execution being run.
struct Run {
    engine: Engine,
    id: String,
    machine_name: String,
    input: Value,
    started: f64,
    trace_id: String,
    segment_id: String,
    sampled: bool,
    replay: Replay,
    visits: Mutex<HashMap<String, u32>>,
}

type Step<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

fn matches(names: &[String], error: &str) -> bool {
    names.iter().any(|name| {
        name == error
            || (name == "States.ALL" && error != "States.Runtime")
            || (name == "States.TaskFailed"
                && error != "States.Timeout"
                && error != "States.Runtime")
    })
}

fn runtime_error(error: impl std::fmt::Display) -> Failure {
    TaskError::new("States.Runtime", error.to_string())
}

/// The delay before retry number `retry` (0-based) of `retrier`.
fn backoff(retrier: &Retrier, retry: u32) -> Duration {
    let mut delay = retrier.interval_seconds * retrier.backoff_rate.powi(retry as i32);
    if let Some(max) = retrier.max_delay_seconds {
        delay = delay.min(max);
    }
    if retrier.jitter_strategy.as_deref() == Some("FULL") {
        delay *= fastrand::f64();
    }
    seconds(delay.min(86_400.0))
}

impl Engine {
    /// An engine for `machines` keeping histories in `store`.
    pub fn new(
        machines: Vec<(String, Machine)>,
        store: HistoryStore,
        tasks: Arc<dyn TaskRunner>,
        clock: Arc<dyn Clock>,
        tracer: Tracer,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                machines: machines
                    .into_iter()
                    .map(|(name, machine)| (name, Arc::new(machine)))
                    .collect(),
                store,
                tasks,
                clock,
                tracer,
                finished: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn sink(&self) -> &Arc<dyn SegmentSink> {
        self.inner.tracer.sink()
    }

    /// Starts an execution of `machine` with `input`; its id (`name` when
    /// given). `trace` is the caller's trace header.
    pub async fn start_execution(
        &self,
        machine: &str,
        name: Option<&str>,
        input: Value,
        trace: Option<TraceHeader>,
    ) -> Result<String, EngineError> {
        if !self.inner.machines.contains_key(machine) {
            return Err(EngineError::StateMachineDoesNotExist(machine.to_string()));
        }
        let id = match name {
            Some(name) => {
                let valid = !name.is_empty()
                    && name.len() <= 80
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(EngineError::InvalidName(name.to_string()));
                }
                name.to_string()
            }
            None => crate::runtime::request_id(),
        };
        if self.history_async(&id).await.is_ok() {
            return Err(EngineError::ExecutionAlreadyExists(id));
        }
        let (trace_id, parent_id, upstream) = match trace {
            Some(header) => (header.root, header.parent, header.sampled),
            None => (new_trace_id(), None, None),
        };
        let (sampled, rule) = match upstream {
            Some(SampledFlag::Sampled) => (true, None),
            Some(SampledFlag::NotSampled) => (false, None),
            _ => {
                let decision = self.inner.tracer.sampler().decide_at(
                    &RequestProperties {
                        service_name: machine,
                        service_type: ORIGIN,
                        host: "",
                        http_method: "",
                        url_path: "",
                        attributes: &[],
                    },
                    now_seconds(),
                    fastrand::f64(),
                );
                (decision.sampled, decision.rule.map(|rule| rule.to_string()))
            }
        };
        self.append_async(
            &id,
            Event::ExecutionStarted {
                state_machine: machine.to_string(),
                input,
                trace_id,
                segment_id: new_segment_id(),
                parent_id,
                sampled,
                sampling_rule: rule,
            },
        )
        .await?;
        self.spawn(id.clone());
        Ok(id)
    }

    fn spawn(&self, id: String) {
        let (done, _) = watch::channel(false);
        self.inner.finished.lock().insert(id.clone(), done);
        let engine = self.clone();
        tokio::spawn(async move { engine.run(id).await });
    }

    /// Resumes every execution whose history has no end (call at start).
    pub fn resume_all(&self) -> usize {
        let mut resumed = 0;
        for id in self.inner.store.executions() {
            if self.inner.finished.lock().contains_key(&id) {
                continue;
            }
            if let Ok(description) = self.describe(&id)
                && description.status == "RUNNING"
            {
                self.spawn(id);
                resumed += 1;
            }
        }
        resumed
    }

    /// Waits until `id` ends (or `limit` passes); its description.
    pub async fn wait(&self, id: &str, limit: Duration) -> Result<Description, EngineError> {
        let receiver = self
            .inner
            .finished
            .lock()
            .get(id)
            .map(watch::Sender::subscribe);
        if let Some(mut receiver) = receiver {
            let _ = tokio::time::timeout(limit, receiver.wait_for(|done| *done)).await;
        }
        self.describe_async(id).await
    }

    /// Every execution, oldest id first.
    pub fn list(&self) -> Vec<Description> {
        self.inner
            .store
            .executions()
            .iter()
            .filter_map(|id| self.describe(id).ok())
            .collect()
    }

    /// The execution's history.
    pub fn history(&self, id: &str) -> Result<Vec<Recorded>, EngineError> {
        Ok(self.inner.store.read(id)?)
    }

    /// The execution's state, from its history.
    pub fn describe(&self, id: &str) -> Result<Description, EngineError> {
        let events = self.history(id)?;
        let Some(Recorded {
            timestamp,
            event:
                Event::ExecutionStarted {
                    state_machine,
                    input,
                    trace_id,
                    ..
                },
            ..
        }) = events.first()
        else {
            return Err(EngineError::ExecutionDoesNotExist(id.to_string()));
        };
        let mut description = Description {
            execution: id.to_string(),
            state_machine: state_machine.clone(),
            status: "RUNNING".into(),
            start: *timestamp,
            stop: None,
            input: input.clone(),
            output: None,
            error: None,
            cause: None,
            trace_id: Some(trace_id.clone()),
        };
        let end = events.iter().rev().find_map(|recorded| {
            let (status, output, failure) = match &recorded.event {
                Event::ExecutionSucceeded { output } => ("SUCCEEDED", Some(output), None),
                Event::ExecutionFailed { error, cause } => ("FAILED", None, Some((error, cause))),
                Event::ExecutionTimedOut { error, cause } => {
                    ("TIMED_OUT", None, Some((error, cause)))
                }
                _ => return None,
            };
            Some((recorded.timestamp, status, output, failure))
        });
        if let Some((stop, status, output, failure)) = end {
            description.stop = Some(stop);
            description.status = status.into();
            description.output = output.cloned();
            if let Some((error, cause)) = failure {
                description.error = Some(error.clone());
                description.cause = Some(cause.clone());
            }
        }
        Ok(description)
    }

    async fn run(&self, id: String) {
        let outcome = self.run_execution(&id).await;
        if let Err(error) = outcome {
            tracing::warn!(execution = %id, %error, "execution stopped: history unavailable");
        }
        // Waiters are told, and the entry goes: a finished execution is
        // described from its history.
        if let Some(done) = self.inner.finished.lock().remove(&id) {
            let _ = done.send(true);
        }
    }

    async fn run_execution(&self, id: &str) -> Result<(), EngineError> {
        let events = self.history_async(id).await?;
        let Some(Recorded {
            timestamp: started,
            event:
                Event::ExecutionStarted {
                    state_machine,
                    input,
                    trace_id,
                    segment_id,
                    parent_id,
                    sampled,
                    sampling_rule,
                },
            ..
        }) = events.first().cloned()
        else {
            return Err(EngineError::ExecutionDoesNotExist(id.to_string()));
        };
        let Some(machine) = self.inner.machines.get(&state_machine).cloned() else {
            self.append_async(
                id,
                Event::ExecutionFailed {
                    error: "States.Runtime".into(),
                    cause: format!("state machine {state_machine:?} is no longer defined"),
                },
            )
            .await?;
            return Ok(());
        };
        if let Some(last) = events.last()
            && events.len() > 1
        {
            let event = Event::ExecutionResumed {
                gap_seconds: now_seconds() - last.timestamp,
                after_event: last.id,
            };
            self.append_async(id, event).await?;
        }
        let run = Run {
            engine: self.clone(),
            id: id.to_string(),
            machine_name: state_machine,
            input,
            started,
            trace_id,
            segment_id,
            sampled,
            replay: Replay::from_events(&events),
            visits: Mutex::new(HashMap::new()),
        };
        let parent = parent_id;
        let rule = sampling_rule;
        run.emit_segment(None, parent.as_deref(), rule.as_deref(), None);

        let body = run.machine(&machine, run.input.clone(), String::new());
        let outcome = match machine.timeout_seconds {
            Some(limit) => {
                let remaining = (run.started + limit as f64 - now_seconds()).max(0.0);
                match tokio::time::timeout(seconds(remaining), body).await {
                    Ok(outcome) => outcome.map_err(Some),
                    Err(_) => Err(None),
                }
            }
            None => body.await.map_err(Some),
        };
        let end = match &outcome {
            Ok(output) => Event::ExecutionSucceeded {
                output: output.clone(),
            },
            Err(Some(failure)) => Event::ExecutionFailed {
                error: failure.error.clone(),
                cause: failure.cause.clone(),
            },
            Err(None) => Event::ExecutionTimedOut {
                error: "States.Timeout".into(),
                cause: "the execution ran longer than its TimeoutSeconds".into(),
            },
        };
        self.append_async(id, end).await?;
        let failure = match &outcome {
            Ok(_) => None,
            Err(Some(failure)) => Some(failure.clone()),
            Err(None) => Some(TaskError::new("States.Timeout", "execution timed out")),
        };
        run.emit_segment(
            Some(now_seconds()),
            parent.as_deref(),
            rule.as_deref(),
            failure.as_ref(),
        );
        Ok(())
    }

    /// [`Self::append`] on the blocking pool: appends fsync.
    async fn append_async(&self, id: &str, event: Event) -> Result<Recorded, EngineError> {
        let (engine, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || engine.append(&id, event))
            .await
            .map_err(|error| EngineError::Storage(error.to_string()))?
    }

    /// [`Self::history`] on the blocking pool (it reads a file).
    pub async fn history_async(&self, id: &str) -> Result<Vec<Recorded>, EngineError> {
        let (engine, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || engine.history(&id))
            .await
            .map_err(|error| EngineError::Storage(error.to_string()))?
    }

    /// [`Self::describe`] on the blocking pool.
    pub async fn describe_async(&self, id: &str) -> Result<Description, EngineError> {
        let (engine, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || engine.describe(&id))
            .await
            .map_err(|error| EngineError::Storage(error.to_string()))?
    }

    /// [`Self::list`] on the blocking pool (it reads every history).
    pub async fn list_async(&self) -> Vec<Description> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.list())
            .await
            .unwrap_or_default()
    }

    fn append(&self, id: &str, event: Event) -> Result<Recorded, EngineError> {
        Ok(self.inner.store.append(id, event)?)
    }
}

fn kind_of(state: &State) -> StateKind {
    match state {
        State::Task(_) => StateKind::Task,
        State::Choice(_) => StateKind::Choice,
        State::Wait(_) => StateKind::Wait,
        State::Parallel(_) => StateKind::Parallel,
        State::Map(_) => StateKind::Map,
        State::Pass(_) => StateKind::Pass,
        State::Succeed(_) => StateKind::Succeed,
        State::Fail(_) => StateKind::Fail,
    }
}

/// The Choice's next state: the first rule that holds, else `Default`.
fn choose(
    name: &str,
    choice: &ChoiceState,
    raw: Value,
) -> Result<(Value, Option<String>), Failure> {
    let effective = paths::filter(&raw, choice.input_path.as_ref()).map_err(runtime_error)?;
    let next = choice
        .rules
        .iter()
        .find(|(rule, _)| rule.holds(&effective))
        .map(|(_, next)| next.clone())
        .or_else(|| choice.default.clone())
        .ok_or_else(|| {
            TaskError::new(
                "States.NoChoiceMatched",
                format!("no rule of {name:?} matched"),
            )
        })?;
    let output = paths::filter(&effective, choice.output_path.as_ref()).map_err(runtime_error)?;
    Ok((output, Some(next)))
}

/// When a Wait entered now ends (epoch seconds): `Seconds`,
/// `SecondsPath`, `Timestamp` or `TimestampPath`.
fn wait_until(wait: &WaitState, effective: &Value) -> Result<f64, Failure> {
    if let Some(seconds) = wait.seconds {
        return Ok(now_seconds() + seconds);
    }
    if let Some(path) = &wait.seconds_path {
        let seconds = paths::select(effective, path)
            .map_err(runtime_error)?
            .as_f64()
            .ok_or_else(|| runtime_error(format!("{path} is not a number of seconds")))?;
        return Ok(now_seconds() + seconds);
    }
    let text = match (&wait.timestamp, &wait.timestamp_path) {
        (Some(text), _) => Value::String(text.clone()),
        (None, Some(path)) => paths::select(effective, path).map_err(runtime_error)?,
        _ => Value::Null,
    };
    let at = text
        .as_str()
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
        .ok_or_else(|| runtime_error(format!("{text} is not an RFC 3339 timestamp")))?;
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or(0.0))
}

impl Run {
    /// Appends to the history (fsynced) on the blocking pool.
    async fn record(&self, event: Event) -> Result<(), Failure> {
        self.engine
            .append_async(&self.id, event)
            .await
            .map(|_| ())
            .map_err(runtime_error)
    }

    /// The execution's segment: in progress (`end` None) or complete.
    fn emit_segment(
        &self,
        end: Option<f64>,
        parent: Option<&str>,
        rule: Option<&str>,
        failure: Option<&Failure>,
    ) {
        if !self.sampled {
            return;
        }
        let mut segment = Document {
            name: self.machine_name.clone(),
            id: self.segment_id.clone(),
            start_time: self.started,
            end_time: end,
            origin: Some(ORIGIN.into()),
            ..Document::default()
        };
        segment.aws.insert("execution_arn".into(), json!(self.id));
        if let Some(failure) = failure {
            segment.add_exception(&failure.error, &failure.cause, false);
        }
        let top = TopLevel {
            trace_id: &self.trace_id,
            parent_id: parent,
            sampling_rule: rule,
            subsegment: false,
        };
        for document in segment.documents(&top, MAX_DOCUMENT_BYTES) {
            self.engine.sink().emit(document);
        }
    }

    /// A finished state subsegment, sent on its own (durable across a
    /// restart of the engine).
    fn emit_state(&self, document: Document) {
        if !self.sampled {
            return;
        }
        let top = TopLevel {
            trace_id: &self.trace_id,
            parent_id: Some(&self.segment_id),
            sampling_rule: None,
            subsegment: true,
        };
        for text in document.documents(&top, MAX_DOCUMENT_BYTES) {
            self.engine.sink().emit(text);
        }
    }

    fn context(&self, state: &str, item: Option<(usize, &Value)>) -> Value {
        let mut context = json!({
            "Execution": {"Id": self.id, "Name": self.id, "Input": self.input, "StartTime": self.started},
            "StateMachine": {"Name": self.machine_name},
            "State": {"Name": state},
        });
        if let Some((index, value)) = item {
            context["Map"] = json!({"Item": {"Index": index, "Value": value}});
        }
        context
    }

    fn machine<'a>(&'a self, machine: &'a Machine, input: Value, scope: String) -> Step<'a, Value> {
        Box::pin(async move {
            let mut current = machine.start_at.clone();
            let mut input = input;
            loop {
                let state = machine
                    .states
                    .get(&current)
                    .ok_or_else(|| runtime_error(format!("no state {current:?}")))?;
                let visit = {
                    let mut visits = self.visits.lock();
                    let count = visits.entry(format!("{scope}{current}")).or_insert(0);
                    *count += 1;
                    *count
                };
                let key = format!("{scope}{current}#{visit}");
                let (output, next) = match self.replay.exited.get(&key) {
                    Some((output, next)) => (output.clone(), next.clone()),
                    None => self.state(&current, state, &key, input).await?,
                };
                match next {
                    Some(next) => {
                        current = next;
                        input = output;
                    }
                    None => return Ok(output),
                }
            }
        })
    }

    /// Runs one state: its output and next state (`None` at the end).
    async fn state(
        &self,
        name: &str,
        state: &State,
        key: &str,
        raw: Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let kind = kind_of(state);
        let entered = now_seconds();
        self.record(Event::StateEntered(StateEntered {
            event_type: StateType {
                kind,
                edge: Edge::Entered,
            },
            key: key.to_string(),
            state: name.to_string(),
            input: raw.clone(),
        }))
        .await?;
        let mut document = Document::new(name, entered);
        document
            .annotations
            .insert("state_type".into(), json!(kind.as_str()));
        let outcome = self.state_body(name, state, key, raw, &mut document).await;
        document.end_time = Some(now_seconds());
        match &outcome {
            Ok((output, next)) => {
                self.record(Event::StateExited(StateExited {
                    event_type: StateType {
                        kind,
                        edge: Edge::Exited,
                    },
                    key: key.to_string(),
                    state: name.to_string(),
                    output: output.clone(),
                    next: next.clone(),
                }))
                .await?;
            }
            Err(failure) => {
                document.add_exception(&failure.error, &failure.cause, false);
            }
        }
        self.emit_state(document);
        outcome
    }

    /// What a state does, by kind: its output and next state.
    async fn state_body(
        &self,
        name: &str,
        state: &State,
        key: &str,
        raw: Value,
        document: &mut Document,
    ) -> Result<(Value, Option<String>), Failure> {
        match state {
            State::Pass(pass) => self.pass(name, pass, raw),
            State::Succeed(succeed) => {
                let effective =
                    paths::filter(&raw, succeed.input_path.as_ref()).map_err(runtime_error)?;
                let output = paths::filter(&effective, succeed.output_path.as_ref())
                    .map_err(runtime_error)?;
                Ok((output, None))
            }
            State::Fail(fail) => Err(TaskError::new(
                fail.error.as_deref().unwrap_or("States.Fail"),
                fail.cause.clone().unwrap_or_default(),
            )),
            State::Choice(choice) => choose(name, choice, raw),
            State::Wait(wait) => self.wait(wait, key, raw).await,
            State::Task(task) => {
                let parameters = self.parameters(name, &task.io, &raw)?;
                let result = self.task(name, task, key, parameters, document).await;
                self.finish(raw, result, &task.io, &task.catch, &task.flow)
            }
            State::Parallel(parallel) => self.parallel(name, parallel, key, raw).await,
            State::Map(map) => self.map(name, map, key, raw, document).await,
        }
    }

    /// The input a Task or Parallel hands on: InputPath, then Parameters.
    fn parameters(&self, name: &str, io: &Io, raw: &Value) -> Result<Value, Failure> {
        let effective = paths::filter(raw, io.input_path.as_ref()).map_err(runtime_error)?;
        match &io.parameters {
            Some(parameters) => paths::template(parameters, &effective, &self.context(name, None))
                .map_err(runtime_error),
            None => Ok(effective),
        }
    }

    fn pass(
        &self,
        name: &str,
        pass: &PassState,
        raw: Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let effective = paths::filter(&raw, pass.io.input_path.as_ref()).map_err(runtime_error)?;
        let result = match (&pass.result, &pass.io.parameters) {
            (Some(result), _) => result.clone(),
            (None, Some(parameters)) => {
                paths::template(parameters, &effective, &self.context(name, None))
                    .map_err(runtime_error)?
            }
            (None, None) => effective,
        };
        let merged =
            paths::merge(&raw, result, pass.io.result_path.as_ref()).map_err(runtime_error)?;
        let output = paths::filter(&merged, pass.io.output_path.as_ref()).map_err(runtime_error)?;
        Ok((output, pass.flow.next.clone()))
    }

    /// Sleeps until the Wait's end, recorded before sleeping so that a
    /// restarted engine waits only for what is left.
    async fn wait(
        &self,
        wait: &WaitState,
        key: &str,
        raw: Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let effective = paths::filter(&raw, wait.input_path.as_ref()).map_err(runtime_error)?;
        let until = match self.replay.wait_until.get(key) {
            Some(until) => *until,
            None => {
                let until = wait_until(wait, &effective)?;
                self.record(Event::WaitStateStarted {
                    key: key.to_string(),
                    until,
                })
                .await?;
                until
            }
        };
        self.engine
            .inner
            .clock
            .sleep(seconds(until - now_seconds()))
            .await;
        let output = paths::filter(&effective, wait.output_path.as_ref()).map_err(runtime_error)?;
        Ok((output, wait.flow.next.clone()))
    }

    /// Runs every branch on the same input; the output is their outputs in
    /// branch order.
    async fn parallel(
        &self,
        name: &str,
        parallel: &ParallelState,
        key: &str,
        raw: Value,
    ) -> Result<(Value, Option<String>), Failure> {
        let branch_input = self.parameters(name, &parallel.io, &raw)?;
        let result = self
            .with_retry(&parallel.retry, || {
                let runs = parallel.branches.iter().enumerate().map(|(index, branch)| {
                    self.machine(branch, branch_input.clone(), format!("{key}[{index}]/"))
                });
                Box::pin(async move { futures::future::try_join_all(runs).await.map(Value::Array) })
            })
            .await;
        self.finish(raw, result, &parallel.io, &parallel.catch, &parallel.flow)
    }

    /// Runs the iterator once per item, at most `MaxConcurrency` at a time;
    /// the output is their outputs in item order.
    async fn map(
        &self,
        name: &str,
        map: &MapState,
        key: &str,
        raw: Value,
        document: &mut Document,
    ) -> Result<(Value, Option<String>), Failure> {
        let effective = paths::filter(&raw, map.io.input_path.as_ref()).map_err(runtime_error)?;
        let items = paths::select(&effective, map.items_path.as_deref().unwrap_or("$"))
            .map_err(runtime_error)?;
        let items = items
            .as_array()
            .cloned()
            .ok_or_else(|| runtime_error(format!("the items of Map {name:?} are not an array")))?;
        let iterator = map
            .iterator
            .as_ref()
            .ok_or_else(|| runtime_error("Map without Iterator"))?;
        // 0 means "as many as possible", which Step Functions' inline Map
        // runs as 40 at a time: an input of a million items must not put a
        // million iterations in flight.
        let limit = match map.max_concurrency {
            0 => MAP_DEFAULT_CONCURRENCY,
            limit => limit,
        };
        document
            .annotations
            .insert("items".into(), json!(items.len()));
        let result = self
            .with_retry(&map.retry, || {
                let inputs: Vec<Result<Value, Failure>> = items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        match map.item_selector.as_ref().or(map.io.parameters.as_ref()) {
                            Some(selector) => paths::template(
                                selector,
                                &effective,
                                &self.context(name, Some((index, item))),
                            )
                            .map_err(runtime_error),
                            None => Ok(item.clone()),
                        }
                    })
                    .collect();
                Box::pin(async move {
                    futures::stream::iter(inputs.into_iter().enumerate())
                        .map(|(index, input)| async move {
                            self.machine(iterator, input?, format!("{key}[{index}]/"))
                                .await
                        })
                        .buffered(limit)
                        .try_collect::<Vec<Value>>()
                        .await
                        .map(Value::Array)
                })
            })
            .await;
        self.finish(raw, result, &map.io, &map.catch, &map.flow)
    }

    /// ResultSelector, ResultPath, OutputPath on success; Catch on failure.
    fn finish(
        &self,
        raw: Value,
        result: Result<Value, Failure>,
        io: &Io,
        catch: &[Catcher],
        flow: &Flow,
    ) -> Result<(Value, Option<String>), Failure> {
        match result {
            Ok(result) => {
                let selected = match &io.result_selector {
                    Some(selector) => {
                        paths::template(selector, &result, &Value::Null).map_err(runtime_error)?
                    }
                    None => result,
                };
                let merged =
                    paths::merge(&raw, selected, io.result_path.as_ref()).map_err(runtime_error)?;
                let output =
                    paths::filter(&merged, io.output_path.as_ref()).map_err(runtime_error)?;
                Ok((output, flow.next.clone()))
            }
            Err(failure) => {
                let Some(catcher) = catch
                    .iter()
                    .find(|catcher| matches(&catcher.error_equals, &failure.error))
                else {
                    return Err(failure);
                };
                let error_output = json!({"Error": failure.error, "Cause": failure.cause});
                let merged = paths::merge(&raw, error_output, catcher.result_path.as_ref())
                    .map_err(runtime_error)?;
                Ok((merged, Some(catcher.next.clone())))
            }
        }
    }

    /// Runs `attempt` until it succeeds or no retrier allows another try.
    async fn with_retry<'a>(
        &'a self,
        retriers: &'a [Retrier],
        attempt: impl Fn() -> Step<'a, Value>,
    ) -> Result<Value, Failure> {
        let mut used = vec![0u32; retriers.len()];
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) => {
                    let Some(index) = retriers
                        .iter()
                        .position(|r| matches(&r.error_equals, &failure.error))
                    else {
                        return Err(failure);
                    };
                    if used[index] >= retriers[index].max_attempts {
                        return Err(failure);
                    }
                    self.engine
                        .inner
                        .clock
                        .sleep(backoff(&retriers[index], used[index]))
                        .await;
                    used[index] += 1;
                }
            }
        }
    }

    /// A Task's attempts, recorded; replayed ones are not run again.
    async fn task(
        &self,
        name: &str,
        task: &TaskState,
        key: &str,
        input: Value,
        document: &mut Document,
    ) -> Result<Value, Failure> {
        if let Some(output) = self.replay.succeeded.get(key) {
            return Ok(output.clone());
        }
        let resource = task
            .target()
            .ok_or_else(|| runtime_error(format!("{name}: bad Resource")))?;
        let recorded = self.replay.failures.get(key).cloned().unwrap_or_default();
        let mut used = vec![0u32; task.retry.len()];
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let replayed = recorded.get(attempt as usize - 1).cloned();
            let outcome = match &replayed {
                Some(failure) => Err(failure.clone()),
                None => {
                    self.attempt(name, task, key, &resource, input.clone(), attempt, document)
                        .await
                }
            };
            let failure = match outcome {
                Ok(output) => return Ok(output),
                Err(failure) => failure,
            };
            let Some(index) = task
                .retry
                .iter()
                .position(|r| matches(&r.error_equals, &failure.error))
            else {
                return Err(failure);
            };
            if used[index] >= task.retry[index].max_attempts {
                return Err(failure);
            }
            let delay = backoff(&task.retry[index], used[index]);
            used[index] += 1;
            if replayed.is_none() {
                self.engine.inner.clock.sleep(delay).await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        name: &str,
        task: &TaskState,
        key: &str,
        resource: &Resource,
        input: Value,
        attempt: u32,
        document: &mut Document,
    ) -> Result<Value, Failure> {
        self.record(Event::TaskScheduled {
            key: key.to_string(),
            state: name.to_string(),
            resource: task.resource.clone(),
            attempt,
        })
        .await?;
        let mut call = match resource {
            Resource::Function(function) => {
                let mut call = Document::new("Lambda", now_seconds());
                call.namespace = Some("aws");
                call.aws.insert("operation".into(), json!("Invoke"));
                call.aws.insert("function_name".into(), json!(function));
                call
            }
            Resource::Http(url) => {
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|url| url.host_str().map(str::to_string))
                    .unwrap_or_else(|| "http".into());
                let mut call = Document::new(&host, now_seconds());
                call.namespace = Some("remote");
                call.http = Some(Http {
                    method: Some("POST".into()),
                    url: Some(url.clone()),
                    traced: true,
                    ..Http::default()
                });
                call
            }
        };
        call.annotations.insert("attempt".into(), json!(attempt));
        let header = TraceHeader::new(
            self.trace_id.clone(),
            Some(call.id.clone()),
            Some(if self.sampled {
                SampledFlag::Sampled
            } else {
                SampledFlag::NotSampled
            }),
        );
        let run = self.engine.inner.tasks.run(resource, input, Some(header));
        let outcome = match task.timeout_seconds {
            Some(limit) => match tokio::time::timeout(seconds(limit), run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(TaskError::new(
                    "States.Timeout",
                    format!("the task ran longer than {limit} s"),
                )),
            },
            None => run.await,
        };
        call.end_time = Some(now_seconds());
        match &outcome {
            Ok(output) => {
                self.record(Event::TaskSucceeded {
                    key: key.to_string(),
                    state: name.to_string(),
                    output: output.clone(),
                })
                .await?;
            }
            Err(failure) => {
                if failure.error.contains("TooManyRequests") {
                    call.record_status(429);
                }
                call.add_exception(&failure.error, &failure.cause, true);
                self.record(Event::TaskFailed {
                    key: key.to_string(),
                    state: name.to_string(),
                    attempt,
                    error: failure.error.clone(),
                    cause: failure.cause.clone(),
                })
                .await?;
            }
        }
        document.subsegments.push(call);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrier(jitter: Option<&str>) -> Retrier {
        Retrier {
            error_equals: vec!["States.ALL".into()],
            interval_seconds: 1.0,
            max_attempts: 5,
            backoff_rate: 2.0,
            max_delay_seconds: Some(6.0),
            jitter_strategy: jitter.map(str::to_string),
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let plain = retrier(None);
        let delays: Vec<f64> = (0..5)
            .map(|retry| backoff(&plain, retry).as_secs_f64())
            .collect();
        assert_eq!(delays, [1.0, 2.0, 4.0, 6.0, 6.0]);
        let jittered = retrier(Some("FULL"));
        for retry in 0..5 {
            for _ in 0..50 {
                let delay = backoff(&jittered, retry).as_secs_f64();
                assert!(
                    (0.0..=delays[retry as usize]).contains(&delay),
                    "{retry}: {delay}"
                );
            }
        }
        // Error matchers: States.ALL and States.TaskFailed spare States.Runtime;
        // States.TaskFailed spares States.Timeout.
        let all = ["States.ALL".to_string()];
        let failed = ["States.TaskFailed".to_string()];
        assert!(matches(&all, "PaymentDeclined") && matches(&all, "States.Timeout"));
        assert!(!matches(&all, "States.Runtime"));
        assert!(matches(&failed, "PaymentDeclined") && !matches(&failed, "States.Timeout"));
        assert!(matches(&["States.Timeout".to_string()], "States.Timeout"));
    }
}
