//! Parsing and validation of a state machine definition.
//!
//! Everything the local runner cannot execute faithfully is refused here, with the state
//! named, so that a definition which loads is one the runner executes with AWS's
//! semantics — rather than silently ignoring a field and diverging from the cloud.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::choice::{self, ChoiceRule};
use crate::error::{LoadError, names};
use crate::path::{Path, Root};
use crate::template::Template;

/// The suffix that turns a Task into a callback task (`$$.Task.Token`).
pub(crate) const WAIT_FOR_TASK_TOKEN: &str = ".waitForTaskToken";

/// AWS's limits for `IntervalSeconds`, `MaxAttempts` and `TimeoutSeconds`.
const MAX_SECONDS: u64 = 99_999_999;
/// AWS's upper bound for `MaxDelaySeconds` (exclusive 31622401).
const MAX_DELAY_SECONDS: u64 = 31_622_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    Next(String),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jitter {
    None,
    Full,
}

#[derive(Debug, Clone)]
pub(crate) struct Retrier {
    pub(crate) error_equals: Vec<String>,
    pub(crate) interval_seconds: u64,
    pub(crate) max_attempts: u64,
    pub(crate) backoff_rate: f64,
    pub(crate) max_delay_seconds: Option<u64>,
    pub(crate) jitter: Jitter,
}

#[derive(Debug, Clone)]
pub(crate) struct Catcher {
    pub(crate) error_equals: Vec<String>,
    pub(crate) next: String,
    /// `None` when the definition says `"ResultPath": null`.
    pub(crate) result_path: Option<Path>,
}

/// Whether `error` is handled by a retrier/catcher listing `error_equals`.
pub(crate) fn error_matches(error_equals: &[String], error: &str) -> bool {
    error_equals.iter().any(|name| match name.as_str() {
        names::ALL => true,
        // AWS: "acts as a wildcard that matches any known error name except States.Timeout".
        names::TASK_FAILED => error != names::TIMEOUT,
        other => other == error,
    })
}

