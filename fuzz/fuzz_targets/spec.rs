//! The JSON body of `POST /v1/conv2d`: parse, build the layers, plan the stack, check limits.
//! Any outcome but a panic is fine; an error must be a 4xx.
#![no_main]

use convd::http::conv::{check_limits, ConvRequest};
use convd::http::spec::plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = convd::config::defaults().limits;
    let r: ConvRequest = match convd::error::parse_json(data, "") {
        Ok(r) => r,
        Err(e) => return assert!(e.status.is_client_error(), "{e:?}"),
    };
    let result = r.into_job(&limits).and_then(|job| {
        let d = job.input.dim();
        let geoms = plan([d.0, d.1, d.2, d.3], &job.layers)?;
        check_limits(&limits, &geoms)
    });
    if let Err(e) = result {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
