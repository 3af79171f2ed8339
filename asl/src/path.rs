//! The JSONPath subset that Amazon States Language (JSONPath query language) uses.
//!
//! AWS distinguishes *paths* (full JsonPath, used by `InputPath`, `OutputPath` and
//! `Parameters`) from *reference paths* (only `.field`, `['field']` and `[index]`, so they
//! identify exactly one node; required by `ResultPath`, Choice `Variable`, `SecondsPath`,
//! ...). We implement reference paths plus the two path operators that are cheap and
//! well defined — wildcards (`*`) and slices (`[a:b]`). Everything else (`..`, filters,
//! unions, functions) is refused when the definition is loaded, so an execution never
//! meets a path it cannot evaluate.

use std::fmt;

use serde_json::{Map, Value};

/// Which document a path starts from: `$` is the state's data, `$$` the context object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Input,
    Context,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(String),
    /// Negative indexes count from the end (JsonPath semantics); they are not allowed in
    /// reference paths because `ResultPath` could not create such an element.
    Index(i64),
    Wildcard,
    Slice {
        start: Option<i64>,
        end: Option<i64>,
    },
}

/// A parsed path. `Display` gives back the text from the definition, which is what
/// error causes quote, as AWS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    text: String,
    root: Root,
    segments: Vec<Segment>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    /// `$`: the whole input, the default of `InputPath`, `ResultPath` and `OutputPath`.
    pub(crate) fn root() -> Path {
        Path {
            text: "$".to_owned(),
            root: Root::Input,
            segments: Vec::new(),
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Path, String> {
        let (root, rest) = if let Some(rest) = text.strip_prefix("$$") {
            (Root::Context, rest)
        } else if let Some(rest) = text.strip_prefix('$') {
            (Root::Input, rest)
        } else {
            return Err(format!("path `{text}` must start with `$` or `$$`"));
        };
        let chars: Vec<char> = rest.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        let unsupported = |what: &str| Err(format!("path `{text}`: {what} is not supported"));
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    match chars.get(i) {
                        None => return Err(format!("path `{text}` ends with `.`")),
                        Some('.') => return unsupported("recursive descent (`..`)"),
                        Some('*') => {
                            segments.push(Segment::Wildcard);
                            i += 1;
                        }
                        Some('[') => return Err(format!("path `{text}`: `.` followed by `[`")),
                        Some(_) => {
                            let start = i;
                            while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                                i += 1;
                            }
                            let name: String = chars[start..i].iter().collect();
                            if name.ends_with(')') && name.contains('(') {
                                return unsupported("a path function");
                            }
                            segments.push(Segment::Field(name));
                        }
                    }
                }
                '[' => {
                    i += 1;
                    match chars.get(i) {
                        Some(&quote @ ('\'' | '"')) => {
                            i += 1;
                            let mut name = String::new();
                            loop {
                                match chars.get(i) {
                                    None => {
                                        return Err(format!("path `{text}`: unterminated quote"));
                                    }
                                    Some('\\') if chars.get(i + 1).is_some() => {
                                        name.push(chars[i + 1]);
                                        i += 2;
                                    }
                                    Some(&c) if c == quote => {
                                        i += 1;
                                        break;
                                    }
                                    Some(&c) => {
                                        name.push(c);
                                        i += 1;
                                    }
                                }
                            }
                            if chars.get(i) != Some(&']') {
                                return Err(format!("path `{text}`: expected `]` after `{name}`"));
                            }
                            i += 1;
                            segments.push(Segment::Field(name));
                        }
                        Some('?') | Some('(') => {
                            return unsupported("a filter or script expression");
                        }
                        Some(_) => {
                            let start = i;
                            while i < chars.len() && chars[i] != ']' {
                                i += 1;
                            }
                            if i == chars.len() {
                                return Err(format!("path `{text}`: missing `]`"));
                            }
                            let inner: String = chars[start..i].iter().collect();
                            i += 1;
                            segments.push(parse_bracket(text, inner.trim())?);
                        }
                        None => return Err(format!("path `{text}`: missing `]`")),
                    }
                }
                other => {
                    return Err(format!("path `{text}`: unexpected character `{other}`"));
                }
            }
        }
        Ok(Path {
            text: text.to_owned(),
            root,
            segments,
        })
    }

    pub(crate) fn root_kind(&self) -> Root {
        self.root
    }

    /// A reference path selects at most one node, so it can be written to (`ResultPath`)
    /// and compared (Choice rules).
    pub(crate) fn is_reference(&self) -> bool {
        self.segments.iter().all(|s| match s {
            Segment::Field(_) => true,
            Segment::Index(i) => *i >= 0,
            Segment::Wildcard | Segment::Slice { .. } => false,
        })
    }

    fn is_definite(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Field(_) | Segment::Index(_)))
    }

    /// True when the path reads the context object's `Task` node (`$$.Task...`).
    pub(crate) fn reads_task_context(&self) -> bool {
        self.root == Root::Context
            && matches!(self.segments.first(), Some(Segment::Field(f)) if f == "Task")
    }

    /// Evaluates the path. `None` means "no such node" — each caller turns that into the
    /// error AWS raises in its position. Indefinite paths (wildcards, slices) always
    /// yield an array of the matches, as JsonPath does.
    pub(crate) fn select(&self, input: &Value, context: &Value) -> Option<Value> {
        let start = match self.root {
            Root::Input => input,
            Root::Context => context,
        };
        if self.is_definite() {
            let mut node = start;
            for segment in &self.segments {
                node = step_definite(node, segment)?;
            }
            return Some(node.clone());
        }
        let mut nodes = vec![start];
        for segment in &self.segments {
            nodes = nodes
                .into_iter()
                .flat_map(|node| step_indefinite(node, segment))
                .collect();
        }
        Some(Value::Array(nodes.into_iter().cloned().collect()))
    }

    /// Writes `value` at this reference path inside `target`, creating missing
    /// intermediate objects (`ResultPath` semantics). Fails when an existing node along the
    /// way has the wrong type, or when an array index is out of range: AWS reports both as
    /// `States.ResultPathMatchFailure`.
    pub(crate) fn set(&self, target: Value, value: Value) -> Result<Value, String> {
        if self.segments.is_empty() {
            return Ok(value);
        }
        let mut target = target;
        let mut node = &mut target;
        let last = self.segments.len() - 1;
        for (n, segment) in self.segments.iter().enumerate() {
            node = match (segment, node) {
                (Segment::Field(name), Value::Object(map)) => {
                    if n == last {
                        map.insert(name.clone(), value);
                        return Ok(target);
                    }
                    map.entry(name.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                }
                (Segment::Index(index), Value::Array(items)) => {
                    let slot = usize::try_from(*index)
                        .ok()
                        .and_then(|i| items.get_mut(i))
                        .ok_or_else(|| format!("index {index} is out of range"))?;
                    if n == last {
                        *slot = value;
                        return Ok(target);
                    }
                    slot
                }
                (Segment::Field(name), other) => {
                    return Err(format!(
                        "cannot add field `{name}` to a {}",
                        json_type(other)
                    ));
                }
                (Segment::Index(index), other) => {
                    return Err(format!(
                        "cannot index [{index}] into a {}",
                        json_type(other)
                    ));
                }
                (Segment::Wildcard | Segment::Slice { .. }, _) => {
                    return Err("only reference paths can be written to".to_owned());
                }
            };
        }
        // Unreachable in practice: the last segment returns above.
        Ok(target)
    }
}

