//! Property test through the public API: random specs and shapes (strides, paddings and
//! dilations including negative and huge ones, groups, padding modes, zero dimensions,
//! one- and two-layer stacks, and weird JSON values) posted to the real server. The answer
//! is never a 5xx: either 200 with the shape an independent model predicts (and
//! `product(shape)` finite values), or a 4xx problem+json. Requests the model knows are
//! valid must get 200; requests it knows are invalid must not.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// A signed integer as sent: small, zero, negative, or huge (some beyond `i64`).
#[derive(Debug, Clone, Copy)]
enum Int {
    I(i64),
    /// `u64::MAX`: no `i64`.
    Huge,
}

impl Int {
    fn json(self) -> Value {
        match self {
            Int::I(v) => json!(v),
            Int::Huge => json!(u64::MAX),
        }
    }
    fn model(self) -> i128 {
        match self {
            Int::I(v) => i128::from(v),
            Int::Huge => i128::from(u64::MAX),
        }
    }
}

fn int(tame: bool) -> BoxedStrategy<Int> {
    if tame {
        return (1..=3i64).prop_map(Int::I).boxed();
    }
    prop_oneof![
        6 => (1..=3i64).prop_map(Int::I),
        1 => Just(Int::I(0)),
        1 => (-3..=-1i64).prop_map(Int::I),
        1 => Just(Int::I(i64::MIN)),
        1 => Just(Int::I(i64::MAX)),
        1 => Just(Int::I(1 << 40)),
        1 => Just(Int::Huge),
    ]
    .boxed()
}

/// `stride` / `dilation`: absent, `s`, `[s_h, s_w]`, or a wrong count.
#[derive(Debug, Clone)]
enum Pair {
    Absent,
    Ints(Vec<Int>),
}

fn pair(tame: bool) -> impl Strategy<Value = Pair> {
    prop_oneof![
        2 => Just(Pair::Absent),
        3 => int(tame).prop_map(|v| Pair::Ints(vec![v])),
        3 => (int(tame), int(tame)).prop_map(|(a, b)| Pair::Ints(vec![a, b])),
        u32::from(!tame) => prop::collection::vec(int(tame), 0..=5).prop_map(Pair::Ints),
    ]
}

#[derive(Debug, Clone)]
enum Pad {
    Absent,
    Ints(Vec<Int>),
    Same,
    Valid,
}

fn pad(tame: bool) -> impl Strategy<Value = Pad> {
    // Tame paddings include 0: `int(true) - 1`.
    let int = move || {
        int(tame).prop_map(move |i| match i {
            Int::I(v) if tame => Int::I(v - 1),
            other => other,
        })
    };
    prop_oneof![
        2 => Just(Pad::Absent),
        1 => Just(Pad::Same),
        1 => Just(Pad::Valid),
        3 => prop::collection::vec(int(), 1..=1).prop_map(Pad::Ints),
        2 => prop::collection::vec(int(), 2..=2).prop_map(Pad::Ints),
        2 => prop::collection::vec(int(), 4..=4).prop_map(Pad::Ints),
        u32::from(!tame) => prop::collection::vec(int(), 0..=6).prop_map(Pad::Ints),
    ]
}

const MODES: [&str; 6] = [
    "zeros",
    "reflect",
    "replicate",
    "circular",
    "symmetric",
    "mirror",
];

#[derive(Debug, Clone)]
struct Layer {
    c_out: usize,
    /// `None`: `c_in / groups` of the layer's input (consistent); else as given.
    c_in_w: Option<usize>,
    k: [usize; 2],
    bias: Option<usize>,
    stride: Pair,
    padding: Pad,
    dilation: Pair,
    groups: Option<Int>,
    mode: Option<usize>,
    relu: bool,
}

fn layer(tame: bool) -> impl Strategy<Value = Layer> {
    let w = u32::from(!tame);
    (
        (
            prop_oneof![5 => 1..=4usize, w => Just(0usize)],
            maybe(if tame { 0.0 } else { 0.2 }, 0..=4usize),
        ),
        (
            prop_oneof![5 => 1..=3usize, w => Just(0usize)],
            prop_oneof![5 => 1..=3usize, w => Just(0usize)],
        ),
        prop::option::weighted(0.4, prop_oneof![4 => Just(usize::MAX), w => 0..=5usize]),
        (pair(tame), pad(tame), pair(tame)),
        prop::option::weighted(
            0.5,
            prop_oneof![3 => Just(Int::I(1)), 1 => Just(Int::I(2)), w * 2 => int(tame)],
        ),
        prop::option::weighted(0.5, 0..MODES.len() - usize::from(tame)),
        any::<bool>(),
    )
        .prop_map(
            |((c_out, c_in_w), (kh, kw), bias, (stride, padding, dilation), groups, mode, relu)| {
                Layer {
                    c_out,
                    c_in_w,
                    k: [kh, kw],
                    bias,
                    stride,
                    padding,
                    dilation,
                    groups,
                    mode,
                    relu,
                }
            },
        )
}

