//! `template.yaml` read the way CloudFormation (with the SAM transform) would
//! read it, for the parts that make up the running shape: functions, their
//! environment, routes and limits; state machines; tables; the API's stage
//! and gateway responses.
//!
//! Intrinsic functions are resolved to local values: `Ref`, `Fn::GetAtt`,
//! `Fn::Sub` (both forms), `Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::And`,
//! `Fn::Or` and `Conditions`, parameters (a local value, else the default)
//! and pseudo-parameters. Physical names are CloudFormation's without the
//! random suffix: `<stack>-<LogicalId>` unless the template names the
//! resource. Any other intrinsic is an error naming where it is, so the
//! shape never runs with a value the template does not give.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value as Yaml;

/// Where a template value is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {at}: {message}")]
pub struct TemplateError {
    pub at: String,
    pub message: String,
}

fn invalid(at: &str, message: impl Into<String>) -> TemplateError {
    TemplateError {
        at: at.to_owned(),
        message: message.into(),
    }
}

/// What stands in for the deployment: the stack, account and region, and
/// local values of parameters (they win over the template's defaults).
#[derive(Debug, Clone)]
pub struct Deployment {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
    pub parameters: BTreeMap<String, String>,
}

/// SAM's defaults when neither the function nor `Globals` set them.
const SAM_DEFAULT_TIMEOUT_SECONDS: u64 = 3;
const SAM_DEFAULT_MEMORY_MB: u64 = 128;

/// `AWS::Serverless::Function`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub logical_id: String,
    /// The physical name (`FunctionName`, or `<stack>-<LogicalId>`).
    pub name: String,
    pub arn: String,
    /// `Metadata.BuildProperties.Binary`: the workspace binary to run.
    pub binary: String,
    /// `CodeUri` (its own, else `Globals.Function`'s): the folder `sam
    /// build` builds `binary` in.
    pub code_uri: Option<String>,
    /// `Globals.Function.Environment.Variables` merged with its own.
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub memory_mb: u64,
    /// `Handler` (`_HANDLER`; `bootstrap` for the custom runtime).
    pub handler: String,
    /// Its `Api` events.
    pub routes: Vec<Route>,
    /// Its `ScheduleV2` / `Schedule` events with a `rate(...)` expression.
    pub schedules: Vec<Schedule>,
    pub log_group: String,
}

/// One `Api` event: an HTTP method (`ANY` matches every method) and a path
/// template (`/a/{id}`, `/a/{proxy+}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
}

/// A scheduled invocation: every `every`, with `input` as the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub every: Duration,
    pub input: Json,
}

/// `STANDARD` or `EXPRESS`, as `Type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowType {
    Standard,
    Express,
}

/// `AWS::Serverless::StateMachine`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StateMachine {
    pub logical_id: String,
    pub name: String,
    pub arn: String,
    pub workflow_type: WorkflowType,
    /// The definition's text (`DefinitionUri` read, or `Definition` as JSON).
    pub definition: String,
    pub substitutions: HashMap<String, String>,
}

/// `AWS::DynamoDB::Table`: its physical name and its resolved properties.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub logical_id: String,
    pub name: String,
    pub properties: Json,
}

/// One of `GatewayResponses`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayResponse {
    pub status: Option<u16>,
    /// Header values with the mapping's quotes removed (`'a'` → `a`).
    pub headers: Vec<(String, String)>,
    /// Content type → body template (`$context.…` variables).
    pub templates: BTreeMap<String, String>,
}

/// The REST API the functions' `Api` events belong to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RestApi {
    pub stage: String,
    pub gateway_responses: BTreeMap<String, GatewayResponse>,
    pub binary_media_types: Vec<String>,
}

/// The parts of the template the shape runs.
#[derive(Debug, Clone)]
pub struct Template {
    pub functions: Vec<Function>,
    pub state_machines: Vec<StateMachine>,
    pub tables: Vec<Table>,
    pub api: RestApi,
}

impl Template {
    /// Reads and resolves `path` (relative `DefinitionUri`s are read from
    /// its folder).
    pub fn load(path: &Path, deployment: &Deployment) -> Result<Template, TemplateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&path.display().to_string(), e.to_string()))?;
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Template::parse(&text, &folder, deployment)
    }

    pub fn parse(
        text: &str,
        folder: &Path,
        deployment: &Deployment,
    ) -> Result<Template, TemplateError> {
        let root: Yaml =
            serde_yaml_ng::from_str(text).map_err(|e| invalid("(file)", e.to_string()))?;
        let resolver = Resolver::new(&root, deployment)?;
        resolver.template(folder)
    }

    pub fn function(&self, logical_id: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.logical_id == logical_id)
    }

    pub fn table(&self, logical_id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }
}

