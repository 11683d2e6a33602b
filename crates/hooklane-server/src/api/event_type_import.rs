//! `POST /api/v1/event-type/import/openapi`: event types from the webhooks of an OpenAPI
//! document (Svix's "import from OpenAPI").
//!
//! How a document becomes event types (Svix documents the request and the answer, not every
//! rule; where it is silent, these are hooklane's, and the README says the same):
//! - The webhooks are the entries of the document's `webhooks` (OpenAPI 3.1) and `x-webhooks`
//!   (3.0). A document with neither is refused rather than read as "no event types": with
//!   `replaceAll` a misspelt key would otherwise archive every event type.
//! - An entry's key is the event type's name (Svix's own example imports `webhooks: {pet.new:
//!   …}` as `pet.new`), not its `operationId`. A key that is no valid event type name fails the
//!   whole import, naming it: nothing is skipped silently.
//! - Its operation is `post`, or else the first of `put`, `patch`, `get`, `delete`, `options`,
//!   `head`, `trace`. `description` is the operation's `description`, else its `summary`, else
//!   its request body's `description`; `deprecated` is the operation's.
//! - The payload's schema is the request body's `application/json` (or other JSON media type)
//!   schema with every local `$ref` inlined; a `$ref` that recurses becomes a reference to the
//!   schema's `$defs`. It is stored as version `"1"` of the event type's `schemas`. The media
//!   type's `example` and `examples` come first in the schema's `examples`, then the schema's
//!   own (`examples`, and the 3.0 `example`), so `send-example` sends the document's example.
//! - An import sets `description`, `deprecated` and `schemas` and unarchives; it keeps the
//!   feature flag. `modified` names the event types whose stored state changes: ones created,
//!   changed or unarchived, and those `replaceAll` archives; an event type the document defines
//!   exactly as it is stored is left alone and not named. A dry run names the same and also
//!   lists, in `to_modify`, the document's event types that would change, as they would be.
//!
//! The document is whole before anything is written: a bad entry changes nothing. Parsing and
//! inlining are bounded (values in all, nesting), whatever a YAML alias or `$ref` multiplies.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use axum::extract::State;
use hooklane_core::model::EventType;
use hooklane_core::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::name_problem;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json};
use crate::openapi::{ErrorBody, NotAdmin, Unauthorized};
use crate::state::AppState;

/// Most JSON values one import may build: the parsed YAML (its aliases expanded) and, apart,
/// the event types' schemas once `$ref`s are inlined. A document within the body limit holds
/// far fewer; only multiplication (aliases, `$ref`s used many times) reaches this. Text
/// counts too: a string (or key) counts one value more per [`TEXT_PER_VALUE`] bytes, so an
/// alias or `$ref` copying a long text many times is bounded in bytes, not only in values.
const MAX_VALUES: usize = 1_000_000;

/// Bytes of text that count as one value against [`MAX_VALUES`] (so at most 16 MiB of text).
const TEXT_PER_VALUE: usize = 16;

/// Longest `$ref` taken: a JSON pointer to a component, far shorter in any real document.
const MAX_REF_BYTES: usize = 2048;

/// What a string (or key) of `len` bytes counts against [`MAX_VALUES`].
fn text_weight(len: usize) -> usize {
    1 + len / TEXT_PER_VALUE
}

/// Deepest nesting of a schema once its `$ref`s are inlined. Stored schemas are read back
/// with serde_json, which stops at 128 levels; this leaves room for `{"1": …}` and `$defs`.
const MAX_DEPTH: usize = 100;

/// Longest chain of `$ref`s to `$ref`s followed for a path item, request body or example.
const MAX_HOPS: usize = 32;

/// Longest description (as for event types created directly).
const MAX_DESCRIPTION: usize = 4096;

/// The operations of a path item, in the order one is chosen when there are several.
const OPERATIONS: [&str; 8] = ["post", "put", "patch", "get", "delete", "options", "head", "trace"];

/// Schema keywords whose values are data, not schemas: their `$ref` keys are not references.
const DATA_KEYWORDS: [&str; 5] = ["example", "examples", "default", "const", "enum"];

/// Schema keywords whose values map names to schemas (a property may be named `$ref`).
const SCHEMA_MAPS: [&str; 5] = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];

/// Svix's `EventTypeImportOpenApiIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTypeImportOpenApiIn {
    /// The OpenAPI document, as a JSON object. Give this or `specRaw`, not both.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    spec: Option<Value>,
    /// The OpenAPI document as a string of JSON or YAML. Give this or `spec`, not both.
    #[serde(default)]
    spec_raw: Option<String>,
    /// Also archive every event type the document does not define (default false).
    #[serde(default)]
    replace_all: Option<bool>,
    /// Change nothing; answer what would change (default false).
    #[serde(default)]
    dry_run: Option<bool>,
}

/// Svix's `EventTypeFromOpenApi`: an event type as an import leaves it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeFromOpenApi {
    #[schema(example = "pet.new")]
    name: String,
    description: String,
    /// `{"1": <the payload's JSON Schema>}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    schemas: Option<Value>,
    deprecated: bool,
    /// The event type's feature flags, which an import keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    feature_flags: Option<Vec<String>>,
}

/// Svix's `EventTypeImportOpenApiOutData`. Its JSON keys are as Svix spells them (`to_modify`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeImportOpenApiOutData {
    /// The event types the import changed (or, in a dry run, would change): created, updated,
    /// unarchived, or archived by `replaceAll`; by name. Ones already as defined are not named.
    modified: Vec<String>,
    /// Dry runs only: the document's event types that would change, as they would be.
    #[serde(skip_serializing_if = "Option::is_none")]
    to_modify: Option<Vec<EventTypeFromOpenApi>>,
}

/// Svix's `EventTypeImportOpenApiOut`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeImportOpenApiOut {
    data: EventTypeImportOpenApiOutData,
}