#[derive(Debug, Clone)]
pub(crate) struct TaskState {
    pub(crate) resource: String,
    pub(crate) wait_for_token: bool,
    /// `None` for `null` (the task receives `{}`).
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    /// `None` for `null` (the result is discarded and the input passes through).
    pub(crate) result_path: Option<Path>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<Catcher>,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct PassState {
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
    pub(crate) parameters: Option<Template>,
    pub(crate) result: Option<Value>,
    pub(crate) result_path: Option<Path>,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct ChoiceState {
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
    pub(crate) choices: Vec<ChoiceRule>,
    pub(crate) default: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum WaitFor {
    Seconds(u64),
    SecondsPath(Path),
    Timestamp(DateTime<FixedOffset>),
    TimestampPath(Path),
}

#[derive(Debug, Clone)]
pub(crate) struct WaitState {
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
    pub(crate) wait: WaitFor,
    pub(crate) transition: Transition,
}

#[derive(Debug, Clone)]
pub(crate) struct SucceedState {
    pub(crate) input_path: Option<Path>,
    pub(crate) output_path: Option<Path>,
}

#[derive(Debug, Clone)]
pub(crate) enum TextSource {
    Literal(String),
    Path(Path),
}

#[derive(Debug, Clone)]
pub(crate) struct FailState {
    pub(crate) error: Option<TextSource>,
    pub(crate) cause: Option<TextSource>,
}

#[derive(Debug, Clone)]
pub(crate) enum State {
    Task(TaskState),
    Pass(PassState),
    Choice(ChoiceState),
    Wait(WaitState),
    Succeed(SucceedState),
    Fail(FailState),
}

impl State {
    /// Every state this one can hand control to.
    fn targets(&self) -> Vec<&str> {
        fn next(t: &Transition) -> Vec<&str> {
            match t {
                Transition::Next(n) => vec![n.as_str()],
                Transition::End => Vec::new(),
            }
        }
        match self {
            State::Task(t) => {
                let mut out = next(&t.transition);
                out.extend(t.catch.iter().map(|c| c.next.as_str()));
                out
            }
            State::Pass(p) => next(&p.transition),
            State::Wait(w) => next(&w.transition),
            State::Choice(c) => c
                .choices
                .iter()
                .map(|r| r.next.as_str())
                .chain(c.default.as_deref())
                .collect(),
            State::Succeed(_) | State::Fail(_) => Vec::new(),
        }
    }

    fn is_terminal(&self) -> bool {
        match self {
            State::Task(TaskState { transition, .. })
            | State::Pass(PassState { transition, .. })
            | State::Wait(WaitState { transition, .. }) => *transition == Transition::End,
            State::Succeed(_) | State::Fail(_) => true,
            State::Choice(_) => false,
        }
    }
}

/// A parsed, validated state machine definition (JSONPath query language).
#[derive(Debug, Clone)]
pub struct StateMachine {
    name: String,
    /// The machine's ARN, if the caller gives one (a local one otherwise).
    arn: Option<String>,
    start_at: String,
    /// In definition order, so listings (`state_names`, `task_resources`) read like the file.
    states: Vec<(String, State)>,
    index: HashMap<String, usize>,
}

impl StateMachine {
    /// Parses and validates a definition. `substitutions` replaces `${Name}` placeholders in
    /// every string value (SAM `DefinitionSubstitutions`) before validation; a placeholder
    /// without a substitution is an error, since it would otherwise surface much later as
    /// an unknown resource.
    pub fn from_json(
        definition: &str,
        substitutions: &HashMap<String, String>,
    ) -> Result<StateMachine, LoadError> {
        let mut root: Value = serde_json::from_str(definition)
            .map_err(|e| LoadError::machine(format!("definition is not valid JSON: {e}")))?;
        // `serde_json::Map` may be sorted; read the state names again to keep their order.
        let order: StateOrder = serde_json::from_str(definition)
            .map_err(|e| LoadError::machine(format!("definition is not valid JSON: {e}")))?;
        substitute(&mut root, substitutions)?;

        let top = root
            .as_object()
            .ok_or_else(|| LoadError::machine("definition must be a JSON object"))?;
        for key in top.keys() {
            match key.as_str() {
                "StartAt" | "States" | "Comment" | "Version" => {}
                "QueryLanguage" => check_query_language(top.get(key), None)?,
                other => {
                    return Err(LoadError::machine(format!(
                        "top-level field `{other}` is not supported by the local runner"
                    )));
                }
            }
        }
        let start_at = top
            .get("StartAt")
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::machine("`StartAt` must be a string"))?
            .to_owned();
        let states_map = top
            .get("States")
            .and_then(Value::as_object)
            .ok_or_else(|| LoadError::machine("`States` must be an object"))?;
        if states_map.is_empty() {
            return Err(LoadError::machine("`States` must not be empty"));
        }
        let mut seen = HashSet::new();
        for name in &order.names {
            if !seen.insert(name.as_str()) {
                return Err(LoadError::state(
                    name,
                    "state name is defined more than once",
                ));
            }
        }

        let mut states = Vec::with_capacity(states_map.len());
        for name in &order.names {
            let Some(value) = states_map.get(name) else {
                continue;
            };
            if name.is_empty() || name.chars().count() > 80 {
                return Err(LoadError::state(
                    name,
                    "state names must be 1 to 80 characters long",
                ));
            }
            states.push((name.clone(), parse_state(name, value)?));
        }
        let index = states
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i))
            .collect();
        let machine = StateMachine {
            name: "StateMachine".to_owned(),
            arn: None,
            start_at,
            states,
            index,
        };
        machine.validate()?;
        Ok(machine)
    }

