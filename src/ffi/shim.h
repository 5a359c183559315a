// What every tensor-returning function of the C++ shim shares: exceptions stop at the extern "C" boundary, and
// their messages reach Rust (crate::ffi::tensor_call) through a caller's buffer.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstring>
#include <exception>

namespace stasc_shim {

// Copies what into err (err_len bytes, NUL-terminated).
inline void copy_error(const char* what, char* err, size_t err_len) {
  if (err_len > 0) {
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
  }
}

// Runs body (returning an at::Tensor) and writes a new handle to its result to *out: 0. When it throws: 1, with
// the exception's message in err.
template <typename F>
int tensor_or_error(F body, at::Tensor** out, char* err, size_t err_len) {
  try {
    *out = new at::Tensor(body());
    return 0;
  } catch (const std::exception& e) {
    copy_error(e.what(), err, err_len);
    return 1;
  } catch (...) {
    copy_error("unknown C++ exception", err, err_len);
    return 1;
  }
}

}  // namespace stasc_shim
