//! What body an endpoint is sent: a template is the JSON body itself, with placeholders in
//! its strings, so that what is written is what is sent and no template language has to be
//! learnt or sandboxed.
//!
//! ```json
//! {"text": "Invoice {{ data.id }} paid", "amount": "{{ data.amount }}", "raw": "{{ $ }}"}
//! ```
//!
//! - Objects and arrays are copied with their members rendered (object keys are copied as
//!   they are); numbers, bools and null are copied.
//! - A string that is exactly one placeholder becomes the value found, whatever its JSON
//!   type (`null` when nothing is found), so numbers and objects keep their type.
//! - Any other string stays a string, each placeholder replaced by the value's text: a
//!   string as it is, null or nothing as the empty string, anything else as compact JSON.
//! - A placeholder `{{ path }}` (spaces optional) reads the payload: `$` is all of it,
//!   otherwise dot-separated segments from its root, optionally after `$.`. A segment is an
//!   object's key, or on an array an index (digits, no leading zero). There is no escape:
//!   `{{` always opens a placeholder.

use serde_json::Value;

use super::payload_filter::{check_depth, fail, within, MAX_DEPTH};
use super::RuleError;

/// Checks a template; the first problem found, with its location.
pub fn validate(template: &Value) -> Result<(), RuleError> {
    check(template, 1)
}

/// How much larger than its payload a transformed body may be, in bytes. Every placeholder
/// can copy the whole payload, so without a limit a template of many could make each
/// attempt gigabytes large.
pub const MAX_GROWTH_BYTES: usize = 4 << 20;

/// The most a body made for a payload of `payload_len` bytes may weigh.
pub fn body_limit(payload_len: usize) -> usize {
    payload_len.saturating_add(MAX_GROWTH_BYTES)
}

/// A body that would weigh more than its limit; nothing larger was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the transform makes a body more than {} MiB larger than the payload", MAX_GROWTH_BYTES >> 20)]
pub struct TooLarge;

/// A payload a transform cannot read ([`crate::filter::LazyPayload::unreadable`]): JSON by
/// its grammar that no value can hold, or nested deeper than the reader goes. Read as
/// `null`, it would make a body of `null`s, sent as if it were what the template meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the transform cannot read the payload: it is JSON that holds what a value cannot (a number \
     past 64-bit floating point such as 1e400, or a lone surrogate such as \"\\ud800\"), or is \
     nested too deep"
)]
pub struct Unreadable;

/// The body made from `template` for `payload`, or [`TooLarge`] as soon as what it is
/// making would weigh more than `limit` bytes as JSON (counted as it is made, so a body
/// over the limit is never built).
///
/// Meant for a validated template; for any other, a string that cannot be read is sent as
/// written, and what lies deeper than [`MAX_DEPTH`] becomes `null` (so that rendering never
/// recurses deeper than a valid template would). The payload is only walked along the
/// placeholders' paths; values found are copied whole.
pub fn apply(template: &Value, payload: &Value, limit: usize) -> Result<Value, TooLarge> {
    render(template, payload, 1, &mut Budget { left: limit }).ok_or(TooLarge)
}

/// Longest ordering key ([`ordering_key`]) kept, in bytes; longer ones are cut there.
pub const MAX_KEY_BYTES: usize = 256;

