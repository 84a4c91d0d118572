//! Multipart bodies through the real router (`tower::ServiceExt::oneshot`): the first byte
//! picks `/v1/conv2d` or `/v1/convolve`, the rest is the body under a fixed boundary
//! (`fuzz`). Whatever the parts hold, the answer is never a 500.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Server {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut settings = convd::config::defaults();
        settings.compute.threads = 1;
        settings.compute.deadline_ms = 10_000;
        let l = &mut settings.limits;
        l.max_tensor_elements = 1 << 14;
        l.max_output_elements = 1 << 16;
        l.max_macs = 1 << 22;
        l.max_image_pixels = 1 << 16;
        l.max_image_side = 512;
        l.max_images = 4;
        let app = rt.block_on(async {
            convd::http::app(convd::http::AppState::new(&settings).unwrap())
        });
        Server { rt, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((route, body)) = data.split_first() else {
        return;
    };
    let path = if route & 1 == 0 { "/v1/conv2d" } else { "/v1/convolve" };
    let s = server();
    let req = Request::post(path)
        .header("content-type", "multipart/form-data; boundary=fuzz")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let res = s.rt.block_on(s.app.clone().oneshot(req)).unwrap();
    assert_ne!(res.status().as_u16(), 500, "{path}: {:?}", res);
});
