// Fused CPU kernels of the multiresolution hash-grid encoding (float32, OpenMP via at::parallel_for).
//
// They reproduce neural_mapping.encodings.HashGridEncoding exactly:
//   level l has cell size 1 / inv_cell[l] (metres); xs = x * inv_cell[l] (float32), x0 = floor(xs),
//   f = xs - x0 in [0, 1); corner c has offset bits (c>>2&1, c>>1&1, c&1) along (x, y, z);
//   trilinear weight w_c = wa_x * wa_y * wa_z with wa = f (bit 1) or 1 - f (bit 0);
//   row within a level: dense periodic (levels l < n_dense):  (cx mod R) + R ((cy mod R) + R (cz mod R))
//                       spatial hash (finer levels):          (cx * 1 ^ cy * 2654435761 ^ cz * 805459861) & (T - 1)
//   (the int64 products of the reference and the uint32 products here agree on the low 32 bits,
//    and T <= 2^24, so the masked rows are identical); absolute row = l * T + row.
//
// Shapes: x (N, 3) metres; table (L * T, F); features (N, L * F) laid out [level][feature];
// jacobian (N, L * F, 3) = d feature / d x (per metre).
//
// Kernels:
//   forward        (x, table)            -> features
//   forward_jac    (x, table)            -> features, jacobian
//   input_grad     (x, table, g)         -> grad_x (N, 3)   = sum_k g_k d feature_k / dx
//   jvp            (x, table, v)         -> (N, L * F)      = sum_a v_a d feature / dx_a
//   jac_vjp        (jac, g, c, s)        -> (N, 3)          = sum_k g[n, k] jac[n, k, :] (+ s g[n, c:c+3] if c >= 0)
//   scatter        (x, g[, v], rows)     -> (rows, F): sum_n g_nk * w_c (or v . grad_x w_c) into row idx_c
// The scatter parallelises over levels: every level owns its own block of T rows, so threads never
// write the same row and the result is deterministic (the same order of additions every run).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr uint32_t kP1 = 2654435761u;
constexpr uint32_t kP2 = 805459861u;

struct Grid {
  const float* inv_cell;  // (L,)
  int64_t L;
  int64_t T;
  int64_t n_dense;
  int64_t R;
};

// (a mod m) in [0, m) and (a + 1 mod m), with a 32-bit division when a fits (the common case).
inline void pmod2(int64_t a, int64_t m, int64_t* r) {
  int64_t q;
  if (a >= INT32_MIN && a <= INT32_MAX)
    q = static_cast<int32_t>(a) % static_cast<int32_t>(m);
  else
    q = a % m;
  if (q < 0) q += m;
  r[0] = q;
  r[1] = q + 1 == m ? 0 : q + 1;
}

// One level's cell around a point: absolute rows of the 8 corners (corner c has bits
// (c>>2&1, c>>1&1, c&1) along x, y, z) and the per-axis linear weights (bit 0: 1 - f, bit 1: f).
struct Cell {
  int64_t idx[8];
  float wx[2], wy[2], wz[2];
  float inv;  // 1 / cell size: d f / d x
};

inline void locate(const Grid& g, int64_t l, const float* p, Cell& cell) {
  const float inv = g.inv_cell[l];
  float f[3];
  int64_t i0[3];
  for (int a = 0; a < 3; ++a) {
    const float xs = p[a] * inv;
    const float x0 = std::floor(xs);
    f[a] = xs - x0;
    i0[a] = static_cast<int64_t>(x0);
  }
  const int64_t base = l * g.T;
  if (l < g.n_dense) {
    const int64_t R = g.R;
    int64_t cx[2], cy[2], cz[2];
    pmod2(i0[0], R, cx);
    pmod2(i0[1], R, cy);
    pmod2(i0[2], R, cz);
    for (int c = 0; c < 8; ++c)
      cell.idx[c] = base + cx[c >> 2 & 1] + R * (cy[c >> 1 & 1] + R * cz[c & 1]);
  } else {
    const uint32_t mask = static_cast<uint32_t>(g.T - 1);
    const uint32_t hx[2] = {static_cast<uint32_t>(i0[0]), static_cast<uint32_t>(i0[0] + 1)};
    const uint32_t hy[2] = {static_cast<uint32_t>(i0[1]) * kP1, static_cast<uint32_t>(i0[1] + 1) * kP1};
    const uint32_t hz[2] = {static_cast<uint32_t>(i0[2]) * kP2, static_cast<uint32_t>(i0[2] + 1) * kP2};
    for (int c = 0; c < 8; ++c)
      cell.idx[c] = base + static_cast<int64_t>((hx[c >> 2 & 1] ^ hy[c >> 1 & 1] ^ hz[c & 1]) & mask);
  }
  cell.wx[0] = 1.0f - f[0]; cell.wx[1] = f[0];
  cell.wy[0] = 1.0f - f[1]; cell.wy[1] = f[1];
  cell.wz[0] = 1.0f - f[2]; cell.wz[1] = f[2];
  cell.inv = inv;
}

