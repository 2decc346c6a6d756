// C++ CPU kernels of lstm_fused::lstm_layer_forward / lstm_layer_backward.
//
// Per layer: one GEMM for the input projections of every step and direction (unless the fused
// loop does them in its tiles); then, per direction, the time loop in C++. The forward has
// two loops (choose_loop): fused (default without projection: the recurrent product, and
// for small enough weights the input projection too, in register tiles with the gate math on
// the accumulators, lstm_recurrent_tile.h) and rows (one GEMM a step on a weight packed once,
// reused_weight_gemm.h, then the fused, vectorised gate math of lstm_cell_vec.h parallel over
// the batch rows; the only loop with a projection). The backward runs the reverse time loop,
// fused (lstm_recurrent_tile_backward.h) after the fused forward, the rows way otherwise, then
// the products over all steps in register tiles: grad_x with the reverse loop's tiles
// (lstm_recurrent_tile_backward.h, input_grad), the weight gradients by weight_grad_gemm.h.
#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "cpu/lstm_recurrent_tile.h"
#include "cpu/lstm_recurrent_tile_backward.h"
#include "cpu/online_pooling.h"
#include "cpu/parallel_time_loop.h"
#include "cpu/reused_weight_gemm.h"
#include "cpu/kernels.h"
#include "cpu/weight_grad_gemm.h"
#include "attentive_args.h"
#include "lstm_layer_args.h"
#include "lstm_layer_grads.h"
#include "optional_tensor.h"
#include "switches.h"

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

constexpr LayerBackend kCpu{at::kCPU, "cpu", /*half_types=*/false};

// Which rows of direction d start step t from the initial state, (T * B) flags at [t * B + b]
// (lstm_layer_args.h): direction 0 where resets[t, b] for 0 < t < len[b], direction 1 where
// resets[t + 1, b] for t + 1 < len[b]. Empty without resets.
std::vector<uint8_t> reset_rows(const OptTensor& resets, int64_t d, const std::vector<int64_t>& len,
                                int64_t T, int64_t B) {
  std::vector<uint8_t> out;
  if (!present(resets)) return out;
  out.assign(T * B, 0);
  const bool* r = resets->data_ptr<bool>();  // (T, B), contiguous on the CPU (checked)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t at = d == 0 ? t : t + 1;  // the time index of the flag
    if ((d == 0 && t == 0) || at >= T) continue;
    for (int64_t b = 0; b < B; ++b) out[t * B + b] = r[at * B + b] && at < len[b];
  }
  return out;
}

// Where a direction's time loop writes y. By default the whole (T, B, D*R) output (slots = T).
// For the attentive inference (attentive_lstm_inference_cpu, one direction) a ring of `slots`
// steps (slots, B, R): step s goes to slot s % slots, and after every `slots` steps (and after
// the last) flush(first_step, n) is called, outside any parallel region, to consume them
// before they are overwritten. Then the layer's output is never held whole.
struct OutputRing {
  int64_t slots;
  std::function<void(int64_t, int64_t)> flush;
};

// After step `step` of T: flush the ring when its slots are full or the sequence ends.
inline void after_step(const OutputRing* ring, int64_t step, int64_t T) {
  if (ring == nullptr) return;
  const int64_t n = step % ring->slots + 1;
  if (n == ring->slots || step + 1 == T) ring->flush(step + 1 - n, n);
}

// Packed weights of a direction above which the fused loops are run as weights streamed from
// memory rather than from a core's caches (choose_loop, parallel_tile_loop's share_rows).
constexpr int64_t kStreamedWeightBytes = int64_t(8) << 20;

// Rows per parallel chunk: enough elements that a chunk outweighs the threading overhead.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(H, 1)); }

