"""Records what HF Trainer does, so stasc's trainer can be checked against it (src/train/parity.rs, tests/it/train.rs,
`stasc bench train-parity`). Run with a Python that has torch, transformers and peft.

Writes into OUT (default tests/fixtures/train/parity):
  - model/: a tiny random Qwen2ForCausalLM (untied, q/k/v biases), f32, saved by save_pretrained;
  - CASE.json for CASE in full, lora, dora: four token-id examples (labels on their ends), the hyperparameters, and
    HF Trainer's per-step loss, grad_norm and learning_rate; the examples of a case all fit one optimiser step
    (batch 2 x accumulation 2), so Trainer's shuffle order cannot change the result;
  - CASE.safetensors: the trained tensors after the last step (all weights, or PEFT's adapter tensors);
  - CASE_init.safetensors (lora, dora): PEFT's initial adapter, which stasc loads instead of drawing its own;
  - schedules.json: learning rates of transformers' schedulers (through torch's LambdaLR) for several run shapes;
  - decay.json: Trainer.get_decay_parameter_names for tiny Qwen2 / Llama / Phi3 models and a PEFT DoRA model, as the
    transformers this runs with forms them (later than 4.47.1: stasc's `names` rule; 4.47.1's groups, which decay
    Qwen2 and Phi-3 norm weights, are train_parity_ddp.py's decay_4_47_1.json).

Usage:
  python scripts/parity/train_parity.py [--out DIR] [--device cpu|cuda]
  python scripts/parity/train_parity.py --check-load DIR [--device cpu|cuda]
      DIR is what `stasc bench train-parity --out DIR` wrote (DIR/CASE/model, DIR/CASE/logits.safetensors):
      transformers loads each model and must reproduce stasc's logits.
"""
import argparse
import json
import math
import os
import tempfile

import torch
from parity_data import Examples, make_examples
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments, get_scheduler)

HP = dict(num_train_epochs=3, per_device_train_batch_size=2, gradient_accumulation_steps=2, weight_decay=0.1,
          warmup_ratio=0.34, lr_scheduler_type="cosine", max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999,
          adam_epsilon=1e-8)
CASES = {
    "full": dict(learning_rate=1e-3, lora=None),
    "lora": dict(learning_rate=1e-2, lora=dict(r=4, lora_alpha=8, lora_dropout=0.0, use_dora=False,
                                                target_modules=["q_proj", "v_proj", "down_proj"])),
    "dora": dict(learning_rate=1e-2, lora=dict(r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True,
                                                target_modules=["q_proj", "o_proj", "gate_proj"])),
}


def tiny_config(cls=Qwen2Config, **extra):
    shape = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.1,
                 tie_word_embeddings=False, bos_token_id=None, eos_token_id=2, pad_token_id=None)
    shape.update(extra)
    return cls(**shape)


def collate(rows):
    width = max(len(r["input_ids"]) for r in rows)
    pad = lambda xs, v: [x + [v] * (width - len(x)) for x in xs]
    ids = torch.tensor(pad([r["input_ids"] for r in rows], 0))
    return dict(input_ids=ids, labels=torch.tensor(pad([r["labels"] for r in rows], -100)),
                attention_mask=torch.tensor(pad([[1] * len(r["input_ids"]) for r in rows], 0)))