/// Import event types from an OpenAPI document.
///
/// Creates an event type for each webhook of the document (`webhooks` in OpenAPI 3.1,
/// `x-webhooks` in 3.0), named by the webhook's key, or updates it if it exists, unarchiving
/// an archived one. `description` comes from the operation (`description`, else `summary`,
/// else the request body's), `deprecated` from the operation, and `schemas` (`{"1": …}`)
/// from the request body's JSON schema with its `$ref`s inlined and the media type's examples
/// first in its `examples`.
/// `replaceAll` also archives every event type the document does not define; `dryRun`
/// changes nothing and answers what would change. A webhook whose key is not a valid event
/// type name fails the whole import.
#[utoipa::path(
    post,
    path = "/api/v1/event-type/import/openapi",
    tag = "Event Type",
    operation_id = "v1.event-type.import-openapi",
    request_body = EventTypeImportOpenApiIn,
    responses(
        (status = 200, description = "What the import changed (in a dry run: would change)",
            body = EventTypeImportOpenApiOut),
        (status = 400, description = "Neither or both of `spec` and `specRaw`, or the body is not valid JSON",
            body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 422, description = "The document cannot be read or imported: not JSON or YAML, not an object, no \
            webhooks, a webhook whose key is no valid event type name, an unresolvable `$ref`, or too large once \
            its `$ref`s are inlined", body = ErrorBody),
    )
)]
pub async fn import_openapi(
    State(s): State<AppState>,
    _: Admin,
    Json(input): Json<EventTypeImportOpenApiIn>,
) -> ApiResult<axum::Json<EventTypeImportOpenApiOut>> {
    let (field, spec) =
        match (input.spec, input.spec_raw) {
            (Some(spec), None) => ("spec", Ok(spec)),
            (None, Some(raw)) => ("specRaw", Err(raw)),
            // Svix answers 400 here (its SDKs document it), not a field's 422.
            _ => return Err(ApiError::BadRequest(
                "give exactly one of `spec` (the document as an object) and `specRaw` (the document as a string of \
                 JSON or YAML)"
                    .into(),
            )),
        };
    // Reading a large document (parsing its YAML, expanding its aliases, inlining its
    // `$ref`s) is CPU work of up to a second or so: off the runtime's threads, which serve
    // every other request.
    let imported = tokio::task::spawn_blocking(move || {
        let spec = match spec {
            Ok(spec) => spec,
            Err(raw) => parse_raw(&raw).map_err(|e| e.to_string())?,
        };
        event_types_from_spec(&spec).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the import stopped: {e}")))?
    .map_err(|e| ApiError::validation(field, e))?;
    let dry_run = input.dry_run.unwrap_or(false);
    let now = super::now();

    let mut changes = Vec::new();
    for one in &imported {
        let existing = s.0.store.get_event_type(&one.name).await?;
        let new = existing.is_none();
        if let Some(changed) = apply(existing, one, now) {
            changes.push((changed, new));
        }
    }
    let mut archived = Vec::new();
    if input.replace_all.unwrap_or(false) {
        let defined: BTreeSet<&str> = imported.iter().map(|i| i.name.as_str()).collect();
        for mut et in super::event_type::all(&s, false).await? {
            if !defined.contains(et.name.as_str()) {
                et.archived = true;
                et.updated_at = now;
                archived.push(et);
            }
        }
    }

    let mut modified: Vec<String> =
        changes.iter().map(|(e, _)| &e.name).chain(archived.iter().map(|e| &e.name)).cloned().collect();
    modified.sort();
    if dry_run {
        let to_modify = changes.into_iter().map(|(e, _)| from_open_api(e)).collect();
        return Ok(axum::Json(EventTypeImportOpenApiOut {
            data: EventTypeImportOpenApiOutData { modified, to_modify: Some(to_modify) },
        }));
    }
    // In one store transaction (all of it or nothing), on a task of its own: a client that
    // stops waiting does not stop it either.
    let state = s.clone();
    let upserts = changes.into_iter().map(|(et, _)| et).collect();
    let archive = archived.into_iter().map(|et| et.name).collect();
    let written = tokio::spawn(async move { state.0.store.import_event_types(upserts, archive, now, true).await });
    written.await.map_err(|e| ApiError::Internal(format!("the import's writer ended: {e}")))??;
    Ok(axum::Json(EventTypeImportOpenApiOut { data: EventTypeImportOpenApiOutData { modified, to_modify: None } }))
}

/// The event type once `imported` is applied to what is stored; `None` when nothing changes.
fn apply(existing: Option<EventType>, imported: &Imported, now: DateTime<Utc>) -> Option<EventType> {
    match existing {
        None => Some(EventType {
            name: imported.name.clone(),
            description: imported.description.clone(),
            archived: false,
            deprecated: imported.deprecated,
            feature_flags: Vec::new(),
            group_name: None,
            schemas: imported.schemas.clone(),
            created_at: now,
            updated_at: now,
        }),
        Some(e) => {
            let same = !e.archived
                && e.description == imported.description
                && e.deprecated == imported.deprecated
                && e.schemas == imported.schemas;
            (!same).then(|| EventType {
                description: imported.description.clone(),
                archived: false,
                deprecated: imported.deprecated,
                schemas: imported.schemas.clone(),
                updated_at: now,
                ..e
            })
        }
    }
}

fn from_open_api(e: EventType) -> EventTypeFromOpenApi {
    EventTypeFromOpenApi {
        name: e.name,
        description: e.description,
        schemas: e.schemas,
        deprecated: e.deprecated,
        feature_flags: (!e.feature_flags.is_empty()).then_some(e.feature_flags),
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(import_openapi),
    components(schemas(
        EventTypeImportOpenApiIn,
        EventTypeImportOpenApiOut,
        EventTypeImportOpenApiOutData,
        EventTypeFromOpenApi
    ))
)]
pub(crate) struct Doc;

// --- the document → event types

/// An event type as the document defines it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Imported {
    pub name: String,
    pub description: String,
    pub deprecated: bool,
    /// `{"1": schema}`, or `None` when the webhook has no JSON payload schema nor example.
    pub schemas: Option<Value>,
}

/// Why a document cannot be imported; said about the field that held it.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum SpecError {
    #[error("is neither valid JSON nor valid YAML: {0}")]
    Unparsable(String),
    #[error("must be an OpenAPI document: an object")]
    NotAnObject,
    #[error("has no webhooks: neither `webhooks` (OpenAPI 3.1) nor `x-webhooks` (OpenAPI 3.0)")]
    NoWebhooks,
    #[error("`{0}` must be an object whose keys name the webhooks")]
    WebhooksNotAnObject(&'static str),
    #[error("webhook {name:?}: {msg}")]
    Webhook { name: String, msg: String },
    #[error("is too large once its $refs are inlined: more than {MAX_VALUES} JSON values (or 16 MiB of text) in all")]
    TooLarge,
    #[error("has more than {} webhooks (event types)", super::environment::MAX_EVENT_TYPES)]
    TooMany,
}

/// `specRaw`: JSON, or else YAML (JSON first: it is exact where YAML 1.1 reads some JSON
/// differently). The error told is the one of the syntax the text seems to be written in.
pub(crate) fn parse_raw(raw: &str) -> Result<Value, SpecError> {
    let json_error = match serde_json::from_str::<Value>(raw) {
        Ok(spec) => return Ok(spec),
        Err(e) => e,
    };
    let left = Cell::new(MAX_VALUES);
    let yaml = serde_norway::Deserializer::from_str(raw);
    match (Budgeted { left: &left }).deserialize(yaml) {
        Ok(spec) => Ok(spec),
        Err(_) if raw.trim_start().starts_with(['{', '[']) => Err(SpecError::Unparsable(json_error.to_string())),
        Err(yaml_error) => Err(SpecError::Unparsable(yaml_error.to_string())),
    }
}

/// YAML into a JSON value, counting every value made against a budget shared by the whole
/// document: serde_norway bounds how often aliases are followed, but not how much one alias
/// copies, so `[*a, *a, …]` of a long `&a` list could still build billions of values.
struct Budgeted<'b> {
    left: &'b Cell<usize>,
}

