//! Which memories a list, search or bulk delete considers: the Mem0 v2/v3 filter grammar.
//!
//! `AND` / `OR` take lists, `NOT` an object (or a list, ANDed); sibling fields are ANDed. Fields:
//! the scope ids (`user_id`, `agent_id`, `app_id`, `run_id`: a value, `eq`, `ne`, `in`, or `"*"`
//! for "set"), times (`created_at`, `updated_at`, `timestamp` = event time, `expiration_date`:
//! `gt`, `gte`, `lt`, `lte`, `eq`, `ne`, `in`), `categories` (`in`, `contains`), `metadata`
//! (`{key: value}` or `{key: {eq|ne|contains|in: ..}}`), `memory_ids` (`in`), `keywords`
//! (`contains`, `icontains`) and Nexus's `tier`. Anything else is refused with a message naming it.
//!
//! A parsed [`Filter`] is evaluated on each memory ([`Filter::matches`]); its plain conjunctive
//! equalities are also pushed down into the stores ([`Filter::pushdown`]) so that filtering
//! happens inside the indexes rather than after them.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::Value;

use super::Memory;
use crate::error::{Error, Result};
use crate::store::records::{RecordFilter, facet_value, parse_date};

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cond(Field, Op),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    UserId,
    AgentId,
    AppId,
    RunId,
    Tier,
    CreatedAt,
    UpdatedAt,
    Timestamp,
    ExpirationDate,
    Categories,
    Metadata(String),
    MemoryIds,
    Keywords,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    /// The field is set (`"*"`).
    Set,
    Gt(DateTime<Utc>),
    Gte(DateTime<Utc>),
    Lt(DateTime<Utc>),
    Lte(DateTime<Utc>),
    TimeEq(DateTime<Utc>),
    TimeNe(DateTime<Utc>),
    TimeIn(Vec<DateTime<Utc>>),
    Contains(String),
    IContains(String),
}

const FIELDS: &str = "user_id, agent_id, app_id, run_id, tier, created_at, updated_at, timestamp, \
                      expiration_date, categories, metadata, memory_ids, keywords";

impl Filter {
    /// Matches every memory.
    pub fn everything() -> Filter {
        Filter::All(Vec::new())
    }

    pub fn eq(field: Field, value: impl Into<String>) -> Filter {
        Filter::Cond(field, Op::Eq(value.into()))
    }

    /// Both must hold.
    pub fn and(self, other: Filter) -> Filter {
        match self {
            Filter::All(mut parts) => {
                parts.push(other);
                Filter::All(parts)
            }
            f => Filter::All(vec![f, other]),
        }
    }

    /// Parses the Mem0 v2/v3 grammar; `null` or `{}` matches everything.
    pub fn parse(value: &Value) -> Result<Filter> {
        match value {
            Value::Null => Ok(Filter::everything()),
            Value::Object(map) => {
                let mut parts = Vec::new();
                for (key, v) in map {
                    parts.push(parse_entry(key, v)?);
                }
                Ok(if parts.len() == 1 { parts.pop().unwrap() } else { Filter::All(parts) })
            }
            other => Err(bad(format!("filters must be a JSON object, not {}", kind_of(other)))),
        }
    }

    /// Whether the filter names a scope id (user, agent, app or run) anywhere.
    pub fn names_scope(&self) -> bool {
        match self {
            Filter::All(p) | Filter::Any(p) => p.iter().any(Filter::names_scope),
            Filter::Not(f) => f.names_scope(),
            Filter::Cond(field, _) => matches!(field, Field::UserId | Field::AgentId | Field::AppId | Field::RunId),
        }
    }

    pub fn matches(&self, m: &Memory) -> bool {
        match self {
            Filter::All(parts) => parts.iter().all(|p| p.matches(m)),
            Filter::Any(parts) => parts.iter().any(|p| p.matches(m)),
            Filter::Not(inner) => !inner.matches(m),
            Filter::Cond(field, op) => cond_matches(field, op, m),
        }
    }

