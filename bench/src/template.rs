//! `template.yaml` read the way the benchmarks need it: each function's
//! binary, memory, environment and API route; each table's keys and global
//! secondary indexes (with their projections, for the cost model); each
//! state machine's definition and type.
//!
//! Intrinsics (`!Ref`, `!GetAtt`, `!Sub`, `!If` and the condition
//! functions) resolve to local stand-ins given by a [`Stack`]: a stack name,
//! parameter values, physical names for tables and state machines. Each tree
//! under test is read from its own template, so a before/after comparison
//! never assumes the two trees agree on tables or variables.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use crate::Result;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// The parsed template.
pub struct Template {
    root: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    All,
    KeysOnly,
    Include(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Index {
    pub name: String,
    /// Partition key, then the sort key if any.
    pub key: Vec<String>,
    pub projection: Projection,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub logical_id: String,
    pub key: Vec<String>,
    pub indexes: Vec<Index>,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the crate under `functions/`.
    pub binary: String,
    pub memory_mb: u64,
    /// `(method, path)` of its `Api` event, for API functions.
    pub route: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct StateMachine {
    pub logical_id: String,
    pub definition_uri: String,
}

/// Where a template's names resolve to in one benchmark run.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Template::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Template> {
        let root: Value = serde_yaml_ng::from_str(text)?;
        Ok(Template { root })
    }

    fn resources(&self) -> impl Iterator<Item = (String, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
    }

    fn resources_of(&self, kind: &str) -> Vec<(String, &Value)> {
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.root
            .get("Resources")?
            .get(logical_id)?
            .get("Type")?
            .as_str()
    }

    pub fn tables(&self) -> Vec<Table> {
        self.resources_of("AWS::DynamoDB::Table")
            .into_iter()
            .map(|(logical_id, r)| {
                let props = &r["Properties"];
                let indexes = props
                    .get("GlobalSecondaryIndexes")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .map(|gsi| Index {
                        name: gsi["IndexName"].as_str().unwrap_or_default().to_owned(),
                        key: key_schema(&gsi["KeySchema"]),
                        projection: match gsi["Projection"]["ProjectionType"].as_str() {
                            Some("KEYS_ONLY") => Projection::KeysOnly,
                            Some("INCLUDE") => Projection::Include(
                                gsi["Projection"]["NonKeyAttributes"]
                                    .as_sequence()
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|a| a.as_str().map(str::to_owned))
                                    .collect(),
                            ),
                            _ => Projection::All,
                        },
                    })
                    .collect();
                Table {
                    key: key_schema(&props["KeySchema"]),
                    logical_id,
                    indexes,
                }
            })
            .collect()
    }

