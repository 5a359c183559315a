//! GGUF import: read a llama-architecture GGUF file and write an HF model directory (safetensors, config.json,
//! tokenizer.json, tokenizer_config.json, generation_config.json).
