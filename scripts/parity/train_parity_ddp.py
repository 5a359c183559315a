"""Records what the reference's pinned HF Trainer (transformers 4.47.1, accelerate 1.2.1) does on 2 data-parallel
processes, so stasc's two loss normalisations across ranks can be checked against it (src/train/parity.rs,
tests/it/train.rs). The reference trains with accelerate FSDP on 2 processes; FSDP and DDP both average the ranks'
gradients, so DDP on 2 CPU processes (gloo) gives the same arithmetic with no GPU.

Writes into OUT (default tests/fixtures/train/parity), using the tiny model OUT/model made by train_parity.py (run
this again whenever that model is remade; it is a Qwen2ForCausalLM):
  - ddp_per_rank.json / .safetensors: average_tokens_across_devices false (4.47.1's default, the reference's): each
    rank divides its summed token loss by its own label tokens, DDP averages the gradients;
  - ddp_whole_step.json / .safetensors: average_tokens_across_devices true: the label tokens are summed over ranks;
  - ddp_decay.json / .safetensors: ddp_per_rank with weight_decay 0.1 (the paper protocol's training): 4.47.1 decays
    every parameter but the q/k/v biases, the Qwen2 RMSNorm weights included (Qwen2RMSNorm is not in its
    ALL_LAYERNORM_LAYERS), which stasc reproduces with decay_parameters: transformers_4_47_1;
  - decay_4_47_1.json: 4.47.1's Trainer.get_decay_parameter_names for tiny Qwen2 (untied, tied), Llama and Phi-3
    models: Llama's norm weights are the only norms left undecayed (LlamaRMSNorm is in ALL_LAYERNORM_LAYERS).
Every case records the stasc decay rule that forms 4.47.1's groups ("decay_parameters") and the names 4.47.1 put in
its decay group (reference.decay_parameter_names).
Each case: eight token-id examples in the order HF consumed them (a SequentialSampler, so batch j goes to rank
j % 2: even examples to rank 0, odd to rank 1, with far fewer label tokens on rank 0), batch 1 x accumulation 2 x 2
ranks, one epoch = 2 optimiser steps; per-step loss, grad_norm and learning_rate; rank 0's weights after the last
step. The loss is rebuilt at full precision from what training_step returned on every rank (what Trainer sums into
tr_loss and averages over processes when it logs; 4.47.1 rounds the logged value to 4 decimals, also kept).

Usage (torch from the stasc venv, transformers 4.47.1 and accelerate 1.2.1 on PYTHONPATH):
  /root/.cache/stasc/venv/bin/pip install --target /tmp/hf447 --no-deps transformers==4.47.1 accelerate==1.2.1 \\
      'tokenizers>=0.21,<0.22' 'huggingface_hub<1.0' safetensors numpy pyyaml regex requests packaging tqdm psutil \\
      filelock urllib3 idna certifi charset_normalizer
  PYTHONPATH=/tmp/hf447 /root/.cache/stasc/venv/bin/torchrun --nproc_per_node 2 \\
      scripts/parity/train_parity_ddp.py [--out DIR] [--cases ddp_per_rank,ddp_whole_step,ddp_decay]
"""
import argparse
import json
import os
import tempfile

import torch
from parity_data import Examples, make_examples
import torch.distributed as dist
from safetensors.torch import save_file
from torch.utils.data import SequentialSampler
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments)

HP = dict(learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=1, gradient_accumulation_steps=2,
          weight_decay=0.0, warmup_ratio=0.0, lr_scheduler_type="linear", max_grad_norm=1.0, adam_beta1=0.9,
          adam_beta2=0.999, adam_epsilon=1e-8)
# (length, label tokens): even positions (rank 0) have 1-3 label tokens, odd positions (rank 1) 6-10.
SHAPES = [(12, 1), (9, 7), (15, 2), (11, 6), (10, 3), (14, 10), (8, 1), (13, 9)]
# The normalisation cases have no weight decay, so they test the loss normalisation alone; ddp_decay adds it.
CASES = {
    "ddp_per_rank": dict(average_tokens_across_devices=False, weight_decay=0.0),
    "ddp_whole_step": dict(average_tokens_across_devices=True, weight_decay=0.0),
    "ddp_decay": dict(average_tokens_across_devices=False, weight_decay=0.1),
}
# The stasc rule (fine_tune.yaml training.decay_parameters) that forms the groups this transformers forms.
DECAY_PARAMETERS = "transformers_4_47_1"


def collate(rows):
    assert len(rows) == 1, "batch 1: no padding"
    r = rows[0]
    return dict(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]),
                attention_mask=torch.ones(1, len(r["input_ids"]), dtype=torch.long))


