"""Token-id SFT examples shared by the parity scripts (train_parity.py, train_parity_ddp.py): random ids from a seeded
generator, the loss on the last `answer` tokens of each example."""

import torch
from torch.utils.data import Dataset


def make_examples(gen, shapes):
    """One example per (length, answer tokens) in `shapes`, ids drawn from `gen`."""
    examples = []
    for length, answer in shapes:
        ids = torch.randint(3, 300, (length,), generator=gen).tolist()
        labels = [-100] * (length - answer) + ids[length - answer:]
        examples.append(dict(input_ids=ids, labels=labels))
    return examples


class Examples(Dataset):
    """A list of examples as a torch Dataset."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]