/// A way to spoil a valid-looking request: each one must be refused with a 4xx.
const SPOILERS: usize = 14;

fn spoil(body: &mut Value, which: usize) {
    let top = body.as_object_mut().unwrap();
    match which {
        0 => top.insert("input".into(), json!([[[[1, 2], [3]]]])), // ragged
        1 => top.insert("input".into(), json!([[[["1"]]]])),       // string
        2 => top.insert("input".into(), json!([[[[null]]]])),
        3 => top.insert("input".into(), json!([[[[true]]]])),
        4 => top.insert("input".into(), json!([[[[1e39]]]])), // not finite in f32
        5 => top.insert("input".into(), json!([[[[[1.0]]]]])), // 5-D
        6 => top.insert(
            "input".into(),
            json!({"shape": [1, 1, 2, 2], "data": [1, 2, 3]}),
        ),
        7 => top.insert("stride".into(), json!(1.5)),
        8 => top.insert("stride".into(), json!("2")),
        9 => top.insert("padding".into(), json!({"top": 1})),
        10 => top.insert("groups".into(), json!(true)),
        11 => top.insert("surprise".into(), json!(1)),
        12 => top.insert("input".into(), json!(null)),
        _ => top.insert("padding_mode".into(), json!(["zeros"])),
    };
}

#[derive(Debug, Clone)]
struct Case {
    input: [usize; 4],
    layers: Vec<Layer>,
    stack: bool,
    oip: bool,
    spoiler: Option<usize>,
}

/// `Some` with probability `p` (0 allowed, unlike `prop::option::weighted`).
fn maybe<S>(p: f64, s: S) -> BoxedStrategy<Option<S::Value>>
where
    S: Strategy + 'static,
    S::Value: Clone,
{
    if p == 0.0 {
        Just(None).boxed()
    } else {
        prop::option::weighted(p, s).boxed()
    }
}

/// Half the cases are tame (valid-looking values only, so that many are accepted and their
/// shapes checked), half wild.
fn case() -> impl Strategy<Value = Case> {
    any::<bool>().prop_flat_map(case_of)
}

fn case_of(tame: bool) -> impl Strategy<Value = Case> {
    let lo = usize::from(tame);
    (
        (lo..=2usize, lo..=4usize, lo..=6usize, lo..=6usize),
        prop::collection::vec(layer(tame), 1..=2),
        any::<bool>(),
        any::<bool>(),
        maybe(if tame { 0.0 } else { 0.3 }, 0..SPOILERS),
    )
        .prop_map(|((n, c, h, w), layers, stack, oip, spoiler)| Case {
            input: [n, c, h, w],
            stack: stack || layers.len() > 1,
            layers,
            oip,
            spoiler,
        })
}

/// Values `i % 7 - 3` in the OIP form (the only one that can carry zero dimensions) or
/// as a nested array.
fn tensor(shape: &[usize], oip: bool) -> Value {
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len).map(|i| (i % 7) as f32 - 3.0).collect();
    if oip || shape.contains(&0) {
        return json!({"shape": shape, "datatype": "FP32", "data": data});
    }
    fn nest(shape: &[usize], data: &[f32]) -> Value {
        if shape.len() == 1 {
            return json!(data);
        }
        let step = data.len() / shape[0];
        Value::Array(
            data.chunks(step)
                .map(|chunk| nest(&shape[1..], chunk))
                .collect(),
        )
    }
    nest(shape, &data)
}

/// What the model predicts.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Valid for sure, with this output shape.
    Ok([usize; 4]),
    /// Accepted only with this output shape (the model does not decide acceptance: zero
    /// dimensions, border modes with padding, sizes near the limits).
    Maybe([usize; 4]),
    /// Refused for sure.
    Refused,
    /// Either way; a 200 must have a consistent shape.
    Unknown,
}

fn pair_model(p: &Pair) -> Option<[i128; 2]> {
    match p {
        Pair::Absent => Some([1, 1]),
        Pair::Ints(v) => match v.as_slice() {
            [a] => Some([a.model(); 2]),
            [a, b] => Some([a.model(), b.model()]),
            _ => None,
        },
    }
    .filter(|[a, b]| *a >= 1 && *b >= 1 && *a <= i128::from(i64::MAX) && *b <= i128::from(i64::MAX))
}

