//! Configuration: the reference YAML files and sweep TOML, typed, defaulted and validated. Pure: no I/O beyond reading the files.
