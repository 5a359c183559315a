// The rotary embedding of training passes as an autograd op whose forward and backward are each one kernel of
// crate::kernels (rotary.cu): torch::autograd::Function, which tch does not expose, with both directions calling
// back into Rust (kernels::rotary::launch_callback, registered once) to launch the kernel on libtorch's current
// stream, so CUDA graphs of a training pass record it too. Tensors cross the boundary as tch's handles
// (at::Tensor*).
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <stdexcept>

// Rotates x (0) or rotates it back (1) by the tables cos, sin; writes a new handle to *out; 0 on success.
typedef int (*StascRotaryLaunch)(at::Tensor* x, at::Tensor* cos, at::Tensor* sin, int backward, at::Tensor** out);

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<StascRotaryLaunch> launch{nullptr};

at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool backward) {
  const StascRotaryLaunch f = launch.load();
  if (!f) throw std::runtime_error("no rotary kernel is registered");
  // A gradient may arrive strided; the kernel reads whole contiguous rows.
  at::Tensor xc = x.contiguous(), c = cos, s = sin;
  at::Tensor* out = nullptr;
  if (f(&xc, &c, &s, backward ? 1 : 0, &out) != 0 || out == nullptr) {
    throw std::runtime_error("the rotary kernel did not run (shapes, dtypes or a launch failure)");
  }
  at::Tensor result = std::move(*out);
  delete out;
  return result;
}

struct Rotary : public torch::autograd::Function<Rotary> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rotate(x, cos, sin, false);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor cos = ctx->saved_data["cos"].toTensor();
    const at::Tensor sin = ctx->saved_data["sin"].toTensor();
    return {rotate(grads[0], cos, sin, true), at::Tensor(), at::Tensor()};
  }
};

void copy_error(const char* what, char* err, size_t err_len) {
  if (err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
  }
}

}  // namespace

extern "C" void stasc_set_rotary_callback(StascRotaryLaunch f) { launch.store(f); }

// x [.., heads, d] rotated by cos, sin [tokens, d], recorded for autograd by Rotary; writes a new handle to the
// result to *out. On failure returns 1 and copies the exception's message into err (err_len bytes, NUL-terminated).
extern "C" int stasc_rotary(const at::Tensor* x, const at::Tensor* cos, const at::Tensor* sin, at::Tensor** out,
                            char* err, size_t err_len) {
  try {
    *out = new at::Tensor(Rotary::apply(*x, *cos, *sin));
    return 0;
  } catch (const std::exception& e) {
    copy_error(e.what(), err, err_len);
    return 1;
  } catch (...) {
    return 1;
  }
}