fn model(case: &Case) -> Expect {
    let mut shape = case.input.map(|d| d as i128);
    let mut sure = !case.input.contains(&0);
    let mut c_in = case.input[1];
    for l in &case.layers {
        let Some(stride) = pair_model(&l.stride) else {
            return Expect::Refused;
        };
        let Some(dil) = pair_model(&l.dilation) else {
            return Expect::Refused;
        };
        let groups = match l.groups {
            None => 1,
            Some(g) => g.model(),
        };
        if groups < 1 || groups > i128::from(i64::MAX) {
            return Expect::Refused;
        }
        let c_out = l.c_out as i128;
        let c_in_w = l.c_in_w.map_or(c_in as i128 / groups.max(1), |c| c as i128);
        if c_in as i128 % groups != 0 || c_out % groups != 0 || c_in_w * groups != c_in as i128 {
            return Expect::Refused;
        }
        if let Some(b) = l.bias.filter(|&b| b != usize::MAX) {
            if b as i128 != c_out {
                return Expect::Refused;
            }
        }
        if l.mode == Some(MODES.len() - 1) {
            return Expect::Refused; // "mirror" is no padding mode
        }
        if l.k.contains(&0) || c_out == 0 || c_in == 0 {
            return Expect::Unknown;
        }
        let eff = [0, 1].map(|i| dil[i] * (l.k[i] as i128 - 1) + 1);
        let (h, w) = (shape[2], shape[3]);
        let p: [i128; 4] = match &l.padding {
            Pad::Absent | Pad::Valid => [0; 4],
            Pad::Same => {
                let same = |size: i128, eff: i128, s: i128| {
                    let out = (size + s - 1) / s;
                    let needed = ((out - 1) * s + eff - size).max(0);
                    (needed / 2, needed - needed / 2)
                };
                let (t, b) = same(h, eff[0], stride[0]);
                let (le, r) = same(w, eff[1], stride[1]);
                [t, b, le, r]
            }
            Pad::Ints(v) => {
                let v: Vec<i128> = v.iter().map(|i| i.model()).collect();
                if v.iter().any(|&p| p < 0 || p > i128::from(i64::MAX)) {
                    return Expect::Refused;
                }
                match v.as_slice() {
                    [a] => [*a; 4],
                    [a, b] => [*a, *a, *b, *b],
                    [t, b, le, r] => [*t, *b, *le, *r],
                    _ => return Expect::Refused,
                }
            }
        };
        if l.mode.is_some_and(|m| m != 0) && p.iter().any(|&x| x > 0) {
            sure = false; // border modes bound the padding by the input size
        }
        let (ph, pw) = (h + p[0] + p[1], w + p[2] + p[3]);
        if eff[0] > ph || eff[1] > pw {
            if h > 0 && w > 0 {
                return Expect::Refused;
            }
            return Expect::Unknown;
        }
        let out = [
            shape[0],
            c_out,
            (ph - eff[0]) / stride[0] + 1,
            (pw - eff[1]) / stride[1] + 1,
        ];
        // Far below the default limits: sure; beyond them: refused; between: either.
        let padded = [shape[0], shape[1], ph, pw]
            .iter()
            .fold(1i128, |a, &b| a.saturating_mul(b));
        let out_elems = out.iter().fold(1i128, |a, &b| a.saturating_mul(b));
        if eff[0] > 64 || eff[1] > 64 {
            sure = false; // a limit may apply to the dilated kernel
        }
        if padded > 1 << 25 || out_elems > 1 << 25 {
            return Expect::Refused;
        }
        if padded > 100_000 || out_elems > 100_000 {
            sure = false;
        }
        shape = out;
        c_in = l.c_out;
    }
    let out = shape.map(|d| d as usize);
    if sure {
        Expect::Ok(out)
    } else {
        Expect::Maybe(out)
    }
}