template <typename scalar_t>
void forward_direction(const LSTMLayerSizes& s, int64_t d, const std::vector<int64_t>& len,
                       const std::vector<uint8_t>& fresh, const Tensor& gx, const Tensor& h0,
                       const Tensor& c0, const Tensor& w_hh, const OptTensor& w_hr,
                       const OptTensor& w_peep, Tensor& y, Tensor& h_n, Tensor& c_n, Tensor& gates,
                       Tensor& cells, bool save, const OutputRing* ring) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G, R = s.R, D = s.D;
  const int64_t slots = ring != nullptr ? ring->slots : T;
  // With save, gates and cells are (D, T, B, .) kept for the backward; without (inference),
  // they are (B, .) scratch rows rewritten every step, which keeps them in cache.
  const int64_t step_rows = save ? B : 0;
  const bool reverse = d == 1, proj = s.P > 0;
  // The state lives in h_n and c_n (contiguous (D, B, .) outputs): no copy at the end.
  Tensor h_state = h_n.select(0, d).copy_(h0.select(0, d));  // (B, R)
  Tensor c_state = c_n.select(0, d).copy_(c0.select(0, d));  // (B, H)
  const Tensor h0_d = h0.select(0, d).contiguous(), c0_d = c0.select(0, d).contiguous();
  Tensor hpre = proj ? at::empty({B, H}, gx.options()) : Tensor();
  const ReusedWeightGemm recurrent(w_hh.select(0, d), B, T);  // (B, R) -> (B, G)
  const ReusedWeightGemm projection(proj ? w_hr->select(0, d) : Tensor(), proj ? B : 0, T);
  const Tensor peep_c = present(w_peep) ? w_peep->select(0, d).contiguous() : Tensor();
  const scalar_t* peep = present(w_peep) ? peep_c.data_ptr<scalar_t>() : nullptr;

  const scalar_t* gx_p = gx.data_ptr<scalar_t>();  // (T, B, D, G)
  scalar_t* y_p = y.data_ptr<scalar_t>();
  scalar_t* gates_p = gates.data_ptr<scalar_t>() + (save ? d * T * B * G : 0);
  scalar_t* cells_p = cells.data_ptr<scalar_t>() + (save ? d * T * B * H : 0);
  scalar_t* h_p = h_state.data_ptr<scalar_t>();
  scalar_t* c_p = c_state.data_ptr<scalar_t>();
  scalar_t* hpre_p = proj ? hpre.data_ptr<scalar_t>() : nullptr;

  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = reverse ? T - 1 - step : step;
    if (!fresh.empty())  // resets: these rows start step t from (h0, c0)
      for (int64_t b = 0; b < B; ++b)
        if (fresh[t * B + b]) {
          std::memcpy(h_p + b * R, h0_d.data_ptr<scalar_t>() + b * R, R * sizeof(scalar_t));
          std::memcpy(c_p + b * H, c0_d.data_ptr<scalar_t>() + b * H, H * sizeof(scalar_t));
        }
    const Tensor z = recurrent(h_state);  // (B, G)
    const scalar_t* z_p = z.data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        scalar_t* g_row = gates_p + (t * step_rows + b) * G;
        scalar_t* c_row = cells_p + (t * step_rows + b) * H;
        scalar_t* y_row = y_p + ((t % slots) * B + b) * D * R + d * R;
        if (t < len[b]) {
          scalar_t* h_out = proj ? hpre_p + b * H : h_p + b * R;
          cell_forward_row<scalar_t>(gx_p + ((t * B + b) * D + d) * G, z_p + b * G, c_p + b * H,
                                     peep, g_row, c_row, h_out, H);
          std::memcpy(c_p + b * H, c_row, H * sizeof(scalar_t));
          if (!proj) std::memcpy(y_row, h_out, R * sizeof(scalar_t));
        } else {  // padding: state carried, gates zero, output zero
          std::memset(g_row, 0, G * sizeof(scalar_t));
          std::memcpy(c_row, c_p + b * H, H * sizeof(scalar_t));
          if (proj) std::memset(hpre_p + b * H, 0, H * sizeof(scalar_t));
          else std::memset(y_row, 0, R * sizeof(scalar_t));
        }
      }
    });
    if (proj) {
      const Tensor r = projection(hpre);  // (B, P)
      const scalar_t* r_p = r.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        scalar_t* y_row = y_p + ((t % slots) * B + b) * D * R + d * R;
        if (t < len[b]) {
          std::memcpy(h_p + b * R, r_p + b * R, R * sizeof(scalar_t));
          std::memcpy(y_row, r_p + b * R, R * sizeof(scalar_t));
        } else {
          std::memset(y_row, 0, R * sizeof(scalar_t));
        }
      }
    }
    after_step(ring, step, T);
  }
}

