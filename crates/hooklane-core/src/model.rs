//! The records hooklane keeps. Field names follow the Svix vocabulary; the JSON shapes of
//! the public API live in the server crate, so storage can evolve without breaking clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signing::Secret;

pub type Metadata = BTreeMap<String, String>;

/// One customer of the sending SaaS.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub feature_flag: Option<String>,
    pub schemas: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A secret that still signs until `expires_at` (after a rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiringSecret {
    pub key: String,
    pub expires_at: DateTime<Utc>,
}

/// A URL of an application with its secret, filters and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub app_id: String,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub version: i32,
    pub filter_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub disabled: bool,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
    pub headers: BTreeMap<String, String>,
    /// `whsec_…` form. Kept as text so the store does not need the signing code.
    pub secret: String,
    pub previous_secrets: Vec<ExpiringSecret>,
    /// Start of the current run of failed attempts; cleared by a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// Every secret that signs a delivery made at `now`: the current one, then rotated-out
    /// ones that have not expired yet. Secrets that fail to parse are skipped (they were
    /// validated on the way in, so this only guards against a hand-edited database).
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<Secret> {
        std::iter::once(self.secret.as_str())
            .chain(self.previous_secrets.iter().filter(|s| s.expires_at > now).map(|s| s.key.as_str()))
            .filter_map(|k| Secret::parse(k).ok())
            .collect()
    }
}

/// One event posted once by the SaaS.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub app_id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    /// The JSON payload exactly as received (signed byte for byte).
    pub payload: String,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

/// Status codes as in the Svix API (`MessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Success = 0,
    Pending = 1,
    Fail = 2,
    Sending = 3,
}

impl DeliveryStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Success,
            1 => Self::Pending,
            2 => Self::Fail,
            3 => Self::Sending,
            _ => return None,
        })
    }
}

/// Why an attempt was made (Svix `MessageAttemptTriggerType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    Scheduled = 0,
    Manual = 1,
}

impl TriggerType {
    pub fn from_code(code: i64) -> Self {
        if code == 1 {
            Self::Manual
        } else {
            Self::Scheduled
        }
    }
}

/// The state of one message for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub trigger: TriggerType,
    pub updated_at: DateTime<Utc>,
}

/// One HTTP try of one message to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    pub url: String,
    pub status: DeliveryStatus,
    /// HTTP status, or 0 when no response was received (timeout, refused, blocked).
    pub response_status: i32,
    /// Response body (capped), or a description of the transport error.
    pub response: String,
    pub duration_ms: i64,
    pub trigger: TriggerType,
    pub created_at: DateTime<Utc>,
}

/// Who a bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    App(String),
}

impl Principal {
    /// Whether this principal may touch the application with this id.
    pub fn can_access(&self, app_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::App(id) => id == app_id,
        }
    }
}
