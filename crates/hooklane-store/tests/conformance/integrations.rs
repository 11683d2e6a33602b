//! Conformance case of integrations: created, found and listed within their application
//! only, updated, given a key that is an application token, rotated (the old key stops
//! working in the same write), and deleted with their key or with their application.

use hooklane_core::model::{Integration, Principal};
use hooklane_store::{DynStore, StoreError};

use super::*;

fn new_integration(app_id: &str, name: &str, at: DateTime<Utc>) -> Integration {
    Integration {
        id: new_id(ids::INTEGRATION),
        app_id: app_id.to_string(),
        name: name.to_string(),
        feature_flags: vec!["beta".to_string()],
        created_at: at,
        updated_at: at,
    }
}

/// Distinct 64-hex-digit token hashes.
fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

pub async fn integrations_keep_one_key_each_within_their_application(store: &DynStore) {
    let t = now_ms();
    let (a, b) = (setup_app(store, "A").await, setup_app(store, "B").await);
    let zapier = new_integration(&a.id, "Zapier", t);
    let make = new_integration(&a.id, "Make", t);
    let theirs = new_integration(&b.id, "Theirs", t);
    for i in [&zapier, &make, &theirs] {
        store.create_integration(i.clone()).await.expect("create integration");
    }
    assert!(matches!(store.create_integration(zapier.clone()).await, Err(StoreError::Conflict(_))), "same id twice");
    let orphan = new_integration("app_missing", "Orphan", t);
    assert!(matches!(store.create_integration(orphan.clone()).await, Err(StoreError::NotFound)), "no application");
    assert_eq!(store.get_integration("app_missing", &orphan.id).await.unwrap(), None);

    // Found within their application only.
    assert_eq!(store.get_integration(&a.id, &zapier.id).await.unwrap(), Some(zapier.clone()));
    assert_eq!(store.get_integration(&b.id, &zapier.id).await.unwrap(), None, "another application's");
    for descending in [false, true] {
        let listed = all_pages(
            1,
            descending,
            |i: &Integration| i.id.clone(),
            |page| {
                let app = a.id.clone();
                async move { store.list_integrations(&app, &page).await }
            },
        )
        .await;
        let mut want = vec![zapier.clone(), make.clone()];
        want.sort_by(|x, y| x.id.cmp(&y.id));
        if descending {
            want.reverse();
        }
        assert_eq!(listed, want);
    }

    // Updated: the name and flags; another application's id is not found.
    let renamed =
        Integration { name: "Zapier (EU)".into(), feature_flags: vec![], updated_at: t + secs(1), ..zapier.clone() };
    store.update_integration(renamed.clone()).await.expect("update integration");
    assert_eq!(store.get_integration(&a.id, &zapier.id).await.unwrap(), Some(renamed.clone()));
    let foreign = Integration { app_id: b.id.clone(), ..renamed.clone() };
    assert!(matches!(store.update_integration(foreign).await, Err(StoreError::NotFound)));

    // A key is a token of the application; rotating replaces it.
    store.set_integration_key(&a.id, &zapier.id, hash(1), t + secs(2)).await.expect("first key");
    assert_eq!(store.find_token(&hash(1), t + secs(3)).await.unwrap(), Some(Principal::app(a.id.clone())));
    store.set_integration_key(&a.id, &zapier.id, hash(2), t + secs(4)).await.expect("rotated key");
    assert_eq!(store.find_token(&hash(1), t + secs(5)).await.unwrap(), None, "the old key stops working");
    assert_eq!(store.find_token(&hash(2), t + hours(24 * 400)).await.unwrap(), Some(Principal::app(a.id.clone())));
    let got = store.get_integration(&a.id, &zapier.id).await.unwrap().expect("integration");
    assert_eq!(got.updated_at, t + secs(4), "rotating moves updated_at");
    assert!(matches!(store.set_integration_key(&b.id, &zapier.id, hash(3), t).await, Err(StoreError::NotFound)));
    assert_eq!(store.find_token(&hash(3), t).await.unwrap(), None, "no key made for a missing integration");
    // Keys of two integrations are kept apart; a key has its integration's feature flags,
    // and follows them when they change.
    store.set_integration_key(&a.id, &make.id, hash(4), t + secs(4)).await.expect("key of another");
    assert!(store.find_token(&hash(2), t + secs(5)).await.unwrap().is_some());
    let flagged = |flags: &[&str]| Principal::App {
        app_id: a.id.clone(),
        feature_flags: flags.iter().map(|f| f.to_string()).collect(),
        capabilities: None,
    };
    assert_eq!(store.find_token(&hash(4), t + secs(5)).await.unwrap(), Some(flagged(&["beta"])));
    let more = Integration { feature_flags: vec!["beta".into(), "gamma".into()], ..make.clone() };
    store.update_integration(more).await.expect("update flags");
    assert_eq!(store.find_token(&hash(4), t + secs(5)).await.unwrap(), Some(flagged(&["beta", "gamma"])));
    assert_eq!(store.find_token(&hash(2), t + secs(5)).await.unwrap(), Some(flagged(&[])), "not the other key");

    // Deleted with its key; another application cannot delete it.
    assert!(matches!(store.delete_integration(&b.id, &zapier.id).await, Err(StoreError::NotFound)));
    store.delete_integration(&a.id, &zapier.id).await.expect("delete integration");
    assert_eq!(store.get_integration(&a.id, &zapier.id).await.unwrap(), None);
    assert_eq!(store.find_token(&hash(2), t + secs(5)).await.unwrap(), None, "its key goes with it");
    assert!(store.find_token(&hash(4), t + secs(5)).await.unwrap().is_some(), "the other's stays");
    assert!(matches!(store.delete_integration(&a.id, &zapier.id).await, Err(StoreError::NotFound)));

    // Expiring the application's tokens expires integration keys too.
    store.expire_app_tokens(&a.id, t + secs(6), None).await.expect("expire tokens");
    assert_eq!(store.find_token(&hash(4), t + secs(7)).await.unwrap(), None);

    // Deleted with their application.
    store.set_integration_key(&b.id, &theirs.id, hash(5), t).await.expect("key");
    store.delete_app(&b.id).await.expect("delete application");
    assert_eq!(store.get_integration(&b.id, &theirs.id).await.unwrap(), None);
    assert_eq!(store.find_token(&hash(5), t + secs(1)).await.unwrap(), None);
}