// The time loop with the recurrent product fused into the gate math (lstm_recurrent_tile.h):
// per step, one parallel pass over panels of hidden units, each thread multiplying h_{t-1} by
// its own panels of the packed W_hh and finishing the gates of those units in registers. No
// GEMM call inside the loop. h is double-buffered (every thread reads all of h_{t-1}).
// Without projection only (the projection needs every unit of the step first).
// The input term: gx (T, B, D, G), the layer's input projection with bias; or, when gx is
// undefined, x_t W_ih^T + bias computed in the same tiles from x (T, B, I) contiguous, w_ih
// and bias2 (D * G, or undefined without bias).
template <typename scalar_t>
void forward_direction_fused(const LSTMLayerSizes& s, int64_t d, const std::vector<int64_t>& len,
                             const std::vector<uint8_t>& fresh, const Tensor& gx, const Tensor& x,
                             const Tensor& w_ih, const Tensor& bias2, const Tensor& h0,
                             const Tensor& c0, const Tensor& w_hh, const OptTensor& w_peep,
                             Tensor& y, Tensor& h_n, Tensor& c_n, Tensor& gates, Tensor& cells,
                             bool save, const OutputRing* ring) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G, R = s.R, D = s.D;
  const int64_t slots = ring != nullptr ? ring->slots : T;
  const bool reverse = d == 1;
  const bool fuse_input = !gx.defined();
  const Tensor w_hh_d = w_hh.select(0, d).contiguous();
  const Tensor panels = fuse_input
                            ? pack_recurrent<scalar_t>({w_ih.select(0, d).contiguous(), w_hh_d}, H)
                            : pack_recurrent<scalar_t>({w_hh_d}, H);
  const int64_t n_panels = panels.size(0);
  // With the input fused, the epilogue adds the bias (the same for every row: stride 0).
  const Tensor bias_d = !fuse_input       ? Tensor()
                        : bias2.defined() ? bias2.narrow(0, d * G, G).contiguous()
                                          : at::zeros({G}, x.options());
  const Tensor peep_c = present(w_peep) ? w_peep->select(0, d).contiguous() : Tensor();
  // h double-buffered: step s reads h_bufs[s % 2] (h_{t-1}) and writes the other.
  Tensor h_bufs = at::empty({2, B, R}, h0.options());
  h_bufs.select(0, 0).copy_(h0.select(0, d));
  Tensor c_state = c_n.select(0, d).copy_(c0.select(0, d));  // (B, H), in c_n: no copy at the end
  const Tensor h0_d = h0.select(0, d).contiguous(), c0_d = c0.select(0, d).contiguous();

  RecurrentStep<scalar_t> base{};
  base.panels = panels.data_ptr<scalar_t>();
  base.I = fuse_input ? s.I : 0;
  base.in_stride = fuse_input ? 0 : D * G;
  base.peep = present(w_peep) ? peep_c.data_ptr<scalar_t>() : nullptr;
  base.c = c_state.data_ptr<scalar_t>();
  base.y_stride = D * R;
  base.len = len.data();
  base.H = H;
  base.R = R;
  base.h0 = h0_d.data_ptr<scalar_t>();
  base.c0 = c0_d.data_ptr<scalar_t>();
  scalar_t* const h_p = h_bufs.data_ptr<scalar_t>();
  // Raw pointers taken here: the step body runs inside an OpenMP region, where nothing may
  // throw (parallel_time_loop.h).
  const scalar_t* const x_p = fuse_input ? x.data_ptr<scalar_t>() : nullptr;
  const scalar_t* const bias_p = fuse_input ? bias_d.data_ptr<scalar_t>() : nullptr;
  const scalar_t* const gx_p = fuse_input ? nullptr : gx.data_ptr<scalar_t>();
  scalar_t* const y_p = y.data_ptr<scalar_t>();
  scalar_t* const gates_p = save ? gates.data_ptr<scalar_t>() : nullptr;
  scalar_t* const cells_p = save ? cells.data_ptr<scalar_t>() : nullptr;
  // Without h0 the module passes zeros: the first step then needs no recurrent product (1/T of
  // the loop's multiply-adds). (With inf or NaN in W_hh, nn.LSTM's first step gives NaN from
  // 0 * inf where this gives a number; every later step is NaN in both.)
  const bool h0_zero = std::all_of(h_p, h_p + B * R, [](scalar_t v) { return v == scalar_t(0); });
  // Below about a quarter million multiply-adds a step, a barrier a step costs more than
  // sharing the step out saves.
  const bool parallel = B * G * (base.I + R) >= (int64_t(1) << 18) && n_panels > 1;
  // One parallel loop over all T steps, or with a ring one per `slots` steps, each followed by
  // the ring's flush (which runs ATen ops, so outside the loop's OpenMP region).
  for (int64_t first = 0; first < T; first += slots) {
    const int64_t n_steps = std::min(slots, T - first);
    parallel_tile_loop(
        n_steps, n_panels, B, parallel,
        [&](int64_t i, int64_t p0, int64_t p1, int64_t b0, int64_t b1) {
          const int64_t step = first + i;
          const int64_t t = reverse ? T - 1 - step : step;
          RecurrentStep<scalar_t> st = base;
          st.t = t;
          st.h_prev = h_p + (step % 2) * B * R;
          st.h_prev_zero = step == 0 && h0_zero;
          st.h_next = h_p + ((step + 1) % 2) * B * R;
          // Resets: the rows whose next step starts from (h0, c0) get them as h_next
          // and c.
          const int64_t t_after = reverse ? t - 1 : t + 1;
          st.reset_next = fresh.empty() || step + 1 == T ? nullptr : fresh.data() + t_after * B;
          if (fuse_input) {
            st.x = x_p + t * B * s.I;
            st.z_in = bias_p;
          } else {
            st.z_in = gx_p + (t * B * D + d) * G;
          }
          st.y = y_p + (t % slots) * B * D * R + d * R;
          st.gates = save ? gates_p + (d * T + t) * B * G : nullptr;
          st.cells = save ? cells_p + (d * T + t) * B * H : nullptr;
          for_each_tile(p0, p1, b0, b1, [&](auto mr, int64_t p, int64_t r0) {
            step_tile<scalar_t, decltype(mr)::value>(st, p, r0);
          });
        },
        /*share_rows=*/panels.nbytes() <= kStreamedWeightBytes);
    if (ring != nullptr) ring->flush(first, n_steps);
  }
  h_n.select(0, d).copy_(h_bufs.select(0, T % 2));
}

