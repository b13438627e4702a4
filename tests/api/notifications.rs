//! The inbox API: paging, filters, read state, erase, isolation.

use crate::helpers::{assert_error, new_notification, TestApp};
use notifyhub::auth::Role;
use notifyhub::domain::NotificationType;
use serde_json::Value;
use uuid::Uuid;

async fn seed(app: &TestApp, user: Uuid, n: usize) -> Vec<notifyhub::domain::Notification> {
    let items = (0..n)
        .map(|i| {
            let kind = if i % 2 == 0 { NotificationType::SignalGenerated } else { NotificationType::RiskWarning };
            new_notification(user, kind, &format!("n{}", i + 1))
        })
        .collect();
    app.store(items).await
}

async fn page(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app.get(&format!("/api/v1/notifications{query}"), token).await;
    assert_eq!(res.status(), 200, "{query}");
    assert!(res.headers().contains_key("x-request-id"));
    res.json().await.unwrap()
}

crate::on_both_backends! {
    async fn empty_inbox_has_an_empty_page(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        let body = page(&app, &token, "").await;
        assert_eq!(body["data"], serde_json::json!([]));
        assert_eq!(body["pagination"], serde_json::json!({
            "returned_count": 0, "total_count": 0, "limit": 50, "offset": 0, "has_more": false
        }));
    }

    async fn pages_are_newest_first_with_correct_edges(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        let stored = seed(&app, user, 5).await;
        assert_eq!(stored.iter().map(|n| n.sequence_number).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);

        let first = page(&app, &token, "?limit=2").await;
        let titles: Vec<&str> = first["data"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["n5", "n4"]);
        assert_eq!(first["pagination"]["has_more"], true);
        assert_eq!(first["pagination"]["total_count"], 5);
        assert_eq!(first["pagination"]["returned_count"], 2);

        let last = page(&app, &token, "?limit=2&offset=4").await;
        assert_eq!(last["data"][0]["title"], "n1");
        assert_eq!(last["pagination"]["has_more"], false);

        let exact = page(&app, &token, "?limit=5").await;
        assert_eq!(exact["pagination"]["has_more"], false);
        assert_eq!(exact["pagination"]["returned_count"], 5);

        let beyond = page(&app, &token, "?offset=10").await;
        assert_eq!(beyond["pagination"]["returned_count"], 0);
        assert_eq!(beyond["pagination"]["total_count"], 5);

        let max = page(&app, &token, "?limit=100").await;
        assert_eq!(max["pagination"]["limit"], 100);
        let min = page(&app, &token, "?limit=1").await;
        assert_eq!(min["data"].as_array().unwrap().len(), 1);

        // The stored notification comes back exactly as stored.
        let n = &exact["data"][4];
        let original = serde_json::to_value(&stored[0]).unwrap();
        assert_eq!(n, &original);
    }

    async fn bad_query_parameters_are_refused(app) {
        let token = app.token(Uuid::new_v4(), Role::User);
        for (query, field) in [
            ("?limit=0", "limit"), ("?limit=101", "limit"), ("?limit=ten", "limit"),
            ("?offset=-1", "offset"), ("?unread_only=maybe", "unread_only"),
            ("?notification_type=weather", "notification_type"),
            ("?limit=5&limit=6", "limit"), ("?unread_only=true&unread_only=false", "unread_only"),
        ] {
            let res = app.get(&format!("/api/v1/notifications{query}"), &token).await;
            let body = assert_error(res, 400, "BAD_REQUEST").await;
            assert_eq!(body["error"]["details"]["field"], field, "{query}");
        }
    }

    async fn filters_by_type_and_unread(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        let stored = seed(&app, user, 4).await;
        let signals = page(&app, &token, "?notification_type=signal_generated").await;
        assert_eq!(signals["pagination"]["total_count"], 2);
        assert!(signals["data"].as_array().unwrap().iter().all(|n| n["notification_type"] == "signal_generated"));

        let res = app.patch(&format!("/api/v1/notifications/{}/read", stored[0].id), &token).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"success": true, "notification_id": stored[0].id}));

        let unread = page(&app, &token, "?unread_only=true").await;
        assert_eq!(unread["pagination"]["total_count"], 3);
        assert!(unread["data"].as_array().unwrap().iter().all(|n| n["read"] == false));
        assert_eq!(page(&app, &token, "?unread_only=TRUE").await, unread, "any case");
        let unread_signals = page(&app, &token, "?unread_only=true&notification_type=signal_generated").await;
        assert_eq!(unread_signals["pagination"]["total_count"], 1);

        // Marking read twice is fine.
        let again = app.patch(&format!("/api/v1/notifications/{}/read", stored[0].id), &token).await;
        assert_eq!(again.status(), 200);
    }

    async fn an_unread_page_finds_old_unread_ones_behind_newer_read_ones(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        let stored = seed(&app, user, 5).await;
        for n in &stored[2..] {
            app.patch(&format!("/api/v1/notifications/{}/read", n.id), &token).await;
        }
        let unread = page(&app, &token, "?unread_only=true").await;
        assert_eq!(unread["pagination"]["total_count"], 2);
        let titles: Vec<&str> = unread["data"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap()).collect();
        assert_eq!(titles, ["n2", "n1"], "newest first");
        let second = page(&app, &token, "?unread_only=true&limit=1&offset=1").await;
        assert_eq!(second["data"][0]["title"], "n1");
        assert_eq!(second["pagination"]["has_more"], false);
        assert_eq!(second["pagination"]["total_count"], 2);
    }

    async fn read_all_updates_every_unread_in_one_call(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        let stored = seed(&app, user, 3).await;
        app.patch(&format!("/api/v1/notifications/{}/read", stored[1].id), &token).await;
        let res = app.post("/api/v1/notifications/read-all", &token, &serde_json::json!({})).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"success": true, "updated_count": 2}));
        let unread = page(&app, &token, "?unread_only=true").await;
        assert_eq!(unread["pagination"]["total_count"], 0);
        let res = app.post("/api/v1/notifications/read-all", &token, &serde_json::json!({})).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["updated_count"], 0);
    }

    async fn users_never_see_or_change_each_others_notifications(app) {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (ta, tb) = (app.token(alice, Role::User), app.token(bob, Role::User));
        let alices = seed(&app, alice, 2).await;
        seed(&app, bob, 1).await;
        let bob_page = page(&app, &tb, "").await;
        assert_eq!(bob_page["pagination"]["total_count"], 1);
        assert!(bob_page["data"].as_array().unwrap().iter().all(|n| n["user_id"] == bob.to_string()));

        let res = app.patch(&format!("/api/v1/notifications/{}/read", alices[0].id), &tb).await;
        assert_error(res, 404, "NOT_FOUND").await;
        let still_unread = page(&app, &ta, "?unread_only=true").await;
        assert_eq!(still_unread["pagination"]["total_count"], 2);

        let res = app.patch(&format!("/api/v1/notifications/{}/read", Uuid::new_v4()), &ta).await;
        assert_error(res, 404, "NOT_FOUND").await;
        let res = app.patch("/api/v1/notifications/not-a-uuid/read", &ta).await;
        assert_error(res, 404, "NOT_FOUND").await;

        // Bob erasing his history leaves Alice's alone.
        let res = app.delete("/api/v1/notifications", &tb).await;
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"success": true, "deleted_count": 1}));
        assert_eq!(page(&app, &ta, "").await["pagination"]["total_count"], 2);
        assert_eq!(page(&app, &tb, "").await["pagination"]["total_count"], 0);
    }

    async fn erased_history_never_reuses_sequence_numbers(app) {
        let user = Uuid::new_v4();
        let token = app.token(user, Role::User);
        seed(&app, user, 3).await;
        let res = app.delete("/api/v1/notifications", &token).await;
        assert_eq!(res.status(), 200);
        let next = seed(&app, user, 1).await;
        assert_eq!(next[0].sequence_number, 4);
    }
}
