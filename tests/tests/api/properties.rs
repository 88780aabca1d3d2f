//! Properties: no input gets a 5xx or a non-JSON answer.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::json;

use crate::harness::*;

fn runner(cases: u32) -> (tokio::runtime::Runtime, TestRunner) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    (rt, runner)
}

fn create_bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        any::<String>().prop_map(String::into_bytes),
        "[{}\\[\\]\":, prompt0-9.a-z\\\\nulltrue-]{0,80}".prop_map(String::into_bytes),
        any::<String>().prop_map(|p| json!({ "prompt": p }).to_string().into_bytes()),
        (any::<String>(), any::<String>())
            .prop_map(|(k, v)| json!({ k: v }).to_string().into_bytes()),
    ]
}

#[test]
fn given_arbitrary_bytes_when_posted_as_a_run_then_a_json_answer_below_500() {
    let (rt, mut runner) = runner(256);
    let h = harness();
    let result = runner.run(&create_bodies(), |body| {
        let reply = rt.block_on(h.send(post("/runs", body)));
        prop_assert!(reply.status.as_u16() < 500, "{}", reply.status);
        prop_assert!(reply.is_json(), "not JSON: {:?}", reply.raw);
        prop_assert!(
            reply.status == StatusCode::CREATED || !reply.code().is_empty(),
            "{}: {}",
            reply.status,
            reply.body
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn given_arbitrary_ids_and_queries_when_read_then_a_json_answer_below_500() {
    let (rt, mut runner) = runner(256);
    let h = harness();
    let strategy = (any::<String>(), any::<String>(), 0..6_usize);
    let result = runner.run(&strategy, |(id, value, which)| {
        let (id, value) = (encode(&id), encode(&value));
        let uri = match which {
            0 => format!("/runs/{id}?at={value}"),
            1 => format!("/runs/{id}/events"),
            2 => format!("/runs?limit={value}&status={id}"),
            3 => format!("/runs?cursor={value}"),
            4 => format!("/runs/{id}"),
            // `/` is the web console's page, not an API route.
            _ if id.is_empty() => "/nope".to_owned(),
            _ => format!("/{id}"),
        };
        let method = if which == 1 && id.len() % 2 == 0 {
            Method::POST
        } else {
            Method::GET
        };
        let reply = rt.block_on(h.send(request(method, &uri, Body::empty())));
        prop_assert!(reply.status.as_u16() < 500, "{uri}: {}", reply.status);
        prop_assert!(reply.is_json(), "{uri}: not JSON");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
