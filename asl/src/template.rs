//! Payload templates: the `Parameters` and `ResultSelector` fields.
//!
//! A template is JSON in which any object key ending in `.$` takes its value from a path
//! (`$...` into the state's data or `$$...` into the context object). Templates are
//! compiled once at load time so that malformed paths and intrinsic functions are
//! refused before any execution starts.

use serde_json::{Map, Value};

use crate::path::Path;

#[derive(Debug, Clone)]
pub(crate) enum Template {
    /// A subtree without any `.$` key: copied as is.
    Literal(Value),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    /// `"<field>.$": "<path>"`; `field` keeps the `.$` so causes can quote it like AWS.
    Path {
        field: String,
        path: Path,
    },
}

impl Template {
    pub(crate) fn compile(value: &Value) -> Result<Template, String> {
        match value {
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                let mut dynamic = false;
                for (key, inner) in map {
                    if let Some(name) = key.strip_suffix(".$") {
                        if map.contains_key(name) {
                            return Err(format!(
                                "field `{name}` is given both as `{name}` and `{key}`"
                            ));
                        }
                        let Value::String(text) = inner else {
                            return Err(format!("field `{key}` must be a path string"));
                        };
                        if text.starts_with("States.") {
                            return Err(format!(
                                "field `{key}`: intrinsic functions (`{text}`) are not supported by the local runner"
                            ));
                        }
                        let path = Path::parse(text).map_err(|e| format!("field `{key}`: {e}"))?;
                        entries.push((
                            name.to_owned(),
                            Template::Path {
                                field: key.clone(),
                                path,
                            },
                        ));
                        dynamic = true;
                    } else {
                        let compiled = Template::compile(inner)?;
                        dynamic |= !matches!(compiled, Template::Literal(_));
                        entries.push((key.clone(), compiled));
                    }
                }
                Ok(if dynamic {
                    Template::Object(entries)
                } else {
                    Template::Literal(value.clone())
                })
            }
            Value::Array(items) => {
                let compiled = items
                    .iter()
                    .map(Template::compile)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(
                    if compiled.iter().all(|t| matches!(t, Template::Literal(_))) {
                        Template::Literal(value.clone())
                    } else {
                        Template::Array(compiled)
                    },
                )
            }
            other => Ok(Template::Literal(other.clone())),
        }
    }

    /// Every path the template reads, for load-time checks (e.g. `$$.Task.Token`).
    pub(crate) fn paths(&self) -> Vec<&Path> {
        match self {
            Template::Literal(_) => Vec::new(),
            Template::Object(entries) => entries.iter().flat_map(|(_, t)| t.paths()).collect(),
            Template::Array(items) => items.iter().flat_map(Template::paths).collect(),
            Template::Path { path, .. } => vec![path],
        }
    }

    /// Builds the payload. The error is the cause of the `States.Runtime` failure AWS
    /// reports when a path selects nothing.
    pub(crate) fn render(&self, input: &Value, context: &Value) -> Result<Value, String> {
        match self {
            Template::Literal(value) => Ok(value.clone()),
            Template::Object(entries) => {
                let mut out = Map::new();
                for (key, template) in entries {
                    out.insert(key.clone(), template.render(input, context)?);
                }
                Ok(Value::Object(out))
            }
            Template::Array(items) => items
                .iter()
                .map(|t| t.render(input, context))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Template::Path { field, path } => path.select(input, context).ok_or_else(|| {
                let source = match path.root_kind() {
                    crate::path::Root::Input => input,
                    crate::path::Root::Context => context,
                };
                format!(
                    "The JSONPath '{path}' specified for the field '{field}' could not be found in the input '{source}'"
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_objects_and_arrays_are_rendered() {
        let t = Template::compile(&json!({
            "static": 1,
            "nested": {"v.$": "$.a", "list": [{"w.$": "$$.Execution.Name"}, 2]}
        }))
        .unwrap();
        let out = t
            .render(&json!({"a": "x"}), &json!({"Execution": {"Name": "e1"}}))
            .unwrap();
        assert_eq!(
            out,
            json!({"static": 1, "nested": {"v": "x", "list": [{"w": "e1"}, 2]}})
        );
    }

    #[test]
    fn missing_path_names_field_and_path() {
        let t = Template::compile(&json!({"v.$": "$.nope"})).unwrap();
        let err = t.render(&json!({}), &json!({})).unwrap_err();
        assert!(err.contains("'$.nope'") && err.contains("'v.$'"), "{err}");
    }

    #[test]
    fn intrinsics_and_non_string_paths_are_refused() {
        assert!(Template::compile(&json!({"v.$": "States.Format('{}', $.a)"})).is_err());
        assert!(Template::compile(&json!({"v.$": 3})).is_err());
        assert!(Template::compile(&json!({"v.$": "not a path"})).is_err());
    }
}
