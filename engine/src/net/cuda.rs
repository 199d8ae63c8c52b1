//! CUDA kernels for the 8x8 board gather of [`super::im2col`] and for the inference
//! layers' epilogue ([`BiasAct`]), compiled from the source below with NVRTC the first time
//! a CUDA device needs them.
//!
//! candle's own ops would build the gather from `index_select` (or pad/narrow/cat), whose
//! kernels spend more time on 64-bit index arithmetic per element than on moving bytes:
//! measured on an H100, that made the 64x3 network's forward pass proportional to the
//! batch at about 6 us a position. Here each thread copies one 16-byte (or narrower) unit
//! of one square's channels, so the gather runs at memory speed; it is a pure copy and
//! serves every dtype. Its adjoint, `col2im` (the training backward), is a gather too:
//! each input element sums the at most nine columns that read it, without atomics.
//! `BiasAct` adds a layer's bias (and the residual) and applies ReLU in one pass, where
//! candle would launch two to four element-wise kernels, the bias add with strided
//! indexing.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use std::sync::OnceLock;

const MODULE: &str = "ember_board_kernels";

const SOURCE: &str = r#"
__device__ __forceinline__ int tap_square(int sq, int tap) {
    int r = (sq >> 3) + tap / 3 - 1;
    int f = (sq & 7) + tap % 3 - 1;
    return (r >= 0 && r < 8 && f >= 0 && f < 8) ? r * 8 + f : -1;
}

// x: [boards, 64, units], cols: [boards * 64, 9, units]; a unit is 2, 4, 8 or 16 bytes.
template <typename U>
__device__ void im2col(const U* __restrict__ x, U* __restrict__ cols,
                       unsigned int boards, unsigned int units) {
    unsigned int total = boards * 576u * units;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += blockDim.x * gridDim.x) {
        unsigned int u = i % units;
        unsigned int rest = i / units;
        unsigned int tap = rest % 9u;
        unsigned int cell = rest / 9u;
        int n = tap_square((int)(cell & 63u), (int)tap);
        U v{};
        if (n >= 0) v = x[((cell & ~63u) + (unsigned int)n) * units + u];
        cols[i] = v;
    }
}

extern "C" __global__ void im2col_u16(const ushort1* x, ushort1* c, unsigned int b, unsigned int u) { im2col(x, c, b, u); }
extern "C" __global__ void im2col_u32(const uint1* x, uint1* c, unsigned int b, unsigned int u) { im2col(x, c, b, u); }
extern "C" __global__ void im2col_u64(const uint2* x, uint2* c, unsigned int b, unsigned int u) { im2col(x, c, b, u); }
extern "C" __global__ void im2col_u128(const uint4* x, uint4* c, unsigned int b, unsigned int u) { im2col(x, c, b, u); }

// Scalar conversions without the fp16/bf16 headers (NVRTC has no include path here).
struct F32 {
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};
struct BF16 {
    static __device__ __forceinline__ float load(unsigned short h) {
        return __uint_as_float(((unsigned int)h) << 16);
    }
    static __device__ __forceinline__ unsigned short store(float f) {
        unsigned int u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
        u += 0x7fffu + ((u >> 16) & 1u);
        return (unsigned short)(u >> 16);
    }
};
struct F16 {
    static __device__ __forceinline__ float load(unsigned short h) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    static __device__ __forceinline__ unsigned short store(float f) {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
};

// cols: [boards * 64, 9, channels] -> x: [boards, 64, channels], the sum over the taps
// that read each square, accumulated in f32.
template <typename C, typename T>
__device__ void col2im(const T* __restrict__ cols, T* __restrict__ x,
                       unsigned int boards, unsigned int channels) {
    unsigned int total = boards * 64u * channels;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += blockDim.x * gridDim.x) {
        unsigned int c = i % channels;
        unsigned int cell = i / channels;
        int r = (int)((cell & 63u) >> 3), f = (int)(cell & 7u);
        unsigned int board = cell & ~63u;
        float acc = 0.0f;
        for (int tap = 0; tap < 9; ++tap) {
            int sr = r - (tap / 3 - 1), sf = f - (tap % 3 - 1);
            if (sr >= 0 && sr < 8 && sf >= 0 && sf < 8) {
                acc += C::load(cols[((board + (unsigned int)(sr * 8 + sf)) * 9u + (unsigned int)tap) * channels + c]);
            }
        }
        x[i] = C::store(acc);
    }
}

extern "C" __global__ void col2im_f32(const float* c, float* x, unsigned int b, unsigned int ch) { col2im<F32>(c, x, b, ch); }