// Which time loops run. By default the fused loops, forward and backward, when there is no
// projection and T >= 4: their packing of W_hh is one pass over the weight, which one step (an
// LSTMCell call) or two would not pay back; otherwise the row loop.
// The fused forward also does the input projection in its tiles (fuse_input) when B >= 2 and
// the packed [W_ih, W_hh] of a direction is at most kStreamedWeightBytes, or B >= 32. Each step
// streams those weights through the cores' caches: for larger weights and few rows the tiles
// wait on memory, and one GEMM for the whole layer before the loop is faster (and writes no
// (T, B, G) projection, whose first touch costs page faults); with one row, that GEMM (M = T
// rows instead of 1 per step) gains back what the tiles save. Above kStreamedWeightBytes the
// fused loops share out the panels of every step, not the rows (parallel_tile_loop), so that
// each thread streams only its part of the weights.
// 2-core AMD EPYC, no_grad, B=32, 2 threads sharing the rows, tiles vs GEMM: 66.9 vs 70.3 ms at
// 8 MiB, 91.6 vs 80.5 at 18. 1 thread, 21 MiB (I=256, H=1024), T=100, tiles vs GEMM: B=32
// 168 vs 184 ms, B=16 113 vs 108, B=8 69 vs 58.
// The switch cpu_loop (csrc/switches.h) forces one: rows, fused (fuse_input chosen as above),
// fused_gemm (fused, input projection by one GEMM) or fused_input (fused, in the tiles).
enum class TimeLoop { Rows, Fused };

struct LoopChoice {
  TimeLoop loop;
  bool fuse_input;  // Fused only: the input projection in the forward's tiles
};

LoopChoice choose_loop(const LSTMLayerSizes& s, int64_t elem_size) {
  const bool small_weights = (s.I + s.R) * s.G * elem_size <= kStreamedWeightBytes;
  const LoopChoice fused{TimeLoop::Fused, s.B >= 2 && (small_weights || s.B >= 32)};
  const LoopChoice rows{TimeLoop::Rows, false};
  if (s.P > 0) return rows;
  switch (switches().cpu_loop) {
    case CpuLoop::Auto:
      return s.T >= 4 ? fused : rows;
    case CpuLoop::Rows:
      return rows;
    case CpuLoop::Fused:
      return fused;
    case CpuLoop::FusedGemm:
      return {TimeLoop::Fused, false};
    case CpuLoop::FusedInput:
      return {TimeLoop::Fused, true};
  }
  return fused;
}

// The forward of one layer; with save, also the gates and cells kept for the backward.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> layer_forward(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets, bool save, const OutputRing* ring = nullptr,
    const Tensor& ring_buffer = Tensor()) {
  const LSTMLayerSizes s =
      check_layer_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, kCpu);
  const std::vector<int64_t> len = read_lengths(lengths, s.B, s.T, "lstm_fused");
  const auto opts = x.options();
  const LoopChoice choice = choose_loop(s, x.element_size());
  const TimeLoop loop = choice.loop;
  const bool fuse_input = choice.fuse_input;
  const Tensor x_c = x.contiguous();
  const Tensor bias2 = present(bias) ? bias->reshape({s.D * s.G}).contiguous() : Tensor();
  // Otherwise the input projections of every step and both directions in one GEMM:
  // (T*B, I) x (I, D*G).
  Tensor gx;
  if (!fuse_input) {
    const ReusedWeightGemm input_projection(
        w_ih.reshape({s.D * s.G, s.I}), s.T * s.B, 1,
        bias2.defined() ? c10::optional<Tensor>(bias2) : c10::nullopt);
    gx = input_projection(x_c.view({s.T * s.B, s.I})).view({s.T, s.B, s.D, s.G});
  }

  Tensor y = ring != nullptr ? ring_buffer : new_output({s.T, s.B, s.D * s.R}, opts);
  Tensor h_n = new_output({s.D, s.B, s.R}, opts);
  Tensor c_n = new_output({s.D, s.B, s.H}, opts);
  Tensor gates = save ? new_output({s.D, s.T, s.B, s.G}, opts) : at::empty({s.B, s.G}, opts);
  Tensor cells = save ? new_output({s.D, s.T, s.B, s.H}, opts) : at::empty({s.B, s.H}, opts);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_layer_forward_cpu", [&] {
    for (int64_t d = 0; d < s.D; ++d) {
      const std::vector<uint8_t> fresh = reset_rows(resets, d, len, s.T, s.B);
      if (loop == TimeLoop::Fused)
        forward_direction_fused<scalar_t>(s, d, len, fresh, gx, x_c, w_ih, bias2, h0, c0, w_hh,
                                          w_peep, y, h_n, c_n, gates, cells, save, ring);
      else
        forward_direction<scalar_t>(s, d, len, fresh, gx, h0, c0, w_hh, w_hr, w_peep, y, h_n, c_n,
                                    gates, cells, save, ring);
    }
  });
  return {y, h_n, c_n, gates, cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cpu(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets) {
  const OneThreadIfBusy threads;  // parallel_time_loop.h
  return layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets,
                       /*save=*/true);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference_cpu(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets) {
  const OneThreadIfBusy threads;  // parallel_time_loop.h
  auto out = layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets,
                           /*save=*/false);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

// The last layer of an attentive LSTM in inference (docs/contract.md, section 2): one
// direction, its outputs pooled by additive attention while the loop runs (online_pooling.h),
// through a ring of chunk_size steps, so the (T, B, R) output is never written. Layer arguments as
// lstm_layer_forward; proj_weight (A, R), proj_bias (A,) or None, v (A,), qproj (B, A) or None
// (the projected query). Returns context (B, R), alpha (B, T), lse (B,), h_n (1, B, R),
// c_n (1, B, H), the values of lstm_layer_forward followed by attention_pooling_forward.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> attentive_lstm_inference_cpu(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const Tensor& proj_weight, const OptTensor& proj_bias, const Tensor& v, const OptTensor& qproj,
    int64_t chunk_size) {
  const OneThreadIfBusy threads;  // parallel_time_loop.h
  const LSTMLayerSizes s = check_attentive_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths,
                                                proj_weight, proj_bias, v, qproj, chunk_size, kCpu)
                               .layer;
  const int64_t slots = std::max<int64_t>(1, std::min(chunk_size, s.T));
  const Tensor ring_buffer = at::empty({slots, s.B, s.R}, x.options());
  OnlinePooling pool(ring_buffer, proj_weight, present(proj_bias) ? *proj_bias : Tensor(), v,
                     present(qproj) ? *qproj : Tensor(),
                     read_lengths(lengths, s.B, s.T, "lstm_fused"), s.T);
  const OutputRing ring{slots, [&pool](int64_t first, int64_t n) { pool.add(first, n); }};
  auto out = layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, c10::nullopt,
                           /*save=*/false, &ring, ring_buffer);
  auto [context, alpha, lse] = pool.finish();
  return {context, alpha, lse, std::get<1>(out), std::get<2>(out)};
}