fn params_json(l: &Layer, obj: &mut serde_json::Map<String, Value>) {
    match &l.stride {
        Pair::Absent => {}
        Pair::Ints(v) if v.len() == 1 => drop(obj.insert("stride".into(), v[0].json())),
        Pair::Ints(v) => drop(obj.insert("stride".into(), v.iter().map(|i| i.json()).collect())),
    }
    match &l.dilation {
        Pair::Absent => {}
        Pair::Ints(v) if v.len() == 1 => drop(obj.insert("dilation".into(), v[0].json())),
        Pair::Ints(v) => drop(obj.insert("dilation".into(), v.iter().map(|i| i.json()).collect())),
    }
    match &l.padding {
        Pad::Absent => {}
        Pad::Same => drop(obj.insert("padding".into(), json!("same"))),
        Pad::Valid => drop(obj.insert("padding".into(), json!("VALID"))),
        Pad::Ints(v) if v.len() == 1 => drop(obj.insert("padding".into(), v[0].json())),
        Pad::Ints(v) => drop(obj.insert("padding".into(), v.iter().map(|i| i.json()).collect())),
    }
    if let Some(g) = l.groups {
        obj.insert("groups".into(), g.json());
    }
    if let Some(m) = l.mode {
        obj.insert("padding_mode".into(), json!(MODES[m]));
    }
    if l.relu {
        obj.insert("activation".into(), json!("relu"));
    }
}

fn body(case: &Case) -> Value {
    let mut top = serde_json::Map::new();
    top.insert("input".into(), tensor(&case.input, case.oip));
    let mut c_in = case.input[1];
    let mut layers = Vec::new();
    for l in &case.layers {
        let groups = match l.groups {
            Some(Int::I(g)) if g >= 1 => g as usize,
            _ => 1,
        };
        let c_in_w = l.c_in_w.unwrap_or(c_in / groups);
        let mut obj = serde_json::Map::new();
        obj.insert(
            "weight".into(),
            tensor(&[l.c_out, c_in_w, l.k[0], l.k[1]], case.oip),
        );
        match l.bias {
            None => {}
            Some(usize::MAX) => drop(obj.insert("bias".into(), tensor(&[l.c_out], case.oip))),
            Some(b) => drop(obj.insert("bias".into(), tensor(&[b], case.oip))),
        }
        params_json(l, &mut obj);
        layers.push(Value::Object(obj));
        c_in = l.c_out;
    }
    if case.stack {
        top.insert("layers".into(), Value::Array(layers));
    } else {
        let Value::Object(obj) = layers.pop().unwrap() else {
            unreachable!()
        };
        top.extend(obj);
    }
    let mut body = Value::Object(top);
    if let Some(s) = case.spoiler {
        spoil(&mut body, s);
    }
    body
}

async fn check(app: &TestApp, case: &Case, seen: &mut [u32; 2]) -> Result<(), TestCaseError> {
    let body = body(case);
    let expect = if case.spoiler.is_some() {
        Expect::Refused
    } else {
        model(case)
    };
    let res = app.conv2d(&body).await;
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().await.unwrap();
    let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let show = || format!("{body} → {status} {text:.300} (model: {expect:?})");
    prop_assert!(status < 500, "5xx: {}", show());
    seen[usize::from(status != 200)] += 1;
    if status == 200 {
        prop_assert_eq!(ct.as_deref(), Some("application/json"));
        let shape: Vec<usize> = serde_json::from_value(reply["shape"].clone()).unwrap();
        let data = reply["data"].as_array().unwrap();
        prop_assert_eq!(data.len(), shape.iter().product::<usize>(), "{}", show());
        prop_assert!(data.iter().all(|v| v.is_number()), "{}", show());
        match expect {
            Expect::Ok(s) | Expect::Maybe(s) => prop_assert_eq!(&shape[..], &s[..], "{}", show()),
            Expect::Refused => prop_assert!(false, "accepted, the model refuses: {}", show()),
            Expect::Unknown => {}
        }
    } else {
        prop_assert!((400..500).contains(&status), "{}", show());
        prop_assert_eq!(
            ct.as_deref(),
            Some("application/problem+json"),
            "{}",
            show()
        );
        prop_assert_eq!(&reply["status"], &json!(status), "{}", show());
        prop_assert!(
            reply["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:convd:problem:")),
            "{}",
            show()
        );
        prop_assert!(
            !matches!(expect, Expect::Ok(_)),
            "refused, the model accepts: {}",
            show()
        );
    }
    Ok(())
}

#[test]
fn random_specs_get_a_correct_shape_or_a_4xx_never_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app());
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES=5000 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(64),
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::cell::RefCell::new([0u32; 2]);
    runner
        .run(&case(), |case| {
            rt.block_on(check(&app, &case, &mut seen.borrow_mut()))
        })
        .unwrap();
    // The generator reaches both sides (64 cases: typically ~25 accepted, ~40 refused).
    let [ok, refused] = *seen.borrow();
    eprintln!("props: {ok} accepted, {refused} refused");
    assert!(ok >= 3 && refused >= 3, "{ok} accepted, {refused} refused");
    // Still serving correctly afterwards.
    rt.block_on(async {
        crate::helpers::expect_small_answer(app.conv2d(&crate::helpers::small_request()).await)
            .await
    });
}