// Trilinear weight of corner c (the reference's order of products: (wx * wy) * wz).
inline float corner_w(const Cell& cell, int c) {
  return cell.wx[c >> 2 & 1] * cell.wy[c >> 1 & 1] * cell.wz[c & 1];
}

// v . d w_c / d x (per metre) of corner c.
inline float corner_dw_dot(const Cell& cell, int c, float v0, float v1, float v2) {
  const int bx = c >> 2 & 1, by = c >> 1 & 1, bz = c & 1;
  const float sx = bx ? v0 : -v0, sy = by ? v1 : -v1, sz = bz ? v2 : -v2;
  return cell.inv * (sx * (cell.wy[by] * cell.wz[bz]) + sy * (cell.wx[bx] * cell.wz[bz]) +
                     sz * (cell.wx[bx] * cell.wy[by]));
}

// Interpolate 8 corner values s[c] (factorised along x, then y, then z) -> value, and optionally
// its gradient d value / d x (per metre) in d[3].
template <bool WANT_D>
inline float interp8(const Cell& cell, const float* s, float* d) {
  float ex[4], dx[4];
  for (int yz = 0; yz < 4; ++yz) {
    ex[yz] = cell.wx[0] * s[yz] + cell.wx[1] * s[4 + yz];
    if (WANT_D) dx[yz] = s[4 + yz] - s[yz];
  }
  float ey[2], dyy[2], dxy[2];
  for (int z = 0; z < 2; ++z) {
    ey[z] = cell.wy[0] * ex[z] + cell.wy[1] * ex[2 + z];
    if (WANT_D) {
      dyy[z] = ex[2 + z] - ex[z];
      dxy[z] = cell.wy[0] * dx[z] + cell.wy[1] * dx[2 + z];
    }
  }
  if (WANT_D) {
    d[0] = cell.inv * (cell.wz[0] * dxy[0] + cell.wz[1] * dxy[1]);
    d[1] = cell.inv * (cell.wz[0] * dyy[0] + cell.wz[1] * dyy[1]);
    d[2] = cell.inv * (ey[1] - ey[0]);
  }
  return cell.wz[0] * ey[0] + cell.wz[1] * ey[1];
}

Grid make_grid(const torch::Tensor& inv_cell, int64_t T, int64_t n_dense, int64_t R) {
  TORCH_CHECK(T > 0 && (T & (T - 1)) == 0, "hashgrid: table size must be a power of two, got ", T);
  TORCH_CHECK(T <= (int64_t(1) << 32), "hashgrid: table size above 2^32 is not supported");
  return Grid{inv_cell.data_ptr<float>(), inv_cell.size(0), T, n_dense, R};
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& table, const torch::Tensor& inv_cell, int64_t T) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu() && inv_cell.device().is_cpu(),
              "hashgrid_ext: CPU tensors only");
  TORCH_CHECK(x.scalar_type() == torch::kFloat && table.scalar_type() == torch::kFloat &&
                  inv_cell.scalar_type() == torch::kFloat,
              "hashgrid_ext: float32 tensors only");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && x.is_contiguous(), "hashgrid_ext: x must be contiguous (N, 3)");
  TORCH_CHECK(table.dim() == 2 && table.is_contiguous(), "hashgrid_ext: table must be contiguous (L*T, F)");
  TORCH_CHECK(inv_cell.dim() == 1 && inv_cell.is_contiguous(), "hashgrid_ext: inv_cell must be (L,)");
  TORCH_CHECK(table.size(0) == inv_cell.size(0) * T, "hashgrid_ext: table has ", table.size(0),
              " rows, expected L*T = ", inv_cell.size(0) * T);
}

constexpr int64_t kGrain = 1024;
constexpr int64_t kBlock = 256;

// Cells of points [b0, b1) at level l into cells[0 .. b1-b0), prefetching their table rows so the
// gathers of the second pass overlap their cache misses (~2x on scattered points).
inline void locate_block(const Grid& g, int64_t l, const float* x, int64_t b0, int64_t b1, const float* rows,
                         int64_t F, Cell* cells) {
  for (int64_t n = b0; n < b1; ++n) {
    Cell& cell = cells[n - b0];
    locate(g, l, x + 3 * n, cell);
    for (int c = 0; c < 8; ++c) __builtin_prefetch(rows + cell.idx[c] * F);
  }
}