    /// The plain equalities that hold for every match, as a store filter (the rest is checked by
    /// [`Filter::matches`] on the candidates).
    pub fn pushdown(&self, into: &mut RecordFilter) {
        match self {
            Filter::All(parts) => parts.iter().for_each(|p| p.pushdown(into)),
            Filter::Cond(field, Op::Eq(value)) => match field {
                Field::UserId | Field::AgentId | Field::AppId | Field::RunId | Field::Tier => {
                    into.metadata.push((scope_key(field).to_string(), value.clone()))
                }
                Field::Metadata(key) => {
                    into.metadata.push((format!("{}{key}", super::META_FACET_PREFIX), value.clone()))
                }
                _ => {}
            },
            Filter::Cond(Field::Categories, Op::Contains(category)) => into.tags.push(category.clone()),
            _ => {}
        }
    }
}

fn scope_key(field: &Field) -> &'static str {
    match field {
        Field::UserId => "user_id",
        Field::AgentId => "agent_id",
        Field::AppId => "app_id",
        Field::RunId => "run_id",
        Field::Tier => "tier",
        _ => "",
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::invalid(message)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parse_entry(key: &str, v: &Value) -> Result<Filter> {
    match key {
        "AND" | "OR" => {
            let Value::Array(items) = v else {
                return Err(bad(format!("filters: {key} takes a list of filters, not {}", kind_of(v))));
            };
            let parts = items.iter().map(Filter::parse).collect::<Result<Vec<_>>>()?;
            Ok(if key == "AND" { Filter::All(parts) } else { Filter::Any(parts) })
        }
        "NOT" => {
            let inner = match v {
                Value::Array(items) => Filter::All(items.iter().map(Filter::parse).collect::<Result<Vec<_>>>()?),
                Value::Object(_) => Filter::parse(v)?,
                other => return Err(bad(format!("filters: NOT takes a filter object, not {}", kind_of(other)))),
            };
            Ok(Filter::Not(Box::new(inner)))
        }
        "user_id" | "agent_id" | "app_id" | "run_id" | "tier" => {
            let field = match key {
                "user_id" => Field::UserId,
                "agent_id" => Field::AgentId,
                "app_id" => Field::AppId,
                "run_id" => Field::RunId,
                _ => Field::Tier,
            };
            Ok(Filter::Cond(field, parse_value_op(key, v)?))
        }
        "created_at" | "updated_at" | "timestamp" | "expiration_date" => {
            let field = match key {
                "created_at" => Field::CreatedAt,
                "updated_at" => Field::UpdatedAt,
                "timestamp" => Field::Timestamp,
                _ => Field::ExpirationDate,
            };
            parse_time_ops(key, field, v)
        }
        "categories" => parse_categories(v),
        "metadata" => parse_metadata(v),
        "memory_ids" => {
            let ids = match v {
                Value::Array(_) => strings(key, v)?,
                Value::Object(map) if map.len() == 1 && map.contains_key("in") => strings(key, &map["in"])?,
                _ => return Err(bad("filters: memory_ids takes {\"in\": [ids]}")),
            };
            Ok(Filter::Cond(Field::MemoryIds, Op::In(ids)))
        }
        "keywords" => {
            let Value::Object(map) = v else {
                return Err(bad("filters: keywords takes {\"contains\": text} or {\"icontains\": text}"));
            };
            let mut parts = Vec::new();
            for (op, arg) in map {
                let text = arg.as_str().ok_or_else(|| bad(format!("filters: keywords.{op} takes a string")))?;
                parts.push(match op.as_str() {
                    "contains" => Filter::Cond(Field::Keywords, Op::Contains(text.to_string())),
                    "icontains" => Filter::Cond(Field::Keywords, Op::IContains(text.to_lowercase())),
                    other => {
                        return Err(bad(format!(
                            "filters: keywords has no operator {other:?}; use contains or icontains"
                        )));
                    }
                });
            }
            Ok(all_or_one(parts))
        }
        other => Err(bad(format!("filters: unknown field {other:?}; known fields are AND, OR, NOT, {FIELDS}"))),
    }
}

fn all_or_one(mut parts: Vec<Filter>) -> Filter {
    if parts.len() == 1 { parts.pop().unwrap() } else { Filter::All(parts) }
}

fn scalar(key: &str, v: &Value) -> Result<String> {
    facet_value(v).ok_or_else(|| bad(format!("filters: {key} takes a string or number, not {}", kind_of(v))))
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Array(items) => items.iter().map(|i| scalar(key, i)).collect(),
        other => Err(bad(format!("filters: {key}.in takes a list, not {}", kind_of(other)))),
    }
}

