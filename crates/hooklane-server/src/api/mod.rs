//! The Svix-compatible REST API v1, one module per resource. JSON field names, paths and
//! status codes follow the Svix API so that its SDKs work unchanged.

pub mod app;
pub mod attempt;
pub mod auth;
pub mod background_task;
pub mod bulk;
pub mod endpoint;
pub mod endpoint_mtls;
pub mod endpoint_oauth;
pub mod environment;
pub mod event_type;
pub mod event_type_import;
pub mod events;
pub mod example;
pub mod integration;
pub mod message;
pub mod operational_endpoint;
pub mod poller;
pub mod position_tokens;
pub mod preview;
pub mod retry_waits;
pub mod source;
pub mod stats;
pub mod transformation;
pub mod usage;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use hooklane_store::{Page, PageRequest};

/// Largest page a client may ask for.
const MAX_LIMIT: usize = 250;

/// The time now, to the millisecond: the precision the store keeps, so a timestamp reads
/// the same in the answer that set it as in every later read.
pub fn now() -> hooklane_core::DateTime<hooklane_core::Utc> {
    use chrono::SubsecRound;
    hooklane_core::Utc::now().trunc_subsecs(3)
}

/// Svix's `ListResponse…Out`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    /// Converts a store page, taking the cursors from the items' keys: `iterator` reads on
    /// after the last, `prevIterator` (the first's key after a `-`, as Svix writes it) reads
    /// the page before the first.
    pub fn from_page<R>(page: Page<R>, key: impl Fn(&R) -> String, convert: impl Fn(R) -> T) -> Self {
        let iterator = page.items.last().map(&key);
        let prev_iterator = page.items.first().map(|item| format!("-{}", key(item)));
        ListResponse { data: page.items.into_iter().map(convert).collect(), iterator, prev_iterator, done: page.done }
    }
}

/// Every item of a paged store listing, in its order, read `MAX_LIMIT` at a time; `key`
/// is what the listing's iterator is (an id, a name).
pub(crate) async fn every<T, Fut>(
    key: impl Fn(&T) -> String,
    mut fetch: impl FnMut(PageRequest) -> Fut,
) -> ApiResult<Vec<T>>
where
    Fut: std::future::Future<Output = hooklane_store::StoreResult<Page<T>>>,
{
    let mut all = Vec::new();
    let mut page = PageRequest { limit: MAX_LIMIT, ..PageRequest::default() };
    loop {
        let found = fetch(page.clone()).await?;
        let next = found.items.last().filter(|_| !found.done).map(&key);
        all.extend(found.items);
        match next {
            Some(last) => page.iterator = Some(last),
            None => return Ok(all),
        }
    }
}

/// One page of a listing read whole from the store, cut as the store cuts its pages
/// ([`PageRequest`]: after or, `backwards`, before the `iterator`, in `descending` order or
/// not), by `key`, each item's own (an id).
pub(crate) fn page_of<T>(mut items: Vec<T>, key: impl Fn(&T) -> &str, page: &PageRequest) -> Page<T> {
    // Read away from the iterator: the page's own order, or backwards the other way.
    let read_descending = page.descending != page.backwards;
    items.sort_by(|a, b| if read_descending { key(b).cmp(key(a)) } else { key(a).cmp(key(b)) });
    if let Some(it) = page.iterator.as_deref() {
        items.retain(|item| if read_descending { key(item) < it } else { key(item) > it });
    }
    let limit = page.limit.max(1);
    let done = items.len() <= limit;
    items.truncate(limit);
    if page.backwards {
        items.reverse();
    }
    Page { items, done }
}

/// `limit`, `iterator` and `order` from the query string; `newest_first` is the default order.
/// An `iterator` that starts with `-` (a `prevIterator`) asks for the page before the item
/// it names.
pub fn page_request(q: &Query, newest_first: bool) -> ApiResult<PageRequest> {
    let mut page = page_request_forward(q, newest_first)?;
    if let Some(key) = page.iterator.as_deref().and_then(|it| it.strip_prefix('-')) {
        page.iterator = Some(key.to_string()).filter(|k| !k.is_empty());
        page.backwards = true;
    }
    Ok(page)
}

/// [`page_request`] for a newest-first list of items keyed by ids of `prefix` (messages,
/// attempts) that takes `before` and `after` times: as Svix reads them, a lone `after` (no
/// `before`, no `iterator`) starts at that time: the first page is the items just after
/// it (still newest first), and its `prevIterator` goes on forward in time, so that a
/// client reading everything after a time follows `prevIterator` until `done`. (`after`
/// stays a filter too: the page's `iterator` finds nothing older.)
pub fn page_request_from(q: &Query, prefix: &str) -> ApiResult<PageRequest> {
    let mut page = page_request(q, true)?;
    if page.iterator.is_none() && page.descending && q.get("before").is_none() {
        if let Some(after) = q.time("after")? {
            // Ids begin with the time they were made, within moments of the item's own
            // time (a message's id is made just before its time is taken): a second's
            // margin, which the filter then cuts off.
            page.iterator = Some(hooklane_core::ids::floor(prefix, after - chrono::Duration::seconds(1)));
            page.backwards = true;
        }
    }
    Ok(page)
}

/// `page_request` for a listing whose keys may start with `-` (event type names): only
/// forward pages.
pub fn page_request_forward(q: &Query, newest_first: bool) -> ApiResult<PageRequest> {
    let limit = q.parse::<usize>("limit")?.unwrap_or(50);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_query("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let descending = match q.get("order") {
        None => newest_first,
        Some("ascending") => false,
        Some("descending") => true,
        Some(_) => return Err(ApiError::bad_query("order", "must be ascending or descending")),
    };
    let iterator = q.get("iterator").filter(|s| !s.is_empty()).map(String::from);
    Ok(PageRequest { limit, iterator, descending, backwards: false })
}

