"""Writes the small fixtures the C++ unit tests mutate. Run with Debian's /usr/bin/python3 (python3-torch);
the outputs are committed so that the unit tests need no Python."""
import os
import torch

here = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(7)
sd = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1.5, -2.0]),
      "n": torch.tensor(7, dtype=torch.int64)}
torch.save(sd, os.path.join(here, "small.pt"))
torch.save(sd, os.path.join(here, "small_legacy.pt"), _use_new_zipfile_serialization=False)
