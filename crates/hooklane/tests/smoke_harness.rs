mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_reaches_receiver_signed() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("smoke").await;
    let (_, secret) = server.create_endpoint(&app, json!({ "url": format!("{}/hook", rx.url) })).await;
    let msg = server.send_message(&app, "user.created", json!({"a": 1})).await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), msg);
    assert!(signature_valid(&secret, &got[0]));
}