// out = act(y + bias (per channel) [+ residual]), in f32 and rounded once: a layer's
// epilogue in one pass instead of two to four.
template <typename C, typename T>
__device__ void bias_act(const T* __restrict__ y, const T* __restrict__ bias,
                         const T* __restrict__ res, T* __restrict__ out,
                         unsigned int n, unsigned int channels, int has_res, int relu) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += blockDim.x * gridDim.x) {
        float v = C::load(y[i]) + C::load(bias[i % channels]);
        if (has_res) v += C::load(res[i]);
        if (relu) v = fmaxf(v, 0.0f);
        out[i] = C::store(v);
    }
}

extern "C" __global__ void bias_act_f32(const float* y, const float* b, const float* r, float* o, unsigned int n, unsigned int c, int hr, int relu) { bias_act<F32>(y, b, r, o, n, c, hr, relu); }
extern "C" __global__ void bias_act_bf16(const unsigned short* y, const unsigned short* b, const unsigned short* r, unsigned short* o, unsigned int n, unsigned int c, int hr, int relu) { bias_act<BF16>(y, b, r, o, n, c, hr, relu); }
extern "C" __global__ void bias_act_f16(const unsigned short* y, const unsigned short* b, const unsigned short* r, unsigned short* o, unsigned int n, unsigned int c, int hr, int relu) { bias_act<F16>(y, b, r, o, n, c, hr, relu); }
extern "C" __global__ void col2im_bf16(const unsigned short* c, unsigned short* x, unsigned int b, unsigned int ch) { col2im<BF16>(c, x, b, ch); }
extern "C" __global__ void col2im_f16(const unsigned short* c, unsigned short* x, unsigned int b, unsigned int ch) { col2im<F16>(c, x, b, ch); }
"#;

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
            .map(|p| p.to_src())
            .map_err(|e| format!("compiling Ember's board kernels with NVRTC: {e}"))
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(e.clone()))
}

fn launch_config(total: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    let blocks = total.div_ceil(THREADS as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Runs `f(device pointers of the inputs (each at its layout's offset), device pointer
/// of a new output of `out_len` elements)` and wraps the output as storage. The inputs
/// and the output share the first input's dtype.
fn with_slices(
    inputs: &[(&CudaStorage, &Layout)],
    out_len: usize,
    f: impl FnOnce(&[u64], u64) -> Result<()>,
) -> Result<CudaStorage> {
    fn go<T: DeviceRepr>(
        dev: &CudaDevice,
        inputs: &[(&CudaSlice<T>, usize)],
        out_len: usize,
        f: impl FnOnce(&[u64], u64) -> Result<()>,
    ) -> Result<CudaSlice<T>> {
        let stream = dev.cuda_stream();
        let size = std::mem::size_of::<T>() as u64;
        // SAFETY: every element is written by the kernel `f` launches.
        let mut out = unsafe { dev.alloc::<T>(out_len)? };
        let reads: Vec<_> = inputs
            .iter()
            .map(|(slice, _)| slice.device_ptr(&stream))
            .collect();
        let pointers: Vec<u64> = reads
            .iter()
            .zip(inputs)
            .map(|((ptr, _), (_, offset))| ptr + *offset as u64 * size)
            .collect();
        {
            let (dst, _write) = out.device_ptr_mut(&stream);
            f(&pointers, dst)?;
        }
        drop(reads);
        Ok(out)
    }
    let (first, _) = inputs
        .first()
        .ok_or_else(|| candle_core::Error::Msg("a kernel with no input".into()))?;
    let dev = &first.device;
    macro_rules! typed {
        ($($variant:ident),*) => {
            match &first.slice {
                $(CudaStorageSlice::$variant(_) => {
                    let typed = inputs
                        .iter()
                        .map(|(s, l)| match &s.slice {
                            CudaStorageSlice::$variant(x) => Ok((x, l.start_offset())),
                            _ => candle_core::bail!("kernel inputs must share a dtype"),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    CudaStorageSlice::$variant(go(dev, &typed, out_len, f)?)
                })*
                _ => candle_core::bail!("Ember's kernels: unsupported dtype {:?}", first.dtype()),
            }
        };
    }
    let slice = typed!(F32, BF16, F16, U8);
    Ok(CudaStorage {
        slice,
        device: dev.clone(),
    })
}

fn contiguous(layout: &Layout, op: &str) -> Result<()> {
    if !layout.is_contiguous() {
        candle_core::bail!("{op} needs a contiguous tensor");
    }
    Ok(())
}

fn count(n: usize, op: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: {n} elements exceed the kernel's 32-bit indexing"
        ))
    })
}