/// The text `template` (one string of the template language, e.g.
/// `"{{ repository.full_name }}"`) makes of `payload`, as an ordering key: a string as it
/// is, another value as compact JSON, at most [`MAX_KEY_BYTES`] (cut at a character's
/// boundary). `None` when it makes nothing: a missing or null value, an empty string.
pub fn ordering_key(template: &str, payload: &Value) -> Option<String> {
    let template = Value::String(template.to_string());
    // Most keys are short, and made within a small bound; a longer one (a long subject, an
    // object) is made whole, within what a transform may make, to be cut below: not none,
    // which would put its messages in the lane of those without a key.
    let made =
        apply(&template, payload, MAX_KEY_BYTES * 4).or_else(|_| apply(&template, payload, MAX_GROWTH_BYTES)).ok()?;
    let mut key = match made {
        Value::Null => return None,
        Value::String(s) => s,
        other => other.to_string(),
    };
    // A JSON string may hold NUL (`"\u0000"`), which PostgreSQL's text refuses (the whole
    // ingest would fail, at every retry of the provider): the replacement character stands
    // for it, on every store alike.
    if key.contains('\0') {
        key = key.replace('\0', "\u{fffd}");
    }
    if key.len() > MAX_KEY_BYTES {
        let mut end = MAX_KEY_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    (!key.is_empty()).then_some(key)
}

/// What is left of a body's limit while it is made.
struct Budget {
    left: usize,
}

impl Budget {
    fn take_bytes(&mut self, n: usize) -> Option<()> {
        self.left = self.left.checked_sub(n)?;
        Some(())
    }

    /// Takes the size `text` has inside a JSON string, escaped (a control character is six
    /// bytes there: counted unescaped, a template repeating such text made bodies many times
    /// its limit).
    fn take_text(&mut self, text: &str) -> Option<()> {
        let mut counter = Counter { written: 0, left: self.left.saturating_add(2) };
        serde_json::to_writer(&mut counter, text).ok()?;
        self.take_bytes(counter.written.saturating_sub(2))
    }

    /// Takes the JSON size of `value`, counted by writing it out, which stops as soon as it
    /// would not fit.
    fn take(&mut self, value: &Value) -> Option<()> {
        let mut counter = Counter { written: 0, left: self.left };
        serde_json::to_writer(&mut counter, value).ok()?;
        self.take_bytes(counter.written)
    }
}

/// A writer that only counts, and fails past `left` bytes.
struct Counter {
    written: usize,
    left: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.left {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `depth` is the level `value` has if it is an object or array (the root is level 1).
fn check(value: &Value, depth: usize) -> Result<(), RuleError> {
    match value {
        Value::String(text) => parse(text).map(|_| ()).map_err(fail),
        Value::Array(items) => {
            check_depth(depth)?;
            items.iter().enumerate().try_for_each(|(i, item)| check(item, depth + 1).map_err(within(i)))
        }
        Value::Object(members) => {
            check_depth(depth)?;
            members.iter().try_for_each(|(key, member)| check(member, depth + 1).map_err(within(key)))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Renders `value`, taking what it makes from `budget` (`None`: the budget ran out). The
/// count is of the JSON text, strings with their escapes.
fn render(value: &Value, payload: &Value, depth: usize, budget: &mut Budget) -> Option<Value> {
    match value {
        Value::String(text) => render_string(text, payload, budget),
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => budget.take_bytes(4).map(|_| Value::Null),
        Value::Array(items) => {
            budget.take_bytes(items.len().saturating_add(2))?;
            items.iter().map(|item| render(item, payload, depth + 1, budget)).collect()
        }
        Value::Object(members) => {
            budget.take_bytes(2)?;
            let mut out = serde_json::Map::new();
            for (key, member) in members {
                budget.take_text(key)?;
                budget.take_bytes(4)?;
                out.insert(key.clone(), render(member, payload, depth + 1, budget)?);
            }
            Some(Value::Object(out))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => budget.take(value).map(|_| value.clone()),
    }
}

fn render_string(text: &str, payload: &Value, budget: &mut Budget) -> Option<Value> {
    let Ok(parts) = parse(text) else {
        budget.take_text(text)?;
        budget.take_bytes(2)?;
        return Some(Value::String(text.to_owned()));
    };
    if let [Part::Placeholder(path)] = parts.as_slice() {
        let found = resolve(payload, path).unwrap_or(&Value::Null);
        budget.take(found)?;
        return Some(found.clone());
    }
    budget.take_bytes(2)?;
    let mut out = String::with_capacity(text.len());
    for part in parts {
        let piece = match part {
            Part::Text(literal) => std::borrow::Cow::Borrowed(literal),
            Part::Placeholder(path) => match resolve(payload, path) {
                None | Some(Value::Null) => continue,
                Some(Value::String(found)) => std::borrow::Cow::Borrowed(found.as_str()),
                Some(found) => {
                    budget.take(found)?;
                    std::borrow::Cow::Owned(found.to_string())
                }
            },
        };
        budget.take_text(&piece)?;
        out.push_str(&piece);
    }
    Some(Value::String(out))
}

/// A template string, cut into literal text and placeholders (their trimmed paths).
enum Part<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Cuts a template string into its parts, or says why it cannot be. Shared by checking and
/// rendering so that both read a string the same way.
fn parse(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("{{") {
        // `{{` always opens a placeholder, so one inside another leaves the outer unclosed.
        let Some((inner, after)) = after.split_once("}}").filter(|(inner, _)| !inner.contains("{{")) else {
            return Err("`{{` without a closing `}}`".to_string());
        };
        if !before.is_empty() {
            parts.push(Part::Text(before));
        }
        let path = inner.trim();
        check_path(path)?;
        parts.push(Part::Placeholder(path));
        rest = after;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty placeholder path".to_string());
    }
    if segments(path).any(str::is_empty) {
        return Err(format!("empty segment in placeholder path `{path}`"));
    }
    Ok(())
}

/// The segments of a path other than `$`, without the optional leading `$.`.
fn segments(path: &str) -> std::str::Split<'_, char> {
    path.strip_prefix("$.").unwrap_or(path).split('.')
}

/// The value at `path` in `payload`, if there is one. Walks as many levels as the path has
/// segments, in a loop: the payload may be deeper than any template.
fn resolve<'v>(payload: &'v Value, path: &str) -> Option<&'v Value> {
    if path == "$" {
        return Some(payload);
    }
    segments(path).try_fold(payload, |value, segment| match value {
        Value::Object(members) => members.get(segment),
        Value::Array(items) => index(segment).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// An array index as written in a path: decimal digits without sign or leading zero (as in a
/// JSON Pointer), so that each element has exactly one spelling.
fn index(segment: &str) -> Option<usize> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit()) && (segment == "0" || !segment.starts_with('0'));
    if !canonical {
        return None;
    }
    segment.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload() -> Value {
        json!({
            "id": "evt_1",
            "n": 42,
            "f": 1.5,
            "t": true,
            "z": null,
            "o": {"a": {"b": "deep"}, "0": "zero-key"},
            "list": [10, {"name": "x"}, [7]],
            "empty": "",
            "é": "accent",
            "$": "dollar-key",
        })
    }

    /// `apply`, after making sure the template is valid.
    fn ap(template: Value) -> Value {
        assert_eq!(validate(&template), Ok(()), "test template {template} should be valid");
        apply(&template, &payload())
    }

    /// The validation error of `template`, as `(path, msg)`.
    fn invalid(template: Value) -> (String, String) {
        let err = validate(&template).expect_err("template should be invalid");
        (err.path, err.msg)
    }

    /// `{"k": {"k": ... leaf}}` with `levels` objects. (Not with `json!`: it would copy
    /// `inner` through `serde_json::to_value`, recursively, at every level.)
    fn nest(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| Value::Object([("k".to_string(), inner)].into_iter().collect()))
    }

    /// Renders without a limit (the limit has tests of its own).
    fn apply(template: &Value, payload: &Value) -> Value {
        super::apply(template, payload, usize::MAX).expect("no limit")
    }

    #[test]
    fn a_body_over_its_limit_is_refused_and_the_count_is_close() {
        let payload = payload();
        for template in [
            json!("{{ $ }}"),
            json!({"a": ["{{ $ }}", "{{ $ }} and {{ o }}", 1.5, null], "long key name": {"x": "{{ list }}"}}),
            json!(["plain text", true, -3, "x{{ n }}y{{ id }}"]),
        ] {
            let made = apply(&template, &payload).to_string().len();
            // Enough room: made. A little less than the body's own size: refused.
            assert_eq!(super::apply(&template, &payload, made * 2), Ok(apply(&template, &payload)), "{template}");
            assert_eq!(super::apply(&template, &payload, made / 2), Err(TooLarge), "{template}");
        }
        // Numbers whose JSON is longer than the text they were read from count as written
        // (1e15 is written 1000000000000000.0).
        let numbers: Value = serde_json::from_str(&format!("[{}]", vec!["1e15"; 1000].join(","))).unwrap();
        let ten = Value::Array(vec![json!("{{ $ }}"); 10]);
        let made = apply(&ten, &numbers).to_string().len();
        assert!(made > 180_000, "{made}");
        assert!(super::apply(&ten, &numbers, 100_000) == Err(TooLarge));
        // Ten copies of a 100 kB payload fit its limit (4 MiB more than the payload); a
        // hundred stop at the limit instead of being made (no 10 MB body is built).
        let big = json!({"pad": "p".repeat(100_000)});
        let copies = |n: usize, of: &str| Value::Array(vec![json!(of); n]);
        assert!(super::apply(&copies(10, "{{ $ }}"), &big, body_limit(100_000)).is_ok());
        assert!(super::apply(&copies(100, "{{ $ }}"), &big, body_limit(100_000)) == Err(TooLarge));
        // Interpolated text counts too.
        assert!(super::apply(&copies(100, "<{{ pad }}>"), &big, body_limit(100_000)) == Err(TooLarge));
        // As it is written out: a control character is six bytes of JSON (\u0001).
        let controls = json!({"c": "\u{1}".repeat(10_000)});
        let made = apply(&copies(10, "<{{ c }}>"), &controls).to_string().len();
        assert!(made > 600_000, "{made}");
        assert!(super::apply(&copies(10, "<{{ c }}>"), &controls, 300_000) == Err(TooLarge));
        assert!(super::apply(&copies(10, "<{{ c }}>"), &controls, made + 10).is_ok());
    }

    #[test]
    fn copies_everything_without_placeholders() {
        let template = json!({"a": [1, 2.5, true, null, "text", {"b": {}}], "c": "}} { } }{", "{{ id }}": 1});
        assert_eq!(ap(template.clone()), template);
        for scalar in [json!(null), json!(false), json!(-3), json!("plain")] {
            assert_eq!(ap(scalar.clone()), scalar);
        }
    }

    #[test]
    fn a_lone_placeholder_keeps_the_type() {
        assert_eq!(ap(json!("{{ id }}")), json!("evt_1"));
        assert_eq!(ap(json!("{{n}}")), json!(42));
        assert_eq!(ap(json!("{{ f }}")), json!(1.5));
        assert_eq!(ap(json!("{{ t}}")), json!(true));
        assert_eq!(ap(json!("{{z }}")), json!(null));
        assert_eq!(ap(json!("{{ o }}")), json!({"a": {"b": "deep"}, "0": "zero-key"}));
        assert_eq!(ap(json!("{{ list }}")), json!([10, {"name": "x"}, [7]]));
        assert_eq!(ap(json!("{{ empty }}")), json!(""));
        assert_eq!(ap(json!("{{\t o.a \n}}")), json!({"b": "deep"}));
    }

    #[test]
    fn a_missing_value_is_null_alone_and_empty_in_text() {
        assert_eq!(ap(json!("{{ nope }}")), json!(null));
        assert_eq!(ap(json!("{{ id.x }}")), json!(null));
        assert_eq!(ap(json!("{{ n.0 }}")), json!(null));
        assert_eq!(ap(json!("{{ o.a.b.c }}")), json!(null));
        assert_eq!(ap(json!("[{{ nope }}]")), json!("[]"));
        assert_eq!(ap(json!("[{{ z }}]")), json!("[]"));
    }

    #[test]
    fn whole_payload_and_dollar_prefix() {
        assert_eq!(ap(json!("{{ $ }}")), payload());
        assert_eq!(ap(json!("{{$}}")), payload());
        assert_eq!(ap(json!("{{ $.o.a.b }}")), json!("deep"));
        assert_eq!(ap(json!("{{ $.id }}")), ap(json!("{{ id }}")));
        // Only `$` alone or `$.` is special: other segments are keys, `$` included.
        assert_eq!(ap(json!("{{ $.$ }}")), json!("dollar-key"));
        assert_eq!(ap(json!("{{ $id }}")), json!(null));
        assert_eq!(apply(&json!("{{ $ }}"), &json!([1, "x"])), json!([1, "x"]));
        assert_eq!(apply(&json!("<{{ $ }}>"), &json!("text")), json!("<text>"));
    }

    #[test]
    fn indices_on_arrays_keys_on_objects() {
        assert_eq!(ap(json!("{{ list.0 }}")), json!(10));
        assert_eq!(ap(json!("{{ list.1.name }}")), json!("x"));
        assert_eq!(ap(json!("{{ list.2.0 }}")), json!(7));
        assert_eq!(ap(json!("{{ list.3 }}")), json!(null));
        assert_eq!(ap(json!("{{ list.name }}")), json!(null));
        assert_eq!(ap(json!("{{ o.0 }}")), json!("zero-key"));
        for odd in ["01", "+1", "-1", " 1", "1.0", "18446744073709551616"] {
            let template = Value::String(format!("{{{{ list.{odd} }}}}"));
            assert_eq!(apply(&template, &payload()), json!(null), "index {odd:?}");
        }
        assert_eq!(apply(&json!("{{ 00 }}"), &json!({"00": "key"})), json!("key"));
        assert_eq!(apply(&json!("{{ 0 }}"), &json!(["first"])), json!("first"));
    }

    #[test]
    fn placeholders_in_text_are_rendered_as_text() {
        assert_eq!(ap(json!("id={{ id }}")), json!("id=evt_1"));
        assert_eq!(ap(json!("n={{ n }} f={{f}} t={{ t }} z={{ z }}.")), json!("n=42 f=1.5 t=true z=."));
        assert_eq!(ap(json!("o={{ o.a }}")), json!(r#"o={"b":"deep"}"#));
        assert_eq!(ap(json!("l={{ list }}")), json!(r#"l=[10,{"name":"x"},[7]]"#));
        assert_eq!(ap(json!("{{ id }}{{ n }}")), json!("evt_142"));
        assert_eq!(ap(json!(" {{ n }}")), json!(" 42"));
        assert_eq!(ap(json!("{{ n }} ")), json!("42 "));
        assert_eq!(ap(json!("{{ empty }}{{ empty }}")), json!(""));
        assert_eq!(ap(json!("quote: {{ $.q }}")), json!("quote: "));
        assert_eq!(apply(&json!("say {{ q }}"), &json!({"q": "\"hi\"\n"})), json!("say \"hi\"\n"));
    }

    #[test]
    fn renders_inside_objects_and_arrays() {
        let template = json!({
            "event": "{{ id }}",
            "blocks": [{"text": "n is {{ n }}"}, "{{ list.1 }}", 3],
            "same": {"{{ n }}": "{{ t }}"},
        });
        let expected = json!({
            "event": "evt_1",
            "blocks": [{"text": "n is 42"}, {"name": "x"}, 3],
            "same": {"{{ n }}": true},
        });
        assert_eq!(ap(template), expected);
    }

    #[test]
    fn multibyte_text_next_to_braces() {
        assert_eq!(ap(json!("é{{ é }}ü")), json!("éaccentü"));
        assert_eq!(ap(json!("{{é}}")), json!("accent"));
        assert_eq!(ap(json!("日本{{ n }}語")), json!("日本42語"));
        assert_eq!(ap(json!("🦀}}🦀{🦀")), json!("🦀}}🦀{🦀"));
        assert_eq!(invalid(json!("🦀{{🦀")).1, "`{{` without a closing `}}`");
        assert_eq!(invalid(json!("{{ é..ü }}")).1, "empty segment in placeholder path `é..ü`");
    }

    #[test]
    fn braces_that_are_not_placeholders() {
        assert_eq!(ap(json!("{ id }")), json!("{ id }"));
        assert_eq!(ap(json!("}}")), json!("}}"));
        assert_eq!(ap(json!("{{ n }}}")), json!("42}"));
        assert_eq!(ap(json!("{ {{ n }} }")), json!("{ 42 }"));
    }

    #[test]
    fn validation_of_unclosed_placeholders() {
        let msg = "`{{` without a closing `}}`".to_string();
        for text in ["{{", "{{ id", "}}{{", "{{ id }} {{", "{{ id {{ n }}", "{{ id }{{ n }}", "a {{ b }"] {
            let err = validate(&json!(text)).expect_err(text);
            assert_eq!((err.path, err.msg), (String::new(), msg.clone()), "{text:?}");
        }
        // The first `{{` opens, the first `}}` closes: what is between is the path.
        assert_eq!(ap(json!("{{{ n }}")), json!(null));
        assert_eq!(apply(&json!("{{{ n }}"), &json!({"{ n": 1})), json!(1));
        assert_eq!(apply(&json!("{{ a } }}"), &json!({"a }": 2})), json!(2));
    }

    #[test]
    fn validation_of_paths() {
        assert_eq!(invalid(json!("{{}}")).1, "empty placeholder path");
        assert_eq!(invalid(json!("x {{   }} y")).1, "empty placeholder path");
        for path in ["a..b", "a.", ".a", ".", "$.", "$..a", "list.0."] {
            let template = Value::String(format!("{{{{ {path} }}}}"));
            assert_eq!(invalid(template), (String::new(), format!("empty segment in placeholder path `{path}`")));
        }
        for path in ["$", "$.a", "a", "a.b.0", "$$", "a.$", " spaced key "] {
            let template = Value::String(format!("{{{{{path}}}}}"));
            assert_eq!(validate(&template), Ok(()), "{path:?}");
        }
    }

    #[test]
    fn validation_errors_say_where() {
        let template = json!({"blocks": [{"text": "ok {{ id }}"}, {"text": "bad {{ id"}]});
        assert_eq!(invalid(template).0, "blocks.1.text");
        assert_eq!(invalid(json!([1, ["{{a..b}}"]])).0, "1.0");
        assert_eq!(invalid(json!({"a.b": ["{{}}"]})).0, "a.b.0");
        let err = validate(&json!({"x": "{{"})).expect_err("invalid");
        assert_eq!(err.to_string(), "x: `{{` without a closing `}}`");
    }

    #[test]
    fn validation_of_depth() {
        let too_deep = "nested deeper than 32 levels".to_string();
        assert_eq!(validate(&nest(32, json!("{{ id }}"))), Ok(()));
        assert_eq!(invalid(nest(33, json!(1))), (vec!["k"; 32].join("."), too_deep.clone()));
        let arrays = (0..33).fold(json!([]), |inner, _| Value::Array(vec![inner]));
        assert_eq!(invalid(arrays), (vec!["0"; 32].join("."), too_deep));
        assert_eq!(validate(&(0..31).fold(json!([]), |inner, _| Value::Array(vec![inner]))), Ok(()));
    }

    #[test]
    fn deep_payloads_are_walked_only_along_the_path() {
        let deep = nest(300, json!("bottom"));
        let path = vec!["k"; 300].join(".");
        let template = Value::String(format!("{{{{ {path} }}}}"));
        assert_eq!(validate(&template), Ok(()));
        assert_eq!(apply(&template, &deep), json!("bottom"));
        assert_eq!(apply(&json!("{{ k.k.k.x }}"), &deep), json!(null));
    }

    #[test]
    fn invalid_templates_render_without_panicking() {
        let odd = ["{{", "}}{{", "{{{{", "{{ a", "{{}}", "{{ . }}", "x{{ a..b }}y", "é{{", "{{ é", "{{ {{ n }}"];
        for text in odd {
            let template = json!(text);
            assert!(validate(&template).is_err(), "{text:?} should be invalid");
            assert_eq!(apply(&template, &payload()), template, "{text:?} is sent as written");
        }
        // Too deep: the part beyond the limit is dropped, what is above it still rendered.
        let template = nest(33, json!("{{ n }}"));
        let rendered = apply(&template, &payload());
        let level_32 = (0..31).fold(&rendered, |level, _| &level["k"]);
        assert!(level_32.is_object(), "the 32nd level is kept");
        assert_eq!(level_32["k"], Value::Null);
        let shallow = apply(&nest(32, json!("{{ n }}")), &payload());
        assert_eq!((0..32).fold(&shallow, |level, _| &level["k"]), &json!(42));
        // A very deep unvalidated template: refused, and rendered without deep recursion.
        let very_deep = nest(1_000, json!("{{ n }}"));
        assert!(validate(&very_deep).is_err());
        let rendered = apply(&very_deep, &payload());
        let level_32 = (0..31).fold(&rendered, |level, _| &level["k"]);
        assert!(level_32.is_object(), "the 32nd level is kept");
        assert_eq!(level_32["k"], Value::Null);
    }

    #[test]
    fn ordering_keys_are_text_made_from_the_payload() {
        let payload = json!({"repo": {"name": "hooklane", "id": 7}, "empty": "", "long": "é".repeat(200)});
        assert_eq!(ordering_key("{{ repo.name }}", &payload).as_deref(), Some("hooklane"));
        assert_eq!(ordering_key("{{ repo.id }}", &payload).as_deref(), Some("7"));
        assert_eq!(ordering_key("repo-{{ repo.id }}", &payload).as_deref(), Some("repo-7"));
        assert_eq!(ordering_key("{{ repo }}", &payload).as_deref(), Some(r#"{"id":7,"name":"hooklane"}"#));
        assert_eq!(ordering_key("{{ missing }}", &payload), None);
        assert_eq!(ordering_key("{{ empty }}", &payload), None);
        let long = ordering_key("{{ long }}", &payload).expect("a key");
        assert_eq!(long.len(), MAX_KEY_BYTES, "cut at a character boundary (é is two bytes)");
        // Longer than the first bound it is made within: cut all the same, not none.
        let longer = json!({"subject": "x".repeat(2_000), "repo": {"files": vec!["f"; 1_000]}});
        assert_eq!(ordering_key("{{ subject }}", &longer), Some("x".repeat(MAX_KEY_BYTES)));
        let object = ordering_key("{{ repo }}", &longer).expect("a key");
        assert!(object.starts_with(r#"{"files":["f","f""#) && object.len() == MAX_KEY_BYTES, "{object}");
        let nul = json!({"id": "a\u{0}b"});
        assert_eq!(ordering_key("{{ id }}", &nul).as_deref(), Some("a\u{fffd}b"), "no NUL reaches a store");
    }
}