// ---------------------------------------------------------------------------------------- forward

template <int FT>
void forward_impl(const Grid& g, const float* x, const float* table, int64_t F_rt, int64_t N, float* out,
                  float* jac) {
  const int64_t F = FT > 0 ? FT : F_rt;
  const int64_t LF = g.L * F;
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    std::vector<Cell> cells(kBlock);
    float sv[8];
    // level-major inside blocks of points: one level's table rows stay in cache across the block;
    // pass 1 locates every point's cell and prefetches its rows, pass 2 interpolates
    for (int64_t b0 = n0; b0 < n1; b0 += kBlock) {
      const int64_t b1 = std::min(n1, b0 + kBlock);
      for (int64_t l = 0; l < g.L; ++l) {
        locate_block(g, l, x, b0, b1, table, F, cells.data());
        for (int64_t n = b0; n < b1; ++n) {
          const Cell& cell = cells[n - b0];
          float* o = out + n * LF + l * F;
          float* J = jac ? jac + (n * LF + l * F) * 3 : nullptr;
          for (int64_t k = 0; k < F; ++k) {
            for (int c = 0; c < 8; ++c) sv[c] = table[cell.idx[c] * F + k];
            o[k] = J ? interp8<true>(cell, sv, J + 3 * k) : interp8<false>(cell, sv, nullptr);
          }
        }
      }
    }
  });
}

void dispatch_forward(const Grid& g, const float* x, const float* table, int64_t F, int64_t N, float* out,
                      float* jac) {
  switch (F) {
    case 1: forward_impl<1>(g, x, table, F, N, out, jac); break;
    case 2: forward_impl<2>(g, x, table, F, N, out, jac); break;
    case 4: forward_impl<4>(g, x, table, F, N, out, jac); break;
    case 8: forward_impl<8>(g, x, table, F, N, out, jac); break;
    default: forward_impl<0>(g, x, table, F, N, out, jac); break;
  }
}

torch::Tensor forward(torch::Tensor x, torch::Tensor table, torch::Tensor inv_cell, int64_t T, int64_t n_dense,
                      int64_t R) {
  check_inputs(x, table, inv_cell, T);
  const Grid g = make_grid(inv_cell, T, n_dense, R);
  const int64_t N = x.size(0), F = table.size(1);
  auto out = torch::empty({N, g.L * F}, x.options());
  dispatch_forward(g, x.data_ptr<float>(), table.data_ptr<float>(), F, N, out.data_ptr<float>(), nullptr);
  return out;
}

std::vector<torch::Tensor> forward_jac(torch::Tensor x, torch::Tensor table, torch::Tensor inv_cell, int64_t T,
                                       int64_t n_dense, int64_t R) {
  check_inputs(x, table, inv_cell, T);
  const Grid g = make_grid(inv_cell, T, n_dense, R);
  const int64_t N = x.size(0), F = table.size(1);
  auto out = torch::empty({N, g.L * F}, x.options());
  auto jac = torch::empty({N, g.L * F, 3}, x.options());
  dispatch_forward(g, x.data_ptr<float>(), table.data_ptr<float>(), F, N, out.data_ptr<float>(),
                   jac.data_ptr<float>());
  return {out, jac};
}

// ------------------------------------------------------------------------- input gradient and jvp

// grad_x[n, a] = sum_{l,k} g[n, l*F + k] * sum_c dw_c/dx_a * table[idx_c, k]
torch::Tensor input_grad(torch::Tensor x, torch::Tensor table, torch::Tensor gout, torch::Tensor inv_cell, int64_t T,
                         int64_t n_dense, int64_t R) {
  check_inputs(x, table, inv_cell, T);
  const Grid g = make_grid(inv_cell, T, n_dense, R);
  const int64_t N = x.size(0), F = table.size(1), LF = g.L * F;
  TORCH_CHECK(gout.scalar_type() == torch::kFloat && gout.is_contiguous() && gout.dim() == 2 &&
                  gout.size(0) == N && gout.size(1) == LF,
              "hashgrid_ext: grad_out must be contiguous float32 (N, L*F)");
  auto gx = torch::empty({N, 3}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  const float* gp = gout.data_ptr<float>();
  float* op = gx.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    std::vector<Cell> cells(kBlock);
    float sv[8], d[3];
    for (int64_t n = n0; n < n1; ++n) op[3 * n] = op[3 * n + 1] = op[3 * n + 2] = 0.f;
    for (int64_t b0 = n0; b0 < n1; b0 += kBlock) {  // level-major inside blocks, as forward
      const int64_t b1 = std::min(n1, b0 + kBlock);
      for (int64_t l = 0; l < g.L; ++l) {
        locate_block(g, l, xp, b0, b1, tp, F, cells.data());
        for (int64_t n = b0; n < b1; ++n) {
          const Cell& cell = cells[n - b0];
          const float* gk = gp + n * LF + l * F;
          for (int c = 0; c < 8; ++c) {  // sv_c = sum_k g_k table[idx_c, k]
            float acc = 0.f;
            for (int64_t k = 0; k < F; ++k) acc += gk[k] * tp[cell.idx[c] * F + k];
            sv[c] = acc;
          }
          interp8<true>(cell, sv, d);
          op[3 * n] += d[0];
          op[3 * n + 1] += d[1];
          op[3 * n + 2] += d[2];
        }
      }
    }
  });
  return gx;
}

