//! The spec module without a server: each API's words, the one resolver, the plan and its
//! budgets, and the one conversion into a problem.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::config::Limits;
use crate::error::{ApiError, ProblemKind};

fn limits() -> Limits {
    crate::config::defaults().limits
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The pointer and detail of a refusal.
fn refusal(e: &SpecError) -> (&str, String) {
    (e.pointer().unwrap_or("?"), e.to_string())
}

fn tensor_plan(body: Value) -> Result<Plan, SpecError> {
    let limits = limits();
    let (input, stack) = tensor::from_json(&bytes(&body), &limits)?;
    let (n, c, h, w) = input.dim();
    plan([n, c, h, w], stack, &limits)
}

fn image_plan(spec: Value, c_in: usize, limits: &Limits) -> Result<Plan, SpecError> {
    let spec = image::ImageSpec::from_json(&bytes(&spec))?;
    let stack = spec.stack(c_in, limits.max_kernel_side as usize)?;
    plan([1, c_in, 8, 8], stack, limits)
}

const ONE: [[[[f32; 1]; 1]; 1]; 1] = [[[[1.0]]]];

#[test]
fn a_top_level_layer_and_a_stack_plan_to_the_same_geometry() {
    let input = json!([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]);
    let weight = json!([[[[1, 0], [0, 1]]]]);
    let top = tensor_plan(json!({"input": input, "weight": weight, "padding": 1})).unwrap();
    let stack =
        tensor_plan(json!({"input": input, "layers": [{"weight": weight, "padding": 1}]})).unwrap();
    assert_eq!(top.geoms, stack.geoms);
    assert_eq!(top.geoms[0].output_shape(), [1, 1, 4, 4]);
    assert_eq!(top.layers.len(), 1);
    assert_eq!(top.report().macs, 64);
}

#[test]
fn the_resolver_words_each_refusal_in_the_api_s_own_terms() {
    let input = json!(ONE);
    let cases = [
        (
            json!({"input": input}),
            "/weight",
            "missing `weight` (or `layers`)",
        ),
        (
            json!({"input": input, "weight": ONE, "layers": [{"weight": ONE}]}),
            "/layers",
            "give either `weight` or `layers`, not both",
        ),
        (
            json!({"input": input, "stride": 2, "layers": [{"weight": ONE}]}),
            "/layers",
            "with `layers`, give bias and parameters inside each layer",
        ),
        (
            json!({"input": input, "layers": []}),
            "/layers",
            "`layers` must hold at least one layer",
        ),
    ];
    for (body, pointer, detail) in cases {
        let e = tensor_plan(body.clone()).unwrap_err();
        let (p, d) = refusal(&e);
        assert_eq!(p, pointer, "{body}");
        assert!(d.starts_with(detail), "{body}: {d}");
    }
    let shape = |v: Value| shape::from_json(&bytes(&v)).unwrap_err();
    let e = shape(json!({"input_shape": [1, 1, 3, 3], "layers": []}));
    assert_eq!(e.pointer(), Some("/weight_shape"));
    let e = shape(
        json!({"input_shape": [1, 1, 3, 3], "bias_shape": [1], "layers": [{"weight_shape": [1, 1, 1, 1]}]}),
    );
    assert_eq!(e.pointer(), Some("/layers"));
    assert!(e.to_string().contains("bias_shape"), "{e}");
}

#[test]
fn a_multipart_request_points_at_its_parts() {
    let limits = limits();
    let npy = crate::npy::write_npy_f32(&[1, 1, 2, 2], &[1.0; 4]);
    let parts = tensor::NpyParts::default();
    let e = parts.into_spec(&limits).unwrap_err();
    assert!(matches!(e, SpecError::Malformed { ref pointer, .. } if pointer == "/parts/input"));
    let parts = tensor::NpyParts {
        input: Some(&npy),
        ..Default::default()
    };
    let e = parts.into_spec(&limits).unwrap_err();
    assert!(matches!(e, SpecError::Malformed { ref pointer, .. } if pointer == "/parts/weight"));
    let spec = bytes(&json!({"layers": [{"weight": ONE}]}));
    let parts = tensor::NpyParts {
        input: Some(&npy),
        weight: Some(&npy),
        spec: Some(&spec),
        ..Default::default()
    };
    let e = parts.into_spec(&limits).unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/layers"));
    let parts = tensor::NpyParts {
        input: Some(b"not npy"),
        ..Default::default()
    };
    let e = ApiError::from(parts.into_spec(&limits).unwrap_err());
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert_eq!(e.pointer.as_deref(), Some("/parts/input"));
}

#[test]
fn budgets_point_at_the_member_the_client_sent() {
    let mut small = limits();
    small.max_kernel_side = 2;
    let k3 = json!([[1, 1, 1], [1, 1, 1], [1, 1, 1]]);
    let e = image_plan(json!({"kernel": k3}), 3, &small).unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/kernel"));
    let e = image_plan(
        json!({"layers": [{"preset": "box", "size": 1}, {"preset": "box"}]}),
        1,
        &small,
    )
    .unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/layers/1/kernel"));
    assert!(matches!(e, SpecError::OverLimit { sent: false, .. }));
    let api = ApiError::from(e);
    assert_eq!(api.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.kind, ProblemKind::LimitExceeded);
    assert_eq!(api.extra["limit"], json!(2));
    assert_eq!(api.extra["actual"], json!(3));

    small.max_macs = 10;
    let e = image_plan(json!({"preset": "identity", "size": 1}), 1, &small).unwrap_err();
    assert!(
        matches!(e, SpecError::OverLimit { ref pointer, .. } if pointer.is_empty()),
        "{e}"
    );
    small.max_layers = 1;
    let e = image_plan(
        json!({"layers": [{"preset": "identity"}, {"preset": "identity"}]}),
        1,
        &small,
    )
    .unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/layers"));
}

#[test]
fn an_input_over_the_element_limit_is_a_413_at_the_input() {
    let mut small = limits();
    small.max_tensor_elements = 3;
    let body = bytes(&json!({"input": [[[[1, 2], [3, 4]]]], "weight": ONE}));
    let e = tensor::from_json(&body, &small).unwrap_err();
    assert_eq!(e.pointer(), Some("/input"));
    assert_eq!(ApiError::from(e).status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn geometry_errors_are_numbered_in_stacks_and_named_in_each_api_s_words() {
    let e = tensor_plan(
        json!({"input": ONE, "layers": [{"weight": ONE}, {"weight": [[[[1, 1], [1, 1]]]]}]}),
    )
    .unwrap_err();
    assert_eq!(e.pointer(), Some("/layers/1/weight"));
    assert!(e.to_string().starts_with("layer 1: "), "{e}");

    let body = json!({"input_shape": [1, 1, 2, 2], "layers": [
        {"weight_shape": [1, 1, 1, 1]}, {"weight_shape": [1, 2, 1, 1]}]});
    let (input, stack) = shape::from_json(&bytes(&body)).unwrap();
    let e = plan_shapes(input, &stack).unwrap_err();
    assert_eq!(e.pointer(), Some("/layers/1/weight_shape"));
    assert!(!e.to_string().starts_with("layer"), "{e}");

    let body = json!({"input_shape": [1, 0, 2, 2], "weight_shape": [1, 1, 1, 1]});
    let (input, stack) = shape::from_json(&bytes(&body)).unwrap();
    assert_eq!(
        plan_shapes(input, &stack).unwrap_err().pointer(),
        Some("/input_shape")
    );
}

#[test]
fn the_shape_endpoint_plans_beyond_the_compute_limits() {
    let body = json!({"input_shape": [1, 1, 100000, 100000], "weight_shape": [1, 1, 99, 99]});
    let (input, stack) = shape::from_json(&bytes(&body)).unwrap();
    let plan = plan_shapes(input, &stack).unwrap();
    assert!(plan.report().macs > limits().max_macs);
    assert!(plan.layers.is_empty());
}

#[test]
fn image_layers_take_a_top_level_channels_and_refuse_kernels_beside_layers() {
    let spec = json!({"channels": "each", "layers": [{"preset": "box"}, {"preset": "identity", "padding": 1}]});
    let p = image_plan(spec, 3, &limits()).unwrap();
    assert_eq!(p.geoms[0].groups, 3);
    assert_eq!(p.geoms[1].groups, 3);
    let e = image_plan(
        json!({"preset": "box", "layers": [{"preset": "box"}]}),
        3,
        &limits(),
    )
    .unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/layers"));
    let e = image_plan(json!({"weight": ONE}), 1, &limits()).unwrap_err();
    assert_eq!(e.pointer(), Some("/parts/spec/weight"));
    assert!(e.to_string().contains("tensor API"), "{e}");
    let e = image_plan(json!({"preset": "blur"}), 1, &limits()).unwrap_err();
    let api = ApiError::from(e);
    assert_eq!(api.pointer.as_deref(), Some("/parts/spec/preset"));
    assert!(api.extra["known"]
        .as_array()
        .is_some_and(|k| k.contains(&json!("box"))));
}

#[test]
fn json_errors_are_400_for_syntax_and_422_for_schema_with_the_base_pointer() {
    let e = json::from_slice::<Value>(b"{\"a\": ", "/parts/spec").unwrap_err();
    assert!(
        matches!(e, SpecError::Malformed { ref pointer, .. } if pointer.starts_with("/parts/spec"))
    );
    let e = image::ImageSpec::from_json(br#"{"layers": [{"kernel": [[1, "x"]]}]}"#).unwrap_err();
    assert!(
        matches!(e, SpecError::Invalid { ref pointer, .. } if pointer == "/parts/spec/layers/0/kernel/0/1"),
        "{e:?}"
    );
}

#[test]
fn the_parameter_names_are_the_same_in_every_place_they_are_read() {
    let limits = limits();
    for name in PARAM_NAMES {
        let null = |mut v: Value| {
            v[*name] = Value::Null;
            v
        };
        // ParamsJson (layers, multipart spec, /shape, image layers) takes each name...
        assert!(
            json::from_value::<ParamsJson>(null(json!({})), "").is_ok(),
            "{name}"
        );
        // ...and so does the tensor API's top level, which spells them out.
        let body = bytes(&null(json!({"input": ONE, "weight": ONE})));
        assert!(tensor::from_json(&body, &limits).is_ok(), "{name}");
    }
    // And ParamsJson takes no other name: its unknown-field message lists exactly these.
    let e = json::from_value::<ParamsJson>(json!({"x": 1}), "").unwrap_err();
    let listed = PARAM_NAMES
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>();
    assert!(e.to_string().contains(&listed.join(", ")), "{e}");
}

/// The pointer of the first refusal of a multipart tensor request whose `input` part is
/// `input` and whose `spec` part is `spec` (and no `weight` part).
fn multipart_pointer(input: &[u8], spec: &Value) -> String {
    let limits = limits();
    let spec = bytes(spec);
    let parts = tensor::NpyParts {
        input: Some(input),
        spec: Some(&spec),
        ..Default::default()
    };
    let e = parts
        .into_spec(&limits)
        .and_then(|(i, s)| {
            let (n, c, h, w) = i.dim();
            plan([n, c, h, w], s, &limits)
        })
        .unwrap_err();
    e.pointer().unwrap_or("?").to_string()
}

#[test]
fn every_member_of_a_multipart_spec_points_into_the_spec_part() {
    let npy = crate::npy::write_npy_f32(&[1, 1, 2, 2], &[1.0; 4]);
    let cases = [
        // Refused as the layer is made: parameters, weights 4-D, bias 1-D.
        (
            json!({"layers": [{"weight": ONE}, {"weight": ONE, "stride": 0}]}),
            "/parts/spec/layers/1/stride",
        ),
        (
            json!({"layers": [{"weight": ONE, "stride": [1, "x"]}]}),
            "/parts/spec/layers/0/stride/1",
        ),
        (
            json!({"layers": [{"weight": ONE, "strid": 1}]}),
            "/parts/spec/layers/0/strid",
        ),
        (
            json!({"layers": [{"weight": [[1]]}]}),
            "/parts/spec/layers/0/weight",
        ),
        (
            json!({"layers": [{"weight": ONE, "bias": [[1]]}]}),
            "/parts/spec/layers/0/bias",
        ),
        // Refused by the JSON parser, down to the element.
        (
            json!({"layers": [{"weight": [[[[1, "x"]]]]}]}),
            "/parts/spec/layers/0/weight/0/0/0/1",
        ),
        // Refused by the plan: a shape that does not fit the one flowing in.
        (
            json!({"layers": [{"weight": ONE}, {"weight": [[[[1]], [[1]]]]}]}),
            "/parts/spec/layers/1/weight",
        ),
        // Refused by the resolver.
        (json!({"layers": []}), "/parts/spec/layers"),
        (
            json!({"stride": 2, "layers": [{"weight": ONE}]}),
            "/parts/spec/layers",
        ),
    ];
    for (spec, pointer) in cases {
        assert_eq!(multipart_pointer(&npy, &spec), pointer, "{spec}");
    }
    // An input with a zero-sized dimension is the `input` part, not a member of a layer.
    let empty = crate::npy::write_npy_f32(&[1, 1, 0, 2], &[]);
    let spec = json!({"layers": [{"weight": ONE}]});
    assert_eq!(multipart_pointer(&empty, &spec), "/parts/input");
}

#[test]
fn a_bad_cell_of_a_top_level_kernel_points_at_the_cell_as_in_a_layer() {
    let pointer = |spec: Value| {
        let e = image::ImageSpec::from_json(&bytes(&spec)).unwrap_err();
        e.pointer().unwrap_or("?").to_string()
    };
    let cases = [
        (json!([[1, 2, 3], [4, 5, "x"]]), "/kernel/1/2"),
        (json!([[1, 2, 3], [4, 5, true]]), "/kernel/1/2"),
        (json!([[1, 2, 3], [4, 5]]), "/kernel/1"),
        (json!([[1, 2], [[3], 4]]), "/kernel/1/0"),
    ];
    for (kernel, at) in cases {
        let top = pointer(json!({"kernel": kernel}));
        assert_eq!(top, format!("/parts/spec{at}"), "{kernel}");
        let layer = pointer(json!({"layers": [{"preset": "box"}, {"kernel": kernel}]}));
        assert_eq!(layer, format!("/parts/spec/layers/1{at}"), "{kernel}");
    }
    // The other members of the top-level layer too.
    let e = pointer(json!({"kernel": [[1]], "bias": [1, "x"]}));
    assert_eq!(e, "/parts/spec/bias/1");
    let e = pointer(json!({"kernel": [[1]], "channels": "both"}));
    assert_eq!(e, "/parts/spec/channels");
}

#[test]
fn an_empty_input_is_the_input_whatever_layer_finds_it() {
    let e = tensor_plan(json!({"input": [[[[]]]], "layers": [{"weight": ONE}]})).unwrap_err();
    assert_eq!(e.pointer(), Some("/input"));
    let e = tensor_plan(json!({"input": [[[[]]]], "weight": ONE})).unwrap_err();
    assert_eq!(e.pointer(), Some("/input"));
    let body = json!({"input_shape": [1, 1, 0, 1], "layers": [{"weight_shape": [1, 1, 1, 1]}]});
    let (input, stack) = shape::from_json(&bytes(&body)).unwrap();
    let e = plan_shapes(input, &stack).unwrap_err();
    assert_eq!(e.pointer(), Some("/input_shape"));
}