/// `value`, `"*"`, or `{eq|ne|in: ..}` for scope ids and tier.
fn parse_value_op(key: &str, v: &Value) -> Result<Op> {
    match v {
        Value::String(s) if s == "*" => Ok(Op::Set),
        Value::Object(map) => {
            if map.len() != 1 {
                return Err(bad(format!("filters: {key} takes one operator (eq, ne, in)")));
            }
            let (op, arg) = map.iter().next().unwrap();
            match op.as_str() {
                "eq" => Ok(Op::Eq(scalar(key, arg)?)),
                "ne" => Ok(Op::Ne(scalar(key, arg)?)),
                "in" => Ok(Op::In(strings(key, arg)?)),
                other => Err(bad(format!("filters: {key} has no operator {other:?}; use eq, ne, in or \"*\""))),
            }
        }
        other => Ok(Op::Eq(scalar(key, other)?)),
    }
}

/// A time as Mem0 clients send it: RFC 3339, a date, or Unix seconds.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_date(s)
            .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc())),
        Value::Number(n) => n.as_f64().and_then(|s| Utc.timestamp_opt(s as i64, 0).single()),
        _ => None,
    }
}

fn parse_time_ops(key: &str, field: Field, v: &Value) -> Result<Filter> {
    let time = |arg: &Value| {
        parse_time(arg)
            .ok_or_else(|| bad(format!("filters: {key} takes a time: RFC 3339, YYYY-MM-DD or Unix seconds, not {arg}")))
    };
    let Value::Object(map) = v else {
        return Ok(Filter::Cond(field, Op::TimeEq(time(v)?)));
    };
    let mut parts = Vec::new();
    for (op, arg) in map {
        let op = match op.as_str() {
            "gt" => Op::Gt(time(arg)?),
            "gte" => Op::Gte(time(arg)?),
            "lt" => Op::Lt(time(arg)?),
            "lte" => Op::Lte(time(arg)?),
            "eq" => Op::TimeEq(time(arg)?),
            "ne" => Op::TimeNe(time(arg)?),
            "in" => match arg {
                Value::Array(items) => Op::TimeIn(items.iter().map(time).collect::<Result<Vec<_>>>()?),
                other => return Err(bad(format!("filters: {key}.in takes a list, not {}", kind_of(other)))),
            },
            other => {
                return Err(bad(format!(
                    "filters: {key} has no operator {other:?}; use gt, gte, lt, lte, eq, ne or in"
                )));
            }
        };
        parts.push(Filter::Cond(field.clone(), op));
    }
    if parts.is_empty() {
        return Err(bad(format!("filters: {key} needs an operator (gt, gte, lt, lte, eq, ne, in)")));
    }
    Ok(all_or_one(parts))
}

