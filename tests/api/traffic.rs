//! Hostile traffic: bodies under the byte budget, the minimum body rate, header and idle
//! timeouts, the connection cap. Raw TCP where a client library would be too polite;
//! small limits so that each test runs in seconds.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::helpers::{spawn_app_with, TestApp};

/// Opens a connection and sends `head` (and nothing more).
async fn send_head(app: &TestApp, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s
}

fn post_head(path: &str, len: u64) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}

/// Everything the server sends until it closes the connection (or `wait` passes: then
/// None).
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + wait;
    loop {
        match timeout(
            end.saturating_duration_since(Instant::now()),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_from_its_content_length_unread() {
    let app = spawn_app_with(|s| s.limits.max_body_bytes = 1000).await;
    let mut s = send_head(&app, &post_head("/v1/conv2d", 1 << 30)).await;
    let res = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed without waiting for the body");
    assert_eq!(status_of(&res), Some(413), "{res}");
    assert!(res.contains("application/problem+json"), "{res}");
    assert!(
        res.to_ascii_lowercase().contains("connection: close"),
        "{res}"
    );
}

#[tokio::test]
async fn a_full_budget_turns_new_bodies_away_with_503_until_the_held_body_is_dropped() {
    let app = spawn_app_with(|s| {
        s.limits.max_body_bytes = 1000;
        s.limits.max_inflight_body_bytes = 1000;
    })
    .await;
    // A holds 800 bytes of the budget: it announced them and sends a few.
    let mut a = send_head(&app, &post_head("/v1/conv2d", 800)).await;
    a.write_all(b"{\"input\":").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B's 300 do not fit: 503 with Retry-After, before B sends any body byte.
    let mut b = send_head(&app, &post_head("/v1/conv2d", 300)).await;
    let res = read_until_closed(&mut b, Duration::from_secs(5))
        .await
        .expect("answered at once");
    assert_eq!(status_of(&res), Some(503), "{res}");
    assert!(res.to_ascii_lowercase().contains("retry-after: "), "{res}");
    assert!(res.contains("bodies-in-flight"), "{res}");
    // A chunked body reserves as it grows, and is stopped the same way.
    let mut c = send_head(
        &app,
        "POST /v1/conv2d HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    c.write_all(format!("12c\r\n{}\r\n", " ".repeat(300)).as_bytes())
        .await
        .unwrap();
    let res = read_until_closed(&mut c, Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(status_of(&res), Some(503), "{res}");
    // A goes away: its bytes are given back, and a body of 300 is read again (422: it is
    // not a valid request, but it was read and parsed).
    drop(a);
    let mut status = 0;
    for _ in 0..50 {
        let r = app
            .client
            .post(app.url("/v1/conv2d"))
            .header("content-type", "application/json")
            .body(vec![b' '; 300])
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        (400..500).contains(&status),
        "a body that fits is read once A's bytes are back: {status}"
    );
    let limits: serde_json::Value = app.get("/v1/limits").await.json().await.unwrap();
    assert_eq!(limits["max_inflight_body_bytes"], 1000);
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_its_connection_is_closed() {
    let app = spawn_app_with(|s| {
        s.server.body_read_timeout_secs = 1;
        s.server.body_min_bytes_per_sec = 1000;
    })
    .await;
    let started = Instant::now();
    let mut s = send_head(&app, &post_head("/v1/conv2d", 100)).await;
    let (mut rd, mut wr) = s.split();
    let trickle = async {
        for _ in 0..100 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    let res = tokio::select! {
        r = read => r,
        () = trickle => panic!("the server let a trickle run for 30 s"),
    };
    assert_eq!(status_of(&res), Some(408), "{res}");
    assert!(res.contains("body-too-slow"), "{res}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_without_a_complete_request_head_are_closed() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_secs = 1).await;
    // Nothing at all, and half a head.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = send_head(&app, "GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
    for s in [&mut silent, &mut partial] {
        let res = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(res.is_some(), "still open after 5 s");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_timeout() {
    let app = spawn_app_with(|s| s.server.keepalive_idle_secs = 1).await;
    let mut s = send_head(&app, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let started = Instant::now();
    let res = read_until_closed(&mut s, Duration::from_secs(6))
        .await
        .expect("closed once idle");
    assert_eq!(status_of(&res), Some(200), "{res}");
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?}, before the timeout"
    );
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_are_kept() {
    let app = spawn_app_with(|s| {
        s.server.max_connections = 3;
        s.server.body_read_timeout_secs = 30;
    })
    .await;
    // Three idle connections fill the cap; a health probe still gets through, by closing
    // the one idle longest.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let closed = read_until_closed(&mut idle[0], Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the oldest idle connection made room");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Three connections with a request in flight (bodies still coming) are all kept; a
    // fourth connection is refused at once, and they still get their answers.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let head = post_head("/v1/conv2d", 10).replace("host: x", "host: x\r\nconnection: close");
        let mut s = send_head(&app, &head).await;
        s.write_all(b"{").await.unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let refused = read_until_closed(&mut extra, Duration::from_secs(3))
        .await
        .expect("refused at once");
    assert!(
        refused.is_empty(),
        "no answer on a refused connection: {refused}"
    );
    for s in &mut busy {
        s.write_all(b"\"a\": 1}  ").await.unwrap();
        let res = read_until_closed(s, Duration::from_secs(5)).await;
        let res = res.unwrap_or_default();
        assert!(
            matches!(status_of(&res), Some(400 | 422)),
            "the busy connection got its answer: {res}"
        );
    }
}
