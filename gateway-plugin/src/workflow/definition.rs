//! State machine definitions modelled on Amazon States Language, and their
//! validation: every error names the state and the rule.
//!
//! Supported: `Task` (a function of the runtime, `function:<name>` or a
//! Lambda ARN, or an HTTP endpoint `http(s)://...` that receives the input
//! as a JSON POST), `Choice`, `Wait`, `Parallel`, `Map` (`Iterator` or
//! `ItemProcessor`, `ItemsPath`, `MaxConcurrency`), `Pass`, `Succeed`,
//! `Fail`; `Retry` and `Catch`; `InputPath`, `Parameters`,
//! `ResultSelector`, `ResultPath`, `OutputPath`; `TimeoutSeconds` per task
//! and per machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Deserialize;
use serde_json::Value;

use super::choice::{Rule, parse_rule};
use super::paths;

/// `Option<Option<T>>` that tells an absent key (`None`) from JSON null
/// (`Some(None)`), as ASL's paths need.
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A state machine (or a Parallel branch, or a Map's item processor).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Machine {
    #[serde(default)]
    pub comment: Option<String>,
    pub start_at: String,
    pub states: BTreeMap<String, State>,
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// Input and output processing fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Io {
    #[serde(default, deserialize_with = "double_option")]
    pub input_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub output_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub result_path: Option<Option<String>>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub result_selector: Option<Value>,
}

/// `Next` or `End`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Flow {
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub end: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Retrier {
    pub error_equals: Vec<String>,
    #[serde(default = "one")]
    pub interval_seconds: f64,
    #[serde(default = "three")]
    pub max_attempts: u32,
    #[serde(default = "two")]
    pub backoff_rate: f64,
    #[serde(default)]
    pub max_delay_seconds: Option<f64>,
    /// `FULL` or `NONE`.
    #[serde(default)]
    pub jitter_strategy: Option<String>,
}

fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Catcher {
    pub error_equals: Vec<String>,
    pub next: String,
    #[serde(default, deserialize_with = "double_option")]
    pub result_path: Option<Option<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskState {
    pub resource: String,
    #[serde(flatten)]
    pub io: Io,
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(default)]
    pub retry: Vec<Retrier>,
    #[serde(default)]
    pub catch: Vec<Catcher>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChoiceState {
    pub choices: Vec<Value>,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub input_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub output_path: Option<Option<String>>,
    /// Parsed from `choices` by validation.
    #[serde(skip)]
    pub rules: Vec<(Rule, String)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitState {
    #[serde(default)]
    pub seconds: Option<f64>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub seconds_path: Option<String>,
    #[serde(default)]
    pub timestamp_path: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub input_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub output_path: Option<Option<String>>,
    #[serde(flatten)]
    pub flow: Flow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParallelState {
    pub branches: Vec<Machine>,
    #[serde(flatten)]
    pub io: Io,
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(default)]
    pub retry: Vec<Retrier>,
    #[serde(default)]
    pub catch: Vec<Catcher>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapState {
    #[serde(default, alias = "ItemProcessor")]
    pub iterator: Option<Machine>,
    #[serde(default)]
    pub items_path: Option<String>,
    /// 0: no limit.
    #[serde(default)]
    pub max_concurrency: usize,
    #[serde(default)]
    pub item_selector: Option<Value>,
    #[serde(flatten)]
    pub io: Io,
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(default)]
    pub retry: Vec<Retrier>,
    #[serde(default)]
    pub catch: Vec<Catcher>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PassState {
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(flatten)]
    pub io: Io,
    #[serde(flatten)]
    pub flow: Flow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SucceedState {
    #[serde(default, deserialize_with = "double_option")]
    pub input_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub output_path: Option<Option<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailState {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
}

/// One state.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "Type")]
pub enum State {
    Task(TaskState),
    Choice(ChoiceState),
    Wait(WaitState),
    Parallel(ParallelState),
    Map(MapState),
    Pass(PassState),
    Succeed(SucceedState),
    Fail(FailState),
}

/// What a Task calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Function(String),
    Http(String),
}

impl TaskState {
    pub fn target(&self) -> Option<Resource> {
        let resource = self.resource.as_str();
        if resource.starts_with("http://") || resource.starts_with("https://") {
            return Some(Resource::Http(resource.to_string()));
        }
        let name = resource.rsplit_once("function:").map(|(_, name)| name)?;
        let name = name.split(':').next().unwrap_or(name);
        (!name.is_empty()).then(|| Resource::Function(name.to_string()))
    }
}

impl State {
    /// The states this one may go to.
    fn successors(&self) -> Vec<&str> {
        let mut out = Vec::new();
        fn flow_next(flow: &Flow) -> Option<&str> {
            flow.next.as_deref()
        }
        match self {
            Self::Task(task) => {
                out.extend(flow_next(&task.flow));
                out.extend(task.catch.iter().map(|c| c.next.as_str()));
            }
            Self::Parallel(parallel) => {
                out.extend(flow_next(&parallel.flow));
                out.extend(parallel.catch.iter().map(|c| c.next.as_str()));
            }
            Self::Map(map) => {
                out.extend(flow_next(&map.flow));
                out.extend(map.catch.iter().map(|c| c.next.as_str()));
            }
            Self::Wait(wait) => out.extend(flow_next(&wait.flow)),
            Self::Pass(pass) => out.extend(flow_next(&pass.flow)),
            Self::Choice(choice) => {
                out.extend(choice.rules.iter().map(|(_, next)| next.as_str()));
                out.extend(choice.default.as_deref());
            }
            Self::Succeed(_) | Self::Fail(_) => {}
        }
        out
    }
}

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError(pub Vec<String>);

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid state machine definition: {}", self.0.join("; "))
    }
}

impl std::error::Error for DefinitionError {}

/// Parses and validates a definition.
pub fn parse(text: &str) -> Result<Machine, DefinitionError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| DefinitionError(vec![format!("not JSON: {error}")]))?;
    from_value(value)
}