fn parse_categories(v: &Value) -> Result<Filter> {
    match v {
        Value::String(s) => Ok(Filter::Cond(Field::Categories, Op::Contains(s.clone()))),
        Value::Array(_) => Ok(Filter::Cond(Field::Categories, Op::In(strings("categories", v)?))),
        Value::Object(map) => {
            let mut parts = Vec::new();
            for (op, arg) in map {
                parts.push(match op.as_str() {
                    "in" => Filter::Cond(Field::Categories, Op::In(strings("categories", arg)?)),
                    "contains" => Filter::Cond(Field::Categories, Op::Contains(scalar("categories", arg)?)),
                    other => {
                        return Err(bad(format!("filters: categories has no operator {other:?}; use in or contains")));
                    }
                });
            }
            if parts.is_empty() {
                return Err(bad("filters: categories needs an operator (in, contains)"));
            }
            Ok(all_or_one(parts))
        }
        other => Err(bad(format!("filters: categories takes an object or list, not {}", kind_of(other)))),
    }
}

fn parse_metadata(v: &Value) -> Result<Filter> {
    let Value::Object(map) = v else {
        return Err(bad("filters: metadata takes an object of {key: value} or {key: {eq|ne|contains|in: value}}"));
    };
    let mut parts = Vec::new();
    for (key, cond) in map {
        let field = Field::Metadata(key.clone());
        let op = match cond {
            Value::Object(ops) => {
                if ops.len() != 1 {
                    return Err(bad(format!("filters: metadata.{key} takes one operator (eq, ne, contains, in)")));
                }
                let (op, arg) = ops.iter().next().unwrap();
                match op.as_str() {
                    "eq" => Op::Eq(scalar(key, arg)?),
                    "ne" => Op::Ne(scalar(key, arg)?),
                    "contains" => Op::Contains(scalar(key, arg)?),
                    "in" => Op::In(strings(key, arg)?),
                    other => {
                        return Err(bad(format!(
                            "filters: metadata.{key} has no operator {other:?}; use eq, ne, contains or in"
                        )));
                    }
                }
            }
            other => Op::Eq(scalar(key, other)?),
        };
        parts.push(Filter::Cond(field, op));
    }
    Ok(all_or_one(parts))
}

