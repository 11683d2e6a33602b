//! Which messages an endpoint gets, by their payload: a filter is a JSON object in a small
//! subset of MongoDB's query language (as Hookdeck's filters are), so that users can write
//! it by hand and read it back without learning a new syntax.
//!
//! ```json
//! {"type": {"$in": ["invoice.paid", "invoice.failed"]}, "data": {"amount": {"$gte": 100}}}
//! ```
//!
//! - Each plain key of a filter names a field of the payload object at that level (one key
//!   is one field name: there are no dotted paths, nesting is written with nested objects);
//!   its value is a condition on that field. The entries of a filter must all hold, so `{}`
//!   passes everything.
//! - `$or` / `$and` (non-empty arrays of filters) and `$not` (a filter) combine filters, at
//!   the top level or inside one another. Because every other key starting with `$` is an
//!   operator, payload fields whose names start with `$` cannot be matched.
//! - A condition is a scalar (the field equals it, or for an array field one of its elements
//!   does), an array (the field deep-equals it), a nested filter (an object without `$` keys:
//!   the field, or one element of an array field, is an object passing it) or an object of
//!   operators, all of which must hold: `$eq`, `$neq`, `$in`, `$nin`, `$exists`, `$gt`,
//!   `$gte`, `$lt`, `$lte`, `$startsWith`, `$endsWith`, `$contains` and `$not` (a condition).
//! - Numbers compare by value (`1` equals `1.0`) wherever values are compared.
//! - A missing field fails every condition except `$exists: false`, `$neq`, `$nin` and a
//!   `$not` of a condition that fails on it; `null` matches only a field that is present and
//!   null.

use std::cmp::Ordering;
use std::fmt::Display;

use serde_json::{Map, Number, Value};

use super::RuleError;

/// How deep filters and templates may nest (the root object or array is level 1). Their
/// checking and their evaluation recurse along the document, so a bound on the document is
/// what keeps a hostile one from exhausting the stack; 32 is far more than real rules need.
pub(super) const MAX_DEPTH: usize = 32;

/// An error at the place being checked; enclosing levels add their part of the path with
/// [`within`] on the way back up, so that checking a good document builds no paths at all.
pub(super) fn fail(msg: impl Into<String>) -> RuleError {
    RuleError { path: String::new(), msg: msg.into() }
}

/// Moves an error from inside `segment` (a key or an index) to the level that holds it.
/// (Dot-joined paths are for people to read: they cannot tell a dotted key from nesting,
/// nor show an empty key at their end.)
pub(super) fn within(segment: impl Display) -> impl FnOnce(RuleError) -> RuleError {
    move |mut err| {
        err.path = if err.path.is_empty() { segment.to_string() } else { format!("{segment}.{}", err.path) };
        err
    }
}

