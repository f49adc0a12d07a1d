//! The CUDA backend (feature `cuda`): burn-cuda plus a CubeCL kernel for the fused 4-bit matmul.
//!
//! On upload every GGUF block becomes the same affine form, `value = q · d + m` with unsigned
//! `q`: Q4_1 as is, Q4_0 with `m = −8·d`, Q8_0 with `q + 128` and `m = −128·d` — so one kernel per
//! bit width serves all three types. Quants stay packed (4 or 8 bits per weight, in u32 words);
//! the scales become f32 arrays (`n · k / 32` each). One GPU thread computes one output element.
//! The KV-cache write and the decode attention use Burn's generic implementations.

use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, IntElement};

use crate::backend::{HostQWeight, QuantBackend};
use crate::kernels::affine::affine_form;
use crate::quant::GgmlType;

/// The CUDA backend type the model runs on with `--features cuda`.
pub type CudaBackend = burn_cuda::Cuda<f32, i32>;

/// A weight on the GPU in the affine packed form (see the module docs).
#[derive(Clone)]
pub struct GpuQWeight {
    /// Output rows.
    pub n: usize,
    /// Inputs per row.
    pub k: usize,
    /// Bits per quant: 4 or 8.
    pub bits: u32,
    d: Handle,
    m: Handle,
    q: Handle,
}

impl std::fmt::Debug for GpuQWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuQWeight(u{} {}×{})", self.bits, self.n, self.k)
    }
}

/// 4-bit weights: byte `j` of a block holds element `j` (low nibble) and `j + 16` (high).
#[cube(launch_unchecked)]
fn qmatmul_u4(
    x: &Array<f32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    q: &Array<u32>,
    out: &mut Array<f32>,
    m: usize,
    n: usize,
    k: usize,
) {
    let idx = ABSOLUTE_POS;
    if idx >= m * n {
        terminate!();
    }
    let t = idx / n;
    let r = idx % n;
    let nb = k / 32;
    let mut acc = 0.0f32;
    for b in 0..nb {
        let blk = r * nb + b;
        let xo = t * k + b * 32;
        let mut dot = 0.0f32;
        let mut xsum = 0.0f32;
        #[unroll]
        for w in 0..4usize {
            let word = q[blk * 4 + w];
            #[unroll]
            for j in 0..4usize {
                let byte = (word >> (8 * j as u32)) & 0xFF;
                let e = w * 4 + j;
                let x_lo = x[xo + e];
                let x_hi = x[xo + e + 16];
                dot += f32::cast_from(byte & 0xF) * x_lo + f32::cast_from(byte >> 4) * x_hi;
                xsum += x_lo + x_hi;
            }
        }
        acc += d[blk] * dot + mn[blk] * xsum;
    }
    out[idx] = acc;
}

/// 8-bit weights: byte `j` of a block is element `j`.
#[cube(launch_unchecked)]
fn qmatmul_u8(
    x: &Array<f32>,
    d: &Array<f32>,
    mn: &Array<f32>,
    q: &Array<u32>,
    out: &mut Array<f32>,
    m: usize,
    n: usize,
    k: usize,
) {
    let idx = ABSOLUTE_POS;
    if idx >= m * n {
        terminate!();
    }
    let t = idx / n;
    let r = idx % n;
    let nb = k / 32;
    let mut acc = 0.0f32;
    for b in 0..nb {
        let blk = r * nb + b;
        let xo = t * k + b * 32;
        let mut dot = 0.0f32;
        let mut xsum = 0.0f32;
        #[unroll]
        for w in 0..8usize {
            let word = q[blk * 8 + w];
            #[unroll]
            for j in 0..4usize {
                let xv = x[xo + w * 4 + j];
                dot += f32::cast_from((word >> (8 * j as u32)) & 0xFF) * xv;
                xsum += xv;
            }
        }
        acc += d[blk] * dot + mn[blk] * xsum;
    }
    out[idx] = acc;
}

impl<R: CubeRuntime, I: IntElement, BT: BoolElement> QuantBackend for CubeBackend<R, f32, I, BT> {
    const ON_GPU: bool = true;

    type QWeight = GpuQWeight;

    fn qweight(w: &HostQWeight, device: &R::Device) -> crate::Result<GpuQWeight> {
        if !matches!(w.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
            return Err(crate::ModelError::InvalidParameter(format!(
                "the CUDA kernels take Q4_0, Q4_1 and Q8_0 weights; this model has {} \
                 (run it on the CPU: --device cpu)",
                w.ty.name()
            )));
        }
        let client = R::client(device);
        let (d, m, q, bits) = affine_form(w);
        Ok(GpuQWeight {
            n: w.n,
            k: w.k,
            bits,
            d: client.create_from_slice(f32::as_bytes(&d)),
            m: client.create_from_slice(f32::as_bytes(&m)),
            q: client.create_from_slice(u32::as_bytes(&q)),
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
                let total = rows * w.n;
                let cube_dim = CubeDim::new_1d(256);
                let cube_count = CubeCount::Static(total.div_ceil(256) as u32, 1, 1);
                let n_blocks = w.n * w.k / 32;
                let words = n_blocks * w.bits as usize;
                // SAFETY: every index the kernels read is bounded by the array lengths passed
                // here (x: rows·k, scales: n·k/32, quants: n·k/32 blocks); writes stop at rows·n.
                unsafe {
                    let args = (
                        ArrayArg::from_raw_parts(x.handle.clone(), rows * k),
                        ArrayArg::from_raw_parts(w.d.clone(), n_blocks),
                        ArrayArg::from_raw_parts(w.m.clone(), n_blocks),
                        ArrayArg::from_raw_parts(w.q.clone(), words),
                        ArrayArg::from_raw_parts(out.handle.clone(), total),
                    );
                    if w.bits == 4 {
                        qmatmul_u4::launch_unchecked::<R>(
                            &x.client, cube_count, cube_dim, args.0, args.1, args.2, args.3,
                            args.4, rows, w.n, k,
                        );
                    } else {
                        qmatmul_u8::launch_unchecked::<R>(
                            &x.client, cube_count, cube_dim, args.0, args.1, args.2, args.3,
                            args.4, rows, w.n, k,
                        );
                    }
                }
                out
            })
            .collect()
    }
}
