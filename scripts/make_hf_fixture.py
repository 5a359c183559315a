"""Writes the HF `datasets` fixtures that src/data tests read, with `DatasetDict.save_to_disk` itself.

Run from the repository root with a Python that has `datasets` (pip install datasets):
    python scripts/make_hf_fixture.py
It rewrites tests/fixtures/hf_dataset/ (QA-style: int ids, list-of-strings gold, one non-ASCII row, two train
shards) and
tests/fixtures/hf_dataset_string_gold/ (math-style: string ids, string gold, large_string columns).
The outputs are committed, so tests and CI never need Python.
"""

import shutil
from pathlib import Path

import datasets
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def qa_fixture() -> None:
    features = datasets.Features(
        {
            "question_id": datasets.Value("int64"),
            "question_text": datasets.Value("string"),
            "reference": datasets.Sequence(datasets.Value("string")),
        }
    )
    train = {
        "question_id": [101, 102, 103, 104, 105],
        "question_text": [
            "what is the capital of france",
            "who wrote the novel moby dick",
            "what colour is the sky on a clear day",
            "where is the city of münchen",
            "how many legs does a spider have",
        ],
        "reference": [
            ["Paris"],
            ["Herman Melville", "Melville"],
            ["blue"],
            ["Germany", "Bavaria", "Deutschland"],
            ["8", "eight"],
        ],
    }
    test = {
        "question_id": [201, 202, 203],
        "question_text": [
            "what is the capital of japan",
            "who painted the mona lisa",
            "what is the largest ocean on earth",
        ],
        "reference": [["Tokyo"], ["Leonardo da Vinci", "da Vinci"], ["Pacific Ocean", "Pacific"]],
    }
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(train, features=features),
            "test": datasets.Dataset.from_dict(test, features=features),
        }
    )
    # Two train shards exercise reading a split's files in state.json order.
    save(dd, "hf_dataset", num_shards={"train": 2, "test": 1})


def math_fixture() -> None:
    # large_string columns exercise the Arrow LargeUtf8 path.
    features = datasets.Features(
        {
            "unique_id": datasets.Value("large_string"),
            "problem": datasets.Value("large_string"),
            "answer": datasets.Value("string"),
        }
    )
    train = {
        "unique_id": ["test/algebra/1.json", "test/algebra/2.json"],
        "problem": ["What is $2+3$?", "Solve $x+1=3$ for $x$."],
        "answer": ["5", "2"],
    }
    test = {"unique_id": ["test/prealgebra/7.json"], "problem": ["What is $\\frac{6}{3}$?"], "answer": ["2"]}
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(train, features=features),
            "test": datasets.Dataset.from_dict(test, features=features),
        }
    )
    save(dd, "hf_dataset_string_gold")


def save(dd: datasets.DatasetDict, name: str, num_shards=None) -> None:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    dd.save_to_disk(str(out), num_shards=num_shards)
    for split in dd:
        schema = dd[split].data.schema
        assert isinstance(schema, pa.Schema)
    print(f"wrote {out} with datasets {datasets.__version__}, pyarrow {pa.__version__}")


if __name__ == "__main__":
    qa_fixture()
    math_fixture()