/// The intrinsic at a value, if any: `(name, argument)` for the short form
/// (`!Ref x`) and the long form (`{"Ref": x}`, `{"Fn::Sub": ...}`).
fn intrinsic(value: &Yaml) -> Option<(String, &Yaml)> {
    match value {
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let name = if tag == "Ref" || tag == "Condition" {
                tag.to_owned()
            } else {
                format!("Fn::{tag}")
            };
            Some((name, &tagged.value))
        }
        Yaml::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key.starts_with("Fn::")).then(|| (key.to_owned(), argument))
        }
        _ => None,
    }
}

fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Number(number) => Some(number.to_string()),
        Yaml::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn json_text(value: &Json) -> Option<String> {
    match value {
        Json::String(text) => Some(text.clone()),
        Json::Number(number) => Some(number.to_string()),
        Json::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

struct Resolver<'a> {
    root: &'a Yaml,
    deployment: &'a Deployment,
    parameters: HashMap<String, String>,
    /// Logical id → `Type` of every resource that exists (its `Condition` holds).
    resources: BTreeMap<String, String>,
}

impl<'a> Resolver<'a> {
    fn new(root: &'a Yaml, deployment: &'a Deployment) -> Result<Resolver<'a>, TemplateError> {
        let mut parameters = HashMap::new();
        if let Some(Yaml::Mapping(declared)) = root.get("Parameters") {
            for (name, declaration) in declared {
                let Some(name) = name.as_str() else { continue };
                let value = match deployment.parameters.get(name) {
                    Some(value) => value.clone(),
                    None => declaration
                        .get("Default")
                        .and_then(scalar_text)
                        .ok_or_else(|| {
                            invalid(
                                &format!("Parameters.{name}"),
                                "has no Default and no local value",
                            )
                        })?,
                };
                // CloudFormation refuses a value its parameter does not
                // allow (WORKFLOW_TYPE=express, say) before creating anything.
                if let Some(Yaml::Sequence(allowed)) = declaration.get("AllowedValues")
                    && !allowed
                        .iter()
                        .filter_map(scalar_text)
                        .any(|allowed| allowed == value)
                {
                    return Err(invalid(
                        &format!("Parameters.{name}"),
                        format!("{value:?} is not one of its AllowedValues"),
                    ));
                }
                parameters.insert(name.to_owned(), value);
            }
        }
        let mut resolver = Resolver {
            root,
            deployment,
            parameters,
            resources: BTreeMap::new(),
        };
        let Some(Yaml::Mapping(resources)) = root.get("Resources") else {
            return Err(invalid("Resources", "missing"));
        };
        let mut existing = BTreeMap::new();
        for (id, resource) in resources {
            let Some(id) = id.as_str() else { continue };
            let kind = resource
                .get("Type")
                .and_then(Yaml::as_str)
                .ok_or_else(|| invalid(&format!("Resources.{id}.Type"), "missing"))?;
            let exists = match resource.get("Condition").and_then(Yaml::as_str) {
                Some(condition) => resolver.condition(condition, &format!("Resources.{id}"))?,
                None => true,
            };
            if exists {
                existing.insert(id.to_owned(), kind.to_owned());
            }
        }
        resolver.resources = existing;
        Ok(resolver)
    }

    fn resource(&self, id: &str) -> Option<&'a Yaml> {
        self.root.get("Resources")?.get(id)
    }

    fn pseudo(&self, name: &str) -> Option<String> {
        let d = self.deployment;
        Some(match name {
            "AWS::Region" => d.region.clone(),
            "AWS::AccountId" => d.account_id.clone(),
            "AWS::StackName" => d.stack_name.clone(),
            "AWS::Partition" => "aws".to_owned(),
            "AWS::URLSuffix" => "amazonaws.com".to_owned(),
            "AWS::StackId" => format!(
                "arn:aws:cloudformation:{}:{}:stack/{}/00000000-0000-0000-0000-000000000000",
                d.region, d.account_id, d.stack_name
            ),
            _ => return None,
        })
    }

    /// A named condition of `Conditions`.
    fn condition(&self, name: &str, at: &str) -> Result<bool, TemplateError> {
        let definition = self
            .root
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| invalid(at, format!("condition {name:?} is not defined")))?;
        self.truth(definition, &format!("Conditions.{name}"))
    }

    /// A condition expression (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`,
    /// `Condition`).
    fn truth(&self, value: &Yaml, at: &str) -> Result<bool, TemplateError> {
        let Some((name, argument)) = intrinsic(value) else {
            return match value {
                Yaml::Bool(flag) => Ok(*flag),
                _ => Err(invalid(
                    at,
                    "a condition must be Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition",
                )),
            };
        };
        let items = || -> Result<&Vec<Yaml>, TemplateError> {
            argument
                .as_sequence()
                .ok_or_else(|| invalid(at, format!("{name} takes a list")))
        };
        match name.as_str() {
            "Fn::Equals" => {
                let items = items()?;
                if items.len() != 2 {
                    return Err(invalid(at, "Fn::Equals takes two values"));
                }
                // CloudFormation compares the values as strings.
                let text = |value: Option<Json>| {
                    value.map(|v| json_text(&v).unwrap_or_else(|| v.to_string()))
                };
                Ok(text(self.value(&items[0], at)?) == text(self.value(&items[1], at)?))
            }
            "Fn::Not" => {
                let items = items()?;
                match items.as_slice() {
                    [one] => Ok(!self.truth(one, at)?),
                    _ => Err(invalid(at, "Fn::Not takes one condition")),
                }
            }
            "Fn::And" => {
                for item in items()? {
                    if !self.truth(item, at)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            "Fn::Or" => {
                for item in items()? {
                    if self.truth(item, at)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            "Condition" => {
                let other = argument
                    .as_str()
                    .ok_or_else(|| invalid(at, "Condition takes a condition name"))?;
                self.condition(other, at)
            }
            other => Err(invalid(
                at,
                format!("{other} is not a condition function aws-local knows"),
            )),
        }
    }

    /// The physical name of a resource: its name property if the template
    /// sets one, else `<stack>-<LogicalId>`.
    fn physical_name(&self, id: &str, name_property: &str) -> Result<String, TemplateError> {
        let at = format!("Resources.{id}.Properties.{name_property}");
        match self
            .resource(id)
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get(name_property))
        {
            Some(value) => self.text(value, &at),
            None => Ok(format!("{}-{id}", self.deployment.stack_name)),
        }
    }

    fn reference(&self, target: &str, at: &str) -> Result<String, TemplateError> {
        if let Some(value) = self.parameters.get(target) {
            return Ok(value.clone());
        }
        if let Some(value) = self.pseudo(target) {
            return Ok(value);
        }
        let kind = self.resources.get(target).ok_or_else(|| {
            invalid(
                at,
                format!(
                    "Ref to {target:?}: no such parameter or resource (or its Condition is false)"
                ),
            )
        })?;
        let d = self.deployment;
        match kind.as_str() {
            "AWS::DynamoDB::Table" => self.physical_name(target, "TableName"),
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                self.physical_name(target, "FunctionName")
            }
            "AWS::Serverless::StateMachine" | "AWS::StepFunctions::StateMachine" => {
                let name = self.physical_name(target, machine_name_property(kind))?;
                Ok(format!(
                    "arn:aws:states:{}:{}:stateMachine:{name}",
                    d.region, d.account_id
                ))
            }
            "AWS::Logs::LogGroup" => self.physical_name(target, "LogGroupName"),
            "AWS::SNS::Topic" => Ok(format!(
                "arn:aws:sns:{}:{}:{}-{target}",
                d.region, d.account_id, d.stack_name
            )),
            "AWS::Serverless::Api" => Ok(format!("local{}", target.to_lowercase())),
            other => Err(invalid(
                at,
                format!("Ref to {target} ({other}) has no local value in aws-local"),
            )),
        }
    }

    fn attribute(&self, target: &str, attribute: &str, at: &str) -> Result<String, TemplateError> {
        let kind = self.resources.get(target).ok_or_else(|| {
            invalid(
                at,
                format!("Fn::GetAtt of {target:?}: no such resource (or its Condition is false)"),
            )
        })?;
        let d = self.deployment;
        match (kind.as_str(), attribute) {
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => Ok(format!(
                "arn:aws:lambda:{}:{}:function:{}",
                d.region,
                d.account_id,
                self.physical_name(target, "FunctionName")?
            )),
            ("AWS::DynamoDB::Table", "Arn") => Ok(format!(
                "arn:aws:dynamodb:{}:{}:table/{}",
                d.region,
                d.account_id,
                self.physical_name(target, "TableName")?
            )),
            ("AWS::Serverless::StateMachine" | "AWS::StepFunctions::StateMachine", "Arn") => {
                self.reference(target, at)
            }
            ("AWS::Serverless::StateMachine" | "AWS::StepFunctions::StateMachine", "Name") => {
                self.physical_name(target, machine_name_property(kind))
            }
            ("AWS::Logs::LogGroup", "Arn") => Ok(format!(
                "arn:aws:logs:{}:{}:log-group:{}:*",
                d.region,
                d.account_id,
                self.physical_name(target, "LogGroupName")?
            )),
            (kind, attribute) => Err(invalid(
                at,
                format!("Fn::GetAtt {target}.{attribute} ({kind}) has no local value in aws-local"),
            )),
        }
    }

    fn substitute(
        &self,
        text: &str,
        variables: &HashMap<String, String>,
        at: &str,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid(at, format!("unclosed ${{ in Fn::Sub {text:?}")))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.get(name) {
                out.push_str(value);
            } else if let Some((target, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(target, attribute, at)?);
            } else {
                out.push_str(&self.reference(name, at)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A string value (intrinsics resolved).
    fn text(&self, value: &Yaml, at: &str) -> Result<String, TemplateError> {
        self.value(value, at)?
            .as_ref()
            .and_then(json_text)
            .ok_or_else(|| invalid(at, "must be a string"))
    }

    /// Any value, intrinsics resolved; `None` is `AWS::NoValue`.
    fn value(&self, value: &Yaml, at: &str) -> Result<Option<Json>, TemplateError> {
        if let Some((name, argument)) = intrinsic(value) {
            return self.function(&name, argument, at);
        }
        Ok(Some(match value {
            Yaml::Null => Json::Null,
            Yaml::Bool(flag) => Json::Bool(*flag),
            Yaml::Number(number) => {
                serde_json::to_value(number).map_err(|e| invalid(at, format!("number: {e}")))?
            }
            Yaml::String(text) => Json::String(text.clone()),
            Yaml::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(item) = self.value(item, &format!("{at}[{i}]"))? {
                        out.push(item);
                    }
                }
                Json::Array(out)
            }
            Yaml::Mapping(map) => {
                let mut out = Map::new();
                for (key, item) in map {
                    let key = scalar_text(key)
                        .ok_or_else(|| invalid(at, "mapping keys must be strings"))?;
                    if let Some(item) = self.value(item, &format!("{at}.{key}"))? {
                        out.insert(key, item);
                    }
                }
                Json::Object(out)
            }
            Yaml::Tagged(tagged) => {
                return Err(invalid(at, format!("unknown tag {}", tagged.tag)));
            }
        }))
    }

    fn function(
        &self,
        name: &str,
        argument: &Yaml,
        at: &str,
    ) -> Result<Option<Json>, TemplateError> {
        let string = |text: String| Ok(Some(Json::String(text)));
        match name {
            "Ref" => {
                let target = argument
                    .as_str()
                    .ok_or_else(|| invalid(at, "Ref takes a name"))?;
                if target == "AWS::NoValue" {
                    return Ok(None);
                }
                string(self.reference(target, at)?)
            }
            "Fn::GetAtt" => {
                let (target, attribute) = match argument {
                    Yaml::String(text) => text
                        .split_once('.')
                        .map(|(t, a)| (t.to_owned(), a.to_owned()))
                        .ok_or_else(|| invalid(at, "Fn::GetAtt takes Resource.Attribute"))?,
                    Yaml::Sequence(items) if items.len() == 2 => {
                        (self.text(&items[0], at)?, self.text(&items[1], at)?)
                    }
                    _ => return Err(invalid(at, "Fn::GetAtt takes Resource.Attribute")),
                };
                string(self.attribute(&target, &attribute, at)?)
            }
            "Fn::Sub" => match argument {
                Yaml::String(text) => string(self.substitute(text, &HashMap::new(), at)?),
                Yaml::Sequence(items) if items.len() == 2 => {
                    let text = items[0]
                        .as_str()
                        .ok_or_else(|| invalid(at, "Fn::Sub's first item must be a string"))?;
                    let mut variables = HashMap::new();
                    if let Yaml::Mapping(map) = &items[1] {
                        for (key, value) in map {
                            let key = key.as_str().ok_or_else(|| {
                                invalid(at, "Fn::Sub variable names must be strings")
                            })?;
                            variables
                                .insert(key.to_owned(), self.text(value, &format!("{at}.{key}"))?);
                        }
                    } else {
                        return Err(invalid(at, "Fn::Sub's second item must be a mapping"));
                    }
                    string(self.substitute(text, &variables, at)?)
                }
                _ => Err(invalid(at, "Fn::Sub takes a string or [string, mapping]")),
            },
            "Fn::If" => {
                let items = argument
                    .as_sequence()
                    .filter(|items| items.len() == 3)
                    .ok_or_else(|| invalid(at, "Fn::If takes [condition, then, else]"))?;
                let condition = items[0]
                    .as_str()
                    .ok_or_else(|| invalid(at, "Fn::If's condition must be a name"))?;
                let chosen = if self.condition(condition, at)? {
                    &items[1]
                } else {
                    &items[2]
                };
                self.value(chosen, at)
            }
            "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" | "Condition" => {
                let wrapped = serde_yaml_ng::Mapping::from_iter([(
                    Yaml::String(name.to_owned()),
                    argument.clone(),
                )]);
                Ok(Some(Json::Bool(self.truth(&Yaml::Mapping(wrapped), at)?)))
            }
            other => Err(invalid(
                at,
                format!(
                    "{other} is not supported by aws-local (it resolves Ref, Fn::GetAtt, Fn::Sub, Fn::If and conditions)"
                ),
            )),
        }
    }

    fn template(&self, folder: &Path) -> Result<Template, TemplateError> {
        let mut functions = Vec::new();
        let mut state_machines = Vec::new();
        let mut tables = Vec::new();
        let mut apis = Vec::new();
        for (id, kind) in &self.resources {
            match kind.as_str() {
                "AWS::Serverless::Function" => functions.push(self.serverless_function(id)?),
                "AWS::Serverless::StateMachine" => {
                    state_machines.push(self.state_machine(id, folder)?)
                }
                "AWS::DynamoDB::Table" => tables.push(Table {
                    logical_id: id.clone(),
                    name: self.physical_name(id, "TableName")?,
                    properties: self
                        .resource(id)
                        .and_then(|r| r.get("Properties"))
                        .map(|p| self.value(p, &format!("Resources.{id}.Properties")))
                        .transpose()?
                        .flatten()
                        .unwrap_or(Json::Null),
                }),
                "AWS::Serverless::Api" => apis.push(self.rest_api(id)?),
                _ => {}
            }
        }
        let api = match apis.len() {
            0 => RestApi {
                // SAM's implicit API (ServerlessRestApi) deploys stage "Prod".
                stage: "Prod".to_owned(),
                ..RestApi::default()
            },
            1 => apis.remove(0),
            _ => {
                return Err(invalid(
                    "Resources",
                    "aws-local serves one AWS::Serverless::Api; the template declares several",
                ));
            }
        };
        let mut routes = HashSet::new();
        for function in &functions {
            for route in &function.routes {
                if !routes.insert((route.method.clone(), route.path.clone())) {
                    return Err(invalid(
                        &format!("Resources.{}.Properties.Events", function.logical_id),
                        format!("{} {} is routed twice", route.method, route.path),
                    ));
                }
            }
        }
        Ok(Template {
            functions,
            state_machines,
            tables,
            api,
        })
    }

    /// A property of a function: its own, else `Globals.Function`'s.
    fn function_property(&self, id: &str, name: &str) -> Option<(&'a Yaml, String)> {
        let own = self
            .resource(id)
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get(name))
            .map(|v| (v, format!("Resources.{id}.Properties.{name}")));
        own.or_else(|| {
            self.root
                .get("Globals")
                .and_then(|g| g.get("Function"))
                .and_then(|f| f.get(name))
                .map(|v| (v, format!("Globals.Function.{name}")))
        })
    }

    fn number(&self, id: &str, name: &str, default: u64) -> Result<u64, TemplateError> {
        match self.function_property(id, name) {
            None => Ok(default),
            Some((value, at)) => self
                .text(value, &at)?
                .parse()
                .map_err(|_| invalid(&at, "must be a whole number")),
        }
    }

    fn serverless_function(&self, id: &str) -> Result<Function, TemplateError> {
        let at = format!("Resources.{id}");
        let resource = self.resource(id).ok_or_else(|| invalid(&at, "missing"))?;
        let binary = resource
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|b| b.get("Binary"))
            .map(|b| self.text(b, &format!("{at}.Metadata.BuildProperties.Binary")))
            .transpose()?
            .ok_or_else(|| {
                invalid(
                    &format!("{at}.Metadata.BuildProperties.Binary"),
                    "missing: aws-local runs the workspace binary it names",
                )
            })?;
        let mut environment = BTreeMap::new();
        let global_variables = self
            .root
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .map(|v| (v, "Globals.Function.Environment.Variables".to_owned()));
        let own_variables = resource
            .get("Properties")
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .map(|v| (v, format!("{at}.Properties.Environment.Variables")));
        // SAM merges the maps; the function's own entries win.
        for (variables, where_) in global_variables.into_iter().chain(own_variables) {
            let Yaml::Mapping(map) = variables else {
                return Err(invalid(&where_, "must be a mapping"));
            };
            for (key, value) in map {
                let key = key
                    .as_str()
                    .ok_or_else(|| invalid(&where_, "variable names must be strings"))?;
                let at = format!("{where_}.{key}");
                match self.value(value, &at)? {
                    Some(value) => {
                        let text =
                            json_text(&value).ok_or_else(|| invalid(&at, "must be a string"))?;
                        environment.insert(key.to_owned(), text);
                    }
                    None => {
                        environment.remove(key);
                    }
                }
            }
        }
        let code_uri = self
            .function_property(id, "CodeUri")
            .map(|(value, at)| self.text(value, &at))
            .transpose()?;
        let name = self.physical_name(id, "FunctionName")?;
        let log_group = match self.function_property(id, "LoggingConfig") {
            Some((config, at)) => match config.get("LogGroup") {
                Some(group) => self.text(group, &format!("{at}.LogGroup"))?,
                None => format!("/aws/lambda/{name}"),
            },
            None => format!("/aws/lambda/{name}"),
        };
        let (routes, schedules) = self.events(id)?;
        Ok(Function {
            logical_id: id.to_owned(),
            arn: self.attribute(id, "Arn", &at)?,
            name,
            binary,
            code_uri,
            environment,
            timeout: Duration::from_secs(self.number(
                id,
                "Timeout",
                SAM_DEFAULT_TIMEOUT_SECONDS,
            )?),
            memory_mb: self.number(id, "MemorySize", SAM_DEFAULT_MEMORY_MB)?,
            handler: match self.function_property(id, "Handler") {
                Some((value, at)) => self.text(value, &at)?,
                None => "bootstrap".to_owned(),
            },
            routes,
            schedules,
            log_group,
        })
    }

    fn events(&self, id: &str) -> Result<(Vec<Route>, Vec<Schedule>), TemplateError> {
        let mut routes = Vec::new();
        let mut schedules = Vec::new();
        let Some(Yaml::Mapping(events)) = self
            .resource(id)
            .and_then(|r| r.get("Properties"))
            .and_then(|p| p.get("Events"))
        else {
            return Ok((routes, schedules));
        };
        for (name, event) in events {
            let name = name.as_str().unwrap_or_default();
            let at = format!("Resources.{id}.Properties.Events.{name}");
            let kind = event.get("Type").and_then(Yaml::as_str).unwrap_or_default();
            let properties = event.get("Properties");
            let property = |key: &str| -> Result<Option<String>, TemplateError> {
                properties
                    .and_then(|p| p.get(key))
                    .map(|v| self.text(v, &format!("{at}.Properties.{key}")))
                    .transpose()
            };
            match kind {
                "Api" => {
                    let path =
                        property("Path")?.ok_or_else(|| invalid(&at, "an Api event needs Path"))?;
                    let method = property("Method")?
                        .ok_or_else(|| invalid(&at, "an Api event needs Method"))?;
                    routes.push(Route {
                        method: method.to_uppercase(),
                        path,
                    });
                }
                "Schedule" | "ScheduleV2" => {
                    if property("State")?.as_deref() == Some("DISABLED")
                        || property("Enabled")?.as_deref() == Some("false")
                    {
                        continue;
                    }
                    let expression = property("ScheduleExpression")?
                        .or(property("Schedule")?)
                        .ok_or_else(|| invalid(&at, "a schedule needs ScheduleExpression"))?;
                    let every = rate(&expression).ok_or_else(|| {
                        invalid(
                            &at,
                            format!("{expression:?}: aws-local runs rate(...) schedules only"),
                        )
                    })?;
                    let input = match property("Input")? {
                        Some(text) => serde_json::from_str(&text)
                            .map_err(|e| invalid(&at, format!("Input is not JSON: {e}")))?,
                        None => Json::Object(Map::new()),
                    };
                    schedules.push(Schedule { every, input });
                }
                // Other event sources do not exist on one machine.
                _ => {}
            }
        }
        Ok((routes, schedules))
    }

    fn state_machine(&self, id: &str, folder: &Path) -> Result<StateMachine, TemplateError> {
        let at = format!("Resources.{id}.Properties");
        let properties = self
            .resource(id)
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| invalid(&at, "missing"))?;
        let workflow_type = match properties
            .get("Type")
            .map(|t| self.text(t, &format!("{at}.Type")))
            .transpose()?
            .as_deref()
        {
            None | Some("STANDARD") => WorkflowType::Standard,
            Some("EXPRESS") => WorkflowType::Express,
            Some(other) => {
                return Err(invalid(
                    &format!("{at}.Type"),
                    format!("{other:?}: expected STANDARD or EXPRESS"),
                ));
            }
        };
        let definition = match (
            properties.get("DefinitionUri"),
            properties.get("Definition"),
        ) {
            (Some(uri), None) => {
                let relative = self
                    .text(uri, &format!("{at}.DefinitionUri"))
                    .map_err(|_| {
                        invalid(
                            &format!("{at}.DefinitionUri"),
                            "aws-local reads a local path only (not an S3 location)",
                        )
                    })?;
                let path: PathBuf = folder.join(&relative);
                std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        &format!("{at}.DefinitionUri"),
                        format!("{}: {e}", path.display()),
                    )
                })?
            }
            (None, Some(inline)) => self
                .value(inline, &format!("{at}.Definition"))?
                .unwrap_or(Json::Null)
                .to_string(),
            _ => {
                return Err(invalid(
                    &at,
                    "needs exactly one of DefinitionUri and Definition",
                ));
            }
        };
        let mut substitutions = HashMap::new();
        if let Some(Yaml::Mapping(map)) = properties.get("DefinitionSubstitutions") {
            for (key, value) in map {
                let key = key.as_str().unwrap_or_default();
                let value = self.text(value, &format!("{at}.DefinitionSubstitutions.{key}"))?;
                substitutions.insert(key.to_owned(), value);
            }
        }
        let name = self.physical_name(id, "Name")?;
        Ok(StateMachine {
            logical_id: id.to_owned(),
            arn: self.reference(id, &at)?,
            name,
            workflow_type,
            definition,
            substitutions,
        })
    }

    fn rest_api(&self, id: &str) -> Result<RestApi, TemplateError> {
        let at = format!("Resources.{id}.Properties");
        let properties = self
            .resource(id)
            .and_then(|r| r.get("Properties"))
            .ok_or_else(|| invalid(&at, "missing"))?;
        let stage = properties
            .get("StageName")
            .map(|s| self.text(s, &format!("{at}.StageName")))
            .transpose()?
            .ok_or_else(|| invalid(&format!("{at}.StageName"), "missing"))?;
        let mut gateway_responses = BTreeMap::new();
        if let Some(responses) = properties.get("GatewayResponses") {
            let Some(Json::Object(responses)) =
                self.value(responses, &format!("{at}.GatewayResponses"))?
            else {
                return Err(invalid(
                    &format!("{at}.GatewayResponses"),
                    "must be a mapping",
                ));
            };
            for (kind, response) in responses {
                let at = format!("{at}.GatewayResponses.{kind}");
                let status = match response.get("StatusCode") {
                    None => None,
                    Some(code) => Some(
                        json_text(code)
                            .and_then(|c| c.parse::<u16>().ok())
                            .ok_or_else(|| invalid(&at, "StatusCode must be a number"))?,
                    ),
                };
                let headers = response
                    .get("ResponseParameters")
                    .and_then(|p| p.get("Headers"))
                    .and_then(Json::as_object)
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|(name, value)| {
                                let value = json_text(value).unwrap_or_default();
                                // Static values are quoted: 'application/json'.
                                let value = value
                                    .strip_prefix('\'')
                                    .and_then(|v| v.strip_suffix('\''))
                                    .map(str::to_owned)
                                    .unwrap_or(value);
                                (name.clone(), value)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let templates = response
                    .get("ResponseTemplates")
                    .and_then(Json::as_object)
                    .map(|templates| {
                        templates
                            .iter()
                            .map(|(kind, body)| (kind.clone(), json_text(body).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                gateway_responses.insert(
                    kind.clone(),
                    GatewayResponse {
                        status,
                        headers,
                        templates,
                    },
                );
            }
        }
        let binary_media_types = match properties.get("BinaryMediaTypes") {
            None => Vec::new(),
            Some(types) => match self.value(types, &format!("{at}.BinaryMediaTypes"))? {
                Some(Json::Array(items)) => items.iter().filter_map(json_text).collect(),
                _ => return Err(invalid(&format!("{at}.BinaryMediaTypes"), "must be a list")),
            },
        };
        Ok(RestApi {
            stage,
            gateway_responses,
            binary_media_types,
        })
    }
}

fn machine_name_property(kind: &str) -> &'static str {
    if kind == "AWS::StepFunctions::StateMachine" {
        "StateMachineName"
    } else {
        "Name"
    }
}

/// `rate(5 minutes)` → 5 minutes.
fn rate(expression: &str) -> Option<Duration> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.trim().split_once(' ')?;
    let count: u64 = count.parse().ok()?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(count.checked_mul(seconds)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        Deployment {
            stack_name: "shop".into(),
            region: "eu-west-1".into(),
            account_id: "123456789012".into(),
            parameters: BTreeMap::from([("Issuer".to_owned(), "https://id.example".to_owned())]),
        }
    }

    fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text, Path::new("."), &deployment())
    }

    const BASE: &str = r#"
Parameters:
  Stage: {Type: String, Default: dev}
  Issuer: {Type: String}
  Retention: {Type: Number, Default: 30}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
Globals:
  Function:
    Timeout: 25
    Environment:
      Variables:
        TABLE: !Ref Things
        SHARED: global
Resources:
  Things:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      DeletionProtectionEnabled: !If [IsProd, true, false]
  Named:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-named"
  OnlyInProd:
    Type: AWS::DynamoDB::Table
    Condition: IsProd
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      GatewayResponses:
        MISSING_AUTHENTICATION_TOKEN:
          StatusCode: "404"
          ResponseParameters:
            Headers:
              Content-Type: "'application/json'"
          ResponseTemplates:
            application/json: '{"message":"no $context.path"}'
  GetThing:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: get-thing
    Properties:
      MemorySize: 256
      Environment:
        Variables:
          SHARED: own
          ISSUER: !Ref Issuer
          MACHINE: !Ref Flow
          ARN: !GetAtt Things.Arn
          SUB: !Sub ["${Prefix}-${AWS::Region}-${Flow.Name}-${!Literal}", {Prefix: p}]
          PROD_ONLY: !If [IsProd, yes, !Ref AWS::NoValue]
          NOT_PROD: !If [NotProd, "yes", "no"]
      Events:
        Read:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/things/{id}", Method: get}
        Tick:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes), Input: '{"tick":true}'}
  Flow:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-flow
      Type: EXPRESS
      Definition: {StartAt: A, States: {A: {Type: Task, Resource: "${Fn}", End: true}}}
      DefinitionSubstitutions:
        Fn: !GetAtt GetThing.Arn