impl Budgeted<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        self.take_n(1)
    }

    fn take_n<E: de::Error>(&self, n: usize) -> Result<(), E> {
        match self.left.get().checked_sub(n) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "more than {MAX_VALUES} values (or 16 MiB of text) once its aliases are expanded"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value JSON can hold")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold (.nan, .inf)"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take_n(text_weight(v.len()))?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take_n(text_weight(v.len()))?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Budgeted { left: self.left })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        let mut merges = Vec::new();
        while let Some(key) = map.next_key_seed(Key { left: self.left })? {
            let value = map.next_value_seed(Budgeted { left: self.left })?;
            if key == "<<" {
                merges.push(value);
            } else if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            } else {
                out.insert(key, value);
            }
        }
        // YAML merge keys (`<<: *base`, `<<: [*a, *b]`): the merged mappings' entries the
        // mapping does not set itself, earlier ones first (YAML's rule).
        for merge in merges {
            let mappings = match merge {
                Value::Array(list) => list,
                single => vec![single],
            };
            for mapping in mappings {
                let Value::Object(entries) = mapping else {
                    return Err(de::Error::custom("a merge key (<<) must refer to mappings"));
                };
                for (key, value) in entries {
                    out.entry(key).or_insert(value);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key, as text: OpenAPI's `responses: {200: …}` has integer keys in YAML.
struct Key<'b> {
    left: &'b Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Budgeted { left: self.left }.take_n(text_weight(v.len()))?;
        Ok(v.to_owned())
    }
}

/// The event types the document's webhooks define, in the document's order (`webhooks`
/// first, then `x-webhooks`).
pub(crate) fn event_types_from_spec(spec: &Value) -> Result<Vec<Imported>, SpecError> {
    let doc = spec.as_object().ok_or(SpecError::NotAnObject)?;
    let mut webhooks = Vec::new();
    let mut found = false;
    for section in ["webhooks", "x-webhooks"] {
        match doc.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Object(entries)) => {
                found = true;
                webhooks.extend(entries.iter());
            }
            Some(_) => return Err(SpecError::WebhooksNotAnObject(section)),
        }
    }
    if !found {
        return Err(SpecError::NoWebhooks);
    }
    // As many as an environment import takes: each is a read and a write of one transaction.
    if webhooks.len() > super::environment::MAX_EVENT_TYPES {
        return Err(SpecError::TooMany);
    }
    let mut resolver = Resolver { root: spec, left: MAX_VALUES, stack: Vec::new(), defs: Vec::new() };
    let mut seen = BTreeSet::new();
    let mut imported = Vec::with_capacity(webhooks.len());
    for (name, item) in webhooks {
        let fail = |msg: String| SpecError::Webhook { name: name.clone(), msg };
        if let Some(problem) = name_problem(name) {
            return Err(fail(format!("its key is the event type's name, which {problem}")));
        }
        if !seen.insert(name.as_str()) {
            return Err(fail("is in both `webhooks` and `x-webhooks`".into()));
        }
        let one = resolver.event_type(name, item).map_err(|fault| match fault {
            Fault::TooLarge => SpecError::TooLarge,
            Fault::Msg(msg) => fail(msg),
        })?;
        imported.push(one);
    }
    Ok(imported)
}

/// What went wrong with one webhook.
enum Fault {
    /// The import's budget of values is spent.
    TooLarge,
    Msg(String),
}

fn fault(msg: impl Into<String>) -> Fault {
    Fault::Msg(msg.into())
}

/// Keywords that describe a schema without constraining it, which may stand beside a `$ref`.
const ANNOTATIONS: [&str; 9] =
    ["title", "description", "$comment", "examples", "example", "default", "deprecated", "readOnly", "writeOnly"];

/// Whether a schema is a `$ref` and nothing else that constrains a value (annotations
/// beside it, which OpenAPI 3.1 allows, add no schema).
fn only_a_ref(schema: &Value) -> bool {
    schema.as_object().is_some_and(|map| {
        map.contains_key("$ref") && map.keys().all(|key| key == "$ref" || ANNOTATIONS.contains(&key.as_str()))
    })
}

/// Inlines the `$ref`s of a document's schemas, within a budget of values for the whole import.
struct Resolver<'a> {
    root: &'a Value,
    /// Values the schemas may still hold, all webhooks together.
    left: usize,
    /// The references being inlined, outermost first (one met again recurses), each with
    /// whether what it points to is only another `$ref`.
    stack: Vec<(String, bool)>,
    /// The recursive references of the schema being built, with their `$defs` keys.
    defs: Vec<(String, String)>,
}

