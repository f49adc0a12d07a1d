//! The GPU backends: burn-cuda (feature `cuda`) and burn-wgpu over Vulkan (feature `vulkan`),
//! with CubeCL kernels for the quantized matmul, written once for both runtimes.
//!
//! On upload every weight takes the GPU form of [`crate::kernels::affine`]: each quantized
//! format as groups of 16 or 32 weights with `value = d·q + m` (4-bit or signed 8-bit quants,
//! packed in u32 words; one f32 `d` and `m` per group), the float formats as dense f32. So one
//! kernel per quant width serves every format the CPU runs (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q2_K…Q6_K, F16, BF16, F32).
//!
//! The matmul kernel gives one output (one row, one token) to a cube of [`CUBE`] units: unit
//! `u` reads quant words `u, u + CUBE, …` of the row (consecutive units, consecutive words:
//! coalesced), sums `d·Σq·x + m·Σx` per word and the cube reduces in shared memory. The
//! KV-cache write and the attention use Burn's generic implementations.
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, IntElement};

use crate::backend::{HostQWeight, QuantBackend};
use crate::formats::AffineLayout;
use crate::kernels::affine::{gpu_form, GpuForm};

/// The CUDA backend type the model runs on with `--features cuda`.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn_cuda::Cuda<f32, i32>;

/// The Vulkan backend type (burn-wgpu, SPIR-V) the model runs on with `--features vulkan`.
#[cfg(feature = "vulkan")]
pub type VulkanBackend = burn_wgpu::Vulkan<f32, i32>;

/// A weight on the GPU in the form of [`crate::kernels::affine`].
#[derive(Clone)]
pub struct GpuQWeight {
    /// Output rows.
    pub n: usize,
    /// Inputs per row.
    pub k: usize,
    /// The group layout; `None`: dense f32 (in `q`).
    pub layout: Option<AffineLayout>,
    d: Handle,
    m: Handle,
    q: Handle,
    /// Elements of `d`/`m` and of `q`.
    lens: (usize, usize),
}

impl std::fmt::Debug for GpuQWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.layout {
            Some(l) => write!(
                f,
                "GpuQWeight(q{}/{} {}×{})",
                l.bits, l.group, self.n, self.k
            ),
            None => write!(f, "GpuQWeight(f32 {}×{})", self.n, self.k),
        }
    }
}

/// Units per cube of the matmul kernels (one output element per cube).
pub const CUBE: u32 = 64;

/// Rows per step of the cube grid's x dimension (Vulkan guarantees 65535 cubes per dimension);
/// rows past it go to the z dimension.
const GRID_X: usize = 32768;

/// Sums `acc` over the cube's [`CUBE`] (64) units in shared memory; unit 0 gets the total.
#[cube]
fn cube_sum(acc: f32) -> f32 {
    let mut sh = SharedMemory::<f32>::new(64usize);
    let u = UNIT_POS_X as usize;
    sh[u] = acc;
    sync_cube();
    #[unroll]
    for i in 0..6u32 {
        let s = 32usize >> i as usize;
        if u < s {
            sh[u] += sh[u + s];
        }
        sync_cube();
    }
    sh[0]
}

/// `out[t·n + row] = Σ_i (d·q_i + m)·x[t·k + i]` over the row's groups (see the module docs):
/// cube `(row mod GRID_X, t, row / GRID_X)`.
#[cube(launch_unchecked)]
fn qmatmul_affine(
    x: &Array<f32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    q: &Array<u32>,
    out: &mut Array<f32>,
    n: usize,
    k: usize,
    #[comptime] bits: u32,
    #[comptime] group: usize,
) {
    let row = CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if row >= n {
        terminate!();
    }
    let t = CUBE_POS_Y as usize;
    let words = k * bits as usize / 32;
    let wpg = group * bits as usize / 32;
    let mut acc = 0.0f32;
    let mut w = UNIT_POS_X as usize;
    while w < words {
        let word = q[row * words + w];
        let g = w / wpg;
        let xo = t * k + g * group;
        let e0 = (w % wpg) * 4;
        let mut dot = 0.0f32;
        let mut xsum = 0.0f32;
        if comptime!(bits == 4) {
            #[unroll]
            for j in 0..4u32 {
                let byte = (word >> (8 * j)) & 0xFF;
                let e = e0 + j as usize;
                let x_lo = x[xo + e];
                let x_hi = x[xo + e + group / 2];
                dot += f32::cast_from(byte & 0xF) * x_lo + f32::cast_from(byte >> 4) * x_hi;
                xsum += x_lo + x_hi;
            }
        } else {
            #[unroll]
            for j in 0..4u32 {
                let b = i32::cast_from((word >> (8 * j)) & 0xFF);
                let v = b - (b >> 7) * 256;
                let xv = x[xo + e0 + j as usize];
                dot += f32::cast_from(v) * xv;
                xsum += xv;
            }
        }
        let gi = row * (k / group) + g;
        acc += d[gi] * dot + mn[gi] * xsum;
        w += CUBE_DIM_X as usize;
    }
    let total = cube_sum(acc);
    if UNIT_POS_X == 0 {
        out[t * n + row] = total;
    }
}

