//! Model engine: HF checkpoint directories (config, safetensors, tokenizer, generation config), the supported
//! architectures (Qwen2, Llama, Phi3) and GGUF import. Knows nothing of STaSC.

pub mod gguf;