fn parse_bracket(text: &str, inner: &str) -> Result<Segment, String> {
    if inner == "*" {
        return Ok(Segment::Wildcard);
    }
    if inner.contains(',') {
        return Err(format!("path `{text}`: unions (`[a,b]`) are not supported"));
    }
    let number = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<i64>()
            .map(Some)
            .map_err(|_| format!("path `{text}`: `[{inner}]` is not a valid index"))
    };
    if let Some((start, end)) = inner.split_once(':') {
        if end.contains(':') {
            return Err(format!("path `{text}`: slice steps are not supported"));
        }
        return Ok(Segment::Slice {
            start: number(start)?,
            end: number(end)?,
        });
    }
    match number(inner)? {
        Some(index) => Ok(Segment::Index(index)),
        None => Err(format!("path `{text}`: empty `[]`")),
    }
}

fn resolve_index(index: i64, len: usize) -> Option<usize> {
    if index >= 0 {
        usize::try_from(index).ok()
    } else {
        len.checked_sub(usize::try_from(index.unsigned_abs()).ok()?)
    }
}

fn step_definite<'a>(node: &'a Value, segment: &Segment) -> Option<&'a Value> {
    match (segment, node) {
        (Segment::Field(name), Value::Object(map)) => map.get(name),
        (Segment::Index(index), Value::Array(items)) => {
            items.get(resolve_index(*index, items.len())?)
        }
        _ => None,
    }
}