/// Dense f32 weights (`w`: `n × k`): as [`qmatmul_affine`].
#[cube(launch_unchecked)]
fn matmul_dense(x: &Array<f32>, w: &Array<f32>, out: &mut Array<f32>, n: usize, k: usize) {
    let row = CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if row >= n {
        terminate!();
    }
    let t = CUBE_POS_Y as usize;
    let mut acc = 0.0f32;
    let mut i = UNIT_POS_X as usize;
    while i < k {
        acc += w[row * k + i] * x[t * k + i];
        i += CUBE_DIM_X as usize;
    }
    let total = cube_sum(acc);
    if UNIT_POS_X == 0 {
        out[t * n + row] = total;
    }
}

impl<R: CubeRuntime, I: IntElement, BT: BoolElement> QuantBackend for CubeBackend<R, f32, I, BT> {
    const ON_GPU: bool = true;

    type QWeight = GpuQWeight;

    fn qweight(w: &HostQWeight, device: &R::Device) -> crate::Result<GpuQWeight> {
        let form = gpu_form(w).map_err(|e| {
            crate::ModelError::InvalidParameter(format!("the GPU kernels take no {e}"))
        })?;
        let client = R::client(device);
        Ok(match form {
            GpuForm::Affine { layout, d, m, q } => GpuQWeight {
                n: w.n,
                k: w.k,
                layout: Some(layout),
                lens: (d.len(), q.len()),
                d: client.create_from_slice(f32::as_bytes(&d)),
                m: client.create_from_slice(f32::as_bytes(&m)),
                q: client.create_from_slice(u32::as_bytes(&q)),
            },
            GpuForm::Dense(v) => {
                let empty = client.create_from_slice(f32::as_bytes(&[0.0]));
                GpuQWeight {
                    n: w.n,
                    k: w.k,
                    layout: None,
                    lens: (0, v.len()),
                    d: empty.clone(),
                    m: empty,
                    q: client.create_from_slice(f32::as_bytes(&v)),
                }
            }
        })
    }

    fn qlinear(x: CubeTensor<R>, weights: &[&GpuQWeight]) -> Vec<CubeTensor<R>> {
        let x = burn_cubecl::kernel::into_contiguous(x);
        let dims = x.meta.shape().to_vec();
        let k = *dims.last().expect("qlinear: x has a shape");
        let rows = x.meta.num_elements() / k;
        weights
            .iter()
            .map(|w| {
                assert_eq!(
                    w.k, k,
                    "qlinear: x has {k} columns, weight {w:?} takes {}",
                    w.k
                );
                let out = burn_cubecl::ops::numeric::empty_device_dtype(
                    x.client.clone(),
                    x.device.clone(),
                    [rows, w.n].into(),
                    burn::tensor::DType::F32,
                );
                let cube_dim = CubeDim::new_1d(CUBE);
                let cube_count = CubeCount::Static(
                    w.n.min(GRID_X) as u32,
                    rows as u32,
                    w.n.div_ceil(GRID_X) as u32,
                );
                let (ng, nq) = w.lens;
                // SAFETY: every index the kernels read is bounded by the array lengths passed
                // here (x: rows·k; d, m: n·k/group; q: n·k·bits/32 words, or n·k floats);
                // writes stop at rows·n.
                unsafe {
                    let x_arg = ArrayArg::from_raw_parts(x.handle.clone(), rows * k);
                    let out_arg = ArrayArg::from_raw_parts(out.handle.clone(), rows * w.n);
                    match w.layout {
                        Some(l) => qmatmul_affine::launch_unchecked::<R>(
                            &x.client,
                            cube_count,
                            cube_dim,
                            x_arg,
                            ArrayArg::from_raw_parts(w.d.clone(), ng),
                            ArrayArg::from_raw_parts(w.m.clone(), ng),
                            ArrayArg::from_raw_parts(w.q.clone(), nq),
                            out_arg,
                            w.n,
                            k,
                            l.bits,
                            l.group,
                        ),
                        None => matmul_dense::launch_unchecked::<R>(
                            &x.client,
                            cube_count,
                            cube_dim,
                            x_arg,
                            ArrayArg::from_raw_parts(w.q.clone(), nq),
                            out_arg,
                            w.n,
                            k,
                        ),
                    }
                }
                out
            })
            .collect()
    }
}