template <typename scalar_t>
void backward_direction(const LSTMLayerSizes& s, int64_t d, const std::vector<int64_t>& len,
                        const std::vector<uint8_t>& fresh, const Tensor& gy, const Tensor& grad_h_n,
                        const Tensor& grad_c_n, const Tensor& c0, const Tensor& w_hh,
                        const OptTensor& w_hr, const OptTensor& w_peep, const Tensor& gates,
                        const Tensor& cells, Tensor& dZ, Tensor& dR, Tensor& grad_h0,
                        Tensor& grad_c0) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G, R = s.R, D = s.D;
  const bool reverse = d == 1, proj = s.P > 0;
  Tensor dh_state = grad_h_n.select(0, d).contiguous().clone();  // (B, R)
  Tensor dc_state = grad_c_n.select(0, d).contiguous().clone();  // (B, H)
  Tensor dr = at::empty({B, R}, gy.options());
  // dh_prev = dz W_hh and dh_pre = dr W_hr: products with the transposed weights.
  // (B, G) -> (B, R)
  const ReusedWeightGemm recurrent_t(w_hh.select(0, d), B, T, c10::nullopt, true);
  const ReusedWeightGemm projection_t(proj ? w_hr->select(0, d) : Tensor(), proj ? B : 0, T,
                                      c10::nullopt, true);  // (B, P) -> (B, H)
  const Tensor c0_d = c0.select(0, d).contiguous();
  const Tensor peep_c = present(w_peep) ? w_peep->select(0, d).contiguous() : Tensor();
  const scalar_t* peep = present(w_peep) ? peep_c.data_ptr<scalar_t>() : nullptr;

  const scalar_t* gy_p = gy.data_ptr<scalar_t>();
  const scalar_t* gates_p = gates.data_ptr<scalar_t>() + d * T * B * G;
  const scalar_t* cells_p = cells.data_ptr<scalar_t>() + d * T * B * H;
  const scalar_t* c0_p = c0_d.data_ptr<scalar_t>();
  scalar_t* dZ_p = dZ.data_ptr<scalar_t>() + d * T * B * G;
  scalar_t* dR_p = proj ? dR.data_ptr<scalar_t>() + d * T * B * R : nullptr;
  scalar_t* dh_p = dh_state.data_ptr<scalar_t>();
  scalar_t* dc_p = dc_state.data_ptr<scalar_t>();
  scalar_t* dr_p = dr.data_ptr<scalar_t>();
  // With resets: the gradients of the steps that started from (h0, c0), summed.
  Tensor dh0_sum = fresh.empty() ? Tensor() : at::zeros({B, R}, gy.options());
  Tensor dc0_sum = fresh.empty() ? Tensor() : at::zeros({B, H}, gy.options());

  for (int64_t step = T - 1; step >= 0; --step) {
    const int64_t t = reverse ? T - 1 - step : step;
    const bool first = step == 0;
    const int64_t t_prev = reverse ? t + 1 : t - 1;
    for (int64_t b = 0; b < B; ++b) {
      scalar_t* dr_row = dr_p + b * R;
      if (t < len[b]) {
        const scalar_t* gy_row = gy_p + (t * B + b) * D * R + d * R;
        for (int64_t j = 0; j < R; ++j) dr_row[j] = gy_row[j] + dh_p[b * R + j];
      } else {
        std::memset(dr_row, 0, R * sizeof(scalar_t));
      }
    }
    Tensor dhpre = dr;
    if (proj) {
      std::memcpy(dR_p + t * B * R, dr_p, B * R * sizeof(scalar_t));
      dhpre = projection_t(dr);
    }
    const scalar_t* dhpre_p = dhpre.data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        scalar_t* dz_row = dZ_p + (t * B + b) * G;
        if (t < len[b]) {
          const bool from_c0 = first || (!fresh.empty() && fresh[t * B + b]);
          const scalar_t* c_prev = from_c0 ? c0_p + b * H : cells_p + (t_prev * B + b) * H;
          cell_backward_row<scalar_t>(gates_p + (t * B + b) * G, cells_p + (t * B + b) * H, c_prev,
                                      peep, dhpre_p + b * H, dc_p + b * H, dz_row, H);
        } else {
          std::memset(dz_row, 0, G * sizeof(scalar_t));
        }
      }
    });
    const Tensor dhh = recurrent_t(dZ.select(0, d).select(0, t));  // (B, R)
    const scalar_t* dhh_p = dhh.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b)
      if (t < len[b]) std::memcpy(dh_p + b * R, dhh_p + b * R, R * sizeof(scalar_t));
    if (!fresh.empty())  // no gradient crosses a reset: it goes to h0 and c0
      for (int64_t b = 0; b < B; ++b)
        if (fresh[t * B + b]) {
          dh0_sum.select(0, b).add_(dh_state.select(0, b));
          dc0_sum.select(0, b).add_(dc_state.select(0, b));
          dh_state.select(0, b).zero_();
          dc_state.select(0, b).zero_();
        }
  }
  if (!fresh.empty()) {
    dh_state.add_(dh0_sum);
    dc_state.add_(dc0_sum);
  }
  grad_h0.select(0, d).copy_(dh_state);
  grad_c0.select(0, d).copy_(dc_state);
}

