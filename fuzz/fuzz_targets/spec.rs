//! The JSON body of `POST /v1/conv2d`: parse, build the layers, plan the stack, check limits.
//! Any outcome but a panic is fine; an error must be a 4xx.
#![no_main]

use convd::http::conv::{check_limits, input_array, ConvRequest};
use convd::http::spec::{collect_layers, plan, ParamsJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = convd::config::defaults().limits;
    let r: ConvRequest = match convd::error::parse_json(data, "") {
        Ok(r) => r,
        Err(e) => return assert!(e.status.is_client_error(), "{e:?}"),
    };
    let top = ParamsJson {
        stride: r.stride,
        padding: r.padding,
        dilation: r.dilation,
        groups: r.groups,
        padding_mode: r.padding_mode,
        activation: r.activation,
    };
    let result = input_array(r.input, &limits, "/input").and_then(|input| {
        let layers = collect_layers(r.weight, r.bias, top, r.layers)?;
        let d = input.dim();
        let geoms = plan([d.0, d.1, d.2, d.3], &layers)?;
        check_limits(&limits, &geoms)
    });
    if let Err(e) = result {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
