//! Criterion benches of the layer zoo: one bench per CNN layer class and image filter,
//! run with the algorithm the plan picks (`zoo/<id>`), and with every other algorithm that
//! supports the layer when `ZOO_ALL=1` (`zoo/<id>/<algorithm>`): the figures the cost model
//! in `conv::plan` is calibrated on. `cargo bench --bench zoo -- stem` picks layers.
//!
//! The same layers, against ONNX Runtime, OpenCV and PaddlePaddle through the HTTP server,
//! are in `bench/compare.py`. Throughput is FLOP/s (`2·MACs`).

use std::hint::black_box;

use convd::conv::plan::plan;
use convd::conv::{conv2d_with, CancelToken, Conv2dAlgo, Conv2dGeometry, Conv2dParams, Padding};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{Array1, Array4};

/// One layer: id, input `[n, c, h, w]`, weight `[c_out, c/groups, k_h, k_w]`, stride,
/// padding, dilation, groups.
struct Layer(
    &'static str,
    [usize; 4],
    [usize; 4],
    usize,
    usize,
    usize,
    usize,
);

const ZOO: &[Layer] = &[
    Layer("stem-r18", [1, 3, 224, 224], [64, 3, 7, 7], 2, 3, 1, 1),
    Layer("stem-alex", [1, 3, 224, 224], [64, 3, 11, 11], 4, 2, 1, 1),
    // Layers no issue names, to keep the plan honest on classes rather than shapes:
    // MobileNet's and VGG's 3×3 stems, a one-channel first layer (MNIST), YOLO's 16-wide
    // stem on a 416 image.
    Layer("stem-mbv2", [1, 3, 224, 224], [32, 3, 3, 3], 2, 1, 1, 1),
    Layer("stem-vgg", [1, 3, 224, 224], [64, 3, 3, 3], 1, 1, 1, 1),
    Layer("c1-mnist", [1, 1, 28, 28], [32, 1, 3, 3], 1, 1, 1, 1),
    Layer("stem-yolo", [1, 3, 416, 416], [16, 3, 3, 3], 1, 1, 1, 1),
    Layer("pw-r50", [1, 64, 56, 56], [256, 64, 1, 1], 1, 0, 1, 1),
    Layer("pw-mbv2", [1, 144, 56, 56], [24, 144, 1, 1], 1, 0, 1, 1),
    Layer("pw-s2", [1, 256, 56, 56], [512, 256, 1, 1], 2, 0, 1, 1),
    Layer("sq-fire", [1, 16, 55, 55], [64, 16, 1, 1], 1, 0, 1, 1),
    Layer("c3-r18-64", [1, 64, 56, 56], [64, 64, 3, 3], 1, 1, 1, 1),
    Layer("c3-r18-256", [1, 256, 14, 14], [256, 256, 3, 3], 1, 1, 1, 1),
    Layer("c3-r18-512", [1, 512, 7, 7], [512, 512, 3, 3], 1, 1, 1, 1),
    Layer("c3-unet", [1, 32, 224, 224], [32, 32, 3, 3], 1, 1, 1, 1),
    Layer("c3-cifar", [1, 16, 32, 32], [16, 16, 3, 3], 1, 1, 1, 1),
    Layer("c3s2-r18", [1, 64, 56, 56], [128, 64, 3, 3], 2, 1, 1, 1),
    Layer("c3s2-128", [1, 128, 56, 56], [128, 128, 3, 3], 2, 1, 1, 1),
    Layer("c3s2-yolo", [1, 32, 208, 208], [64, 32, 3, 3], 2, 1, 1, 1),
    Layer("dw3-mbv2", [1, 144, 56, 56], [144, 1, 3, 3], 1, 1, 1, 144),
    Layer("dw3s2-mbv2", [1, 96, 112, 112], [96, 1, 3, 3], 2, 1, 1, 96),
    Layer("dw5-effnet", [1, 240, 28, 28], [240, 1, 5, 5], 1, 2, 1, 240),
    Layer(
        "dw5s2-effnet",
        [1, 144, 56, 56],
        [144, 1, 5, 5],
        2,
        2,
        1,
        144,
    ),
    Layer("dw7-convnext", [1, 96, 56, 56], [96, 1, 7, 7], 1, 3, 1, 96),
    Layer("grp-resnext", [1, 128, 56, 56], [128, 4, 3, 3], 1, 1, 1, 32),
    Layer("grp2-alex", [1, 96, 27, 27], [256, 48, 5, 5], 1, 2, 1, 2),
    Layer("c5-inc", [1, 48, 35, 35], [64, 48, 5, 5], 1, 2, 1, 1),
    Layer("dil2", [1, 256, 28, 28], [256, 256, 3, 3], 1, 2, 2, 1),
    Layer("dil4", [1, 128, 32, 32], [128, 128, 3, 3], 1, 4, 4, 1),
    Layer("b8-c3", [8, 64, 56, 56], [64, 64, 3, 3], 1, 1, 1, 1),
    Layer("b8-pw", [8, 128, 28, 28], [128, 128, 1, 1], 1, 0, 1, 1),
    Layer("W1", [1, 1, 1080, 1920], [1, 1, 3, 3], 1, 1, 1, 1),
    Layer("W3", [1, 3, 1080, 1920], [1, 3, 3, 3], 1, 0, 1, 1),
    Layer("W5", [1, 1, 1080, 1920], [1, 1, 15, 15], 1, 7, 1, 1),
    Layer("W6", [1, 3, 1080, 1920], [3, 1, 5, 5], 1, 2, 1, 3),
];

fn pseudo_random(shape: [usize; 4], seed: u32) -> Array4<f32> {
    let mut s = seed | 1;
    Array4::from_shape_simple_fn(shape, || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 1000) as f32 / 1000.0 - 0.5
    })
}

fn bench(c: &mut Criterion) {
    let all = std::env::var_os("ZOO_ALL").is_some();
    let mut group = c.benchmark_group("zoo");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    for &Layer(id, input, weight, s, p, d, groups) in ZOO {
        let params = Conv2dParams {
            stride: [s, s],
            padding: Padding::Explicit([p; 4]),
            dilation: [d, d],
            groups,
            ..Default::default()
        };
        let g = Conv2dGeometry::new(input, weight, Some(weight[0]), &params).expect("valid layer");
        let (x, w) = (pseudo_random(input, 1), pseudo_random(weight, 2));
        let b = Array1::from_elem(weight[0], 0.1f32);
        let cancel = CancelToken::new();
        group.throughput(Throughput::Elements(2 * g.macs()));
        let chosen = plan(&g).algorithm;
        let algos = Conv2dAlgo::ALL
            .into_iter()
            .filter(|&a| a.supports(&g) && a != Conv2dAlgo::Separable && (a == chosen || all));
        for algo in algos {
            let name = if algo == chosen && !all {
                id.to_string()
            } else {
                format!(
                    "{id}/{algo}{}",
                    if algo == chosen { " (planned)" } else { "" }
                )
            };
            group.bench_function(name, |bench| {
                bench.iter(|| {
                    let y = conv2d_with(algo, x.view(), w.view(), Some(b.view()), &g, &cancel);
                    convd::conv::buffers::give(
                        black_box(y.expect("not cancelled"))
                            .into_raw_vec_and_offset()
                            .0,
                    );
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