/// A PATCH field: absent (leave alone), `null` (clear) or a value (set).
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Patch::Set(v),
            None => Patch::Null,
        })
    }
}

impl<T> Patch<T> {
    /// Applies the patch to an optional field.
    pub fn apply_opt(self, field: &mut Option<T>) {
        match self {
            Patch::Absent => {}
            Patch::Null => *field = None,
            Patch::Set(v) => *field = Some(v),
        }
    }

    /// Applies the patch to a field with a default, which `null` sets.
    pub fn apply_or_default(self, field: &mut T)
    where
        T: Default,
    {
        match self {
            Patch::Absent => {}
            Patch::Null => *field = T::default(),
            Patch::Set(v) => *field = v,
        }
    }

    /// Applies the patch to a required field; `null` is refused.
    pub fn apply(self, name: &str, field: &mut T) -> ApiResult<()> {
        match self {
            Patch::Absent => Ok(()),
            Patch::Null => Err(ApiError::validation(name, "may not be null")),
            Patch::Set(v) => {
                *field = v;
                Ok(())
            }
        }
    }
}

/// Svix's rule for names, uids and event ids: 1–256 of `[a-zA-Z0-9-_.]`.
pub fn check_name(field: &str, value: &str) -> ApiResult<()> {
    name_problem(value).map_or(Ok(()), |msg| Err(ApiError::validation(field, msg)))
}

/// What is wrong with a name (event type, channel, uid…), if anything.
fn name_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 256 {
        return Some("must be between 1 and 256 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Some("may contain only letters, digits, '-', '_' and '.'");
    }
    None
}

/// What is wrong with a message's tag, if anything: Svix's rule for tags, wider than for
/// names (`order/42`, `#vip`): 1–128 of `[a-zA-Z0-9-_./\\#]`.
pub(crate) fn tag_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > 128 {
        return Some("must be between 1 and 128 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./\\#".contains(&b)) {
        return Some("may contain only letters, digits, '-', '_', '.', '/', '\\' and '#'");
    }
    None
}

/// Most names one repeatable query filter takes.
const MAX_QUERY_NAMES: usize = 100;

/// A repeatable filter of names from the query string: `name=a&name=b`, `name[]=a`, or
/// `name=a,b` (Svix's SDKs send one comma-joined value; names cannot hold commas). `None`
/// when absent or empty.
pub fn query_names(q: &Query, name: &str) -> ApiResult<Option<Vec<String>>> {
    let mut names = Vec::new();
    for value in q.all(name).into_iter().chain(q.all(&format!("{name}[]"))) {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(msg) = name_problem(part) {
                return Err(ApiError::bad_query(name, msg));
            }
            names.push(part.to_string());
        }
    }
    if names.len() > MAX_QUERY_NAMES {
        return Err(ApiError::bad_query(name, format!("must hold at most {MAX_QUERY_NAMES} names")));
    }
    Ok((!names.is_empty()).then_some(names))
}

/// Most feature flags one token or integration carries.
const MAX_FEATURE_FLAGS: usize = 64;

/// Svix's `featureFlags` of a token or an integration, checked (at most 64 names), sorted
/// and without repeats (a set, as Svix's).
pub fn feature_flags(given: Option<std::collections::BTreeSet<String>>) -> ApiResult<Vec<String>> {
    let flags = given.unwrap_or_default();
    if flags.len() > MAX_FEATURE_FLAGS {
        return Err(ApiError::validation("featureFlags", format!("must hold at most {MAX_FEATURE_FLAGS} flags")));
    }
    for flag in &flags {
        check_name("featureFlags", flag)?;
    }
    Ok(flags.into_iter().collect())
}

pub fn check_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.chars().count() > max {
        return Err(ApiError::validation(field, format!("must be at most {max} characters")));
    }
    no_nul(field, value)
}

/// PostgreSQL text cannot hold NUL: refused on every store alike, before it reaches one.
pub(crate) fn no_nul(field: &str, value: &str) -> ApiResult<()> {
    if value.contains('\0') {
        return Err(ApiError::validation(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A list of names (event types, channels): 1–`max` items, each a valid name.
pub fn check_names(field: &str, values: &Option<Vec<String>>, max: usize) -> ApiResult<()> {
    let Some(values) = values else { return Ok(()) };
    if values.is_empty() || values.len() > max {
        return Err(ApiError::validation(field, format!("must hold between 1 and {max} items")));
    }
    for v in values {
        check_name(field, v)?;
    }
    Ok(())
}

pub fn check_rate_limit(field: &str, value: Option<u32>) -> ApiResult<()> {
    match value {
        Some(0) => Err(ApiError::validation(field, "must be at least 1")),
        // Svix's SDKs read it as 16 bits: one larger would fail every read of a list holding it.
        Some(v) if v > u32::from(u16::MAX) => Err(ApiError::validation(field, "must be at most 65535")),
        _ => Ok(()),
    }
}

pub fn check_metadata(field: &str, m: &hooklane_core::model::Metadata) -> ApiResult<()> {
    if m.len() > 64 || m.iter().any(|(k, v)| k.chars().count() > 256 || v.chars().count() > 4096) {
        return Err(ApiError::validation(field, "at most 64 entries, keys up to 256 and values up to 4096 characters"));
    }
    m.iter().try_for_each(|(k, v)| no_nul(field, k).and_then(|()| no_nul(field, v)))
}
