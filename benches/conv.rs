//! Criterion benches of the convolution core on the workloads W1–W6.
//!
//! Throughput is reported as FLOP/s (`2·MACs` elements per iteration). Run with
//! `cargo bench --bench conv` (add `-- W1` to pick one). Hardware limits on the reference
//! machine: ~154 GFLOP/s f32 FMA per core with AVX-512, memory copy ~21 GB/s per thread.

use std::hint::black_box;

use convd::conv::{plan_stack, run_stack, CancelToken, Conv2dLayer, Conv2dParams, Padding};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{Array1, Array4};

struct Workload {
    id: &'static str,
    input: [usize; 4],
    weight: [usize; 4],
    padding: usize,
    groups: usize,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        id: "W1 1x1x1080x1920 3x3 pad1",
        input: [1, 1, 1080, 1920],
        weight: [1, 1, 3, 3],
        padding: 1,
        groups: 1,
    },
    Workload {
        id: "W2 1x1x2160x3840 5x5 box pad2",
        input: [1, 1, 2160, 3840],
        weight: [1, 1, 5, 5],
        padding: 2,
        groups: 1,
    },
    Workload {
        id: "W3 1x3x1080x1920->1 3x3",
        input: [1, 3, 1080, 1920],
        weight: [1, 3, 3, 3],
        padding: 0,
        groups: 1,
    },
    Workload {
        id: "W4 8x64x56x56->64 3x3 pad1",
        input: [8, 64, 56, 56],
        weight: [64, 64, 3, 3],
        padding: 1,
        groups: 1,
    },
    Workload {
        id: "W5 1x1x1080x1920 15x15",
        input: [1, 1, 1080, 1920],
        weight: [1, 1, 15, 15],
        padding: 7,
        groups: 1,
    },
    Workload {
        id: "W6 1x3x1080x1920 depthwise 5x5",
        input: [1, 3, 1080, 1920],
        weight: [3, 1, 5, 5],
        padding: 2,
        groups: 3,
    },
];

fn pseudo_random(shape: [usize; 4], seed: u32) -> Array4<f32> {
    let mut s = seed | 1;
    Array4::from_shape_simple_fn(shape, || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 1000) as f32 / 1000.0
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    for wl in WORKLOADS {
        let x = pseudo_random(wl.input, 1);
        let mut w = pseudo_random(wl.weight, 2);
        if wl.id.starts_with("W2") {
            w.fill(1.0 / 25.0);
        }
        let params = Conv2dParams {
            padding: Padding::Explicit([wl.padding; 4]),
            groups: wl.groups,
            ..Default::default()
        };
        let layer = Conv2dLayer {
            weight: w,
            bias: Some(Array1::zeros(wl.weight[0])),
            params,
            activation: Default::default(),
        };
        let geoms = plan_stack(wl.input, &[(wl.weight, Some(wl.weight[0]), params)]).unwrap();
        group.throughput(Throughput::Elements(2 * geoms[0].macs()));
        let layers = [layer];
        let cancel = CancelToken::new();
        group.bench_function(wl.id, |b| {
            b.iter(|| black_box(run_stack(x.view(), &layers, &geoms, &cancel).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