class SequentialTrainer(Trainer):
    """Trainer with the dataset's own order (so the test knows which rank saw which example) that keeps what every
    training_step returned: this rank's micro-batch loss divided as its gradient was."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.step_losses = []
        self.step_lrs = []

    def _get_train_sampler(self):
        return SequentialSampler(self.train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        # 4.47.1 logs the learning rate after the scheduler has stepped; this is the one the update uses.
        self.step_lrs.append(self.optimizer.param_groups[0]["lr"])
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.step_losses.append(float(loss.item()))
        return loss


class Record(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append(dict(logs))


def decay_parameter_names(model):
    """The trainable parameters Trainer puts in its weight-decay group, in model order."""
    decay = set(Trainer.get_decay_parameter_names(None, model))
    return [n for n, p in model.named_parameters() if p.requires_grad and n in decay]


def train_case(name, spec, model_dir, examples, out):
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    whole_step = spec["average_tokens_across_devices"]
    hp = dict(HP, weight_decay=spec["weight_decay"])
    record = Record()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                                 use_cpu=True, remove_unused_columns=False, average_tokens_across_devices=whole_step,
                                 **hp)
        trainer = SequentialTrainer(model=model, args=args, train_dataset=Examples(examples), data_collator=collate,
                                    callbacks=[record])
        trainer.train()
    rank, world = dist.get_rank(), dist.get_world_size()
    per_rank = [None] * world
    dist.all_gather_object(per_rank, trainer.step_losses)
    accumulation = hp["gradient_accumulation_steps"]
    steps = len(record.logs)
    # tr_loss of a rank over one step is the sum of its accumulation micro-batches; the log averages the ranks.
    losses = [sum(sum(r[s * accumulation:(s + 1) * accumulation]) for r in per_rank) / world for s in range(steps)]
    if rank == 0:
        trained = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(trained, os.path.join(out, f"{name}.safetensors"), metadata={"format": "pt"})
        case = dict(
            hyperparameters=hp,
            num_processes=world,
            average_tokens_across_devices=whole_step,
            decay_parameters=DECAY_PARAMETERS,
            sampler="sequential",
            lora=None,
            examples=examples,
            reference=dict(
                losses=losses,
                logged_losses=[r["loss"] for r in record.logs],
                grad_norms=[r["grad_norm"] for r in record.logs],
                learning_rates=trainer.step_lrs[::accumulation],
                logged_learning_rates=[r["learning_rate"] for r in record.logs],
                micro_batch_losses_per_rank=per_rank,
                decay_parameter_names=decay_parameter_names(trainer.model),
                model_accepts_loss_kwargs=bool(trainer.model_accepts_loss_kwargs),
                distributed_type=str(trainer.accelerator.distributed_type),
                transformers=__import__("transformers").__version__,
                accelerate=__import__("accelerate").__version__,
                torch=torch.__version__,
                device="cpu",
            ),
        )
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
        print(name, "losses", losses, "logged", case["reference"]["logged_losses"], "grad_norms",
              case["reference"]["grad_norms"], "lrs", case["reference"]["learning_rates"])
    dist.barrier()


def decay_names():
    """4.47.1's decay and no-decay groups of tiny models of stasc's three architectures."""
    shape = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=None,
                 eos_token_id=2, pad_token_id=None)
    models = {
        "qwen2_untied": Qwen2ForCausalLM(Qwen2Config(**shape)),
        "qwen2_tied": Qwen2ForCausalLM(Qwen2Config(**dict(shape, tie_word_embeddings=True))),
        "llama": LlamaForCausalLM(LlamaConfig(**dict(shape, tie_word_embeddings=True))),
        "phi3": Phi3ForCausalLM(Phi3Config(**shape)),
    }
    groups = {}
    for name, model in models.items():
        decay = set(decay_parameter_names(model))
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        groups[name] = dict(architecture=type(model).__name__, decay=[n for n in names if n in decay],
                            no_decay=[n for n in names if n not in decay])
    return dict(transformers=__import__("transformers").__version__, torch=torch.__version__, models=groups)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "train",
                                                 "parity"))
    p.add_argument("--cases", default=",".join(CASES))
    a = p.parse_args()
    examples = make_examples(torch.Generator().manual_seed(2), SHAPES)
    for name in a.cases.split(","):
        train_case(name, CASES[name], os.path.join(a.out, "model"), examples, a.out)
    if dist.get_rank() == 0:
        with open(os.path.join(a.out, "decay_4_47_1.json"), "w") as f:
            json.dump(decay_names(), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
