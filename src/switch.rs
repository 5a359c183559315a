//! Process-wide on/off switches whose default comes from an environment variable, so benchmarks can compare two
//! paths (`STASC_FUSED_KERNELS=0`) and parity tests can flip them within one process. The variable is read once,
//! on first use: a switch consulted per layer or per decode step costs an atomic load, not an environment lookup.

use std::sync::atomic::{AtomicU8, Ordering};

/// What environment variable `var` says: for a switch that is on by default, on unless it is `0`; for one that
/// is off by default, on only when it is `1`.
pub fn env_flag(var: &str, default_on: bool) -> bool {
    match std::env::var(var) {
        Ok(v) if default_on => v.trim() != "0",
        Ok(v) => v.trim() == "1",
        Err(_) => default_on,
    }
}

/// A switch: the environment's say until [`Switch::set`] overrides it.
#[derive(Debug)]
pub struct Switch {
    var: &'static str,
    default_on: bool,
    /// 0: not read yet, 1: on, 2: off.
    state: AtomicU8,
}

impl Switch {
    /// A switch defaulting to `default_on` unless environment variable `var` says otherwise ([`env_flag`]).
    pub const fn new(var: &'static str, default_on: bool) -> Switch {
        Switch { var, default_on, state: AtomicU8::new(0) }
    }

    /// Whether the switch is on.
    pub fn get(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let on = env_flag(self.var, self.default_on);
                self.set(on);
                on
            }
        }
    }

    /// Sets the switch for the whole process.
    pub fn set(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_give_the_default_and_set_overrides_it() {
        assert!(env_flag("STASC_NO_SUCH_SWITCH_IS_SET", true));
        assert!(!env_flag("STASC_NO_SUCH_SWITCH_IS_SET", false));
        let s = Switch::new("STASC_NO_SUCH_SWITCH_IS_SET", true);
        assert!(s.get());
        s.set(false);
        assert!(!s.get());
        let off = Switch::new("STASC_NO_SUCH_SWITCH_IS_SET", false);
        assert!(!off.get());
    }
}