// The reverse time loop with the recurrent product fused into the cell backward
// (lstm_recurrent_tile_backward.h): per step, one parallel pass over column panels of hidden
// units. Without projection only. Writes dZ (this direction's slice), grad_h0 and grad_c0.
template <typename scalar_t>
void backward_direction_fused(const LSTMLayerSizes& s, int64_t d, const std::vector<int64_t>& len,
                              const std::vector<uint8_t>& fresh, const Tensor& gy,
                              const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& c0,
                              const Tensor& w_hh, const OptTensor& w_peep, const Tensor& gates,
                              const Tensor& cells, Tensor& dZ, Tensor& grad_h0, Tensor& grad_c0) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G, D = s.D;
  const bool reverse = d == 1;
  const Tensor w_hh_d = w_hh.select(0, d).contiguous();  // (G, H)
  const Tensor panels = pack_recurrent_t<scalar_t>(w_hh_d, G, H);
  const int64_t n_panels = panels.size(0);
  Tensor dh_carry = grad_h_n.select(0, d).contiguous().clone();  // (B, H)
  Tensor dc = grad_c_n.select(0, d).contiguous().clone();        // (B, H)
  const Tensor c0_d = c0.select(0, d).contiguous();
  const Tensor peep_c = present(w_peep) ? w_peep->select(0, d).contiguous() : Tensor();
  const scalar_t* gates_p = gates.data_ptr<scalar_t>() + d * T * B * G;
  const scalar_t* cells_p = cells.data_ptr<scalar_t>() + d * T * B * H;
  scalar_t* dZ_p = dZ.data_ptr<scalar_t>() + d * T * B * G;

  RecurrentBackStep<scalar_t> base{};
  base.panels = panels.data_ptr<scalar_t>();
  base.gy_stride = D * H;
  base.peep = present(w_peep) ? peep_c.data_ptr<scalar_t>() : nullptr;
  base.dh_carry = dh_carry.data_ptr<scalar_t>();
  base.dc = dc.data_ptr<scalar_t>();
  base.len = len.data();
  base.H = H;
  // With resets: the gradients of the steps that started from (h0, c0), summed.
  Tensor dh0_sum = fresh.empty() ? Tensor() : at::zeros({B, H}, gy.options());
  Tensor dc0_sum = fresh.empty() ? Tensor() : at::zeros({B, H}, gy.options());
  base.c0 = c0_d.data_ptr<scalar_t>();
  base.dh0_sum = fresh.empty() ? nullptr : dh0_sum.data_ptr<scalar_t>();
  base.dc0_sum = fresh.empty() ? nullptr : dc0_sum.data_ptr<scalar_t>();
  // The sum over k in blocks where a step has more than one tile of rows (the tiles then
  // share each block of a panel in L1; lstm_recurrent_tile_backward.h). By B alone, so that
  // the sums are the same whatever the threads.
  const int64_t k_block = B > kTileRows ? kBackKBlock : G;
  const Tensor partial =
      k_block < G ? at::empty({n_panels, B, back_panel_units<scalar_t>()}, gy.options()) : Tensor();
  base.partial = k_block < G ? partial.data_ptr<scalar_t>() : nullptr;
  base.B = B;
  // As in the forward: a barrier a step pays off from about a quarter million multiply-adds.
  const bool parallel = B * G * H >= (int64_t(1) << 18) && n_panels > 1;
  // Raw pointers for the step body (no ATen call inside the OpenMP region).
  const scalar_t* const gy_p = gy.data_ptr<scalar_t>();
  const scalar_t* const c0_p = c0_d.data_ptr<scalar_t>();
  // Step s of the loop is time step t(s), from the last to the first.
  const auto time_of = [&](int64_t s_) { return reverse ? s_ : T - 1 - s_; };
  parallel_tile_loop(
      T, n_panels, B, parallel,
      [&](int64_t step, int64_t q0, int64_t q1, int64_t b0, int64_t b1) {
        const int64_t t = time_of(step);
        const int64_t t_next = step == 0 ? -1 : time_of(step - 1);
        const int64_t t_prev = reverse ? t + 1 : t - 1;
        RecurrentBackStep<scalar_t> st = base;
        st.t = t;
        st.t_next = t_next;
        st.dz_next = t_next < 0 ? nullptr : dZ_p + t_next * B * G;
        st.gy = gy_p + t * B * D * H + d * H;
        st.gates = gates_p + t * B * G;
        st.c = cells_p + t * B * H;
        st.c_prev = step == T - 1 ? c0_p : cells_p + t_prev * B * H;
        st.dz = dZ_p + t * B * G;
        if (!fresh.empty()) {
          st.reset = fresh.data() + t * B;
          st.reset_next = t_next < 0 ? nullptr : fresh.data() + t_next * B;
        }
        // The first step processed has no recurrent product: one pass.
        const int64_t kc = st.dz_next != nullptr ? k_block : G;
        for (int64_t q = q0; q < q1; ++q)
          for (int64_t k0 = 0; k0 < G; k0 += kc)
            for_each_tile(q, q + 1, b0, b1, [&](auto mr, int64_t q_, int64_t r0) {
              back_tile<scalar_t, decltype(mr)::value>(st, q_, r0, k0, std::min(G, k0 + kc));
            });
      },
      /*share_rows=*/panels.nbytes() <= kStreamedWeightBytes);
  const int64_t t_next = T > 0 ? time_of(T - 1) : -1;  // the last step done: t = 0 forward
  // The gradient of h0: through W_hh for rows whose last processed step was valid, else what
  // the padded steps carried (grad_h_n when T = 0).
  if (t_next >= 0) {
    const Tensor through = at::mm(dZ.select(0, d).select(0, t_next), w_hh_d);  // (B, H)
    const scalar_t* through_p = through.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b)
      if (t_next < len[b])
        std::memcpy(base.dh_carry + b * H, through_p + b * H, H * sizeof(scalar_t));
  }
  if (!fresh.empty()) {
    dh_carry.add_(dh0_sum);
    dc.add_(dc0_sum);
  }
  grad_h0.select(0, d).copy_(dh_carry);
  grad_c0.select(0, d).copy_(dc);
}

