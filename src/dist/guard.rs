//! The NVLink multicast guards. NVLink SHARP / multicast (NCCL's NVLS algorithms, PyTorch's symmetric-memory
//! multicast, NVSHMEM's NVLS) can put a shared host's GPUs out of service, so stasc keeps it off: the variables are
//! set in stasc's own environment before any communicator exists, and on every child process it starts (sweep
//! cells), even one started with an edited environment. Nothing in stasc calls `cuMulticastCreate`.

use std::process::Command;

/// The variables and the values that keep NVLink multicast off in NCCL, PyTorch and NVSHMEM.
pub const MULTICAST_GUARDS: [(&str, &str); 3] =
    [("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"), ("NVSHMEM_DISABLE_NVLS", "1")];

/// Sets the guards in this process's environment. Call it first thing in `main`, while the process has one thread
/// (NCCL reads them when a communicator is created).
pub fn apply_to_process() {
    for (name, value) in MULTICAST_GUARDS {
        if std::env::var(name).as_deref() != Ok(value) {
            std::env::set_var(name, value);
        }
    }
}

/// Sets the guards on a child process about to be started (they win over anything set on it before).
pub fn apply_to_command(command: &mut Command) -> &mut Command {
    command.envs(MULTICAST_GUARDS)
}

/// The guards that are missing or different in an environment given as (name, value) pairs; empty when all hold.
pub fn missing_in<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<&'static str> {
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    MULTICAST_GUARDS
        .iter()
        .filter(|(name, value)| !env.iter().any(|(n, v)| n == name && v == value))
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_get_every_guard_even_over_an_edited_environment() {
        let mut cmd = Command::new("true");
        cmd.env("NCCL_NVLS_ENABLE", "1").env_clear();
        apply_to_command(&mut cmd);
        let env: Vec<(String, String)> =
            cmd.get_envs().filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string()))).collect();
        assert_eq!(missing_in(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))), Vec::<&str>::new());
    }

    #[test]
    fn missing_guards_are_named() {
        assert_eq!(
            missing_in([("NCCL_NVLS_ENABLE", "1"), ("NVSHMEM_DISABLE_NVLS", "1")]),
            vec!["NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST"]
        );
    }
}
