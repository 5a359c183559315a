import json, sys, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
out = sys.argv[1]
cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="bfloat16", eos_token_id=2, bos_token_id=1)
torch.manual_seed(0)
with torch.device("cuda"):
    m = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained(out)
json.dump({"eos_token_id": 2, "bos_token_id": 1}, open(out + "/generation_config.json", "w"))
print("saved", out, flush=True)