impl<'a> Resolver<'a> {
    fn event_type(&mut self, name: &str, item: &'a Value) -> Result<Imported, Fault> {
        let item = self.deref(item)?.as_object().ok_or_else(|| fault("must be a path item (an object)"))?;
        let operation = OPERATIONS
            .iter()
            .find_map(|method| item.get(*method))
            .ok_or_else(|| fault("has no operation (`post`, or another method)"))?;
        let operation = operation.as_object().ok_or_else(|| fault("its operation must be an object"))?;
        let body = operation.get("requestBody").map(|b| self.deref(b)).transpose()?;
        let text = |v: Option<&'a Value>| v.and_then(Value::as_str).filter(|s| !s.trim().is_empty());
        let description = text(operation.get("description"))
            .or_else(|| text(operation.get("summary")))
            .or_else(|| text(body.and_then(|b| b.get("description"))))
            .unwrap_or("");
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(fault(format!("its description is longer than {MAX_DESCRIPTION} characters")));
        }
        if description.contains('\0') {
            return Err(fault("its description contains a NUL character"));
        }
        let media = body.and_then(|b| b.get("content")).and_then(Value::as_object).and_then(json_media);
        let schema = match media {
            Some(media) => self.payload_schema(media)?,
            None => None,
        };
        Ok(Imported {
            name: name.to_owned(),
            description: description.to_owned(),
            deprecated: operation.get("deprecated").and_then(Value::as_bool).unwrap_or(false),
            schemas: schema.map(|s| json!({ "1": s })),
        })
    }

    /// The schema of a JSON media type, its `$ref`s inlined, with the media type's examples
    /// first in its `examples`; `None` when it has neither schema nor example.
    fn payload_schema(&mut self, media: &'a Value) -> Result<Option<Value>, Fault> {
        let schema = media.get("schema").map(|s| self.schema_with_defs(s)).transpose()?;
        let mut examples = Vec::new();
        if let Some(example) = media.get("example") {
            examples.push(self.data(example, 2)?);
        }
        if let Some(Value::Object(named)) = media.get("examples") {
            for example in named.values() {
                // An Example Object; one with only an `externalValue` has nothing to send.
                if let Some(value) = self.deref(example)?.get("value") {
                    examples.push(self.data(value, 2)?);
                }
            }
        }
        let mut schema = match schema {
            Some(Value::Object(schema)) => schema,
            None if !examples.is_empty() => Map::new(),
            // A boolean schema holds no examples; no schema and no example: nothing to keep.
            other => return Ok(other),
        };
        match schema.remove("examples") {
            Some(Value::Array(own)) => examples.extend(own),
            // Not JSON Schema's list: left as the document has it, with no examples added.
            Some(other) => {
                schema.insert("examples".into(), other);
                return Ok(Some(Value::Object(schema)));
            }
            None => {}
        }
        // OpenAPI 3.0's single `example` of a schema.
        if let Some(example) = schema.get("example") {
            if !examples.contains(example) {
                examples.push(example.clone());
            }
        }
        if !examples.is_empty() {
            schema.insert("examples".into(), Value::Array(examples));
        }
        Ok(Some(Value::Object(schema)))
    }

    /// A payload schema with its `$ref`s inlined; recursive ones refer to entries added to
    /// its `$defs`, keyed by where they point in the document (`components/schemas/Node`).
    fn schema_with_defs(&mut self, value: &'a Value) -> Result<Value, Fault> {
        self.defs.clear();
        let mut root = self.schema(value, 0)?;
        let mut built = Map::new();
        // Building one may find more recursive references: until none is left.
        let mut next = 0;
        while let Some((reference, key)) = self.defs.get(next).cloned() {
            next += 1;
            let target = self.lookup(&reference)?;
            self.stack.push((reference, only_a_ref(target)));
            let def = self.schema(target, 2);
            self.stack.pop();
            built.insert(key, def?);
        }
        if built.is_empty() {
            return Ok(root);
        }
        let Value::Object(schema) = &mut root else {
            return Err(fault("its schema refers to itself but is not an object"));
        };
        let Value::Object(defs) = schema.entry("$defs").or_insert_with(|| Value::Object(Map::new())) else {
            return Err(fault("its schema's `$defs` is not an object"));
        };
        for (key, def) in built {
            if defs.contains_key(&key) {
                return Err(fault(format!("its schema's `$defs` already has {key:?}, which a recursive $ref needs")));
            }
            defs.insert(key, def);
        }
        Ok(root)
    }

    /// Counts `value` at `depth` (the schema's root is at 0): one value, and its text (a
    /// string's, an object's keys'); what it holds is counted as it is copied.
    fn charge(&mut self, value: &Value, depth: usize) -> Result<(), Fault> {
        if depth > MAX_DEPTH {
            return Err(fault(format!("its schema nests deeper than {MAX_DEPTH} levels once its $refs are inlined")));
        }
        let weight = match value {
            Value::String(s) => text_weight(s.len()),
            Value::Object(map) => 1 + map.keys().map(|k| text_weight(k.len())).sum::<usize>(),
            _ => 1,
        };
        self.left = self.left.checked_sub(weight).ok_or(Fault::TooLarge)?;
        Ok(())
    }

    /// A schema (or a part of one) with its `$ref`s inlined.
    fn schema(&mut self, value: &'a Value, depth: usize) -> Result<Value, Fault> {
        self.charge(value, depth)?;
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    return self.inline(reference, map, depth);
                }
                let mut out = Map::new();
                for (key, child) in map {
                    let child = self.keyword(key, child, depth + 1)?;
                    out.insert(key.clone(), child);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => {
                Ok(Value::Array(items.iter().map(|item| self.schema(item, depth + 1)).collect::<Result<_, _>>()?))
            }
            scalar => Ok(scalar.clone()),
        }
    }

    /// The value of a schema's keyword `key`, at `depth`.
    fn keyword(&mut self, key: &str, value: &'a Value, depth: usize) -> Result<Value, Fault> {
        if DATA_KEYWORDS.contains(&key) {
            return self.data(value, depth);
        }
        match value {
            Value::Object(named) if SCHEMA_MAPS.contains(&key) => {
                self.charge(value, depth)?;
                let mut out = Map::new();
                for (name, schema) in named {
                    let schema = self.schema(schema, depth + 1)?;
                    out.insert(name.clone(), schema);
                }
                Ok(Value::Object(out))
            }
            _ => self.schema(value, depth),
        }
    }

    /// What `reference` points to, inlined in place of the `{"$ref": …}` object; keywords
    /// beside the `$ref` (OpenAPI 3.1 allows `description`, say) apply on top of it.
    fn inline(&mut self, reference: &str, map: &'a Map<String, Value>, depth: usize) -> Result<Value, Fault> {
        // Each inlining reads the reference (decoded, split, looked up): it is weighed by
        // its length, or a long one inlined many times would cost far more than it counts.
        if reference.len() > MAX_REF_BYTES {
            return Err(fault(format!("a $ref is longer than {MAX_REF_BYTES} bytes")));
        }
        self.left = self.left.checked_sub(text_weight(reference.len())).ok_or(Fault::TooLarge)?;
        if let Some(at) = self.stack.iter().position(|(r, _)| r == reference) {
            // A loop through nothing but `$ref`s (`A` → `B` → `A`, or `A` → `A`) has no schema
            // in it: the `$defs` entry made for it would point at itself, for ever.
            if self.stack[at..].iter().all(|(_, bare)| *bare) {
                return Err(fault(format!("its $ref {reference:?} leads back to itself through $refs alone")));
            }
            return Ok(json!({ "$ref": self.def_ref(reference) }));
        }
        // A chain of distinct `$ref`s to `$ref`s adds no depth of its own, but a frame each.
        if self.stack.len() >= MAX_DEPTH {
            return Err(fault(format!("its schema nests more than {MAX_DEPTH} $refs inside one another")));
        }
        let target = self.lookup(reference)?;
        self.stack.push((reference.to_owned(), only_a_ref(target)));
        let resolved = self.schema(target, depth);
        self.stack.pop();
        let mut resolved = resolved?;
        if let Value::Object(out) = &mut resolved {
            for (key, value) in map.iter().filter(|(key, _)| key.as_str() != "$ref") {
                let value = self.keyword(key, value, depth + 1)?;
                out.insert(key.clone(), value);
            }
        }
        Ok(resolved)
    }

    /// The `$defs` reference standing for a recursive `reference`, noted to be built.
    fn def_ref(&mut self, reference: &str) -> String {
        let key = match self.defs.iter().find(|(r, _)| r == reference) {
            Some((_, key)) => key.clone(),
            None => {
                // Where it points, without the pointer's first `/`; two references that
                // come to the same key (`#//x` and `#/x`, `#` and `#/`) get distinct ones.
                let pointer = percent_decode(reference.trim_start_matches('#'));
                let wanted = pointer.strip_prefix('/').unwrap_or(&pointer).to_owned();
                let mut key = wanted.clone();
                let mut n = 1;
                while self.defs.iter().any(|(_, k)| *k == key) {
                    n += 1;
                    key = format!("{wanted}~{n}");
                }
                self.defs.push((reference.to_owned(), key.clone()));
                key
            }
        };
        format!("#/$defs/{}", key.replace('~', "~0").replace('/', "~1"))
    }

    /// A copy of data (an example, a default) counted against the budget.
    fn data(&mut self, value: &Value, depth: usize) -> Result<Value, Fault> {
        self.charge(value, depth)?;
        Ok(match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, v) in map {
                    let v = self.data(v, depth + 1)?;
                    out.insert(key.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.data(v, depth + 1)).collect::<Result<_, _>>()?)
            }
            scalar => scalar.clone(),
        })
    }

    /// `value`, or what its `$ref` leads to (a path item, request body or example). Each hop
    /// reads its reference (decoded, split, looked up) and is weighed by its length, as an
    /// inlined one is: a document's example entries can all point at one far-off value.
    fn deref(&mut self, value: &'a Value) -> Result<&'a Value, Fault> {
        let mut current = value;
        for _ in 0..MAX_HOPS {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    self.left = self.left.checked_sub(text_weight(reference.len())).ok_or(Fault::TooLarge)?;
                    current = self.lookup(reference)?;
                }
                None => return Ok(current),
            }
        }
        Err(fault(format!("a chain of more than {MAX_HOPS} $refs (or one that loops)")))
    }

    /// What a local reference (`#/components/schemas/Pet`) points to in the document.
    fn lookup(&self, reference: &str) -> Result<&'a Value, Fault> {
        if reference.len() > MAX_REF_BYTES {
            return Err(fault(format!("a $ref is longer than {MAX_REF_BYTES} bytes")));
        }
        let pointer = reference
            .strip_prefix('#')
            .map(percent_decode)
            .filter(|p| p.is_empty() || p.starts_with('/'))
            .ok_or_else(|| fault(format!("$ref {reference:?} is not within the document (`#/…`)")))?;
        self.root
            .pointer(&pointer)
            .ok_or_else(|| fault(format!("$ref {reference:?} points to nothing in the document")))
    }
}

