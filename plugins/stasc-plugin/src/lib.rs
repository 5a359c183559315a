//! SDK for stasc reward plugins: the `#[repr(C)]` ABI shared by the host and plugin dylibs.
