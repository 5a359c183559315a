//! Test fixture for stasc's plugin loader: exports the plugin entry symbol with a descriptor from a future ABI
//! version, which the host must refuse after reading only the version field. Deliberately does not use the SDK.

/// The only field every ABI version shares: the version number first.
#[repr(C)]
pub struct FutureDescriptor {
    abi_version: u32,
}

static DESCRIPTOR: FutureDescriptor = FutureDescriptor { abi_version: 999 };

/// Entry point with the SDK's name, returning a descriptor the host cannot use.
#[no_mangle]
pub extern "C" fn stasc_reward_plugin() -> *const FutureDescriptor {
    &DESCRIPTOR
}