    /// Names the machine; used in the `$$.StateMachine` and `$$.Execution.Id` ARNs.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> StateMachine {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the machine the ARN a service hosting it answers with, for
    /// `$$.StateMachine.Id` and, as Step Functions derives it,
    /// `$$.Execution.Id`. Without one the ARN is a local one,
    /// `arn:aws:states:local:000000000000:stateMachine:<name>`.
    #[must_use]
    pub fn with_arn(mut self, arn: impl Into<String>) -> StateMachine {
        self.arn = Some(arn.into());
        self
    }

    /// `$$.StateMachine.Id`.
    pub fn arn(&self) -> String {
        match &self.arn {
            Some(arn) => arn.clone(),
            None => format!(
                "arn:aws:states:local:000000000000:stateMachine:{}",
                self.name
            ),
        }
    }

    /// `$$.Execution.Id` of the execution named `execution_name`: the
    /// machine's ARN with `execution` for `stateMachine`, and the name.
    pub fn execution_arn(&self, execution_name: &str) -> String {
        format!(
            "{}:{execution_name}",
            self.arn().replacen(":stateMachine:", ":execution:", 1)
        )
    }

    pub fn start_at(&self) -> &str {
        &self.start_at
    }

    /// Every Task `Resource` (after substitution), in definition order, deduplicated.
    pub fn task_resources(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.states
            .iter()
            .filter_map(|(_, state)| match state {
                State::Task(task) => Some(task.resource.clone()),
                _ => None,
            })
            .filter(|resource| seen.insert(resource.clone()))
            .collect()
    }

    /// Every error name used in any `Retry` or `Catch` `ErrorEquals`.
    pub fn error_names(&self) -> BTreeSet<String> {
        self.states
            .iter()
            .filter_map(|(_, state)| match state {
                State::Task(task) => Some(task),
                _ => None,
            })
            .flat_map(|task| {
                task.retry
                    .iter()
                    .flat_map(|r| r.error_equals.iter())
                    .chain(task.catch.iter().flat_map(|c| c.error_equals.iter()))
                    .cloned()
            })
            .collect()
    }

    /// State names in definition order.
    pub fn state_names(&self) -> Vec<String> {
        self.states.iter().map(|(name, _)| name.clone()).collect()
    }

    pub(crate) fn state(&self, name: &str) -> Option<&State> {
        self.index.get(name).map(|&i| &self.states[i].1)
    }

    fn validate(&self) -> Result<(), LoadError> {
        if self.state(&self.start_at).is_none() {
            return Err(LoadError::machine(format!(
                "`StartAt` names `{}`, which is not a state",
                self.start_at
            )));
        }
        for (name, state) in &self.states {
            for target in state.targets() {
                if self.state(target).is_none() {
                    return Err(LoadError::state(
                        name,
                        format!("transition to `{target}`, which is not a state"),
                    ));
                }
            }
        }
        // AWS refuses definitions with unreachable states; so do we, as they are
        // almost always a typo in a `Next`.
        let mut reachable = HashSet::from([self.start_at.as_str()]);
        let mut stack = vec![self.start_at.as_str()];
        while let Some(name) = stack.pop() {
            if let Some(state) = self.state(name) {
                for target in state.targets() {
                    if reachable.insert(target) {
                        stack.push(target);
                    }
                }
            }
        }
        if let Some((name, _)) = self
            .states
            .iter()
            .find(|(n, _)| !reachable.contains(n.as_str()))
        {
            return Err(LoadError::state(
                name,
                "state is not reachable from `StartAt`",
            ));
        }
        if !self.states.iter().any(|(_, s)| s.is_terminal()) {
            return Err(LoadError::machine(
                "the state machine has no terminal state (`End: true`, Succeed or Fail)",
            ));
        }
        Ok(())
    }
}

/// Collects the keys of `States` in document order (and detects duplicates, which a
/// `serde_json::Map` would silently merge).
struct StateOrder {
    names: Vec<String>,
}