// out[n, l*F + k] = sum_c (sum_a v[n, a] dw_c/dx_a) table[idx_c, k]
torch::Tensor jvp(torch::Tensor x, torch::Tensor table, torch::Tensor v, torch::Tensor inv_cell, int64_t T,
                  int64_t n_dense, int64_t R) {
  check_inputs(x, table, inv_cell, T);
  const Grid g = make_grid(inv_cell, T, n_dense, R);
  const int64_t N = x.size(0), F = table.size(1), LF = g.L * F;
  TORCH_CHECK(v.scalar_type() == torch::kFloat && v.is_contiguous() && v.dim() == 2 && v.size(0) == N &&
                  v.size(1) == 3,
              "hashgrid_ext: v must be contiguous float32 (N, 3)");
  auto out = torch::empty({N, LF}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    std::vector<Cell> cells(kBlock);
    float dv[8];
    for (int64_t b0 = n0; b0 < n1; b0 += kBlock) {  // level-major inside blocks, as forward
      const int64_t b1 = std::min(n1, b0 + kBlock);
      for (int64_t l = 0; l < g.L; ++l) {
        locate_block(g, l, xp, b0, b1, tp, F, cells.data());
        for (int64_t n = b0; n < b1; ++n) {
          const float v0 = vp[3 * n], v1 = vp[3 * n + 1], v2 = vp[3 * n + 2];
          const Cell& cell = cells[n - b0];
          for (int c = 0; c < 8; ++c) dv[c] = corner_dw_dot(cell, c, v0, v1, v2);
          float* o = op + n * LF + l * F;
          for (int64_t k = 0; k < F; ++k) {
            float acc = 0.f;
            for (int c = 0; c < 8; ++c) acc += dv[c] * tp[cell.idx[c] * F + k];
            o[k] = acc;
          }
        }
      }
    }
  });
  return out;
}

// jac (N, K, 3) contiguous, g (N, >= K) float32 with unit column stride -> (N, 3): the input gradient
// from a jacobian that forward_jac computed (fast sdf + gradient queries: g is the trunk's gradient
// w.r.t. its inputs, whose first K columns are the features). With xyz_col >= 0, the raw-position
// inputs' part xyz_scale * g[n, xyz_col + a] is added (a trunk fed [features, xyz_scale * x]).
torch::Tensor jac_vjp(torch::Tensor jac, torch::Tensor gin, int64_t xyz_col, double xyz_scale) {
  TORCH_CHECK(jac.device().is_cpu() && gin.device().is_cpu(), "hashgrid_ext: CPU tensors only");
  TORCH_CHECK(jac.scalar_type() == torch::kFloat && gin.scalar_type() == torch::kFloat,
              "hashgrid_ext: float32 tensors only");
  TORCH_CHECK(jac.dim() == 3 && jac.size(2) == 3 && jac.is_contiguous(), "hashgrid_ext: jac must be contiguous (N, K, 3)");
  const int64_t N = jac.size(0), K = jac.size(1);
  TORCH_CHECK(gin.dim() == 2 && gin.size(0) == N && gin.size(1) >= K && (gin.stride(1) == 1 || gin.size(1) == 1),
              "hashgrid_ext: g must be (N, >= K) with unit column stride");
  TORCH_CHECK(xyz_col < 0 || xyz_col + 3 <= gin.size(1), "hashgrid_ext: xyz_col + 3 exceeds g's columns");
  const int64_t gs = gin.stride(0);
  const float s = static_cast<float>(xyz_scale);
  auto out = torch::empty({N, 3}, jac.options());
  const float* jp = jac.data_ptr<float>();
  const float* gp = gin.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* J = jp + n * K * 3;
      const float* g = gp + n * gs;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f;
      for (int64_t k = 0; k < K; ++k) {
        a0 += g[k] * J[3 * k];
        a1 += g[k] * J[3 * k + 1];
        a2 += g[k] * J[3 * k + 2];
      }
      if (xyz_col >= 0) {
        a0 += s * g[xyz_col];
        a1 += s * g[xyz_col + 1];
        a2 += s * g[xyz_col + 2];
      }
      op[3 * n] = a0;
      op[3 * n + 1] = a1;
      op[3 * n + 2] = a2;
    }
  });
  return out;
}