/// Validates a definition given as JSON.
pub fn from_value(value: Value) -> Result<Machine, DefinitionError> {
    let mut machine: Machine =
        serde_json::from_value(value).map_err(|error| DefinitionError(vec![error.to_string()]))?;
    let mut errors = Vec::new();
    validate(&mut machine, "", &mut errors);
    if errors.is_empty() {
        Ok(machine)
    } else {
        Err(DefinitionError(errors))
    }
}

fn check_path(errors: &mut Vec<String>, state: &str, field: &str, path: Option<&str>) {
    if let Some(path) = path
        && let Err(error) = paths::validate(path)
    {
        errors.push(format!("state {state:?}: {field}: {error}"));
    }
}

fn check_io(errors: &mut Vec<String>, state: &str, io: &Io) {
    check_path(
        errors,
        state,
        "InputPath",
        io.input_path.clone().flatten().as_deref(),
    );
    check_path(
        errors,
        state,
        "OutputPath",
        io.output_path.clone().flatten().as_deref(),
    );
    check_path(
        errors,
        state,
        "ResultPath",
        io.result_path.clone().flatten().as_deref(),
    );
}

fn check_flow(errors: &mut Vec<String>, state: &str, flow: &Flow) {
    match (&flow.next, flow.end) {
        (None, false) => errors.push(format!("state {state:?} needs Next or \"End\": true")),
        (Some(_), true) => errors.push(format!("state {state:?} has both Next and End")),
        _ => {}
    }
}

fn check_retry(errors: &mut Vec<String>, state: &str, retry: &[Retrier], catch: &[Catcher]) {
    for (index, retrier) in retry.iter().enumerate() {
        if retrier.error_equals.is_empty() {
            errors.push(format!(
                "state {state:?}: Retry[{index}] has an empty ErrorEquals"
            ));
        }
        if retrier.error_equals.iter().any(|e| e == "States.ALL")
            && (retrier.error_equals.len() > 1 || index + 1 != retry.len())
        {
            errors.push(format!(
                "state {state:?}: Retry[{index}]: States.ALL must be alone and in the last retrier"
            ));
        }
        if retrier.backoff_rate < 1.0 || retrier.interval_seconds < 0.0 {
            errors.push(format!(
                "state {state:?}: Retry[{index}]: BackoffRate must be at least 1 and IntervalSeconds not negative"
            ));
        }
        if let Some(jitter) = &retrier.jitter_strategy
            && jitter != "FULL"
            && jitter != "NONE"
        {
            errors.push(format!(
                "state {state:?}: Retry[{index}]: JitterStrategy must be FULL or NONE"
            ));
        }
    }
    for (index, catcher) in catch.iter().enumerate() {
        if catcher.error_equals.is_empty() {
            errors.push(format!(
                "state {state:?}: Catch[{index}] has an empty ErrorEquals"
            ));
        }
        if catcher.error_equals.iter().any(|e| e == "States.ALL")
            && (catcher.error_equals.len() > 1 || index + 1 != catch.len())
        {
            errors.push(format!(
                "state {state:?}: Catch[{index}]: States.ALL must be alone and in the last catcher"
            ));
        }
        check_path(
            errors,
            state,
            "Catch ResultPath",
            catcher.result_path.clone().flatten().as_deref(),
        );
    }
}