impl<'de> Deserialize<'de> for StateOrder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(keys)
            }
        }
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = StateOrder;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a state machine definition object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StateOrder, A::Error> {
                let mut names = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "States" {
                        names = map.next_value_seed(KeysSeed)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StateOrder { names })
            }
        }
        struct KeysSeed;
        impl<'de> serde::de::DeserializeSeed<'de> for KeysSeed {
            type Value = Vec<String>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
                d.deserialize_any(Keys)
            }
        }
        deserializer.deserialize_any(Top)
    }
}

fn substitute(value: &mut Value, substitutions: &HashMap<String, String>) -> Result<(), LoadError> {
    match value {
        Value::String(text) => {
            if text.contains("${") {
                *text = substitute_text(text, substitutions)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| substitute(v, substitutions)),
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|v| substitute(v, substitutions)),
        _ => Ok(()),
    }
}

fn substitute_text(
    text: &str,
    substitutions: &HashMap<String, String>,
) -> Result<String, LoadError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            LoadError::machine(format!("unterminated `${{` placeholder in `{text}`"))
        })?;
        let name = &after[..end];
        let replacement = substitutions.get(name).ok_or_else(|| {
            LoadError::machine(format!("no substitution was provided for `${{{name}}}`"))
        })?;
        out.push_str(replacement);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_query_language(value: Option<&Value>, state: Option<&str>) -> Result<(), LoadError> {
    let err = |msg: String| match state {
        Some(s) => LoadError::state(s, msg),
        None => LoadError::machine(msg),
    };
    match value {
        None => Ok(()),
        Some(Value::String(lang)) if lang == "JSONPath" => Ok(()),
        Some(Value::String(lang)) if lang == "JSONata" => Err(err(
            "`QueryLanguage: JSONata` is not supported by the local runner; use JSONPath"
                .to_owned(),
        )),
        Some(_) => Err(err("`QueryLanguage` must be \"JSONPath\"".to_owned())),
    }
}

const COMMON_FIELDS: &[&str] = &["Type", "Comment", "QueryLanguage"];