/// The kernels on burn-wgpu over Vulkan: on a machine without a GPU, Mesa's lavapipe (the CI
/// machines, `scripts/setup-debian.sh`). The CUDA runtime runs the same kernel code.
#[cfg(all(test, feature = "vulkan"))]
mod tests {
    use super::*;
    use crate::backend::{qlinear, HostQWeight};
    use crate::formats::testing::{random_weights, randoms};
    use crate::quant::GgmlType;
    use burn::tensor::{Tensor, TensorData};
    use burn_flex::Flex;

    type B = VulkanBackend;

    /// `x · Wᵀ` on the Vulkan backend, and the f64 reference of the dequantized weights with
    /// `Σ|w·x|` per output.
    fn run(ty: GgmlType, n: usize, k: usize, m: usize, seed: u64) -> (Vec<f32>, Vec<(f64, f64)>) {
        let bytes = random_weights(ty, n * k / ty.block_size(), seed);
        let hw = HostQWeight::owned(ty, n, k, bytes);
        let x = randoms(m * k, seed + 50);
        let dev = Default::default();
        let qw = B::qweight(&hw, &dev).unwrap();
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [m, k]), &dev);
        let out = qlinear::<B>(xt, &[&qw]).remove(0);
        assert_eq!(out.dims(), [m, n]);
        let got = out.into_data().to_vec::<f32>().unwrap();
        let mut w = vec![0.0f32; n * k];
        crate::formats::format(ty)
            .unwrap()
            .dequantize(hw.data(), &mut w);
        let want = (0..m * n)
            .map(|o| {
                let (t, r) = (o / n, o % n);
                let pairs = w[r * k..(r + 1) * k].iter().zip(&x[t * k..(t + 1) * k]);
                pairs.fold((0.0, 0.0), |(s, a), (&w, &x)| {
                    (s + w as f64 * x as f64, a + (w as f64 * x as f64).abs())
                })
            })
            .collect();
        (got, want)
    }

    /// Every format the CPU runs, against the f64 reference (f32 sums: 1e-5 of `Σ|w·x|`) and
    /// against the CPU path (whose activations are quantized to Q8: 1e-2), over several tokens.
    #[test]
    fn vulkan_qmatmul_matches_reference_for_every_format() {
        use GgmlType::*;
        let (n, k, m) = (7, 512, 3);
        for ty in [
            F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ] {
            let (got, want) = run(ty, n, k, m, 11);
            let bytes = random_weights(ty, n * k / ty.block_size(), 11);
            let hw = HostQWeight::owned(ty, n, k, bytes);
            let cpu_w = Flex::qweight(&hw, &Default::default()).unwrap();
            let x = randoms(m * k, 61);
            let xt = Tensor::<Flex, 2>::from_data(TensorData::new(x, [m, k]), &Default::default());
            let cpu = qlinear::<Flex>(xt, &[&cpu_w]).remove(0);
            let cpu = cpu.into_data().to_vec::<f32>().unwrap();
            for (o, (&g, &(w, norm))) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= 1e-5 * norm + 1e-6,
                    "{} output {o}: {g} vs {w} (Σ|wx| {norm})",
                    ty.name()
                );
                assert!(
                    (g - cpu[o]).abs() as f64 <= 1e-2 * norm + 1e-6,
                    "{} output {o}: GPU {g} vs CPU {} (Σ|wx| {norm})",
                    ty.name(),
                    cpu[o]
                );
            }
        }
    }

    /// More rows than one grid dimension takes: the rows past [`GRID_X`] run in the z
    /// dimension, and every row is written once.
    #[test]
    fn vulkan_qmatmul_rows_past_one_grid_dimension() {
        let n = GRID_X + 37;
        let (got, want) = run(GgmlType::Q8_0, n, 32, 1, 5);
        for (o, (&g, &(w, norm))) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * norm + 1e-6,
                "row {o}: {g} vs {w}"
            );
        }
    }
}
