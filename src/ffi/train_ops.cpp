// Autograd ops of training passes whose forward and backward are each one kernel of crate::kernels
// (train_ops.cu): torch::autograd::Function, which tch does not expose, with both directions calling back into
// Rust (kernels::train_ops::launch_callback, registered once) to launch the kernel on libtorch's current stream, so
// CUDA graphs of a training pass record them too. Tensors cross the boundary as tch's handles (at::Tensor*).
//   rotary:        x [.., heads, d], its first rot_heads heads rotated by the tables cos, sin [tokens, d] (the
//                  others copied); backward rotates the gradient back.
//   silu_mul:      silu(a) * b for the gate and up outputs a, b; backward gives both gradients from g, a and b.
//   silu_mul_rows: the same over a fused gate/up output [.., 2 width] (gate, then up); backward gives its gradient.
//   cross_entropy: each row's cross-entropy (f32) of logits [rows, vocab] against int64 targets; backward gives
//                  the logits' gradient from the rows' and the forward's log-sum-exp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "shim.h"

// Runs kernel `op` (StascTrainOp below) on the n_in inputs, writing n_out new handles to out; 0 on success.
typedef int (*StascTrainLaunch)(int op, at::Tensor** in, int n_in, at::Tensor** out, int n_out);

namespace {

// What the callback runs; the numbers are kernels::train_ops::Op's.
enum StascTrainOp {
  kRotary = 0,
  kRotaryBack = 1,
  kSiluMul = 2,
  kSiluMulBack = 3,
  kSiluMulRows = 4,
  kSiluMulRowsBack = 5,
  kCrossEntropy = 6,
  kCrossEntropyBack = 7
};

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<StascTrainLaunch> launch{nullptr};

std::vector<at::Tensor> run(StascTrainOp op, std::vector<at::Tensor> in, int n_out) {
  const StascTrainLaunch f = launch.load();
  if (!f) throw std::runtime_error("no training-op kernels are registered");
  std::vector<at::Tensor*> in_handles;
  for (at::Tensor& t : in) {
    // A gradient may arrive strided; the kernels read contiguous tensors.
    t = t.contiguous();
    in_handles.push_back(&t);
  }
  std::vector<at::Tensor*> out(n_out, nullptr);
  const int rc = f(op, in_handles.data(), (int)in_handles.size(), out.data(), n_out);
  std::vector<at::Tensor> results;
  for (at::Tensor* t : out) {
    if (t != nullptr) {
      results.push_back(std::move(*t));
      delete t;
    }
  }
  if (rc != 0 || (int)results.size() != n_out) {
    throw std::runtime_error("a training-op kernel did not run (shapes, dtypes or a launch failure)");
  }
  return results;
}

// The number of rotated heads reaches the callback as a 0-dim int64 tensor (the callback takes tensors only).
struct Rotary : public torch::autograd::Function<Rotary> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            int64_t rot_heads) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    ctx->saved_data["rot_heads"] = rot_heads;
    return run(kRotary, {x, cos, sin, at::scalar_tensor(rot_heads, at::kLong)}, 1)[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    const at::Tensor rot_heads = at::scalar_tensor(ctx->saved_data["rot_heads"].toInt(), at::kLong);
    return {run(kRotaryBack, {grads[0], cos, sin, rot_heads}, 1)[0], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct SiluMul : public torch::autograd::Function<SiluMul> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b) {
    ctx->save_for_backward({a, b});
    return run(kSiluMul, {a, b}, 1)[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    std::vector<at::Tensor> both = run(kSiluMulBack, {grads[0], saved[0], saved[1]}, 2);
    return {both[0], both[1]};
  }
};

struct SiluMulRows : public torch::autograd::Function<SiluMulRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& both) {
    ctx->save_for_backward({both});
    return run(kSiluMulRows, {both}, 1)[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {run(kSiluMulRowsBack, {grads[0], ctx->get_saved_variables()[0]}, 1)[0]};
  }
};

// The log-sum-exp the forward computes is kept for backward (it is neither an input nor an output).
struct CrossEntropyRows : public torch::autograd::Function<CrossEntropyRows> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& targets) {
    std::vector<at::Tensor> out = run(kCrossEntropy, {logits, targets}, 2);
    ctx->save_for_backward({logits, targets});
    ctx->saved_data["lse"] = out[1];
    return out[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor lse = ctx->saved_data["lse"].toTensor();
    return {run(kCrossEntropyBack, {grads[0], saved[0], saved[1], lse}, 1)[0], at::Tensor()};
  }
};

}  // namespace

extern "C" void stasc_set_train_op_callback(StascTrainLaunch f) { launch.store(f); }

// The ops, recorded for autograd; each writes a new handle to the result to *out. On failure returns 1 and copies
// the exception's message into err (err_len bytes, NUL-terminated).
extern "C" int stasc_rotary(const at::Tensor* x, const at::Tensor* cos, const at::Tensor* sin, int64_t rot_heads,
                            at::Tensor** out, char* err, size_t err_len) {
  return stasc_shim::tensor_or_error([&] { return Rotary::apply(*x, *cos, *sin, rot_heads); }, out, err, err_len);
}

extern "C" int stasc_silu_mul(const at::Tensor* a, const at::Tensor* b, at::Tensor** out, char* err, size_t err_len) {
  return stasc_shim::tensor_or_error([&] { return SiluMul::apply(*a, *b); }, out, err, err_len);
}

extern "C" int stasc_silu_mul_rows(const at::Tensor* both, at::Tensor** out, char* err, size_t err_len) {
  return stasc_shim::tensor_or_error([&] { return SiluMulRows::apply(*both); }, out, err, err_len);
}

extern "C" int stasc_cross_entropy_rows(const at::Tensor* logits, const at::Tensor* targets, at::Tensor** out,
                                        char* err, size_t err_len) {
  return stasc_shim::tensor_or_error([&] { return CrossEntropyRows::apply(*logits, *targets); }, out, err, err_len);
}
