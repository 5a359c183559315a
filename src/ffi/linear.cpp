// Linear layers whose backward adds the weights' gradients into the weights' gradient tensors inside the matrix
// product (addmm_, beta = 1), as Megatron's fused weight-gradient accumulation does. With the plain layer, autograd
// computes a weight's gradient as a new tensor and AccumulateGrad then adds it into the trainer's flat gradient
// buffer (crate::train::optim binds every parameter's gradient to a view of it): a separate pass reading both and
// writing one, ~3 ms a packed pass for a 1.5B model on an H200.
//
// One op takes several layers that share their input (q/k/v, gate/up): their weights' rows, stacked, are one
// matrix, so each direction is one product where separate layers take one each (plus adds of the input's
// gradients). The trainer's flat buffer holds a layer's q, k and v (and gate and up) back to back (train::flat),
// and their gradients likewise, so the stacked matrix and its gradient are aliases of the buffers, not copies.
// Tensors cross the boundary as tch's handles (at::Tensor*).
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "shim.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The tensors' rows stacked ([sum of rows, ..]) as an alias of their storage, when they are contiguous, of one
// dtype, and lie back to back in one storage in the given order; nullopt otherwise.
std::optional<at::Tensor> adjacent_rows(const std::vector<at::Tensor>& parts) {
  int64_t rows = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const at::Tensor& p = parts[i];
    if (!p.defined() || !p.is_contiguous() || p.scalar_type() != parts[0].scalar_type() ||
        !p.is_alias_of(parts[0]) || p.sizes().slice(1) != parts[0].sizes().slice(1)) {
      return std::nullopt;
    }
    if (i > 0 && static_cast<const char*>(p.data_ptr()) !=
                     static_cast<const char*>(parts[i - 1].data_ptr()) + parts[i - 1].nbytes()) {
      return std::nullopt;
    }
    rows += p.size(0);
  }
  std::vector<int64_t> size = parts[0].sizes().vec();
  size[0] = rows;
  return parts[0].detach().as_strided(size, parts[0].strides());
}

// The stacked rows: the alias where there is one, else a copy.
at::Tensor stacked(const std::vector<at::Tensor>& parts) {
  if (std::optional<at::Tensor> alias = adjacent_rows(parts)) return *alias;
  return at::cat(parts, 0);
}

// Adds a gradient of the stacked leaves into their gradient tensors: `add` into one alias of them when every leaf
// wants a gradient and already has one (the trainer's views), else `whole()` row block by row block, a leaf's first
// gradient becoming its block (as AccumulateGrad keeps a first gradient). A first gradient is never a view of
// `whole()`: a view keeps its base alive, so once the trainer moves the gradient into its flat buffer the base
// would stay allocated (a whole model's gradients, ~3 GB for 1.5B parameters).
template <typename Add, typename Whole>
void accumulate(const std::vector<at::Tensor>& leaves, const std::vector<bool>& wanted, Add add, Whole whole) {
  std::vector<at::Tensor> grads;
  bool all = true;
  for (size_t i = 0; i < leaves.size(); ++i) {
    grads.push_back(leaves[i].grad());
    all = all && wanted[i] && grads.back().defined();
  }
  if (all) {
    if (std::optional<at::Tensor> alias = adjacent_rows(grads)) {
      add(*alias);
      return;
    }
  }
  const at::Tensor sum = whole();
  int64_t row = 0;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const at::Tensor block = sum.narrow(0, row, leaves[i].size(0));
    row += leaves[i].size(0);
    if (!wanted[i]) continue;
    at::Tensor& grad = leaves[i].mutable_grad();
    if (grad.defined()) {
      grad.add_(block);
    } else {
      grad = leaves.size() == 1 ? sum : block.clone();
    }
  }
}

struct LinearsGradInto : public torch::autograd::Function<LinearsGradInto> {
  // y = x [W_1; ..; W_n]^T + [b_1; ..; b_n]. The weights and biases are inputs, so that autograd runs this backward
  // whenever one wants a gradient, but the backward returns none for them: it has already added them.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights,
                            at::TensorList biases) {
    std::vector<at::Tensor> saved{x};
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), biases.begin(), biases.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["weights"] = static_cast<int64_t>(weights.size());
    std::optional<at::Tensor> bias;
    if (!biases.empty()) bias = stacked(biases.vec());
    return at::linear(x, stacked(weights.vec()), bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const size_t n = static_cast<size_t>(ctx->saved_data["weights"].toInt());
    // Inputs are saved as themselves, so these are the parameters, and their gradients the trainer's views.
    const at::Tensor& x = saved[0];
    const std::vector<at::Tensor> weights(saved.begin() + 1, saved.begin() + 1 + n);
    const std::vector<at::Tensor> biases(saved.begin() + 1 + n, saved.end());
    // needs_input_grad counts the graph's inputs: x, then every weight, then every bias.
    auto wanted = [&](size_t first, size_t count) {
      std::vector<bool> w;
      for (size_t i = 0; i < count; ++i) w.push_back(ctx->needs_input_grad(first + i));
      return w;
    };
    const std::vector<bool> weights_wanted = wanted(1, n), biases_wanted = wanted(1 + n, biases.size());
    const at::Tensor weight = stacked(weights);
    const at::Tensor& g = grads[0];
    const int64_t out = weight.size(0), in = weight.size(1);
    const at::Tensor g2 = g.reshape({-1, out});
    variable_list result(1 + n + biases.size());
    if (ctx->needs_input_grad(0)) result[0] = at::matmul(g, weight);
    const at::Tensor x2 = x.reshape({-1, in});
    accumulate(weights, weights_wanted, [&](at::Tensor& into) { into.addmm_(g2.t(), x2); },
               [&] { return at::mm(g2.t(), x2); });
    if (!biases.empty()) {
      const at::Tensor sum = g2.sum(0);
      accumulate(biases, biases_wanted, [&](at::Tensor& into) { into.add_(sum); }, [&] { return sum; });
    }
    return result;
  }
};

}  // namespace

// x [.., in] times the n weights' rows [out_i, in] stacked, transposed, plus the n biases stacked (n_biases is n or
// 0), recorded for autograd by LinearsGradInto; writes a new handle to the output [.., sum of out_i] to *out. On
// failure returns 1 and copies the exception's message into err (err_len bytes, NUL-terminated).
extern "C" int stasc_linears_grad_into(const at::Tensor* x, const at::Tensor* const* weights, int n,
                                       const at::Tensor* const* biases, int n_biases, at::Tensor** out, char* err,
                                       size_t err_len) {
  return stasc_shim::tensor_or_error(
      [&] {
        std::vector<at::Tensor> w, b;
        for (int i = 0; i < n; ++i) w.push_back(*weights[i]);
        for (int i = 0; i < n_biases; ++i) b.push_back(*biases[i]);
        return LinearsGradInto::apply(*x, at::TensorList(w), at::TensorList(b));
      },
      out, err, err_len);
}