"#;

    #[test]
    fn resolves_references_attributes_subs_and_conditions_to_local_values() {
        let template = parse(BASE).unwrap();
        let function = template.function("GetThing").unwrap();
        assert_eq!(function.name, "shop-GetThing");
        assert_eq!(
            function.arn,
            "arn:aws:lambda:eu-west-1:123456789012:function:shop-GetThing"
        );
        assert_eq!(function.binary, "get-thing");
        assert_eq!(function.timeout, Duration::from_secs(25));
        assert_eq!(function.memory_mb, 256);
        let env = &function.environment;
        assert_eq!(env["TABLE"], "shop-Things");
        assert_eq!(env["SHARED"], "own", "the function's own variable wins");
        assert_eq!(env["ISSUER"], "https://id.example");
        assert_eq!(
            env["MACHINE"],
            "arn:aws:states:eu-west-1:123456789012:stateMachine:shop-flow"
        );
        assert_eq!(
            env["ARN"],
            "arn:aws:dynamodb:eu-west-1:123456789012:table/shop-Things"
        );
        assert_eq!(env["SUB"], "p-eu-west-1-shop-flow-${Literal}");
        assert!(
            !env.contains_key("PROD_ONLY"),
            "AWS::NoValue removes the variable"
        );
        assert_eq!(env["NOT_PROD"], "yes");
        assert_eq!(
            function.routes,
            vec![Route {
                method: "GET".into(),
                path: "/things/{id}".into()
            }]
        );
        assert_eq!(function.schedules[0].every, Duration::from_secs(300));
        assert_eq!(
            function.schedules[0].input,
            serde_json::json!({"tick": true})
        );
        assert_eq!(function.log_group, "/aws/lambda/shop-GetThing");

        let tables: Vec<_> = template.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            tables,
            vec!["shop-named", "shop-Things"],
            "OnlyInProd's condition is false"
        );
        assert_eq!(
            template.table("Things").unwrap().properties["DeletionProtectionEnabled"],
            false
        );

        let flow = &template.state_machines[0];
        assert_eq!(flow.workflow_type, WorkflowType::Express);
        assert_eq!(flow.substitutions["Fn"], function.arn);
        assert!(flow.definition.contains("\"StartAt\""));

        assert_eq!(template.api.stage, "dev");
        let missing = &template.api.gateway_responses["MISSING_AUTHENTICATION_TOKEN"];
        assert_eq!(missing.status, Some(404));
        assert_eq!(
            missing.headers,
            vec![("Content-Type".into(), "application/json".into())]
        );
    }

    #[test]
    fn a_parameter_without_default_or_local_value_is_an_error() {
        let error = Template::parse(
            BASE,
            Path::new("."),
            &Deployment {
                parameters: BTreeMap::new(),
                ..deployment()
            },
        )
        .unwrap_err();
        assert_eq!(error.at, "Parameters.Issuer");
    }

    #[test]
    fn a_value_a_parameter_does_not_allow_is_an_error() {
        let text = BASE.replace(
            "Stage: {Type: String, Default: dev}",
            "Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}",
        );
        let mut deployment = deployment();
        deployment.parameters.insert("Stage".into(), "prod".into());
        assert!(Template::parse(&text, Path::new("."), &deployment).is_ok());
        deployment
            .parameters
            .insert("Stage".into(), "staging".into());
        let error = Template::parse(&text, Path::new("."), &deployment).unwrap_err();
        assert_eq!(error.at, "Parameters.Stage");
        assert!(error.message.contains("AllowedValues"), "{error}");
    }

    #[test]
    fn an_unsupported_intrinsic_is_an_error_naming_where_it_is() {
        let text = BASE.replace("SHARED: own", "SHARED: !Join [\"-\", [a, b]]");
        let error = parse(&text).unwrap_err();
        assert_eq!(
            error.at,
            "Resources.GetThing.Properties.Environment.Variables.SHARED"
        );
        assert!(error.message.contains("Fn::Join"), "{error}");
    }

    #[test]
    fn a_reference_to_nothing_is_an_error() {
        let text = BASE.replace("MACHINE: !Ref Flow", "MACHINE: !Ref Flows");
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("\"Flows\""), "{error}");
    }

    #[test]
    fn rates_are_read_in_minutes_hours_and_days() {
        assert_eq!(rate("rate(1 minute)"), Some(Duration::from_secs(60)));
        assert_eq!(rate("rate(2 hours)"), Some(Duration::from_secs(7200)));
        assert_eq!(rate("cron(0 12 * * ? *)"), None);
    }
}