/// Typed access to one state's fields, producing errors that name the state.
struct Fields<'a> {
    state: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn err(&self, message: impl Into<String>) -> LoadError {
        LoadError::state(self.state, message)
    }

    fn only(&self, allowed: &[&str]) -> Result<(), LoadError> {
        for key in self.map.keys() {
            if !COMMON_FIELDS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                return Err(self.err(format!(
                    "field `{key}` is not supported by the local runner"
                )));
            }
        }
        check_query_language(self.map.get("QueryLanguage"), Some(self.state))?;
        match self.map.get("Comment") {
            None | Some(Value::String(_)) => Ok(()),
            Some(_) => Err(self.err("`Comment` must be a string")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, LoadError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(format!("`{key}` must be a string"))),
        }
    }

    fn path(&self, key: &str, text: &str, reference: bool) -> Result<Path, LoadError> {
        if text.starts_with("States.") {
            return Err(self.err(format!(
                "`{key}`: intrinsic functions are not supported by the local runner"
            )));
        }
        let path = Path::parse(text).map_err(|e| self.err(format!("`{key}`: {e}")))?;
        if reference && !path.is_reference() {
            return Err(self.err(format!("`{key}` must be a reference path, got `{text}`")));
        }
        Ok(path)
    }

    /// `InputPath`/`OutputPath`/`ResultPath`: absent means `$`, `null` means "none".
    fn io_path(&self, key: &str, reference: bool) -> Result<Option<Path>, LoadError> {
        match self.map.get(key) {
            None => Ok(Some(Path::root())),
            Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => self.path(key, text, reference).map(Some),
            Some(_) => Err(self.err(format!("`{key}` must be a path string or null"))),
        }
    }

    fn result_path(&self) -> Result<Option<Path>, LoadError> {
        let path = self.io_path("ResultPath", true)?;
        if path
            .as_ref()
            .is_some_and(|p| p.root_kind() == Root::Context)
        {
            return Err(self.err("`ResultPath` cannot write to the context object (`$$`)"));
        }
        Ok(path)
    }

    fn reference_path(&self, key: &str) -> Result<Option<Path>, LoadError> {
        self.string(key)?
            .map(|text| self.path(key, text, true))
            .transpose()
    }

    fn template(&self, key: &str) -> Result<Option<Template>, LoadError> {
        self.map
            .get(key)
            .map(|v| {
                if !v.is_object() {
                    return Err(self.err(format!("`{key}` must be an object")));
                }
                Template::compile(v).map_err(|e| self.err(format!("`{key}`: {e}")))
            })
            .transpose()
    }

    fn integer(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, LoadError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` must be an integer from {min} to {max}"))),
        }
    }

    fn transition(&self) -> Result<Transition, LoadError> {
        let next = self.string("Next")?;
        let end = match self.map.get("End") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(self.err("`End` must be a boolean")),
        };
        match (next, end) {
            (Some(next), false) => Ok(Transition::Next(next.to_owned())),
            (None, true) => Ok(Transition::End),
            (Some(_), true) => Err(self.err("a state cannot have both `Next` and `End: true`")),
            (None, false) => Err(self.err("a non-terminal state needs `Next` or `End: true`")),
        }
    }
}

fn parse_state(name: &str, value: &Value) -> Result<State, LoadError> {
    let map = value
        .as_object()
        .ok_or_else(|| LoadError::state(name, "a state must be a JSON object"))?;
    let f = Fields { state: name, map };
    let kind = f.string("Type")?.ok_or_else(|| f.err("missing `Type`"))?;
    match kind {
        "Task" => parse_task(&f).map(State::Task),
        "Pass" => {
            f.only(&[
                "InputPath",
                "OutputPath",
                "Parameters",
                "Result",
                "ResultPath",
                "Next",
                "End",
            ])?;
            let parameters = f.template("Parameters")?;
            reject_task_context(&f, parameters.as_ref(), "Parameters")?;
            Ok(State::Pass(PassState {
                input_path: f.io_path("InputPath", false)?,
                output_path: f.io_path("OutputPath", false)?,
                parameters,
                result: map.get("Result").cloned(),
                result_path: f.result_path()?,
                transition: f.transition()?,
            }))
        }
        "Choice" => {
            f.only(&["InputPath", "OutputPath", "Choices", "Default"])?;
            let choices = map
                .get("Choices")
                .and_then(Value::as_array)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| f.err("`Choices` must be a non-empty array"))?
                .iter()
                .map(|rule| ChoiceRule::parse(rule).map_err(|e| f.err(e)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(State::Choice(ChoiceState {
                input_path: f.io_path("InputPath", false)?,
                output_path: f.io_path("OutputPath", false)?,
                choices,
                default: f.string("Default")?.map(str::to_owned),
            }))
        }
        "Wait" => {
            f.only(&[
                "InputPath",
                "OutputPath",
                "Seconds",
                "SecondsPath",
                "Timestamp",
                "TimestampPath",
                "Next",
                "End",
            ])?;
            let mut waits = Vec::new();
            if let Some(seconds) = f.integer("Seconds", 0, MAX_SECONDS)? {
                waits.push(WaitFor::Seconds(seconds));
            }
            if let Some(path) = f.reference_path("SecondsPath")? {
                waits.push(WaitFor::SecondsPath(path));
            }
            if let Some(text) = f.string("Timestamp")? {
                let ts = choice::parse_timestamp(text).ok_or_else(|| {
                    f.err(format!("`Timestamp` `{text}` is not an RFC 3339 timestamp"))
                })?;
                waits.push(WaitFor::Timestamp(ts));
            }
            if let Some(path) = f.reference_path("TimestampPath")? {
                waits.push(WaitFor::TimestampPath(path));
            }
            let wait = match (waits.pop(), waits.is_empty()) {
                (Some(wait), true) => wait,
                _ => {
                    return Err(f.err(
                        "a Wait state needs exactly one of `Seconds`, `SecondsPath`, `Timestamp`, `TimestampPath`",
                    ));
                }
            };
            Ok(State::Wait(WaitState {
                input_path: f.io_path("InputPath", false)?,
                output_path: f.io_path("OutputPath", false)?,
                wait,
                transition: f.transition()?,
            }))
        }
        "Succeed" => {
            f.only(&["InputPath", "OutputPath"])?;
            Ok(State::Succeed(SucceedState {
                input_path: f.io_path("InputPath", false)?,
                output_path: f.io_path("OutputPath", false)?,
            }))
        }
        "Fail" => {
            f.only(&["Error", "ErrorPath", "Cause", "CausePath"])?;
            let text = |literal: &str, path: &str| -> Result<Option<TextSource>, LoadError> {
                match (f.string(literal)?, f.reference_path(path)?) {
                    (Some(_), Some(_)) => {
                        Err(f.err(format!("use `{literal}` or `{path}`, not both")))
                    }
                    (Some(s), None) => Ok(Some(TextSource::Literal(s.to_owned()))),
                    (None, Some(p)) => Ok(Some(TextSource::Path(p))),
                    (None, None) => Ok(None),
                }
            };
            Ok(State::Fail(FailState {
                error: text("Error", "ErrorPath")?,
                cause: text("Cause", "CausePath")?,
            }))
        }
        "Map" | "Parallel" => Err(f.err(format!(
            "state type `{kind}` is not supported by the local runner"
        ))),
        other => Err(f.err(format!("unknown state type `{other}`"))),
    }
}

fn reject_task_context(
    f: &Fields<'_>,
    template: Option<&Template>,
    key: &str,
) -> Result<(), LoadError> {
    if template.is_some_and(|t| t.paths().iter().any(|p| p.reads_task_context())) {
        return Err(f.err(format!(
            "`{key}` reads `$$.Task`, which only exists in a `{WAIT_FOR_TASK_TOKEN}` Task"
        )));
    }
    Ok(())
}

fn parse_task(f: &Fields<'_>) -> Result<TaskState, LoadError> {
    f.only(&[
        "Resource",
        "InputPath",
        "OutputPath",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "TimeoutSeconds",
        "Retry",
        "Catch",
        "Next",
        "End",
    ])?;
    let resource = f
        .string("Resource")?
        .ok_or_else(|| f.err("a Task needs a `Resource` string"))?
        .to_owned();
    let wait_for_token = resource.ends_with(WAIT_FOR_TASK_TOKEN);
    let parameters = f.template("Parameters")?;
    let result_selector = f.template("ResultSelector")?;
    if !wait_for_token {
        reject_task_context(f, parameters.as_ref(), "Parameters")?;
    }
    reject_task_context(f, result_selector.as_ref(), "ResultSelector")?;
    let retry = match f.map.get("Retry") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| parse_retrier(f, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(f.err("`Retry` must be an array")),
    };
    check_all_is_last(f, "Retry", retry.iter().map(|r| &r.error_equals))?;
    let catch = match f.map.get("Catch") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| parse_catcher(f, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(f.err("`Catch` must be an array")),
    };
    check_all_is_last(f, "Catch", catch.iter().map(|c| &c.error_equals))?;
    Ok(TaskState {
        resource,
        wait_for_token,
        input_path: f.io_path("InputPath", false)?,
        output_path: f.io_path("OutputPath", false)?,
        parameters,
        result_selector,
        result_path: f.result_path()?,
        timeout: f
            .integer("TimeoutSeconds", 1, MAX_SECONDS)?
            .map(Duration::from_secs),
        retry,
        catch,
        transition: f.transition()?,
    })
}

fn error_equals(
    f: &Fields<'_>,
    what: &str,
    map: &Map<String, Value>,
) -> Result<Vec<String>, LoadError> {
    let names = map
        .get("ErrorEquals")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| f.err(format!("each {what} needs a non-empty `ErrorEquals` array")))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| f.err(format!("{what} `ErrorEquals` entries must be strings")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for name in &names {
        if name.starts_with("States.") && !names::KNOWN.contains(&name.as_str()) {
            return Err(f.err(format!("{what} `ErrorEquals` names unknown error `{name}`")));
        }
    }
    Ok(names)
}

/// AWS: `States.ALL` "must appear alone in the ErrorEquals array and must appear in the
/// last retrier/catcher".
fn check_all_is_last<'a>(
    f: &Fields<'_>,
    field: &str,
    lists: impl ExactSizeIterator<Item = &'a Vec<String>>,
) -> Result<(), LoadError> {
    let count = lists.len();
    for (i, list) in lists.enumerate() {
        if list.iter().any(|n| n == names::ALL) && (list.len() != 1 || i + 1 != count) {
            return Err(f.err(format!(
                "in `{field}`, `States.ALL` must appear alone and in the last entry"
            )));
        }
    }
    Ok(())
}

fn parse_retrier(f: &Fields<'_>, value: &Value) -> Result<Retrier, LoadError> {
    let map = value
        .as_object()
        .ok_or_else(|| f.err("each retrier must be an object"))?;
    let sub = Fields {
        state: f.state,
        map,
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "ErrorEquals"
                | "IntervalSeconds"
                | "MaxAttempts"
                | "BackoffRate"
                | "MaxDelaySeconds"
                | "JitterStrategy"
                | "Comment"
        ) {
            return Err(f.err(format!(
                "retrier field `{key}` is not supported by the local runner"
            )));
        }
    }
    let backoff_rate = match map.get("BackoffRate") {
        None => 2.0,
        Some(v) => v
            .as_f64()
            .filter(|r| *r >= 1.0)
            .ok_or_else(|| f.err("`BackoffRate` must be a number of at least 1.0"))?,
    };
    let jitter = match sub.string("JitterStrategy")? {
        None | Some("NONE") => Jitter::None,
        Some("FULL") => Jitter::Full,
        Some(other) => {
            return Err(f.err(format!(
                "`JitterStrategy` must be FULL or NONE, got `{other}`"
            )));
        }
    };
    Ok(Retrier {
        error_equals: error_equals(f, "retrier", map)?,
        interval_seconds: sub.integer("IntervalSeconds", 1, MAX_SECONDS)?.unwrap_or(1),
        max_attempts: sub.integer("MaxAttempts", 0, MAX_SECONDS)?.unwrap_or(3),
        backoff_rate,
        max_delay_seconds: sub.integer("MaxDelaySeconds", 1, MAX_DELAY_SECONDS)?,
        jitter,
    })
}

fn parse_catcher(f: &Fields<'_>, value: &Value) -> Result<Catcher, LoadError> {
    let map = value
        .as_object()
        .ok_or_else(|| f.err("each catcher must be an object"))?;
    let sub = Fields {
        state: f.state,
        map,
    };
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "ErrorEquals" | "Next" | "ResultPath" | "Comment"
        ) {
            return Err(f.err(format!(
                "catcher field `{key}` is not supported by the local runner"
            )));
        }
    }
    Ok(Catcher {
        error_equals: error_equals(f, "catcher", map)?,
        next: sub
            .string("Next")?
            .ok_or_else(|| f.err("each catcher needs a `Next`"))?
            .to_owned(),
        result_path: sub.result_path()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_replaces_every_placeholder_in_a_string() {
        let subs = HashMap::from([
            ("A".to_owned(), "x".to_owned()),
            ("B".to_owned(), "y".to_owned()),
        ]);
        assert_eq!(
            substitute_text("arn:${A}:${B}:${A}", &subs).unwrap(),
            "arn:x:y:x"
        );
        assert!(substitute_text("arn:${C}", &subs).is_err());
        assert!(substitute_text("arn:${A", &subs).is_err());
    }

    #[test]
    fn task_failed_does_not_match_timeout() {
        let list = vec![names::TASK_FAILED.to_owned()];
        assert!(error_matches(&list, "OutOfStock"));
        assert!(!error_matches(&list, names::TIMEOUT));
        assert!(error_matches(&[names::ALL.to_owned()], names::TIMEOUT));
    }
}
