//! Lambda FilterCriteria for stream events (EventBridge pattern syntax), applied to a record as
//! the `lambda` format shows it.
//!
//! A [`FilterCriteria`] holds up to [`MAX_PATTERNS`] patterns, each the JSON text a user copies
//! from a Lambda event source mapping (at most [`MAX_PATTERN_CHARS`] characters). A record passes
//! when any pattern matches it; criteria without patterns pass every record.
//!
//! # What a pattern is matched against
//!
//! [`filter_input`] builds it from a [`SourceRecord`]; [`FilterCriteria::matches_record`] does
//! both steps.
//!
//! - DynamoDB: the record exactly as the `lambda` format writes it (`eventName`, `eventSource`,
//!   `awsRegion`, ..., `dynamodb.Keys`/`NewImage`/`OldImage` in typed JSON, `{"N": "12.5"}`).
//! - Kinesis: the record's `kinesis` object as the `lambda` format writes it
//!   (`kinesisSchemaVersion`, `partitionKey`, `sequenceNumber`, `approximateArrivalTimestamp`),
//!   with `data` replaced by the payload parsed as JSON, or left out when the payload is not
//!   JSON. This is how Lambda's documentation addresses Kinesis records: `{"partitionKey":
//!   ["1"], "data": {"Location": ["Los Angeles"]}}`, not `{"kinesis": {...}}`.
//!
//! # Matching rules (EventBridge's, as Lambda documents them)
//!
//! - Every field named in a pattern must match (AND); fields the pattern does not name are
//!   ignored. A field's array lists alternatives (OR). `"$or": [{...}, {...}]` (at least two
//!   objects) matches when any of its objects matches at that level.
//! - Values match by type: a string only a string (character by character), a number only a
//!   number, `true`/`false` only that boolean, `null` only `null`; `""` only the empty string.
//!   Numbers compare numerically (`5` matches `5.0` and `5e0`), as EventBridge's matching engine
//!   (Event Ruler) does, although Lambda's note says "300, 300.0, and 3.0e2 are not considered
//!   equal"; `{"numeric": ["=", 300]}` is numeric under either reading.
//! - `prefix`, `suffix`, `equals-ignore-case` (also inside `prefix` and `suffix`) only match
//!   strings. `numeric` (`=`, `<`, `<=`, `>`, `>=`, or a lower then an upper bound) only matches
//!   JSON numbers, so never DynamoDB's `{"N": "12.5"}`, a string (Lambda documents that numeric
//!   operators do not work on DynamoDB records).
//! - `anything-but` (a string, a number, a list of strings or of numbers, or `{"prefix"|"suffix"|
//!   "equals-ignore-case": string or list}`) matches any present value, of any type, that is not
//!   excluded; it never matches a missing field.
//! - `exists` looks at leaf values only: `{"exists": true}` matches a field with a value other
//!   than an object (null included); `{"exists": false}` matches a missing field, an empty array
//!   and an object (an intermediate node). Every other matcher fails on a missing field.
//! - Arrays in the event: a leaf matches when any element matches (nested arrays are
//!   flattened); a nested pattern applied to an array matches when one element matches it as a
//!   whole.
//! - The data key (`data` for Kinesis, `dynamodb` for DynamoDB) must be filtered with an object
//!   pattern, and such a pattern fails when the record has no data to look at (a Kinesis payload
//!   that is not JSON), as Lambda drops those records.
//! - EventBridge's `wildcard` and `cidr`, which Lambda's filter syntax does not list, are
//!   rejected, as are unknown operators.
//! - A key given twice in one object: nested objects are merged, otherwise the last one is used
//!   (EventBridge documents this; Lambda's DynamoDB guide relies on it to AND conditions on
//!   `NewImage` and `OldImage`).

use serde_json::{Map, Number, Value};

use crate::format::{encode, FormatKind};
use crate::source::record::SourceRecord;

/// Lambda's default limit of filters per event source mapping.
pub const MAX_PATTERNS: usize = 5;

/// Lambda's limit on the length of one filter pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 4096;

/// The keys Lambda calls data properties on stream records: they must hold JSON.
const DATA_KEYS: [&str; 2] = ["data", "dynamodb"];

/// Operator names, which cannot be field names inside `$or` (as in EventBridge).
const RESERVED: [&str; 14] = [
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
];

/// Up to [`MAX_PATTERNS`] patterns; a record passes when ANY pattern matches. No patterns:
/// everything passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<Fields>,
}

/// A pattern that Lambda would refuse. `index` is the pattern's position in the list (from 0),
/// `path` the dot-separated field path inside it (`$or[1]` for an element of `$or`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "{count} filter patterns: Lambda allows at most {MAX_PATTERNS} per event source mapping"
    )]
    TooManyPatterns { count: usize },
    #[error("pattern {index}: {chars} characters, more than Lambda's {MAX_PATTERN_CHARS}")]
    TooLong { index: usize, chars: usize },
    #[error("pattern {index}: not JSON: {message}")]
    Syntax { index: usize, message: String },
    #[error("pattern {index}: {}{message}", at(.path))]
    Invalid {
        index: usize,
        path: String,
        message: String,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

impl FilterCriteria {
    /// Each element: one pattern as the JSON text a user copies from a Lambda mapping (e.g.
    /// `{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["open"]}}}}`).
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<FilterCriteria, FilterError> {
        check_count(patterns.len())?;
        let mut compiled = Vec::with_capacity(patterns.len());
        for (index, text) in patterns.iter().enumerate() {
            let text = text.as_ref();
            check_length(index, text)?;
            let json =
                parse_json(text).map_err(|message| FilterError::Syntax { index, message })?;
            compiled.push(Compiler { index }.pattern(&json)?);
        }
        Ok(FilterCriteria { patterns: compiled })
    }

    /// The same from already-parsed JSON values (the config layer's inline tables). The length
    /// limit applies to the value written as compact JSON.
    pub fn from_values(patterns: &[Value]) -> Result<FilterCriteria, FilterError> {
        check_count(patterns.len())?;
        let mut compiled = Vec::with_capacity(patterns.len());
        for (index, value) in patterns.iter().enumerate() {
            check_length(index, &value.to_string())?;
            compiled.push(Compiler { index }.pattern(&Json::from(value))?);
        }
        Ok(FilterCriteria { patterns: compiled })
    }

    /// No patterns: every record passes.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `event`, a record as [`filter_input`] builds it, passes.
    pub fn matches(&self, event: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(Some(event)))
    }

    /// Whether `record` passes; builds its [`filter_input`] only when there are patterns.
    pub fn matches_record(&self, record: &SourceRecord) -> bool {
        self.patterns.is_empty() || self.matches(&filter_input(record))
    }
}

/// What Lambda matches patterns against (see the module documentation): a DynamoDB record as the
/// `lambda` format shows it; for Kinesis, the `lambda` format's `kinesis` object with `data`
/// parsed as JSON, or without `data` when the payload is not JSON.
pub fn filter_input(record: &SourceRecord) -> Value {
    let mut out = Vec::new();
    encode(FormatKind::Lambda, record, &mut out).expect("the lambda format encodes every record");
    let mut event: Value = serde_json::from_slice(&out).expect("the lambda format writes JSON");
    match record {
        SourceRecord::DynamoDb(_) => event,
        SourceRecord::Kinesis(kinesis) => {
            let mut fields = match event.get_mut("kinesis").map(Value::take) {
                Some(Value::Object(fields)) => fields,
                _ => Map::new(),
            };
            match serde_json::from_slice::<Value>(&kinesis.data) {
                Ok(data) => fields.insert("data".to_string(), data),
                Err(_) => fields.remove("data"),
            };
            Value::Object(fields)
        }
    }
}

fn check_count(count: usize) -> Result<(), FilterError> {
    if count > MAX_PATTERNS {
        return Err(FilterError::TooManyPatterns { count });
    }
    Ok(())
}

fn check_length(index: usize, text: &str) -> Result<(), FilterError> {
    let chars = text.chars().count();
    if chars > MAX_PATTERN_CHARS {
        return Err(FilterError::TooLong { index, chars });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Compiled patterns and matching.

/// The fields of one object level of a pattern; all must match.
#[derive(Clone, Debug, PartialEq)]
struct Fields(Vec<Field>);

#[derive(Clone, Debug, PartialEq)]
enum Field {
    /// A field of the event. `required`: a data key, which fails when the event has no data.
    Key {
        name: String,
        node: Node,
        required: bool,
    },
    /// `$or`: any of the branches, each a set of fields at this same level.
    Or(Vec<Fields>),
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Alternatives for the field's leaf values.
    Leaf(Vec<Matcher>),
    /// A nested pattern for an object-valued field.
    Object(Fields),
}

#[derive(Clone, Debug, PartialEq)]
enum Literal {
    String(String),
    Number(Number),
    Bool(bool),
    Null,
}

#[derive(Clone, Debug, PartialEq)]
enum Matcher {
    Equals(Literal),
    /// Lowercased.
    EqualsIgnoreCase(String),
    Prefix(String),
    /// Lowercased.
    PrefixIgnoreCase(String),
    Suffix(String),
    /// Lowercased.
    SuffixIgnoreCase(String),
    AnythingBut(Exclusion),
    Numeric(Range),
    Exists(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Exclusion {
    /// Only strings or only numbers.
    Values(Vec<Literal>),
    Prefixes(Vec<String>),
    Suffixes(Vec<String>),
    /// Lowercased.
    IgnoreCase(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
struct Bound {
    value: f64,
    inclusive: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Range {
    lower: Option<Bound>,
    upper: Option<Bound>,
}

impl Fields {
    /// Matches a value; an array matches when one of its elements does.
    fn matches(&self, value: Option<&Value>) -> bool {
        match value {
            Some(Value::Array(items)) if !items.is_empty() => {
                items.iter().any(|item| self.matches(Some(item)))
            }
            Some(Value::Object(object)) => self.matches_object(Some(object)),
            // A scalar, an empty array or nothing: no fields to look at.
            _ => self.matches_object(None),
        }
    }

    fn matches_object(&self, object: Option<&Map<String, Value>>) -> bool {
        self.0.iter().all(|field| match field {
            Field::Key {
                name,
                node,
                required,
            } => {
                let value = object.and_then(|o| o.get(name));
                (value.is_some() || !required) && node.matches(value)
            }
            Field::Or(branches) => branches.iter().any(|b| b.matches_object(object)),
        })
    }
}

impl Node {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            Node::Object(fields) => fields.matches(value),
            Node::Leaf(matchers) => {
                let mut leaves = Vec::new();
                if let Some(value) = value {
                    collect_leaves(value, &mut leaves);
                }
                matchers.iter().any(|m| m.matches(&leaves))
            }
        }
    }
}

/// The leaf values at a field: the value itself, or an array's non-object elements (nested
/// arrays flattened). An object is an intermediate node and has none.
fn collect_leaves<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(_) => {}
        Value::Array(items) => items.iter().for_each(|item| collect_leaves(item, out)),
        leaf => out.push(leaf),
    }
}

impl Matcher {
    fn matches(&self, leaves: &[&Value]) -> bool {
        match self {
            Matcher::Exists(exists) => leaves.is_empty() != *exists,
            _ => leaves.iter().any(|leaf| self.matches_leaf(leaf)),
        }
    }

    fn matches_leaf(&self, leaf: &Value) -> bool {
        match self {
            Matcher::Equals(literal) => literal.equals(leaf),
            Matcher::EqualsIgnoreCase(s) => leaf.as_str().is_some_and(|v| v.to_lowercase() == *s),
            Matcher::Prefix(p) => leaf.as_str().is_some_and(|v| v.starts_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => leaf
                .as_str()
                .is_some_and(|v| v.to_lowercase().starts_with(p.as_str())),
            Matcher::Suffix(p) => leaf.as_str().is_some_and(|v| v.ends_with(p.as_str())),
            Matcher::SuffixIgnoreCase(p) => leaf
                .as_str()
                .is_some_and(|v| v.to_lowercase().ends_with(p.as_str())),
            Matcher::AnythingBut(exclusion) => !exclusion.excludes(leaf),
            Matcher::Numeric(range) => match leaf {
                Value::Number(n) => n.as_f64().is_some_and(|v| range.contains(v)),
                _ => false,
            },
            Matcher::Exists(_) => true,
        }
    }
}

impl Literal {
    fn equals(&self, leaf: &Value) -> bool {
        match (self, leaf) {
            (Literal::String(a), Value::String(b)) => a == b,
            (Literal::Number(a), Value::Number(b)) => same_number(a, b),
            (Literal::Bool(a), Value::Bool(b)) => a == b,
            (Literal::Null, Value::Null) => true,
            _ => false,
        }
    }
}

impl Exclusion {
    fn excludes(&self, leaf: &Value) -> bool {
        let text = leaf.as_str();
        match self {
            Exclusion::Values(values) => values.iter().any(|v| v.equals(leaf)),
            Exclusion::Prefixes(ps) => {
                text.is_some_and(|t| ps.iter().any(|p| t.starts_with(p.as_str())))
            }
            Exclusion::Suffixes(ss) => {
                text.is_some_and(|t| ss.iter().any(|s| t.ends_with(s.as_str())))
            }
            Exclusion::IgnoreCase(vs) => text.is_some_and(|t| vs.contains(&t.to_lowercase())),
        }
    }
}

impl Range {
    fn contains(&self, v: f64) -> bool {
        let above = self.lower.as_ref().map_or(true, |b| {
            if b.inclusive {
                v >= b.value
            } else {
                v > b.value
            }
        });
        let below = self.upper.as_ref().map_or(true, |b| {
            if b.inclusive {
                v <= b.value
            } else {
                v < b.value
            }
        });
        v.is_finite() && above && below
    }
}

/// Numeric equality: integers written as integers compare exactly, anything else as doubles
/// (as EventBridge's engine does), so `5`, `5.0` and `5e0` are equal.
fn same_number(a: &Number, b: &Number) -> bool {
    let (ta, tb) = (a.to_string(), b.to_string());
    if ta == tb {
        return true;
    }
    if is_integer_text(&ta) && is_integer_text(&tb) {
        // JSON integers have no leading zeros: the text is canonical but for "-0".
        return (ta == "-0" || ta == "0") && (tb == "-0" || tb == "0");
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.is_finite() && x == y,
        _ => false,
    }
}

fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Compiling patterns.

/// A parsed JSON value that keeps every member of an object, duplicates included.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(s.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(members) => Json::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::from(v)))
                    .collect(),
            ),
        }
    }
}

