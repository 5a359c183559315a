#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates/goldens.json: what HF transformers' own apply_chat_template renders for
each fixture tokenizer under tests/fixtures/chat_templates/ and a set of conversations. The Rust tests
(tests/it/chat_templates.rs) must reproduce every string byte for byte.

Run it with the project's venv (it re-executes itself there and pip-installs transformers if missing):

    ~/.cache/stasc/venv/bin/python scripts/make_chat_goldens.py

Each fixture directory is loaded exactly as a model directory is, with PreTrainedTokenizerFast.from_pretrained, so
transformers itself reads tokenizer_config.json (AddedToken objects included) and gives chat_template.jinja priority.
Only a throwaway one-word tokenizer.json is added, in a temporary copy, because rendering never tokenizes.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "chat_templates"
VENV = Path.home() / ".cache" / "stasc" / "venv"
VENV_PYTHON = VENV / "bin" / "python"

# Llama 3.x prints today's date unless the caller passes date_string; a fixed one keeps the golden stable.
TEMPLATE_VARS = {
    "llama-3.2-3b-instruct": {"date_string": "26 Jul 2024"},
    "transformers-features": {
        "payload": {
            "name": "search",
            "weight": 2.5,
            "tiny": 1e-05,
            "big": 1e16,
            "n": 3,
            "ok": True,
            "none": None,
            "text": 'Ünïcode “quotes” <tag> & "esc" \\ \t\n😀',
            "list": [1, 2.0, "three", [], {}],
            "nested": {"z": 1, "a": [True, False]},
        }
    },
}

CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "What is the capital of France?"}],
    "system_multi_turn": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    # The shape of STaSC's SFT conversations: two user turns in a row, and an assistant turn last.
    "stasc_sft": [
        {"role": "user", "content": "Answer with a short rationale, then the final answer.\nFinal Answer: <answer>"},
        {"role": "user", "content": "Question:\nwho wrote moby dick"},
        {"role": "assistant", "content": "Step-by-step reasoning: ...\nFinal Answer: Jules Verne"},
        {"role": "user", "content": "Correct the initial answer if it is wrong."},
        {"role": "assistant", "content": "Step-by-step reasoning: Moby-Dick is by Herman Melville.\nFinal Answer: Herman Melville"},
    ],
    "whitespace_unicode": [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "  Ünïcode — “quotes” <b>&</b>\n\n"},
        {"role": "assistant", "content": "\tanswer  "},
    ],
}


def ensure_environment():
    # The venv's python is a symlink to the base interpreter, so compare prefixes, not executables.
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    try:
        import transformers  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "transformers", "jinja2"])


def load_tokenizer(fixture: Path, scratch: Path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model_dir = scratch / fixture.name
    shutil.copytree(fixture, model_dir)
    Tokenizer(models.WordLevel(vocab={"<unk>": 0}, unk_token="<unk>")).save(str(model_dir / "tokenizer.json"))
    return PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def main():
    ensure_environment()
    import jinja2
    import transformers

    cases = []
    with tempfile.TemporaryDirectory() as scratch:
        for fixture in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
            tokenizer = load_tokenizer(fixture, Path(scratch))
            template_vars = TEMPLATE_VARS.get(fixture.name, {})
            for name, messages in CONVERSATIONS.items():
                for add_generation_prompt in (False, True):
                    expected = tokenizer.apply_chat_template(
                        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **template_vars
                    )
                    cases.append(
                        {
                            "template": fixture.name,
                            "conversation": name,
                            "add_generation_prompt": add_generation_prompt,
                            "vars": template_vars,
                            "messages": messages,
                            "expected": expected,
                        }
                    )
    goldens = {
        "generated_by": f"scripts/make_chat_goldens.py with transformers {transformers.__version__}, "
        f"jinja2 {jinja2.__version__}",
        "cases": cases,
    }
    out = FIXTURES / "goldens.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(goldens, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {len(cases)} cases to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
