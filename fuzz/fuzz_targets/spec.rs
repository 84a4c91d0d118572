//! The JSON body of `POST /v1/conv2d` through the spec module's one entry point: parse
//! (`spec::tensor::from_json`), then plan with the budgets (`spec::plan`). Any outcome but a
//! panic is fine; a refusal must be a 4xx.
#![no_main]

use convd::error::ApiError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = convd::config::defaults().limits;
    let result = convd::spec::tensor::from_json(data, &limits).and_then(|(input, stack)| {
        let (n, c, h, w) = input.dim();
        convd::spec::plan([n, c, h, w], stack, &limits)
    });
    if let Err(e) = result {
        let e = ApiError::from(e);
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