    pub fn functions(&self) -> Vec<Function> {
        let global_memory = self.root["Globals"]["Function"]["MemorySize"]
            .as_u64()
            .unwrap_or(128);
        let mut functions: Vec<Function> = self
            .resources_of("AWS::Serverless::Function")
            .into_iter()
            .filter_map(|(logical_id, r)| {
                let binary = r["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()?
                    .to_owned();
                let props = &r["Properties"];
                let route = props
                    .get("Events")
                    .and_then(Value::as_mapping)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .find(|e| e["Type"].as_str() == Some("Api"))
                    .and_then(|e| {
                        Some((
                            e["Properties"]["Method"].as_str()?.to_uppercase(),
                            e["Properties"]["Path"].as_str()?.to_owned(),
                        ))
                    });
                Some(Function {
                    memory_mb: props["MemorySize"].as_u64().unwrap_or(global_memory),
                    logical_id,
                    binary,
                    route,
                })
            })
            .collect();
        functions.sort_by(|a, b| a.binary.cmp(&b.binary));
        functions
    }

    pub fn function(&self, binary: &str) -> Option<Function> {
        self.functions().into_iter().find(|f| f.binary == binary)
    }

    pub fn state_machines(&self) -> Vec<StateMachine> {
        self.resources_of("AWS::Serverless::StateMachine")
            .into_iter()
            .filter_map(|(logical_id, r)| {
                Some(StateMachine {
                    definition_uri: r["Properties"]["DefinitionUri"].as_str()?.to_owned(),
                    logical_id,
                })
            })
            .collect()
    }

    /// Whether the template lets a deployment choose Express for the
    /// purchase workflow (a `WorkflowType` parameter allowing `EXPRESS`).
    pub fn supports_express(&self) -> bool {
        self.root["Parameters"]["WorkflowType"]["AllowedValues"]
            .as_sequence()
            .is_some_and(|values| values.iter().any(|v| v.as_str() == Some("EXPRESS")))
    }

    /// The parameters without a default that `stack` must give.
    fn parameter(&self, stack: &Stack, name: &str) -> Result<String> {
        if let Some(value) = stack.parameters.get(name) {
            return Ok(value.clone());
        }
        match &self.root["Parameters"][name]["Default"] {
            Value::Null => {
                Err(format!("template parameter {name} has no default and no bench value").into())
            }
            value => scalar(value)
                .ok_or_else(|| format!("parameter {name}: default is not a scalar").into()),
        }
    }

    /// The physical name a `!Ref` to a resource gives in `stack`.
    pub fn physical_name(&self, stack: &Stack, logical_id: &str) -> Result<String> {
        let resource = &self.root["Resources"][logical_id];
        let explicit = match self.resource_type(logical_id) {
            Some("AWS::DynamoDB::Table") => resource["Properties"].get("TableName"),
            Some("AWS::Serverless::StateMachine") => resource["Properties"].get("Name"),
            _ => None,
        };
        let name = match explicit {
            Some(value) => self.resolve(stack, value)?,
            None => match self.resource_type(logical_id) {
                // A function is known by its binary's name (what the bench
                // passes as AWS_LAMBDA_FUNCTION_NAME).
                Some("AWS::Serverless::Function") => {
                    resource["Metadata"]["BuildProperties"]["Binary"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| logical_id.to_owned())
                }
                _ => format!("{}-{logical_id}", stack.name),
            },
        };
        Ok(match self.resource_type(logical_id) {
            Some("AWS::Serverless::StateMachine") => state_machine_arn(&name),
            _ => name,
        })
    }

    fn arn(&self, stack: &Stack, logical_id: &str) -> Result<String> {
        let name = self.physical_name(stack, logical_id)?;
        Ok(match self.resource_type(logical_id) {
            Some("AWS::DynamoDB::Table") => {
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}")
            }
            Some("AWS::Serverless::Function") => {
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
            }
            Some("AWS::Serverless::StateMachine") => name,
            _ => format!("arn:aws:bench:{REGION}:{ACCOUNT}:{name}"),
        })
    }