/// The JSON media type of a request body's `content`: `application/json`, or else the first
/// whose type is JSON (`application/json; charset=utf-8`, `application/cloudevents+json`).
fn json_media(content: &Map<String, Value>) -> Option<&Value> {
    content.get("application/json").or_else(|| {
        content
            .iter()
            .find(|(media, _)| {
                let essence = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            })
            .map(|(_, v)| v)
    })
}

/// A URI fragment's `%XX` escapes decoded (`#/components/schemas/My%20Pet`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make a byte: at most 255.
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{event_types_from_spec, parse_raw, Imported, SpecError, MAX_DEPTH, MAX_REF_BYTES};

    fn import(spec: Value) -> Vec<Imported> {
        event_types_from_spec(&spec).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(spec: Value) -> SpecError {
        match event_types_from_spec(&spec) {
            Ok(types) => panic!("imported {types:?}"),
            Err(e) => e,
        }
    }

    /// No more webhooks than an environment import takes: each is a read and a write.
    #[test]
    fn too_many_webhooks_are_refused_whole() {
        let many = |n: usize| -> Value {
            let hooks: serde_json::Map<String, Value> =
                (0..n).map(|i| (format!("e.t{i}"), json!({ "post": {} }))).collect();
            json!({ "webhooks": hooks })
        };
        let limit = super::super::environment::MAX_EVENT_TYPES;
        assert_eq!(refused(many(limit + 1)), SpecError::TooMany);
        assert_eq!(import(many(limit)).len(), limit);
    }

    /// The schema of version "1" of an imported event type.
    fn schema(one: &Imported) -> &Value {
        &one.schemas.as_ref().unwrap_or_else(|| panic!("{} has no schemas", one.name))["1"]
    }

    /// One webhook `post`ing a JSON body of `schema`.
    fn posting(schema: Value) -> Value {
        json!({ "post": { "requestBody": { "content": { "application/json": { "schema": schema } } } } })
    }

    #[test]
    fn openapi_3_1_webhooks_become_event_types_named_by_their_keys() {
        let types = import(json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "1" },
            "webhooks": {
                "pet.new": {
                    "post": {
                        "operationId": "newPetWebhook",
                        "summary": "Summary only used without a description",
                        "description": "A new pet",
                        "requestBody": {
                            "description": "The pet",
                            "content": { "application/json": {
                                "schema": { "type": "object", "properties": { "id": { "type": "integer" } } },
                                "example": { "id": 1 },
                            } },
                        },
                        "responses": { "200": { "description": "ok" } },
                    },
                },
                "pet.gone": { "post": { "summary": "A pet left", "deprecated": true } },
                "pet.sold": { "post": { "requestBody": { "description": "Sold", "content": {} } } },
            },
        }));
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["pet.gone", "pet.new", "pet.sold"], "the keys, not the operationIds");
        let new = &types[1];
        assert_eq!(new.description, "A new pet");
        assert!(!new.deprecated);
        assert_eq!(
            new.schemas,
            Some(json!({ "1": {
                "type": "object",
                "properties": { "id": { "type": "integer" } },
                "examples": [{ "id": 1 }],
            } }))
        );
        let gone = &types[0];
        assert_eq!((gone.description.as_str(), gone.deprecated, &gone.schemas), ("A pet left", true, &None));
        assert_eq!(types[2].description, "Sold", "the request body's description comes last");
    }

    #[test]
    fn openapi_3_0_x_webhooks_are_read_too() {
        let types = import(json!({
            "openapi": "3.0.3",
            "x-webhooks": {
                "invoice.paid": {
                    "get": { "summary": "not this one" },
                    "post": {
                        "summary": "Paid",
                        "requestBody": { "content": { "application/json; charset=utf-8": {
                            "schema": { "type": "object", "example": { "amount": 3 } },
                            "examples": {
                                "big": { "summary": "a big one", "value": { "amount": 1000 } },
                                "far": { "externalValue": "https://example.com/far.json" },
                            },
                        } } },
                    },
                },
            },
        }));
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].name, "invoice.paid");
        assert_eq!(types[0].description, "Paid", "post is chosen over get");
        // The media type's examples first, then the schema's own 3.0 `example`.
        assert_eq!(schema(&types[0])["examples"], json!([{ "amount": 1000 }, { "amount": 3 }]));
    }

    #[test]
    fn refs_are_inlined_wherever_they_are() {
        let types = import(json!({
            "openapi": "3.1.0",
            "webhooks": {
                "order.created": { "$ref": "#/components/pathItems/OrderCreated" },
            },
            "components": {
                "pathItems": {
                    "OrderCreated": { "post": { "requestBody": { "$ref": "#/components/requestBodies/Order" } } },
                },
                "requestBodies": { "Order": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Order" },
                    "examples": { "one": { "$ref": "#/components/examples/One" } },
                } } } },
                "examples": { "One": { "value": { "id": "o_1", "lines": [] } } },
                "schemas": {
                    "Order": {
                        "type": "object",
                        "examples": [{ "id": "from the schema", "$ref": "data, not a reference" }],
                        "properties": {
                            "id": { "type": "string" },
                            "lines": { "type": "array", "items": { "$ref": "#/components/schemas/Line" } },
                            "$ref": { "type": "string", "description": "a property named $ref" },
                            "buyer": { "$ref": "#/components/schemas/Person", "description": "beside the $ref" },
                        },
                    },
                    "Line": { "type": "object", "properties": { "sku": { "$ref": "#/components/schemas/Sku" } } },
                    "Sku": { "type": "string" },
                    "Person": { "type": "object", "description": "a person" },
                },
            },
        }));
        assert_eq!(
            schema(&types[0]),
            &json!({
                "type": "object",
                "examples": [
                    { "id": "o_1", "lines": [] },
                    { "id": "from the schema", "$ref": "data, not a reference" },
                ],
                "properties": {
                    "id": { "type": "string" },
                    "lines": {
                        "type": "array",
                        "items": { "type": "object", "properties": { "sku": { "type": "string" } } },
                    },
                    "$ref": { "type": "string", "description": "a property named $ref" },
                    "buyer": { "type": "object", "description": "beside the $ref" },
                },
            })
        );
        assert!(!schema(&types[0]).to_string().contains("#/components"), "no reference is left");
    }

    #[test]
    fn recursive_refs_become_defs() {
        let types = import(json!({
            "webhooks": { "tree.changed": posting(json!({ "$ref": "#/components/schemas/Node" })) },
            "components": { "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "children": { "type": "array", "items": { "$ref": "#/components/schemas/Node" } },
                        "owner": { "$ref": "#/components/schemas/A" },
                    },
                },
                "A": { "type": "object", "properties": { "b": { "$ref": "#/components/schemas/B" } } },
                "B": { "type": "object", "properties": { "a": { "$ref": "#/components/schemas/A" } } },
            } },
        }));
        let node_ref = json!({ "$ref": "#/$defs/components~1schemas~1Node" });
        let a_ref = json!({ "$ref": "#/$defs/components~1schemas~1A" });
        let a_inlined = json!({ "type": "object", "properties": { "b": {
            "type": "object", "properties": { "a": a_ref },
        } } });
        assert_eq!(
            schema(&types[0]),
            &json!({
                "type": "object",
                "properties": {
                    "children": { "type": "array", "items": node_ref },
                    "owner": a_inlined,
                },
                "$defs": {
                    "components/schemas/Node": {
                        "type": "object",
                        "properties": {
                            "children": { "type": "array", "items": node_ref },
                            "owner": a_inlined,
                        },
                    },
                    "components/schemas/A": a_inlined,
                },
            })
        );
    }

    /// A loop of `$ref`s with no schema between them (`A` → `B` → `A`, `A` → `A`) is refused:
    /// it would be stored as a `$defs` entry that points at itself. A `$ref` to a schema
    /// that then refers on to one that loops through content is kept.
    #[test]
    fn ref_loops_with_no_schema_in_them_are_refused() {
        for schemas in [
            json!({ "A": { "$ref": "#/components/schemas/B" }, "B": { "$ref": "#/components/schemas/A" } }),
            json!({ "A": { "$ref": "#/components/schemas/A" } }),
            json!({
                "A": { "$ref": "#/components/schemas/B" },
                "B": { "$ref": "#/components/schemas/A", "description": "an annotation adds no schema" },
            }),
        ] {
            let spec = json!({
                "webhooks": { "loop.evt": posting(json!({ "$ref": "#/components/schemas/A" })) },
                "components": { "schemas": schemas },
            });
            let error = refused(spec).to_string();
            assert!(error.contains("leads back to itself"), "{error}");
        }
        let types = import(json!({
            "webhooks": { "ok.evt": posting(json!({ "$ref": "#/components/schemas/A" })) },
            "components": { "schemas": {
                "A": { "$ref": "#/components/schemas/B" },
                "B": { "type": "object", "properties": { "a": { "$ref": "#/components/schemas/A" } } },
            } },
        }));
        assert!(schema(&types[0])["$defs"].is_object(), "{:?}", types[0]);
    }

    #[test]
    fn refs_that_multiply_or_nest_too_deep_are_refused() {
        // 40 levels, each using the next twice: 2^40 values once inlined.
        let mut schemas = serde_json::Map::new();
        for level in 0..40 {
            let next = json!({ "$ref": format!("#/components/schemas/L{}", level + 1) });
            schemas.insert(format!("L{level}"), json!({ "type": "array", "prefixItems": [next, next] }));
        }
        schemas.insert("L40".into(), json!({ "type": "string" }));
        let spec = json!({
            "webhooks": { "boom": posting(json!({ "$ref": "#/components/schemas/L0" })) },
            "components": { "schemas": schemas },
        });
        assert_eq!(refused(spec), SpecError::TooLarge);

        // A long chain of distinct `$ref`s each only pointing at the next: no depth, no size,
        // but a frame per link (a 1 MiB document holds tens of thousands).
        let mut schemas = serde_json::Map::new();
        for link in 0..20_000 {
            schemas.insert(format!("R{link}"), json!({ "$ref": format!("#/components/schemas/R{}", link + 1) }));
        }
        schemas.insert("R20000".into(), json!({ "type": "string" }));
        let spec = json!({
            "webhooks": { "chain": posting(json!({ "$ref": "#/components/schemas/R0" })) },
            "components": { "schemas": schemas },
        });
        match refused(spec) {
            SpecError::Webhook { name, msg } => assert!(name == "chain" && msg.contains("$refs inside"), "{msg}"),
            other => panic!("{other:?}"),
        }

        // Few values but long text: a 200 KB description used by 1,000 properties.
        let big = json!({ "type": "string", "description": "x".repeat(200_000) });
        let props: serde_json::Map<String, Value> =
            (0..1_000).map(|i| (format!("p{i}"), json!({ "$ref": "#/components/schemas/Big" }))).collect();
        let spec = json!({
            "webhooks": { "wordy": posting(json!({ "type": "object", "properties": props })) },
            "components": { "schemas": { "Big": big } },
        });
        assert_eq!(refused(spec), SpecError::TooLarge);

        // A long reference inlined many times: its text is weighed each time (here 2 KiB
        // names, 1,000 properties × 2^6 uses: far past the budget though few values).
        let name = "N".repeat(MAX_REF_BYTES - "#/components/schemas/".len());
        let long = json!({ "$ref": format!("#/components/schemas/{name}") });
        let mut schemas = serde_json::Map::new();
        schemas.insert(name.clone(), json!({}));
        let props: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("p{i}"), long.clone())).collect();
        schemas.insert("M6".into(), json!({ "type": "object", "properties": props }));
        for level in (0..6).rev() {
            let next = json!({ "$ref": format!("#/components/schemas/M{}", level + 1) });
            schemas.insert(format!("M{level}"), json!({ "type": "array", "prefixItems": [next, next] }));
        }
        let spec = json!({
            "webhooks": { "long": posting(json!({ "$ref": "#/components/schemas/M0" })) },
            "components": { "schemas": schemas },
        });
        assert_eq!(refused(spec), SpecError::TooLarge);
        // And a reference past 2 KiB is refused as such.
        let longer = format!("#/components/schemas/{}", "N".repeat(MAX_REF_BYTES));
        let spec = json!({ "webhooks": { "longer": posting(json!({ "$ref": longer })) } });
        match refused(spec) {
            SpecError::Webhook { msg, .. } => assert!(msg.contains("longer than"), "{msg}"),
            other => panic!("{other:?}"),
        }

        // A chain of distinct schemas, each holding the next as a property: two levels each.
        let mut schemas = serde_json::Map::new();
        let levels = MAX_DEPTH / 2 + 1;
        for level in 0..levels {
            let next = json!({ "$ref": format!("#/components/schemas/D{}", level + 1) });
            schemas.insert(format!("D{level}"), json!({ "type": "object", "properties": { "next": next } }));
        }
        schemas.insert(format!("D{levels}"), json!({ "type": "string" }));
        let spec = json!({
            "webhooks": { "deep": posting(json!({ "$ref": "#/components/schemas/D0" })) },
            "components": { "schemas": schemas },
        });
        match refused(spec) {
            SpecError::Webhook { name, msg } => {
                assert_eq!(name, "deep");
                assert!(msg.contains("deeper than"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn example_refs_are_weighed_at_every_hop() {
        // Each example leads through a chain of 31 long references to an Example without a
        // `value`: nothing is copied, but every hop is read (decoded, split, looked up).
        let key = |i: usize| format!("K{i}{}", "x".repeat(1990));
        let mut spec = serde_json::Map::new();
        for i in 0..31 {
            let next = if i < 30 { json!({ "$ref": format!("#/{}", key(i + 1)) }) } else { json!({ "summary": "-" }) };
            spec.insert(key(i), next);
        }
        let examples: serde_json::Map<String, Value> =
            (0..400).map(|n| (format!("e{n}"), json!({ "$ref": format!("#/{}", key(0)) }))).collect();
        let media = json!({ "schema": { "type": "object" }, "examples": examples });
        spec.insert(
            "webhooks".into(),
            json!({ "many": { "post": { "requestBody": { "content": { "application/json": media } } } } }),
        );
        assert_eq!(refused(Value::Object(spec.clone())), SpecError::TooLarge);
        // A few of them are fine.
        let few: serde_json::Map<String, Value> =
            (0..4).map(|n| (format!("e{n}"), json!({ "$ref": format!("#/{}", key(0)) }))).collect();
        spec["webhooks"]["many"]["post"]["requestBody"]["content"]["application/json"]["examples"] = Value::Object(few);
        assert_eq!(import(Value::Object(spec)).len(), 1);
        // And a reference past 2 KiB is refused there too.
        let long = format!("#/components/examples/{}", "E".repeat(MAX_REF_BYTES));
        let media = json!({ "schema": { "type": "object" }, "examples": { "e": { "$ref": long } } });
        let spec = json!({ "webhooks": { "long": { "post": { "requestBody": { "content": { "application/json": media } } } } } });
        match refused(spec) {
            SpecError::Webhook { msg, .. } => assert!(msg.contains("longer than"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn recursive_refs_to_different_places_get_different_defs() {
        // `#/x` and `#//x` (the key "x" of the key "") are two places.
        let types = import(json!({
            "webhooks": { "two": posting(json!({ "$ref": "#/x" })) },
            "x": { "type": "object", "properties": { "me": { "$ref": "#/x" }, "other": { "$ref": "#//x" } } },
            "": { "x": { "type": "array", "items": { "$ref": "#//x" } } },
        }));
        let schema = schema(&types[0]);
        let defs = schema["$defs"].as_object().unwrap_or_else(|| panic!("no $defs: {schema}"));
        assert_eq!(defs.len(), 2, "{schema}");
        // Every reference leads to the schema of the place it named.
        let def = |r: &Value| {
            let pointer = r["$ref"].as_str().and_then(|r| r.strip_prefix('#')).unwrap_or_default().to_owned();
            schema.pointer(&pointer).cloned().unwrap_or_else(|| panic!("{r} leads nowhere in {schema}"))
        };
        assert_eq!(def(&schema["properties"]["me"])["type"], "object", "{schema}");
        // `#//x` is inlined once, and refers to itself within.
        assert_eq!(schema["properties"]["other"]["type"], "array", "{schema}");
        assert_eq!(def(&schema["properties"]["other"]["items"])["type"], "array", "{schema}");
    }

    #[test]
    fn bad_names_and_bad_documents_are_refused_by_name() {
        match refused(json!({ "webhooks": { "good.one": { "post": {} }, "bad name!": { "post": {} } } })) {
            SpecError::Webhook { name, msg } => {
                assert_eq!(name, "bad name!");
                assert!(msg.contains("may contain only"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(257);
        assert!(matches!(refused(json!({ "webhooks": { long.clone(): { "post": {} } } })),
            SpecError::Webhook { name, .. } if name == long));
        assert_eq!(import(json!({ "webhooks": {}, "x-webhooks": null })), [], "an empty list of webhooks is no error");
        assert_eq!(refused(json!({ "openapi": "3.1.0", "paths": {} })), SpecError::NoWebhooks);
        assert_eq!(refused(json!([1, 2])), SpecError::NotAnObject);
        assert_eq!(refused(json!("openapi: 3.1.0")), SpecError::NotAnObject);
        assert_eq!(refused(json!({ "webhooks": ["a"] })), SpecError::WebhooksNotAnObject("webhooks"));

        let cases = [
            (json!({ "webhooks": { "a": { "post": {} } }, "x-webhooks": { "a": { "post": {} } } }), "in both"),
            (json!({ "webhooks": { "a": "post" } }), "path item"),
            (json!({ "webhooks": { "a": { "parameters": [] } } }), "no operation"),
            (
                json!({ "webhooks": { "a": posting(json!({ "$ref": "#/components/schemas/Nope" })) } }),
                "points to nothing",
            ),
            (json!({ "webhooks": { "a": posting(json!({ "$ref": "other.yaml#/Pet" })) } }), "not within the document"),
            (json!({ "webhooks": { "a": { "$ref": "#/webhooks/b" }, "b": { "$ref": "#/webhooks/a" } } }), "loops"),
            (json!({ "webhooks": { "a": { "post": { "description": "d".repeat(4097) } } } }), "longer than 4096"),
            (json!({ "webhooks": { "a": { "post": { "description": "nul\u{0}" } } } }), "NUL"),
        ];
        for (spec, want) in cases {
            match refused(spec) {
                SpecError::Webhook { msg, .. } => assert!(msg.contains(want), "{msg:?} should say {want:?}"),
                other => panic!("{other:?} instead of {want:?}"),
            }
        }
    }

    #[test]
    fn refs_with_escapes_resolve() {
        let types = import(json!({
            "webhooks": { "a": posting(json!({ "$ref": "#/components/schemas/My%20Pet~1Cat" })) },
            "components": { "schemas": { "My Pet/Cat": { "type": "string" } } },
        }));
        assert_eq!(schema(&types[0]), &json!({ "type": "string" }));
    }

    const YAML_SPEC: &str = r#"
openapi: 3.1.0
info: { title: Pets, version: "1.0" }
webhooks:
  pet.new:
    post:
      description: A new pet
      requestBody:
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/Pet'
            example: { id: 7, name: Rex }
      responses:
        200:
          description: ok
components:
  schemas:
    Base: &base
      type: object
      required: [id]
    Pet:
      <<: *base
      properties:
        id: { type: integer }
        name: { type: string }
"#;

    #[test]
    fn yaml_and_json_spec_raw_both_parse() {
        let spec = parse_raw(YAML_SPEC).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec["webhooks"]["pet.new"]["post"]["responses"]["200"]["description"], "ok", "integer keys");
        let types = import(spec.clone());
        assert_eq!(types[0].name, "pet.new");
        assert_eq!(
            schema(&types[0]),
            &json!({
                "type": "object",
                "required": ["id"],
                "properties": { "id": { "type": "integer" }, "name": { "type": "string" } },
                "examples": [{ "id": 7, "name": "Rex" }],
            }),
            "the merge key (<<) applied"
        );
        let as_json = parse_raw(&spec.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(as_json, spec);
    }

    #[test]
    fn bad_yaml_is_an_error_not_a_panic() {
        for (raw, want) in [
            ("webhooks: [unclosed", "flow sequence"),
            ("{\"webhooks\": ", "EOF"),
            ("a: 1\na: 2\n", "duplicate key"),
            ("a: .nan\n", "JSON cannot hold"),
            ("a: !custom 1\n", ""),
            ("---\na: 1\n---\nb: 2\n", ""),
        ] {
            match parse_raw(raw) {
                Err(SpecError::Unparsable(msg)) => assert!(msg.contains(want), "{raw:?}: {msg}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_raw(&deep), Err(SpecError::Unparsable(_))));
        let deep_yaml = (0..10_000).map(|i| format!("{}- \n", "  ".repeat(i))).collect::<String>();
        assert!(matches!(parse_raw(&deep_yaml), Err(SpecError::Unparsable(_))));
        assert_eq!(parse_raw("").map_err(|e| e.to_string()), Ok(Value::Null), "nothing: not an object, later");
    }

    #[test]
    fn yaml_bombs_are_stopped() {
        // Billion laughs: nine levels of nine aliases.
        let mut laughs = String::from("a0: &a0 [\"lol\"]\n");
        for level in 1..10 {
            let prev = format!("*a{}", level - 1);
            laughs.push_str(&format!("a{level}: &a{level} [{}]\n", vec![prev; 9].join(", ")));
        }
        assert!(matches!(parse_raw(&laughs), Err(SpecError::Unparsable(_))), "billion laughs");
        // Quadratic: one long anchored list, aliased many times, within the alias limit.
        let list = vec!["x"; 5_000].join(", ");
        let aliases = vec!["*l"; 5_000].join(", ");
        let quadratic = format!("l: &l [{list}]\nm: [{aliases}]\n");
        match parse_raw(&quadratic) {
            Err(SpecError::Unparsable(msg)) => assert!(msg.contains("once its aliases are expanded"), "{msg}"),
            other => panic!("{:?}", other.map(|_| "parsed")),
        }
        // Few values but long text: one 200 KB string aliased 1,000 times would be 200 MB.
        let text = format!("t: &t \"{}\"\nm: [{}]\n", "x".repeat(200_000), vec!["*t"; 1_000].join(", "));
        match parse_raw(&text) {
            Err(SpecError::Unparsable(msg)) => assert!(msg.contains("16 MiB of text"), "{msg}"),
            other => panic!("{:?}", other.map(|_| "parsed")),
        }
        // The same text aliased a few times is fine.
        let few = format!("t: &t \"{}\"\nm: [*t, *t]\n", "x".repeat(200_000));
        assert!(parse_raw(&few).is_ok());
    }
}