/// `[B, 64, C]` -> `[B*64, 9*C]` on a CUDA device, any dtype.
pub fn im2col(storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
    contiguous(layout, "im2col")?;
    let (b, sq, c) = layout.shape().dims3()?;
    if sq != 64 {
        candle_core::bail!("im2col expects [B, 64, C], got {:?}", layout.shape());
    }
    let elem = storage.dtype().size_in_bytes();
    let row_bytes = c * elem;
    let offset_bytes = layout.start_offset() * elem;
    let (unit, name) = [
        (16, "im2col_u128"),
        (8, "im2col_u64"),
        (4, "im2col_u32"),
        (2, "im2col_u16"),
    ]
    .into_iter()
    .find(|(u, _)| row_bytes % u == 0 && offset_bytes % u == 0)
    .ok_or_else(|| candle_core::Error::Msg(format!("im2col: rows of {row_bytes} bytes")))?;
    let units = row_bytes / unit;
    let total = count(b * 576 * units, "im2col")?;
    let dev: &CudaDevice = &storage.device;
    let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
    let (boards, units) = (count(b, "im2col")?, count(units, "im2col")?);
    let out = with_slices(&[(storage, layout)], b * 64 * 9 * c, |src, dst| {
        let mut builder = func.builder();
        builder.arg(&src[0]).arg(&dst).arg(&boards).arg(&units);
        // SAFETY: the kernel reads boards*64*units and writes boards*576*units units, the
        // sizes of the two buffers.
        unsafe { builder.launch(launch_config(total as usize)) }.w()?;
        Ok(())
    })?;
    Ok((out, Shape::from((b * 64, 9 * c))))
}

/// `[B*64, 9*C]` -> `[B*64, C]`, the adjoint of [`im2col`], in f32, bf16 or f16 (summed
/// in f32).
pub fn col2im(storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
    contiguous(layout, "col2im")?;
    let name = match storage.dtype() {
        DType::F32 => "col2im_f32",
        DType::BF16 => "col2im_bf16",
        DType::F16 => "col2im_f16",
        other => candle_core::bail!("col2im on CUDA runs in f32, bf16 or f16, got {other:?}"),
    };
    let (rows, k) = layout.shape().dims2()?;
    if rows % 64 != 0 || k % 9 != 0 {
        candle_core::bail!("col2im expects [B*64, 9*C], got {:?}", layout.shape());
    }
    let c = k / 9;
    let total = count(rows * c, "col2im")?;
    let dev: &CudaDevice = &storage.device;
    let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
    let (boards, channels) = (count(rows / 64, "col2im")?, count(c, "col2im")?);
    let out = with_slices(&[(storage, layout)], rows * c, |src, dst| {
        let mut builder = func.builder();
        builder.arg(&src[0]).arg(&dst).arg(&boards).arg(&channels);
        // SAFETY: reads rows*9*c elements, writes rows*c.
        unsafe { builder.launch(launch_config(total as usize)) }.w()?;
        Ok(())
    })?;
    Ok((out, Shape::from((rows, c))))
}

/// A layer's epilogue for inference: `act(y + bias [+ residual])` over `y` `[N, C]`,
/// `bias` `[C]` and `residual` `[N, C]` (pass `y` itself when there is none), one kernel.
pub struct BiasAct {
    pub residual: bool,
    pub relu: bool,
}

impl candle_core::CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "ember-bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("ember-bias-act runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        y: &CudaStorage,
        ly: &Layout,
        b: &CudaStorage,
        lb: &Layout,
        r: &CudaStorage,
        lr: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        for (l, what) in [(ly, "y"), (lb, "bias"), (lr, "residual")] {
            contiguous(l, &format!("bias-act {what}"))?;
        }
        let (n, c) = ly.shape().dims2()?;
        if lb.shape().elem_count() != c || lr.shape().elem_count() != n * c {
            candle_core::bail!(
                "bias-act: y {:?}, bias {:?}, residual {:?}",
                ly.shape(),
                lb.shape(),
                lr.shape()
            );
        }
        let name = match y.dtype() {
            DType::F32 => "bias_act_f32",
            DType::BF16 => "bias_act_bf16",
            DType::F16 => "bias_act_f16",
            other => candle_core::bail!("bias-act runs in f32, bf16 or f16, got {other:?}"),
        };
        let dev: &CudaDevice = &y.device;
        let func = dev.get_or_load_custom_func(name, MODULE, ptx()?)?;
        let total = count(n * c, "bias-act")?;
        let channels = count(c, "bias-act")?;
        let (has_res, relu) = (self.residual as i32, self.relu as i32);
        let out = with_slices(&[(y, ly), (b, lb), (r, lr)], n * c, |src, dst| {
            let mut builder = func.builder();
            builder
                .arg(&src[0])
                .arg(&src[1])
                .arg(&src[2])
                .arg(&dst)
                .arg(&total)
                .arg(&channels)
                .arg(&has_res)
                .arg(&relu);
            // SAFETY: reads n*c elements of y and of the residual and c of the bias,
            // writes n*c.
            unsafe { builder.launch(launch_config(total as usize)) }.w()?;
            Ok(())
        })?;
        Ok((out, ly.shape().clone()))
    }
}
