//! `cargo run --release -p ember-engine --example conv_layer_bench [C] [BOARDS] [THREADS]`:
//! one 3x3 layer, C -> C channels, by Winograd and by im2col + GEMM, on one thread by
//! default: microseconds per board (minimum over 7 rounds) for each, for the forward and
//! for the weight gradient of training.
use ember_engine::net::im2col::{im2col_into, TAPS};
use ember_engine::net::winograd::{conv3x3, weight_gradient, WinogradLayer, WinogradScratch};
use ember_engine::net::FoldedLayer;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let c = *args.first().unwrap_or(&64);
    let boards = *args.get(1).unwrap_or(&64);
    let threads = *args.get(2).unwrap_or(&1);
    let layer = FoldedLayer {
        weight: (0..TAPS * c * c)
            .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
            .collect(),
        bias: vec![0.1; c],
        rows: TAPS * c,
        cols: c,
    };
    let x: Vec<f32> = (0..boards * 64 * c)
        .map(|i| ((i * 31) % 17) as f32 / 17.0)
        .collect();
    let mut out = vec![0f32; boards * 64 * c];
    let wino = WinogradLayer::new(&layer);
    let mut scratch = WinogradScratch::default();
    let mut cols = vec![0f32; boards * 64 * TAPS * c];
    let reps = (200_000 / (boards * c)).max(3);
    let time = |f: &mut dyn FnMut()| {
        (0..7)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e6 / (reps * boards) as f64
            })
            .fold(f64::MAX, f64::min)
    };
    let w = time(&mut || {
        conv3x3(
            &wino,
            &x,
            boards,
            &mut out,
            false,
            true,
            threads,
            &mut scratch,
        )
    });
    let d = time(&mut || {
        im2col_into(&x, c, &mut cols);
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        unsafe {
            gemm::gemm(
                boards * 64,
                c,
                TAPS * c,
                out.as_mut_ptr(),
                1,
                c as isize,
                false,
                cols.as_ptr(),
                1,
                (TAPS * c) as isize,
                layer.weight.as_ptr(),
                1,
                c as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    });
    println!("c={c} boards={boards} threads={threads}: forward: winograd {w:.2} us/board, im2col {d:.2} us/board, ratio {:.2}", d / w);
    // The weight gradient: through the Winograd domain, and im2col(x)^T dy.
    let dy = out.clone();
    let mut dw = vec![0f32; TAPS * c * c];
    let gw = time(&mut || {
        std::hint::black_box(weight_gradient(
            &x,
            &dy,
            boards,
            c,
            c,
            threads,
            &mut scratch,
        ));
    });
    let gd = time(&mut || {
        im2col_into(&x, c, &mut cols);
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        unsafe {
            gemm::gemm(
                TAPS * c,
                c,
                boards * 64,
                dw.as_mut_ptr(),
                1,
                c as isize,
                false,
                cols.as_ptr(),
                (TAPS * c) as isize,
                1,
                dy.as_ptr(),
                1,
                c as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    });
    println!(
        "  weight gradient: winograd {gw:.2} us/board, im2col {gd:.2} us/board, ratio {:.2}",
        gd / gw
    );
}