class Record(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append(dict(logs))


def train_case(name, spec, model_dir, examples, device, out):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    lora = spec["lora"]
    if lora:
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", init_lora_weights=True, **lora))
        save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
                  os.path.join(out, f"{name}_init.safetensors"), metadata={"format": "pt"})
    hp = dict(HP, learning_rate=spec["learning_rate"])
    warmup_ratio = hp.pop("warmup_ratio")
    record = Record()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                                 use_cpu=(device == "cpu"), warmup_steps=warmup_ratio, remove_unused_columns=False,
                                 **hp)
        trainer = Trainer(model=model, args=args, train_dataset=Examples(examples), data_collator=collate,
                          callbacks=[record])
        trainer.train()
    if lora:
        trained = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    else:
        trained = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(trained, os.path.join(out, f"{name}.safetensors"), metadata={"format": "pt"})
    lrs = [r["learning_rate"] for r in record.logs]
    case = dict(
        hyperparameters=dict(HP, learning_rate=spec["learning_rate"]),
        lora=lora,
        examples=examples,
        reference=dict(
            losses=[r["loss"] for r in record.logs],
            grad_norms=[r["grad_norm"] for r in record.logs],
            learning_rates=lrs,
            optim=str(trainer.args.optim),
            model_accepts_loss_kwargs=bool(trainer.model_accepts_loss_kwargs),
            transformers=__import__("transformers").__version__,
            torch=torch.__version__,
            device=device,
        ),
    )
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(case, f, indent=1)
        f.write("\n")
    print(name, "losses", case["reference"]["losses"], "grad_norms", case["reference"]["grad_norms"], "lrs", lrs)


def schedules():
    out = []
    for kind in ["linear", "cosine", "constant", "constant_with_warmup"]:
        for total, warmup_ratio, warmup_steps in [(10, 0.0, 0), (10, 0.03, 0), (37, 0.1, 0), (100, 0.03, 0),
                                                  (25, 0.5, 4)]:
            param = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.AdamW([param], lr=1e-4)
            warmup = warmup_steps if warmup_steps > 0 else math.ceil(total * warmup_ratio)
            sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)
            lrs = []
            for _ in range(total):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            out.append(dict(kind=kind, base_lr=1e-4, total_steps=total, warmup_ratio=warmup_ratio,
                            warmup_steps=warmup_steps, lrs=lrs))
    return out


def decay_names():
    models = {
        "qwen2_untied": Qwen2ForCausalLM(tiny_config()),
        "qwen2_tied": Qwen2ForCausalLM(tiny_config(tie_word_embeddings=True)),
        "llama": LlamaForCausalLM(tiny_config(LlamaConfig, tie_word_embeddings=True)),
        "phi3": Phi3ForCausalLM(tiny_config(Phi3Config)),
    }
    models["qwen2_dora"] = get_peft_model(
        Qwen2ForCausalLM(tiny_config()),
        LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], use_dora=True))
    out = {}
    for name, model in models.items():
        decay = set(Trainer.get_decay_parameter_names(None, model))
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        out[name] = dict(decay=[n for n in names if n in decay], no_decay=[n for n in names if n not in decay])
    return out


def check_load(root, device):
    worst = 0.0
    for case in sorted(os.listdir(root)):
        model_dir = os.path.join(root, case, "model")
        if not os.path.isdir(model_dir):
            continue
        ref = load_file(os.path.join(root, case, "logits.safetensors"))
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
        with torch.no_grad():
            logits = model(input_ids=ref["input_ids"].to(device)).logits.float().cpu()
        diff = (logits - ref["logits"].float()).abs().max().item()
        worst = max(worst, diff)
        print(f"{case}: transformers loads {model_dir}; max |logit diff| vs stasc {diff:.3e} "
              f"(logit scale {ref['logits'].abs().max().item():.2f})")
    print("check-load", "PASS" if worst < 1e-4 else "FAIL")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "train",
                                                 "parity"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--check-load", default=None)
    a = p.parse_args()
    if a.check_load:
        check_load(a.check_load, a.device)
        return
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    model_dir = os.path.join(a.out, "model")
    Qwen2ForCausalLM(tiny_config()).save_pretrained(model_dir)
    examples = make_examples(torch.Generator().manual_seed(1), [(12, 5), (9, 4), (15, 6), (7, 3)])
    for name, spec in CASES.items():
        train_case(name, spec, model_dir, examples, a.device, a.out)
    with open(os.path.join(a.out, "schedules.json"), "w") as f:
        json.dump(schedules(), f, indent=1)
        f.write("\n")
    with open(os.path.join(a.out, "decay.json"), "w") as f:
        json.dump(decay_names(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
