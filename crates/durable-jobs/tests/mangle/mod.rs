//! Shared by the decoding tests: how a valid JSON message or record gets mangled, and how
//! many cases a property runs.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{json, Value};

/// Cases per property: modest by default, so that `cargo test` stays quick, and as many as
/// the standard `PROPTEST_CASES` variable says for longer runs.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        // A failure found is kept as a named test, not as a file beside the sources.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Numbers at and around the limits of the types messages and records use, and any others.
pub fn number() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(1),
            json!(i32::MAX),
            json!(i32::MIN),
            json!(i64::from(i32::MAX) + 1),
            json!(u32::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.5),
            json!(-0.0),
            json!(1e300),
            json!(-1e300),
            json!(f64::MIN_POSITIVE),
        ]),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
    ]
}

/// A step from a JSON node to one of its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// The member of an object with this name.
    Key(String),
    /// The item of an array at this index.
    Item(usize),
}

/// Paths to every node of `value` down to a depth of 32: deeper nodes are left alone, so
/// that a deeply nested value costs little to walk.
pub fn paths(value: &Value) -> Vec<Vec<PathStep>> {
    fn walk(value: &Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        out.push(path.clone());
        if path.len() == 32 {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(PathStep::Key(key.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(PathStep::Item(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The node at `path`, if there is one.
pub fn node_mut<'v>(value: &'v mut Value, path: &[PathStep]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |node, step| match step {
        PathStep::Key(key) => node.get_mut(key.as_str()),
        PathStep::Item(i) => node.get_mut(*i),
    })
}

/// One change to a valid JSON value: what a faulty sender, a bad disk or a faulty migration
/// makes of it. Indexes pick among the nodes found by [`paths`].
#[derive(Debug, Clone)]
pub enum Mutation {
    /// The object member at this index (among object members) is removed.
    Remove(Index),
    /// The object member at this index gets another name.
    Rename(Index, String),
    /// The node at this index becomes this value.
    Replace(Index, Value),
    /// The number at this index (among numbers) becomes this value.
    Number(Index, Value),
    /// The node at this index is wrapped in this many arrays.
    Nest(Index, usize),
    /// The node at this index becomes a string of this many bytes.
    Long(Index, usize),
    /// The root, if an object, gets one more member.
    Add(String, Value),
    /// The whole value is replaced.
    Whole(Value),
}

impl Mutation {
    /// Makes the change in `value`.
    pub fn apply(&self, value: &mut Value) {
        let all = paths(value);
        let pick = |at: &Index, among: Vec<&Vec<PathStep>>| -> Option<Vec<PathStep>> {
            (!among.is_empty()).then(|| among[at.index(among.len())].clone())
        };
        match self {
            Mutation::Remove(at) | Mutation::Rename(at, _) => {
                let members = all
                    .iter()
                    .filter(|p| matches!(p.last(), Some(PathStep::Key(_))));
                let Some(path) = pick(at, members.collect()) else {
                    return;
                };
                let Some((PathStep::Key(key), parent)) = path.split_last() else {
                    return;
                };
                if let Some(Value::Object(map)) = node_mut(value, parent) {
                    let removed = map.remove(key);
                    if let (Mutation::Rename(_, name), Some(v)) = (self, removed) {
                        map.insert(name.clone(), v);
                    }
                }
            }
            Mutation::Replace(at, new) => {
                if let Some(node) = node_mut(value, &all[at.index(all.len())]) {
                    *node = new.clone();
                }
            }
            Mutation::Number(at, new) => {
                let numbers = all.iter().filter(|p| {
                    let mut copy = value.clone();
                    node_mut(&mut copy, p).is_some_and(|n| n.is_number())
                });
                if let Some(path) = pick(at, numbers.collect()) {
                    if let Some(node) = node_mut(value, &path) {
                        *node = new.clone();
                    }
                }
            }
            Mutation::Nest(at, depth) => {
                if let Some(node) = node_mut(value, &all[at.index(all.len())]) {
                    for _ in 0..*depth {
                        *node = Value::Array(vec![node.take()]);
                    }
                }
            }
            Mutation::Long(at, len) => {
                if let Some(node) = node_mut(value, &all[at.index(all.len())]) {
                    *node = Value::String("é".repeat(*len / 2));
                }
            }
            Mutation::Add(name, new) => {
                if let Value::Object(map) = value {
                    map.insert(name.clone(), new.clone());
                }
            }
            Mutation::Whole(new) => *value = new.clone(),
        }
    }
}

/// Mutations with values from `values`, member names from `names`, and long strings of up
/// to `max_len` bytes.
pub fn mutation(
    values: impl Strategy<Value = Value> + Clone + 'static,
    names: impl Strategy<Value = String> + Clone + 'static,
    max_len: usize,
) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), names.clone()).prop_map(|(at, name)| Mutation::Rename(at, name)),
        3 => (any::<Index>(), values.clone()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        3 => (any::<Index>(), number()).prop_map(|(at, v)| Mutation::Number(at, v)),
        // Around the decoder's limit of 128 levels. Deeper values are built as text by the
        // tests that need them: encoding a value recurses as deep as it nests.
        1 => (any::<Index>(), prop_oneof![1..130usize, 120..300usize])
            .prop_map(|(at, depth)| Mutation::Nest(at, depth)),
        1 => (any::<Index>(), 0..=max_len).prop_map(|(at, len)| Mutation::Long(at, len)),
        1 => (names, values.clone()).prop_map(|(name, v)| Mutation::Add(name, v)),
        1 => values.prop_map(Mutation::Whole),
    ]
}
