//! Test fixture for stasc's plugin loader: a valid dynamic library that is not a plugin (no entry symbol).

/// Some exported function that is not the plugin entry point.
#[no_mangle]
pub extern "C" fn not_a_stasc_plugin() -> i32 {
    42
}