fn cond_matches(field: &Field, op: &Op, m: &Memory) -> bool {
    match field {
        Field::UserId | Field::AgentId | Field::AppId | Field::RunId | Field::Tier => {
            let value = match field {
                Field::UserId => m.user_id.clone(),
                Field::AgentId => m.agent_id.clone(),
                Field::AppId => m.app_id.clone(),
                Field::RunId => m.run_id.clone(),
                _ => Some(m.tier.as_str().to_string()),
            };
            text_matches(value.as_deref(), op)
        }
        Field::Metadata(key) => {
            let value = m.metadata.get(key);
            match op {
                Op::Contains(needle) => match value {
                    Some(Value::String(s)) => s.contains(needle.as_str()),
                    Some(Value::Array(items)) => items.iter().any(|i| facet_value(i).as_deref() == Some(needle)),
                    _ => false,
                },
                _ => text_matches(value.and_then(facet_value).as_deref(), op),
            }
        }
        Field::Categories => match op {
            Op::Contains(c) => m.categories.iter().any(|x| x == c),
            Op::In(list) => m.categories.iter().any(|x| list.contains(x)),
            _ => false,
        },
        Field::MemoryIds => match op {
            Op::In(ids) => ids.contains(&m.id),
            _ => false,
        },
        Field::Keywords => match op {
            Op::Contains(t) => m.memory.contains(t.as_str()),
            Op::IContains(t) => m.memory.to_lowercase().contains(t.as_str()),
            _ => false,
        },
        Field::CreatedAt => time_matches(Some(m.created_at), op),
        Field::UpdatedAt => time_matches(Some(m.updated_at), op),
        Field::Timestamp => time_matches(Some(m.event_time.unwrap_or(m.created_at)), op),
        Field::ExpirationDate => time_matches(m.expiration_date.map(midnight), op),
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

fn text_matches(value: Option<&str>, op: &Op) -> bool {
    match op {
        Op::Set => value.is_some(),
        Op::Eq(v) => value == Some(v.as_str()),
        Op::Ne(v) => value != Some(v.as_str()),
        Op::In(list) => value.is_some_and(|x| list.iter().any(|v| v == x)),
        Op::Contains(v) => value.is_some_and(|x| x.contains(v.as_str())),
        _ => false,
    }
}

fn time_matches(value: Option<DateTime<Utc>>, op: &Op) -> bool {
    let Some(t) = value else { return matches!(op, Op::TimeNe(_)) };
    match op {
        Op::Gt(x) => t > *x,
        Op::Gte(x) => t >= *x,
        Op::Lt(x) => t < *x,
        Op::Lte(x) => t <= *x,
        Op::TimeEq(x) => t == *x,
        Op::TimeNe(x) => t != *x,
        Op::TimeIn(xs) => xs.contains(&t),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::memory::Tier;

    fn memory(user: &str, categories: &[&str], text: &str) -> Memory {
        let mut m = Memory::for_tests(text);
        m.user_id = Some(user.to_string());
        m.categories = categories.iter().map(|c| c.to_string()).collect();
        m.metadata = json!({"city": "Lyon", "tags": ["a", "b"]});
        m
    }

    #[test]
    fn grammar_combines_and_or_not() {
        let f = Filter::parse(&json!({
            "AND": [
                {"user_id": {"in": ["alice", "bob"]}},
                {"OR": [{"categories": {"contains": "food"}}, {"keywords": {"icontains": "PIZZA"}}]},
                {"NOT": {"metadata": {"city": "Paris"}}}
            ]
        }))
        .unwrap();
        assert!(f.matches(&memory("alice", &["food"], "x")));
        assert!(f.matches(&memory("bob", &[], "loves pizza")));
        assert!(!f.matches(&memory("carol", &["food"], "x")), "user not in the list");
        assert!(!f.matches(&memory("alice", &["travel"], "x")), "neither branch of OR");
        let mut paris = memory("alice", &["food"], "x");
        paris.metadata = json!({"city": "Paris"});
        assert!(!f.matches(&paris), "NOT excludes");
    }

    #[test]
    fn wildcard_ne_and_times() {
        let f = Filter::parse(&json!({"agent_id": "*", "user_id": {"ne": "bob"}, "created_at": {"gte": "2020-01-01", "lt": 4102444800u64}})).unwrap();
        let mut m = memory("alice", &[], "x");
        assert!(!f.matches(&m), "agent_id is not set");
        m.agent_id = Some("helper".into());
        assert!(f.matches(&m));
        m.created_at = Utc.with_ymd_and_hms(2019, 5, 1, 0, 0, 0).unwrap();
        assert!(!f.matches(&m), "created before the lower bound");
    }

    #[test]
    fn pushdown_takes_only_what_holds_for_every_match() {
        let f = Filter::parse(&json!({"user_id": "alice", "tier": "factual", "OR": [{"agent_id": "a"}, {"agent_id": "b"}], "metadata": {"city": "Lyon"}})).unwrap();
        let mut rf = RecordFilter::default();
        f.pushdown(&mut rf);
        assert!(rf.metadata.contains(&("user_id".into(), "alice".into())));
        assert!(rf.metadata.contains(&("tier".into(), Tier::Factual.as_str().into())));
        assert!(rf.metadata.contains(&("m.city".into(), "Lyon".into())));
        assert!(!rf.metadata.iter().any(|(k, _)| k == "agent_id"), "an OR is not pushed down");
    }

    #[test]
    fn unknown_fields_and_operators_are_named() {
        for (input, named) in [
            (json!({"colour": "red"}), "colour"),
            (json!({"user_id": {"like": "a%"}}), "like"),
            (json!({"created_at": {"gte": "yesterday-ish"}}), "created_at"),
            (json!({"AND": {"user_id": "a"}}), "AND"),
            (json!(["user_id"]), "object"),
        ] {
            let e = Filter::parse(&input).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidRequest);
            assert!(e.message.contains(named), "{} should name {named}", e.message);
        }
    }
}