    /// The environment the template gives `binary` (Globals, then its own),
    /// resolved in `stack`. Variables that resolve to `AWS::NoValue` are left out.
    pub fn environment(&self, stack: &Stack, binary: &str) -> Result<Vec<(String, String)>> {
        let (logical_id, resource) = self
            .resources_of("AWS::Serverless::Function")
            .into_iter()
            .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary))
            .ok_or_else(|| format!("template.yaml has no function with Binary {binary}"))?;
        let mut variables = BTreeMap::new();
        for source in [
            &self.root["Globals"]["Function"]["Environment"]["Variables"],
            &resource["Properties"]["Environment"]["Variables"],
        ] {
            for (name, value) in source.as_mapping().into_iter().flatten() {
                let Some(name) = name.as_str() else { continue };
                match self.resolve_optional(stack, value) {
                    Ok(Some(value)) => {
                        variables.insert(name.to_owned(), value);
                    }
                    Ok(None) => {
                        variables.remove(name);
                    }
                    Err(e) => return Err(format!("{logical_id}: {name}: {e}").into()),
                }
            }
        }
        Ok(variables.into_iter().collect())
    }

    /// `DefinitionSubstitutions` of a state machine, resolved.
    pub fn substitutions(&self, stack: &Stack, logical_id: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let subs = &self.root["Resources"][logical_id]["Properties"]["DefinitionSubstitutions"];
        for (name, value) in subs.as_mapping().into_iter().flatten() {
            if let Some(name) = name.as_str() {
                out.push((name.to_owned(), self.resolve(stack, value)?));
            }
        }
        Ok(out)
    }

    /// A state machine's `Type` (`STANDARD` when absent).
    pub fn state_machine_type(&self, stack: &Stack, logical_id: &str) -> Result<String> {
        match self.root["Resources"][logical_id]["Properties"].get("Type") {
            Some(value) => self.resolve(stack, value),
            None => Ok("STANDARD".into()),
        }
    }

    pub fn resolve(&self, stack: &Stack, value: &Value) -> Result<String> {
        self.resolve_optional(stack, value)?
            .ok_or_else(|| "resolves to AWS::NoValue".into())
    }

    fn resolve_optional(&self, stack: &Stack, value: &Value) -> Result<Option<String>> {
        if let Some(text) = scalar(value) {
            return Ok(Some(text));
        }
        let (function, argument) =
            intrinsic(value).ok_or_else(|| format!("cannot resolve {value:?}"))?;
        match function.as_str() {
            "Ref" => {
                let name = argument.as_str().ok_or("!Ref of a non-string")?;
                self.reference(stack, name)
            }
            "GetAtt" => {
                let (resource, attribute) = match argument {
                    Value::String(text) => text
                        .split_once('.')
                        .map(|(r, a)| (r.to_owned(), a.to_owned()))
                        .ok_or("!GetAtt without an attribute")?,
                    Value::Sequence(parts) if parts.len() == 2 => (
                        parts[0].as_str().unwrap_or_default().to_owned(),
                        parts[1].as_str().unwrap_or_default().to_owned(),
                    ),
                    _ => return Err("malformed !GetAtt".into()),
                };
                Ok(Some(match attribute.as_str() {
                    "Arn" => self.arn(stack, &resource)?,
                    "Name" => {
                        let physical = self.physical_name(stack, &resource)?;
                        physical.rsplit(':').next().unwrap_or(&physical).to_owned()
                    }
                    other => format!("{resource}.{other}"),
                }))
            }
            "Sub" => {
                let (template, variables) = match argument {
                    Value::String(text) => (text.clone(), Mapping::new()),
                    Value::Sequence(parts) if !parts.is_empty() => (
                        parts[0].as_str().unwrap_or_default().to_owned(),
                        parts
                            .get(1)
                            .and_then(Value::as_mapping)
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    _ => return Err("malformed !Sub".into()),
                };
                let mut out = String::new();
                let mut rest = template.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + 2..];
                    let end = after.find('}').ok_or("unclosed ${ in !Sub")?;
                    let name = &after[..end];
                    let value = match variables.get(name) {
                        Some(v) => self.resolve(stack, v)?,
                        None => match name.split_once('.') {
                            Some((resource, attribute)) if !name.starts_with("AWS::") => self
                                .resolve(
                                    stack,
                                    &Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
                                        tag: serde_yaml_ng::value::Tag::new("GetAtt"),
                                        value: Value::String(format!("{resource}.{attribute}")),
                                    })),
                                )?,
                            _ => self
                                .reference(stack, name)?
                                .ok_or_else(|| format!("${{{name}}} is AWS::NoValue"))?,
                        },
                    };
                    out.push_str(&value);
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                Ok(Some(out))
            }
            "If" => {
                let parts = argument.as_sequence().ok_or("malformed !If")?;
                let [condition, yes, no] = parts.as_slice() else {
                    return Err("!If needs three arguments".into());
                };
                let condition = condition.as_str().ok_or("!If condition is not a name")?;
                let branch = if self.condition(stack, condition)? {
                    yes
                } else {
                    no
                };
                self.resolve_optional(stack, branch)
            }
            "Join" => {
                let parts = argument.as_sequence().ok_or("malformed !Join")?;
                let [delimiter, items] = parts.as_slice() else {
                    return Err("!Join needs a delimiter and a list".into());
                };
                let mut values = Vec::new();
                for item in items.as_sequence().ok_or("!Join of a non-list")? {
                    if let Some(value) = self.resolve_optional(stack, item)? {
                        values.push(value);
                    }
                }
                Ok(Some(values.join(delimiter.as_str().unwrap_or_default())))
            }
            "Select" => {
                let parts = argument.as_sequence().ok_or("malformed !Select")?;
                let [index, items] = parts.as_slice() else {
                    return Err("!Select needs an index and a list".into());
                };
                let index: usize = self.resolve(stack, index)?.parse()?;
                let item = items
                    .as_sequence()
                    .and_then(|items| items.get(index))
                    .ok_or("!Select index out of range")?;
                self.resolve_optional(stack, item)
            }
            other => Err(format!("intrinsic {other} is not supported by the bench").into()),
        }
    }

    fn reference(&self, stack: &Stack, name: &str) -> Result<Option<String>> {
        Ok(Some(match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::StackName" => stack.name.clone(),
            "AWS::Region" => REGION.into(),
            "AWS::AccountId" => ACCOUNT.into(),
            "AWS::Partition" => "aws".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            _ if self.root["Parameters"].get(name).is_some() => self.parameter(stack, name)?,
            _ if self.root["Resources"].get(name).is_some() => self.physical_name(stack, name)?,
            _ => return Err(format!("!Ref {name}: no such parameter or resource").into()),
        }))
    }

    fn condition(&self, stack: &Stack, name: &str) -> Result<bool> {
        let body = self.root["Conditions"]
            .get(name)
            .ok_or_else(|| format!("no condition {name}"))?;
        self.evaluate(stack, body)
    }

    fn evaluate(&self, stack: &Stack, value: &Value) -> Result<bool> {
        let (function, argument) = intrinsic(value).ok_or("a condition must be a function")?;
        let items = || argument.as_sequence().cloned().unwrap_or_default();
        match function.as_str() {
            "Equals" => {
                let items = items();
                let [a, b] = items.as_slice() else {
                    return Err("!Equals needs two arguments".into());
                };
                Ok(self.resolve_optional(stack, a)? == self.resolve_optional(stack, b)?)
            }
            "Not" => Ok(!self.evaluate(stack, items().first().ok_or("!Not needs one argument")?)?),
            "And" => items()
                .iter()
                .try_fold(true, |acc, c| Ok(acc && self.evaluate(stack, c)?)),
            "Or" => items()
                .iter()
                .try_fold(false, |acc, c| Ok(acc || self.evaluate(stack, c)?)),
            "Condition" => self.condition(stack, argument.as_str().unwrap_or_default()),
            other => Err(format!("condition function {other} is not supported").into()),
        }
    }
}