fn step_indefinite<'a>(node: &'a Value, segment: &Segment) -> Vec<&'a Value> {
    match (segment, node) {
        (Segment::Wildcard, Value::Object(map)) => map.values().collect(),
        (Segment::Wildcard, Value::Array(items)) => items.iter().collect(),
        (Segment::Slice { start, end }, Value::Array(items)) => {
            let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let clamp = |v: i64| if v < 0 { (len + v).max(0) } else { v.min(len) };
            let from = clamp(start.unwrap_or(0));
            let to = clamp(end.unwrap_or(len));
            (from..to)
                .filter_map(|i| usize::try_from(i).ok().and_then(|i| items.get(i)))
                .collect()
        }
        (segment, node) => step_definite(node, segment).into_iter().collect(),
    }
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, input: &Value) -> Option<Value> {
        Path::parse(path)
            .expect("test paths are valid")
            .select(input, &json!({}))
    }

    #[test]
    fn reference_paths_from_the_aws_paths_page() {
        // https://docs.aws.amazon.com/step-functions/latest/dg/amazon-states-language-paths.html
        let input = json!({"foo": 123, "bar": ["a", "b", "c"], "car": {"cdr": true}});
        assert_eq!(sel("$.foo", &input), Some(json!(123)));
        assert_eq!(sel("$.bar", &input), Some(json!(["a", "b", "c"])));
        assert_eq!(sel("$.car.cdr", &input), Some(json!(true)));
        assert_eq!(sel("$['car']['cdr']", &input), Some(json!(true)));
        assert_eq!(sel("$.bar[1]", &input), Some(json!("b")));
        assert_eq!(sel("$", &input), Some(input.clone()));
        assert_eq!(sel("$.missing", &input), None);
        assert_eq!(sel("$.bar[7]", &input), None);
        assert_eq!(sel("$.foo.deeper", &input), None);
    }

    #[test]
    fn slices_and_wildcards_yield_arrays() {
        let input = json!({"a": [1, 2, 3, 4], "o": {"x": 1, "y": 2}});
        assert_eq!(sel("$.a[0:2]", &input), Some(json!([1, 2])));
        assert_eq!(sel("$.a[-2:]", &input), Some(json!([3, 4])));
        assert_eq!(sel("$.a[*]", &input), Some(json!([1, 2, 3, 4])));
        assert_eq!(sel("$.o.*", &input), Some(json!([1, 2])));
        assert_eq!(sel("$.a[-1]", &input), Some(json!(4)));
    }

    #[test]
    fn refuses_what_it_does_not_implement() {
        for bad in [
            "$..a",
            "$.a[?(@.b)]",
            "$.a[0,1]",
            "$.a.length()",
            "a.b",
            "$.a[",
            "$.a[::2]",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn reference_path_classification() {
        assert!(Path::parse("$.a[0]['b']").unwrap().is_reference());
        assert!(!Path::parse("$.a[*]").unwrap().is_reference());
        assert!(!Path::parse("$.a[-1]").unwrap().is_reference());
    }

    #[test]
    fn set_creates_intermediate_objects_and_rejects_type_clashes() {
        let p = Path::parse("$.a.b.c").unwrap();
        assert_eq!(
            p.set(json!({}), json!(1)),
            Ok(json!({"a": {"b": {"c": 1}}}))
        );
        assert!(p.set(json!({"a": "str"}), json!(1)).is_err());
        assert!(p.set(json!("scalar"), json!(1)).is_err());
        let idx = Path::parse("$.list[1]").unwrap();
        assert_eq!(
            idx.set(json!({"list": [0, 0]}), json!(9)),
            Ok(json!({"list": [0, 9]}))
        );
        assert!(idx.set(json!({"list": [0]}), json!(9)).is_err());
        assert_eq!(Path::root().set(json!({"x": 1}), json!(2)), Ok(json!(2)));
    }
}