/// "a string", "an array", ...: for messages.
fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Compiles the pattern at `index` of the list.
struct Compiler {
    index: usize,
}

impl Compiler {
    fn invalid(&self, path: &str, message: impl Into<String>) -> FilterError {
        FilterError::Invalid {
            index: self.index,
            path: path.to_string(),
            message: message.into(),
        }
    }

    fn pattern(&self, json: &Json) -> Result<Fields, FilterError> {
        match json {
            Json::Object(members) => self.fields(members, "", true, false),
            other => Err(self.invalid(
                "",
                format!("a pattern must be a JSON object, not {}", kind(other)),
            )),
        }
    }

    /// `root`: the event's top level (where the data keys are). `in_or`: inside `$or`.
    fn fields(
        &self,
        members: &[(String, Json)],
        path: &str,
        root: bool,
        in_or: bool,
    ) -> Result<Fields, FilterError> {
        if members.is_empty() {
            return Err(self.invalid(path, "an empty object is not allowed"));
        }
        let mut fields = Vec::new();
        for (name, value) in members {
            if name == "$or" {
                fields.push(Field::Or(self.or(value, path, root)?));
                continue;
            }
            let child = join(path, name);
            if in_or && RESERVED.contains(&name.as_str()) {
                return Err(self.invalid(
                    &child,
                    format!("\"{name}\" is an operator and cannot be a field name inside \"$or\""),
                ));
            }
            let required = root && DATA_KEYS.contains(&name.as_str());
            let node = match value {
                Json::Object(members) => Node::Object(self.fields(members, &child, false, in_or)?),
                Json::Array(_) if required => {
                    return Err(self.invalid(
                        &child,
                        "the data properties of a stream record must be filtered with an \
                         object of fields (Lambda rejects a non-JSON filter for them)",
                    ))
                }
                Json::Array(items) => Node::Leaf(self.leaf(items, &child)?),
                other => {
                    return Err(self.invalid(
                        &child,
                        format!(
                            "must be an array of values to match or an object of fields, not {}",
                            kind(other)
                        ),
                    ))
                }
            };
            insert(&mut fields, name, node, required);
        }
        Ok(Fields(fields))
    }

