//! `GET /todos`: paging in id order, the default page, bad limits and cursors.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;

use crane::adapters::local::SqliteStore;
use crane::domain::TodoChange;
use crane::ports::TodoStore;

use crate::harness::*;
use crate::schema::*;
use crane_tests::api::{RunPage, TodoPage};

/// Add `n` todos to the tenant of the API, titled `todo 1` .. `todo n`.
async fn seed_todos(todos: &dyn TodoStore, n: usize) {
    for i in 1..=n {
        let title = format!("todo {i}");
        todos
            .apply(
                "default",
                &format!("seed/{i}"),
                &TodoChange::Add { title },
                Utc::now(),
            )
            .await
            .expect("seeded");
    }
}

#[tokio::test]
async fn given_todos_when_get_todos_pages_through_them_then_each_comes_once_in_id_order() {
    let doc = doc();
    for sqlite in [false, true] {
        let (_disk, router) = if sqlite {
            let disk = sqlite_harness();
            let seeder = SqliteStore::open(disk.dir.join("crane.db")).expect("sqlite opens");
            seed_todos(&seeder, 7).await;
            let router = disk.router.clone();
            (Some(disk), router)
        } else {
            let h = harness();
            seed_todos(&*h.app.todos, 7).await;
            (None, h.router)
        };
        let mut seen = Vec::new();
        let mut uri = "/todos?limit=3".to_owned();
        let mut pages = 0;
        loop {
            let reply = send(&router, get(&uri)).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
            assert_documented(&doc, "get", "/todos", &reply);
            pages += 1;
            let page: TodoPage = reply.json();
            assert!(
                page.todos.len() <= 3,
                "sqlite={sqlite}: a page over the limit"
            );
            seen.extend(page.todos.iter().map(|t| t.id));
            match page.next_cursor.as_deref() {
                Some(c) => uri = format!("/todos?limit=3&cursor={}", encode(c)),
                None => break,
            }
            assert!(pages < 10, "sqlite={sqlite}: paging never ends");
        }
        assert_eq!(seen, (1..=7).collect::<Vec<_>>(), "sqlite={sqlite}");
        assert_eq!(pages, 3, "sqlite={sqlite}: 3 + 3 + 1, no empty last page");
    }
}

#[tokio::test]
async fn given_more_than_100_todos_when_get_todos_has_no_limit_then_the_first_100_and_a_cursor() {
    let h = harness();
    seed_todos(&*h.app.todos, 120).await;
    let first = h.send(get("/todos")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let first: TodoPage = first.json();
    assert_eq!(first.todos.len(), 100);
    let cursor = first.next_cursor.expect("a next page");
    let rest: TodoPage = h
        .send(get(&format!("/todos?limit=500&cursor={}", encode(&cursor))))
        .await
        .json();
    assert_eq!(rest.todos.len(), 20);
    assert_eq!(rest.todos[0].id, 101);
    assert_eq!(rest.next_cursor, None);
}

#[tokio::test]
async fn given_bad_limits_or_cursors_when_listing_todos_then_4xx() {
    let doc = doc();
    let run_cursor = {
        // A cursor of another listing (runs on SQLite: base64url JSON too) is not a todo
        // cursor.
        let h = sqlite_harness();
        for _ in 0..2 {
            send(&h.router, post_json("/runs", &json!({"prompt": PROMPT}))).await;
        }
        let page = send(&h.router, get("/runs?limit=1")).await;
        page.json::<RunPage>().next_cursor.expect("runs cursor")
    };
    for sqlite in [false, true] {
        let (_disk, router) = if sqlite {
            let disk = sqlite_harness();
            let router = disk.router.clone();
            (Some(disk), router)
        } else {
            (None, harness().router)
        };
        let bad = StatusCode::BAD_REQUEST;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        for (query, status, code) in [
            ("limit=0".to_owned(), unprocessable, "invalid_limit"),
            ("limit=501".to_owned(), unprocessable, "invalid_limit"),
            ("limit=x".to_owned(), bad, "invalid_limit"),
            ("limit=-1".to_owned(), bad, "invalid_limit"),
            ("limit=".to_owned(), bad, "invalid_limit"),
            ("limit=1.5".to_owned(), bad, "invalid_limit"),
            ("cursor=bogus".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=e30".to_owned(), unprocessable, "invalid_cursor"),
            ("cursor=%FF".to_owned(), unprocessable, "invalid_cursor"),
            (
                format!("cursor={}", encode(&run_cursor)),
                unprocessable,
                "invalid_cursor",
            ),
        ] {
            let uri = format!("/todos?{query}");
            let reply = send(&router, get(&uri)).await;
            reply.assert_error(status, code, &format!("sqlite={sqlite} {uri}"));
            assert_documented(&doc, "get", "/todos", &reply);
        }
        for query in ["limit=1", "limit=500", "limit=%20100%20"] {
            let reply = send(&router, get(&format!("/todos?{query}"))).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        }
    }
}