/// Refuses an object or array at `depth` beyond [`MAX_DEPTH`].
pub(super) fn check_depth(depth: usize) -> Result<(), RuleError> {
    if depth > MAX_DEPTH {
        return Err(fail(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    Ok(())
}

/// Checks a filter document; the first problem found, with its location.
pub fn validate(filter: &Value) -> Result<(), RuleError> {
    check_filter(filter, 1)
}

/// Whether `payload` passes `filter`. `filter` was validated; should it not be, anything not
/// understood does not match (never panics).
///
/// The filter is checked again first (cheap: it allocates nothing unless it fails), so that
/// one that was never validated, or was stored under older rules, matches nothing rather
/// than being half understood (a `$not` around something unknown must not turn into a
/// match), and so that evaluation never recurses deeper than [`MAX_DEPTH`]. On the payload
/// side, evaluation descends only as far as the filter does, however deep the payload is.
/// An evaluation that would take more than [`MAX_STEPS`] does not match.
pub fn matches(filter: &Value, payload: &Value) -> bool {
    let mut left = MAX_STEPS;
    matches_within(filter, payload, &mut left)
}

/// [`matches`], taking its steps from `left` (at most [`MAX_STEPS`]), which it lowers by the
/// steps it took: the filters of every endpoint a message may go to share one budget
/// ([`MAX_STEPS_PER_PAYLOAD`]). With none left, the filter does not match.
pub fn matches_within(filter: &Value, payload: &Value, left: &mut usize) -> bool {
    let budget = (*left).min(MAX_STEPS);
    let eval = Eval { left: std::cell::Cell::new(budget) };
    let passed = validate(filter).is_ok() && eval.passes(filter, payload) && !eval.spent();
    *left -= budget - eval.left.get();
    passed
}

// ---------------------------------------------------------------------------------------
// Checking. `depth` is the level the value being checked has if it is an object or array.

fn check_filter(filter: &Value, depth: usize) -> Result<(), RuleError> {
    let Value::Object(entries) = filter else { return Err(fail("must be a JSON object")) };
    check_depth(depth)?;
    for (key, value) in entries {
        match key.as_str() {
            "$or" | "$and" => check_filter_list(key, value, depth + 1),
            "$not" => check_filter(value, depth + 1),
            op if op.starts_with('$') => Err(fail(format!("unknown operator `{op}`"))),
            _ => check_condition(value, depth + 1),
        }
        .map_err(within(key))?;
    }
    Ok(())
}

fn check_filter_list(op: &str, list: &Value, depth: usize) -> Result<(), RuleError> {
    let Some(filters) = list.as_array().filter(|filters| !filters.is_empty()) else {
        return Err(fail(format!("`{op}` needs a non-empty array of filter objects")));
    };
    check_depth(depth)?;
    for (i, filter) in filters.iter().enumerate() {
        check_filter(filter, depth + 1).map_err(within(i))?;
    }
    Ok(())
}

fn check_condition(condition: &Value, depth: usize) -> Result<(), RuleError> {
    let Value::Object(entries) = condition else { return check_value(condition, depth) };
    let operators = entries.keys().filter(|key| key.starts_with('$')).count();
    if operators == 0 {
        check_filter(condition, depth)
    } else if operators < entries.len() {
        Err(fail("mixes operators and field names"))
    } else {
        check_depth(depth)?;
        for (op, operand) in entries {
            check_operator(op, operand, depth + 1).map_err(within(op))?;
        }
        Ok(())
    }
}

fn check_operator(op: &str, operand: &Value, depth: usize) -> Result<(), RuleError> {
    let needs = |what: &str| Err(fail(format!("`{op}` needs {what}")));
    match op {
        "$eq" | "$neq" | "$contains" => check_value(operand, depth),
        "$in" | "$nin" if operand.is_array() => check_value(operand, depth),
        "$in" | "$nin" => needs("an array of values"),
        "$exists" if operand.is_boolean() => Ok(()),
        "$exists" => needs("true or false"),
        "$gt" | "$gte" | "$lt" | "$lte" if operand.is_number() || operand.is_string() => Ok(()),
        "$gt" | "$gte" | "$lt" | "$lte" => needs("a number or a string"),
        "$startsWith" | "$endsWith" if operand.is_string() => Ok(()),
        "$startsWith" | "$endsWith" => needs("a string"),
        "$not" => check_condition(operand, depth),
        _ => Err(fail(format!("unknown operator `{op}`"))),
    }
}

/// A value compared with the payload: any JSON, only its depth is bounded.
fn check_value(value: &Value, depth: usize) -> Result<(), RuleError> {
    match value {
        Value::Array(items) => {
            check_depth(depth)?;
            for (i, item) in items.iter().enumerate() {
                check_value(item, depth + 1).map_err(within(i))?;
            }
        }
        Value::Object(members) => {
            check_depth(depth)?;
            for (key, member) in members {
                check_value(member, depth + 1).map_err(within(key))?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Evaluation, on a valid filter: shapes validation refuses simply do not hold.

/// Comparisons and visits one evaluation may make (about ten milliseconds' work). A filter
/// and a payload can each be large (64 KiB of `$in` values, a megabyte of array items), and
/// some conditions cost their product; evaluation runs on the thread that serves requests,
/// so past this it gives up, and the payload does not pass.
pub const MAX_STEPS: usize = 1_000_000;

/// Steps the filters of all the endpoints of one message may take together (a few tens of
/// milliseconds): an application's endpoints are not limited in number, and a hundred
/// filters each spending its whole budget would hold a request thread for a second per
/// message, every tenant's requests with it. Past this, the filters left do not match.
pub const MAX_STEPS_PER_PAYLOAD: usize = 4 * MAX_STEPS;

/// Bytes a substring search reads for the cost of one step: 32 MB in all, a few tens of
/// milliseconds, so that ten searches of a megabyte field (a filter on keywords) are done
/// whole, and a thousand are cut short.
const BYTES_PER_STEP: usize = 32;

/// One evaluation's budget of steps. Once spent, every loop stops at its next turn and the
/// answer is `false` whatever the parts found (a negation of a part cut short means
/// nothing).
struct Eval {
    left: std::cell::Cell<usize>,
}

impl Eval {
    /// Takes one step; `false` once the budget is spent.
    fn step(&self) -> bool {
        let left = self.left.get();
        self.left.set(left.saturating_sub(1));
        left > 0
    }

    /// Takes `n` steps at once, for work whose cost grows with its input; `false` once the
    /// budget is spent.
    fn take(&self, n: usize) -> bool {
        let left = self.left.get();
        self.left.set(left.saturating_sub(n));
        left >= n
    }

    fn spent(&self) -> bool {
        self.left.get() == 0
    }

    /// Whether `value` (the payload, or an object inside it) passes the filter object
    /// `filter`.
    fn passes(&self, filter: &Value, value: &Value) -> bool {
        let Value::Object(entries) = filter else { return false };
        entries.iter().all(|(key, entry)| {
            self.step()
                && match key.as_str() {
                    "$or" => filter_list(entry).any(|f| self.spent() || self.passes(f, value)),
                    "$and" => filter_list(entry).all(|f| self.passes(f, value)),
                    "$not" => !self.passes(entry, value),
                    _ => self.holds(entry, value.get(key.as_str())),
                }
        })
    }

    /// Whether the condition holds for a field, `None` when the field is missing.
    fn holds(&self, condition: &Value, field: Option<&Value>) -> bool {
        match condition {
            Value::Object(ops) if is_operators(ops) => {
                ops.iter().all(|(op, operand)| self.step() && self.operator_holds(op, operand, field))
            }
            Value::Object(_) => field.is_some_and(|field| {
                // Each item looked at is a step, an object or not.
                let passes_as_object =
                    |value: &Value| self.step() && value.is_object() && self.passes(condition, value);
                passes_as_object(field)
                    || field.as_array().is_some_and(|items| items.iter().any(|i| self.spent() || passes_as_object(i)))
            }),
            Value::Array(_) => field.is_some_and(|field| self.same(field, condition)),
            scalar => field.is_some_and(|field| self.equals_or_has(field, scalar)),
        }
    }

    fn operator_holds(&self, op: &str, operand: &Value, field: Option<&Value>) -> bool {
        let is_in = |field: &Value| {
            operand.as_array().is_some_and(|values| values.iter().any(|v| self.spent() || self.equals_or_has(field, v)))
        };
        let compares =
            |wanted: fn(Ordering) -> bool| field.and_then(|field| compare(field, operand)).is_some_and(wanted);
        match (op, field) {
            ("$eq", Some(field)) => self.equals_or_has(field, operand),
            ("$neq", _) => !field.is_some_and(|field| self.equals_or_has(field, operand)),
            ("$in", Some(field)) => is_in(field),
            ("$nin", _) => !field.is_some_and(is_in),
            ("$exists", _) => operand.as_bool() == Some(field.is_some()),
            ("$gt", _) => compares(Ordering::is_gt),
            ("$gte", _) => compares(Ordering::is_ge),
            ("$lt", _) => compares(Ordering::is_lt),
            ("$lte", _) => compares(Ordering::is_le),
            ("$startsWith", Some(Value::String(field))) => {
                operand.as_str().is_some_and(|prefix| field.starts_with(prefix))
            }
            ("$endsWith", Some(Value::String(field))) => operand.as_str().is_some_and(|suffix| field.ends_with(suffix)),
            // A search reads the whole field: charged by its bytes, or a megabyte field and a
            // thousand `$or`ed searches would cost a second for one step each.
            ("$contains", Some(Value::String(field))) => operand
                .as_str()
                .is_some_and(|part| self.take((field.len() + part.len()) / BYTES_PER_STEP) && field.contains(part)),
            ("$contains", Some(Value::Array(items))) => {
                items.iter().any(|item| self.spent() || self.same(item, operand))
            }
            ("$not", _) => !self.holds(operand, field),
            _ => false,
        }
    }

    /// Equality as a scalar condition, `$eq` and `$in` see it: the field equals the value,
    /// or the field is an array and one of its elements does (MongoDB's rule, so that a
    /// filter on a tag also matches a list of tags).
    fn equals_or_has(&self, field: &Value, value: &Value) -> bool {
        self.same(field, value)
            || field.as_array().is_some_and(|items| items.iter().any(|item| self.spent() || self.same(item, value)))
    }

    /// Deep equality where numbers compare by value: JSON does not distinguish `1` from
    /// `1.0`, and senders do not agree on which they write. Recursion stops at the shallower
    /// side, and one side is always from the (depth-checked) filter.
    fn same(&self, a: &Value, b: &Value) -> bool {
        if !self.step() {
            return false;
        }
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| self.same(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(key, x)| y.get(key).is_some_and(|y| self.same(x, y)))
            }
            _ => a == b,
        }
    }
}

fn filter_list(list: &Value) -> impl Iterator<Item = &Value> {
    list.as_array().into_iter().flatten()
}

/// An object of operators, as opposed to a nested filter (`{}` is a nested filter: the field
/// must be an object).
fn is_operators(condition: &Map<String, Value>) -> bool {
    !condition.is_empty() && condition.keys().all(|key| key.starts_with('$'))
}

/// The order of `$gt` and friends: numbers with numbers, strings with strings (by bytes);
/// anything else is not ordered, so the comparison does not hold.
fn compare(field: &Value, operand: &Value) -> Option<Ordering> {
    match (field, operand) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// Integers compare exactly (as `f64` they would not beyond 2^53); a fraction on either side
/// makes it a floating-point comparison.
fn compare_numbers(x: &Number, y: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return Some(x.cmp(&y));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `matches`, after making sure the filter is valid (so that a typo in a test filter
    /// cannot pass as "does not match").
    fn m(filter: Value, payload: Value) -> bool {
        assert_eq!(validate(&filter), Ok(()), "test filter {filter} should be valid");
        matches(&filter, &payload)
    }

    /// The validation error of `filter`, as `(path, msg)`.
    fn invalid(filter: Value) -> (String, String) {
        let err = validate(&filter).expect_err("filter should be invalid");
        assert!(!matches(&filter, &json!({})), "an invalid filter must not match");
        (err.path, err.msg)
    }

    /// `{key: {key: ... leaf}}` with `levels` objects. (Not with `json!`: it would copy
    /// `inner` through `serde_json::to_value`, recursively, at every level.)
    fn nest(levels: usize, key: &str, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| Value::Object([(key.to_string(), inner)].into_iter().collect()))
    }

    #[test]
    fn an_evaluation_past_its_budget_does_not_match() {
        // 100,000 items against 1,000 values: 10^8 comparisons. Without the budget, `$nin`
        // holds (no 1 among the zeros); cut short, it matches nothing.
        let zeros = json!({"a": vec![0; 100_000]});
        let ones = json!({"a": {"$nin": vec![1; 1_000]}});
        assert!(!m(ones, zeros.clone()));
        assert!(!m(json!({"$not": {"a": {"$in": vec![1; 1_000]}}}), zeros));
        // A nested filter per item, items that are no objects: each looked at is a step.
        let scalars = json!({"a": vec![0; 500_000]});
        let nested: Vec<Value> = (0..5).map(|i| json!({"a": {"x": i}})).collect();
        assert!(!m(json!({"$not": {"$or": nested}}), scalars), "cut short, it matches nothing");
        // Within it, the same conditions are evaluated whole.
        let fewer = json!({"a": vec![0; 1_000]});
        assert!(m(json!({"a": {"$nin": vec![1; 500]}}), fewer.clone()));
        assert!(!m(json!({"a": {"$in": vec![1; 500]}}), fewer.clone()));
        let mut last = vec![1; 499];
        last.push(0);
        assert!(m(json!({"a": {"$in": last}}), fewer));
    }

    /// The filters of one payload share a budget: once costly ones have spent it, the next
    /// does not match, however cheap; each still has its own.
    #[test]
    fn the_filters_of_one_payload_share_a_budget() {
        let payload = json!({"a": vec![0; 1_000], "kind": "x"});
        // 500 values against 1,000 items: about half a million steps.
        let costly = json!({"a": {"$nin": vec![1; 500]}});
        let cheap = json!({"kind": "x"});
        let mut left = MAX_STEPS_PER_PAYLOAD;
        let passed: Vec<bool> = (0..7).map(|_| matches_within(&costly, &payload, &mut left)).collect();
        assert!(passed.iter().all(|p| *p), "{passed:?}");
        assert!(left < MAX_STEPS_PER_PAYLOAD / 7, "{left}");
        while matches_within(&costly, &payload, &mut left) {}
        assert!(!matches_within(&cheap, &payload, &mut left), "nothing left");
        assert!(matches(&cheap, &payload), "alone, it matches");
        // One filter takes no more than its own budget from a larger one.
        let mut plenty = 10 * MAX_STEPS;
        let twice = json!({"a": {"$nin": vec![1; 2_000]}});
        assert!(!matches_within(&twice, &payload, &mut plenty));
        assert_eq!(plenty, 9 * MAX_STEPS);
    }

    /// A search is charged by the bytes it reads: a thousand `$or`ed searches of a
    /// megabyte field, a second of one request thread's time, are cut short; one search of
    /// the same field is done whole.
    #[test]
    fn searches_are_charged_by_the_bytes_they_read() {
        let text = "a".repeat(1 << 20);
        let payload = json!({"a": text});
        let missing: Vec<Value> =
            (0..1_000).map(|i| json!({"a": {"$contains": format!("{}b{i}", "a".repeat(40))}})).collect();
        assert!(!m(json!({"$not": {"$or": missing}}), payload.clone()), "cut short, it matches nothing");
        assert!(m(json!({"$not": {"a": {"$contains": "ab"}}}), payload.clone()));
        assert!(m(json!({"a": {"$contains": "aaa"}}), payload.clone()));
        // Ten keywords searched in the megabyte, the last one found: done whole.
        let mut keywords: Vec<Value> = (0..9).map(|i| json!({"a": {"$contains": format!("kw{i}")}})).collect();
        keywords.push(json!({"a": {"$contains": "aaaa"}}));
        assert!(m(json!({"$or": keywords}), payload));
    }

    #[test]
    fn empty_filter_passes_everything() {
        for payload in [json!({}), json!({"a": 1}), json!([1]), json!("x"), json!(null)] {
            assert!(m(json!({}), payload));
        }
    }

    #[test]
    fn scalar_conditions_are_equality() {
        let payload = json!({"s": "x", "n": 1, "f": 2.5, "t": true, "z": null});
        assert!(m(json!({"s": "x"}), payload.clone()));
        assert!(!m(json!({"s": "y"}), payload.clone()));
        assert!(m(json!({"n": 1}), payload.clone()));
        assert!(m(json!({"n": 1.0}), payload.clone()));
        assert!(!m(json!({"n": 2}), payload.clone()));
        assert!(m(json!({"f": 2.5}), payload.clone()));
        assert!(m(json!({"t": true}), payload.clone()));
        assert!(!m(json!({"t": false}), payload.clone()));
        assert!(m(json!({"z": null}), payload.clone()));
        assert!(m(json!({"s": "x", "n": 1, "t": true}), payload.clone()));
        assert!(!m(json!({"s": "x", "n": 2}), payload));
    }

    #[test]
    fn scalar_conditions_do_not_convert_types() {
        let payload = json!({"n": 1, "s": "1", "t": true, "z": null});
        assert!(!m(json!({"n": "1"}), payload.clone()));
        assert!(!m(json!({"s": 1}), payload.clone()));
        assert!(!m(json!({"t": 1}), payload.clone()));
        assert!(!m(json!({"z": false}), payload.clone()));
        assert!(!m(json!({"n": null}), payload));
    }

    #[test]
    fn null_matches_only_a_present_null() {
        assert!(m(json!({"a": null}), json!({"a": null})));
        assert!(!m(json!({"a": null}), json!({})));
        assert!(!m(json!({"a": null}), json!({"a": 0})));
    }

    #[test]
    fn missing_fields_fail_plain_conditions() {
        for condition in [json!("x"), json!(0), json!(false), json!([]), json!({"b": 1}), json!({})] {
            assert!(!m(json!({ "a": condition }), json!({"b": 1})), "{condition} on a missing field");
        }
    }

    #[test]
    fn fields_of_a_non_object_payload_are_missing() {
        assert!(!m(json!({"0": 1}), json!([1])));
        assert!(!m(json!({"a": 1}), json!("a")));
        assert!(m(json!({"a": {"$exists": false}}), json!(7)));
    }

    #[test]
    fn scalar_condition_on_an_array_field_matches_any_element() {
        let payload = json!({"tags": ["a", "b", 3]});
        assert!(m(json!({"tags": "a"}), payload.clone()));
        assert!(m(json!({"tags": "b"}), payload.clone()));
        assert!(m(json!({"tags": 3.0}), payload.clone()));
        assert!(!m(json!({"tags": "c"}), payload));
        assert!(m(json!({"tags": null}), json!({"tags": [1, null]})));
        assert!(!m(json!({"tags": "a"}), json!({"tags": []})));
    }

    #[test]
    fn array_condition_is_deep_equality() {
        let payload = json!({"a": [1, "x", {"k": [2]}]});
        assert!(m(json!({"a": [1.0, "x", {"k": [2]}]}), payload.clone()));
        assert!(!m(json!({"a": ["x", 1, {"k": [2]}]}), payload.clone()));
        assert!(!m(json!({"a": [1, "x"]}), payload));
        // Not "any element" for arrays: that is what `$contains` is for.
        assert!(!m(json!({"a": [1]}), json!({"a": [[1], 2]})));
        assert!(m(json!({"a": []}), json!({"a": []})));
        assert!(!m(json!({"a": []}), json!({"a": {}})));
    }

    #[test]
    fn nested_filters() {
        let payload = json!({"user": {"name": "ann", "address": {"city": "Oslo"}}});
        assert!(m(json!({"user": {"name": "ann"}}), payload.clone()));
        assert!(m(json!({"user": {"address": {"city": "Oslo"}}}), payload.clone()));
        assert!(!m(json!({"user": {"address": {"city": "Rome"}}}), payload.clone()));
        assert!(m(json!({"user": {"address": {"city": {"$startsWith": "Os"}}}}), payload.clone()));
        assert!(!m(json!({"user": {"name": "ann", "age": 3}}), payload));
        // A nested filter needs an object: not a scalar, not a string with that "field".
        assert!(!m(json!({"user": {"name": "ann"}}), json!({"user": "ann"})));
        assert!(!m(json!({"user": {}}), json!({"user": 1})));
        assert!(m(json!({"user": {}}), json!({"user": {"x": 1}})));
    }

    #[test]
    fn nested_filter_on_an_array_field_matches_any_object_element() {
        let payload = json!({"items": [1, "sku", {"sku": "a", "qty": 1}, {"sku": "b", "qty": 5}]});
        assert!(m(json!({"items": {"sku": "b"}}), payload.clone()));
        assert!(m(json!({"items": {"sku": "b", "qty": {"$gt": 2}}}), payload.clone()));
        // Both entries must hold for the same element.
        assert!(!m(json!({"items": {"sku": "a", "qty": {"$gt": 2}}}), payload.clone()));
        assert!(!m(json!({"items": {"sku": "c"}}), payload));
        assert!(!m(json!({"items": {}}), json!({"items": [1, "x", [{}]]})));
        assert!(m(json!({"items": {}}), json!({"items": [1, {}]})));
    }

    #[test]
    fn eq_and_neq() {
        let payload = json!({"n": 2, "o": {"a": [1, 2]}, "tags": ["x", "y"]});
        assert!(m(json!({"n": {"$eq": 2.0}}), payload.clone()));
        assert!(!m(json!({"n": {"$eq": 3}}), payload.clone()));
        assert!(m(json!({"o": {"$eq": {"a": [1.0, 2]}}}), payload.clone()));
        assert!(!m(json!({"o": {"$eq": {"a": [1, 2], "b": 1}}}), payload.clone()));
        assert!(!m(json!({"o": {"$eq": {"a": [2, 1]}}}), payload.clone()));
        assert!(m(json!({"tags": {"$eq": "y"}}), payload.clone()));
        assert!(m(json!({"tags": {"$eq": ["x", "y"]}}), payload.clone()));
        assert!(!m(json!({"missing": {"$eq": null}}), payload.clone()));

        assert!(m(json!({"n": {"$neq": 3}}), payload.clone()));
        assert!(!m(json!({"n": {"$neq": 2.0}}), payload.clone()));
        assert!(!m(json!({"o": {"$neq": {"a": [1, 2]}}}), payload.clone()));
        assert!(m(json!({"missing": {"$neq": 1}}), payload.clone()));
        assert!(m(json!({"missing": {"$neq": null}}), payload.clone()));
        // On an array: no element (nor the whole array) equals it.
        assert!(m(json!({"tags": {"$neq": "z"}}), payload.clone()));
        assert!(!m(json!({"tags": {"$neq": "x"}}), payload.clone()));
        assert!(!m(json!({"tags": {"$neq": ["x", "y"]}}), payload));
    }

    #[test]
    fn in_and_nin() {
        let payload = json!({"type": "paid", "n": 1, "tags": ["a", "b"]});
        assert!(m(json!({"type": {"$in": ["paid", "failed"]}}), payload.clone()));
        assert!(!m(json!({"type": {"$in": ["failed"]}}), payload.clone()));
        assert!(!m(json!({"type": {"$in": []}}), payload.clone()));
        assert!(m(json!({"n": {"$in": [1.0]}}), payload.clone()));
        assert!(m(json!({"tags": {"$in": ["z", "b"]}}), payload.clone()));
        assert!(!m(json!({"tags": {"$in": ["z"]}}), payload.clone()));
        assert!(!m(json!({"missing": {"$in": [null]}}), payload.clone()));

        assert!(m(json!({"type": {"$nin": ["failed"]}}), payload.clone()));
        assert!(!m(json!({"type": {"$nin": ["failed", "paid"]}}), payload.clone()));
        assert!(m(json!({"type": {"$nin": []}}), payload.clone()));
        assert!(!m(json!({"tags": {"$nin": ["b"]}}), payload.clone()));
        assert!(m(json!({"tags": {"$nin": ["c", "d"]}}), payload.clone()));
        assert!(m(json!({"missing": {"$nin": ["x"]}}), payload));
    }

    #[test]
    fn exists() {
        let payload = json!({"a": null, "b": 0});
        assert!(m(json!({"a": {"$exists": true}}), payload.clone()));
        assert!(m(json!({"b": {"$exists": true}}), payload.clone()));
        assert!(!m(json!({"c": {"$exists": true}}), payload.clone()));
        assert!(m(json!({"c": {"$exists": false}}), payload.clone()));
        assert!(!m(json!({"a": {"$exists": false}}), payload));
    }

    #[test]
    fn ordering_of_numbers() {
        let payload = json!({"n": 10, "f": 2.5, "neg": -3});
        assert!(m(json!({"n": {"$gt": 9}}), payload.clone()));
        assert!(!m(json!({"n": {"$gt": 10}}), payload.clone()));
        assert!(m(json!({"n": {"$gte": 10.0}}), payload.clone()));
        assert!(!m(json!({"n": {"$gte": 10.5}}), payload.clone()));
        assert!(m(json!({"n": {"$lt": 10.5}}), payload.clone()));
        assert!(!m(json!({"n": {"$lt": 10}}), payload.clone()));
        assert!(m(json!({"n": {"$lte": 10}}), payload.clone()));
        assert!(!m(json!({"n": {"$lte": 9.99}}), payload.clone()));
        assert!(m(json!({"f": {"$gt": 2}}), payload.clone()));
        assert!(m(json!({"neg": {"$lt": 0}}), payload.clone()));
        assert!(m(json!({"n": {"$gte": 1, "$lt": 11}}), payload.clone()));
        assert!(!m(json!({"n": {"$gte": 1, "$lt": 10}}), payload));
    }

    #[test]
    fn ordering_of_large_integers_is_exact() {
        let big = json!({"n": u64::MAX});
        assert!(m(json!({"n": {"$gt": u64::MAX - 1}}), big.clone()));
        assert!(!m(json!({"n": {"$gt": u64::MAX}}), big.clone()));
        assert!(m(json!({"n": {"$gt": i64::MIN}}), big));
        let near = json!({"n": (1_i64 << 53) + 1});
        assert!(m(json!({"n": {"$gt": 1_i64 << 53}}), near.clone()));
        assert!(!m(json!({"n": (1_i64 << 53)}), near));
        assert!(m(json!({"n": {"$lt": 0}}), json!({"n": i64::MIN})));
        assert!(m(json!({"n": {"$gt": i64::MIN}}), json!({"n": i64::MIN + 1})));
        assert!(!m(json!({"n": i64::MIN}), json!({"n": i64::MIN + 1})));
    }

    #[test]
    fn ordering_of_strings_is_by_bytes() {
        let payload = json!({"s": "b", "date": "2024-05-01T00:00:00Z"});
        assert!(m(json!({"s": {"$gt": "a"}}), payload.clone()));
        assert!(m(json!({"s": {"$gt": "B"}}), payload.clone()));
        assert!(m(json!({"s": {"$lt": "ba"}}), payload.clone()));
        assert!(m(json!({"s": {"$gte": "b", "$lte": "b"}}), payload.clone()));
        assert!(m(json!({"s": {"$lt": "é"}}), payload.clone()));
        assert!(m(json!({"date": {"$gte": "2024-01-01", "$lt": "2025-01-01"}}), payload.clone()));
        assert!(!m(json!({"date": {"$lt": "2024-05-01"}}), payload));
    }

    #[test]
    fn ordering_needs_matching_types() {
        let payload = json!({"n": 5, "s": "5", "t": true, "z": null, "a": [6], "o": {}});
        for op in ["$gt", "$gte", "$lt", "$lte"] {
            assert!(!m(json!({"n": { op: "4" }}), payload.clone()), "{op} number vs string");
            assert!(!m(json!({"s": { op: 4 }}), payload.clone()), "{op} string vs number");
            for field in ["t", "z", "a", "o", "missing"] {
                assert!(!m(json!({ field: { op: 5 } }), payload.clone()), "{op} on {field}");
                assert!(!m(json!({ field: { op: "5" } }), payload.clone()), "{op} on {field}");
            }
        }
        // The same operators do hold when the types match, so the loop above is meaningful.
        assert!(m(json!({"n": {"$gte": 5}, "s": {"$gte": "5"}}), payload));
    }

    #[test]
    fn starts_with_and_ends_with() {
        let payload = json!({"s": "invoice.paid", "u": "héllo", "n": 12, "a": ["invoice.x"]});
        assert!(m(json!({"s": {"$startsWith": "invoice."}}), payload.clone()));
        assert!(!m(json!({"s": {"$startsWith": "paid"}}), payload.clone()));
        assert!(m(json!({"s": {"$endsWith": ".paid"}}), payload.clone()));
        assert!(!m(json!({"s": {"$endsWith": "invoice"}}), payload.clone()));
        assert!(m(json!({"s": {"$startsWith": ""}}), payload.clone()));
        assert!(m(json!({"u": {"$startsWith": "hé", "$endsWith": "éllo"}}), payload.clone()));
        assert!(!m(json!({"n": {"$startsWith": "1"}}), payload.clone()));
        assert!(!m(json!({"a": {"$startsWith": "invoice"}}), payload.clone()));
        assert!(!m(json!({"missing": {"$endsWith": ""}}), payload));
    }

    #[test]
    fn contains() {
        let payload = json!({"s": "invoice.paid", "a": [1, "x", {"k": 2}], "n": 123, "o": {"x": 1}});
        assert!(m(json!({"s": {"$contains": "ice.p"}}), payload.clone()));
        assert!(!m(json!({"s": {"$contains": "unpaid"}}), payload.clone()));
        assert!(!m(json!({"s": {"$contains": 1}}), payload.clone()));
        assert!(m(json!({"a": {"$contains": 1.0}}), payload.clone()));
        assert!(m(json!({"a": {"$contains": "x"}}), payload.clone()));
        assert!(m(json!({"a": {"$contains": {"k": 2}}}), payload.clone()));
        assert!(!m(json!({"a": {"$contains": {"k": 3}}}), payload.clone()));
        assert!(!m(json!({"a": {"$contains": "xx"}}), payload.clone()));
        assert!(!m(json!({"n": {"$contains": "2"}}), payload.clone()));
        assert!(!m(json!({"o": {"$contains": "x"}}), payload.clone()));
        assert!(!m(json!({"missing": {"$contains": "x"}}), payload));
    }

    #[test]
    fn not_condition() {
        let payload = json!({"n": 5, "s": "abc"});
        assert!(m(json!({"n": {"$not": {"$gt": 6}}}), payload.clone()));
        assert!(!m(json!({"n": {"$not": {"$gt": 4}}}), payload.clone()));
        assert!(m(json!({"n": {"$not": 4}}), payload.clone()));
        assert!(!m(json!({"n": {"$not": 5}}), payload.clone()));
        assert!(m(json!({"s": {"$not": {"$startsWith": "b"}}}), payload.clone()));
        assert!(!m(json!({"n": {"$not": {"$not": 4}}}), payload.clone()));
        // On a missing field: `$not` of something that fails on missing holds.
        assert!(m(json!({"missing": {"$not": {"$gt": 1}}}), payload.clone()));
        assert!(m(json!({"missing": {"$not": "x"}}), payload.clone()));
        assert!(!m(json!({"missing": {"$not": {"$exists": false}}}), payload));
    }

    #[test]
    fn or_and_not_filters() {
        let payload = json!({"type": "a", "n": 5});
        assert!(m(json!({"$or": [{"type": "b"}, {"n": 5}]}), payload.clone()));
        assert!(!m(json!({"$or": [{"type": "b"}, {"n": 6}]}), payload.clone()));
        assert!(m(json!({"$and": [{"type": "a"}, {"n": {"$gt": 1}}]}), payload.clone()));
        assert!(!m(json!({"$and": [{"type": "a"}, {"n": {"$gt": 5}}]}), payload.clone()));
        assert!(m(json!({"$not": {"type": "b"}}), payload.clone()));
        assert!(!m(json!({"$not": {"type": "a", "n": 5}}), payload.clone()));
        assert!(m(json!({"$not": {"type": "a", "n": 6}}), payload.clone()));
        assert!(!m(json!({"$not": {}}), payload.clone()));
        // Combined with fields at the same level, and inside one another.
        assert!(m(json!({"type": "a", "$or": [{"n": 1}, {"n": 5}]}), payload.clone()));
        assert!(!m(json!({"type": "b", "$or": [{"n": 1}, {"n": 5}]}), payload.clone()));
        assert!(m(json!({"$or": [{"$and": [{"type": "a"}, {"$not": {"n": 1}}]}]}), payload));
    }

    #[test]
    fn deep_payloads_are_fine_and_only_followed_as_far_as_the_filter() {
        let payload = nest(200, "a", json!("leaf"));
        assert!(m(json!({"a": {"a": {"a": {"$exists": true}}}}), payload.clone()));
        assert!(m(nest(31, "a", json!({"$exists": true})), payload.clone()));
        assert!(!m(nest(31, "a", json!("leaf")), payload.clone()));
        assert!(m(nest(2, "a", json!({"$neq": {"a": "leaf"}})), payload));
    }

    #[test]
    fn field_names_are_not_paths() {
        let payload = json!({"a.b": 1, "a": {"b": 2}});
        assert!(m(json!({"a.b": 1}), payload.clone()));
        assert!(m(json!({"a": {"b": 2}}), payload.clone()));
        assert!(!m(json!({"a.b": 2}), payload));
    }

    #[test]
    fn validation_accepts_every_operator() {
        let filter = json!({
            "a": {"$eq": {"x": [1]}, "$neq": null, "$in": [1, "x"], "$nin": [], "$exists": true},
            "b": {"$gt": 1, "$gte": "a", "$lt": 2.5, "$lte": "z", "$startsWith": "", "$endsWith": "x"},
            "c": {"$contains": [1], "$not": {"$in": [2]}},
            "d": {"e": [1, {"$x": 1}], "f": {"g": null}},
            "$or": [{"a": 1}], "$and": [{}, {"b": 2}], "$not": {"$not": {}},
        });
        assert_eq!(validate(&filter), Ok(()));
    }

    #[test]
    fn validation_of_the_root() {
        for filter in [json!(null), json!([]), json!("a"), json!(1), json!(true)] {
            assert_eq!(invalid(filter), (String::new(), "must be a JSON object".to_string()));
        }
    }

    #[test]
    fn validation_of_unknown_operators() {
        assert_eq!(invalid(json!({"$nor": []})), ("$nor".into(), "unknown operator `$nor`".into()));
        assert_eq!(invalid(json!({"$eq": 1})), ("$eq".into(), "unknown operator `$eq`".into()));
        assert_eq!(invalid(json!({"a": {"$regex": "x"}})), ("a.$regex".into(), "unknown operator `$regex`".into()));
        // `$or` and `$and` combine filters, they are not conditions.
        assert_eq!(invalid(json!({"a": {"$or": [{"b": 1}]}})), ("a.$or".into(), "unknown operator `$or`".into()));
        assert_eq!(
            invalid(json!({"$or": [{"a": 1}, {"ref": {"$like": 1}}]})),
            ("$or.1.ref.$like".into(), "unknown operator `$like`".into())
        );
    }

    #[test]
    fn validation_of_operands() {
        let cases = [
            ("$in", json!("x"), "`$in` needs an array of values"),
            ("$nin", json!({}), "`$nin` needs an array of values"),
            ("$exists", json!(1), "`$exists` needs true or false"),
            ("$exists", json!("true"), "`$exists` needs true or false"),
            ("$gt", json!(true), "`$gt` needs a number or a string"),
            ("$gte", json!(null), "`$gte` needs a number or a string"),
            ("$lt", json!([1]), "`$lt` needs a number or a string"),
            ("$lte", json!({}), "`$lte` needs a number or a string"),
            ("$startsWith", json!(1), "`$startsWith` needs a string"),
            ("$endsWith", json!(["x"]), "`$endsWith` needs a string"),
        ];
        for (op, operand, msg) in cases {
            let filter = json!({"action": { op: operand }});
            assert_eq!(invalid(filter), (format!("action.{op}"), msg.to_string()));
        }
        assert_eq!(
            invalid(json!({"a": {"$not": {"$in": 1}}})),
            ("a.$not.$in".into(), "`$in` needs an array of values".into())
        );
    }

    #[test]
    fn validation_of_or_and_not() {
        for op in ["$or", "$and"] {
            let msg = format!("`{op}` needs a non-empty array of filter objects");
            for list in [json!([]), json!({}), json!({"a": 1}), json!(null), json!("x")] {
                assert_eq!(invalid(json!({ op: list })), (op.to_string(), msg.clone()));
            }
            let not_an_object = (format!("{op}.1"), "must be a JSON object".to_string());
            assert_eq!(invalid(json!({ op: [{}, 1] })), not_an_object);
            assert_eq!(invalid(json!({ op: [{"a": 1}, [{"a": 1}]] })), not_an_object);
        }
        assert_eq!(invalid(json!({"$not": [{"a": 1}]})), ("$not".into(), "must be a JSON object".into()));
        assert_eq!(invalid(json!({"$not": {"$in": [1]}})), ("$not.$in".into(), "unknown operator `$in`".into()));
    }

    #[test]
    fn validation_of_mixed_conditions() {
        let msg = "mixes operators and field names".to_string();
        assert_eq!(invalid(json!({"a": {"$gt": 1, "b": 2}})), ("a".into(), msg.clone()));
        assert_eq!(invalid(json!({"a": {"b": {"c": 1, "$exists": true}}})), ("a.b".into(), msg.clone()));
        assert_eq!(invalid(json!({"$and": [{"x": {"$not": {"$eq": 1, "y": 1}}}]})), ("$and.0.x.$not".into(), msg));
    }

    #[test]
    fn validation_of_depth() {
        let too_deep = "nested deeper than 32 levels".to_string();
        // Nested filters: 32 objects are fine, the 33rd is refused where it is.
        assert_eq!(validate(&nest(32, "a", json!(1))), Ok(()));
        assert_eq!(invalid(nest(33, "a", json!(1))), (vec!["a"; 32].join("."), too_deep.clone()));
        // Operands count too: 31 filter levels plus the array of `$in` make 33.
        let deep_in = nest(31, "a", json!({"$in": [1]}));
        assert_eq!(invalid(deep_in), (format!("{}.$in", vec!["a"; 31].join(".")), too_deep.clone()));
        assert_eq!(validate(&nest(30, "a", json!({"$in": [1]}))), Ok(()));
        let deep_eq = json!({"a": {"$eq": nest(31, "b", json!(1))}});
        assert_eq!(invalid(deep_eq), (format!("a.$eq.{}", vec!["b"; 30].join(".")), too_deep.clone()));
        assert_eq!(validate(&json!({"a": {"$eq": nest(30, "b", json!(1))}})), Ok(()));
        let deep_or = (0..17).fold(json!({}), |inner, _| nest(1, "$or", Value::Array(vec![inner])));
        assert_eq!(invalid(deep_or).1, too_deep.clone());
        let deep_not = nest(32, "$not", json!(1));
        assert_eq!(invalid(json!({"a": deep_not})).1, too_deep);
    }

    #[test]
    fn very_deep_unvalidated_filters_do_not_match_and_do_not_overflow() {
        let filter = nest(1_000, "a", json!({}));
        let payload = nest(1_000, "a", json!({}));
        assert!(validate(&filter).is_err());
        assert!(!matches(&filter, &payload));
        // A `$not` around something invalid is not a match either.
        let negated = json!({"$not": {"a": {"$bogus": 1}}});
        assert!(!matches(&negated, &json!({"a": 1})));
    }

    #[test]
    fn odd_filters_never_panic_and_never_match_when_invalid() {
        let filters = [
            json!({"": ""}),
            json!({"$": 1}),
            json!({"a": {"$": 1}}),
            json!({"a": {"$not": {}}}),
            json!({"a": {"$not": []}}),
            json!({"a": {"$in": [[], {}, null]}}),
            json!({"a": {"$contains": {"$gt": 1}}}),
            json!({"a": {"$eq": {"$in": 1}}}),
            json!({"é": {"$startsWith": "\u{0}"}}),
            json!({"$or": [{"$or": [{"$and": [{"$not": {"$not": {"x": {"$not": {"$not": 1}}}}}]}]}]}),
        ];
        let payloads =
            [json!(null), json!({}), json!({"a": [[], {}, null, 1e300, -0.0]}), json!({"": "", "é": "\u{0}"})];
        for filter in &filters {
            for payload in &payloads {
                let matched = matches(filter, payload);
                if validate(filter).is_err() {
                    assert!(!matched, "invalid {filter} matched {payload}");
                }
            }
        }
        assert_eq!(validate(&json!({"a": {"$": 1}})).map_err(|e| e.path), Err("a.$".to_string()));
        assert!(matches(&json!({"a": {"$not": {}}}), &json!({"a": 1})));
        assert!(matches(&json!({"a": {"$in": [[], {}, null]}}), &json!({"a": [{}]})));
        assert!(matches(&json!({"a": {"$contains": {"$gt": 1}}}), &json!({"a": [{"$gt": 1}]})));
    }

    #[test]
    fn errors_display_their_path() {
        let err = validate(&json!({"a": {"$in": 1}})).expect_err("invalid");
        assert_eq!(err.to_string(), "a.$in: `$in` needs an array of values");
    }
}