// The kernel of lstm_layer_backward_op (lstm_layer_grads.h), which checks the arguments first.
LayerGrads lstm_layer_backward_cpu(const LSTMLayerSizes& s, const LayerBackwardInputs& in) {
  const OneThreadIfBusy threads;  // parallel_time_loop.h
  const std::vector<int64_t> len = read_lengths(in.lengths, s.B, s.T, "lstm_fused");
  const auto opts = in.x.options();
  const bool proj = s.P > 0;

  const Tensor gy = in.grad_y.contiguous();
  const Tensor gates_c = in.gates.contiguous(), cells_c = in.cells.contiguous();
  Tensor dZ = new_output({s.D, s.T, s.B, s.G}, opts);  // gradient of the pre-activations
  Tensor dR = proj ? new_output({s.D, s.T, s.B, s.R}, opts) : Tensor();
  Tensor grad_h0 = new_output({s.D, s.B, s.R}, opts);
  Tensor grad_c0 = new_output({s.D, s.B, s.H}, opts);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "lstm_layer_backward_cpu", [&] {
    const bool fused = choose_loop(s, in.x.element_size()).loop == TimeLoop::Fused;
    for (int64_t d = 0; d < s.D; ++d) {
      const std::vector<uint8_t> fresh = reset_rows(in.resets, d, len, s.T, s.B);
      if (fused)
        backward_direction_fused<scalar_t>(s, d, len, fresh, gy, in.grad_h_n, in.grad_c_n, in.c0,
                                           in.w_hh, in.w_peep, gates_c, cells_c, dZ, grad_h0,
                                           grad_c0);
      else
        backward_direction<scalar_t>(s, d, len, fresh, gy, in.grad_h_n, in.grad_c_n, in.c0, in.w_hh,
                                     in.w_hr, in.w_peep, gates_c, cells_c, dZ, dR, grad_h0,
                                     grad_c0);
    }
  });

  // Everything that does not feed the recurrence: one GEMM per weight over all steps.
  const Tensor x2 = in.x.reshape({s.T * s.B, s.I}).contiguous();
  const Tensor len_t = present(in.lengths) ? at::tensor(len, at::kLong) : Tensor();
  // grad_x = sum_d dZ[d] W_ih[d], in the register tiles of the reverse loop
  // (lstm_recurrent_tile_backward.h, input_grad) on W_ih's column panels.
  Tensor grad_x = new_output({s.T, s.B, s.I}, opts);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "lstm_layer_backward_cpu_grad_x", [&] {
    if (s.G == 0) grad_x.zero_();
    if (s.T * s.B == 0 || s.I == 0 || s.G == 0) return;
    for (int64_t d = 0; d < s.D; ++d) {
      const Tensor panels = pack_recurrent_t<scalar_t>(in.w_ih.select(0, d).contiguous(), s.G, s.I);
      input_grad<scalar_t>(grad_x.data_ptr<scalar_t>(), s.I,
                           dZ.data_ptr<scalar_t>() + d * s.T * s.B * s.G, s.G,
                           panels.data_ptr<scalar_t>(), s.T * s.B, s.G, s.I, d > 0);
    }
  });
  Tensor grad_bias = new_output({s.D, s.G}, opts);  // with grad_w_ih: the sums of dZ's columns
  // grad_W_ih = dZ^T x and grad_W_hh = dZ^T r_prev per direction, in register tiles
  // (weight_grad_gemm.h): both operands read as they lie, no transposed copies.
  // With lengths, the rows of x at padded steps are never read (they may hold NaN: the
  // autograd of the lstm_layer op leaves x unmasked for this kernel).
  std::vector<uint8_t> x_row_valid;
  if (present(in.lengths)) {
    x_row_valid.resize(s.T * s.B);
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t b = 0; b < s.B; ++b) x_row_valid[t * s.B + b] = t < len[b];
  }
  Tensor grad_w_ih = new_output({s.D, s.G, s.I}, opts);
  Tensor grad_w_hh = new_output({s.D, s.G, s.R}, opts);
  for (int64_t d = 0; d < s.D; ++d) {
    Tensor grad_w_ih_d = grad_w_ih.select(0, d), grad_w_hh_d = grad_w_hh.select(0, d);
    const Tensor dz_d = dZ.select(0, d).view({s.T * s.B, s.G});
    weight_grad(grad_w_ih_d, dz_d, x2, x_row_valid.empty() ? nullptr : x_row_valid.data(),
                grad_bias.select(0, d));
    if (s.T > 0)
      weight_grad(
          grad_w_hh_d, dz_d,
          previous_outputs(s, d, in.y, in.h0, len_t,
                           reset_before(s, d, present(in.resets) ? *in.resets : Tensor(), len_t))
              .reshape({s.T * s.B, s.R}));
    else grad_w_hh_d.zero_();
  }
  // The projection's and peepholes' gradients (grad_w_hr written whole when T > 0).
  const auto new_grad = [&](at::IntArrayRef sizes) {
    return s.T > 0 ? new_output(sizes, opts) : at::zeros(sizes, opts);
  };
  Tensor grad_w_hr = proj ? new_grad({s.D, s.P, s.H}) : at::empty({0}, opts);
  Tensor grad_w_peep = present(in.w_peep) ? at::zeros({s.D, 3, s.H}, opts) : at::empty({0}, opts);
  if (s.T > 0 && (proj || present(in.w_peep)))
    for (int64_t d = 0; d < s.D; ++d)
      direction_weight_grads(s, d, dZ.select(0, d), proj ? dR.select(0, d) : Tensor(), in.y, in.h0,
                             in.c0, len_t, gates_c.select(0, d), cells_c.select(0, d), Tensor(),
                             proj ? grad_w_hr.select(0, d) : Tensor(),
                             present(in.w_peep) ? grad_w_peep.select(0, d) : Tensor(),
                             reset_before(s, d, present(in.resets) ? *in.resets : Tensor(), len_t));
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_w_peep};
}

}  // namespace

// This variant's entries (kernels.h); registered for the CPU by dispatch.cpp.
extern const LstmLayerKernels lstm_layer_kernels{
    &lstm_layer_forward_cpu, &lstm_layer_inference_cpu,
    &lstm_layer_backward_op<&lstm_layer_backward_cpu, kCpu>, &attentive_lstm_inference_cpu};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
