//! `TestApp`: a real convd on an ephemeral port, and a client with one method per endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;

use convd::config::Settings;
use serde_json::Value;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

/// Starts convd with the default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts convd with settings adjusted by `tweak`.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    start(tweak, std::future::pending()).await.0
}

/// Binds 127.0.0.1:0 and runs convd with test settings (adjusted by `tweak`) until
/// `shutdown` resolves.
async fn start(
    tweak: impl FnOnce(&mut Settings),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<std::io::Result<()>>) {
    if std::env::var_os("TEST_LOG").is_some() {
        convd::telemetry::init(&convd::config::defaults().server);
    }
    let mut settings = convd::config::defaults();
    settings.server.bind = "127.0.0.1:0".into();
    settings.compute.threads = 2;
    tweak(&mut settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(convd::run(listener, settings, shutdown));
    let app = TestApp {
        addr,
        client: reqwest::Client::new(),
    };
    (app, server)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn conv2d(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/conv2d"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn conv2d_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/conv2d"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn conv2d_shape(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/conv2d/shape"))
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Asserts an RFC 9457 problem with `status` and returns its body.
pub async fn expect_problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "unexpected status");
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:convd:problem:"));
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

/// Flattens a nested JSON array of numbers to f32.
pub fn flatten(v: &Value, out: &mut Vec<f32>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
        other => panic!("not a number: {other}"),
    }
}

/// Reads a float32 little-endian C-order .npy v1 file (test-side, independent of convd).
pub fn read_npy_f32(bytes: &[u8]) -> (Vec<usize>, Vec<f32>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

/// A running server with a shutdown trigger and the handle of its `convd::run` task.
pub struct StoppableApp {
    pub app: TestApp,
    pub shutdown: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts convd (settings adjusted by `tweak`) that shuts down when `shutdown` is sent.
pub async fn spawn_stoppable_app(tweak: impl FnOnce(&mut Settings)) -> StoppableApp {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (app, server) = start(tweak, async {
        let _ = rx.await;
    })
    .await;
    StoppableApp {
        app,
        shutdown: tx,
        server,
    }
}

/// A float32 little-endian C-order `.npy` v1 file (test-side, independent of convd).
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_str = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The textbook request: a 3×3 input and a 2×2 kernel; the answer is [25, 31, 43, 49].
pub fn small_request() -> Value {
    serde_json::json!({
        "input": [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]],
        "weight": [[[[0, 1], [2, 3]]]],
    })
}

/// Asserts that `res` is the correct answer to [`small_request`].
pub async fn expect_small_answer(res: reqwest::Response) {
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"], serde_json::json!([25.0, 31.0, 43.0, 49.0]));
}

/// `POST /v1/convolve` with one image part (`x.png`) and the spec.
pub async fn convolve(app: &TestApp, image: Vec<u8>, spec: &Value) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("spec", spec.to_string())
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("x.png"),
        );
    app.client
        .post(app.url("/v1/convolve"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// A PNG chunk: length, type, data, CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out
}

/// A PNG whose IHDR claims `width×height` 8-bit samples of colour type `color` (0 gray,
/// 2 RGB), with valid CRCs and a tiny (wrong-sized) IDAT: a decoder that trusts the header
/// before checking limits explodes, and within the limits it decodes as corrupt.
pub fn png_claiming(width: u32, height: u32, color: u8) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}