pub fn state_machine_arn(name: &str) -> String {
    format!("arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}")
}

fn key_schema(value: &Value) -> Vec<String> {
    let mut key: Vec<(bool, String)> = value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|k| {
            Some((
                k["KeyType"].as_str()? != "HASH",
                k["AttributeName"].as_str()?.to_owned(),
            ))
        })
        .collect();
    key.sort();
    key.into_iter().map(|(_, name)| name).collect()
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `!Ref x` / `{Ref: x}`, `!GetAtt`/`Fn::GetAtt`, ...: the function's short
/// name and its argument.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            Some((tag.trim_start_matches('!').to_owned(), &tagged.value))
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            let name = key.strip_prefix("Fn::").unwrap_or(key);
            Some((name.to_owned(), argument))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Stage: {Type: String, Default: dev}
  PaymentUrl: {Type: String}
  WorkflowType: {Type: String, Default: STANDARD, AllowedValues: [STANDARD, EXPRESS]}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    MemorySize: 128
    Environment:
      Variables:
        PURCHASES_TABLE: !Ref PurchasesTable
Resources:
  PurchasesTable:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: purchaseId, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: byCustomer
          KeySchema: [{AttributeName: purchaseId, KeyType: RANGE}, {AttributeName: customerId, KeyType: HASH}]
          Projection: {ProjectionType: INCLUDE, NonKeyAttributes: [status]}
        - IndexName: allPurchases
          KeySchema: [{AttributeName: recordType, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-purchase
      Type: !Ref WorkflowType
      DefinitionUri: statemachine/purchase.asl.json
      DefinitionSubstitutions:
        StepArn: !GetAtt StepFunction.Arn
  CreateFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: create-purchase}}
    Properties:
      MemorySize: 256
      Environment:
        Variables:
          STATE_MACHINE_ARN: !Ref Machine
          PROD_ONLY: !If [IsProd, "yes", !Ref AWS::NoValue]
          STAGE: !Sub "${Stage}/${Machine.Name}"
          JOINED: !Join [":", [a, !Ref Stage, !Select [1, [x, y]]]]
      Events:
        Create: {Type: Api, Properties: {Path: /purchase-orchestrator/purchases, Method: post}}
  StepFunction:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: reserve-stock}}
    Properties:
      Environment:
        Variables:
          PAYMENT_URL: !Ref PaymentUrl
