//! Issue 5 (hardening): metrics, API keys, security headers, request ids in problems,
//! graceful shutdown, cancellation that really frees the CPU, overload.

use std::time::{Duration, Instant};

use convd::config::{ApiKey, Settings};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    expect_problem, expect_small_answer, npy_f32, small_request, spawn_app, spawn_app_with,
    spawn_stoppable_app, TestApp,
};

const KEY: &str = "test-key-0123456789abcdef";

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_count_requests_stages_bytes_and_rejections() {
    let app = spawn_app().await;
    expect_small_answer(app.conv2d(&small_request()).await).await;
    expect_problem(
        app.conv2d(&json!({"input": [[[[1]]]], "weight": "x"}))
            .await,
        422,
    )
    .await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    for needle in [
        r#"convd_http_requests_total{route="/v1/conv2d",method="POST",status="200"} 1"#,
        r#"convd_http_requests_total{route="/v1/conv2d",method="POST",status="422"} 1"#,
        r#"convd_http_request_duration_seconds_count{route="/v1/conv2d"} 2"#,
        r#"convd_stage_duration_seconds_count{stage="queue_wait"}"#,
        r#"convd_stage_duration_seconds_count{stage="parse"} 1"#,
        r#"convd_stage_duration_seconds_count{stage="conv"} 1"#,
        r#"convd_stage_duration_seconds_count{stage="encode"} 1"#,
        r#"convd_rejected_requests_total{reason="invalid",problem="invalid-spec"} 1"#,
        "convd_queue_depth 0",
        "convd_busy_workers 0",
        "convd_workers 2",
        "convd_queue_capacity 32",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let bytes = |name: &str| -> f64 {
        let prefix = format!("{name}{{route=\"/v1/conv2d\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    };
    assert!(bytes("convd_http_request_bytes_total") > 50.0);
    assert!(bytes("convd_http_response_bytes_total") > 100.0);
}

#[tokio::test]
async fn unknown_paths_share_one_metrics_label() {
    let app = spawn_app().await;
    app.get("/a/b/c").await;
    app.get("/x/y").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"convd_http_requests_total{route="unmatched",method="GET",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(!text.contains("/a/b/c"));
}

// ---------------------------------------------------------------- API keys

async fn keyed_app(metrics_require_key: bool) -> TestApp {
    spawn_app_with(move |s: &mut Settings| {
        s.server.api_keys = vec![ApiKey(KEY.into())];
        s.server.metrics_require_key = metrics_require_key;
    })
    .await
}

#[tokio::test]
async fn with_keys_configured_the_api_needs_a_bearer_key() {
    let app = keyed_app(false).await;
    let res = app.conv2d(&small_request()).await;
    assert_eq!(res.headers()["www-authenticate"], r#"Bearer realm="convd""#);
    let body = expect_problem(res, 401).await;
    assert_eq!(body["type"], "urn:convd:problem:unauthorized");
    assert!(body["request_id"].is_string());

    let wrong = app
        .client
        .post(app.url("/v1/conv2d"))
        .bearer_auth("test-key-0123456789abcdeX")
        .json(&small_request())
        .send()
        .await
        .unwrap();
    assert!(wrong.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    expect_problem(wrong, 401).await;

    let ok = app
        .client
        .post(app.url("/v1/conv2d"))
        .bearer_auth(KEY)
        .json(&small_request())
        .send()
        .await
        .unwrap();
    expect_small_answer(ok).await;
    for path in [
        "/v1/limits",
        "/v1/kernels",
        "/openapi.yaml",
        "/no-such-route",
    ] {
        expect_problem(app.get(path).await, 401).await;
    }
}

#[tokio::test]
async fn probes_pages_and_metrics_stay_open_with_keys() {
    let app = keyed_app(false).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    // The playground pages are public: whatever they answer, it is not 401.
    for path in ["/", "/samples/camera.png"] {
        assert_ne!(app.get(path).await.status(), 401, "{path}");
    }
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/conv2d"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn metrics_can_require_a_key_too() {
    let app = keyed_app(true).await;
    expect_problem(app.get("/metrics").await, 401).await;
    let res = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains(r#"reason="unauthorized""#), "{text}");
}

// ---------------------------------------------------------------- headers

#[tokio::test]
async fn api_responses_carry_the_security_headers() {
    let app = spawn_app().await;
    for res in [app.conv2d(&small_request()).await, app.get("/nope").await] {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn every_problem_body_names_its_request_id() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/v1/conv2d"))
        .header("x-request-id", "trace-me-7")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-7");
    let body = expect_problem(res, 400).await;
    assert_eq!(body["request_id"], "trace-me-7");
}

// ---------------------------------------------------------------- shutdown

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let s = spawn_stoppable_app(|_| {}).await;
    let addr = s.app.addr;
    // An in-flight request we control: headers and half the body now, the rest later.
    let body = serde_json::to_vec(&small_request()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/conv2d HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    s.shutdown.send(()).unwrap();
    let t = Instant::now();
    // A connect racing the listener's close may be reset rather than refused; after the
    // close every connect is refused.
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => {
                assert!(
                    t.elapsed() < Duration::from_secs(3),
                    "still accepting: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(reqwest::get(s.app.url("/healthz")).await.is_err());
    assert!(
        !s.server.is_finished(),
        "the server must wait for the request"
    );

    conn.write_all(rest).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""data":[25.0,31.0,43.0,49.0]"#), "{text}");
    tokio::time::timeout(Duration::from_secs(5), s.server)
        .await
        .expect("server stops once drained")
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------- cancellation

/// A job of ~1.3·10¹¹ multiply-accumulates: 8 layers of 63×63 kernels, "same" padding, on
/// one 2048×2048 map. Many seconds on one thread however fast the kernel, so if it were not
/// stopped, the slot would stay taken long after the assertions' time limits.
fn huge_job() -> reqwest::multipart::Form {
    let side = 2048;
    let input = npy_f32(&[1, 1, side, side], &vec![0.5; side * side]);
    let k = vec![vec![1.0 / 3969.0; 63]; 63];
    let layers: Vec<Value> = (0..8)
        .map(|_| json!({"weight": [[k]], "padding": "same"}))
        .collect();
    reqwest::multipart::Form::new()
        .part(
            "input",
            reqwest::multipart::Part::bytes(input).file_name("x.npy"),
        )
        .text("spec", json!({ "layers": layers }).to_string())
}

fn one_slot(deadline_ms: u64, queue_depth: usize) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.compute.threads = 1;
        s.compute.max_running_jobs = 1;
        s.compute.queue_depth = queue_depth;
        s.compute.deadline_ms = deadline_ms;
        s.limits.max_macs = 10u64.pow(12);
    }
}

async fn post_huge(app: &TestApp) -> reqwest::Response {
    app.client
        .post(app.url("/v1/conv2d"))
        .multipart(huge_job())
        .send()
        .await
        .unwrap()
}

/// The job holding the only slot must stop soon after its cancellation: a cancelled job
/// keeps its slot until its compute loop notices, and a loop that never looked would keep
/// it for the many seconds the job needs.
async fn slot_released(app: &TestApp) {
    let t = Instant::now();
    loop {
        let b: Value = app.get("/readyz").await.json().await.unwrap();
        if b["admitted_jobs"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the job kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("slot released after {:?}", t.elapsed());
}

/// A small request must be answered quickly: only possible if the slot was released.
async fn slot_is_free(app: &TestApp) {
    let t = Instant::now();
    expect_small_answer(app.conv2d(&small_request()).await).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "small request took {:?}: the cancelled job kept the CPU",
        t.elapsed()
    );
}

#[tokio::test]
async fn past_the_deadline_the_job_stops_and_the_cpu_is_free_again() {
    let app = spawn_app_with(one_slot(300, 8)).await;
    let t = Instant::now();
    let res = post_huge(&app).await;
    let body = expect_problem(res, 504).await;
    assert_eq!(body["type"], "urn:convd:problem:deadline-exceeded");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    slot_released(&app).await;
    slot_is_free(&app).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(r#"reason="deadline""#), "{text}");
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_slot() {
    let app = spawn_app_with(one_slot(60_000, 8)).await;
    let gone = tokio::time::timeout(Duration::from_millis(1500), post_huge(&app)).await;
    assert!(gone.is_err(), "the huge job finished within 1.5 s?");
    slot_released(&app).await;
    slot_is_free(&app).await;
}

#[tokio::test]
async fn a_full_pool_answers_503_with_retry_after_at_once() {
    let app = spawn_app_with(one_slot(3000, 0)).await;
    let huge = {
        let app = TestApp {
            addr: app.addr,
            client: app.client.clone(),
        };
        tokio::spawn(async move { post_huge(&app).await.status() })
    };
    // Wait until the huge job holds the only slot (the upload comes first).
    let t = Instant::now();
    loop {
        let b: Value = app.get("/readyz").await.json().await.unwrap();
        if b["admitted_jobs"] == 1 {
            assert_eq!(b["queue_full"], true);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "job never admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let res = app.conv2d(&small_request()).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(res.headers()["retry-after"], "1");
    let body = expect_problem(res, 503).await;
    assert_eq!(body["type"], "urn:convd:problem:overloaded");
    assert_eq!(huge.await.unwrap(), 504);
    // With no queue, the slot is offered again only once the job has really stopped.
    slot_released(&app).await;
    slot_is_free(&app).await;
}