fn validate(machine: &mut Machine, scope: &str, errors: &mut Vec<String>) {
    let names: BTreeSet<String> = machine.states.keys().cloned().collect();
    if !names.contains(&machine.start_at) {
        errors.push(format!(
            "{scope}StartAt names {:?}, which is not a state",
            machine.start_at
        ));
    }
    for (name, state) in machine.states.iter_mut() {
        let label = format!("{scope}{name}");
        match state {
            State::Task(task) => {
                if task.target().is_none() {
                    errors.push(format!(
                        "state {label:?}: Resource {:?} is not function:<name>, a Lambda ARN or an http(s) URL",
                        task.resource
                    ));
                }
                check_io(errors, &label, &task.io);
                check_flow(errors, &label, &task.flow);
                check_retry(errors, &label, &task.retry, &task.catch);
                if task.timeout_seconds.is_some_and(|t| t <= 0.0) {
                    errors.push(format!("state {label:?}: TimeoutSeconds must be positive"));
                }
            }
            State::Choice(choice) => {
                if choice.choices.is_empty() {
                    errors.push(format!(
                        "state {label:?}: a Choice needs at least one rule in Choices"
                    ));
                }
                choice.rules.clear();
                for (index, rule) in choice.choices.iter().enumerate() {
                    let next = rule.get("Next").and_then(Value::as_str);
                    match (parse_rule(rule), next) {
                        (Ok(parsed), Some(next)) => choice.rules.push((parsed, next.to_string())),
                        (Ok(_), None) => {
                            errors.push(format!("state {label:?}: Choices[{index}] needs Next"))
                        }
                        (Err(error), _) => {
                            errors.push(format!("state {label:?}: Choices[{index}]: {error}"))
                        }
                    }
                }
                check_path(
                    errors,
                    &label,
                    "InputPath",
                    choice.input_path.clone().flatten().as_deref(),
                );
            }
            State::Wait(wait) => {
                let given = [
                    wait.seconds.is_some(),
                    wait.timestamp.is_some(),
                    wait.seconds_path.is_some(),
                    wait.timestamp_path.is_some(),
                ]
                .iter()
                .filter(|given| **given)
                .count();
                if given != 1 {
                    errors.push(format!(
                        "state {label:?}: a Wait needs exactly one of Seconds, Timestamp, SecondsPath, TimestampPath"
                    ));
                }
                if let Some(timestamp) = &wait.timestamp
                    && humantime::parse_rfc3339_weak(timestamp).is_err()
                {
                    errors.push(format!(
                        "state {label:?}: Timestamp {timestamp:?} is not RFC 3339"
                    ));
                }
                check_flow(errors, &label, &wait.flow);
            }
            State::Parallel(parallel) => {
                if parallel.branches.is_empty() {
                    errors.push(format!("state {label:?}: a Parallel needs Branches"));
                }
                for (index, branch) in parallel.branches.iter_mut().enumerate() {
                    validate(branch, &format!("{label}.Branches[{index}]."), errors);
                }
                check_io(errors, &label, &parallel.io);
                check_flow(errors, &label, &parallel.flow);
                check_retry(errors, &label, &parallel.retry, &parallel.catch);
            }
            State::Map(map) => {
                match map.iterator.as_mut() {
                    Some(iterator) => validate(iterator, &format!("{label}.Iterator."), errors),
                    None => errors.push(format!(
                        "state {label:?}: a Map needs an Iterator or ItemProcessor"
                    )),
                }
                check_path(errors, &label, "ItemsPath", map.items_path.as_deref());
                check_io(errors, &label, &map.io);
                check_flow(errors, &label, &map.flow);
                check_retry(errors, &label, &map.retry, &map.catch);
            }
            State::Pass(pass) => {
                check_io(errors, &label, &pass.io);
                check_flow(errors, &label, &pass.flow);
            }
            State::Succeed(_) | State::Fail(_) => {}
        }
    }
    // Every target exists, and every state is reachable from StartAt.
    for (name, state) in &machine.states {
        for target in state.successors() {
            if !names.contains(target) {
                errors.push(format!(
                    "state {:?}: Next names {target:?}, which is not a state",
                    format!("{scope}{name}")
                ));
            }
        }
    }
    let mut reached = BTreeSet::new();
    let mut queue = VecDeque::from([machine.start_at.as_str()]);
    while let Some(name) = queue.pop_front() {
        if !reached.insert(name) {
            continue;
        }
        if let Some(state) = machine.states.get(name) {
            queue.extend(state.successors());
        }
    }
    for name in &names {
        if !reached.contains(name.as_str()) {
            errors.push(format!(
                "state {:?} is unreachable from StartAt",
                format!("{scope}{name}")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_full_definition_parses() {
        let definition = json!({
            "StartAt": "Check",
            "TimeoutSeconds": 60,
            "States": {
                "Check": {"Type": "Choice", "Choices": [
                    {"Variable": "$.amount", "NumericGreaterThan": 100, "Next": "Charge"}
                ], "Default": "Done"},
                "Charge": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:1:function:charge", "ResultPath": null,
                           "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2}],
                           "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed", "ResultPath": "$.error"}],
                           "Next": "Fanout"},
                "Fanout": {"Type": "Parallel", "Branches": [
                    {"StartAt": "Ship", "States": {"Ship": {"Type": "Task", "Resource": "http://ship/x", "End": true}}},
                    {"StartAt": "Notify", "States": {"Notify": {"Type": "Pass", "End": true}}}
                ], "Next": "Items"},
                "Items": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
                          "ItemProcessor": {"StartAt": "One", "States": {"One": {"Type": "Wait", "Seconds": 1, "End": true}}},
                          "Next": "Done"},
                "Done": {"Type": "Succeed"},
                "Failed": {"Type": "Fail", "Error": "Payment", "Cause": "declined"}
            }
        });
        let machine = from_value(definition).unwrap();
        let State::Task(task) = &machine.states["Charge"] else {
            panic!()
        };
        assert_eq!(task.target(), Some(Resource::Function("charge".into())));
        assert_eq!(task.io.result_path, Some(None), "null, not absent");
        let State::Choice(choice) = &machine.states["Check"] else {
            panic!()
        };
        assert_eq!(choice.rules.len(), 1);
    }

    #[test]
    fn validation_errors_name_the_state_and_rule() {
        let cases = [
            (
                json!({"StartAt": "Nope", "States": {"A": {"Type": "Succeed"}}}),
                "StartAt names \"Nope\"",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}),
                "Next names \"B\", which is not a state",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}),
                "state \"A\" needs Next or \"End\": true",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B", "End": true}, "B": {"Type": "Succeed"}}}),
                "both Next and End",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "B": {"Type": "Succeed"}}}),
                "state \"B\" is unreachable",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "s3:bucket", "End": true}}}),
                "Resource \"s3:bucket\"",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Wait", "End": true}}}),
                "exactly one of Seconds",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": []}}}),
                "at least one rule",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1}]}}}),
                "needs Next",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "Wobbles": 1, "Next": "A"}]}}}),
                "no comparison",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "function:f", "End": true,
                "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}]}}}),
                "States.ALL must be alone",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "InputPath": "foo", "End": true}}}),
                "InputPath",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Parallel", "Branches": [{"StartAt": "X", "States": {"Y": {"Type": "Succeed"}}}], "End": true}}}),
                "A.Branches[0].StartAt",
            ),
            (
                json!({"StartAt": "A", "States": {"A": {"Type": "Teleport"}}}),
                "unknown variant `Teleport`",
            ),
        ];
        for (definition, needle) in cases {
            let error = from_value(definition.clone()).unwrap_err().to_string();
            assert!(error.contains(needle), "{definition}: {error}");
        }
    }
}