"#;

    fn stack() -> Stack {
        Stack {
            name: "bench-x".into(),
            parameters: [("PaymentUrl".to_owned(), "simulator".to_owned())].into(),
        }
    }

    #[test]
    fn reads_tables_with_their_index_projections() {
        let template = Template::parse(TEMPLATE).unwrap();
        let tables = template.tables();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].key, ["purchaseId"]);
        let by_customer = &tables[0].indexes[0];
        assert_eq!(by_customer.key, ["customerId", "purchaseId"]);
        assert_eq!(
            by_customer.projection,
            Projection::Include(vec!["status".into()])
        );
        assert_eq!(tables[0].indexes[1].projection, Projection::KeysOnly);
    }

    #[test]
    fn resolves_a_functions_environment_in_a_stack() {
        let template = Template::parse(TEMPLATE).unwrap();
        let env = template.environment(&stack(), "create-purchase").unwrap();
        let arn = "arn:aws:states:us-east-1:123456789012:stateMachine:bench-x-purchase";
        assert_eq!(
            env,
            [
                ("JOINED".to_owned(), "a:dev:y".to_owned()),
                (
                    "PURCHASES_TABLE".to_owned(),
                    "bench-x-PurchasesTable".to_owned()
                ),
                ("STAGE".to_owned(), "dev/bench-x-purchase".to_owned()),
                ("STATE_MACHINE_ARN".to_owned(), arn.to_owned()),
            ]
        );
        let step = template.environment(&stack(), "reserve-stock").unwrap();
        assert!(step.contains(&("PAYMENT_URL".to_owned(), "simulator".to_owned())));
        let subs = template.substitutions(&stack(), "Machine").unwrap();
        assert_eq!(
            subs,
            [(
                "StepArn".to_owned(),
                "arn:aws:lambda:us-east-1:123456789012:function:reserve-stock".to_owned()
            )]
        );
    }

    #[test]
    fn reads_functions_routes_memory_and_express_support() {
        let template = Template::parse(TEMPLATE).unwrap();
        let functions = template.functions();
        assert_eq!(functions[0].binary, "create-purchase");
        assert_eq!(functions[0].memory_mb, 256);
        assert_eq!(
            functions[0].route,
            Some(("POST".into(), "/purchase-orchestrator/purchases".into()))
        );
        assert_eq!(functions[1].memory_mb, 128);
        assert_eq!(functions[1].route, None);
        assert!(template.supports_express());
        assert_eq!(
            template.state_machine_type(&stack(), "Machine").unwrap(),
            "STANDARD"
        );
    }

    #[test]
    fn a_parameter_without_default_or_bench_value_is_an_error() {
        let template = Template::parse(TEMPLATE).unwrap();
        let bare = Stack {
            name: "s".into(),
            parameters: BTreeMap::new(),
        };
        let error = template.environment(&bare, "reserve-stock").unwrap_err();
        assert!(error.to_string().contains("PaymentUrl"), "{error}");
    }

    #[test]
    fn reads_the_projects_template() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let template = Template::load(&path).unwrap();
        let purchases = template
            .tables()
            .into_iter()
            .find(|t| t.logical_id == "PurchasesTable")
            .unwrap();
        assert!(purchases.indexes.iter().any(|i| i.name == "byCustomer"));
        assert!(template.function("get-purchase").unwrap().route.is_some());
    }
}