// ----------------------------------------------------------------------------------------- scatter

// grad_table[idx_c, k] += g[n, l*F + k] * (w_c  or  v[n] . dw_c/dx)   (v undefined -> w_c)
torch::Tensor scatter(torch::Tensor x, torch::Tensor gout, c10::optional<torch::Tensor> v_opt, int64_t n_rows,
                      torch::Tensor inv_cell, int64_t T, int64_t n_dense, int64_t R) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 2 && x.size(1) == 3 &&
                  x.is_contiguous(),
              "hashgrid_ext: x must be contiguous float32 (N, 3) on CPU");
  const Grid g = make_grid(inv_cell, T, n_dense, R);
  TORCH_CHECK(n_rows == g.L * T, "hashgrid_ext: n_rows must be L*T");
  const int64_t N = x.size(0);
  TORCH_CHECK(gout.scalar_type() == torch::kFloat && gout.is_contiguous() && gout.dim() == 2 && gout.size(0) == N &&
                  gout.size(1) % g.L == 0,
              "hashgrid_ext: grad_out must be contiguous float32 (N, L*F)");
  const int64_t LF = gout.size(1), F = LF / g.L;
  const bool directional = v_opt.has_value() && v_opt->defined();
  const float* vp = nullptr;
  if (directional) {
    TORCH_CHECK(v_opt->scalar_type() == torch::kFloat && v_opt->is_contiguous() && v_opt->dim() == 2 &&
                    v_opt->size(0) == N && v_opt->size(1) == 3,
                "hashgrid_ext: v must be contiguous float32 (N, 3)");
    vp = v_opt->data_ptr<float>();
  }
  auto grad = torch::zeros({n_rows, F}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* gp = gout.data_ptr<float>();
  float* op = grad.data_ptr<float>();
  // One level per task: level l writes only rows [l*T, (l+1)*T) -> no races, deterministic.
  at::parallel_for(0, g.L, 1, [&](int64_t l0, int64_t l1) {
    std::vector<Cell> cells(kBlock);
    for (int64_t l = l0; l < l1; ++l) {
      for (int64_t n = 0; n < N; ++n) {
        const int64_t i = n % kBlock;
        if (i == 0) locate_block(g, l, xp, n, std::min(N, n + kBlock), op, F, cells.data());
        const Cell& cell = cells[i];
        const float* gk = gp + n * LF + l * F;
        float wc[8];
        if (directional) {
          const float v0 = vp[3 * n], v1 = vp[3 * n + 1], v2 = vp[3 * n + 2];
          for (int c = 0; c < 8; ++c) wc[c] = corner_dw_dot(cell, c, v0, v1, v2);
        } else {
          for (int c = 0; c < 8; ++c) wc[c] = corner_w(cell, c);
        }
        for (int c = 0; c < 8; ++c) {
          float* row = op + cell.idx[c] * F;
          for (int64_t k = 0; k < F; ++k) row[k] += wc[c] * gk[k];
        }
      }
    }
  });
  return grad;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused CPU kernels of neural_mapping's hash-grid encoding";
  m.def("forward", &forward, "features (N, L*F)");
  m.def("forward_jac", &forward_jac, "features (N, L*F) and d features / dx (N, L*F, 3)");
  m.def("input_grad", &input_grad, "grad_x (N, 3) = sum_k g_k d feature_k / dx");
  m.def("jvp", &jvp, "(N, L*F) = d feature / dx . v");
  m.def("jac_vjp", &jac_vjp, "(N, 3) = sum_k g[n, k] jac[n, k, :] (+ s g[n, c:c+3])", py::arg("jac"), py::arg("g"),
        py::arg("xyz_col") = -1, py::arg("xyz_scale") = 0.0);
  m.def("scatter", &scatter, "table gradient (L*T, F)", py::arg("x"), py::arg("gout"), py::arg("v"),
        py::arg("n_rows"), py::arg("inv_cell"), py::arg("T"), py::arg("n_dense"), py::arg("R"));
  m.def("num_threads", []() { return at::get_num_threads(); });
}