    fn or(&self, value: &Json, path: &str, root: bool) -> Result<Vec<Fields>, FilterError> {
        let here = join(path, "$or");
        let items = match value {
            Json::Array(items) if items.len() >= 2 => items,
            _ => {
                return Err(self.invalid(
                    &here,
                    "\"$or\" needs an array of at least two objects of fields",
                ))
            }
        };
        let mut branches = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let branch = format!("{here}[{i}]");
            match item {
                Json::Object(members) => branches.push(self.fields(members, &branch, root, true)?),
                other => {
                    return Err(self.invalid(
                        &branch,
                        format!("must be an object of fields, not {}", kind(other)),
                    ))
                }
            }
        }
        Ok(branches)
    }

    fn leaf(&self, items: &[Json], path: &str) -> Result<Vec<Matcher>, FilterError> {
        if items.is_empty() {
            return Err(self.invalid(path, "an empty array matches nothing and is not allowed"));
        }
        items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(Matcher::Equals(Literal::String(s.clone()))),
                Json::Number(n) => Ok(Matcher::Equals(Literal::Number(n.clone()))),
                Json::Bool(b) => Ok(Matcher::Equals(Literal::Bool(*b))),
                Json::Null => Ok(Matcher::Equals(Literal::Null)),
                Json::Object(members) => self.operator(members, path),
                Json::Array(_) => Err(self.invalid(
                    path,
                    "a value to match must be a string, a number, a boolean, null or an \
                     operator object, not an array",
                )),
            })
            .collect()
    }

    fn operator(&self, members: &[(String, Json)], path: &str) -> Result<Matcher, FilterError> {
        let (op, arg) = match members {
            [(op, arg)] => (op.as_str(), arg),
            _ => {
                return Err(self.invalid(
                    path,
                    format!(
                        "an operator object needs exactly one operator, found {}",
                        members.len()
                    ),
                ))
            }
        };
        match (op, arg) {
            ("exists", Json::Bool(b)) => Ok(Matcher::Exists(*b)),
            ("exists", _) => Err(self.invalid(path, "\"exists\" needs true or false")),
            ("equals-ignore-case", Json::String(s)) => {
                Ok(Matcher::EqualsIgnoreCase(s.to_lowercase()))
            }
            ("equals-ignore-case", _) => {
                Err(self.invalid(path, "\"equals-ignore-case\" needs a string"))
            }
            ("prefix", Json::String(s)) => Ok(Matcher::Prefix(s.clone())),
            ("suffix", Json::String(s)) => Ok(Matcher::Suffix(s.clone())),
            ("prefix" | "suffix", _) => match self.ignore_case_argument(arg) {
                Some(s) if op == "prefix" => Ok(Matcher::PrefixIgnoreCase(s)),
                Some(s) => Ok(Matcher::SuffixIgnoreCase(s)),
                None => Err(self.invalid(
                    path,
                    format!("\"{op}\" needs a string or {{\"equals-ignore-case\": string}}"),
                )),
            },
            ("anything-but", _) => Ok(Matcher::AnythingBut(self.anything_but(arg, path)?)),
            ("numeric", _) => Ok(Matcher::Numeric(self.numeric(arg, path)?)),
            _ => Err(self.invalid(
                path,
                format!(
                    "unknown operator \"{op}\" (Lambda supports prefix, suffix, \
                     equals-ignore-case, anything-but, numeric and exists)"
                ),
            )),
        }
    }

    /// `{"equals-ignore-case": "..."}` inside `prefix`/`suffix`: the lowercased string.
    fn ignore_case_argument(&self, arg: &Json) -> Option<String> {
        match arg {
            Json::Object(members) => match members.as_slice() {
                [(op, Json::String(s))] if op == "equals-ignore-case" => Some(s.to_lowercase()),
                _ => None,
            },
            _ => None,
        }
    }

    fn anything_but(&self, arg: &Json, path: &str) -> Result<Exclusion, FilterError> {
        match arg {
            Json::String(s) => Ok(Exclusion::Values(vec![Literal::String(s.clone())])),
            Json::Number(n) => Ok(Exclusion::Values(vec![Literal::Number(n.clone())])),
            Json::Array(items) => {
                let strings: Vec<Literal> = items
                    .iter()
                    .filter_map(|i| match i {
                        Json::String(s) => Some(Literal::String(s.clone())),
                        _ => None,
                    })
                    .collect();
                let numbers: Vec<Literal> = items
                    .iter()
                    .filter_map(|i| match i {
                        Json::Number(n) => Some(Literal::Number(n.clone())),
                        _ => None,
                    })
                    .collect();
                if items.is_empty() {
                    Err(self.invalid(path, "\"anything-but\" needs a non-empty list"))
                } else if strings.len() == items.len() {
                    Ok(Exclusion::Values(strings))
                } else if numbers.len() == items.len() {
                    Ok(Exclusion::Values(numbers))
                } else {
                    Err(self.invalid(
                        path,
                        "an \"anything-but\" list must hold only strings or only numbers",
                    ))
                }
            }
            Json::Object(members) => {
                let (op, value) =
                    match members.as_slice() {
                        [(op, value)] => (op.as_str(), value),
                        _ => return Err(self.invalid(
                            path,
                            "an \"anything-but\" object needs exactly one of prefix, suffix or \
                             equals-ignore-case",
                        )),
                    };
                if !matches!(op, "prefix" | "suffix" | "equals-ignore-case") {
                    return Err(self.invalid(
                        path,
                        format!(
                            "unsupported operator \"{op}\" inside \"anything-but\" (use prefix, \
                             suffix or equals-ignore-case)"
                        ),
                    ));
                }
                let strings = match value {
                    Json::String(s) => vec![s.clone()],
                    Json::Array(items) if !items.is_empty() => items
                        .iter()
                        .map(|i| match i {
                            Json::String(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<String>>>()
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                if strings.is_empty() {
                    return Err(self.invalid(
                        path,
                        format!(
                            "\"anything-but\" \"{op}\" needs a string or a non-empty list of \
                             strings"
                        ),
                    ));
                }
                if op != "equals-ignore-case" && strings.iter().any(String::is_empty) {
                    return Err(self.invalid(
                        path,
                        format!("\"anything-but\" \"{op}\" cannot be the empty string"),
                    ));
                }
                Ok(match op {
                    "prefix" => Exclusion::Prefixes(strings),
                    "suffix" => Exclusion::Suffixes(strings),
                    _ => Exclusion::IgnoreCase(strings.iter().map(|s| s.to_lowercase()).collect()),
                })
            }
            other => Err(self.invalid(
                path,
                format!(
                    "\"anything-but\" needs a string, a number, a list of either or an object, \
                     not {}",
                    kind(other)
                ),
            )),
        }
    }

    fn numeric(&self, arg: &Json, path: &str) -> Result<Range, FilterError> {
        const SHAPE: &str = "\"numeric\" needs an operator and a number, or a lower and an upper \
                             bound, like [\">\", 0, \"<=\", 5]";
        let items = match arg {
            Json::Array(items) if items.len() == 2 || items.len() == 4 => items,
            _ => return Err(self.invalid(path, SHAPE)),
        };
        let mut terms = Vec::with_capacity(2);
        for pair in items.chunks(2) {
            let op = match &pair[0] {
                Json::String(op) if matches!(op.as_str(), "=" | "<" | "<=" | ">" | ">=") => {
                    op.as_str()
                }
                Json::String(op) => {
                    return Err(self.invalid(
                        path,
                        format!("\"numeric\": unknown operator \"{op}\" (use =, <, <=, >, >=)"),
                    ))
                }
                other => {
                    return Err(self.invalid(
                        path,
                        format!(
                            "\"numeric\": expected an operator (=, <, <=, >, >=), found {}",
                            kind(other)
                        ),
                    ))
                }
            };
            let value = match &pair[1] {
                Json::Number(n) => match n.as_f64() {
                    Some(v) if v.is_finite() => v,
                    _ => {
                        return Err(self.invalid(path, format!("\"numeric\": {n} is out of range")))
                    }
                },
                other => {
                    return Err(self.invalid(
                        path,
                        format!("\"numeric\": \"{op}\" needs a number, not {}", kind(other)),
                    ))
                }
            };
            terms.push((op, value));
        }
        let bound = |value, inclusive| Some(Bound { value, inclusive });
        match terms.as_slice() {
            [("=", v)] => Ok(Range {
                lower: bound(*v, true),
                upper: bound(*v, true),
            }),
            [(op @ (">" | ">="), v)] => Ok(Range {
                lower: bound(*v, *op == ">="),
                upper: None,
            }),
            [(op @ ("<" | "<="), v)] => Ok(Range {
                lower: None,
                upper: bound(*v, *op == "<="),
            }),
            [(low @ (">" | ">="), l), (high @ ("<" | "<="), h)] => {
                if l >= h {
                    return Err(self.invalid(
                        path,
                        format!(
                            "\"numeric\": the lower bound {l} must be less than the upper bound \
                             {h}"
                        ),
                    ));
                }
                Ok(Range {
                    lower: bound(*l, *low == ">="),
                    upper: bound(*h, *high == "<="),
                })
            }
            _ => Err(self.invalid(
                path,
                "\"numeric\": a range is a lower bound (\">\" or \">=\") then an upper bound \
                 (\"<\" or \"<=\")",
            )),
        }
    }
}

/// Adds a field; a name already present at this level is merged (both objects) or replaced.
fn insert(fields: &mut Vec<Field>, name: &str, node: Node, required: bool) {
    for field in fields.iter_mut() {
        if let Field::Key {
            name: existing_name,
            node: existing,
            ..
        } = field
        {
            if existing_name == name {
                match (existing, node) {
                    (Node::Object(into), Node::Object(from)) => {
                        for f in from.0 {
                            match f {
                                Field::Key {
                                    name,
                                    node,
                                    required,
                                } => insert(&mut into.0, &name, node, required),
                                or => into.0.push(or),
                            }
                        }
                    }
                    (slot, node) => *slot = node,
                }
                return;
            }
        }
    }
    fields.push(Field::Key {
        name: name.to_string(),
        node,
        required,
    });
}

// ---------------------------------------------------------------------------------------------
// Pattern text, read with duplicate keys kept.

/// Parses a pattern's text. serde_json checks the syntax (and words the error); a small
/// scanner then reads the value keeping duplicate keys, which serde_json's maps would drop.
fn parse_json(text: &str) -> Result<Json, String> {
    serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?;
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    scanner.value()
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next(&mut self) -> Result<u8, String> {
        self.skip_whitespace();
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| "unexpected end".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut members = Vec::new();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    let key = self.string()?;
                    if self.next()? != b':' {
                        return Err(format!("expected ':' at byte {}", self.pos));
                    }
                    members.push((key, self.value()?));
                    match self.next()? {
                        b',' => {}
                        b'}' => return Ok(Json::Object(members)),
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.pos)),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    match self.next()? {
                        b',' => {}
                        b']' => return Ok(Json::Array(items)),
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.pos)),
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(_) => {
                let start = self.pos;
                while matches!(
                    self.bytes.get(self.pos),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.pos += 1;
                }
                serde_json::from_str::<Number>(&self.text[start..self.pos])
                    .map(Json::Number)
                    .map_err(|e| e.to_string())
            }
            None => Err("unexpected end".to_string()),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(format!("unexpected input at byte {}", self.pos))
        }
    }

    /// A string token, unescaped by serde_json.
    fn string(&mut self) -> Result<String, String> {
        self.skip_whitespace();
        let start = self.pos;
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.pos));
        }
        self.pos += 1;
        loop {
            match self.bytes.get(self.pos) {
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.pos += 1,
                None => return Err("unterminated string".to_string()),
            }
        }
        serde_json::from_str(&self.text[start..self.pos]).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::record::{
        AttributeValue, ChangeRecord, Item, KinesisRecord, OperationType, SourceIdentity,
        StreamViewType,
    };
    use crate::source::sequence::SequenceNumber;
    use serde_json::json;

    /// (pattern, event, whether the event passes).
    type Case = (&'static str, &'static str, bool);

    /// Runs a table: each pattern, parsed from text and (when it has no duplicate keys) from a
    /// value, must give the expected answer on its event.
    fn check(cases: &[Case]) {
        for (i, (pattern, event, expected)) in cases.iter().enumerate() {
            let from_text = FilterCriteria::parse(&[*pattern])
                .unwrap_or_else(|e| panic!("case {i}: {pattern}: {e}"));
            let event: Value = serde_json::from_str(event)
                .unwrap_or_else(|e| panic!("case {i}: event is not JSON: {e}"));
            assert_eq!(
                from_text.matches(&event),
                *expected,
                "case {i}: pattern {pattern} on event {event}"
            );
            let value: Value = serde_json::from_str(pattern).unwrap();
            let from_value = FilterCriteria::from_values(&[value]).unwrap();
            assert_eq!(
                from_value.matches(&event),
                *expected,
                "case {i} (from a value): pattern {pattern} on event {event}"
            );
        }
    }

    /// Like [`check`], for patterns with duplicate keys (which only the text keeps).
    fn check_text(cases: &[Case]) {
        for (i, (pattern, event, expected)) in cases.iter().enumerate() {
            let criteria = FilterCriteria::parse(&[*pattern])
                .unwrap_or_else(|e| panic!("case {i}: {pattern}: {e}"));
            let event: Value = serde_json::from_str(event).unwrap();
            assert_eq!(
                criteria.matches(&event),
                *expected,
                "case {i}: pattern {pattern} on event {event}"
            );
        }
    }

    fn error(pattern: &str) -> String {
        match FilterCriteria::parse(&[pattern]) {
            Ok(_) => panic!("accepted: {pattern}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn equals_strings() {
        check(&[
            // Lambda "Equals": "Name": [ "Alice" ] matches Name "Alice".
            (r#"{"Name": ["Alice"]}"#, r#"{"Name": "Alice"}"#, true),
            // Lambda: exact character-by-character matching without case-folding.
            (r#"{"Name": ["Alice"]}"#, r#"{"Name": "alice"}"#, false),
            // Lambda: ... or any other string normalization.
            (r#"{"Name": ["Alice"]}"#, r#"{"Name": "Alice "}"#, false),
            // Lambda "Or": "PaymentType": [ "Credit", "Debit" ] matches either value.
            (
                r#"{"PaymentType": ["Credit", "Debit"]}"#,
                r#"{"PaymentType": "Debit"}"#,
                true,
            ),
            (
                r#"{"PaymentType": ["Credit", "Debit"]}"#,
                r#"{"PaymentType": "Cash"}"#,
                false,
            ),
            // Lambda: the event must contain all the field names included in a filter.
            (r#"{"Name": ["Alice"]}"#, r#"{"Other": "Alice"}"#, false),
            // Lambda: fields the filter does not include are ignored.
            (
                r#"{"Name": ["Alice"]}"#,
                r#"{"Name": "Alice", "Age": 30}"#,
                true,
            ),
            // EventBridge: values follow JSON rules: the string "true" is not the keyword true.
            (r#"{"flag": ["true"]}"#, r#"{"flag": true}"#, false),
            // ... nor is the string "30" the number 30.
            (r#"{"Age": ["30"]}"#, r#"{"Age": 30}"#, false),
            // Strings compare after JSON unescaping, in pattern and event alike.
            (
                r#"{"city": ["Z\u00fcrich"]}"#,
                r#"{"city": "Zürich"}"#,
                true,
            ),
            (r#"{"q": ["a\"b"]}"#, r#"{"q": "a\u0022b"}"#, true),
        ]);
    }

    #[test]
    fn and_across_fields() {
        check(&[
            // Lambda "And": "Location": [ "New York" ], "Day": [ "Monday" ]: both must match.
            (
                r#"{"Location": ["New York"], "Day": ["Monday"]}"#,
                r#"{"Location": "New York", "Day": "Monday"}"#,
                true,
            ),
            (
                r#"{"Location": ["New York"], "Day": ["Monday"]}"#,
                r#"{"Location": "New York", "Day": "Tuesday"}"#,
                false,
            ),
            (
                r#"{"Location": ["New York"], "Day": ["Monday"]}"#,
                r#"{"Location": "New York"}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn numbers_booleans_null_and_empty() {
        check(&[
            // Lambda console example: { "Metadata": [ 1, 2 ] } passes Metadata equal to 1 or 2.
            (r#"{"Metadata": [1, 2]}"#, r#"{"Metadata": 2}"#, true),
            (r#"{"Metadata": [1, 2]}"#, r#"{"Metadata": 3}"#, false),
            // JSON rules: the number 1 is not the string "1".
            (r#"{"Metadata": [1, 2]}"#, r#"{"Metadata": "1"}"#, false),
            // EventBridge's engine adds numeric equality to exact numbers, so 300 matches 300.0
            // and 3.0e2 (Lambda's note says they differ; this follows the engine, see above).
            (r#"{"Price": [300]}"#, r#"{"Price": 300.0}"#, true),
            (r#"{"Price": [300]}"#, r#"{"Price": 3.0e2}"#, true),
            (r#"{"Price": [3.0e2]}"#, r#"{"Price": 300}"#, true),
            (r#"{"Price": [300.5]}"#, r#"{"Price": 300}"#, false),
            (r#"{"Price": [-1.5]}"#, r#"{"Price": -1.50}"#, true),
            (r#"{"Price": [0]}"#, r#"{"Price": -0}"#, true),
            (r#"{"Price": [0]}"#, r#"{"Price": 0.0}"#, true),
            (r#"{"Price": [10]}"#, r#"{"Price": 1}"#, false),
            // Integers beyond a double's precision still compare exactly.
            (
                r#"{"id": [12345678901234567890123]}"#,
                r#"{"id": 12345678901234567890124}"#,
                false,
            ),
            (
                r#"{"id": [12345678901234567890123]}"#,
                r#"{"id": 12345678901234567890123}"#,
                true,
            ),
            // CDK FilterRule.isEqual(true) on a DynamoDB BOOL: booleans match booleans.
            (r#"{"BOOL": [true]}"#, r#"{"BOOL": true}"#, true),
            (r#"{"BOOL": [true]}"#, r#"{"BOOL": false}"#, false),
            (r#"{"BOOL": [false]}"#, r#"{"BOOL": 0}"#, false),
            // Lambda "Null": "UserID": [ null ] matches UserID null ...
            (r#"{"UserID": [null]}"#, r#"{"UserID": null}"#, true),
            // ... not a missing UserID, the string "null" or the empty string.
            (r#"{"UserID": [null]}"#, r#"{"Other": 1}"#, false),
            (r#"{"UserID": [null]}"#, r#"{"UserID": "null"}"#, false),
            (r#"{"UserID": [null]}"#, r#"{"UserID": ""}"#, false),
            // Lambda "Empty": "LastName": [ "" ] matches LastName "" ...
            (r#"{"LastName": [""]}"#, r#"{"LastName": ""}"#, true),
            // ... not null, a missing LastName or a blank.
            (r#"{"LastName": [""]}"#, r#"{"LastName": null}"#, false),
            (r#"{"LastName": [""]}"#, r#"{"FirstName": ""}"#, false),
            (r#"{"LastName": [""]}"#, r#"{"LastName": " "}"#, false),
            // Null or a value: "UserID": [ null, "u-1" ].
            (r#"{"UserID": [null, "u-1"]}"#, r#"{"UserID": "u-1"}"#, true),
        ]);
    }

    #[test]
    fn prefix_and_suffix() {
        check(&[
            // Lambda "Begins with": "Region": [ {"prefix": "us-" } ]: Region is in the US.
            (
                r#"{"Region": [{"prefix": "us-"}]}"#,
                r#"{"Region": "us-east-1"}"#,
                true,
            ),
            (
                r#"{"Region": [{"prefix": "us-"}]}"#,
                r#"{"Region": "eu-west-1"}"#,
                false,
            ),
            (
                r#"{"Region": [{"prefix": "us-"}]}"#,
                r#"{"Region": "US-EAST-1"}"#,
                false,
            ),
            (
                r#"{"Region": [{"prefix": "us-"}]}"#,
                r#"{"Region": "us-"}"#,
                true,
            ),
            (
                r#"{"Region": [{"prefix": "us-"}]}"#,
                r#"{"Zone": "us-east-1"}"#,
                false,
            ),
            // EventBridge: "time": [ { "prefix": "2017-10-02" } ] matches "2017-10-02T18:43:48Z".
            (
                r#"{"time": [{"prefix": "2017-10-02"}]}"#,
                r#"{"time": "2017-10-02T18:43:48Z"}"#,
                true,
            ),
            // EventBridge: prefix matching works on string values only.
            (r#"{"code": [{"prefix": "12"}]}"#, r#"{"code": 123}"#, false),
            // EventBridge: prefix with equals-ignore-case: "EventB" matches EVENTB, eventb, ...
            (
                r#"{"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}"#,
                r#"{"service": "eventbridge"}"#,
                true,
            ),
            (
                r#"{"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}"#,
                r#"{"service": "EVENTBRIDGE"}"#,
                true,
            ),
            (
                r#"{"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}"#,
                r#"{"service": "Event"}"#,
                false,
            ),
            // Lambda "Ends with": "FileName": [ { "suffix": ".png" } ].
            (
                r#"{"FileName": [{"suffix": ".png"}]}"#,
                r#"{"FileName": "cat.png"}"#,
                true,
            ),
            (
                r#"{"FileName": [{"suffix": ".png"}]}"#,
                r#"{"FileName": "cat.jpg"}"#,
                false,
            ),
            (
                r#"{"FileName": [{"suffix": ".png"}]}"#,
                r#"{"FileName": "cat.PNG"}"#,
                false,
            ),
            // EventBridge: suffix with equals-ignore-case matches .PNG too.
            (
                r#"{"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}"#,
                r#"{"FileName": "CAT.PNG"}"#,
                true,
            ),
            (
                r#"{"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}"#,
                r#"{"FileName": "cat.gif"}"#,
                false,
            ),
            // EventBridge: suffix matching works on string values only.
            (r#"{"n": [{"suffix": "5"}]}"#, r#"{"n": 125}"#, false),
            // A field's alternatives may mix operators and values.
            (
                r#"{"Region": [{"prefix": "us-"}, "eu-west-1"]}"#,
                r#"{"Region": "eu-west-1"}"#,
                true,
            ),
        ]);
    }

    #[test]
    fn equals_ignore_case() {
        check(&[
            // Lambda "Equals (ignore case)": "Name": [ { "equals-ignore-case": "alice" } ].
            (
                r#"{"Name": [{"equals-ignore-case": "alice"}]}"#,
                r#"{"Name": "Alice"}"#,
                true,
            ),
            (
                r#"{"Name": [{"equals-ignore-case": "alice"}]}"#,
                r#"{"Name": "ALICE"}"#,
                true,
            ),
            (
                r#"{"Name": [{"equals-ignore-case": "alice"}]}"#,
                r#"{"Name": "Alicia"}"#,
                false,
            ),
            // EventBridge: equals-ignore-case works on string values only.
            (
                r#"{"Name": [{"equals-ignore-case": "true"}]}"#,
                r#"{"Name": true}"#,
                false,
            ),
            // Case folding is Unicode's, not only ASCII's.
            (
                r#"{"Name": [{"equals-ignore-case": "école"}]}"#,
                r#"{"Name": "ÉCOLE"}"#,
                true,
            ),
        ]);
    }

    #[test]
    fn anything_but() {
        check(&[
            // Lambda "Not": "Weather": [ { "anything-but": [ "Raining" ] } ].
            (
                r#"{"Weather": [{"anything-but": ["Raining"]}]}"#,
                r#"{"Weather": "Sunny"}"#,
                true,
            ),
            (
                r#"{"Weather": [{"anything-but": ["Raining"]}]}"#,
                r#"{"Weather": "Raining"}"#,
                false,
            ),
            // EventBridge: anything-but matches a value; a missing field is not one.
            (
                r#"{"Weather": [{"anything-but": ["Raining"]}]}"#,
                r#"{"Day": "Monday"}"#,
                false,
            ),
            // EventBridge: a single string: "state": [ { "anything-but": "initializing" } ].
            (
                r#"{"state": [{"anything-but": "initializing"}]}"#,
                r#"{"state": "running"}"#,
                true,
            ),
            (
                r#"{"state": [{"anything-but": "initializing"}]}"#,
                r#"{"state": "initializing"}"#,
                false,
            ),
            // EventBridge: a single number: "x-limit": [ { "anything-but": 123 } ].
            (
                r#"{"x-limit": [{"anything-but": 123}]}"#,
                r#"{"x-limit": 124}"#,
                true,
            ),
            (
                r#"{"x-limit": [{"anything-but": 123}]}"#,
                r#"{"x-limit": 123}"#,
                false,
            ),
            (
                r#"{"x-limit": [{"anything-but": 123}]}"#,
                r#"{"x-limit": 123.0}"#,
                false,
            ),
            // ... the string "123" is not the number 123, so it is not excluded.
            (
                r#"{"x-limit": [{"anything-but": 123}]}"#,
                r#"{"x-limit": "123"}"#,
                true,
            ),
            // EventBridge: a list of strings: [ "stopped", "overloaded" ].
            (
                r#"{"state": [{"anything-but": ["stopped", "overloaded"]}]}"#,
                r#"{"state": "overloaded"}"#,
                false,
            ),
            (
                r#"{"state": [{"anything-but": ["stopped", "overloaded"]}]}"#,
                r#"{"state": "running"}"#,
                true,
            ),
            // EventBridge: a list of numbers: [ 100, 200, 300 ].
            (
                r#"{"x-limit": [{"anything-but": [100, 200, 300]}]}"#,
                r#"{"x-limit": 200}"#,
                false,
            ),
            (
                r#"{"x-limit": [{"anything-but": [100, 200, 300]}]}"#,
                r#"{"x-limit": 250}"#,
                true,
            ),
            // EventBridge engine: values of another type are never excluded.
            (
                r#"{"state": [{"anything-but": "stopped"}]}"#,
                r#"{"state": 7}"#,
                true,
            ),
            (
                r#"{"state": [{"anything-but": "stopped"}]}"#,
                r#"{"state": null}"#,
                true,
            ),
            (
                r#"{"state": [{"anything-but": "stopped"}]}"#,
                r#"{"state": false}"#,
                true,
            ),
            // EventBridge: anything-but prefix: "state": [ { "anything-but": { "prefix": "init" } } ].
            (
                r#"{"state": [{"anything-but": {"prefix": "init"}}]}"#,
                r#"{"state": "initializing"}"#,
                false,
            ),
            (
                r#"{"state": [{"anything-but": {"prefix": "init"}}]}"#,
                r#"{"state": "running"}"#,
                true,
            ),
            // Lambda/EventBridge: "Region": [ { "anything-but": {"prefix": "us-" } } ]: not in the US.
            (
                r#"{"Region": [{"anything-but": {"prefix": "us-"}}]}"#,
                r#"{"Region": "eu-west-1"}"#,
                true,
            ),
            // EventBridge: a list of prefixes: [ "init", "error" ].
            (
                r#"{"state": [{"anything-but": {"prefix": ["init", "error"]}}]}"#,
                r#"{"state": "error: disk"}"#,
                false,
            ),
            // EventBridge: anything-but suffix: "FileName": [{"anything-but": {"suffix": ".png"}}].
            (
                r#"{"FileName": [{"anything-but": {"suffix": ".png"}}]}"#,
                r#"{"FileName": "cat.png"}"#,
                false,
            ),
            (
                r#"{"FileName": [{"anything-but": {"suffix": [".png", ".gif"]}}]}"#,
                r#"{"FileName": "cat.jpg"}"#,
                true,
            ),
            // EventBridge: anything-but ignore case: besides "initializing" in any casing.
            (
                r#"{"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}"#,
                r#"{"state": "INITIALIZING"}"#,
                false,
            ),
            (
                r#"{"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}"#,
                r#"{"state": "overloaded"}"#,
                false,
            ),
            (
                r#"{"state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]}"#,
                r#"{"state": "Running"}"#,
                true,
            ),
            // Arrays: matches when some element is not excluded.
            (
                r#"{"Weather": [{"anything-but": ["Raining"]}]}"#,
                r#"{"Weather": ["Raining", "Sunny"]}"#,
                true,
            ),
            (
                r#"{"Weather": [{"anything-but": ["Raining"]}]}"#,
                r#"{"Weather": ["Raining"]}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn numeric() {
        check(&[
            // Lambda "Numeric (equals)": "Price": [ { "numeric": [ "=", 100 ] } ].
            (
                r#"{"Price": [{"numeric": ["=", 100]}]}"#,
                r#"{"Price": 100}"#,
                true,
            ),
            (
                r#"{"Price": [{"numeric": ["=", 100]}]}"#,
                r#"{"Price": 100.0}"#,
                true,
            ),
            (
                r#"{"Price": [{"numeric": ["=", 100]}]}"#,
                r#"{"Price": 1e2}"#,
                true,
            ),
            (
                r#"{"Price": [{"numeric": ["=", 100]}]}"#,
                r#"{"Price": 101}"#,
                false,
            ),
            // EventBridge: numeric matching only works with values that are JSON numbers.
            (
                r#"{"Price": [{"numeric": ["=", 100]}]}"#,
                r#"{"Price": "100"}"#,
                false,
            ),
            (
                r#"{"Price": [{"numeric": [">", 0]}]}"#,
                r#"{"Price": true}"#,
                false,
            ),
            (
                r#"{"Price": [{"numeric": [">", 0]}]}"#,
                r#"{"Price": null}"#,
                false,
            ),
            (
                r#"{"Price": [{"numeric": [">", 0]}]}"#,
                r#"{"Cost": 5}"#,
                false,
            ),
            // Lambda "Numeric (range)": more than 10 and less than or equal to 20.
            (
                r#"{"Price": [{"numeric": [">", 10, "<=", 20]}]}"#,
                r#"{"Price": 10}"#,
                false,
            ),
            (
                r#"{"Price": [{"numeric": [">", 10, "<=", 20]}]}"#,
                r#"{"Price": 10.5}"#,
                true,
            ),
            (
                r#"{"Price": [{"numeric": [">", 10, "<=", 20]}]}"#,
                r#"{"Price": 20}"#,
                true,
            ),
            (
                r#"{"Price": [{"numeric": [">", 10, "<=", 20]}]}"#,
                r#"{"Price": 20.01}"#,
                false,
            ),
            // Lambda example: "Temperature" greater than 50 but less than or equal to 60.
            (
                r#"{"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}}"#,
                r#"{"data": {"Temperature": 55}}"#,
                true,
            ),
            (
                r#"{"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}}"#,
                r#"{"data": {"Temperature": 61}}"#,
                false,
            ),
            // EventBridge: "c-count": [ { "numeric": [ ">", 0, "<=", 5 ] } ] on c-count 5.
            (
                r#"{"c-count": [{"numeric": [">", 0, "<=", 5]}]}"#,
                r#"{"c-count": 5}"#,
                true,
            ),
            (
                r#"{"c-count": [{"numeric": [">", 0, "<=", 5]}]}"#,
                r#"{"c-count": 0}"#,
                false,
            ),
            // EventBridge: "d-count": [ { "numeric": [ "<", 10 ] } ] on d-count 3.
            (
                r#"{"d-count": [{"numeric": ["<", 10]}]}"#,
                r#"{"d-count": 3}"#,
                true,
            ),
            (
                r#"{"d-count": [{"numeric": ["<", 10]}]}"#,
                r#"{"d-count": 10}"#,
                false,
            ),
            // EventBridge: "x-limit": [ { "numeric": [ "=", 3.018e2 ] } ] on x-limit 301.8.
            (
                r#"{"x-limit": [{"numeric": ["=", 3.018e2]}]}"#,
                r#"{"x-limit": 301.8}"#,
                true,
            ),
            // Each operator at its boundary.
            (r#"{"n": [{"numeric": ["<=", 10]}]}"#, r#"{"n": 10}"#, true),
            (r#"{"n": [{"numeric": [">", 0]}]}"#, r#"{"n": 0}"#, false),
            (r#"{"n": [{"numeric": [">=", 0]}]}"#, r#"{"n": 0}"#, true),
            (
                r#"{"n": [{"numeric": [">=", 0]}]}"#,
                r#"{"n": -0.001}"#,
                false,
            ),
            (r#"{"n": [{"numeric": ["<", 0]}]}"#, r#"{"n": -5}"#, true),
            (
                r#"{"n": [{"numeric": [">=", 0, "<", 1]}]}"#,
                r#"{"n": 0}"#,
                true,
            ),
            (
                r#"{"n": [{"numeric": [">=", 0, "<", 1]}]}"#,
                r#"{"n": 1}"#,
                false,
            ),
            (
                r#"{"n": [{"numeric": [">", -1e9, "<", 1e9]}]}"#,
                r#"{"n": 123456}"#,
                true,
            ),
            // A number too large for a double is not in any range.
            (
                r#"{"n": [{"numeric": [">", 0]}]}"#,
                r#"{"n": 1e400}"#,
                false,
            ),
            // Alternatives: below 0 or above 100.
            (
                r#"{"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]}"#,
                r#"{"n": 150}"#,
                true,
            ),
            (
                r#"{"n": [{"numeric": ["<", 0]}, {"numeric": [">", 100]}]}"#,
                r#"{"n": 50}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn exists() {
        check(&[
            // Lambda "Exists": "ProductName": [ { "exists": true } ].
            (
                r#"{"ProductName": [{"exists": true}]}"#,
                r#"{"ProductName": "Pen"}"#,
                true,
            ),
            (
                r#"{"ProductName": [{"exists": true}]}"#,
                r#"{"Price": 1}"#,
                false,
            ),
            // EventBridge: null is a JSON value, so the field exists.
            (
                r#"{"ProductName": [{"exists": true}]}"#,
                r#"{"ProductName": null}"#,
                true,
            ),
            (
                r#"{"ProductName": [{"exists": true}]}"#,
                r#"{"ProductName": ""}"#,
                true,
            ),
            // Lambda "Does not exist": "ProductName": [ { "exists": false } ].
            (
                r#"{"ProductName": [{"exists": false}]}"#,
                r#"{"Price": 1}"#,
                true,
            ),
            (
                r#"{"ProductName": [{"exists": false}]}"#,
                r#"{"ProductName": "Pen"}"#,
                false,
            ),
            (
                r#"{"ProductName": [{"exists": false}]}"#,
                r#"{"ProductName": null}"#,
                false,
            ),
            // Lambda: Exists only works on leaf nodes: {"person": {"address": [{"exists": true}]}}
            // does not match when address is an object.
            (
                r#"{"person": {"address": [{"exists": true}]}}"#,
                r#"{"person": {"name": "John Doe", "age": 30, "address": {"street": "123 Main St", "city": "Anytown", "country": "USA"}}}"#,
                false,
            ),
            // Event Ruler: exists false on an intermediate node (c-count an object) matches.
            (
                r#"{"detail": {"c-count": [{"exists": false}]}}"#,
                r#"{"detail": {"state": "running", "c-count": {"c1": 100}}}"#,
                true,
            ),
            // Event Ruler: exists false matches an event without detail.c-count.
            (
                r#"{"detail": {"c-count": [{"exists": false}]}}"#,
                r#"{"detail": {"state": "running"}}"#,
                true,
            ),
            // ... also when the parent itself is missing: nothing is at the path.
            (
                r#"{"detail": {"c-count": [{"exists": false}]}}"#,
                r#"{"source": "x"}"#,
                true,
            ),
            (
                r#"{"detail": {"c-count": [{"exists": true}]}}"#,
                r#"{"source": "x"}"#,
                false,
            ),
            // An empty array has no leaf values; a non-empty one has.
            (r#"{"tags": [{"exists": true}]}"#, r#"{"tags": []}"#, false),
            (r#"{"tags": [{"exists": false}]}"#, r#"{"tags": []}"#, true),
            (
                r#"{"tags": [{"exists": true}]}"#,
                r#"{"tags": ["a"]}"#,
                true,
            ),
            // A value or absent: "ProductName": [ "Pen", { "exists": false } ].
            (
                r#"{"ProductName": ["Pen", {"exists": false}]}"#,
                r#"{"Price": 1}"#,
                true,
            ),
            (
                r#"{"ProductName": ["Pen", {"exists": false}]}"#,
                r#"{"ProductName": "Pen"}"#,
                true,
            ),
            (
                r#"{"ProductName": ["Pen", {"exists": false}]}"#,
                r#"{"ProductName": "Ink"}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn or_across_fields() {
        check(&[
            // Lambda "Or (multiple fields)": "$or": [ { "Location": [ "New York" ] }, { "Day": [ "Monday" ] } ].
            (
                r#"{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}"#,
                r#"{"Location": "New York", "Day": "Tuesday"}"#,
                true,
            ),
            (
                r#"{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}"#,
                r#"{"Location": "Boston", "Day": "Monday"}"#,
                true,
            ),
            (
                r#"{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}"#,
                r#"{"Location": "Boston", "Day": "Tuesday"}"#,
                false,
            ),
            // Event Ruler "Normal Or": source && (metricName || namespace).
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}]}"#,
                r#"{"source": "aws.cloudwatch", "namespace": "AWS/ES"}"#,
                true,
            ),
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]}, {"namespace": ["AWS/EC2", "AWS/ES"]}]}"#,
                r#"{"source": "aws.s3", "namespace": "AWS/ES"}"#,
                false,
            ),
            // Event Ruler "Parallel Or": (metricName || namespace) && (detail.source || detail.detail-type).
            (
                r#"{"$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}], "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm State Change"]}]}}"#,
                r#"{"namespace": "AWS/EC2", "detail": {"detail-type": "CloudWatch Alarm State Change"}}"#,
                true,
            ),
            (
                r#"{"$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}], "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm State Change"]}]}}"#,
                r#"{"namespace": "AWS/EC2", "detail": {"detail-type": "Other"}}"#,
                false,
            ),
            // Event Ruler "Or has an And inside": metricType && namespace together.
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]}, {"scope": ["Service"]}]}"#,
                r#"{"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"}"#,
                true,
            ),
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "namespace": ["AWS/EC2"]}, {"scope": ["Service"]}]}"#,
                r#"{"source": "aws.cloudwatch", "metricType": "MetricType"}"#,
                false,
            ),
            // Event Ruler "Nested Or and And": ($or inside an $or branch).
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]}]}"#,
                r#"{"source": "aws.cloudwatch", "metricType": "MetricType", "spaceId": 1000}"#,
                true,
            ),
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"metricType": ["MetricType"], "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]}]}"#,
                r#"{"source": "aws.cloudwatch", "metricType": "MetricType", "spaceId": 1001}"#,
                false,
            ),
            // A branch may use any operator, exists false included.
            (
                r#"{"$or": [{"status": ["open"]}, {"closedAt": [{"exists": false}]}]}"#,
                r#"{"status": "closed"}"#,
                true,
            ),
            (
                r#"{"$or": [{"status": ["open"]}, {"closedAt": [{"exists": false}]}]}"#,
                r#"{"status": "closed", "closedAt": "2024-01-01"}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn nested_objects_and_arrays() {
        check(&[
            // EventBridge: field names must appear with the same nesting structure.
            (
                r#"{"detail": {"state": ["running"]}}"#,
                r#"{"detail": {"state": "running"}}"#,
                true,
            ),
            (
                r#"{"detail": {"state": ["running"]}}"#,
                r#"{"state": "running"}"#,
                false,
            ),
            (
                r#"{"detail": {"state": ["running"]}}"#,
                r#"{"detail": "running"}"#,
                false,
            ),
            // A leaf pattern on an object: an object is no leaf value.
            (
                r#"{"detail": ["running"]}"#,
                r#"{"detail": {"state": "running"}}"#,
                false,
            ),
            // EventBridge: an array value matches when its intersection with the pattern is non-empty.
            (
                r#"{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1"]}"#,
                r#"{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0", "arn:aws:ec2:us-east-1:123456789012:instance/i-1"]}"#,
                true,
            ),
            (
                r#"{"resources": ["a", "b"]}"#,
                r#"{"resources": ["c", "d"]}"#,
                false,
            ),
            (r#"{"resources": ["a"]}"#, r#"{"resources": []}"#, false),
            // Nested arrays are flattened.
            (r#"{"m": [3]}"#, r#"{"m": [[1, 2], [3]]}"#, true),
            (
                r#"{"m": [{"prefix": "x"}]}"#,
                r#"{"m": [["a"], ["xy"]]}"#,
                true,
            ),
            // Event Ruler: the array structure is crushed out: employees.firstName "Anna".
            (
                r#"{"employees": {"firstName": ["Anna"]}}"#,
                r#"{"employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]}"#,
                true,
            ),
            // Event Ruler (array-consistent matching): the fields must match in one element.
            (
                r#"{"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}"#,
                r#"{"employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]}"#,
                true,
            ),
            (
                r#"{"employees": {"firstName": ["Anna"], "lastName": ["Doe"]}}"#,
                r#"{"employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]}"#,
                false,
            ),
            // Multi-level arrays.
            (
                r#"{"a": {"b": {"c": ["x"]}}}"#,
                r#"{"a": [{"b": [{"c": "y"}, {"c": ["z", "x"]}]}]}"#,
                true,
            ),
            // Objects inside an array are not leaf values of the array's field.
            (
                r#"{"a": [{"exists": true}]}"#,
                r#"{"a": [{"b": 1}]}"#,
                false,
            ),
            (r#"{"a": ["x"]}"#, r#"{"a": [{"b": "x"}, "x"]}"#, true),
            // Keys are matched exactly, dots included.
            (r#"{"a.b": ["x"]}"#, r#"{"a.b": "x"}"#, true),
            (r#"{"a": {"B": ["x"]}}"#, r#"{"a": {"b": "x"}}"#, false),
            // "$or" inside a nested object applies at that level.
            (
                r#"{"detail": {"$or": [{"a": [1]}, {"b": [2]}]}}"#,
                r#"{"detail": {"b": 2}, "a": 1}"#,
                true,
            ),
            (
                r#"{"detail": {"$or": [{"a": [1]}, {"b": [2]}]}}"#,
                r#"{"detail": {"b": 3}, "a": 1}"#,
                false,
            ),
        ]);
    }

    /// The example record of Lambda's DynamoDB filtering guide, as a MODIFY with both images.
    fn ddb_event(event_name: &str) -> String {
        json!({
            "eventID": "1",
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-2",
            "dynamodb": {
                "ApproximateCreationDateTime": 1678831218.0,
                "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
                "NewImage": {
                    "AccountManager": {"S": "Pat Candella"},
                    "PaymentTerms": {"S": "60 days"},
                    "CustomerName": {"S": "AnyCompany Industries"},
                    "Credit": {"N": "101"},
                    "Active": {"BOOL": true},
                    "Note": {"NULL": true},
                    "Organizations": {"L": [{"S": "Sales"}, {"S": "Marketing"}, {"S": "Support"}]}
                },
                "OldImage": {
                    "AccountManager": {"S": "Terry Whitlock"},
                    "PaymentTerms": {"S": "30 days"},
                    "CustomerName": {"S": "AnyCompany Industries"}
                },
                "SequenceNumber": "111",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-2:123456789012:table/Customers/stream/2023-03-14T00:00:00.000"
        })
        .to_string()
    }

    #[test]
    fn dynamodb_records() {
        let modify = ddb_event("MODIFY");
        let insert = ddb_event("INSERT");
        let remove = json!({
            "eventName": "REMOVE",
            "dynamodb": {
                "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
                "OldImage": {"CustomerName": {"S": "AnyCompany Industries"}},
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            }
        })
        .to_string();
        let cases: Vec<(&str, &str, bool)> = vec![
            // Lambda DynamoDB guide, "Filtering with table keys": Keys.CustomerName.S.
            (
                r#"{"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}"#,
                &modify,
                true,
            ),
            (
                r#"{"dynamodb": {"Keys": {"CustomerName": {"S": ["Other Inc"]}}}}"#,
                &modify,
                false,
            ),
            // "Filtering with table attributes": NewImage.AccountManager is one of two people.
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}}}"#,
                &modify,
                true,
            ),
            (
                r#"{"dynamodb": {"OldImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}}}"#,
                &modify,
                false,
            ),
            // CDK example: eventName isEqual('INSERT').
            (r#"{"eventName": ["INSERT"]}"#, &insert, true),
            (r#"{"eventName": ["INSERT"]}"#, &modify, false),
            (r#"{"eventName": ["INSERT", "MODIFY"]}"#, &modify, true),
            (r#"{"eventName": ["REMOVE"]}"#, &remove, true),
            (
                r#"{"eventName": [{"anything-but": "REMOVE"}]}"#,
                &remove,
                false,
            ),
            // Metadata and data properties together.
            (
                r#"{"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"PaymentTerms": {"S": ["60 days"]}}}}"#,
                &modify,
                true,
            ),
            (
                r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"PaymentTerms": {"S": ["60 days"]}}}}"#,
                &modify,
                false,
            ),
            // Lambda guide multi-level example: Keys.Id.N [ "101" ]: numbers are strings in N.
            (
                r#"{"dynamodb": {"NewImage": {"Credit": {"N": ["101"]}}}}"#,
                &modify,
                true,
            ),
            // ... so the JSON number 101 does not match them.
            (
                r#"{"dynamodb": {"NewImage": {"Credit": {"N": [101]}}}}"#,
                &modify,
                false,
            ),
            // Lambda DynamoDB guide note: no numeric operators; N values are strings.
            (
                r#"{"dynamodb": {"NewImage": {"Credit": {"N": [{"numeric": [">", 100]}]}}}}"#,
                &modify,
                false,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"Credit": {"N": [{"numeric": ["=", 101]}]}}}}"#,
                &modify,
                false,
            ),
            // String operators do work on N strings.
            (
                r#"{"dynamodb": {"NewImage": {"Credit": {"N": [{"prefix": "10"}]}}}}"#,
                &modify,
                true,
            ),
            // CDK example: NewImage.id.BOOL isEqual(true); NULL holds true too.
            (
                r#"{"dynamodb": {"NewImage": {"Active": {"BOOL": [true]}}}}"#,
                &modify,
                true,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"Active": {"BOOL": [false]}}}}"#,
                &modify,
                false,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"Note": {"NULL": [true]}}}}"#,
                &modify,
                true,
            ),
            // Lambda DynamoDB guide, "Using the Exists operator": not on an intermediate node ...
            (
                r#"{"dynamodb": {"NewImage": {"Organizations": [{"exists": true}]}}}"#,
                &modify,
                false,
            ),
            // ... but on the leaves: Organizations.L.S exists.
            (
                r#"{"dynamodb": {"NewImage": {"Organizations": {"L": {"S": [{"exists": true}]}}}}}"#,
                &modify,
                true,
            ),
            // A list element: Organizations contains "Marketing".
            (
                r#"{"dynamodb": {"NewImage": {"Organizations": {"L": {"S": ["Marketing"]}}}}}"#,
                &modify,
                true,
            ),
            // A REMOVE has no NewImage: the attribute does not exist there.
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": [{"exists": false}]}}}}"#,
                &remove,
                true,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": [{"exists": false}]}}}}"#,
                &modify,
                false,
            ),
            // An attribute that changed: new and old values differ ($or of the two images).
            (
                r#"{"eventName": ["MODIFY"], "dynamodb": {"$or": [{"NewImage": {"PaymentTerms": {"S": ["30 days"]}}}, {"OldImage": {"PaymentTerms": {"S": ["30 days"]}}}]}}"#,
                &modify,
                true,
            ),
        ];
        let cases: Vec<Case> = cases
            .into_iter()
            .map(|(p, e, x)| (p, &*String::leak(e.to_string()), x))
            .collect();
        check(&cases);
        check_text(&[
            // Lambda DynamoDB guide, "Filtering with Boolean expressions": the pattern names
            // "dynamodb" twice, NewImage.AccountManager "Pat Candella" AND OldImage "Terry Whitlock".
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella"]}}}, "dynamodb": {"OldImage": {"AccountManager": {"S": ["Terry Whitlock"]}}}}"#,
                String::leak(modify.clone()),
                true,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella"]}}}, "dynamodb": {"OldImage": {"AccountManager": {"S": ["Someone Else"]}}}}"#,
                String::leak(modify.clone()),
                false,
            ),
            (
                r#"{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Someone Else"]}}}, "dynamodb": {"OldImage": {"AccountManager": {"S": ["Terry Whitlock"]}}}}"#,
                String::leak(modify),
                false,
            ),
        ]);
    }

    /// A Kinesis record as [`filter_input`] shows it, with `data` (None: not JSON).
    fn kinesis_event(data: Option<Value>) -> &'static str {
        let mut event = json!({
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "approximateArrivalTimestamp": 1545084650.987
        });
        if let Some(data) = data {
            event["data"] = data;
        }
        String::leak(event.to_string())
    }

    #[test]
    fn kinesis_records() {
        let order = kinesis_event(Some(json!({
            "record": 12345,
            "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000}
        })));
        let city = kinesis_event(Some(json!({
            "City": "Los Angeles", "Location": "Los Angeles", "State": "CA", "Temperature": 55
        })));
        let text = kinesis_event(None);
        check(&[
            // Lambda Kinesis guide: { "data" : { "order" : { "type" : [ "buy" ] } } }.
            (r#"{"data": {"order": {"type": ["buy"]}}}"#, order, true),
            (r#"{"data": {"order": {"type": ["sell"]}}}"#, order, false),
            // JSON data keeps its numbers, so numeric operators work on them.
            (
                r#"{"data": {"order": {"quantity": [{"numeric": [">=", 1000]}]}}}"#,
                order,
                true,
            ),
            (r#"{"data": {"record": [12345]}}"#, order, true),
            // Lambda filtering example: partitionKey "1" (metadata) and data.Location.
            (
                r#"{"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}}"#,
                city,
                true,
            ),
            (
                r#"{"partitionKey": ["2"], "data": {"Location": ["Los Angeles"]}}"#,
                city,
                false,
            ),
            // Lambda example: Temperature greater than 50, at most 60.
            (
                r#"{"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}}"#,
                city,
                true,
            ),
            // Lambda "streams" table: non-JSON data with a filter on data properties: dropped ...
            (r#"{"data": {"Location": ["Los Angeles"]}}"#, text, false),
            // ... whatever the data filter says.
            (
                r#"{"data": {"Location": [{"exists": false}]}}"#,
                text,
                false,
            ),
            (
                r#"{"partitionKey": ["1"], "$or": [{"data": {"a": [{"exists": false}]}}, {"data": {"b": [1]}}]}"#,
                text,
                false,
            ),
            // ... non-JSON data without a data filter: the metadata alone decides.
            (r#"{"partitionKey": ["1"]}"#, text, true),
            (r#"{"partitionKey": [{"prefix": "2"}]}"#, text, false),
            // JSON data: exists false inside data works as usual.
            (
                r#"{"data": {"Location": [{"exists": false}]}}"#,
                order,
                true,
            ),
            // The fields sit at the top level: the record's "kinesis" wrapper is not part of it.
            (r#"{"kinesis": {"partitionKey": ["1"]}}"#, city, false),
        ]);
    }

    fn sequence(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    fn change(
        operation: OperationType,
        new_image: Option<Item>,
        old_image: Option<Item>,
    ) -> SourceRecord {
        let key: Item = [("id".to_string(), AttributeValue::S("a-1".into()))].into();
        SourceRecord::DynamoDb(ChangeRecord {
            event_id: "e1".into(),
            operation,
            event_version: "1.1".into(),
            aws_region: "us-east-2".into(),
            table_name: "Stock".into(),
            source: SourceIdentity {
                stream_arn: "arn:aws:dynamodb:us-east-2:123456789012:table/Stock/stream/2026-01-01T00:00:00.000".into(),
                shard_id: "shardId-00000001767225600000-00000001".into(),
                sequence_number: sequence("100000000000000000001"),
            },
            approximate_creation_millis: Some(1_767_225_601_500),
            keys: key,
            new_image,
            old_image,
            size_bytes: 20,
            view_type: StreamViewType::NewAndOldImages,
            user_identity: None,
        })
    }

    fn stock(status: &str, qty: &str) -> Option<Item> {
        Some(
            [
                ("id".to_string(), AttributeValue::S("a-1".into())),
                ("status".to_string(), AttributeValue::S(status.into())),
                ("qty".to_string(), AttributeValue::N(qty.into())),
            ]
            .into(),
        )
    }

    fn kinesis(data: &[u8]) -> SourceRecord {
        SourceRecord::Kinesis(KinesisRecord {
            source: SourceIdentity {
                stream_arn: "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream".into(),
                shard_id: "shardId-000000000006".into(),
                sequence_number: sequence(
                    "49590338271490256608559692538361571095921575989136588898",
                ),
            },
            partition_key: "1".into(),
            data: data.to_vec(),
            approximate_arrival_millis: Some(1_545_084_650_987),
            aws_region: "us-east-2".into(),
        })
    }

    #[test]
    fn dynamodb_input_is_the_lambda_record() {
        let insert = change(OperationType::Insert, stock("open", "5"), None);
        let input = filter_input(&insert);
        assert_eq!(input["eventName"], "INSERT");
        assert_eq!(input["eventSource"], "aws:dynamodb");
        assert_eq!(input["dynamodb"]["Keys"], json!({"id": {"S": "a-1"}}));
        assert_eq!(input["dynamodb"]["NewImage"]["qty"], json!({"N": "5"}));
        assert_eq!(input["dynamodb"].get("OldImage"), None);

        let criteria = FilterCriteria::parse(&[
            r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["open"]}}}}"#,
        ])
        .unwrap();
        assert!(criteria.matches_record(&insert));
        let closed = change(OperationType::Insert, stock("closed", "5"), None);
        assert!(!criteria.matches_record(&closed));
        let modify = change(
            OperationType::Modify,
            stock("open", "4"),
            stock("open", "5"),
        );
        assert!(!criteria.matches_record(&modify));
        let remove = change(OperationType::Remove, None, stock("open", "5"));
        assert!(!criteria.matches_record(&remove));
        let removed = FilterCriteria::parse(&[
            r#"{"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"status": {"S": ["open"]}}}}"#,
        ])
        .unwrap();
        assert!(removed.matches_record(&remove));
    }

    #[test]
    fn kinesis_input_is_the_kinesis_object_with_json_data() {
        let record = kinesis(br#"{"Location": "Los Angeles", "Temperature": 55.5}"#);
        let input = filter_input(&record);
        assert_eq!(
            input
                .as_object()
                .unwrap()
                .keys()
                .collect::<std::collections::BTreeSet<_>>(),
            [
                "approximateArrivalTimestamp",
                "data",
                "kinesisSchemaVersion",
                "partitionKey",
                "sequenceNumber"
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .iter()
            .collect()
        );
        assert_eq!(input["partitionKey"], "1");
        assert_eq!(
            input["sequenceNumber"],
            "49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(
            input["data"],
            json!({"Location": "Los Angeles", "Temperature": 55.5})
        );
        let criteria = FilterCriteria::parse(&[
            r#"{"partitionKey": ["1"], "data": {"Temperature": [{"numeric": [">", 50]}]}}"#,
        ])
        .unwrap();
        assert!(criteria.matches_record(&record));
        assert!(!criteria.matches_record(&kinesis(br#"{"Temperature": 20}"#)));
    }

    #[test]
    fn kinesis_input_without_json_data() {
        // Lambda's documented Kinesis example payload: "Hello, this is a test.".
        for data in [
            &b"Hello, this is a test."[..],
            b"",
            b"\xff\xfe{",
            b"{\"a\": 1",
        ] {
            let record = kinesis(data);
            let input = filter_input(&record);
            assert_eq!(input.get("data"), None, "{data:?}");
            assert_eq!(input["partitionKey"], "1");
            let on_data =
                FilterCriteria::parse(&[r#"{"data": {"a": [{"exists": false}]}}"#]).unwrap();
            assert!(!on_data.matches_record(&record), "{data:?}");
            let on_key = FilterCriteria::parse(&[r#"{"partitionKey": ["1"]}"#]).unwrap();
            assert!(on_key.matches_record(&record), "{data:?}");
        }
        // Any JSON text is JSON data, a bare number too.
        assert_eq!(filter_input(&kinesis(b" 42 "))["data"], json!(42));
        let number = FilterCriteria::parse(&[r#"{"data": {"a": [{"exists": false}]}}"#]).unwrap();
        assert!(number.matches_record(&kinesis(b"42")));
    }

    #[test]
    fn several_patterns_or_together() {
        // Lambda: filters are ORed: a record passes when it satisfies one or more of them.
        let criteria = FilterCriteria::parse(&[
            r#"{"eventName": ["INSERT"]}"#,
            r#"{"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["open"]}}}}"#,
        ])
        .unwrap();
        assert!(!criteria.is_empty());
        assert!(criteria.matches(&json!({"eventName": "INSERT"})));
        assert!(criteria.matches(&json!({
            "eventName": "MODIFY",
            "dynamodb": {"NewImage": {"status": {"S": "open"}}}
        })));
        assert!(!criteria.matches(&json!({
            "eventName": "MODIFY",
            "dynamodb": {"NewImage": {"status": {"S": "closed"}}}
        })));
        assert!(!criteria.matches(&json!({"eventName": "REMOVE"})));
        // Five patterns, Lambda's default limit, are accepted.
        let five = vec![r#"{"a": [1]}"#; MAX_PATTERNS];
        assert!(FilterCriteria::parse(&five).is_ok());
    }

    #[test]
    fn no_patterns_pass_everything() {
        // Lambda: an empty FilterCriteria removes filtering: every record is processed.
        let none = FilterCriteria::parse::<&str>(&[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(none, FilterCriteria::default());
        assert!(none.matches(&json!({"eventName": "REMOVE"})));
        assert!(none.matches(&Value::Null));
        assert!(none.matches_record(&kinesis(b"not json")));
        assert!(FilterCriteria::from_values(&[]).unwrap().is_empty());
    }

    #[test]
    fn duplicate_keys() {
        check_text(&[
            // EventBridge: with duplicate fields only the final value counts: "source" is
            // "aws.sns", and detail.eventSource "sns.amazonaws.com".
            (
                r#"{"source": ["aws.s3"], "source": ["aws.sns"], "detail": {"eventSource": ["s3.amazonaws.com"], "eventSource": ["sns.amazonaws.com"]}}"#,
                r#"{"source": "aws.sns", "detail": {"eventSource": "sns.amazonaws.com"}}"#,
                true,
            ),
            (
                r#"{"source": ["aws.s3"], "source": ["aws.sns"], "detail": {"eventSource": ["s3.amazonaws.com"], "eventSource": ["sns.amazonaws.com"]}}"#,
                r#"{"source": "aws.s3", "detail": {"eventSource": "s3.amazonaws.com"}}"#,
                false,
            ),
            // Objects given twice merge, at any depth; a repeated leaf inside is the last one.
            (
                r#"{"a": {"b": {"c": ["1"]}, "x": ["no"]}, "a": {"b": {"d": ["2"]}, "x": ["yes"]}}"#,
                r#"{"a": {"b": {"c": "1", "d": "2"}, "x": "yes"}}"#,
                true,
            ),
            (
                r#"{"a": {"b": {"c": ["1"]}}, "a": {"b": {"d": ["2"]}}}"#,
                r#"{"a": {"b": {"c": "1", "d": "3"}}}"#,
                false,
            ),
            // A value list replaced by an object, and the reverse.
            (
                r#"{"a": ["x"], "a": {"b": ["y"]}}"#,
                r#"{"a": {"b": "y"}}"#,
                true,
            ),
            (r#"{"a": {"b": ["y"]}, "a": ["x"]}"#, r#"{"a": "x"}"#, true),
            // Two "$or" at one level must both hold.
            (
                r#"{"$or": [{"a": [1]}, {"b": [1]}], "$or": [{"c": [1]}, {"d": [1]}]}"#,
                r#"{"a": 1, "d": 1}"#,
                true,
            ),
            (
                r#"{"$or": [{"a": [1]}, {"b": [1]}], "$or": [{"c": [1]}, {"d": [1]}]}"#,
                r#"{"a": 1}"#,
                false,
            ),
        ]);
    }

    #[test]
    fn text_and_values_compile_alike() {
        let text = r#"{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"qty": {"N": [{"prefix": "1"}]}, "$or": [{"a": [{"numeric": [">", 0, "<=", 5]}]}, {"b": [{"anything-but": {"suffix": [".png"]}}]}]}}}"#;
        let from_text = FilterCriteria::parse(&[text]).unwrap();
        let from_value =
            FilterCriteria::from_values(&[serde_json::from_str(text).unwrap()]).unwrap();
        assert_eq!(from_text, from_value);
    }

    #[test]
    fn invalid_patterns() {
        let numeric_shape = r#""numeric" needs an operator and a number, or a lower and an upper bound, like [">", 0, "<=", 5]"#;
        let cases: Vec<(&str, String)> = vec![
            // EventBridge: a pattern is a JSON object.
            (r#"["eventName"]"#, "pattern 0: a pattern must be a JSON object, not an array".into()),
            (r#""INSERT""#, "pattern 0: a pattern must be a JSON object, not a string".into()),
            (r#"null"#, "pattern 0: a pattern must be a JSON object, not null".into()),
            // Event Ruler: empty objects are not allowed.
            (r#"{}"#, "pattern 0: an empty object is not allowed".into()),
            (r#"{"detail": {}}"#, "pattern 0: detail: an empty object is not allowed".into()),
            // EventBridge: values to match are always in an array.
            (
                r#"{"eventName": "INSERT"}"#,
                "pattern 0: eventName: must be an array of values to match or an object of fields, not a string".into(),
            ),
            (
                r#"{"a": {"b": 5}}"#,
                "pattern 0: a.b: must be an array of values to match or an object of fields, not a number".into(),
            ),
            // Event Ruler: empty arrays are not allowed.
            (
                r#"{"eventName": []}"#,
                "pattern 0: eventName: an empty array matches nothing and is not allowed".into(),
            ),
            (
                r#"{"a": [["x"]]}"#,
                "pattern 0: a: a value to match must be a string, a number, a boolean, null or an operator object, not an array".into(),
            ),
            (r#"{"a": [{}]}"#, "pattern 0: a: an operator object needs exactly one operator, found 0".into()),
            (
                r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#,
                "pattern 0: a: an operator object needs exactly one operator, found 2".into(),
            ),
            (
                r#"{"a": [{"contains": "x"}]}"#,
                r#"pattern 0: a: unknown operator "contains" (Lambda supports prefix, suffix, equals-ignore-case, anything-but, numeric and exists)"#.into(),
            ),
            // EventBridge operators Lambda's filter syntax does not list.
            (
                r#"{"a": [{"wildcard": "*.png"}]}"#,
                r#"pattern 0: a: unknown operator "wildcard" (Lambda supports prefix, suffix, equals-ignore-case, anything-but, numeric and exists)"#.into(),
            ),
            (
                r#"{"a": [{"cidr": "10.0.0.0/24"}]}"#,
                r#"pattern 0: a: unknown operator "cidr" (Lambda supports prefix, suffix, equals-ignore-case, anything-but, numeric and exists)"#.into(),
            ),
            (r#"{"a": [{"exists": "true"}]}"#, r#"pattern 0: a: "exists" needs true or false"#.into()),
            (
                r#"{"a": [{"equals-ignore-case": 5}]}"#,
                r#"pattern 0: a: "equals-ignore-case" needs a string"#.into(),
            ),
            (
                r#"{"a": [{"prefix": 5}]}"#,
                r#"pattern 0: a: "prefix" needs a string or {"equals-ignore-case": string}"#.into(),
            ),
            (
                r#"{"a": [{"prefix": {"suffix": "x"}}]}"#,
                r#"pattern 0: a: "prefix" needs a string or {"equals-ignore-case": string}"#.into(),
            ),
            (
                r#"{"a": [{"suffix": null}]}"#,
                r#"pattern 0: a: "suffix" needs a string or {"equals-ignore-case": string}"#.into(),
            ),
            (
                r#"{"a": [{"suffix": {"equals-ignore-case": 1}}]}"#,
                r#"pattern 0: a: "suffix" needs a string or {"equals-ignore-case": string}"#.into(),
            ),
            // Event Ruler: anything-but takes a string, a number, or a list of one kind.
            (
                r#"{"a": [{"anything-but": null}]}"#,
                r#"pattern 0: a: "anything-but" needs a string, a number, a list of either or an object, not null"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": true}]}"#,
                r#"pattern 0: a: "anything-but" needs a string, a number, a list of either or an object, not a boolean"#.into(),
            ),
            (r#"{"a": [{"anything-but": []}]}"#, r#"pattern 0: a: "anything-but" needs a non-empty list"#.into()),
            (
                r#"{"a": [{"anything-but": ["x", 1]}]}"#,
                r#"pattern 0: a: an "anything-but" list must hold only strings or only numbers"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": [null]}]}"#,
                r#"pattern 0: a: an "anything-but" list must hold only strings or only numbers"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"wildcard": "*.png"}}]}"#,
                r#"pattern 0: a: unsupported operator "wildcard" inside "anything-but" (use prefix, suffix or equals-ignore-case)"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}"#,
                r#"pattern 0: a: an "anything-but" object needs exactly one of prefix, suffix or equals-ignore-case"#.into(),
            ),
            // Event Ruler: "Null prefix/suffix not allowed" inside anything-but.
            (
                r#"{"a": [{"anything-but": {"prefix": ""}}]}"#,
                r#"pattern 0: a: "anything-but" "prefix" cannot be the empty string"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"suffix": ["x", ""]}}]}"#,
                r#"pattern 0: a: "anything-but" "suffix" cannot be the empty string"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"prefix": 5}}]}"#,
                r#"pattern 0: a: "anything-but" "prefix" needs a string or a non-empty list of strings"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"equals-ignore-case": []}}]}"#,
                r#"pattern 0: a: "anything-but" "equals-ignore-case" needs a string or a non-empty list of strings"#.into(),
            ),
            (
                r#"{"a": [{"anything-but": {"suffix": ["x", 1]}}]}"#,
                r#"pattern 0: a: "anything-but" "suffix" needs a string or a non-empty list of strings"#.into(),
            ),
            // Numeric: an operator and a number, or a lower then an upper bound.
            (
                r#"{"dynamodb": {"NewImage": {"age": {"N": [{"numeric": [">"]}]}}}}"#,
                format!("pattern 0: dynamodb.NewImage.age.N: {numeric_shape}"),
            ),
            (r#"{"a": [{"numeric": ">"}]}"#, format!("pattern 0: a: {numeric_shape}")),
            (r#"{"a": [{"numeric": []}]}"#, format!("pattern 0: a: {numeric_shape}")),
            (r#"{"a": [{"numeric": [">", 0, "<"]}]}"#, format!("pattern 0: a: {numeric_shape}")),
            (
                r#"{"a": [{"numeric": [">", 0, "<", 5, "=", 3]}]}"#,
                format!("pattern 0: a: {numeric_shape}"),
            ),
            (
                r#"{"a": [{"numeric": ["=>", 5]}]}"#,
                r#"pattern 0: a: "numeric": unknown operator "=>" (use =, <, <=, >, >=)"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [5, ">"]}]}"#,
                r#"pattern 0: a: "numeric": expected an operator (=, <, <=, >, >=), found a number"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [">", "5"]}]}"#,
                r#"pattern 0: a: "numeric": ">" needs a number, not a string"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [">", 0, "<=", null]}]}"#,
                r#"pattern 0: a: "numeric": "<=" needs a number, not null"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [">", 1e400]}]}"#,
                r#"pattern 0: a: "numeric": 1e+400 is out of range"#.into(),
            ),
            (
                r#"{"a": [{"numeric": ["<", 5, ">", 0]}]}"#,
                r#"pattern 0: a: "numeric": a range is a lower bound (">" or ">=") then an upper bound ("<" or "<=")"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [">", 0, ">", 5]}]}"#,
                r#"pattern 0: a: "numeric": a range is a lower bound (">" or ">=") then an upper bound ("<" or "<=")"#.into(),
            ),
            (
                r#"{"a": [{"numeric": ["=", 5, "<", 6]}]}"#,
                r#"pattern 0: a: "numeric": a range is a lower bound (">" or ">=") then an upper bound ("<" or "<=")"#.into(),
            ),
            // Event Ruler: "Bottom must be less than top".
            (
                r#"{"a": [{"numeric": [">", 5, "<", 5]}]}"#,
                r#"pattern 0: a: "numeric": the lower bound 5 must be less than the upper bound 5"#.into(),
            ),
            (
                r#"{"a": [{"numeric": [">=", 10, "<=", 0.5]}]}"#,
                r#"pattern 0: a: "numeric": the lower bound 10 must be less than the upper bound 0.5"#.into(),
            ),
            // Event Ruler: "$or" takes an array of at least two objects.
            (
                r#"{"$or": {"a": ["x"]}}"#,
                r#"pattern 0: $or: "$or" needs an array of at least two objects of fields"#.into(),
            ),
            (
                r#"{"$or": [{"a": ["x"]}]}"#,
                r#"pattern 0: $or: "$or" needs an array of at least two objects of fields"#.into(),
            ),
            (r#"{"$or": [{"a": ["x"]}, "b"]}"#, "pattern 0: $or[1]: must be an object of fields, not a string".into()),
            (r#"{"$or": [{"a": ["x"]}, {}]}"#, "pattern 0: $or[1]: an empty object is not allowed".into()),
            // Event Ruler: operator names are reserved inside "$or".
            (
                r#"{"$or": [{"a": ["x"]}, {"prefix": ["b"]}]}"#,
                r#"pattern 0: $or[1].prefix: "prefix" is an operator and cannot be a field name inside "$or""#.into(),
            ),
            (
                r#"{"detail": {"$or": [{"a": ["x"]}, {"b": [{"numeric": ["<"]}]}]}}"#,
                format!("pattern 0: detail.$or[1].b: {numeric_shape}"),
            ),
            // Lambda streams table: a non-JSON filter for the data properties is rejected.
            (
                r#"{"data": ["hello"]}"#,
                "pattern 0: data: the data properties of a stream record must be filtered with an object of fields (Lambda rejects a non-JSON filter for them)".into(),
            ),
            (
                r#"{"dynamodb": [{"exists": true}]}"#,
                "pattern 0: dynamodb: the data properties of a stream record must be filtered with an object of fields (Lambda rejects a non-JSON filter for them)".into(),
            ),
            (
                r#"{"$or": [{"data": [{"prefix": "x"}]}, {"partitionKey": ["1"]}]}"#,
                "pattern 0: $or[0].data: the data properties of a stream record must be filtered with an object of fields (Lambda rejects a non-JSON filter for them)".into(),
            ),
            // Not JSON: Lambda throws at mapping creation.
            (r#"{"a": ["x"]"#, "pattern 0: not JSON: EOF while parsing an object at line 1 column 11".into()),
            (r#"{"a": ["x",]}"#, "pattern 0: not JSON: trailing comma at line 1 column 12".into()),
            (r#"eventName = "INSERT""#, "pattern 0: not JSON: expected value at line 1 column 1".into()),
            (r#"{"a": ["x"]} {"b": ["y"]}"#, "pattern 0: not JSON: trailing characters at line 1 column 14".into()),
            ("", "pattern 0: not JSON: EOF while parsing a value at line 1 column 0".into()),
        ];
        for (pattern, expected) in &cases {
            assert_eq!(&error(pattern), expected, "pattern {pattern}");
        }
        // "data" below the top level is an ordinary field.
        assert!(FilterCriteria::parse(&[r#"{"detail": {"data": ["x"]}}"#]).is_ok());
        // An empty prefix or suffix is allowed outside anything-but: it matches every string.
        check(&[(r#"{"a": [{"prefix": ""}]}"#, r#"{"a": "x"}"#, true)]);
    }

    #[test]
    fn errors_name_the_pattern() {
        let err = FilterCriteria::parse(&[
            r#"{"eventName": ["INSERT"]}"#,
            r#"{"eventName": ["MODIFY"]}"#,
            r#"{"dynamodb": {"NewImage": {"age": {"N": [{"numeric": [">", "ten"]}]}}}}"#,
        ])
        .unwrap_err();
        assert_eq!(
            err,
            FilterError::Invalid {
                index: 2,
                path: "dynamodb.NewImage.age.N".into(),
                message: r#""numeric": ">" needs a number, not a string"#.into(),
            }
        );
        assert_eq!(
            err.to_string(),
            r#"pattern 2: dynamodb.NewImage.age.N: "numeric": ">" needs a number, not a string"#
        );
        let err =
            FilterCriteria::from_values(&[json!({"a": ["x"]}), json!({"a": "x"})]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern 1: a: must be an array of values to match or an object of fields, not a string"
        );
        let err = FilterCriteria::from_values(&[json!(["x"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern 0: a pattern must be a JSON object, not an array"
        );
        let err = FilterCriteria::parse(&[r#"{"a": ["x"]}"#, "{"]).unwrap_err();
        assert!(
            matches!(err, FilterError::Syntax { index: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn lambda_limits() {
        // Lambda: five filters per event source mapping by default.
        let six = vec![r#"{"a": [1]}"#; MAX_PATTERNS + 1];
        let err = FilterCriteria::parse(&six).unwrap_err();
        assert_eq!(err, FilterError::TooManyPatterns { count: 6 });
        assert_eq!(
            err.to_string(),
            "6 filter patterns: Lambda allows at most 5 per event source mapping"
        );
        let values = vec![json!({"a": [1]}); MAX_PATTERNS + 1];
        assert_eq!(
            FilterCriteria::from_values(&values).unwrap_err(),
            FilterError::TooManyPatterns { count: 6 }
        );

        // Lambda (Filter.Pattern): at most 4096 characters; characters, not bytes.
        let padded = |chars: usize, fill: char| {
            let frame = r#"{"a": [""]}"#.len();
            format!(r#"{{"a": ["{}"]}}"#, fill.to_string().repeat(chars - frame))
        };
        let longest = padded(MAX_PATTERN_CHARS, 'é');
        assert_eq!(longest.chars().count(), 4096);
        assert!(longest.len() > 4096);
        assert!(FilterCriteria::parse(&[&longest]).is_ok());
        let too_long = padded(MAX_PATTERN_CHARS + 1, 'x');
        let err = FilterCriteria::parse(&[r#"{"a": [1]}"#, too_long.as_str()]).unwrap_err();
        assert_eq!(
            err,
            FilterError::TooLong {
                index: 1,
                chars: 4097
            }
        );
        assert_eq!(
            err.to_string(),
            "pattern 1: 4097 characters, more than Lambda's 4096"
        );
        // A value counts as its compact JSON text: `{"a":["x..."]}`.
        let value = json!({"a": ["x".repeat(MAX_PATTERN_CHARS + 1 - r#"{"a":[""]}"#.len())]});
        assert_eq!(
            FilterCriteria::from_values(&[value]).unwrap_err(),
            FilterError::TooLong {
                index: 0,
                chars: 4097
            }
        );
        let spaced: Value =
            serde_json::from_str(&format!("{{ \"a\" :  [ \"{}\" ] }}", "x".repeat(4000))).unwrap();
        assert!(FilterCriteria::from_values(&[spaced]).is_ok());
    }
}
